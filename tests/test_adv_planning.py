"""Planning-token detection with real offline tokenizers built in the test."""

from __future__ import annotations

import string

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

from retrain_core.advantages import PlanningDetector, compile_gram_pattern
from retrain_core.config.schema import DEFAULT_PLANNING_GRAMS

CORPUS = [
    "Let me double check this. Wait, let me think about another way to solve it.",
    "Notice that the key insight is simple: we could go back and start over.",
    "So x equals 3 and the answer is 12. That's not right, let me verify.",
    "On second thought, what if we try another approach? Is this right? Yes.",
    "LET ME VERIFY: nothing to see here, hmm. The key is: meet at the doubled checkpoint!",
] * 10


def gpt2_pieces_tokenizer() -> PreTrainedTokenizerFast:
    """Byte-level BPE whose vocabulary holds the pieces of "Let me double check" as one worked example."""
    vocab = {c: i for i, c in enumerate(sorted(pre_tokenizers.ByteLevel.alphabet()))}
    for piece in ["Let", "Ġme", "Ġdou", "ble", "Ġcheck"]:
        vocab[piece] = len(vocab)
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    return PreTrainedTokenizerFast(tokenizer_object=tok)


def trained_byte_bpe(vocab_size=300) -> PreTrainedTokenizerFast:
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False
    )
    tok.train_from_iterator(CORPUS, trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok)


def metaspace_bpe() -> Tokenizer:
    """SentencePiece-style: '▁' marks spaces and decoding strips the leading one."""
    tok = Tokenizer(models.BPE(unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first")
    tok.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="first")
    trainer = trainers.BpeTrainer(vocab_size=120, special_tokens=["[UNK]"], show_progress=False)
    tok.train_from_iterator(CORPUS, trainer)
    return tok  # a raw `tokenizers.Tokenizer`: the detector accepts those too


CHARS = string.ascii_letters + string.digits + " .,?!'’\n:-éÉß—_\t"


def char_tokenizer() -> PreTrainedTokenizerFast:
    tok = Tokenizer(models.BPE(vocab={c: i for i, c in enumerate(CHARS)}, merges=[]))
    tok.decoder = decoders.Fuse()
    return PreTrainedTokenizerFast(tokenizer_object=tok)


def encode_rows(tokenizer, texts, pad=0, extra=3):
    rows = [tokenizer.encode(t, add_special_tokens=False) for t in texts]
    width = max(len(r) for r in rows) + extra
    ids = torch.full((len(rows), width), pad, dtype=torch.long)
    mask = torch.zeros(len(rows), width, dtype=torch.bool)
    for i, r in enumerate(rows):
        ids[i, : len(r)] = torch.tensor(r, dtype=torch.long)
        mask[i, : len(r)] = True
    return ids, mask


def reference_marks(tokenizer, text, grams):
    """Independent reference: the tokenizer's own offsets and the regex on the raw text."""
    enc = tokenizer(text, return_offsets_mapping=True, add_special_tokens=False)
    pattern = compile_gram_pattern(grams)
    spans = [m.span(1) for m in pattern.finditer(text)] if pattern else []
    return [any(s < b and e > a for a, b in spans) for s, e in enc["offset_mapping"]]


def test_spec_example_gpt2_pieces():
    tok = gpt2_pieces_tokenizer()
    ids = torch.tensor([tok.convert_tokens_to_ids(["Let", "Ġme", "Ġdou", "ble", "Ġcheck"])])
    out = PlanningDetector(tok, ["double check"])(ids, torch.ones_like(ids, dtype=torch.bool))
    assert out.tolist() == [[False, False, True, True, True]]
    both = PlanningDetector(tok, DEFAULT_PLANNING_GRAMS)(ids, torch.ones_like(ids, dtype=torch.bool))
    assert both.tolist() == [[False, False, True, True, True]]  # "let me" alone is no gram


@pytest.mark.parametrize("make", [trained_byte_bpe, metaspace_bpe, char_tokenizer])
def test_real_tokenizers_match_the_reference(make):
    tok = make()
    texts = [
        "Let me double check this, then LET ME VERIFY.",
        "wait let me think: that's not right",
        "Nothing to see here. Let meet at the doubled checkpoint.",
        "Hmm. The key insight is that the key is here.",
    ]
    hf = tok if isinstance(tok, PreTrainedTokenizerFast) else PreTrainedTokenizerFast(tokenizer_object=tok)
    ids, mask = encode_rows(hf, texts)
    out = PlanningDetector(tok, DEFAULT_PLANNING_GRAMS)(ids, mask)
    assert not out[~mask].any()
    for i, text in enumerate(texts):
        expected = reference_marks(hf, text, DEFAULT_PLANNING_GRAMS)
        assert out[i, : int(mask[i].sum())].tolist() == expected, text
    assert out[0].any() and out[1].any() and out[3].any()
    assert not out[2].any()  # "meet", "doubled", "checkpoint" are other words


def test_overlapping_occurrences_all_count_and_earlier_tokens_are_never_marked():
    tok = char_tokenizer()
    text = "so wait let me think"
    ids, mask = encode_rows(tok, [text])
    out = PlanningDetector(tok, ["wait let me", "let me think"])(ids, mask)[0, : len(text)]
    assert out.tolist() == [c >= text.index("wait") for c in range(len(text))]


def test_gram_spaces_match_any_whitespace_and_quotes_match_curly_ones():
    tok = char_tokenizer()
    texts = ["let me\ncheck", "That’s not right", "that's  not right", "let \n\t me  check.", "let me"]
    ids, mask = encode_rows(tok, texts)
    out = PlanningDetector(tok, ["let me check", "that's not right"])(ids, mask)
    assert out[0, :12].all() and out[1, :16].all()
    assert out[2, :17].all()  # a space in a gram matches any run of whitespace
    assert out[3, :16].all() and not out[3, 16]  # the "." is no part of it
    assert not out[4].any()


def test_unicode_neighbours_short_grams_and_case():
    tok = char_tokenizer()
    texts = ["élet me check", "—Let Me Check—", "let me checké", "LET ME CHECK_", "hmm, wait.\tok",
             "ß wait ß", "waiter"]
    ids, mask = encode_rows(tok, texts)
    grams = ["let me check", "wait", "hmm"]
    out = PlanningDetector(tok, grams)(ids, mask)
    for i, text in enumerate(texts):
        assert out[i, : len(text)].tolist() == reference_marks(tok, text, grams), text
    assert [bool(out[i].any()) for i in range(len(texts))] == [False, True, False, False, True, True, False]


def test_no_match_across_completions_and_ragged_masks():
    tok = char_tokenizer()
    ids, mask = encode_rows(tok, ["ok let me", "check it", "let me check"], extra=5)
    mask[1, 0] = False  # a hole inside a row is simply not part of the text
    out = PlanningDetector(tok, ["let me check"])(ids, mask)
    assert not out[0].any() and not out[1].any()
    assert out[2, :12].all() and not out[2, 12:].any()


def test_each_token_id_is_decoded_once():
    class CountingTokenizer(PreTrainedTokenizerFast):
        calls = 0

        def batch_decode(self, sequences, **kwargs):
            type(self).calls += len(sequences)
            return super().batch_decode(sequences, **kwargs)

    base = char_tokenizer()
    tok = CountingTokenizer(tokenizer_object=base.backend_tokenizer)
    ids, mask = encode_rows(tok, ["let me check " * 20] * 4)
    det = PlanningDetector(tok, DEFAULT_PLANNING_GRAMS)
    first = det(ids, mask)
    after_first = CountingTokenizer.calls
    assert after_first == 2 * len(set(ids[mask].tolist()))  # once alone, once doubled
    assert torch.equal(det(ids, mask), first)
    assert CountingTokenizer.calls == after_first


def test_empty_grams_and_empty_masks():
    tok = char_tokenizer()
    ids, mask = encode_rows(tok, ["let me check"])
    assert not PlanningDetector(tok, [])(ids, mask).any()
    assert not PlanningDetector(tok, ["let me check"])(ids, torch.zeros_like(mask)).any()


WORDS = ["let", "Let", "me", "check", "double", "wait", "think", "the", "key", "is", "insight",
         "notice", "that", "meet", "checks", "x=3", "or", "we", "could", "go", "back", "and"]


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.lists(st.sampled_from(WORDS), min_size=1, max_size=25), min_size=1, max_size=4),
       st.lists(st.sampled_from([" ", " ", "  ", "\n", ", ", ". "]), min_size=30, max_size=30))
def test_property_matches_regex_reference_with_trained_bpe(rows, seps):
    tok = _BPE
    texts = ["".join(w + seps[i % 30] for i, w in enumerate(words)).rstrip() for words in rows]
    ids, mask = encode_rows(tok, texts)
    out = _BPE_DETECTOR(ids, mask)
    for i, text in enumerate(texts):
        expected = reference_marks(tok, text, DEFAULT_PLANNING_GRAMS)
        assert out[i, : int(mask[i].sum())].tolist() == expected, text
    assert not out[~mask].any()


_BPE = trained_byte_bpe()
_BPE_DETECTOR = PlanningDetector(_BPE, DEFAULT_PLANNING_GRAMS)


ALPHABET = ["let", "me", "check", "wait", "hmm", "é", "ß", "—", "_", "x1", "LET", "Check", "’s", "that",
            "not", "right"]


@settings(max_examples=80, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(ALPHABET), st.sampled_from(["", " ", "  ", "\n", ",", "\t"])),
                max_size=30))
def test_property_gram_matcher_equals_regex_on_raw_text(parts):
    from retrain_core.advantages import GramMatcher
    from retrain_core.advantages.grams import normalise_piece

    grams = ["let me check", "wait", "hmm", "that's not right", "me"]
    text = "".join(w + sep for w, sep in parts)
    # normalise char by char so char i of the text stays char i (as cached pieces do)
    norm = "".join(normalise_piece(c) for c in text)
    data = norm.encode("utf-8")
    starts, ends = GramMatcher(grams).find(data)
    got = sorted({(len(data[:a].decode()), len(data[:b].decode())) for a, b in zip(starts.tolist(), ends.tolist())})
    expected = sorted({m.span(1) for m in compile_gram_pattern(grams).finditer(text)})
    assert got == expected, (text, got, expected)


_CHAR = char_tokenizer()
_CHAR_DETECTOR = PlanningDetector(_CHAR, ["let me check", "another way to", "wait", "that's not right"])


@settings(max_examples=80, deadline=None)
@given(st.lists(st.sampled_from(["let", "me", "check", "another", "way", "to", "wait", "x", "z9", "é", "—",
                                 "_", "that's", "not", "right", "a", "nother", "LET"]), max_size=25),
       st.lists(st.sampled_from(["", " ", "\n", ", "]), min_size=25, max_size=25))
def test_property_char_tokens_with_unrelated_neighbours(words, seps):
    text = "".join(w + seps[i] for i, w in enumerate(words))
    if not text:
        return
    ids, mask = encode_rows(_CHAR, [text, "wait " + text])
    out = _CHAR_DETECTOR(ids, mask)
    for i, row_text in enumerate([text, "wait " + text]):
        expected = reference_marks(_CHAR, row_text, _CHAR_DETECTOR.grams)
        assert out[i, : len(row_text)].tolist() == expected, row_text
