"""Frozen features, computed once: image embeddings + backbone features per file, zero-shot class embeddings.

A prompt that does not change the image tower (CoOp, Tip-Adapter, linear probe, feature-map VPT, UPT) trains
on these cached arrays only, which is what makes prompt learning take seconds on a CPU.

    cache = EmbeddingCache(model)                    # model = dcclip_core.load(); stores under the model hash
    emb, feat = cache.encode(paths)                  # (n, 257) joint embeddings, (n, 1280) pooled features

Cache files: ``$DCCLIP_CACHE/fewshot/<model hash>/<sha1 of the image folder>.npz``, one per folder, keyed by
file name + size + mtime (a changed file is re-encoded). No torch.
"""
from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from dcclip_core import zeroshot
from dcclip_core.atomic import atomic_path
from dcclip_core.config import cache_dir
from dcclip_core.numeric import l2_normalize


def l2n(x: np.ndarray) -> np.ndarray:
    """Rows L2-normalised, as float32 (``dcclip_core.numeric.l2_normalize``)."""
    return l2_normalize(np.asarray(x, np.float32))


def class_embeddings(model, names: dict[str, Sequence[str]] | Sequence[str], lang: str = "en",
                     tmpl: dict[str, Sequence[str]] | None = None) -> np.ndarray:
    """Zero-shot class embeddings (C, d) in ``lang`` (en | zh | both: the normalised sum of the two), each language
    by ``dcclip_core.zeroshot.class_embeddings``.

    ``names`` is {"en": [...], "zh": [...]} or a plain list (used for every language asked for); templates are
    the bundled short ones of the language unless ``tmpl`` gives them per language.
    """
    langs = ["en", "zh"] if lang == "both" else [lang]
    if not isinstance(names, dict):
        names = {lg: list(names) for lg in ("en", "zh")}
    out = None
    for lg in langs:
        ts = list((tmpl or {}).get(lg) or zeroshot.templates(lg))
        e = zeroshot.class_embeddings(model.encode_text, names[lg], ts, bank=getattr(model, "concept_bank", None))
        out = e if out is None else out + e
    return l2n(out)


def _file_key(p: Path) -> str:
    st = p.stat()
    return f"{p.name}|{st.st_size}|{st.st_mtime_ns}"


class EmbeddingCache:
    """Per-folder ``.npz`` stores of (embedding, features) for image files, under the model's hash.

    Unlike the teacher-feature cache of stage 1 (``training.data.FeatureCache``: a fixed set of rows built once,
    float16), this one is keyed by file and grows as new images are asked for, and keeps the ONNX outputs exact
    (float32): few-shot results must not depend on which images were encoded before.
    """

    def __init__(self, model, root: str | Path | None = None, progress: bool = False):
        self.model = model
        self.root = Path(root) if root else cache_dir() / "fewshot" / model.hash
        self.root.mkdir(parents=True, exist_ok=True)
        self.progress = progress

    def _store(self, folder: Path) -> Path:
        h = hashlib.sha1(str(folder.resolve()).encode()).hexdigest()[:20]
        return self.root / f"{h}.npz"

    @staticmethod
    def _read(path: Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        if not path.is_file():
            return {}
        try:
            z = np.load(path, allow_pickle=False)
            return {k: (e, f) for k, e, f in zip(z["keys"].tolist(), z["emb"], z["feat"])}
        except Exception:                                       # a torn or stale file: rebuild it
            return {}

    def encode(self, paths: Sequence[str | Path], batch_size: int = 32,
               on_progress: Callable[[int, int], None] | None = None) -> tuple[np.ndarray, np.ndarray]:
        """paths -> (emb (n, d) float32, feat (n, F) float32); only files not cached yet are encoded."""
        paths = [Path(p) for p in paths]
        d, F = self.model.dim, self.model.config.image.feature_dim
        emb, feat = np.zeros((len(paths), d), np.float32), np.zeros((len(paths), F), np.float32)
        by_folder: dict[Path, list[int]] = {}
        for i, p in enumerate(paths):
            by_folder.setdefault(p.parent, []).append(i)
        todo_total = 0
        plan = []
        for folder, idx in by_folder.items():
            store = self._read(self._store(folder))
            keys = [_file_key(paths[i]) for i in idx]
            missing = [j for j, k in enumerate(keys) if k not in store]
            todo_total += len(missing)
            plan.append((folder, idx, keys, store, missing))
        done = 0
        for folder, idx, keys, store, missing in plan:
            for s in range(0, len(missing), batch_size):
                chunk = missing[s:s + batch_size]
                px = np.stack([self.model.preprocess(paths[idx[j]]) for j in chunk])   # (b, 3, S, S)
                e, f = self.model.encode_pixels(px, return_features=True)
                for j, ej, fj in zip(chunk, e, f):
                    store[keys[j]] = (ej.astype(np.float32), fj.astype(np.float32))
                done += len(chunk)
                if on_progress:
                    on_progress(done, todo_total)
            if missing:
                self._write(self._store(folder), store)
            for j, i in enumerate(idx):
                emb[i], feat[i] = store[keys[j]]
        return emb, feat

    @staticmethod
    def _write(path: Path, store: dict) -> None:
        keys = sorted(store)
        with atomic_path(path) as tmp, open(tmp, "wb") as f:
            np.savez(f, keys=np.array(keys), emb=np.stack([store[k][0] for k in keys]),
                     feat=np.stack([store[k][1] for k in keys]))


def encode_images(model, images: Sequence, batch_size: int = 16) -> tuple[np.ndarray, np.ndarray]:
    """Uncached: paths / PIL images / bytes -> (emb, feat) (for the app's in-memory examples)."""
    return model.encode_image(list(images), batch_size=batch_size, return_features=True)
