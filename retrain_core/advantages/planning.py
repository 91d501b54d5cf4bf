"""Planning-token detection from token ids and a real tokenizer: a token is a planning token
when its text overlaps an occurrence of a strategic gram (rules: grams.py).

Each token id is decoded once and cached: its normalised text piece as UTF-8 bytes and
its byte length live in arrays indexed by id. A batch is then handled without per-token
Python work: the pieces of all completions are joined into one byte string (completions
separated by a newline), token spans are a cumulative sum of cached lengths, the grams
are found by `GramMatcher` (vectorised, see grams.py), and tokens whose span overlaps
an occurrence are marked with two `searchsorted` calls and a difference array.
Cost: O(total completion length).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np
import torch

from .grams import GramMatcher, is_word_char, normalise_piece

SEPARATOR = b"\n"  # between completions: normalised pieces hold no newline, so no gram spans two


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
    """detector(token_ids [N,T], mask [N,T]) -> bool [N,T]: tokens inside a strategic gram.

    Per token id (decoded once) the cache holds the normalised piece, its byte length,
    whether its first/last character is a word character, and whether it could overlap
    a gram at all (`GramMatcher.could_overlap`). Occurrences can only lie inside runs of
    consecutive "could overlap" tokens whose text is at least as long as the shortest
    gram, so only those runs are joined and searched (a few percent of the tokens in
    practice); each run is framed by one stand-in character per side with the word/
    non-word class of the real neighbour, which keeps the whole-word checks exact.
    """

    def __init__(self, tokenizer, grams: Iterable[str]):
        self.tokenizer = tokenizer
        self.grams = list(grams)
        self.matcher = GramMatcher(self.grams)
        self._known = np.zeros(0, dtype=bool)
        self._grow(max(len(tokenizer) if hasattr(tokenizer, "__len__") else 0, 1))

    def _grow(self, size: int) -> None:
        """Cache arrays for ids < size, plus three virtual ids after them: a non-word
        stand-in (`size`), a word stand-in (`size + 1`) and the matcher's zero padding."""
        old = len(self._known)
        arrays = {
            "_pieces": np.empty(size + 3, dtype=object),
            "_lengths": np.zeros(size + 3, dtype=np.int64),
            "_candidate": np.zeros(size + 3, dtype=bool),
            "_first_word": np.zeros(size + 3, dtype=bool),
            "_last_word": np.zeros(size + 3, dtype=bool),
        }
        for name, array in arrays.items():
            if old:
                array[:old] = getattr(self, name)[:old]
            setattr(self, name, array)
        word = self.matcher.word_standin.encode("utf-8")
        for offset, piece in enumerate((SEPARATOR, word, b"\0" * self.matcher.pad)):
            self._pieces[size + offset], self._lengths[size + offset] = piece, len(piece)
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
            text = normalise_piece(piece)
            encoded = text.encode("utf-8")
            self._pieces[token_id] = encoded
            self._lengths[token_id] = len(encoded)
            self._candidate[token_id] = self.matcher.could_overlap(text)
            self._first_word[token_id] = bool(text) and is_word_char(text[0])
            self._last_word[token_id] = bool(text) and is_word_char(text[-1])
        self._known[new_ids] = True

    def piece(self, token_id: int) -> str:
        """The cached (normalised) text piece of one token id, decoded on first use."""
        self._ensure_decoded(np.array([token_id], dtype=np.int64))
        return self._pieces[token_id].decode("utf-8")

    def __call__(self, token_ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        ids = torch.as_tensor(token_ids).cpu().numpy()
        active = torch.as_tensor(mask).bool().cpu().numpy()
        out = np.zeros(active.shape, dtype=bool)
        flat_ids = ids[active].astype(np.int64, copy=False)  # row-major: completion by completion
        if flat_ids.size == 0 or not self.matcher.needles:
            return torch.from_numpy(out)
        self._ensure_decoded(flat_ids)
        marks = self._detect_flat(flat_ids, active.sum(axis=1))
        if marks is not None:
            out[active] = marks
        return torch.from_numpy(out)

    def _detect_flat(self, flat_ids: np.ndarray, counts: np.ndarray) -> np.ndarray | None:
        """Marks for the concatenated completions (`counts` tokens each), None if no match."""
        total = len(flat_ids)
        row_first = np.zeros(total, dtype=bool)
        row_first[(np.cumsum(counts) - counts)[counts > 0]] = True
        row_last = np.roll(row_first, -1)  # the token before the next row's first; and the very last
        row_last[-1] = True
        cand = self._candidate[flat_ids]
        # Runs of consecutive candidates within one completion.
        run_start = np.flatnonzero(cand & (row_first | ~np.roll(cand, 1)))
        run_end = np.flatnonzero(cand & (row_last | ~np.roll(cand, -1)))  # inclusive
        if run_start.size == 0:
            return None
        token_lengths = self._lengths[flat_ids]
        csum = np.cumsum(token_lengths)
        run_bytes = csum[run_end] - csum[run_start] + token_lengths[run_start]
        keep = run_bytes >= self.matcher.min_len
        run_start, run_end = run_start[keep], run_end[keep]
        if run_start.size == 0:
            return None
        # Reduced sequence: per run [left stand-in, its tokens..., right stand-in].
        sizes = run_end - run_start + 3
        offsets = np.cumsum(sizes) - sizes
        flat_pos = np.repeat(run_start - 1 - offsets, sizes) + np.arange(int(sizes.sum()))
        left, right = offsets, offsets + sizes - 1
        seq = flat_ids[np.clip(flat_pos, 0, total - 1)]
        nonword_id = len(self._known)
        prev_word = ~row_first[run_start] & self._last_word[flat_ids[np.maximum(run_start - 1, 0)]]
        next_word = ~row_last[run_end] & self._first_word[flat_ids[np.minimum(run_end + 1, total - 1)]]
        seq[left] = nonword_id + prev_word
        seq[right] = nonword_id + next_word
        lengths = self._lengths[seq]
        ends = np.cumsum(lengths)
        pieces = self._pieces[np.append(seq, nonword_id + 2)]
        match_start, match_end = self.matcher.find(b"".join(pieces.tolist()), int(ends[-1]))
        if match_start.size == 0:
            return None
        is_token = np.ones(len(seq), dtype=bool)
        is_token[left] = is_token[right] = False
        ends = ends[is_token]
        hit = mark_overlaps(ends - lengths[is_token], ends, match_start, match_end)
        marks = np.zeros(total, dtype=bool)
        marks[flat_pos[is_token]] = hit
        return marks


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
