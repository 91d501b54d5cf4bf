"""Planning-token detection (SPEC §4.6) from token ids and a real tokenizer.

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

from .grams import GramMatcher, normalise_piece

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
    """detector(token_ids [N,T], mask [N,T]) -> bool [N,T]: tokens inside a strategic gram."""

    def __init__(self, tokenizer, grams: Iterable[str]):
        self.tokenizer = tokenizer
        self.grams = list(grams)
        self.matcher = GramMatcher(self.grams)
        self._known = np.zeros(0, dtype=bool)
        self._grow(max(len(tokenizer) if hasattr(tokenizer, "__len__") else 0, 1))

    def _grow(self, size: int) -> None:
        """Cache arrays for ids < size, plus two virtual ids after them: `size` is the
        separator between completions and `size + 1` the zero padding the matcher wants."""
        old = len(self._known)
        pieces = np.empty(size + 2, dtype=object)
        lengths = np.zeros(size + 2, dtype=np.int64)
        if old:
            pieces[:old], lengths[:old] = self._pieces[:old], self._lengths[:old]
        pieces[size], lengths[size] = SEPARATOR, len(SEPARATOR)
        pieces[size + 1] = b"\0" * self.matcher.pad
        self._pieces, self._lengths = pieces, lengths
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
            encoded = normalise_piece(piece).encode("utf-8")
            self._pieces[token_id] = encoded
            self._lengths[token_id] = len(encoded)
        self._known[new_ids] = True

    def piece(self, token_id: int) -> str:
        """The cached (normalised) text piece of one token id, decoded on first use."""
        self._ensure_decoded(np.array([token_id], dtype=np.int64))
        return self._pieces[token_id].decode("utf-8")

    def __call__(self, token_ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        ids = torch.as_tensor(token_ids).cpu().numpy()
        active = torch.as_tensor(mask).bool().cpu().numpy()
        out = np.zeros(active.shape, dtype=bool)
        flat_ids = ids[active].astype(np.int64)  # row-major: completion by completion
        if flat_ids.size == 0 or not self.matcher.needles:
            return torch.from_numpy(out)
        self._ensure_decoded(flat_ids)
        counts = active.sum(axis=1)
        row_last = np.cumsum(counts)[counts > 0] - 1  # flat index of each completion's last token
        # A separator after each completion's last token (no gram spans two completions) and
        # the zero padding the matcher wants are two virtual token ids: one gather, one join.
        sep_id = len(self._known)
        with_seps = np.insert(flat_ids, row_last + 1, sep_id)
        lengths = self._lengths[with_seps]
        ends = np.cumsum(lengths)
        pieces = self._pieces[np.append(with_seps, sep_id + 1)]
        match_start, match_end = self.matcher.find(b"".join(pieces.tolist()), int(ends[-1]))
        if match_start.size == 0:
            return torch.from_numpy(out)
        is_token = with_seps != sep_id
        ends = ends[is_token]
        starts = ends - lengths[is_token]
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
