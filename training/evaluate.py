"""`python -m training eval`: zero-shot image classification on an ImageFolder or ELEVATER dataset, EN or ZH.

    python -m training eval --dataset DIR --lang en|zh [--model NAME] [--out DIR] [--json]

Runs the ONNX runtime model (``dcclip_core.load``; no torch). Class text embeddings are the normalised mean over
the dataset's templates (``DIR/templates.json`` if it ships one, else ``assets/data/templates.json``
``en_short`` / ``zh_short``); an image's scores are cosines to those class embeddings.

Dataset layouts (``load_dataset``):

* **ImageFolder**: ``DIR/test/<class>/*`` (``DIR/train/<class>/*`` optional), ``DIR/classnames.json`` mapping
  each class folder to ``{"en": "...", "zh": "..."}`` (a plain string = the English name; no file = folder
  names).
* **ELEVATER** (microsoft/vision-datasets, as the ELEVATER toolkit reads it): a dataset-info JSON
  (``{"name", "type", "test": {"index_path", "files_for_local_usage"}, "labelmap", ...}``; a list of them is
  accepted with ``--name``) or, without one, ``test.txt`` + ``labels.txt``. Index files in the *iris* format
  (``train.zip@dir/img.jpg 3`` per line; multilabel ``0,5,7``) or *coco* JSON (``images`` with ``file_name`` /
  ``zip_file``, ``annotations`` with ``category_id``, ``categories``). Images are read straight from
  (uncompressed) zips, or from the extracted file when the zip is absent. Chinese names come from an optional
  ``classnames.json`` (label name or index -> ``{"en", "zh"}``, or ``{"en": [...], "zh": [...]}``).

Metrics follow ELEVATER/CLIP: accuracy (top-1), mean-per-class accuracy, 11-point VOC mAP for multilabel sets,
ROC-AUC for binary sets that ask for it; the dataset's primary metric is ``metric`` / ``score``, chosen from its
name (``ELEVATER_METRICS``) or ``--metric``. Writes a report table, JSON and a plot (confusion matrix or
per-class accuracy) to ``--out``; ``--json`` prints the summary as the last stdout line:
``{"accuracy": float, "metric": str, "score": float, ...}``.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

IMAGE_EXTS = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".heic", ".heif", ".avif"}
METRICS = ("accuracy", "mean-per-class", "11point_mAP", "roc_auc")
# ELEVATER / CLIP per-dataset metric (everything else: accuracy). Keys are ELEVATER dataset names.
ELEVATER_METRICS = {
    "voc-2007-classification": "11point_mAP",
    "hateful-memes": "roc_auc",
    "caltech-101": "mean-per-class",
    "fgvc-aircraft-2013b-variants102": "mean-per-class",
    "oxford-flower-102": "mean-per-class",
    "oxford-iiit-pets": "mean-per-class",
}


class DatasetError(ValueError):
    """A dataset directory that cannot be read; the message says what is missing."""


# ---------------------------------------------------------------------------------------------------------
# Datasets
# ---------------------------------------------------------------------------------------------------------
@dataclass
class Split:
    """One split: image sources (path, or (zip path, member)) and labels (int [n], or 0/1 [n, K] multilabel)."""
    images: list
    labels: np.ndarray

    def __len__(self) -> int:
        return len(self.images)


@dataclass
class Dataset:
    name: str
    layout: str                                   # "imagefolder" | "elevater-iris" | "elevater-coco"
    classes: list[str]                            # class ids (folder names / labelmap names)
    names: dict[str, list[str]]                   # lang -> display name per class
    splits: dict[str, Split]
    multilabel: bool = False
    metric: str = "accuracy"
    templates: dict[str, list[str]] = field(default_factory=dict)   # dataset's own templates (may be empty)
    root: Path | None = None

    def class_names(self, lang: str) -> list[str]:
        """Names in ``lang``; classes without one fall back to English, then to the class id."""
        own = self.names.get(lang) or []
        en = self.names.get("en") or []
        return [(own[i] if i < len(own) and own[i] else None) or (en[i] if i < len(en) and en[i] else None)
                or self.classes[i] for i in range(len(self.classes))]

    def missing_names(self, lang: str) -> int:
        own = self.names.get(lang) or []
        return sum(1 for i in range(len(self.classes)) if not (i < len(own) and own[i]))


def read_image_source(src):
    """A split entry -> something ``dcclip_core.load_image`` accepts (path, or the member's bytes)."""
    if isinstance(src, tuple):
        zpath, member = src
        with zipfile.ZipFile(zpath) as z:
            return z.read(member)
    return src


def _class_name_table(path: Path, classes: Sequence[str]) -> dict[str, list[str]]:
    """classnames.json -> {lang: [name per class]}. Accepts {class: {"en", "zh"}}, {class: "name"}, or
    {"en": [...], "zh": [...]} (lists in class order); class keys may be ids or indices."""
    if not path.is_file():
        return {"en": [c.replace("_", " ") for c in classes]}
    data = json.loads(path.read_text(encoding="utf-8"))
    out: dict[str, list[str]] = {}
    if isinstance(data, dict) and data and all(isinstance(v, list) for v in data.values()):
        for lang, names in data.items():
            if len(names) != len(classes):
                raise DatasetError(f"{path}: {lang!r} lists {len(names)} names for {len(classes)} classes")
            out[lang] = [str(n) for n in names]
        return out
    if not isinstance(data, dict):
        raise DatasetError(f"{path}: expected a JSON object mapping class -> {{'en': ..., 'zh': ...}}")
    for i, c in enumerate(classes):
        v = data.get(c, data.get(str(i)))
        if v is None:
            continue
        if isinstance(v, str):
            v = {"en": v}
        for lang, name in v.items():
            name = name[0] if isinstance(name, list) else name
            out.setdefault(lang, [""] * len(classes))[i] = str(name)
    out.setdefault("en", [c.replace("_", " ") for c in classes])
    out["en"] = [n or c.replace("_", " ") for n, c in zip(out["en"], classes)]
    return out


def _templates_file(path: Path) -> dict[str, list[str]]:
    if not path.is_file():
        return {}
    data = json.loads(path.read_text(encoding="utf-8"))
    if isinstance(data, list):
        return {"en": data, "zh": data}
    return {k: v for k, v in data.items() if isinstance(v, list)}


def _image_folder(root: Path) -> Dataset:
    test = root / "test"
    classes = sorted(p.name for p in test.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not classes:
        raise DatasetError(f"{test}: no class folders (expected {test}/<class>/<image>)")
    splits = {}
    for split in ("train", "val", "test"):
        d = root / split
        if not d.is_dir():
            continue
        images, labels = [], []
        for k, c in enumerate(classes):
            for p in sorted((d / c).glob("*")) if (d / c).is_dir() else []:
                if p.suffix.lower() in IMAGE_EXTS and p.is_file():
                    images.append(p)
                    labels.append(k)
        splits[split] = Split(images, np.asarray(labels, np.int64))
    if not len(splits["test"]):
        raise DatasetError(f"{test}: class folders hold no images ({sorted(IMAGE_EXTS)})")
    return Dataset(root.name, "imagefolder", classes, _class_name_table(root / "classnames.json", classes), splits,
                   templates=_templates_file(root / "templates.json"), root=root)


# ---- ELEVATER -------------------------------------------------------------------------------------------
def _find_info(root: Path, name: str | None) -> dict | None:
    """The dataset-info entry in a *.json of root (a dict, or a list of them selected by ``name``)."""
    for p in sorted(root.glob("*.json")):
        try:
            data = json.loads(p.read_text(encoding="utf-8"))
        except (ValueError, UnicodeDecodeError):
            continue
        entries = data if isinstance(data, list) else [data]
        entries = [e for e in entries if isinstance(e, dict) and "type" in e and isinstance(e.get("test"), dict)]
        if not entries:
            continue
        if name:
            entries = [e for e in entries if e.get("name") == name]
        elif len(entries) > 1:
            tail = root.name
            match = [e for e in entries if Path(str(e.get("root_folder", ""))).name == tail]
            if len(match) != 1:
                raise DatasetError(f"{p} describes {len(entries)} datasets; pick one with --name "
                                   f"({', '.join(str(e.get('name')) for e in entries[:8])} ...)")
            entries = match
        if entries:
            return entries[0]
    return None


def _resolve(root: Path, ref: str, base: Path) -> object:
    """'a.zip@dir/x.jpg' or a relative path -> (zip, member) or a file path; falls back to extracted files."""
    if "@" in ref:
        zname, member = ref.split("@", 1)
        for d in (base, root):
            z = d / zname
            if z.is_file():
                return (z, member)
        for cand in (base / Path(zname).stem / member, base / member, root / member):
            if cand.is_file():
                return cand
        raise DatasetError(f"{ref}: neither {base / zname} nor an extracted {member} exists")
    p = Path(ref)
    return p if p.is_absolute() else base / p


def _read_labelmap(path: Path) -> list[str]:
    return [ln.strip() for ln in path.read_text(encoding="utf-8").splitlines() if ln.strip()]


def _iris_split(root: Path, base: Path, index: Path, K: int | None) -> tuple[list, list[list[int]]]:
    images, labels = [], []
    for ln in index.read_text(encoding="utf-8").splitlines():
        ln = ln.strip()
        if not ln:
            continue
        ref, _, lab = ln.rpartition(" ")
        if not ref:
            raise DatasetError(f"{index}: line {ln!r} is not '<image> <label[,label...]>'")
        images.append(_resolve(root, ref, base))
        labels.append([int(x) for x in lab.split(",") if x != ""])
    return images, labels


def _coco_split(root: Path, base: Path, index: Path) -> tuple[list, list[list[int]], list[str]]:
    data = json.loads(index.read_text(encoding="utf-8"))
    cats = sorted(data.get("categories", []), key=lambda c: c["id"])
    cat_index = {c["id"]: i for i, c in enumerate(cats)}
    by_image: dict = {}
    for a in data.get("annotations", []):
        by_image.setdefault(a["image_id"], []).append(cat_index[a["category_id"]])
    images, labels = [], []
    for im in sorted(data["images"], key=lambda m: m["id"]):
        ref = im["file_name"]
        if im.get("zip_file") and "@" not in ref:
            ref = f"{im['zip_file']}@{ref}"
        images.append(_resolve(root, ref, base))
        labels.append(sorted(set(by_image.get(im["id"], []))))
    return images, labels, [str(c["name"]) for c in cats]


def _elevater(root: Path, name: str | None) -> Dataset:
    info = _find_info(root, name)
    if info is None:                                           # bare layout: test.txt / test.json + labels.txt
        idx = next((root / f for f in ("test.txt", "test_images.txt", "test_ic.txt", "test.json", "test_coco.json")
                    if (root / f).is_file()), None)
        if idx is None:
            raise DatasetError(f"{root}: no ELEVATER index (test.txt / test.json) and no dataset-info JSON")
        info = {"name": root.name, "type": "classification_multiclass", "test": {"index_path": idx.name},
                "format": "coco" if idx.suffix == ".json" else "iris"}
        for lm in ("labels.txt", "labelmap.txt"):
            if (root / lm).is_file():
                info["labelmap"] = lm
        for split in ("train", "val"):
            for f in (f"{split}.txt", f"{split}_images.txt", f"{split}_ic.txt", f"{split}.json"):
                if (root / f).is_file() and (root / f).suffix == idx.suffix:
                    info[split] = {"index_path": f}
                    break
    base = root
    rf = info.get("root_folder")
    if rf and (root / rf).is_dir():                             # a hub checkout: files under root_folder
        base = root / rf
    fmt = info.get("format") or ("coco" if str(info["test"]["index_path"]).endswith(".json") else "iris")
    multilabel = "multilabel" in str(info.get("type", ""))
    classes = _read_labelmap(base / info["labelmap"]) if info.get("labelmap") else []
    raw: dict[str, tuple[list, list[list[int]]]] = {}
    for split in ("train", "val", "test"):
        if not isinstance(info.get(split), dict):
            continue
        index = base / info[split]["index_path"]
        if not index.is_file():
            if split == "test":
                raise DatasetError(f"{index}: test index file missing")
            continue
        if fmt == "coco":
            images, labels, cat_names = _coco_split(root, base, index)
            classes = classes or cat_names
        else:
            images, labels = _iris_split(root, base, index, len(classes) or None)
        raw[split] = (images, labels)
    if not classes:
        K = 1 + max((max(l) for _, ls in raw.values() for l in ls if l), default=0)
        classes = [str(k) for k in range(K)]
    K = len(classes)
    if not multilabel and any(len(l) != 1 for _, ls in raw.values() for l in ls):
        multilabel = True                                      # several labels on one image: treat as multilabel
    splits = {}
    for split, (images, labels) in raw.items():
        if any(k >= K or k < 0 for l in labels for k in l):
            raise DatasetError(f"{split}: label index out of range for {K} classes")
        if multilabel:
            y = np.zeros((len(labels), K), np.int64)
            for i, l in enumerate(labels):
                y[i, l] = 1
        else:
            y = np.asarray([l[0] for l in labels], np.int64)
        splits[split] = Split(images, y)
    dname = str(info.get("name") or root.name)
    return Dataset(dname, f"elevater-{fmt}", classes, _class_name_table(base / "classnames.json", classes)
                   if (base / "classnames.json").is_file() else _class_name_table(root / "classnames.json", classes),
                   splits, multilabel=multilabel, metric=default_metric(dname, multilabel),
                   templates=_templates_file(base / "templates.json") or _templates_file(root / "templates.json"),
                   root=root)


ELEVATER_INDEXES = ("test.txt", "test_images.txt", "test_ic.txt", "test.json", "test_coco.json")


def is_elevater(root: str | Path) -> bool:
    """True when ``root`` has an ELEVATER index (a bare ``test.txt`` / ``test.json``) or a dataset-info JSON."""
    root = Path(root)
    if any((root / f).is_file() for f in ELEVATER_INDEXES):
        return True
    try:
        return _find_info(root, None) is not None
    except DatasetError:                                       # several datasets described: still ELEVATER
        return True


def load_elevater(root: str | Path, name: str | None = None) -> Dataset:
    """Read an ELEVATER directory (dataset-info JSON or bare index; iris / coco; zipped or extracted)."""
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"{root}: dataset directory not found")
    return _elevater(root, name)


def default_metric(name: str, multilabel: bool = False) -> str:
    key = name.lower().replace("_", "-")
    if key in ELEVATER_METRICS:
        return ELEVATER_METRICS[key]
    return "11point_mAP" if multilabel else "accuracy"


def load_dataset(path: str | Path, name: str | None = None) -> Dataset:
    """Read an ImageFolder (``test/<class>/``) or ELEVATER directory (see module docstring)."""
    root = Path(path)
    if not root.is_dir():
        raise DatasetError(f"{root}: dataset directory not found")
    if (root / "test").is_dir() and any(p.is_dir() for p in (root / "test").iterdir()):
        ds = _image_folder(root)
        ds.metric = default_metric(ds.name)
        return ds
    return _elevater(root, name)


def default_templates(lang: str, kind: str = "short") -> list[str]:
    from dcclip_core.config import ASSETS_DIR
    data = json.loads((ASSETS_DIR / "data" / "templates.json").read_text(encoding="utf-8"))
    key = lang if kind == "full" else f"{lang}_short"
    return list(data[key])


def dataset_templates(ds: Dataset, lang: str, kind: str = "short") -> list[str]:
    """The dataset's own templates for ``lang`` if it ships them, else the bundled defaults."""
    own = ds.templates.get(lang)
    return list(own) if own else default_templates(lang, kind)


# ---------------------------------------------------------------------------------------------------------
# Metrics (ELEVATER conventions)
# ---------------------------------------------------------------------------------------------------------
def softmax(x: np.ndarray, scale: float = 100.0) -> np.ndarray:
    z = x * scale
    z = z - z.max(1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(1, keepdims=True)


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
def class_embeddings(encode_text: Callable[[list[str]], np.ndarray], names: Sequence[str],
                     templates: Sequence[str]) -> np.ndarray:
    """Normalised mean over templates of the text embeddings of each class name -> [K, D]."""
    texts = [t.format(n) if "{}" in t else f"{t} {n}" for n in names for t in templates]
    emb = np.asarray(encode_text(texts), np.float32).reshape(len(names), len(templates), -1).mean(1)
    return emb / np.maximum(np.linalg.norm(emb, axis=1, keepdims=True), 1e-12)


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
    T = class_embeddings(model.encode_text, names, templates)                    # [K, D]
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


# ---------------------------------------------------------------------------------------------------------
# CLI
# ---------------------------------------------------------------------------------------------------------
def add_args(p: argparse.ArgumentParser) -> None:
    p.formatter_class = argparse.RawDescriptionHelpFormatter
    p.description = __doc__.split("\n\n", 2)[0] + "\n\n" + "Layouts: ImageFolder (test/<class>/..., classnames.json) " \
        "or ELEVATER (dataset-info JSON / test.txt + labels.txt, iris or coco index, images in zips)."
    p.add_argument("--dataset", required=True, help="dataset directory (ImageFolder or ELEVATER layout)")
    p.add_argument("--lang", default="en", choices=["en", "zh"], help="language of class names and templates")
    p.add_argument("--model", default="default", help="installed model name or model directory (ONNX runtime)")
    p.add_argument("--split", default="test", help="split to evaluate (test, val, train)")
    p.add_argument("--name", default=None, help="ELEVATER: dataset name when the info JSON lists several")
    p.add_argument("--metric", default=None, choices=METRICS, help="primary metric (default: by dataset)")
    p.add_argument("--templates", default="short", help="'short' / 'full' bundled templates, or a JSON file "
                   "({'en': [...], 'zh': [...]} or a list); a dataset's own templates.json wins over 'short'/'full'")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--limit", type=int, default=None, help="evaluate only the first N images (quick checks)")
    p.add_argument("--threads", type=int, default=None, help="ONNX Runtime threads (default: all cores)")
    p.add_argument("--out", default=None, help="write eval_<lang>.json, report_<lang>.md and eval_<lang>.png here")
    p.add_argument("--json", action="store_true", help="print the summary as one JSON line (last line of stdout)")


def run(args: argparse.Namespace) -> int:
    import dcclip_core
    try:
        ds = load_dataset(args.dataset, args.name)
    except DatasetError as e:
        print(f"python -m training eval: {e}", file=sys.stderr)
        return 2
    try:
        model = dcclip_core.load(args.model, threads=args.threads)
    except dcclip_core.ModelNotFoundError as e:
        print(f"python -m training eval: {e}", file=sys.stderr)
        return 2
    missing = [r for r in ("text_onnx", "image_onnx", "tokenizer") if not (model.path / model.config.files.get(r, "-")).is_file()]
    if missing:
        print(f"python -m training eval: {model.path} has no {', '.join(missing)} file(s); a trained model directory "
              f"needs `python -m training export {model.path}` first", file=sys.stderr)
        return 2
    templates = None
    if args.templates not in ("short", "full"):
        t = _templates_file(Path(args.templates))
        if not t:
            print(f"python -m training eval: templates file {args.templates} not found or empty", file=sys.stderr)
            return 2
        templates = t.get(args.lang) or next(iter(t.values()))
    elif not ds.templates.get(args.lang):
        templates = default_templates(args.lang, args.templates)
    try:
        res = evaluate_zeroshot(model, ds, args.lang, args.split, templates, args.metric, args.batch_size,
                                args.limit, progress=not args.json)
    except DatasetError as e:
        print(f"python -m training eval: {e}", file=sys.stderr)
        return 2
    res["model"] = model.info.get("id", args.model)
    if res["n"] == 0:
        print(f"python -m training eval: no readable images in {args.dataset} ({res['errors']} errors)",
              file=sys.stderr)
        return 1
    table = report_table(res)
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / f"eval_{args.lang}.json").write_text(json.dumps(res, indent=1, ensure_ascii=False), encoding="utf-8")
        (out / f"report_{args.lang}.md").write_text(table + "\n", encoding="utf-8")
        plot_report(res, out / f"eval_{args.lang}.png")
    if args.json:
        print(json.dumps(summary(res), ensure_ascii=False))
    else:
        print(table)
        if args.out:
            print(f"\nwrote {args.out}/eval_{args.lang}.json, report_{args.lang}.md, eval_{args.lang}.png")
    return 0
