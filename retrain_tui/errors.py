"""Errors become notifications: `guarded` wraps UI handlers so that an exception in one
action is reported in the app (and logged) instead of ending it with a traceback."""

from __future__ import annotations

import functools
import inspect


def _report(node, exc: Exception) -> None:
    app = node.app
    if getattr(app, "strict", False):
        raise exc
    app.log.error(exc)
    app.notify(f"{type(exc).__name__}: {exc}", severity="error", title="Error", timeout=10)


def guarded(fn):
    if inspect.iscoroutinefunction(fn):
        @functools.wraps(fn)
        async def async_wrapper(self, *args, **kwargs):
            try:
                return await fn(self, *args, **kwargs)
            except Exception as exc:  # noqa: BLE001
                _report(self, exc)
        return async_wrapper

    @functools.wraps(fn)
    def wrapper(self, *args, **kwargs):
        try:
            return fn(self, *args, **kwargs)
        except Exception as exc:  # noqa: BLE001
            _report(self, exc)
    return wrapper
