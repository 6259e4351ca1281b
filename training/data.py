"""Data for stages 1 and 2 (numpy/PIL only; torch is not imported here).

* ``list_images`` / ``ImageViews``: an unlabelled photo folder as a fixed set of augmented views (random
  resized crop, flip, colour jitter). View ``v`` of image ``i`` is a pure function of ``(seed, i, v)``, so a
  teacher sees each view once (its features are cached) and the student regenerates exactly the same view.
* ``read_texts``: text corpora (.txt one per line, .jsonl / .csv / .tsv with text / en / zh / caption fields).
* ``read_pairs``: stage-2 pairs from JSONL or CSV: image + captions (EN and/or ZH), or EN<->ZH text pairs.
* ``FeatureCache``: named float16 memmaps of teacher features ([n, ...] per field), built once, resumable,
  keyed by what produced them, with each field's RMS recorded (used to normalise the distillation loss).
"""
from __future__ import annotations

import csv
import hashlib
import json
import threading
from collections import OrderedDict
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Iterable, Sequence

import numpy as np
from PIL import Image, ImageEnhance

from dcclip_core.atomic import atomic_write_text
from dcclip_core.preprocess import IMAGE_EXTENSIONS


# ---------------------------------------------------------------------------------------------------------
# Images
# ---------------------------------------------------------------------------------------------------------
def list_images(root: str | Path, recursive: bool = True) -> list[Path]:
    """Image files under ``root`` (sorted; hidden files and folders skipped)."""
    root = Path(root)
    if root.is_file():
        return [root]
    if not root.is_dir():
        raise FileNotFoundError(f"image folder not found: {root}")
    it = root.rglob("*") if recursive else root.glob("*")
    return sorted(p for p in it if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file()
                  and not any(part.startswith(".") for part in p.relative_to(root).parts))


@dataclass
class AugmentConfig:
    size: int = 224                       # output side of a view (pixels)
    scale_min: float = 0.35               # random resized crop: area fraction in [scale_min, 1]
    ratio_min: float = 3 / 4              # ... aspect ratio in [ratio_min, 1 / ratio_min] (log-uniform)
    flip: float = 0.5                     # horizontal flip probability
    brightness: float = 0.3               # colour jitter: factor in [1 - x, 1 + x]
    contrast: float = 0.3
    saturation: float = 0.3
    plain_first: bool = True              # view 0 of every image = the plain centre crop (no augmentation)


def random_resized_box(w: int, h: int, rng: np.random.Generator, scale_min: float, ratio_min: float):
    """torchvision-style RandomResizedCrop box (left, top, right, bottom) in source pixels."""
    area = w * h
    for _ in range(10):
        a = area * rng.uniform(scale_min, 1.0)
        r = float(np.exp(rng.uniform(np.log(ratio_min), np.log(1 / ratio_min))))
        cw, ch = int(round(np.sqrt(a * r))), int(round(np.sqrt(a / r)))
        if 0 < cw <= w and 0 < ch <= h:
            x, y = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
            return (x, y, x + cw, y + ch)
    s = min(w, h)                                                        # fallback: centre square
    return ((w - s) // 2, (h - s) // 2, (w - s) // 2 + s, (h - s) // 2 + s)


def augment(im: Image.Image, rng: np.random.Generator, cfg: AugmentConfig) -> Image.Image:
    """One random view: resized crop -> flip -> brightness / contrast / saturation jitter (random order)."""
    box = random_resized_box(im.width, im.height, rng, cfg.scale_min, cfg.ratio_min)
    out = im.resize((cfg.size, cfg.size), Image.Resampling.BICUBIC, box=box, reducing_gap=None)
    if rng.random() < cfg.flip:
        out = out.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    ops = [(ImageEnhance.Brightness, cfg.brightness), (ImageEnhance.Contrast, cfg.contrast),
           (ImageEnhance.Color, cfg.saturation)]
    for j in rng.permutation(len(ops)):
        enh, amount = ops[j]
        if amount > 0:
            out = enh(out).enhance(float(rng.uniform(1 - amount, 1 + amount)))
    return out


class ImageViews:
    """``len(paths) * views`` deterministic views of an image folder (see module docstring).

    Decoded images are kept in a small LRU (downscaled so the shorter side is ``2 * size``). Unreadable files
    are dropped by ``check()`` and listed in ``errors``.
    """

    def __init__(self, paths: Sequence[str | Path], views: int = 1, aug: AugmentConfig | None = None, seed: int = 0,
                 cache_images: int = 256):
        self.paths = [Path(p) for p in paths]
        self.views = int(views)
        self.aug = aug or AugmentConfig()
        self.seed = int(seed)
        self.errors: list[dict] = []
        self._lru: OrderedDict[int, Image.Image] = OrderedDict()
        self._cap = cache_images
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self.paths) * self.views

    def check(self) -> "ImageViews":
        """Decode every image once; drop (and record) the unreadable ones."""
        from dcclip_core.preprocess import ImageLoadError
        good = []
        for p in self.paths:
            try:
                self._decode(p)
                good.append(p)
            except ImageLoadError as e:
                self.errors.append({"path": str(p), "error": e.reason})
        self.paths = good
        self._lru.clear()
        return self

    def _decode(self, path: Path) -> Image.Image:
        from dcclip_core.preprocess import load_image
        side = 2 * self.aug.size
        im = load_image(path, target_size=side)
        s = side / min(im.size)
        if s < 1:
            im = im.resize((max(1, round(im.width * s)), max(1, round(im.height * s))), Image.Resampling.BICUBIC)
        return im

    def image(self, i: int) -> Image.Image:
        with self._lock:
            im = self._lru.get(i)
            if im is not None:
                self._lru.move_to_end(i)
                return im
        im = self._decode(self.paths[i])
        with self._lock:
            self._lru[i] = im
            while len(self._lru) > self._cap:
                self._lru.popitem(last=False)
        return im

    def view(self, j: int) -> Image.Image:
        """View j (= image j // views, view j % views) as an RGB ``aug.size`` square."""
        i, v = divmod(int(j), self.views)
        im = self.image(i)
        if v == 0 and self.aug.plain_first:
            from dcclip_core.preprocess import resize_center_crop
            return resize_center_crop(im, self.aug.size)
        rng = np.random.default_rng([self.seed, i, v])
        return augment(im, rng, self.aug)

    def pixels(self, idx: Iterable[int], size: int, mean: Sequence[float], std: Sequence[float]) -> np.ndarray:
        """float32 [n, 3, size, size] of views ``idx`` normalised with mean / std."""
        from dcclip_core.preprocess import to_pixels
        return np.stack([to_pixels(self.view(j), size, mean, std) for j in idx])

    def fingerprint(self) -> str:
        """Identity of the view set: files (path, size, mtime), views, augmentation and seed."""
        h = hashlib.sha1()
        for p in self.paths:
            st = p.stat()
            h.update(f"{p}|{st.st_size}|{int(st.st_mtime)};".encode())
        h.update(json.dumps([self.views, asdict(self.aug), self.seed]).encode())
        return h.hexdigest()[:16]


# ---------------------------------------------------------------------------------------------------------
# Text
# ---------------------------------------------------------------------------------------------------------
TEXT_FIELDS = ("text", "en", "zh", "caption", "caption_en", "caption_zh", "sentence")


def _row_texts(row: dict) -> list[str]:
    out = []
    for k in TEXT_FIELDS:
        v = row.get(k)
        if isinstance(v, str):
            out.append(v)
        elif isinstance(v, list):
            out += [x for x in v if isinstance(x, str)]
    caps = row.get("captions")
    if isinstance(caps, dict):
        for v in caps.values():
            out += [v] if isinstance(v, str) else [x for x in v if isinstance(x, str)]
    elif isinstance(caps, list):
        out += [x for x in caps if isinstance(x, str)]
    return out


def read_texts(paths: Sequence[str | Path], limit: int | None = None) -> list[str]:
    """Texts from .txt (one per line), .jsonl, .csv or .tsv files or folders of them; stripped, de-duplicated."""
    files: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            files += sorted(q for q in p.rglob("*") if q.suffix.lower() in (".txt", ".jsonl", ".csv", ".tsv"))
        elif p.is_file():
            files.append(p)
        else:
            raise FileNotFoundError(f"text file not found: {p}")
    seen: dict[str, None] = {}
    for f in files:
        suf = f.suffix.lower()
        if suf == ".jsonl":
            rows = (json.loads(ln) for ln in f.read_text(encoding="utf-8").splitlines() if ln.strip())
            texts = [t for r in rows for t in (_row_texts(r) if isinstance(r, dict) else [str(r)])]
        elif suf in (".csv", ".tsv"):
            with open(f, newline="", encoding="utf-8") as fh:
                texts = [t for r in csv.DictReader(fh, delimiter="\t" if suf == ".tsv" else ",") for t in _row_texts(r)]
        else:
            texts = f.read_text(encoding="utf-8").splitlines()
        for t in texts:
            t = t.strip()
            if t:
                seen.setdefault(t, None)
        if limit and len(seen) >= limit:
            break
    out = list(seen)
    return out[:limit] if limit else out


def guess_lang(text: str) -> str:
    """'zh' if the text has CJK ideographs, else 'en'."""
    return "zh" if any("\u4e00" <= c <= "\u9fff" or "\u3400" <= c <= "\u4dbf" for c in text) else "en"


def read_pairs(path: str | Path) -> list[dict]:
    """Stage-2 pairs: rows ``{"image": path | None, "texts": [(lang, text), ...]}``.

    JSONL rows or CSV/TSV columns: ``image`` (or image_path / path / file), captions in ``en`` / ``zh`` /
    ``caption_en`` / ``caption_zh`` / ``caption`` (language guessed) / ``captions`` (list, or {lang: text|list}).
    A row without an image is a text pair (e.g. EN<->ZH translations) and needs at least two texts.
    Relative image paths are resolved against the file's folder.
    """
    path = Path(path)
    suf = path.suffix.lower()
    if suf == ".jsonl":
        rows = [json.loads(ln) for ln in path.read_text(encoding="utf-8").splitlines() if ln.strip()]
    elif suf in (".csv", ".tsv"):
        with open(path, newline="", encoding="utf-8") as fh:
            rows = list(csv.DictReader(fh, delimiter="\t" if suf == ".tsv" else ","))
    else:
        raise ValueError(f"{path}: pairs must be .jsonl, .csv or .tsv")
    out = []
    for n, r in enumerate(rows, 1):
        img = next((r[k] for k in ("image", "image_path", "path", "file") if r.get(k)), None)
        texts: list[tuple[str, str]] = []
        for k, lang in (("en", "en"), ("caption_en", "en"), ("zh", "zh"), ("caption_zh", "zh")):
            v = r.get(k)
            for t in ([v] if isinstance(v, str) else v or []):
                if t and t.strip():
                    texts.append((lang, t.strip()))
        for k in ("caption", "text"):
            v = r.get(k)
            for t in ([v] if isinstance(v, str) else v or []):
                if t and t.strip():
                    texts.append((guess_lang(t), t.strip()))
        caps = r.get("captions")
        if isinstance(caps, dict):
            for lang, v in caps.items():
                texts += [(lang, t.strip()) for t in ([v] if isinstance(v, str) else v) if t and t.strip()]
        elif isinstance(caps, list):
            texts += [(guess_lang(t), t.strip()) for t in caps if isinstance(t, str) and t.strip()]
        if img:
            p = Path(img)
            img = str(p if p.is_absolute() else path.parent / p)
            if not texts:
                raise ValueError(f"{path}: row {n} has an image but no caption")
        elif len(texts) < 2:
            raise ValueError(f"{path}: row {n} has no image and fewer than two texts")
        out.append({"image": img, "texts": texts})
    return out


# ---------------------------------------------------------------------------------------------------------
# Teacher feature cache
# ---------------------------------------------------------------------------------------------------------
class FeatureCache:
    """Named float16 memmaps ``<dir>/<field>.f16`` of shape [n, *field_shape] + ``meta.json``.

    meta: {"key", "n", "fields": {name: shape}, "done", "complete", "rms": {name: float}}. ``build`` resumes
    a partial cache with the same key and rebuilds one whose key (teacher, layers, data) changed.
    """

    def __init__(self, root: str | Path):
        self.root = Path(root)
        self.meta = json.loads((self.root / "meta.json").read_text())
        if not self.meta.get("complete"):
            raise RuntimeError(f"{self.root}: feature cache is incomplete (rebuild with FeatureCache.build)")
        self.n = int(self.meta["n"])
        self.fields = {k: np.memmap(self.root / f"{k}.f16", dtype=np.float16, mode="r", shape=(self.n, *s))
                       for k, s in self.meta["fields"].items()}
        self.rms = {k: float(v) for k, v in self.meta["rms"].items()}

    def __len__(self) -> int:
        return self.n

    def get(self, idx) -> dict[str, np.ndarray]:
        """float32 arrays of rows ``idx`` for every field."""
        idx = np.asarray(idx)
        order = np.argsort(idx, kind="stable")                  # memmap fancy indexing is fastest sorted
        out = {}
        for k, a in self.fields.items():
            rows = np.asarray(a[idx[order]], np.float32)
            res = np.empty_like(rows)
            res[order] = rows
            out[k] = res
        return out

    @staticmethod
    def _write_meta(root: Path, meta: dict) -> None:
        atomic_write_text(root / "meta.json", json.dumps(meta))

    @classmethod
    def build(cls, root: str | Path, n: int, compute: Callable[[np.ndarray], dict[str, np.ndarray]], key: str,
              chunk: int = 32, progress: bool = True, desc: str = "teacher features") -> "FeatureCache":
        """compute(row indices) -> {field: array [len(idx), ...]}; rows are written in order, chunk by chunk."""
        root = Path(root)
        root.mkdir(parents=True, exist_ok=True)
        meta_path = root / "meta.json"
        meta = json.loads(meta_path.read_text()) if meta_path.is_file() else None
        if meta and meta.get("key") == key and meta.get("n") == n:
            if meta.get("complete"):
                return cls(root)
        else:
            for f in root.glob("*.f16"):
                f.unlink()
            meta = None
        done = int(meta["done"]) if meta else 0
        sumsq = {k: float(v) for k, v in (meta or {}).get("sumsq", {}).items()}
        arrays: dict[str, np.memmap] = {}
        from tqdm import tqdm
        bar = tqdm(total=n, initial=done, desc=desc, disable=not progress, mininterval=5)
        for s in range(done, n, chunk):
            idx = np.arange(s, min(n, s + chunk))
            block = {k: np.asarray(v, np.float32) for k, v in compute(idx).items()}
            if meta is None:
                meta = {"key": key, "n": n, "fields": {k: list(v.shape[1:]) for k, v in block.items()},
                        "done": 0, "complete": False, "sumsq": {}}
            if not arrays:
                arrays = {k: np.memmap(root / f"{k}.f16", dtype=np.float16, mode="r+" if done else "w+",
                                       shape=(n, *meta["fields"][k])) for k in meta["fields"]}
            for k, a in arrays.items():
                a[idx] = block[k].astype(np.float16)
                a.flush()
                sumsq[k] = sumsq.get(k, 0.0) + float(np.square(block[k], dtype=np.float64).sum())
            meta.update(done=int(idx[-1]) + 1, sumsq=sumsq)
            cls._write_meta(root, meta)                          # resume point if the build is killed
            bar.update(len(idx))
        bar.close()
        if meta is None:
            raise ValueError("FeatureCache.build: no rows to compute (n = 0)")
        per_row = {k: int(np.prod(s)) if s else 1 for k, s in meta["fields"].items()}
        meta["rms"] = {k: float(np.sqrt(sumsq[k] / max(1, n * per_row[k]))) for k in meta["fields"]}
        meta["complete"] = True
        cls._write_meta(root, meta)
        return cls(root)


def cache_key(*parts) -> str:
    """A short hash of JSON-serialisable parts (teacher id, layers, data fingerprint, ...)."""
    return hashlib.sha1(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:20]
