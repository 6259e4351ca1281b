"""ImageFolder tasks and few-shot splits (plain numpy; no torch).

    DIR/train/<class>/*      training pool (few-shot samples and the validation split are drawn from it)
    DIR/test/<class>/*       evaluation images
    DIR/classnames.json      {folder: {"en": "...", "zh": "..."}} (a plain string = the English name)
    DIR/task.json            optional {"name", "role": "source" | "target" | "heldout", "description", ...}

ELEVATER directories are read too (``training.datasets.load_elevater``: a dataset-info JSON or a bare
``train.txt`` / ``test.txt`` + ``labels.txt`` index, iris or coco format, images in zips or extracted), single-label
only. Images inside a zip stay ``(zip, member)`` sources until a split needs them: ``materialise`` extracts just
those members once into ``$DCCLIP_CACHE/elevater/<zip key>/`` (so features are cached per file as usual).

``fewshot_split(labels, shots, seed)`` draws K images per class and a *balanced* validation split of
max(1, round(K / 4)) images per class (20 % of all labelled images, as in MVLPT), disjoint from the shots.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from training.datasets import DatasetError, Split, is_elevater, list_class_folders, load_elevater


@dataclass
class Task:
    """One classification task read from an ImageFolder directory."""
    name: str
    root: Path
    classes: list[str]                       # folder names, sorted; label i = classes[i]
    names: dict[str, list[str]]              # {"en": [...], "zh": [...]} one name per class
    train_paths: list[Path] = field(default_factory=list)
    train_labels: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    test_paths: list[Path] = field(default_factory=list)
    test_labels: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    meta: dict = field(default_factory=dict)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def class_names(self, lang: str = "en") -> list[str]:
        """Names in ``en`` or ``zh`` (falls back to the English name, then the folder name)."""
        if lang not in ("en", "zh"):
            raise ValueError(f"lang must be 'en' or 'zh', not {lang!r}")
        return list(self.names[lang])

    @property
    def role(self) -> str:
        return self.meta.get("role", "target")


def read_classnames(path: Path, classes: Sequence[str]) -> dict[str, list[str]]:
    """A task's classnames.json -> {"en": [...], "zh": [...]}, a name for every class: a missing Chinese name is
    the English one, a class the file does not list is its folder name."""
    table = {}
    if path.is_file():
        try:
            table = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as e:
            raise DatasetError(f"{path}: not valid JSON ({e}); expected {{folder: {{\"en\": ..., \"zh\": ...}}}}")
    en, zh = [], []
    for c in classes:
        v = table.get(c, c)
        if isinstance(v, str):
            v = {"en": v}
        e = v.get("en") or c.replace("_", " ")
        en.append(e[0] if isinstance(e, list) else e)
        z = v.get("zh") or en[-1]
        zh.append(z[0] if isinstance(z, list) else z)
    return {"en": en, "zh": zh}


def _elevater_task(root: Path, name: str | None = None) -> Task:
    ds = load_elevater(root, name)
    if ds.multilabel:
        raise DatasetError(f"{root}: {ds.name} is multilabel; few-shot prompt learning needs one label per image")
    en = ds.class_names("en")
    names = {"en": en, "zh": [z or e for z, e in zip(ds.class_names("zh"), en)]}
    empty = Split([], np.zeros(0, np.int64))
    tr, te = ds.splits.get("train", empty), ds.splits.get("test", empty)
    meta = {"name": ds.name, "layout": ds.layout, "role": "target"}
    return Task(name=ds.name, root=root, classes=list(ds.classes), names=names, train_paths=list(tr.images),
                train_labels=np.asarray(tr.labels, np.int64), test_paths=list(te.images),
                test_labels=np.asarray(te.labels, np.int64), meta=meta)


def _zip_key(zpath: Path) -> str:
    st = zpath.stat()
    return hashlib.sha1(f"{zpath.resolve()}|{st.st_size}|{st.st_mtime_ns}".encode()).hexdigest()[:16]


def materialise(sources: Sequence) -> list:
    """Image sources -> file paths: ``(zip, member)`` entries are extracted once into the cache (others pass)."""
    import zipfile

    from dcclip_core.config import cache_dir
    out, open_zips = [], {}
    try:
        for src in sources:
            if not isinstance(src, tuple):
                out.append(src)
                continue
            zpath, member = Path(src[0]), str(src[1])
            safe = [p for p in Path(member).parts if p not in ("..", "/", "\\") and not p.endswith(":")]
            dst = cache_dir() / "elevater" / _zip_key(zpath) / Path(*safe)
            if not dst.is_file():
                z = open_zips.get(zpath) or open_zips.setdefault(zpath, zipfile.ZipFile(zpath))
                try:
                    data = z.read(member)
                except KeyError:
                    raise DatasetError(f"{zpath}: no member {member!r} (named by the index file)") from None
                from dcclip_core.atomic import atomic_write_bytes
                dst.parent.mkdir(parents=True, exist_ok=True)
                atomic_write_bytes(dst, data)
            out.append(dst)
    finally:
        for z in open_zips.values():
            z.close()
    return out


def load_task(root: str | Path, name: str | None = None) -> Task:
    """Read ``root`` as an ImageFolder task (train/ optional, test/ optional, at least one of them) or, when it
    has an ELEVATER index / dataset-info JSON, as an ELEVATER dataset (``name`` picks one of several)."""
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"dataset directory not found: {root}")
    if is_elevater(root):
        return _elevater_task(root, name)
    tr, te = root / "train", root / "test"
    if not tr.is_dir() and not te.is_dir():
        raise DatasetError(f"{root}: expected train/<class>/ and/or test/<class>/ folders (ImageFolder layout) "
                           f"or an ELEVATER index (test.txt / dataset-info JSON)")
    classes = None
    train_paths, train_labels, test_paths, test_labels = [], np.zeros(0, np.int64), [], np.zeros(0, np.int64)
    if tr.is_dir():
        classes, train_paths, train_labels = list_class_folders(tr, None)
    if te.is_dir():
        if classes is None:
            classes, test_paths, test_labels = list_class_folders(te, None)
        else:
            extra = sorted(d.name for d in te.iterdir() if d.is_dir() and d.name not in classes)
            if extra:
                raise DatasetError(f"{root}: test/ has classes missing from train/: {extra[:5]}")
            _, test_paths, test_labels = list_class_folders(te, classes)
    if not classes:
        raise DatasetError(f"{root}: no class folders under train/ or test/")
    meta = {}
    if (root / "task.json").is_file():
        meta = json.loads((root / "task.json").read_text(encoding="utf-8"))
    return Task(name=meta.get("name", root.name), root=root, classes=list(classes),
                names=read_classnames(root / "classnames.json", classes), train_paths=train_paths,
                train_labels=train_labels, test_paths=test_paths, test_labels=test_labels, meta=meta)


def load_collection(root: str | Path) -> list[Task]:
    """All tasks of a collection directory (one ImageFolder per sub-directory), sorted by name."""
    root = Path(root)
    tasks = [load_task(d) for d in sorted(root.iterdir()) if d.is_dir() and
             ((d / "train").is_dir() or (d / "test").is_dir())]
    if not tasks:
        raise DatasetError(f"{root}: no tasks (sub-directories with train/ or test/)")
    return tasks


def val_per_class(shots: int) -> int:
    """Balanced validation size per class: 20 % of all labelled images (shots are the other 80 %)."""
    return max(1, int(round(shots / 4)))


def fewshot_split(labels: np.ndarray, shots: int, seed: int, n_val: int | None = None,
                  num_classes: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Indices of K shots per class and a balanced validation split (disjoint), both sorted by class.

    A class with fewer than K + n_val images gives what it has to the shots first; the validation split stays
    balanced (every class gets the same count, the minimum available).
    """
    labels = np.asarray(labels)
    if shots < 1:
        raise ValueError(f"shots must be >= 1, not {shots}")
    K = int(num_classes if num_classes is not None else (labels.max() + 1 if len(labels) else 0))
    n_val = val_per_class(shots) if n_val is None else int(n_val)
    rng = np.random.default_rng(seed)
    perms = [rng.permutation(np.flatnonzero(labels == c)) for c in range(K)]
    missing = [c for c in range(K) if len(perms[c]) == 0]
    if missing:
        raise DatasetError(f"classes {missing[:5]} have no training images")
    train = [p[:shots] for p in perms]
    rest = [p[shots:] for p in perms]
    n_val = min([n_val] + [len(r) for r in rest])
    val = [r[:n_val] for r in rest]
    return np.concatenate(train).astype(np.int64), np.concatenate(val).astype(np.int64)
