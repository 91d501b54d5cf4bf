"""The messages that carry the TUI's streams.

A stream's message carries its data rather than a signal to go and fetch it, so a screen shows
what it was sent and never reads another screen's state. Where a newer message makes an older
one pointless, `can_replace` says so: when Textual takes a message off a screen's queue and the
next one waiting is one it `can_replace`, only the newer one is handled.
"""

from __future__ import annotations

from dataclasses import dataclass

from textual.message import Message

from retrain_tui.monitor_view import Snapshot


@dataclass
class SnapshotReady(Message, bubble=False):
    """A new view of the campaign. The watcher thread posts it to the monitor (at most one
    unhandled at a time: see `CampaignWatcher`), and the monitor passes a copy to each screen
    opened above it (run detail, squeeze), which show what it carries."""

    snapshot: Snapshot

    def can_replace(self, message: Message) -> bool:
        # A snapshot is the campaign's whole state, so a newer one loses nothing of an older
        # one, except an older one's news: the failures it announces are not repeated.
        return isinstance(message, SnapshotReady) and not self.snapshot.new_failures
