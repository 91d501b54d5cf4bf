"""The campaign TOML as the editor sees it: a `[campaign]` table plus the base config text.

The user's file is the source of truth. It is split, by text, into three parts:
`pre` (what precedes the `[campaign]` table, usually header comments), `campaign` (the
table itself) and `post` (everything after). Form edits change only the campaign part,
through tomlkit, so every byte outside the edited key survives a save. The base config
editor shows `pre + post`; when that text has not been touched the original parts are
reassembled verbatim.
"""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any

import tomlkit
from tomlkit.items import AoT, Array

from retrain_core.atomic import atomic_write_text
from retrain_core.config.schema import DEFAULT_CONDITIONS, DEFAULT_SEEDS
from retrain_tui.toml_values import inline_table as _inline
from retrain_tui.toml_values import to_plain

# A table header line: `[name]`, `[[name]]`, dotted names allowed, a trailing comment too.
_HEADER = re.compile(r"^[ \t]*\[\[?[ \t]*([A-Za-z_][\w.\-]*)[ \t]*\]\]?[ \t]*(#.*)?$")

CAMPAIGN_SCALARS = ("max_steps", "parallel", "max_workers", "stagger_seconds", "max_retries")


def _is_campaign_header(name: str) -> bool:
    return name == "campaign" or name.startswith("campaign.")


def split_campaign(text: str) -> tuple[str, str, str] | None:
    """(pre, campaign, post) by header lines; None when no `[campaign]` table is found."""
    lines = text.splitlines(keepends=True)
    start = end = None
    for i, line in enumerate(lines):
        m = _HEADER.match(line.rstrip("\r\n"))
        if not m:
            continue
        if _is_campaign_header(m.group(1)):
            if start is None:
                start = i
            end = None
        elif start is not None and end is None:
            end = i
            # A second campaign block after another table would make the split ambiguous.
    if start is None:
        return None
    end = len(lines) if end is None else end
    # Comments and blank lines right before the next table belong to that table.
    while end > start + 1 and lines[end - 1].strip().startswith("#"):
        end -= 1
    return "".join(lines[:start]), "".join(lines[start:end]), "".join(lines[end:])


def _first_header_offset(text: str) -> int:
    """Character offset of the first table header line, or the end of the text."""
    offset = 0
    for line in text.splitlines(keepends=True):
        if _HEADER.match(line.rstrip("\r\n")):
            return offset
        offset += len(line)
    return len(text)


def _merge(item, new: dict) -> None:
    """Make the tomlkit table `item` equal to `new`, rewriting only what changed."""
    for key in [k for k in item if k not in new]:
        del item[key]
    for key, value in new.items():
        old = item.get(key)
        if isinstance(value, dict) and isinstance(old, dict):
            _merge(old, value)
        elif key not in item or not (to_plain(old) == value
                                     and type(to_plain(old)) is type(value)):
            item[key] = value


def _insert_near(table, key: str, value: Any, before: str | None, after: str | None) -> None:
    """Put `key` back after `before` (or ahead of `after`) when that neighbour is still there."""
    body = table.value
    try:
        if before is not None and before in table:
            body._insert_after(before, key, value)
            return
        if after is not None and after in table:
            at = next(i for i, (k, _) in enumerate(body.body) if k is not None and k.key == after)
            body._insert_at(at, key, value)
            return
    except Exception:  # noqa: BLE001, S110 - tomlkit internals: fall back to the end of the table
        pass
    table[key] = value


class CampaignDocument:
    """Editable view of one campaign TOML file."""

    def __init__(self, text: str, path: str | Path):
        self.path = Path(path)
        self.original_text = text
        self._load(text)

    # -- structure ---------------------------------------------------------------------
    def _load(self, text: str) -> None:
        parts = split_campaign(text)
        self.whole_file_mode = False
        if parts is None:
            self.pre, self.campaign_text, self.post = "", "", text
        else:
            self.pre, self.campaign_text, self.post = parts
            if not self._split_is_clean():
                # Unusual layout (e.g. campaign keys spread out): edit the file as one text.
                self.whole_file_mode = True
                self.pre, self.campaign_text, self.post = "", "", text
        self._campaign_doc = self._parse_campaign()
        self._base_text = self.pre + self.post
        self._base_edited = False
        self._vacated: dict[str, tuple[str | None, str | None]] = {}  # key -> (before, after)

    def _split_is_clean(self) -> bool:
        try:
            camp = tomlkit.parse(self.campaign_text)
            rest = tomlkit.parse(self.pre + self.post)
        except Exception:  # noqa: BLE001
            return True  # a syntax error is reported by validation; keep the split
        return list(camp.keys()) == ["campaign"] and "campaign" not in rest

    def _parse_campaign(self):
        if self.whole_file_mode:
            return None
        try:
            return tomlkit.parse(self.campaign_text)
        except Exception:  # noqa: BLE001
            return None

    @property
    def campaign_parse_error(self) -> bool:
        return not self.whole_file_mode and self._campaign_doc is None

    @property
    def base_text(self) -> str:
        return self._base_text

    def set_base_text(self, text: str) -> None:
        if text != self._base_text:
            self._base_text = text
            self._base_edited = True

    def full_text(self) -> str:
        if self.whole_file_mode:
            return self._base_text
        campaign = self.campaign_text
        if not self._base_edited:
            return self.pre + campaign + self.post
        base = self._base_text
        if not campaign:
            return base
        # Keep the campaign table where it was when the header part is untouched.
        cut = len(self.pre) if base.startswith(self.pre) else _first_header_offset(base)
        head, tail = base[:cut], base[cut:]
        if tail and not campaign.endswith("\n\n"):
            campaign = campaign.rstrip("\n") + "\n\n"
        return head + campaign + tail

    @property
    def dirty(self) -> bool:
        return self.full_text() != self.original_text

    def base_line_offset(self, full_line: int) -> int | None:
        """Map a 1-based line of the full text to a 1-based line of the base text (None:
        the line is inside the campaign table)."""
        pre_lines = self.pre.count("\n")
        camp_lines = self.campaign_text.count("\n")
        if self.whole_file_mode or (self._base_edited and not self._base_text.startswith(self.pre)):
            return full_line if not camp_lines else None
        if full_line <= pre_lines:
            return full_line
        if full_line <= pre_lines + camp_lines:
            return None
        return full_line - camp_lines

    # -- campaign table ------------------------------------------------------------------
    def _table(self, create: bool = False):
        if self.whole_file_mode or self._campaign_doc is None:
            return None
        doc = self._campaign_doc
        if "campaign" not in doc:
            if not create:
                return None
            doc["campaign"] = tomlkit.table()
        return doc["campaign"]

    def _commit(self) -> None:
        text = tomlkit.dumps(self._campaign_doc)
        if self.campaign_text == "" and text and self.post and not self._base_edited:
            # A new [campaign] table goes before the first table of the file.
            cut = _first_header_offset(self.post)
            self.pre, self.post = self.pre + self.post[:cut], self.post[cut:]
            self._base_text = self.pre + self.post
            text = text.rstrip("\n") + "\n\n"
        self.campaign_text = text

    @property
    def editable(self) -> bool:
        return self._table(create=False) is not None or (
            not self.whole_file_mode and self._campaign_doc is not None
        )

    def get(self, key: str, default: Any = None) -> Any:
        table = self._table()
        if table is None or key not in table:
            return default
        return to_plain(table[key])

    def set(self, key: str, value: Any) -> None:
        """Set one campaign key (None removes it: the default applies). A key cleared and
        typed again goes back to its old place, not to the end of the table."""
        table = self._table(create=value is not None)
        if table is None:
            return
        if value is None:
            if key in table:
                # body order: tomlkit's keys() lists a re-inserted key last
                keys = [k.key for k, _ in table.value.body if k is not None]
                at = keys.index(key)
                self._vacated[key] = (keys[at - 1] if at else None,
                                      keys[at + 1] if at + 1 < len(keys) else None)
                del table[key]
        elif key in table and to_plain(table[key]) == value and type(to_plain(table[key])) is type(value):
            return
        elif key not in table and key in self._vacated:
            _insert_near(table, key, value, *self._vacated.pop(key))
        else:
            table[key] = value
        self._commit()

    # -- seeds -----------------------------------------------------------------------------
    def seeds(self) -> list[Any]:
        seeds = self.get("seeds")
        return list(DEFAULT_SEEDS) if seeds is None else list(seeds)

    def _seed_array(self) -> Array:
        table = self._table(create=True)
        if "seeds" not in table or not isinstance(table["seeds"], Array):
            table["seeds"] = list(DEFAULT_SEEDS)
        return table["seeds"]

    def add_seed(self, seed: Any) -> None:
        self._seed_array().append(seed)
        self._commit()

    def remove_seed(self, index: int) -> None:
        arr = self._seed_array()
        if 0 <= index < len(arr):
            del arr[index]
            self._commit()

    def set_seed(self, index: int, seed: Any) -> None:
        arr = self._seed_array()
        if 0 <= index < len(arr):
            arr[index] = seed
            self._commit()

    # -- conditions ------------------------------------------------------------------------
    def conditions(self) -> list[dict]:
        conds = self.get("conditions")
        if conds is None:
            return [dict(c) for c in DEFAULT_CONDITIONS]
        return [dict(c) if isinstance(c, dict) else {"?": c} for c in conds]

    def _condition_array(self) -> Array | AoT:
        table = self._table(create=True)
        if "conditions" not in table:
            arr = tomlkit.array()
            arr.multiline(True)
            for cond in DEFAULT_CONDITIONS:
                arr.append(_inline(cond))
            table["conditions"] = arr
        return table["conditions"]

    def _condition_item(self, cond: dict, like: Any):
        if isinstance(like, AoT):
            t = tomlkit.table()
            t.update(cond)
            return t
        return _inline(cond)

    def add_condition(self, cond: dict, index: int | None = None) -> int:
        arr = self._condition_array()
        index = len(arr) if index is None else max(0, min(index, len(arr)))
        arr.insert(index, self._condition_item(cond, arr))
        self._commit()
        return index

    def duplicate_condition(self, index: int) -> int | None:
        conds = self.conditions()
        if not 0 <= index < len(conds):
            return None
        return self.add_condition(copy.deepcopy(conds[index]), index + 1)

    def remove_condition(self, index: int) -> None:
        arr = self._condition_array()
        if 0 <= index < len(arr):
            del arr[index]
            self._commit()

    def replace_condition(self, index: int, cond: dict) -> None:
        """Change a condition in place: keys that keep their value keep their spelling
        (`5e-4` stays `5e-4`, dotted `sepa.steps = 10` stays dotted) and their order."""
        arr = self._condition_array()
        if 0 <= index < len(arr):
            if isinstance(arr[index], dict):
                _merge(arr[index], cond)
            else:
                arr[index] = self._condition_item(cond, arr)
            self._commit()

    def move_condition(self, index: int, delta: int) -> int:
        arr = self._condition_array()
        target = index + delta
        if not (0 <= index < len(arr) and 0 <= target < len(arr)):
            return index
        # Move the tomlkit item itself so its formatting travels with it.
        arr.insert(target, arr.pop(index))
        self._commit()
        return target

    # -- saving ----------------------------------------------------------------------------
    def save(self, path: str | Path | None = None) -> Path:
        """Write the file atomically (temp file in the same directory, fsync, rename)."""
        target = Path(path) if path else self.path
        text = self.full_text()
        target.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(target, text)  # keeps an existing file's permission bits
        self.path = target
        self.original_text = text
        return target
