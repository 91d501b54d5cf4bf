"""The one way tests wait for an event: poll a predicate up to a generous ceiling.

Ceilings are scaled by `RETRAIN_TEST_CEILING_SCALE` (default 4): a test names the time it
expects on an idle machine, and a loaded 2-core box still passes. A wait returns as soon as
the event happens, so a large ceiling costs nothing when things work; it is only reached
when the event never comes.
"""

from __future__ import annotations

import os
import time

SCALE = float(os.environ.get("RETRAIN_TEST_CEILING_SCALE", "4"))


def ceiling(seconds: float) -> float:
    return seconds * SCALE


def wait_until(predicate, timeout: float = 30.0, interval: float = 0.05, what: str = ""):
    """Block until predicate() is truthy and return its value; fail after the scaled ceiling."""
    limit = ceiling(timeout)
    deadline = time.monotonic() + limit
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {limit:.0f} s waiting for {what or predicate}")
        time.sleep(interval)


async def wait_for(pilot, predicate, timeout: float = 10.0, what: str = "") -> None:
    """The same inside a Pilot test: the app keeps running while we wait."""
    limit = ceiling(timeout)
    deadline = time.monotonic() + limit
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {limit:.0f} s waiting for {what or predicate}")
        await pilot.pause(0.05)


async def palette_offers(pilot, title: str, timeout: float = 10.0) -> None:
    """Open the command palette, type `title` and wait until the highlighted command is it:
    the palette searches in the background, and an enter pressed before then runs nothing."""
    from textual.command import CommandList

    await pilot.press("ctrl+p")
    await wait_for(pilot, lambda: type(pilot.app.screen).__name__ == "CommandPalette", timeout,
                   what="the command palette")
    await pilot.press(*title)

    def offered() -> bool:
        results = pilot.app.screen.query_one(CommandList)
        return results.highlighted is not None and title in str(
            results.get_option_at_index(results.highlighted).prompt)

    await wait_for(pilot, offered, timeout, what=f"the palette to offer {title!r}")


async def edit_field(pilot, key: str, text: str) -> None:
    """Type `text` into the editor's `[campaign]` field `key` and wait until the editor has
    taken the value into its document (and so validated it): a few message hops, slow on a
    loaded box."""
    from retrain_tui.widgets.campaign_fields import parse_value

    screen = pilot.app.screen
    widget = screen.query_one(f"#field-{key}")
    widget.focus()
    widget.value = text
    value = parse_value(text)
    await wait_for(pilot, lambda: screen.document.get(key) == value, 30,
                   what=f"the editor to take {key} = {text!r}")
