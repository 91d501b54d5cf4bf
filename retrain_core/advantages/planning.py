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
        # One separator after each completion's last token, so no gram spans two of them.
        pieces = np.insert(self._pieces[flat_ids], row_last + 1, SEPARATOR)
        lengths = np.insert(self._lengths[flat_ids], row_last + 1, len(SEPARATOR))
        match_start, match_end = self.matcher.find(b"".join(pieces.tolist()))
        if match_start.size == 0:
            return torch.from_numpy(out)
        is_token = np.ones(len(pieces), dtype=bool)
        is_token[row_last + np.arange(1, len(row_last) + 1)] = False
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
