"""Zero-shot image classification metrics and evaluation with the ONNX runtime model (numpy; no torch).

    ds = load_dataset(DIR)                                  # training.datasets: ImageFolder or ELEVATER
    res = evaluate_zeroshot(dcclip_core.load(), ds, "zh")   # metrics dict, see compute_metrics
    print(report_table(res)); plot_report(res, "eval_zh.png")

Class text embeddings (``dcclip_core.zeroshot.class_embeddings``) are the normalised mean over the dataset's
templates (``DIR/templates.json`` if it ships one, else the bundled ``en_short`` / ``zh_short``); an image's scores
are cosines to those class embeddings. Metrics follow ELEVATER/CLIP: accuracy (top-1), mean-per-class accuracy, 11-point VOC mAP for
multilabel sets, ROC-AUC for binary sets that ask for it; the dataset's primary metric is ``metric`` /
``score``. The command is ``python -m training eval`` (training/cmd_eval.py).
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Sequence

import numpy as np

from dcclip_core import numeric
from dcclip_core.zeroshot import class_embeddings
from training.datasets import Dataset, DatasetError, Split, dataset_templates, read_image_source

METRICS = ("accuracy", "mean-per-class", "11point_mAP", "roc_auc")


# ---------------------------------------------------------------------------------------------------------
# Metrics (ELEVATER conventions)
# ---------------------------------------------------------------------------------------------------------
def softmax(x: np.ndarray, scale: float = 100.0) -> np.ndarray:
    """Row softmax of ``scale`` x cosines (CLIP's logit scale)."""
    return numeric.softmax(x * scale, axis=1)


def ap_11point(y: np.ndarray, score: np.ndarray) -> float:
    """PASCAL VOC 2007 11-point interpolated AP of one class: mean over recall r in {0, .1, ..., 1} of the
    best precision at recall >= r."""
    order = np.argsort(-score, kind="stable")
    y = np.asarray(y)[order]
    tp = np.cumsum(y == 1)
    fp = np.cumsum(y != 1)
    npos = max(int((y == 1).sum()), 1)
    rec = tp / npos
    prec = tp / np.maximum(tp + fp, 1)
    return float(np.mean([prec[rec >= t].max() if (rec >= t).any() else 0.0 for t in np.linspace(0, 1, 11)]))


def mean_ap_11point(Y: np.ndarray, S: np.ndarray) -> float:
    """Mean 11-point AP over classes that have at least one positive. Y 0/1 [n, K], S scores [n, K]."""
    aps = [ap_11point(Y[:, k], S[:, k]) for k in range(Y.shape[1]) if Y[:, k].any()]
    return float(np.mean(aps)) if aps else 0.0


def compute_metrics(scores: np.ndarray, labels: np.ndarray, multilabel: bool = False,
                    metric: str = "accuracy") -> dict:
    """scores [n, K] (cosines), labels int [n] or 0/1 [n, K] -> metrics dict (plain floats / lists)."""
    n, K = scores.shape
    top = np.argsort(-scores, axis=1, kind="stable")
    out: dict = {"n": int(n), "num_classes": int(K)}
    probs = softmax(scores)
    if multilabel:
        Y = labels.astype(bool)
        out["accuracy"] = float(Y[np.arange(n), top[:, 0]].mean()) if n else 0.0      # top-1 is a true label
        out["11point_mAP"] = mean_ap_11point(Y, scores)
        per = [ap_11point(Y[:, k], scores[:, k]) if Y[:, k].any() else None for k in range(K)]
        out["per_class"] = per
        out["support"] = Y.sum(0).astype(int).tolist()
        out["mean-per-class"] = float(np.mean([p for p in per if p is not None])) if any(
            p is not None for p in per) else 0.0
    else:
        y = labels.astype(np.int64)
        pred = top[:, 0]
        out["accuracy"] = float((pred == y).mean()) if n else 0.0
        if K > 5:
            out["top5"] = float((top[:, :5] == y[:, None]).any(1).mean())
        cm = np.zeros((K, K), np.int64)
        np.add.at(cm, (y, pred), 1)
        support = cm.sum(1)
        per = [float(cm[k, k] / support[k]) if support[k] else None for k in range(K)]
        out["per_class"] = per
        out["support"] = support.astype(int).tolist()
        out["mean-per-class"] = float(np.mean([p for p in per if p is not None])) if n else 0.0
        out["confusion"] = cm.tolist()
        if K == 2 and len(np.unique(y)) == 2:
            from sklearn.metrics import roc_auc_score
            out["roc_auc"] = float(roc_auc_score(y, probs[:, 1]))
    if metric not in METRICS:
        raise ValueError(f"unknown metric {metric!r} (have {METRICS})")
    if metric == "11point_mAP" and not multilabel:
        out["11point_mAP"] = mean_ap_11point(np.eye(K, dtype=bool)[labels], scores)
    if metric == "roc_auc" and "roc_auc" not in out:
        raise ValueError("roc_auc needs a binary dataset with both classes present")
    out["metric"] = metric
    out["score"] = float(out[metric])
    return out


# ---------------------------------------------------------------------------------------------------------
# Zero-shot with the ONNX runtime model
# ---------------------------------------------------------------------------------------------------------
def encode_split(model, split: Split, batch_size: int = 16, progress: bool = False,
                 limit: int | None = None) -> tuple[np.ndarray, np.ndarray, list[dict]]:
    """Image embeddings of a split -> (emb [m, D], kept row indices [m], errors [{"image", "error"}])."""
    from concurrent.futures import ThreadPoolExecutor

    from dcclip_core.preprocess import ImageLoadError
    from tqdm import tqdm
    n = len(split) if limit is None else min(limit, len(split))
    embs, kept, errors = [], [], []

    def prep(i):
        try:
            return i, model.preprocess(read_image_source(split.images[i])), None
        except (ImageLoadError, OSError, KeyError) as e:          # KeyError: member missing from the zip
            return i, None, str(e)

    workers = max(1, min(4, getattr(model, "threads", 2)))
    with ThreadPoolExecutor(workers) as pool, tqdm(total=n, desc="images", disable=not progress,
                                                    mininterval=5) as bar:
        for s in range(0, n, batch_size):
            rows = list(pool.map(prep, range(s, min(n, s + batch_size))))
            good = [(i, px) for i, px, err in rows if err is None]
            errors += [{"image": str(split.images[i]), "error": err} for i, _, err in rows if err is not None]
            if good:
                embs.append(model.encode_pixels(np.stack([px for _, px in good])))
                kept += [i for i, _ in good]
            bar.update(len(rows))
    D = model.dim
    emb = np.concatenate(embs) if embs else np.zeros((0, D), np.float32)
    return emb, np.asarray(kept, np.int64), errors


def evaluate_zeroshot(model, ds: Dataset, lang: str = "en", split: str = "test", templates: Sequence[str] | None = None,
                      metric: str | None = None, batch_size: int = 16, limit: int | None = None,
                      progress: bool = False, image_emb: tuple | None = None) -> dict:
    """Zero-shot metrics of ``model`` (``dcclip_core.Model``-like: encode_text, preprocess, encode_pixels, dim)
    on one split. ``image_emb`` = a cached ``encode_split`` result (e.g. to score EN and ZH on one encoding)."""
    if split not in ds.splits:
        raise DatasetError(f"{ds.name}: no {split!r} split (have {sorted(ds.splits)})")
    t0 = time.time()
    templates = list(templates) if templates else dataset_templates(ds, lang)
    names = ds.class_names(lang)
    T = class_embeddings(model.encode_text, names, templates, bank=getattr(model, "concept_bank", None))  # [K, D]
    t_text = time.time() - t0
    sp = ds.splits[split]
    emb, kept, errors = image_emb if image_emb is not None else encode_split(model, sp, batch_size, progress, limit)
    t_img = time.time() - t0 - t_text
    scores = emb @ T.T                                                           # [m, K]
    res = compute_metrics(scores, sp.labels[kept], ds.multilabel, metric or ds.metric)
    res.update(dataset=ds.name, layout=ds.layout, split=split, lang=lang, classes=list(ds.classes),
               class_names=names, templates=len(templates), errors=len(errors), error_list=errors[:20],
               missing_names=ds.missing_names(lang), multilabel=ds.multilabel,
               images_per_s=len(kept) / max(t_img, 1e-9) if image_emb is None else None,
               time_s=time.time() - t0)
    return res


# ---------------------------------------------------------------------------------------------------------
# Report: table, JSON, plot
# ---------------------------------------------------------------------------------------------------------
def report_table(res: dict, max_rows: int = 60) -> str:
    head = (f"{res['dataset']} ({res['layout']}, {res['split']}, {res['lang']}): {res['n']} images, "
            f"{res['num_classes']} classes, {res['templates']} templates"
            + (f", {res['errors']} unreadable" if res["errors"] else "")
            + (f", {res['missing_names']} classes without a {res['lang']} name (English used)"
               if res.get("missing_names") else ""))
    rows = [("accuracy", res["accuracy"]), ("mean-per-class", res["mean-per-class"])]
    for k in ("top5", "11point_mAP", "roc_auc"):
        if k in res:
            rows.append((k, res[k]))
    lines = [head, "", "| metric | value |", "|---|---:|"]
    lines += [f"| {k}{' (primary)' if k == res['metric'] else ''} | {100 * v:.2f} |" for k, v in rows]
    per_name = "AP (11-pt)" if res["multilabel"] else "accuracy"
    lines += ["", f"| class | name | support | {per_name} |", "|---|---|---:|---:|"]
    order = sorted(range(res["num_classes"]), key=lambda k: -1 if res["per_class"][k] is None else res["per_class"][k])
    for k in order[:max_rows]:
        v = res["per_class"][k]
        lines.append(f"| {res['classes'][k]} | {res['class_names'][k]} | {res['support'][k]} | "
                     f"{'—' if v is None else f'{100 * v:.1f}'} |")
    if res["num_classes"] > max_rows:
        lines.append(f"| ... | ({res['num_classes'] - max_rows} more classes) | | |")
    return "\n".join(lines)


def plot_report(res: dict, path: str | Path) -> Path:
    """Confusion matrix (<= 40 classes, single-label) beside per-class accuracy / AP; PNG."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    K = res["num_classes"]
    labels = [str(c)[:18] for c in res["classes"]]                 # class ids: always renderable glyphs
    show_cm = "confusion" in res and K <= 40
    fig, axes = plt.subplots(1, 2 if show_cm else 1, figsize=(13 if show_cm else 7, max(4, min(12, 0.3 * K + 2))),
                             squeeze=False)
    ax = axes[0, 0]
    per = [0.0 if v is None else v for v in res["per_class"]]
    ax.barh(range(K), per, color="tab:blue")
    ax.set_yticks(range(K))
    ax.set_yticklabels(labels if K <= 60 else [""] * K, fontsize=7)
    ax.invert_yaxis()
    ax.set_xlim(0, 1)
    ax.set_xlabel("AP (11-point)" if res["multilabel"] else "accuracy")
    ax.set_title(f"{res['dataset']} [{res['lang']}] {res['metric']} = {100 * res['score']:.1f}")
    if show_cm:
        cm = np.asarray(res["confusion"], np.float64)
        cm = cm / np.maximum(cm.sum(1, keepdims=True), 1)
        ax = axes[0, 1]
        im = ax.imshow(cm, cmap="Blues", vmin=0, vmax=1)
        ax.set_xticks(range(K))
        ax.set_yticks(range(K))
        ax.set_xticklabels(labels, rotation=90, fontsize=7)
        ax.set_yticklabels(labels, fontsize=7)
        ax.set_xlabel("predicted")
        ax.set_ylabel("true")
        ax.set_title("confusion (row-normalised)")
        fig.colorbar(im, ax=ax, fraction=0.046)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def summary(res: dict) -> dict:
    """The one-line JSON: scalar metrics and identity, no matrices."""
    keys = ("accuracy", "metric", "score", "mean-per-class", "top5", "11point_mAP", "roc_auc", "n", "num_classes",
            "dataset", "layout", "split", "lang", "model", "templates", "errors", "missing_names", "time_s",
            "images_per_s")
    return {k: res[k] for k in keys if k in res}
