"""DC-CLIP stage 2: multilingual vision-language alignment with a symmetric InfoNCE loss.

Image side: the image tower's class prototypes (unit rows of ``ImageTower.protos``; a text that names several
classes, e.g. a hypernym, targets the normalised mean of their prototypes). Text side: student (or teacher)
features through the alignment head G. Loss = 1/2 (CE(text->image) + CE(image->text)) with a learnable
temperature; every batch holds distinct targets, with EN and ZH texts mixed.
"""
from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


@dataclass
class AlignConfig:
    steps: int = 800
    batch_size: int = 256
    lr: float = 3e-3
    weight_decay: float = 1e-4
    init_temperature: float = 0.07
    max_logit_scale: float = 100.0
    seed: int = 0
    log_every: int = 50


def build_targets(items: Sequence[dict], protos: torch.Tensor) -> tuple[np.ndarray, torch.Tensor, list[tuple]]:
    """items[i]["classes"] -> (item_target int64 [N], targets [M, D] unit rows, keys [M] class tuples)."""
    keys: dict[tuple, int] = {}
    item_target = np.zeros(len(items), np.int64)
    for i, it in enumerate(items):
        key = tuple(sorted(int(c) for c in it["classes"]))
        item_target[i] = keys.setdefault(key, len(keys))
    key_list = list(keys)
    targets = torch.stack([F.normalize(protos[list(k)].mean(0), dim=0) for k in key_list])   # [M, D]
    return item_target, targets, key_list


def info_nce(text: torch.Tensor, image: torch.Tensor, logit_scale: torch.Tensor) -> torch.Tensor:
    """Symmetric InfoNCE over matched rows of text [B, D] and image [B, D] (both L2-normalised)."""
    logits = logit_scale * text @ image.T                                  # [B, B]
    labels = torch.arange(len(text))
    return 0.5 * (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels))


def train_alignment(head: nn.Module, text_fn: Callable[[np.ndarray], torch.Tensor], item_target: np.ndarray,
                    targets: torch.Tensor, cfg: AlignConfig, extra_params: Sequence[nn.Parameter] = (),
                    log_path: str | Path | None = None, progress: bool = False) -> dict:
    """Train G (``head``) so that text_fn(item indices) -> [B, W] features land on their targets.

    ``text_fn`` returns cached features for a frozen text tower, or runs a trainable student (then pass its
    parameters as ``extra_params``).
    """
    from tqdm import tqdm
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    by_target: list[np.ndarray] = [np.empty(0, np.int64)] * len(targets)
    order = np.argsort(item_target, kind="stable")
    bounds = np.searchsorted(item_target[order], np.arange(len(targets) + 1))
    for m in range(len(targets)):
        by_target[m] = order[bounds[m]:bounds[m + 1]]
    usable = np.array([m for m in range(len(targets)) if len(by_target[m])])
    logit_scale = nn.Parameter(torch.tensor(math.log(1.0 / cfg.init_temperature)))
    params = [p for p in head.parameters() if p.requires_grad] + list(extra_params) + [logit_scale]
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    log = open(log_path, "a") if log_path else None
    t0 = time.time()
    B = min(cfg.batch_size, len(usable))
    losses = []
    for step in range(cfg.steps):
        lr = cfg.lr * 0.5 * (1 + math.cos(math.pi * step / cfg.steps))
        for g in opt.param_groups:
            g["lr"] = lr
        tgt = rng.choice(usable, size=B, replace=False)                    # distinct targets per batch
        idx = np.array([rng.choice(by_target[m]) for m in tgt])            # one random text per target
        g_txt = F.normalize(head(text_fn(idx)), dim=-1)                     # [B, D]
        loss = info_nce(g_txt, targets[torch.as_tensor(tgt)], logit_scale.exp().clamp(max=cfg.max_logit_scale))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(float(loss))
        if log and (step % cfg.log_every == 0 or step == cfg.steps - 1):
            log.write(json.dumps({"stage": "align", "step": step, "loss": float(loss), "lr": lr,
                                  "temperature": float(1 / logit_scale.exp())}) + "\n")
            log.flush()
    if log:
        log.close()
    dt = time.time() - t0
    return {"steps": cfg.steps, "final_loss": float(np.mean(losses[-20:])), "train_s": dt,
            "samples_per_s": cfg.steps * B / max(dt, 1e-9), "temperature": float(1 / logit_scale.exp())}


# ---------------------------------------------------------------------------------------------------------
# Generalised zero-shot scoring and calibration (choosing seen_gamma on seen classes only)
# ---------------------------------------------------------------------------------------------------------


def joint_text(g: torch.Tensor, gamma: float, eps: float) -> torch.Tensor:
    """[n, D] unit text vectors -> [n, D+1] joint embeddings (see dcclip_core.models)."""
    g = F.normalize(g, dim=-1)
    return F.normalize(torch.cat([g, torch.full_like(g[:, :1], -gamma / eps)], -1), dim=-1)


def joint_protos(protos: torch.Tensor, seen: torch.Tensor, eps: float) -> torch.Tensor:
    """[K, D] prototypes + [K] seen mask -> [K, D+1] image-side joint embeddings of one-hot class inputs."""
    return F.normalize(torch.cat([F.normalize(protos, dim=-1), eps * seen[:, None].float()], -1), dim=-1)


def class_queries(head: nn.Module, feats: torch.Tensor, item_class: np.ndarray, classes: np.ndarray) -> torch.Tensor:
    """Ensemble per class: mean of unit G(text) over that class's query texts -> [len(classes), D] unit rows."""
    with torch.no_grad():
        g = F.normalize(head(feats), dim=-1)
    rows = []
    for c in classes:
        sel = np.where(item_class == c)[0]
        rows.append(F.normalize(g[torch.as_tensor(sel)].mean(0), dim=0) if len(sel) else torch.zeros(g.shape[1]))
    return torch.stack(rows)


def topk_hits(q: torch.Tensor, P: torch.Tensor, classes: np.ndarray, ks=(1, 5)) -> dict[int, np.ndarray]:
    """q [C, D'] against P [K, D'] -> {k: bool [C] true class in top-k}."""
    S = q @ P.T
    top = S.topk(max(ks), dim=1).indices.numpy()
    return {k: (top[:, :k] == classes[:, None]).any(1) for k in ks}


def choose_gamma(head_factory: Callable[[], nn.Module], text_fn_factory, items_class: np.ndarray,
                 item_target: np.ndarray, targets: torch.Tensor, seen_classes: np.ndarray,
                 query_feats: torch.Tensor, query_class: np.ndarray, protos: torch.Tensor, eps: float,
                 cfg: AlignConfig, n_val: int = 100, seed: int = 1,
                 grid=np.round(np.arange(0.0, 0.42, 0.02), 2)) -> dict:
    """Pick seen_gamma by generalised zero-shot validation *inside the seen classes*.

    n_val seen classes play "unseen": G is trained on the rest, then for each gamma the harmonic mean of top-1
    (among all K prototypes) on the remaining-seen and the pseudo-unseen classes is measured.
    """
    rng = np.random.default_rng(seed)
    val = rng.permutation(seen_classes)[:n_val]
    tr_classes = np.setdiff1d(seen_classes, val)
    tr_set = set(tr_classes.tolist())
    keep = np.array([all(c in tr_set for c in cl) for cl in items_class], bool)   # items about tr classes only
    head = head_factory()
    sub = np.where(keep)[0]
    remap = {m: j for j, m in enumerate(np.unique(item_target[sub]))}
    sub_target = np.array([remap[m] for m in item_target[sub]])
    sub_targets = targets[torch.as_tensor(sorted(remap, key=remap.get))]
    text_fn = text_fn_factory(sub)
    train_alignment(head, text_fn, sub_target, sub_targets, cfg)
    seen_mask = torch.zeros(len(protos))
    seen_mask[torch.as_tensor(tr_classes)] = 1
    P = joint_protos(protos, seen_mask, eps)
    rows = []
    for gamma in grid:
        res = {}
        for name, cls in (("seen", tr_classes), ("unseen", val)):
            q = joint_text(class_queries(head, query_feats, query_class, cls), float(gamma), eps)
            res[name] = float(topk_hits(q, P, cls)[1].mean())
        hm = 2 * res["seen"] * res["unseen"] / max(res["seen"] + res["unseen"], 1e-9)
        rows.append({"gamma": float(gamma), **res, "hm": hm})
    best = max(rows, key=lambda r: r["hm"])
    return {"gamma": best["gamma"], "best": best, "grid": rows, "n_val_classes": int(n_val)}

