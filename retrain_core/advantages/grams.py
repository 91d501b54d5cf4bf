"""Finding strategic grams in (normalised, UTF-8) text: the search half of planning.py.

Matching rules: case-insensitive, whole words, a space in a gram matches any run of
whitespace ("let  me\ncheck" holds "let me check"), ' also matches ’, and overlapping
occurrences all count. Text and grams are normalised first (lower case, whitespace → ' ',
curly quotes → ', runs of spaces searched as one) so the search itself is an exact byte search. `compile_gram_pattern` states the same
rules as one regex over raw text: the readable reference for tests and the benchmark.

The search is vectorised: every byte offset of the text is read as a little-endian
8-byte word (eight zero-copy strided views), hashed by a multiply-shift into a small
table of the grams' 8-byte prefixes, and only the few offsets that hit are verified
in Python. Grams shorter than 8 bytes fall back to `bytes.find` (C fast search).
"""

from __future__ import annotations

import re
from collections.abc import Iterable

import numpy as np

PREFIX = 8  # bytes per hashed window
HASH_BITS = 16
HASH_MULT = np.uint64(0x9E3779B97F4A7C15)  # Fibonacci hashing

_NORMALISE = {ord(c): " " for c in "\t\n\r\x0b\x0c\x85\xa0\u1680\u2028\u2029\u202f\u205f\u3000"}
_NORMALISE.update({c: " " for c in [*range(0x1C, 0x20), *range(0x2000, 0x200B)]})
_NORMALISE.update({ord("’"): "'", ord("‘"): "'"})


def normalise_piece(piece: str) -> str:
    """Lower-case (when that keeps the length), whitespace → ' ', curly quotes → '."""
    lower = piece.lower()
    return (lower if len(lower) == len(piece) else piece).translate(_NORMALISE)


def normalise_gram(gram: str) -> str:
    return " ".join(gram.lower().translate(_NORMALISE).split())


def compile_gram_pattern(grams: Iterable[str]) -> re.Pattern | None:
    """One regex finding every occurrence of any gram in raw text, by the rules above.

    The zero-width lookahead makes overlapping occurrences all count ("wait let me think"
    holds both "wait let me" and "let me think"); longest alternatives come first.
    """
    alternatives = []
    for gram in sorted({normalise_gram(g) for g in grams if g.strip()}, key=len, reverse=True):
        words = [re.escape(w).replace("'", "['’‘]") for w in gram.split(" ")]
        alternatives.append(r"\s+".join(words))
    if not alternatives:
        return None
    return re.compile(r"(?=((?<!\w)(?:" + "|".join(alternatives) + r")(?!\w)))", re.IGNORECASE)


def _hash(words: np.ndarray) -> np.ndarray:
    return (words * HASH_MULT) >> np.uint64(64 - HASH_BITS)


def is_word_char(ch: str) -> bool:
    return ch.isalnum() or ch == "_"


def _word_before(buf: bytes, pos: int) -> bool:
    """Is the character ending at byte `pos` a word character (\\w)?"""
    if pos == 0:
        return False
    b = buf[pos - 1]
    if b < 0x80:
        return is_word_char(chr(b))
    start = pos - 1
    while start > 0 and 0x80 <= buf[start] < 0xC0:  # back to the UTF-8 lead byte
        start -= 1
    return is_word_char(buf[start:pos].decode("utf-8", errors="replace")[-1:] or " ")


def _word_after(buf: bytes, pos: int) -> bool:
    """Is the character starting at byte `pos` a word character?"""
    if pos >= len(buf):
        return False
    b = buf[pos]
    if b < 0x80:
        return is_word_char(chr(b))
    return is_word_char(buf[pos : pos + 4].decode("utf-8", errors="replace")[:1] or " ")


_SPACE_RUN = re.compile(" {2,}")
_ASCII_WORD = np.array([is_word_char(chr(b)) for b in range(128)] + [False] * 128)


class GramMatcher:
    """Finds every whole-word occurrence of a fixed set of grams in normalised UTF-8 text."""

    def __init__(self, grams: Iterable[str]):
        needles = sorted({normalise_gram(g).encode("utf-8") for g in grams if g.strip()})
        self.needles = needles
        self._short = [n for n in needles if len(n) < PREFIX]
        self._long = [n for n in needles if len(n) >= PREFIX]
        self._prefix_keys = np.array(
            [int.from_bytes(n[:PREFIX], "little") for n in self._long], dtype=np.uint64
        )
        self.pad = PREFIX + max((len(n) for n in needles), default=0)  # zero bytes after the text
        self._table = np.zeros(1 << HASH_BITS, dtype=bool)
        if self._long:
            self._table[_hash(self._prefix_keys).astype(np.int64)] = True
        self.min_len = min((len(n) for n in needles), default=0)  # bytes
        texts = [n.decode("utf-8") for n in needles]
        self._substrings = {t[i:j] for t in texts for i in range(len(t)) for j in range(i + 1, len(t) + 1)}
        self._prefixes = {t[:i] for t in texts for i in range(1, len(t) + 1)}
        self._suffixes = {t[i:] for t in texts for i in range(len(t))}
        self._texts = texts
        # A word character that no gram contains: stands in for a neighbour's edge character.
        used = set("".join(texts))
        self.word_standin = next(c for c in "_0123456789" + "".join(map(chr, range(0x100, 0x250)))
                                 if c not in used and is_word_char(c))

    def could_overlap(self, piece: str) -> bool:
        """Can a token with this (normalised) piece overlap an occurrence of some gram?

        Exactly when: the piece lies inside a gram; or a gram lies inside it; or an
        occurrence starts inside it (a suffix after a non-word character is a gram
        prefix); or ends inside it (a prefix before a non-word character is a gram
        suffix). Empty pieces count as yes: they never separate two halves of a gram.
        """
        if not piece:
            return True
        # The search sees runs of spaces as one, and a leading space may merge into the
        # previous token's: test what the token can contribute after that collapse.
        piece = _SPACE_RUN.sub(" ", piece)
        if piece.startswith(" ") and self._could_overlap(piece[1:]):
            return True
        return self._could_overlap(piece)

    def _could_overlap(self, piece: str) -> bool:
        if not piece or piece in self._substrings:
            return True
        if any(t in piece for t in self._texts):
            return True
        for i in range(1, len(piece)):
            if not is_word_char(piece[i - 1]) and piece[i:] in self._prefixes:
                return True
            if not is_word_char(piece[i]) and piece[:i] in self._suffixes:
                return True
        return False

    def _candidates(self, padded: bytes) -> tuple[np.ndarray, np.ndarray]:
        """Byte offsets whose next 8 bytes hash like a gram prefix, and those 8 bytes."""
        positions, words_hit = [], []
        for k in range(PREFIX):
            count = (len(padded) - k) // PREFIX
            words = np.frombuffer(padded, dtype="<u8", offset=k, count=count)
            found = np.flatnonzero(self._table[_hash(words).astype(np.int64)])
            positions.append(found * PREFIX + k)
            words_hit.append(words[found])
        return np.concatenate(positions), np.concatenate(words_hit)

    def find(self, buf: bytes, size: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Start and end byte offsets of every occurrence (overlapping ones included).

        `size`: the text is buf[:size] and buf already ends with at least `self.pad` zero
        bytes (saves a copy of a large text); None: the whole of buf is the text.
        """
        starts: list[np.ndarray] = []
        ends: list[np.ndarray] = []
        if size is None:
            size = len(buf)
            buf = buf + b"\0" * self.pad
        elif len(buf) < size + self.pad or buf[size:].strip(b"\0"):
            raise ValueError(f"find: buf must end with {self.pad} zero bytes after the text")
        if b"  " in buf[:size]:
            return self._find_collapsed(buf, size)
        padded = buf
        data = np.frombuffer(padded, dtype=np.uint8)
        if self._long:
            positions, words = self._candidates(padded)
            inside = positions < size  # windows made of the zero padding are no occurrence
            positions, words = positions[inside], words[inside]
            for needle, key in zip(self._long, self._prefix_keys):
                pos = positions[words == key]
                for j in range(PREFIX, len(needle)):  # the rest of the needle, byte by byte
                    if pos.size == 0:
                        break
                    pos = pos[data[pos + j] == needle[j]]
                starts.append(pos)
                ends.append(pos + len(needle))
        for needle in self._short:
            found = []
            pos = buf.find(needle)
            while pos >= 0:
                found.append(pos)
                pos = buf.find(needle, pos + 1)
            starts.append(np.asarray(found, dtype=np.int64))
            ends.append(starts[-1] + len(needle))
        if not starts:
            return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
        start = np.concatenate(starts).astype(np.int64)
        end = np.concatenate(ends).astype(np.int64)
        return self._whole_words(buf, data, start, end)

    def _find_collapsed(self, buf: bytes, size: int) -> tuple[np.ndarray, np.ndarray]:
        """Search with every run of spaces cut to one, and map offsets back to `buf`."""
        data = np.frombuffer(buf, dtype=np.uint8, count=size)
        space = data == 0x20
        keep = np.flatnonzero(~(space & np.concatenate([[False], space[:-1]])))
        collapsed = data[keep].tobytes()
        start, end = self.find(collapsed + b"\0" * self.pad, len(collapsed))
        # A gram neither starts nor ends with a space: its first/last byte is a kept byte.
        return keep[start], keep[end - 1] + 1

    @staticmethod
    def _whole_words(buf: bytes, data: np.ndarray, start: np.ndarray, end: np.ndarray):
        """Keep occurrences with no word character right before or after, like (?<!\\w)…(?!\\w)."""
        before = data[np.maximum(start - 1, 0)]
        after = data[end]  # `data` is padded with zeros past the end
        ok = ~_ASCII_WORD[before] | (start == 0)
        ok &= ~_ASCII_WORD[after]
        # A non-ASCII neighbour needs its character decoded: rare, done one by one.
        unsure = np.flatnonzero(ok & (((before >= 0x80) & (start > 0)) | (after >= 0x80)))
        for i in unsure.tolist():
            ok[i] = not _word_before(buf, int(start[i])) and not _word_after(buf, int(end[i]))
        return start[ok], end[ok]
