"""Learned concepts: detectors for things the ImageNet classifier has no class for, from labelled images that
Debian packages ship (training.concept_sources: tuxpaint-stamps-default photographs, gcompris-qt-data photos).

A head is a linear detector on the L2-normalised pooled features of the frozen backbone:

    s_c = sigmoid(scale * (f_hat . h_c) + b_c)          h_c: unit mean of the concept's image features (with a
                                                        mirrored copy of each image), b_c = -scale * threshold_c

calibrated so that it fires (s_c >= 0.5) only when f_hat . h_c passes the similarity that ``FALSE_RATE`` of the
*other* concepts' images reach (they are the negatives). Concepts without a Chinese name are left out (the bank
is bilingual); the gcompris world-music photos are titled by region, not by what they show, and are left out.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from dcclip_core.numeric import l2_normalize

SCALE = 20.0
FALSE_RATE = 0.01


def _features(model, images) -> np.ndarray:
    """PIL images -> (n, F) L2-normalised pooled features (each image and its mirror averaged)."""
    from PIL import ImageOps
    px = []
    for im in images:
        for view in (im, ImageOps.mirror(im)):
            px.append(model.preprocess(view))
    out = []
    for i in range(0, len(px), 32):
        _, f = model.encode_pixels(np.stack(px[i:i + 32]), return_features=True)
        out.append(f)
    f = l2_normalize(np.concatenate(out).astype(np.float32))                    # (2n, F)
    return l2_normalize(f.reshape(-1, 2, f.shape[1]).mean(1))                   # (n, F)


def training_concepts() -> list:
    from training.concept_sources import gcompris_concepts, tuxpaint_concepts
    out = []
    for c in tuxpaint_concepts() + gcompris_concepts():
        if not c.zh or "music" in c.id:
            continue
        out.append(c)
    return out


def learn_heads(model, work: str | Path) -> tuple[list[dict], dict[str, np.ndarray], dict]:
    """-> (head entries for training.concept_bank.bank_entries, arrays head.weight/head.bias/head.threshold,
    report). Raises FileNotFoundError (via concept_sources) when the packages are not installed."""
    from training.concept_sources import MissingPackageError, load_image_rgb
    try:
        concepts = training_concepts()
    except MissingPackageError as e:
        raise FileNotFoundError(str(e)) from e
    work = Path(work)
    work.mkdir(parents=True, exist_ok=True)
    feats, owner = [], []
    for j, c in enumerate(concepts):
        ims = [load_image_rgb(x) for x in c.images]
        feats.append(_features(model, ims))
        owner += [j] * len(ims)
    X = np.concatenate(feats)                                                   # (N, F)
    owner = np.asarray(owner)
    H = l2_normalize(np.stack([X[owner == j].mean(0) for j in range(len(concepts))]))   # (C, F)
    S = X @ H.T                                                                 # (N, C) cosine
    thr = np.empty(len(concepts), np.float32)
    for j in range(len(concepts)):
        neg = S[owner != j, j]
        thr[j] = float(np.quantile(neg, 1.0 - FALSE_RATE))
    heads = [{"id": c.id.replace("/", "-"), "en": list(c.en[:2]), "zh": list(c.zh[:2]), "source": c.source,
              "licence": c.licence, "images": int((owner == j).sum())} for j, c in enumerate(concepts)]
    arrays = {"head.weight": (SCALE * H).astype(np.float32), "head.bias": (-SCALE * thr).astype(np.float32),
              "head.threshold": np.full(len(concepts), 0.5, np.float32)}
    report = {"heads": len(heads), "images": int(len(X)), "false_rate": FALSE_RATE,
              "sources": sorted({c.source for c in concepts})}
    (work / "heads.json").write_text(json.dumps({"report": report, "heads": heads}, ensure_ascii=False, indent=1))
    return heads, arrays, report
