"""Line numbers of the keys of a TOML document.

`tomllib` gives values but no positions, so this light scanner walks the (already valid)
text once and records where each dotted key path starts: `section.key`,
`campaign.conditions[2]` for array elements (inline tables or `[[...]]` tables) and
`campaign.conditions[2].sepa.steps` inside them. It never raises: on anything it does not
understand it stops and returns what it found, and lookups fall back to the nearest parent.
"""

from __future__ import annotations

import bisect
import re

BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")
HEADER = re.compile(r"^\s*\[\[?\s*([^\]]+?)\s*\]\]?\s*(#.*)?$")
LOOSE_HEADER = re.compile(r"^\s*\[\[?\s*([A-Za-z0-9_.\-\"' ]+)")
ASSIGNMENT = re.compile(r"^\s*([A-Za-z0-9_.\-\"' ]+?)\s*=")


class _Scanner:
    def __init__(self, text: str):
        self.text = text
        self.pos = 0
        self.found: dict[str, int] = {}  # path -> character offset

    # -- low-level helpers -------------------------------------------------------------
    def peek(self, k: int = 0) -> str:
        i = self.pos + k
        return self.text[i] if i < len(self.text) else ""

    def skip_space(self, newlines: bool) -> None:
        while self.pos < len(self.text):
            ch = self.text[self.pos]
            if ch in " \t\r" or (newlines and ch == "\n"):
                self.pos += 1
            elif ch == "#":
                end = self.text.find("\n", self.pos)
                self.pos = len(self.text) if end < 0 else end
            else:
                return

    def record(self, path: str, offset: int) -> None:
        self.found.setdefault(path, offset)

    def string(self) -> str:
        quote = self.peek()
        triple = self.text.startswith(quote * 3, self.pos)
        delim = quote * 3 if triple else quote
        self.pos += len(delim)
        out = []
        while self.pos < len(self.text):
            if self.text.startswith(delim, self.pos):
                self.pos += len(delim)
                # A multi-line string may end with up to two extra quotes ("""a"""").
                while triple and self.peek() == quote:
                    out.append(quote)
                    self.pos += 1
                return "".join(out)
            ch = self.text[self.pos]
            if ch == "\\" and quote == '"':
                out.append(self.text[self.pos : self.pos + 2])
                self.pos += 2
                continue
            out.append(ch)
            self.pos += 1
        raise ValueError("unterminated string")

    def key(self) -> list[str]:
        parts = []
        while True:
            self.skip_space(newlines=False)
            if self.peek() in "\"'":
                parts.append(self.string())
            else:
                m = BARE_KEY.match(self.text, self.pos)
                if not m:
                    raise ValueError("bad key")
                parts.append(m.group())
                self.pos = m.end()
            self.skip_space(newlines=False)
            if self.peek() != ".":
                return parts
            self.pos += 1

    # -- grammar -----------------------------------------------------------------------
    def value(self, path: str) -> None:
        self.skip_space(newlines=False)
        ch = self.peek()
        if ch in "\"'":
            self.string()
        elif ch == "[":
            self.pos += 1
            index = 0
            while True:
                self.skip_space(newlines=True)
                if self.peek() == "]":
                    self.pos += 1
                    return
                self.record(f"{path}[{index}]", self.pos)
                self.value(f"{path}[{index}]")
                self.skip_space(newlines=True)
                if self.peek() == ",":
                    self.pos += 1
                    index += 1
                elif self.peek() != "]":  # `[1 }`, or the end of the text: no progress possible
                    raise ValueError("expected , or ] in an array")
        elif ch == "{":
            self.pos += 1
            while True:
                self.skip_space(newlines=True)
                if self.peek() == "}":
                    self.pos += 1
                    return
                if self.peek() == ",":
                    self.pos += 1
                    continue
                self.assignment(path)
        else:
            m = re.compile(r"[^,\]}\n#]*").match(self.text, self.pos)
            self.pos = m.end()

    def assignment(self, prefix: str) -> None:
        start = self.pos
        parts = self.key()
        path = prefix
        for part in parts:
            path = f"{path}.{part}" if path else part
            self.record(path, start)
        self.skip_space(newlines=False)
        if self.peek() != "=":
            raise ValueError("expected =")
        self.pos += 1
        self.value(path)

    def document(self) -> None:
        table = ""
        array_counts: dict[str, int] = {}
        while True:
            self.skip_space(newlines=True)
            if self.pos >= len(self.text):
                return
            start = self.pos
            if self.peek() == "[":
                is_array = self.peek(1) == "["
                self.pos += 2 if is_array else 1
                parts = self.key()
                self.pos += 2 if is_array else 1
                # Earlier array-of-tables prefixes resolve to their latest element, so
                # [campaign.conditions.sepa] after [[campaign.conditions]] lands in [k].
                path = ""
                for depth, part in enumerate(parts):
                    path = f"{path}.{part}" if path else part
                    plain = ".".join(parts[: depth + 1])
                    if depth < len(parts) - 1:
                        self.record(path, start)
                        if plain in array_counts:
                            path = f"{path}[{array_counts[plain] - 1}]"
                if is_array:
                    plain = ".".join(parts)
                    index = array_counts.get(plain, 0)
                    array_counts[plain] = index + 1
                    self.record(path, start)
                    path = f"{path}[{index}]"
                self.record(path, start)
                table = path
            else:
                self.assignment(table)


def locate_keys(text: str) -> dict[str, int]:
    """Map every dotted key path of `text` to the 1-based line where it first appears."""
    scanner = _Scanner(text)
    try:
        scanner.document()
    except (ValueError, IndexError, RecursionError):
        pass  # keep what was found; lookups fall back to parents
    newlines = [i for i, ch in enumerate(text) if ch == "\n"]
    return {path: bisect.bisect_left(newlines, off) + 1 for path, off in scanner.found.items()}


def parent_key(key: str) -> str:
    """`a.b[2].c` -> `a.b[2]` -> `a.b` -> `a` -> ``."""
    cut = max(key.rfind("."), key.rfind("["))
    return key[:cut] if cut > 0 else ""


def line_of(locations: dict[str, int], key: str) -> int:
    """Line of `key`, or of its nearest located parent (0 when none is located)."""
    while key:
        if key in locations:
            return locations[key]
        key = parent_key(key)
    return 0


def guess_key_at_line(text: str, lineno: int) -> str:
    """Best-effort dotted key of line `lineno` of a document that does not parse."""
    table = ""
    lines = text.splitlines()
    for number, line in enumerate(lines[:lineno], start=1):
        header = HEADER.match(line)
        if header and number < lineno:
            table = header.group(1).strip()
        elif number == lineno:
            loose_header = LOOSE_HEADER.match(line)
            if loose_header:
                return loose_header.group(1).strip()
            m = ASSIGNMENT.match(line)
            if m:
                key = re.sub(r"\s*\.\s*", ".", m.group(1).strip()).replace('"', "").replace("'", "")
                return f"{table}.{key}" if table else key
    return table
