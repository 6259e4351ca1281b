"""Hugging Face CLIP-style teachers from a local directory (never downloads): ``AltCLIPModel``,
``ChineseCLIPModel``, ``CLIPModel``.

    t = load_hf_teacher("/models/AltCLIP")          # config.json model_type picks the class
    f = t.image_features(pixels, layers=[6, 12], pool="grid", grid=2)
    # {"final": [n, D] L2-normalised projected embedding, "layer6": [n, W, 2, 2], "layer12": ...}
    g = t.text_features(["一只猫", "a cat"], layers=[6, 12])
    # {"final": [n, D] L2-normalised, "layer6": [n, W] masked mean, ...}

Layer numbers index ``hidden_states`` (0 = embedding output, k = after transformer block k). Vision layers are
patch-token grids (CLS dropped), pooled to ``grid`` x ``grid`` or averaged (``pool="mean"``); text layers are
masked means over tokens. Final features come from the model's own ``get_image_features`` /
``get_text_features`` (projection included), so they are exactly what the model uses for zero-shot.
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

MODEL_CLASSES = {"clip": "CLIPModel", "chinese_clip": "ChineseCLIPModel", "altclip": "AltCLIPModel"}
CLIP_MEAN = [0.48145466, 0.4578275, 0.40821073]
CLIP_STD = [0.26862954, 0.26130258, 0.27577711]


class TeacherLoadError(RuntimeError):
    """A teacher directory that cannot be loaded (missing files, unsupported model type)."""


def _preprocessor(path: Path, image_size: int) -> tuple[int, list[float], list[float]]:
    """(crop size, mean, std) from preprocessor_config.json when present, else CLIP's defaults."""
    p = path / "preprocessor_config.json"
    if not p.is_file():
        return image_size, list(CLIP_MEAN), list(CLIP_STD)
    c = json.loads(p.read_text())
    crop = c.get("crop_size", c.get("size", image_size))
    if isinstance(crop, dict):
        crop = crop.get("height") or crop.get("shortest_edge") or image_size
    return int(crop), list(c.get("image_mean", CLIP_MEAN)), list(c.get("image_std", CLIP_STD))


class HFTeacher:
    """A transformers dual encoder, frozen, exposing intermediate and final features of both towers."""

    modality = ("image", "text")

    def __init__(self, path: str | Path, dtype: torch.dtype = torch.float32, max_len: int | None = None,
                 device: str = "cpu"):
        import transformers
        path = Path(path)
        cfg_path = path / "config.json"
        if not cfg_path.is_file():
            raise TeacherLoadError(f"{path}: no config.json (expected a saved transformers model directory)")
        model_type = json.loads(cfg_path.read_text()).get("model_type")
        if model_type not in MODEL_CLASSES:
            raise TeacherLoadError(f"{path}: model_type {model_type!r} is not a supported teacher "
                                   f"(have {sorted(MODEL_CLASSES)})")
        cls = getattr(transformers, MODEL_CLASSES[model_type])
        try:
            self.model = cls.from_pretrained(str(path), local_files_only=True, dtype=dtype).eval()
            self.tokenizer = transformers.AutoTokenizer.from_pretrained(str(path), local_files_only=True)
        except OSError as e:
            raise TeacherLoadError(f"{path}: cannot load {MODEL_CLASSES[model_type]} locally: {e}") from None
        for p in self.model.parameters():
            p.requires_grad_(False)
        self.device = torch.device(device)
        self.model.to(self.device)
        self.kind = model_type
        self.path = path
        cfg = self.model.config
        self.image_size, self.mean, self.std = _preprocessor(path, cfg.vision_config.image_size)
        self.patch_size = cfg.vision_config.patch_size
        self.vision_layers = cfg.vision_config.num_hidden_layers
        self.text_layers = cfg.text_config.num_hidden_layers
        self.vision_width = cfg.vision_config.hidden_size
        self.text_width = cfg.text_config.hidden_size
        self.dim = cfg.projection_dim
        limit = getattr(cfg.text_config, "max_position_embeddings", 77)
        if model_type == "altclip":            # XLM-R positions start after the padding index
            limit -= 2
        self.max_len = int(min(max_len or limit, limit))
        self.id = f"hf:{model_type}:{path.name}"

    # ---- image -----------------------------------------------------------------------------------------
    @torch.no_grad()
    def image_features(self, pixels: torch.Tensor, layers: Sequence[int] = (), pool: str = "grid",
                       grid: int = 2) -> dict[str, torch.Tensor]:
        """pixels [n, 3, S, S] (normalised with ``mean``/``std``) -> feature dict (see module docstring)."""
        S = pixels.shape[-1]
        o = self.model.get_image_features(pixel_values=pixels.to(self.device, self.model.dtype),
                                          output_hidden_states=True, interpolate_pos_encoding=S != self.image_size)
        out = {"final": F.normalize(o.pooler_output.float().cpu(), dim=-1)}            # [n, D]
        for k in layers:
            h = o.hidden_states[k].float().cpu()                                        # [n, 1+P, W]
            tokens = h[:, 1:]
            if pool == "mean":
                out[f"layer{k}"] = tokens.mean(1)                                      # [n, W]
            elif pool == "cls":
                out[f"layer{k}"] = h[:, 0]
            else:
                s = int(math.isqrt(tokens.shape[1]))
                fmap = tokens.transpose(1, 2).reshape(len(h), -1, s, s)                 # [n, W, s, s]
                out[f"layer{k}"] = F.adaptive_avg_pool2d(fmap, grid)                    # [n, W, g, g]
        return out

    # ---- text ------------------------------------------------------------------------------------------
    def tokenize(self, texts: Sequence[str]) -> dict[str, torch.Tensor]:
        enc = self.tokenizer(list(texts), padding=True, truncation=True, max_length=self.max_len,
                             return_tensors="pt")
        return {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]}

    @torch.no_grad()
    def text_features(self, texts: Sequence[str], layers: Sequence[int] = ()) -> dict[str, torch.Tensor]:
        enc = self.tokenize(texts)
        o = self.model.get_text_features(**{k: v.to(self.device) for k, v in enc.items()}, output_hidden_states=True)
        out = {"final": F.normalize(o.pooler_output.float().cpu(), dim=-1)}            # [n, D]
        m = enc["attention_mask"].float()[..., None]                                    # [n, L, 1]
        for k in layers:
            h = o.hidden_states[k].float().cpu()                                        # [n, L, W]
            out[f"layer{k}"] = (h * m).sum(1) / m.sum(1).clamp(min=1.0)                 # [n, W]
        return out

    def preprocess(self, image) -> np.ndarray:
        """PIL image / path -> float32 [3, S, S] with this teacher's size and normalisation."""
        from dcclip_core.preprocess import load_image, to_pixels
        im = image if hasattr(image, "mode") else load_image(image, target_size=self.image_size)
        return to_pixels(im, self.image_size, self.mean, self.std)

    @torch.no_grad()
    def zero_shot_logits(self, pixels: torch.Tensor, class_texts: Sequence[str]) -> torch.Tensor:
        """Cosine similarities [n, K] between images and texts (a sanity check of a loaded teacher)."""
        return self.image_features(pixels)["final"] @ self.text_features(class_texts)["final"].T


def load_hf_teacher(path: str | Path, **kw) -> HFTeacher:
    return HFTeacher(path, **kw)
