"""Visual prompts for the CNN image tower (imports torch).

* ``PixelPrompt`` (VPT, pixel space): a learnable frame of width ``pad`` added to the border of the
  normalised pixels (padding prompt). Training back-propagates through the frozen EfficientNet; at inference
  the frame is added in numpy preprocessing before the ONNX image model.
* ``FeaturePrompt`` (VPT, feature-map space): T learnable tokens appended to the last feature map before mean
  pooling, i.e. pooled' = (hw * f + sum(tokens)) / (hw + T) -- for a mean-pooled CNN this is all a prompt at
  that layer can do. Trains on cached pooled features; applied at inference to the ONNX ``features`` output
  followed by the numpy image head (``dcclip_core.prompts.ImageHead``).
Deep VPT (tokens per transformer layer) needs a ViT tower: see ``training/prompts/vit.py``.
"""
from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from dcclip_core.prompts import border_mask


class TorchImageHead(nn.Module):
    """Frozen head of the image tower: pooled features [n, F] -> joint embeddings [n, D+1] (buffers only)."""

    def __init__(self, model_dir: str | Path):
        super().__init__()
        from safetensors import safe_open

        from dcclip_core.config import ModelConfig, model_dir as _md
        d = _md(str(model_dir))
        cfg = ModelConfig.load(d / "config.json")
        self.text_space = cfg.joint.space == "text"
        keys = (("image.classifier.weight", "W"), ("image.classifier.bias", "b"))
        if not self.text_space:
            keys += (("image.protos", "P"), ("image.seen", "seen"))
        with safe_open(str(d / cfg.files.get("weights", "model.safetensors")), framework="pt") as f:
            for k, name in keys:
                self.register_buffer(name, f.get_tensor(k).float(), persistent=False)
        self.T = float(cfg.image.softmax_temperature)
        self.eps = float(cfg.joint.seen_eps)
        if self.text_space:              # torch twin of dcclip_core.concepts (class + group concepts)
            from dcclip_core.concepts import ConceptBank
            bank = ConceptBank.load(d)
            nk = len(bank.classifier_b) + len(bank.group)
            self.register_buffer("C", torch.from_numpy(bank.text[:nk]).float(), persistent=False)   # [K+G, D]
            self.register_buffer("G", torch.from_numpy(bank.group).float(), persistent=False)       # [G, K]
            self.T, m = float(bank.mix.temperature), bank.mix
            self.mix = (int(m.top_k), float(m.group_weight), float(m.group_min))

    def forward(self, feat: torch.Tensor) -> torch.Tensor:
        p = ((feat @ self.W.T + self.b) / self.T).softmax(-1)                 # [n, K]
        if self.text_space:
            from dcclip_core.models import concept_mix
            k, gw, gmin = self.mix
            return concept_mix(p, self.C, self.G, k, gw, gmin)                # [n, D]
        u = F.normalize(p @ self.P, dim=-1)                                   # [n, D]
        s = (p @ self.seen)[:, None] * self.eps                               # [n, 1]
        return F.normalize(torch.cat([u, s], -1), dim=-1)


class FeaturePrompt(nn.Module):
    """T tokens [T, F] appended to the last feature map (hw positions) before mean pooling."""

    def __init__(self, n_tokens: int = 4, feature_dim: int = 1280, hw: int = 49, init: float = 0.0):
        super().__init__()
        self.hw = int(hw)
        self.tokens = nn.Parameter(torch.empty(n_tokens, feature_dim).uniform_(-init, init) if init else
                                   torch.zeros(n_tokens, feature_dim))       # [T, F]

    def forward(self, feat: torch.Tensor, tokens: torch.Tensor | None = None) -> torch.Tensor:
        return apply_tokens(feat, self.tokens if tokens is None else tokens, self.hw)


def apply_tokens(feat: torch.Tensor, tokens: torch.Tensor, hw: int) -> torch.Tensor:
    """Pooled features [n, F] of an hw-position map with tokens [T, F] appended before the mean -> [n, F]."""
    return (hw * feat + tokens.sum(0)) / (hw + tokens.shape[0])


class PixelPrompt(nn.Module):
    """A learnable frame [3, B] on the border (width ``pad``) of S x S normalised pixels (added)."""

    def __init__(self, size: int = 224, pad: int = 16):
        super().__init__()
        self.size, self.pad = int(size), int(pad)
        mask = torch.from_numpy(border_mask(self.size, self.pad))
        self.register_buffer("mask", mask, persistent=False)                  # [S, S] bool
        self.frame = nn.Parameter(torch.zeros(3, int(mask.sum())))            # [3, B]

    def image(self) -> torch.Tensor:
        out = torch.zeros(3, self.size * self.size, dtype=self.frame.dtype)
        out = out.index_copy(1, torch.nonzero(self.mask.flatten()).squeeze(1), self.frame)
        return out.view(3, self.size, self.size)                              # [3, S, S]

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return pixels + self.image()[None]


def feature_map_hw(image_size: int, stride: int = 32) -> int:
    """Positions of the last feature map of a stride-32 CNN (7 x 7 = 49 at 224)."""
    s = -(-image_size // stride)
    return s * s


def load_image_tower(name_or_dir: str = "default"):
    """The frozen torch image tower of an installed model (backbone weights from the pip package)."""
    from dcclip_core.models import load_torch_model
    tower = load_torch_model(name_or_dir).image.eval()
    for p in tower.parameters():
        p.requires_grad_(False)
    return tower
