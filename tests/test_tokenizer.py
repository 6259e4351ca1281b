"""Tokenizer edge cases on the shipped default model's tokenizer.json (real vocabulary, no torch)."""
import numpy as np
import pytest

from dcclip_core.config import MODELS_DIR

TOK = MODELS_DIR / "default" / "tokenizer.json"
pytestmark = pytest.mark.skipif(not TOK.is_file(), reason="default model not built (python -m training build-default)")


@pytest.fixture(scope="module")
def tok():
    from dcclip_core import Tokenizer
    return Tokenizer.from_file(TOK, max_len=64, normalize="t2s")


def test_traditional_is_normalised_to_simplified(tok):
    a, _ = tok(["貓咪在電腦旁邊"])
    b, _ = tok(["猫咪在电脑旁边"])
    assert np.array_equal(a, b)


def test_chinese_english_mixed_have_no_unknowns(tok):
    for text in ["一只猫的照片", "a photo of a cat", "猫 and 狗 in the 花园", "咖啡 coffee ☕"]:
        ids, mask = tok([text])
        real = ids[0][mask[0] == 1]
        assert real[0] == 0 and real[-1] == 2               # <s> ... </s>
        assert (real[1:-1] != 3).sum() >= 1                 # something other than <unk>
    ids, _ = tok(["一只猫的照片"])
    assert 3 not in ids[0]


def test_empty_whitespace_and_emoji_never_fail(tok):
    ids, mask = tok(["", "   ", "\n\t", "🐱🐶", "\u200b", "a"])
    assert ids.shape[0] == 6 and ids.dtype == np.int64 and mask.dtype == np.int64
    assert (mask.sum(1) >= 2).all()                          # at least <s> </s>
    assert ids[0][0] == 0 and ids[0][1] == 2


def test_very_long_input_is_truncated(tok):
    ids, mask = tok(["中华人民共和国" * 5000, "word " * 20000])
    assert ids.shape[1] == 64 and mask.sum(1).tolist() == [64, 64]
    assert ids[0, 63] == 2                                   # still ends with </s>


def test_padding_and_batch_consistency(tok):
    one, _ = tok(["a cat"])
    many, mask = tok(["a cat", "a much longer sentence about a cat sitting on a mat"])
    n = mask[0].sum()
    assert np.array_equal(many[0, :n], one[0, :n]) and (many[0, n:] == 1).all()


def test_rejects_non_strings(tok):
    with pytest.raises(TypeError):
        tok("a single string")
    with pytest.raises(TypeError):
        tok([None])
