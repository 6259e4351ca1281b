"""ONNX Runtime model: the only thing the app's search/label path needs (numpy + onnxruntime, no torch)."""
from __future__ import annotations

import hashlib
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from .config import ModelConfig, default_threads, model_dir
from .numeric import l2_normalize
from .preprocess import ImageInput, load_image, to_pixels
from .tokenizer import Tokenizer

PROVIDERS = ("CPUExecutionProvider",)


def make_session(path: str | Path, threads: int = 1, *, log_severity: int | None = None):
    """The one ONNX Runtime session factory: ``threads`` intra-op threads, one inter-op thread, every graph
    optimisation, the CPU provider. ``log_severity`` (0 verbose .. 4 fatal) None keeps ONNX Runtime's default
    (warnings); 3 shows errors only."""
    import onnxruntime as ort
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = int(threads)
    opts.inter_op_num_threads = 1
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if log_severity is not None:
        opts.log_severity_level = int(log_severity)
    return ort.InferenceSession(str(path), sess_options=opts, providers=list(PROVIDERS))


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


class Model:
    """A bilingual image-text model: ``encode_text`` and ``encode_image`` return L2-normalised float32 rows.

    ONNX sessions are created lazily on first use, so constructing a Model is cheap. ``threads`` is how many
    CPU threads one call may use: the image session's intra-op threads, and the number of texts encoded at once.
    """

    # intra-op threads per session role (None = ``threads``): a text runs alone and is small (~8 tokens), so
    # a second intra-op thread buys nothing; texts of a list run side by side instead (see encode_text)
    _INTRA_OP = {"text_onnx": 1}

    def __init__(self, path: str | Path, threads: int | None = None):
        self.path = Path(path)
        self.config = ModelConfig.load(self.path / "config.json")
        self.threads = threads or default_threads()
        self._lock = threading.Lock()
        self._sessions: dict[str, object] = {}
        self._tokenizer: Tokenizer | None = None
        self._workers: tuple[int, ThreadPoolExecutor] | None = None     # (pid, pool): a forked child makes its own
        self._bank = None                                                 # ConceptBank, lazily (text space)

    # ---- metadata -------------------------------------------------------------------------------------
    @property
    def dim(self) -> int:
        return self.config.embed_dim

    @property
    def hash(self) -> str:
        """Digest over the runtime files' SHA-256 sums recorded in config.json (stable model identity)."""
        h = hashlib.sha256()
        for role in ("text_onnx", "image_onnx", "tokenizer", "concepts", "concept_arrays"):
            fname = self.config.files.get(role, "")
            h.update(f"{fname}:{self.config.sha256.get(fname, '')};".encode())
        return h.hexdigest()[:16]

    @property
    def info(self) -> dict:
        """id, hash, dims, languages (``dcclip_core.encoder.INFO_KEYS``), plus name, image_size, feature_dim,
        files and path. The embedding width is ``dims`` (also the ``dim`` attribute of the model itself)."""
        c = self.config
        return {
            "id": c.id,
            "name": c.name,
            "hash": self.hash,
            "dims": c.embed_dim,
            "languages": list(c.languages),
            "image_size": c.image.image_size,
            "feature_dim": c.image.feature_dim,
            "files": dict(c.files),
            "path": str(self.path),
            "space": c.joint.space,
            "similarity": {"near_floor": c.joint.near_floor, "similar": c.joint.similar},
        }

    def verify(self) -> list[str]:
        """Re-hash the files listed in config.json; returns the names whose SHA-256 differ (empty = ok)."""
        return [f for f, digest in self.config.sha256.items()
                if not (self.path / f).is_file() or sha256_file(self.path / f) != digest]

    # ---- lazy resources -------------------------------------------------------------------------------
    @property
    def tokenizer(self) -> Tokenizer:
        if self._tokenizer is None:
            with self._lock:
                if self._tokenizer is None:
                    t = self.config.text
                    self._tokenizer = Tokenizer.from_file(
                        self.path / self.config.files.get("tokenizer", "tokenizer.json"),
                        max_len=t.max_len, normalize=t.normalize)
        return self._tokenizer

    def _session(self, role: str):
        sess = self._sessions.get(role)
        if sess is None:
            with self._lock:
                sess = self._sessions.get(role)
                if sess is None:
                    sess = make_session(self.path / self.config.files[role],
                                        self._INTRA_OP.get(role) or self.threads)
                    self._sessions[role] = sess
        return sess

    def _pool(self) -> ThreadPoolExecutor:
        """``threads`` workers that run the texts of one encode_text call side by side (created lazily)."""
        pid = os.getpid()
        if self._workers is None or self._workers[0] != pid:
            with self._lock:
                if self._workers is None or self._workers[0] != pid:
                    self._workers = (pid, ThreadPoolExecutor(self.threads, thread_name_prefix="dcclip-text"))
        return self._workers[1]

    def warmup(self) -> None:
        """Create both sessions and run one tiny batch each (for a background warm-up in the app)."""
        self.encode_text(["warm up"])
        s = self.config.image.image_size
        self.encode_pixels(np.zeros((1, 3, s, s), np.float32))

    # ---- encoders -------------------------------------------------------------------------------------
    def encode_text(self, texts: Sequence[str], batch_size: int = 64) -> np.ndarray:
        """list[str] (any mix of Chinese/English) -> float32 (n, d), rows L2-normalised.

        A text gets the same vector, bit for bit, whatever else is in the list and wherever it sits: the int8
        text tower quantises its activations with one scale per tensor (dynamic quantisation), so a shared run
        would let every text - and the padding up to the longest one - move the others' vectors. Each distinct
        text therefore runs alone at its own length; a list is spread over ``threads`` workers. ``batch_size``
        is accepted for compatibility and changes nothing.
        """
        if isinstance(texts, str):
            raise TypeError("encode_text expects a list of strings, not a single string")
        texts = list(texts)
        feeds: dict[bytes, tuple[np.ndarray, np.ndarray]] = {}   # token ids -> (ids, mask), int64 (1, L) each
        keys = []
        for t in texts:
            ids, mask = self.tokenizer([t])
            keys.append(ids.tobytes())
            feeds.setdefault(keys[-1], (ids, mask))
        if not feeds:
            return np.zeros((0, self.dim), np.float32)
        todo = list(feeds.values())
        vecs = self._pool().map(self._encode_one, todo) if len(todo) > 1 and self.threads > 1 \
            else map(self._encode_one, todo)
        by_ids = dict(zip(feeds, vecs))                                    # token ids -> (d,)
        return np.stack([by_ids[k] for k in keys])                         # (n, d)

    def _encode_one(self, feed: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
        """One text's (ids, mask), int64 (1, L) each, unpadded -> its float32 (d,) row, L2-normalised."""
        ids, mask = feed
        (emb,) = self._session("text_onnx").run(["embedding"], {"input_ids": ids, "attention_mask": mask})
        return l2_normalize(np.asarray(emb, np.float32))[0]

    @property
    def concept_bank(self):
        """The model's ``dcclip_core.concepts.ConceptBank`` (text-space models), None for prototype-space ones."""
        if self.config.joint.space != "text":
            return None
        if self._bank is None:
            with self._lock:
                if self._bank is None:
                    from .concepts import ConceptBank
                    self._bank = ConceptBank.load(self.path)
        return self._bank

    def encode_pixels(self, pixels: np.ndarray, return_features: bool = False, return_concepts: bool = False):
        """Preprocessed float32 (n, 3, S, S) -> embeddings (n, d) [, pooled backbone features (n, F)]
        [, concept weights (n, C) (text-space models; None otherwise)], in that order."""
        pixels = np.ascontiguousarray(pixels, np.float32)
        sess = self._session("image_onnx")
        weights = None
        if self.config.joint.space == "text":
            feats, logits = sess.run(["features", "logits"], {"pixels": pixels})   # (n, F), (n, K)
            c = self.config.image
            weights = self.concept_bank.weights(feats, pixels, c.mean, c.std, logits=logits)   # (n, C)
            emb = self.concept_bank.embed(weights)                                 # (n, d)
        else:
            emb, feats = sess.run(["embedding", "features"], {"pixels": pixels})
            emb = l2_normalize(np.asarray(emb, np.float32))
        out = (emb,) + ((feats,) if return_features else ()) + ((weights,) if return_concepts else ())
        return out if len(out) > 1 else emb

    def photo_colours(self, pixels: np.ndarray) -> np.ndarray | None:
        """Preprocessed (n, 3, S, S) -> (n, c) colour shares for the query-aware colour term, or None (no bank or
        no colour boost)."""
        bank = self.concept_bank
        c = self.config.image
        return bank.photo_colours(pixels, c.mean, c.std) if bank is not None else None

    def heatmap(self, image: ImageInput, concept_ids) -> np.ndarray:
        """Where in a photo its concepts are: (len(ids), h, w) class activation maps in [0, 1] from the backbone's
        last feature map (text-space models; computed on demand for one photo)."""
        bank = self.concept_bank
        if bank is None:
            raise ValueError("this model has no concept bank (heatmaps need a text-space model)")
        (fmap,) = self._session("image_onnx").run(["feature_map"], {"pixels": self.preprocess(image)[None]})
        return bank.cam(fmap[0], concept_ids)

    def preprocess(self, image: ImageInput) -> np.ndarray:
        """Path / bytes / PIL image -> float32 (3, S, S), exactly as training does."""
        c = self.config.image
        return to_pixels(load_image(image, target_size=c.image_size), c.image_size, c.mean, c.std)

    def encode_image(self, images: Iterable[ImageInput], batch_size: int = 16,
                     return_features: bool = False):
        """list[path | PIL.Image | bytes] -> float32 (n, d), rows L2-normalised.

        Raises ``dcclip_core.ImageLoadError`` naming the first unreadable image; callers that want to skip
        bad files (the indexer) preprocess per file themselves and call ``encode_pixels``.
        """
        images = list(images)
        embs, feats = [], []
        for i in range(0, len(images), batch_size):
            px = np.stack([self.preprocess(im) for im in images[i:i + batch_size]])   # (b, 3, S, S)
            e, f = self.encode_pixels(px, return_features=True)
            embs.append(e)
            feats.append(f)
        d, fd = self.dim, self.config.image.feature_dim
        emb = np.concatenate(embs) if embs else np.zeros((0, d), np.float32)
        if return_features:
            return emb, (np.concatenate(feats) if feats else np.zeros((0, fd), np.float32))
        return emb


_cache: dict[tuple[str, int | None], Model] = {}
_cache_lock = threading.Lock()


def load(name: str = "default", threads: int | None = None) -> Model:
    """Load an installed model by name (``assets/models/<name>``) or from a model directory path."""
    path = model_dir(name)
    key = (str(path.resolve()), threads)
    with _cache_lock:
        if key not in _cache:
            _cache[key] = Model(path, threads=threads)
        return _cache[key]
