"""CoOp on the frozen text student: learnable context vectors around the class-name tokens (imports torch).

    seqs = PromptSequences(tokenizer, student.tok.weight, {"en": [...], "zh": [...]}, n_ctx=16, position="end")
    coop = CoOp(n_ctx=16, width=384)                 # the only parameter: ctx [M, W]
    W = coop(encoder, seqs)                          # [C, D+1] class embeddings in the joint space

A sequence is ``<s> ctx_1..ctx_M name-tokens suffix </s>`` ("end") or ``<s> ctx_1..ctx_M/2 name ctx_M/2+1..ctx_M
suffix </s>`` ("middle"); suffix is "." (EN) or "。" (ZH). With both languages, a class embedding is the
normalised mean of its EN and ZH sequences (one shared context). Token embeddings of the names are frozen,
non-persistent buffers: ``CoOp.state_dict()`` holds ``ctx`` and nothing else.
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from dcclip_core.tokenizer import BOS, EOS, PAD

SUFFIX = {"en": ".", "zh": "。"}


def load_text_student(name_or_dir: str = "default"):
    """The frozen TextStudent of an installed model (text weights only: faster than the whole twin)."""
    from safetensors import safe_open

    from dcclip_core.config import ModelConfig, model_dir
    from dcclip_core.models import TextStudent
    d = model_dir(str(name_or_dir))
    cfg = ModelConfig.load(d / "config.json")
    student = TextStudent(cfg.text, cfg.joint)
    with safe_open(str(d / cfg.files.get("weights", "model.safetensors")), framework="pt") as f:
        state = {k[len("text."):]: f.get_tensor(k).float() for k in f.keys() if k.startswith("text.")}
    student.load_state_dict(state, strict=True)
    for p in student.parameters():
        p.requires_grad_(False)
    return student.eval()


class FrozenTextEncoder(nn.Module):
    """Runs a TextStudent from input *embeddings* (so prompts can be spliced in); weights stay frozen."""

    def __init__(self, student):
        super().__init__()
        self.student = student.eval()
        for p in self.student.parameters():
            p.requires_grad_(False)

    @property
    def width(self) -> int:
        return self.student.cfg.width

    @property
    def token_embedding(self) -> torch.Tensor:
        return self.student.tok.weight                                      # [V, W]

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """x [n, L, W] token embeddings, mask [n, L] -> joint embeddings [n, D+1] (L2-normalised)."""
        s = self.student
        L = x.shape[1]
        h = s.ln_emb(x + s.pos.weight[:L][None])                            # [n, L, W]
        m = mask.to(h.dtype)
        bias = ((1.0 - m) * torch.finfo(h.dtype).min)[:, None, None, :]     # [n, 1, 1, L]
        for blk in s.layers:
            h = blk(h, bias)
        pooled = (h * m[..., None]).sum(1) / m.sum(1, keepdim=True).clamp(min=1.0)   # [n, W]
        return s.joint_embedding(pooled)


def _strip(ids: list[int]) -> list[int]:
    return [i for i in ids if i not in (BOS, EOS, PAD)]


def context_from_text(tokenizer, token_embedding: torch.Tensor, text: str) -> torch.Tensor:
    """Word embeddings of a template's words, e.g. "a photo of a" -> [M, W] (M = its token count)."""
    ids = _strip(tokenizer.encode([text])[0])
    if not ids:
        raise ValueError(f"context init {text!r} has no tokens")
    return token_embedding[torch.as_tensor(ids)].detach().clone()


class PromptSequences(nn.Module):
    """Frozen token embeddings of the prompt sequences of a class list (buffers only, never saved)."""

    def __init__(self, tokenizer, token_embedding: torch.Tensor, names: dict[str, Sequence[str]],
                 n_ctx: int, position: str = "end", langs: Sequence[str] = ("en",), max_len: int = 64):
        super().__init__()
        if position not in ("end", "middle", "front"):
            raise ValueError(f"class token position must be end|middle|front, not {position!r}")
        self.n_ctx, self.position, self.langs = int(n_ctx), position, tuple(langs)
        emb = token_embedding.detach()
        W = emb.shape[1]
        rows, ctx_rows, seq_class = [], [], []
        C = len(names[self.langs[0]])
        for lg in self.langs:
            if len(names[lg]) != C:
                raise ValueError("every language needs one name per class")
            for c, name in enumerate(names[lg]):
                name_ids = _strip(tokenizer.encode([name])[0])
                full = _strip(tokenizer.encode([name + SUFFIX[lg]])[0])
                suf = full[len(name_ids):] if full[:len(name_ids)] == name_ids else _strip(
                    tokenizer.encode([SUFFIX[lg]])[0])
                room = max_len - 2 - self.n_ctx - len(suf)
                name_ids = name_ids[:max(1, room)]
                M, h = self.n_ctx, self.n_ctx // 2
                if position == "end":       # <s> ctx name suffix </s>
                    layout = [BOS] + [-1] * M + name_ids + suf + [EOS]
                    cidx = [-1] + list(range(M)) + [-1] * (len(name_ids) + len(suf) + 1)
                elif position == "middle":  # <s> ctx[:h] name ctx[h:] suffix </s>
                    layout = [BOS] + [-1] * h + name_ids + [-1] * (M - h) + suf + [EOS]
                    cidx = [-1] + list(range(h)) + [-1] * len(name_ids) + list(range(h, M)) + \
                        [-1] * (len(suf) + 1)
                else:                       # <s> name ctx suffix </s>
                    layout = [BOS] + name_ids + [-1] * M + suf + [EOS]
                    cidx = [-1] * (1 + len(name_ids)) + list(range(M)) + [-1] * (len(suf) + 1)
                rows.append(layout)
                ctx_rows.append(cidx)
                seq_class.append(c)
        L = max(len(r) for r in rows)
        S = len(rows)
        base = torch.zeros(S, L, W)                                          # [S, L, W]
        ctx_index = torch.full((S, L), -1, dtype=torch.long)                 # [S, L] ctx slot or -1
        mask = torch.zeros(S, L, dtype=torch.long)                           # [S, L]
        for s, (r, ci) in enumerate(zip(rows, ctx_rows)):
            ids = torch.as_tensor([t if t >= 0 else PAD for t in r])
            base[s, :len(r)] = emb[ids] * torch.as_tensor([t >= 0 for t in r], dtype=emb.dtype)[:, None]
            ctx_index[s, :len(r)] = torch.as_tensor(ci)
            mask[s, :len(r)] = 1
        self.num_classes = C
        self.register_buffer("base", base, persistent=False)
        self.register_buffer("ctx_index", ctx_index, persistent=False)
        self.register_buffer("mask", mask, persistent=False)
        self.register_buffer("seq_class", torch.as_tensor(seq_class), persistent=False)

    def forward(self, ctx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """ctx [M, W] (shared) or [S, M, W] (per sequence) -> (embeddings [S, L, W], mask [S, L])."""
        sel = self.ctx_index.clamp(min=0)                                    # [S, L]
        if ctx.dim() == 2:
            filled = ctx[sel]                                                # [S, L, W]
        else:
            filled = torch.gather(ctx, 1, sel[..., None].expand(-1, -1, ctx.shape[-1]))
        is_ctx = (self.ctx_index >= 0)[..., None].to(ctx.dtype)
        return self.base * (1 - is_ctx) + filled * is_ctx, self.mask

    def class_embeddings(self, encoder: FrozenTextEncoder, ctx: torch.Tensor) -> torch.Tensor:
        """[C, D+1]: encode every sequence, average a class's languages, L2-normalise."""
        x, mask = self(ctx)
        e = encoder(x, mask)                                                 # [S, D+1]
        if len(self.langs) == 1:
            return e
        out = torch.zeros(self.num_classes, e.shape[1], dtype=e.dtype).index_add(0, self.seq_class, e)
        return F.normalize(out, dim=-1)


class CoOp(nn.Module):
    """M learnable context vectors (the whole prompt): init N(0, 0.02) or a template's word embeddings."""

    def __init__(self, n_ctx: int = 16, width: int = 384, init: torch.Tensor | None = None, seed: int = 0):
        super().__init__()
        if init is not None:
            ctx = init.detach().clone().float()
        else:
            g = torch.Generator().manual_seed(seed)
            ctx = torch.randn(n_ctx, width, generator=g) * 0.02
        self.ctx = nn.Parameter(ctx)                                          # [M, W]

    @property
    def n_ctx(self) -> int:
        return self.ctx.shape[0]

    def forward(self, encoder: FrozenTextEncoder, seqs: PromptSequences) -> torch.Tensor:
        return seqs.class_embeddings(encoder, self.ctx)


def load_nonstrict(module: nn.Module, state: dict[str, torch.Tensor]) -> dict[str, list[str]]:
    """Copy tensors whose name and shape match; everything else keeps its fresh init (MVLPT target init).

    Returns {"loaded": [...], "reinitialised": [...], "ignored": [...]} for logs and tests.
    """
    own = module.state_dict()
    loaded, reinit = [], []
    with torch.no_grad():
        for k, v in own.items():
            src = state.get(k)
            if src is not None and tuple(src.shape) == tuple(v.shape):
                v.copy_(torch.as_tensor(src, dtype=v.dtype))
                loaded.append(k)
            else:
                reinit.append(k)
    return {"loaded": loaded, "reinitialised": reinit, "ignored": sorted(set(state) - set(own))}
