"""Planning-token detection (SPEC §4.6) from token ids and a real tokenizer.

Each token id is decoded once and cached (its normalised text piece and length live in
arrays indexed by id). A batch is then handled without per-token Python work: the pieces
of all completions are joined into one text (completions separated by a newline), token
character spans are a cumulative sum of cached lengths, every gram is located with
`str.find` (C fast search; overlapping occurrences all count), whole-word boundaries are
checked on the few hits, and tokens whose span overlaps a hit are marked with two
`searchsorted` calls and a difference array. Cost: O(total completion length).

Matching rules: case-insensitive, whole words, a space in a gram matches any one
whitespace character, and ' also matches ’. `compile_gram_pattern` expresses the same
rules as one regex; it is the readable reference the tests and the benchmark compare to.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

import numpy as np
import torch

SEPARATOR = "\n"  # between completions: pieces hold no newline after normalising, grams never
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
        alternatives.append(r"\s".join(words))
    if not alternatives:
        return None
    return re.compile(r"(?=((?<!\w)(?:" + "|".join(alternatives) + r")(?!\w)))", re.IGNORECASE)


def _is_word_char(ch: str) -> bool:
    return ch.isalnum() or ch == "_"


def find_gram_spans(text: str, grams: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """Start/end offsets of every whole-word occurrence of the (normalised) grams in the
    (normalised) text. One C-speed scan per gram; Python only touches the hits."""
    starts: list[int] = []
    ends: list[int] = []
    size = len(text)
    for gram in grams:
        width = len(gram)
        pos = text.find(gram)
        while pos >= 0:
            end = pos + width
            # Whole words: no word character right before or right after, like (?<!\w)…(?!\w).
            before_ok = pos == 0 or not _is_word_char(text[pos - 1])
            after_ok = end == size or not _is_word_char(text[end])
            if before_ok and after_ok:
                starts.append(pos)
                ends.append(end)
            pos = text.find(gram, pos + 1)
    return np.asarray(starts, dtype=np.int64), np.asarray(ends, dtype=np.int64)


def _decode_many(tokenizer, sequences: list[list[int]]) -> list[str]:
    """Decode several id lists exactly as text (no special tokens, no space clean-up)."""
    if hasattr(tokenizer, "batch_decode"):  # transformers tokenizers
        return tokenizer.batch_decode(
            sequences, skip_special_tokens=True, clean_up_tokenization_spaces=False
        )
    if hasattr(tokenizer, "decode_batch"):  # a raw `tokenizers.Tokenizer`
        return tokenizer.decode_batch(sequences, skip_special_tokens=True)
    return [tokenizer.decode(s) for s in sequences]


def decode_token_pieces(tokenizer, token_ids: Sequence[int]) -> list[str]:
    """The text each token contributes in running text, leading space included.

    Decoding a token alone loses its leading space in SentencePiece-style tokenizers (the
    decoder strips it at the start of a text), so a token is decoded after a copy of
    itself and the first copy's text is cut off. Byte-level BPE ('Ġme' → ' me') works the
    same way. A token that is part of a multi-byte character decodes to U+FFFD: spans of
    ASCII grams are unaffected.
    """
    ids = [int(i) for i in token_ids]
    singles = _decode_many(tokenizer, [[i] for i in ids])
    doubles = _decode_many(tokenizer, [[i, i] for i in ids])
    pieces = []
    for single, double in zip(singles, doubles):
        pieces.append(double[len(single):] if double.startswith(single) else single)
    return pieces


class PlanningDetector:
    """detector(token_ids [N,T], mask [N,T]) -> bool [N,T]: tokens inside a strategic gram."""

    def __init__(self, tokenizer, grams: Iterable[str]):
        self.tokenizer = tokenizer
        self.grams = list(grams)
        # Longest first is not needed for correctness (every occurrence is kept); dedupe only.
        self._needles = sorted({normalise_gram(g) for g in self.grams if g.strip()})
        size = max(len(tokenizer) if hasattr(tokenizer, "__len__") else 0, 1)
        self._pieces = np.empty(size, dtype=object)
        self._lengths = np.zeros(size, dtype=np.int64)
        self._known = np.zeros(size, dtype=bool)

    def _grow(self, size: int) -> None:
        old = len(self._known)
        self._pieces = np.concatenate([self._pieces, np.empty(size - old, dtype=object)])
        self._lengths = np.concatenate([self._lengths, np.zeros(size - old, dtype=np.int64)])
        self._known = np.concatenate([self._known, np.zeros(size - old, dtype=bool)])

    def _ensure_decoded(self, flat_ids: np.ndarray) -> None:
        top = int(flat_ids.max()) + 1
        if top > len(self._known):
            self._grow(top)
        unknown = ~self._known[flat_ids]
        if not unknown.any():
            return
        new_ids = np.unique(flat_ids[unknown])
        pieces = decode_token_pieces(self.tokenizer, new_ids.tolist())
        for token_id, piece in zip(new_ids.tolist(), pieces):
            self._pieces[token_id] = normalise_piece(piece)
            self._lengths[token_id] = len(piece)
        self._known[new_ids] = True

    def piece(self, token_id: int) -> str:
        """The cached (normalised) text piece of one token id, decoded on first use."""
        self._ensure_decoded(np.array([token_id], dtype=np.int64))
        return self._pieces[token_id]

    def completion_text(self, token_ids: Sequence[int]) -> str:
        """The normalised text of one completion, as the detector sees it."""
        ids = np.asarray(token_ids, dtype=np.int64)
        if ids.size == 0:
            return ""
        self._ensure_decoded(ids)
        return "".join(self._pieces[ids].tolist())

    def __call__(self, token_ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        ids = torch.as_tensor(token_ids).cpu().numpy()
        active = torch.as_tensor(mask).bool().cpu().numpy()
        out = np.zeros(active.shape, dtype=bool)
        flat_ids = ids[active].astype(np.int64)  # row-major: completion by completion
        if flat_ids.size == 0 or not self._needles:
            return torch.from_numpy(out)
        self._ensure_decoded(flat_ids)
        rows = np.nonzero(active)[0]
        row_last = np.flatnonzero(np.r_[rows[1:] != rows[:-1], True])
        # One separator after each completion's last token, so no gram spans two of them.
        pieces = np.insert(self._pieces[flat_ids], row_last + 1, SEPARATOR)
        lengths = np.insert(self._lengths[flat_ids], row_last + 1, len(SEPARATOR))
        is_token = np.ones(len(pieces), dtype=bool)
        is_token[row_last + np.arange(1, len(row_last) + 1)] = False
        match_start, match_end = find_gram_spans("".join(pieces.tolist()), self._needles)
        if match_start.size == 0:
            return torch.from_numpy(out)
        ends = np.cumsum(lengths)[is_token]
        starts = ends - self._lengths[flat_ids]
        out[active] = mark_overlaps(starts, ends, match_start, match_end)
        return torch.from_numpy(out)


def mark_overlaps(
    starts: np.ndarray, ends: np.ndarray, match_start: np.ndarray, match_end: np.ndarray
) -> np.ndarray:
    """bool per token: its span [start, end) overlaps some match [a, b).

    Token spans are sorted and contiguous, so the tokens overlapping [a, b) are the run
    from the first with end > a to the last with start < b.
    """
    first = np.searchsorted(ends, match_start, side="right")
    stop = np.searchsorted(starts, match_end, side="left")
    diff = np.zeros(len(starts) + 1, dtype=np.int64)
    valid = stop > first
    np.add.at(diff, first[valid], 1)
    np.add.at(diff, stop[valid], -1)
    return np.cumsum(diff[:-1]) > 0
