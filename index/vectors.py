"""FAISS wrapper: inner-product index behind IndexIDMap2 (ids = images.id), kind chosen by size.

Kinds (``choose_kind``): ``flat`` (exact IndexFlatIP) up to ``EXACT_MAX`` vectors (200k; env INDEX_EXACT_MAX),
``ivf-flat`` (IVF, exact scores in the probed lists, nprobe tuned at build time so recall@10 >= 0.95 on
text-like queries) above. HNSW is not the automatic choice: text queries sit far from every photo (cosine
~0.3), where a graph walk loses its way — on the clustered benchmark set HNSW (M=32) reached recall@10 0.76
at efSearch 512 and 0.97 only at 2048 (4 ms) with 300k vectors, 0.57 at 512 with 1M, while IVF-Flat reached
0.99 at 1M in 1.6 ms with a cheaper build (``python -m benchmarks index``). ``hnsw`` (IndexHNSWFlat, M=32,
efSearch tuned the same way), ``ivf-sq8`` / ``ivf-pq`` (8-bit scalar / product quantisation, for sets that
do not fit in memory as float32) are built on request (``kind=``, meta ``index_kind``). When an HNSW build
cannot reach the recall target it falls back to ``ivf-flat``; ``asked`` in the header keeps the kind asked
for. Exact ``flat``
removes natively; the others cannot, so removed rows become tombstones (id -1, never returned) until the
next rebuild.

The index is a cache of the ``vectors`` table: it is saved beside the DB as ``<db>.faiss`` (temp file +
os.replace, so a reader never sees half a file), with a small header (model hash, dim, DB generation, count,
max id, kind, search parameters, tombstones) inside the same file and the same numbers in meta
(``faiss_*``). ``load_for_db`` uses the file when the header agrees with the DB; an older save of the same
DB is brought up to date with what changed since (``apply_delta``); anything else is rebuilt from the DB
(and re-saved).
"""
from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import struct
from pathlib import Path

# OpenMP threads that spin while waiting make a bulk build 4x slower as soon as the cores are busy with
# anything else (decoding, the app); sleeping waits cost nothing measurable. Only effective before libgomp
# starts, i.e. when faiss is first imported here.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import faiss  # noqa: E402
import numpy as np  # noqa: E402

from dcclip_core.atomic import atomic_path  # noqa: E402
from dcclip_core.numeric import l2_normalize  # noqa: E402

MAGIC = b"DCIDX001"

KINDS = ("flat", "hnsw", "ivf-flat", "ivf-sq8", "ivf-pq")
# above this many vectors "auto" means AUTO_LARGE (INDEX_HNSW_MIN: the old name of the setting)
EXACT_MAX = int(os.environ.get("INDEX_EXACT_MAX", os.environ.get("INDEX_HNSW_MIN", 200_000)))
AUTO_LARGE = "ivf-flat"
HNSW_M = 32
HNSW_EF_CONSTRUCTION = 64
REFINE = {"ivf-sq8": 3, "ivf-pq": 10}   # ivf-*: candidates per wanted result re-ranked with exact vectors
TARGET_RECALL = 0.95                # recall@10 the search-time parameter is tuned for (with a margin)
_EF_STEPS = (16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512, 768, 1024, 1536, 2048)
_NPROBE_STEPS = (1, 2, 4, 8, 12, 16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512)
_ALIVE = None                       # lazily made IDSelectorRange(0, 2**62): skips tombstones (id -1)

# One query at a time is the search path's shape: FAISS's OpenMP split over the database costs more than it
# gains there (4x slower on a busy 2-core laptop), so one thread unless INDEX_FAISS_THREADS says otherwise.
faiss.omp_set_num_threads(max(1, int(os.environ.get("INDEX_FAISS_THREADS", "1"))))


def faiss_path(db_path: str | os.PathLike) -> Path:
    return Path(str(db_path) + ".faiss")


def choose_kind(count: int, kind: str | None = "auto") -> str:
    """The index kind for ``count`` vectors: ``kind`` unless it is "auto"/None (flat up to EXACT_MAX, else
    AUTO_LARGE, i.e. ivf-flat)."""
    if kind in (None, "", "auto"):
        kind = "flat" if count <= EXACT_MAX else AUTO_LARGE
    if kind not in KINDS:
        raise ValueError(f"unknown index kind {kind!r} (one of: auto, {', '.join(KINDS)})")
    if kind == "ivf-pq" and count < 10_000:
        kind = "ivf-sq8"                     # too few vectors to train PQ codebooks
    if kind in ("ivf-flat", "ivf-sq8") and count < 16 * 39:
        kind = "flat"                        # too few to train 16 lists; exact is fast at this size anyway
    return kind


@contextlib.contextmanager
def build_threads(n: int | None = None):
    """Use ``n`` (default: all usable cores) OpenMP threads for a bulk build, then restore the search setting."""
    before = faiss.omp_get_max_threads()
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    faiss.omp_set_num_threads(max(1, n or cores))
    try:
        yield
    finally:
        faiss.omp_set_num_threads(before)


def _alive_selector():
    global _ALIVE
    if _ALIVE is None:
        _ALIVE = faiss.IDSelectorRange(0, 2**62)
    return _ALIVE


def ivf_nlist(count: int) -> int:
    """IVF lists: ~4 sqrt(n), a power of two, 16..65536."""
    return int(min(65536, max(16, 2 ** round(np.log2(4 * np.sqrt(max(count, 1)))))))


def _pq_m(dim: int) -> int:
    """PQ sub-quantisers: the largest divisor of ``dim`` <= dim/4 (about 4 dims, 1 byte per sub-vector)."""
    for m in range(max(1, dim // 4), 0, -1):
        if dim % m == 0 and m <= 64:
            return m
    return 1


class VectorIndex:
    """Cosine/inner-product index over L2-normalised float32 rows with int64 ids (``kind``: see module doc).

    ``params``: search-time settings of approximate kinds ({"ef": int} for hnsw, {"nprobe": int} for ivf-*).
    """

    def __init__(self, dim: int, index=None, kind: str = "flat", params: dict | None = None, dead: int = 0,
                 asked: str | None = None):
        self.dim = int(dim)
        self.kind = kind if kind in KINDS else "flat"
        self.asked = asked or self.kind              # the kind asked for (differs after a fallback)
        self.params = dict(params or {})
        self.index = index if index is not None else faiss.IndexIDMap2(faiss.IndexFlatIP(self.dim))
        self._dead = int(dead)                       # tombstones (approximate kinds): ids set to -1
        # ivf-*: callable(ids) -> (ids, exact vecs) (the DB); results are re-ranked exactly from
        # REFINE x k candidates, so quantisation costs no recall and scores are exact cosines
        self.refine = None

    @classmethod
    def create(cls, dim: int, kind: str = "flat", count: int = 0, train: np.ndarray | None = None) -> "VectorIndex":
        """An empty index of ``kind`` sized for ``count`` vectors; ivf-* kinds are trained on ``train`` (n, dim)
        and fall back to flat when there are too few vectors to train them."""
        dim = int(dim)
        if kind == "hnsw":
            h = faiss.IndexHNSWFlat(dim, HNSW_M, faiss.METRIC_INNER_PRODUCT)
            h.hnsw.efConstruction = HNSW_EF_CONSTRUCTION
            return cls(dim, faiss.IndexIDMap2(h), "hnsw", {"ef": 64})
        if kind in ("ivf-flat", "ivf-sq8", "ivf-pq"):
            n_train = 0 if train is None else len(train)
            if kind == "ivf-pq" and n_train < 10_000:
                kind = "ivf-sq8"                        # PQ codebooks need ~40 x 256 points per sub-quantiser
            nlist = min(ivf_nlist(count or n_train), n_train // 39)
            if nlist < 16:
                return cls(dim)                         # too few to train: exact is small and fast anyway
            if kind == "ivf-flat":
                spec = f"IVF{nlist},Flat"
            elif kind == "ivf-sq8":
                spec = f"IVF{nlist},SQ8"
            else:
                d_pq = dim - dim % 4 if dim % 4 else dim
                spec = (f"PCAR{d_pq}," if d_pq != dim else "") + f"IVF{nlist},PQ{_pq_m(d_pq)}"
            base = faiss.index_factory(dim, spec, faiss.METRIC_INNER_PRODUCT)
            ivf = faiss.downcast_index(faiss.extract_index_ivf(base))
            if hasattr(ivf, "do_polysemous_training"):
                ivf.do_polysemous_training = False           # 7x the training time, unused here
            with build_threads():
                base.train(np.ascontiguousarray(train, dtype=np.float32))
            faiss.extract_index_ivf(base).make_direct_map()         # reconstruct() by position
            return cls(dim, faiss.IndexIDMap2(base), kind, {"nprobe": max(1, nlist // 16), "nlist": nlist})
        return cls(dim)

    @property
    def ntotal(self) -> int:
        """Live vectors (tombstones not counted)."""
        return int(self.index.ntotal) - self._dead

    @property
    def dead(self) -> int:
        return self._dead

    def __len__(self) -> int:
        return self.ntotal

    def ids(self) -> np.ndarray:
        ids = faiss.vector_to_array(self.index.id_map).astype(np.int64)
        return ids[ids >= 0] if self._dead else ids

    def max_id(self) -> int:
        ids = self.ids()
        return int(ids.max()) if len(ids) else 0

    def add(self, ids: np.ndarray, vecs: np.ndarray) -> None:
        ids = np.ascontiguousarray(ids, dtype=np.int64)
        if len(ids):
            self.index.add_with_ids(np.ascontiguousarray(vecs, dtype=np.float32).reshape(len(ids), self.dim), ids)

    def remove(self, ids) -> int:
        ids = np.ascontiguousarray(np.asarray(list(ids) if not isinstance(ids, np.ndarray) else ids), np.int64)
        if not len(ids) or not self.ntotal:
            return 0
        if self.kind == "flat":
            return int(self.index.remove_ids(ids))
        # HNSW / IVF positions cannot be removed: overwrite their id with -1 (a tombstone, never returned)
        id_map = faiss.rev_swig_ptr(self.index.id_map.data(), self.index.id_map.size())   # a view, not a copy
        hit = np.isin(id_map, ids[ids >= 0])
        n = int(hit.sum())
        if n:
            id_map[hit] = -1
            self._dead += n
            self.index.construct_rev_map()
        return n

    def upsert(self, ids: np.ndarray, vecs: np.ndarray) -> None:
        self.remove(ids)
        self.add(ids, vecs)

    def reconstruct(self, image_id: int) -> np.ndarray | None:
        """The stored vector of ``image_id`` (approximate for ivf-* kinds), or None."""
        if int(image_id) < 0:
            return None
        try:
            return self.index.reconstruct(int(image_id))
        except RuntimeError:
            return None

    def _params(self, sel=None, k: int = 10):
        if sel is None and self._dead:
            sel = _alive_selector()
        if self.kind == "hnsw":
            return faiss.SearchParametersHNSW(efSearch=max(int(self.params.get("ef", 64)), int(k)), sel=sel)
        if self.kind.startswith("ivf"):
            return faiss.SearchParametersIVF(nprobe=int(self.params.get("nprobe", 8)), sel=sel)
        return faiss.SearchParameters(sel=sel) if sel is not None else None

    def search(self, queries: np.ndarray, k: int, ids: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """queries (n, d) -> (scores (n, k'), ids (n, k')), k' = min(k, ntotal); ids -1 where nothing.
        ``ids``: restrict the search to these ids (filters by folder / date)."""
        q = np.ascontiguousarray(queries, dtype=np.float32).reshape(-1, self.dim)
        k = min(int(k), self.ntotal if ids is None else len(ids))
        if k <= 0:
            return np.zeros((len(q), 0), np.float32), np.zeros((len(q), 0), np.int64)
        if ids is not None:
            ids = np.ascontiguousarray(ids, dtype=np.int64)
            if self.kind != "flat" and len(ids) <= max(20_000, self.ntotal // 20):
                return self._search_subset(q, k, ids)   # a graph / IVF search through a narrow filter misses
        refine = self.refine if self.kind in REFINE else None
        kk = min(k * REFINE[self.kind], self.ntotal) if refine is not None else k
        sel = faiss.IDSelectorBatch(ids) if ids is not None else None
        params = self._params(sel, k=kk)
        D, I = self.index.search(q, kk) if params is None else self.index.search(q, kk, params=params)
        if refine is None:
            return D, I
        return self._rerank(q, I, k, refine)

    def _rerank(self, q: np.ndarray, cand: np.ndarray, k: int, refine) -> tuple[np.ndarray, np.ndarray]:
        """Exact scores for the candidate ids (n, kk) from ``refine``; best k per row."""
        got, vecs = refine(np.unique(cand[cand >= 0]))
        order = np.argsort(got)
        got, vecs = np.asarray(got, np.int64)[order], np.asarray(vecs, np.float32)[order]
        pos = np.clip(np.searchsorted(got, cand), 0, max(len(got) - 1, 0))
        ok = (cand >= 0) & (got[pos] == cand) if len(got) else np.zeros(cand.shape, bool)
        sc = np.einsum("nkd,nd->nk", vecs[pos], q) if len(got) else np.zeros(cand.shape, np.float32)
        sc = np.where(ok, sc, -np.inf).astype(np.float32)                   # (n, kk)
        top = np.argsort(-sc, axis=1, kind="stable")[:, :k]
        D = np.take_along_axis(sc, top, 1)
        I = np.where(np.isfinite(D), np.take_along_axis(cand, top, 1), -1)
        return D, I

    def _search_subset(self, q: np.ndarray, k: int, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Exact search over the stored vectors of ``ids`` (a narrow filter on an approximate index)."""
        if self.refine is not None and self.kind in REFINE:
            keep, vecs = self.refine(ids)
            keep = keep.tolist()
        else:
            vecs, keep = [], []
            for i in ids:
                v = self.reconstruct(int(i))
                if v is not None:
                    vecs.append(v)
                    keep.append(int(i))
        k = min(k, len(keep))
        if k == 0:
            return np.zeros((len(q), 0), np.float32), np.zeros((len(q), 0), np.int64)
        keep = np.asarray(keep, np.int64)
        s = q @ np.stack(vecs).T                                               # (n, m)
        top = np.argsort(-s, axis=1, kind="stable")[:, :k]
        return np.take_along_axis(s, top, 1).astype(np.float32), keep[top]

    def range_search(self, queries: np.ndarray, threshold: float):
        """-> (lims, scores, ids): results of query i are [lims[i], lims[i+1]) with score >= threshold
        (approximate kinds: what a k-NN search of 64 neighbours finds above the threshold)."""
        q = np.ascontiguousarray(queries, dtype=np.float32).reshape(-1, self.dim)
        if not self.ntotal:
            return np.zeros(len(q) + 1, np.int64), np.zeros(0, np.float32), np.zeros(0, np.int64)
        if self.kind != "flat":
            D, I = self.search(q, min(64, self.ntotal))
            keep = (I >= 0) & (D >= np.float32(threshold))
            lims = np.concatenate([[0], np.cumsum(keep.sum(1))]).astype(np.int64)
            return lims, D[keep].astype(np.float32), I[keep].astype(np.int64)
        # faiss IP range search keeps scores > radius; nudge so that == threshold is kept
        return self.index.range_search(q, float(np.nextafter(np.float32(threshold), np.float32(-np.inf))))

    # ---- tuning ---------------------------------------------------------------------------------------
    def tune(self, sample: np.ndarray, exact_batches=None, target: float = TARGET_RECALL, margin: float = 0.04,
             k: int = 10, n_queries: int = 400, seed: int = 0) -> dict:
        """Pick the smallest efSearch (hnsw) / nprobe (ivf-*) reaching recall@k >= target + margin on
        queries made from ``sample`` (stored vectors): half text-like (a vector plus heavy noise, so its
        neighbours score ~0.3 as a text query's do), half image-like (light noise), and as well on
        ``n_queries // 4`` unrelated queries (random directions: a query about nothing in the collection; with
        only ``target`` there, real text queries on the 1M benchmark set got 0.94 at nprobe 128).
        Ground truth: exact inner product over ``exact_batches()`` (an iterable of (ids, vecs); default: the
        stored vectors, exact for hnsw). Sets ``params`` and returns {"param", "value", "recall",
        "recall_unrelated"} ({} for flat)."""
        if self.kind == "flat" or self.ntotal < 2 * k or sample is None or not len(sample):
            return {}
        rng = np.random.default_rng(seed)
        base = np.array(sample[rng.choice(len(sample), min(n_queries, len(sample)), replace=False)], np.float32)
        noise = l2_normalize(rng.standard_normal(base.shape).astype(np.float32))
        half = len(base) // 2
        base[:half] += 3.0 * noise[:half]                                   # text-like: cos(q, v) ~ 0.3
        base[half:] += 0.3 * noise[half:]                                   # image-like
        far = rng.standard_normal((max(1, len(base) // 4), self.dim)).astype(np.float32)   # unrelated
        q = l2_normalize(np.concatenate([base, far]))
        n = len(base)
        truth = exact_topk(q, k, exact_batches() if exact_batches else self._stored_batches())
        name, steps = ("ef", _EF_STEPS) if self.kind == "hnsw" else ("nprobe", _NPROBE_STEPS)
        if name == "nprobe":
            steps = [v for v in steps if v <= self.params.get("nlist", 1 << 30)] or [1]
        best: dict = {}
        for v in steps:
            self.params[name] = v
            _, I = self.search(q, k)
            rec = min(recall_at_k(I[:half], truth[:half]), recall_at_k(I[half:n], truth[half:n]))   # worse half
            rec_far = recall_at_k(I[n:], truth[n:])
            best = {"param": name, "value": v, "recall": round(rec, 4), "recall_unrelated": round(rec_far, 4)}
            if min(best["recall"], best["recall_unrelated"]) >= min(1.0, target + margin):
                break
        return best

    def _stored_batches(self, batch: int = 65536):
        ids_all = self.ids()
        for s in range(0, len(ids_all), batch):
            chunk = ids_all[s:s + batch]
            yield chunk, self.index.reconstruct_batch(chunk)


    # ---- persistence ----------------------------------------------------------------------------------
    def save(self, path: str | os.PathLike, header: dict | None = None) -> None:
        """Write atomically (dcclip_core.atomic: temp file in the same folder, fsync, os.replace)."""
        head = json.dumps({"dim": self.dim, "count": self.ntotal, "kind": self.kind, "asked": self.asked,
                           "params": self.params,
                           "dead": self._dead, **(header or {})}).encode()
        with atomic_path(path) as tmp:
            with open(tmp, "wb") as f:
                f.write(MAGIC + struct.pack("<I", len(head)) + head)
                faiss.write_index(self.index, faiss.PyCallbackIOWriter(f.write))

    @staticmethod
    def read_header(path: str | os.PathLike) -> dict | None:
        try:
            with open(path, "rb") as f:
                if f.read(len(MAGIC)) != MAGIC:
                    return None
                (n,) = struct.unpack("<I", f.read(4))
                return json.loads(f.read(n))
        except (OSError, ValueError, struct.error):
            return None

    @classmethod
    def load(cls, path: str | os.PathLike) -> tuple["VectorIndex", dict]:
        """-> (index, header). Raises ValueError/OSError/RuntimeError on a bad file."""
        with open(path, "rb") as f:
            if f.read(len(MAGIC)) != MAGIC:
                raise ValueError(f"{path}: not an index file")
            (n,) = struct.unpack("<I", f.read(4))
            header = json.loads(f.read(n))
            index = faiss.read_index(faiss.PyCallbackIOReader(f.read))
        dead = int(header.get("dead", 0))
        if int(index.d) != int(header["dim"]) or int(index.ntotal) - dead != int(header["count"]):
            raise ValueError(f"{path}: header does not match the index")
        return cls(int(header["dim"]), index, header.get("kind", "flat"), header.get("params"), dead,
                   header.get("asked")), header


def exact_topk(q: np.ndarray, k: int, batches) -> np.ndarray:
    """Ids (n, k) of the exact top-k inner products of ``q`` (n, d) over ``batches`` of (ids, vecs)."""
    best_s = np.full((len(q), k), -np.inf, np.float32)
    best_i = np.full((len(q), k), -1, np.int64)
    for ids, vecs in batches:
        sc = q @ np.asarray(vecs, np.float32).T                            # (n, b)
        all_s = np.concatenate([best_s, sc], 1)
        all_i = np.concatenate([best_i, np.broadcast_to(np.asarray(ids, np.int64), sc.shape)], 1)
        top = np.argpartition(-all_s, k - 1, axis=1)[:, :k] if all_s.shape[1] > k else np.argsort(-all_s, 1)
        best_s, best_i = np.take_along_axis(all_s, top, 1), np.take_along_axis(all_i, top, 1)
    order = np.argsort(-best_s, axis=1, kind="stable")
    return np.take_along_axis(best_i, order, 1)


def recall_at_k(found: np.ndarray, truth: np.ndarray) -> float:
    """Mean fraction of each row of ``truth`` (n, k) present in the same row of ``found``."""
    k = truth.shape[1]
    return float(np.mean([len(set(a) & set(b)) / k for a, b in zip(found.tolist(), truth.tolist())]))


# ---- DB <-> index -----------------------------------------------------------------------------------------
def configured_kind(db) -> str:
    """The index kind asked for in meta ``index_kind`` (set by ``build --index-kind``); default "auto"."""
    return str(db.get_meta("index_kind", "auto") or "auto")


def _sample(db, model_hash: str, dim: int, n: int, count: int) -> np.ndarray:
    """About ``n`` stored vectors spread over the whole table (every ``count // n``-th row)."""
    step = max(1, count // max(1, n))
    parts, seen = [], 0
    for _, vecs in db.iter_vectors(model_hash, dim):
        first = (-seen) % step
        parts.append(vecs[first::step])
        seen += len(vecs)
    return np.concatenate(parts)[:n] if parts else np.zeros((0, dim), np.float32)


def build_from_db(db, model_hash: str, dim: int, min_gen: int | None = None, kind: str | None = None,
                  tune: bool = True) -> VectorIndex:
    """A fresh index of the DB's vectors for ``model_hash``; ``kind`` None = ``configured_kind(db)``, chosen
    by size (``choose_kind``). Approximate kinds are built on all cores and tuned (``VectorIndex.tune``)."""
    count, _ = db.vector_stats(model_hash)
    kind = choose_kind(count, configured_kind(db) if kind is None else kind)
    if kind == "flat" or min_gen is not None:
        vi = VectorIndex(dim)
        for ids, vecs in db.iter_vectors(model_hash, dim, min_gen=min_gen):
            vi.add(ids, vecs)
        return vi
    with build_threads():
        if kind == "hnsw":
            vi = VectorIndex.create(dim, "hnsw", count)
            sample = _sample(db, model_hash, dim, 2000, count) if tune else None
            for ids, vecs in db.iter_vectors(model_hash, dim):
                vi.add(ids, vecs)
            exact = None
        else:
            n_train = min(count, max(50_000, ivf_nlist(count) * 39))
            sample = _sample(db, model_hash, dim, n_train, count)
            vi = VectorIndex.create(dim, kind, count, train=sample)
            for ids, vecs in db.iter_vectors(model_hash, dim):
                vi.add(ids, vecs)
            exact = lambda: db.iter_vectors(model_hash, dim)
        attach_refine(db, vi)
        if tune and vi.kind != "flat":
            vi.params["tuned"] = vi.tune(sample, exact_batches=exact)
            t = vi.params["tuned"]
            if vi.kind == "hnsw" and min(t.get("recall", 1.0), t.get("recall_unrelated", 1.0)) < TARGET_RECALL:
                tuned = vi.params["tuned"]
                del vi                                          # free the graph before building the lists
                vi = _fallback_ivf(db, model_hash, dim, count, tuned)
    return vi


def _fallback_ivf(db, model_hash: str, dim: int, count: int, hnsw_tuned: dict) -> VectorIndex:
    """HNSW misses the recall target even at its largest efSearch (queries far from every photo, on data
    without structure a graph can follow): an IVF-Flat index, tuned the same way, is used instead (its
    quantiser finds the right region without following a graph; scores in the probed lists are exact)."""
    n_train = min(count, max(50_000, ivf_nlist(count) * 39))
    sample = _sample(db, model_hash, dim, n_train, count)
    vi = VectorIndex.create(dim, "ivf-flat", count, train=sample)
    for ids, vecs in db.iter_vectors(model_hash, dim):
        vi.add(ids, vecs)
    vi.params["tuned"] = vi.tune(sample, exact_batches=lambda: db.iter_vectors(model_hash, dim))
    vi.params["fallback_from"] = {"kind": "hnsw", **hnsw_tuned}
    vi.asked = "hnsw"
    return vi


def attach_refine(db, vi: VectorIndex) -> VectorIndex:
    """ivf-sq8 / ivf-pq: re-rank their candidates with the exact vectors stored in the DB."""
    if vi.kind in REFINE:
        vi.refine = lambda ids, _dim=vi.dim: db.vectors_by_ids(ids, _dim)
    return vi


def _expected(db, model_hash: str, dim: int, generation: int) -> dict:
    count, max_id = db.vector_stats(model_hash)
    return {"model_hash": model_hash, "dim": int(dim), "generation": int(generation), "count": count,
            "max_id": max_id, "asked": choose_kind(count, configured_kind(db))}


def header_matches(db, head: dict | None, want: dict) -> bool:
    """Does a saved index header (and the DB's faiss_* meta) describe the DB state ``want``?"""
    return head is not None and all(head.get(k) == v for k, v in want.items()) \
        and str(db.get_meta("faiss_generation")) == str(want["generation"])


def save_for_db(db, vi: VectorIndex, model_hash: str, generation: int) -> bool:
    """Save ``vi`` (built at DB ``generation``) as ``<db>.faiss`` and record it in meta. Best effort:
    returns False when the file or meta could not be written (read-only folder, DB busy)."""
    header = {"model_hash": model_hash, "dim": vi.dim, "generation": int(generation), "count": vi.ntotal,
              "max_id": vi.max_id(), "kind": vi.kind, "asked": vi.asked}
    try:
        vi.save(faiss_path(db.path), header)
        with db.transaction():
            for k in ("generation", "count", "max_id", "model_hash"):
                db.set_meta("faiss_" + k, header[k])
        return True
    except (OSError, sqlite3.Error):
        return False


def apply_delta(db, vi: VectorIndex, model_hash: str, dim: int, since_gen: int,
                max_dead: float = 0.3) -> bool:
    """Bring ``vi`` (reflecting DB generation ``since_gen``) up to date: upsert vectors written after it and
    drop ids no longer in the DB. Returns False when ``vi`` should be rebuilt instead (it still disagrees
    with the DB, or tombstones exceed ``max_dead`` of the live vectors)."""
    for ids, vecs in db.iter_vectors(model_hash, dim, min_gen=since_gen):
        vi.upsert(ids, vecs)
    count, max_id = db.vector_stats(model_hash)
    if vi.ntotal != count or vi.max_id() != max_id:
        gone = np.setdiff1d(vi.ids(), db.vector_ids(model_hash), assume_unique=True)
        vi.remove(gone)
    return vi.ntotal == count and vi.max_id() == max_id and vi.dead <= max_dead * max(vi.ntotal, 1)


def ensure_saved(db, model_hash: str, dim: int) -> bool:
    """Make ``<db>.faiss`` match the DB (no work when its header already agrees; an older save of this DB is
    updated with the changes since, else rebuilt). Best effort: False when it could not be made to match."""
    try:
        want = _expected(db, model_hash, dim, db.generation())
        if header_matches(db, VectorIndex.read_header(faiss_path(db.path)), want):
            return True
        load_for_db(db, model_hash, dim, save=True)
        return header_matches(db, VectorIndex.read_header(faiss_path(db.path)), want)
    except Exception:
        return False


def load_for_db(db, model_hash: str, dim: int, save: bool = True) -> tuple[VectorIndex, int, bool]:
    """The FAISS index matching the DB's current vectors for ``model_hash``.

    Returns (index, generation it reflects, loaded_from_file). Uses ``<db>.faiss`` when its header (and
    meta) agree with the DB — model hash, dim, generation, row count, max id, kind for this size — or when
    it is an older save of this same DB (its generation is meta ``faiss_generation``) that the changes
    since can be applied to; otherwise rebuilds from the ``vectors`` table. A changed index is saved again
    (``save=True``).
    """
    generation = db.generation()
    want = _expected(db, model_hash, dim, generation)
    path = faiss_path(db.path)
    if path.is_file():
        head = VectorIndex.read_header(path)
        if header_matches(db, head, want):
            try:
                vi, head = VectorIndex.load(path)
                if vi.ntotal == want["count"] and vi.max_id() == want["max_id"]:
                    return attach_refine(db, vi), generation, True
            except (OSError, ValueError, RuntimeError, KeyError, struct.error):
                pass                                    # corrupt: rebuild below
        elif head is not None and all(head.get(k) == want[k] for k in ("model_hash", "dim", "asked")) \
                and isinstance(head.get("generation"), int) and head["generation"] < generation \
                and str(db.get_meta("faiss_generation")) == str(head["generation"]):
            try:                                        # an older save of this DB: apply what changed since
                vi, saved = VectorIndex.load(path)
                attach_refine(db, vi)
                if apply_delta(db, vi, model_hash, dim, int(saved["generation"])):
                    if save and db.generation() == generation and vi.ntotal == want["count"]:
                        save_for_db(db, vi, model_hash, generation)
                    return vi, generation, True
            except (OSError, ValueError, RuntimeError, KeyError, struct.error):
                pass
    vi = build_from_db(db, model_hash, dim)
    # a writer may have committed while we were reading: re-check so the saved header is truthful
    if save and db.generation() == generation and vi.ntotal == want["count"]:
        save_for_db(db, vi, model_hash, generation)
    return vi, generation, False
