"""Bilingual tokenizer: opencc (traditional -> simplified) + a HF ``tokenizers`` Unigram model.

The ``tokenizer.json`` of a model is a complete HF tokenizer (NFKC + control-character cleanup, metaspace,
``<s> ... </s>`` template, truncation); this wrapper adds Chinese script normalisation, which HF tokenizers
cannot express, and returns padded int64 numpy arrays for ONNX Runtime. No torch.

    tok = Tokenizer.from_file("assets/models/default/tokenizer.json", max_len=64, normalize="t2s")
    ids, mask = tok(["貓", "a cat", ""])          # int64 (3, L) each; every row has at least <s> </s>
"""
from __future__ import annotations

import threading
from pathlib import Path
from typing import Sequence

import numpy as np

BOS, PAD, EOS, UNK = 0, 1, 2, 3         # student ids of the special tokens (same order as XLM-R)
_converters: dict[str, object] = {}
_conv_lock = threading.Lock()


def script_converter(config: str | None):
    """An opencc converter such as ``t2s`` (cached; None / "" / "none" means no conversion)."""
    if not config or config == "none":
        return None
    with _conv_lock:
        if config not in _converters:
            import opencc
            _converters[config] = opencc.OpenCC(config if config.endswith(".json") else f"{config}.json")
        return _converters[config]


class Tokenizer:
    def __init__(self, hf_tokenizer, max_len: int = 64, normalize: str | None = "t2s"):
        self.hf = hf_tokenizer
        self.max_len = int(max_len)
        self.normalize = normalize
        self.hf.enable_truncation(self.max_len)
        self.hf.no_padding()                       # we pad ourselves to the batch's longest row
        self.vocab_size = self.hf.get_vocab_size()

    @classmethod
    def from_file(cls, path: str | Path, max_len: int = 64, normalize: str | None = "t2s") -> "Tokenizer":
        from tokenizers import Tokenizer as HFTokenizer
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"tokenizer file not found: {path}")
        return cls(HFTokenizer.from_file(str(path)), max_len=max_len, normalize=normalize)

    def prepare(self, text: str) -> str:
        """Script normalisation applied before the HF pipeline (trad -> simp); non-strings are rejected."""
        if not isinstance(text, str):
            raise TypeError(f"expected str, got {type(text).__name__}")
        conv = script_converter(self.normalize)
        return conv.convert(text) if conv is not None and text else text

    def encode(self, texts: Sequence[str]) -> list[list[int]]:
        """Token ids per text, ``<s> ... </s>``, at most ``max_len`` (long input is truncated, never fails)."""
        if isinstance(texts, str):
            raise TypeError("Tokenizer expects a list of strings, not a single string")
        # a huge paste only needs its head: cut before normalising (max_len tokens never need > 8 chars each)
        prepared = [self.prepare(t[: self.max_len * 8]) for t in texts]
        return [e.ids for e in self.hf.encode_batch(prepared)]

    def __call__(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        rows = self.encode(texts)
        L = max([len(r) for r in rows] + [2])
        ids = np.full((len(rows), L), PAD, np.int64)          # (n, L)
        mask = np.zeros((len(rows), L), np.int64)             # (n, L) 1 = real token
        for i, r in enumerate(rows):
            if len(r) < 2:                                    # defensive: an empty row still gets <s> </s>
                r = [BOS, EOS]
            ids[i, :len(r)] = r
            mask[i, :len(r)] = 1
        return ids, mask

    def tokens(self, text: str) -> list[str]:
        """Readable pieces (for debugging and tests)."""
        return self.hf.encode(self.prepare(text)).tokens
