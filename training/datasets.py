"""Labelled image-classification datasets: the ImageFolder and ELEVATER readers that zero-shot evaluation
(``training.evaluate``), few-shot prompt learning (``training.prompts.data``) and their commands share. numpy only.

Layouts (``load_dataset``):

* **ImageFolder**: ``DIR/test/<class>/*`` (``DIR/train/<class>/*`` optional), ``DIR/classnames.json`` mapping
  each class folder to ``{"en": "...", "zh": "..."}`` (a plain string = the English name; no file = folder
  names).
* **ELEVATER** (microsoft/vision-datasets, as the ELEVATER toolkit reads it): a dataset-info JSON
  (``{"name", "type", "test": {"index_path", "files_for_local_usage"}, "labelmap", ...}``; a list of them is
  accepted with ``name``) or, without one, ``test.txt`` + ``labels.txt``. Index files in the *iris* format
  (``train.zip@dir/img.jpg 3`` per line; multilabel ``0,5,7``) or *coco* JSON (``images`` with ``file_name`` /
  ``zip_file``, ``annotations`` with ``category_id``, ``categories``). Images are read straight from
  (uncompressed) zips, or from the extracted file when the zip is absent. Chinese names come from an optional
  ``classnames.json`` (label name or index -> ``{"en", "zh"}``, or ``{"en": [...], "zh": [...]}``).

A dataset's primary metric follows ELEVATER/CLIP (``ELEVATER_METRICS``, else accuracy; 11-point mAP for
multilabel sets); its prompt templates are ``DIR/templates.json`` if it ships one, else the bundled ones.
"""
from __future__ import annotations

import json
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from dcclip_core.preprocess import IMAGE_EXTENSIONS
from dcclip_core.zeroshot import templates

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


def class_name_table(path: Path, classes: Sequence[str]) -> dict[str, list[str]]:
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


def templates_file(path: Path) -> dict[str, list[str]]:
    """A templates JSON (``{"en": [...], "zh": [...]}`` or one list for both) -> {lang: templates}; {} if absent."""
    if not path.is_file():
        return {}
    data = json.loads(path.read_text(encoding="utf-8"))
    if isinstance(data, list):
        return {"en": data, "zh": data}
    return {k: v for k, v in data.items() if isinstance(v, list)}


def list_class_folders(split_dir: Path, classes: Sequence[str] | None = None
                       ) -> tuple[list[str], list[Path], np.ndarray]:
    """``split_dir/<class>/<image>`` -> (classes, image paths, labels int64 [n]). ``classes`` default: the
    sub-folders (sorted, hidden ones skipped); a listed class without a folder has no images. Hidden files and
    files that are not images (``dcclip_core.preprocess.IMAGE_EXTENSIONS``) are skipped."""
    if classes is None:
        classes = sorted(p.name for p in split_dir.iterdir() if p.is_dir() and not p.name.startswith("."))
    paths, labels = [], []
    for k, c in enumerate(classes):
        d = split_dir / c
        files = sorted(p for p in d.glob("*") if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file()) \
            if d.is_dir() else []
        paths += files
        labels += [k] * len(files)
    return list(classes), paths, np.asarray(labels, np.int64)


def _image_folder(root: Path) -> Dataset:
    test = root / "test"
    classes = list_class_folders(test)[0]
    if not classes:
        raise DatasetError(f"{test}: no class folders (expected {test}/<class>/<image>)")
    splits = {}
    for split in ("train", "val", "test"):
        d = root / split
        if d.is_dir():
            _, images, labels = list_class_folders(d, classes)
            splits[split] = Split(images, labels)
    if not len(splits["test"]):
        raise DatasetError(f"{test}: class folders hold no images ({sorted(IMAGE_EXTENSIONS)})")
    return Dataset(root.name, "imagefolder", classes, class_name_table(root / "classnames.json", classes), splits,
                   templates=templates_file(root / "templates.json"), root=root)


# ---- ELEVATER -------------------------------------------------------------------------------------------
ELEVATER_INDEXES = ("test.txt", "test_images.txt", "test_ic.txt", "test.json", "test_coco.json")   # bare layouts


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
        idx = next((root / f for f in ELEVATER_INDEXES if (root / f).is_file()), None)
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
    return Dataset(dname, f"elevater-{fmt}", classes, class_name_table(base / "classnames.json", classes)
                   if (base / "classnames.json").is_file() else class_name_table(root / "classnames.json", classes),
                   splits, multilabel=multilabel, metric=default_metric(dname, multilabel),
                   templates=templates_file(base / "templates.json") or templates_file(root / "templates.json"),
                   root=root)


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


def dataset_templates(ds: Dataset, lang: str, kind: str = "short") -> list[str]:
    """The dataset's own templates for ``lang`` if it ships them, else the bundled defaults."""
    own = ds.templates.get(lang)
    return list(own) if own else templates(lang, kind)

