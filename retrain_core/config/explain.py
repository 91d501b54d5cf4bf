"""Kept only because `retrain_tui/screens/editor.py` imports `filled_defaults` from here.

The `retrain explain` command is `retrain_core/explain.py`; `filled_defaults` lives in
`retrain_core/config/defaults.py`. Delete this module once the TUI imports it from there.
"""

from .defaults import filled_defaults

__all__ = ["filled_defaults"]
