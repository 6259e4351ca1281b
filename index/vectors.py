"""FAISS wrapper: exact inner product (IndexFlatIP) behind IndexIDMap2, ids = images.id.

The index is a cache of the ``vectors`` table: it is saved beside the DB as ``<db>.faiss`` (temp file +
os.replace, so a reader never sees half a file), with a small header (model hash, dim, DB generation, count,
max id) inside the same file and the same numbers in meta (``faiss_*``). ``load_for_db`` uses the file only
when the header agrees with the DB, otherwise it rebuilds from the DB (and re-saves).
"""
from __future__ import annotations

import json
import os
import sqlite3
import struct
import tempfile
from pathlib import Path

import faiss
import numpy as np

MAGIC = b"DCIDX001"

# One query at a time is the search path's shape: FAISS's OpenMP split over the database costs more than it
# gains there (4x slower on a busy 2-core laptop), so one thread unless INDEX_FAISS_THREADS says otherwise.
faiss.omp_set_num_threads(max(1, int(os.environ.get("INDEX_FAISS_THREADS", "1"))))


def faiss_path(db_path: str | os.PathLike) -> Path:
    return Path(str(db_path) + ".faiss")


class VectorIndex:
    """Exact cosine/inner-product index over L2-normalised float32 rows with int64 ids."""

    def __init__(self, dim: int, index=None):
        self.dim = int(dim)
        self.index = index if index is not None else faiss.IndexIDMap2(faiss.IndexFlatIP(self.dim))

    @property
    def ntotal(self) -> int:
        return int(self.index.ntotal)

    def __len__(self) -> int:
        return self.ntotal

    def ids(self) -> np.ndarray:
        return faiss.vector_to_array(self.index.id_map).astype(np.int64)

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
        return int(self.index.remove_ids(ids))

    def upsert(self, ids: np.ndarray, vecs: np.ndarray) -> None:
        self.remove(ids)
        self.add(ids, vecs)

    def reconstruct(self, image_id: int) -> np.ndarray | None:
        try:
            return self.index.reconstruct(int(image_id))
        except RuntimeError:
            return None

    def search(self, queries: np.ndarray, k: int, ids: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """queries (n, d) -> (scores (n, k'), ids (n, k')), k' = min(k, ntotal); ids -1 where nothing.
        ``ids``: restrict the search to these ids (filters by folder / date)."""
        q = np.ascontiguousarray(queries, dtype=np.float32).reshape(-1, self.dim)
        k = min(int(k), self.ntotal if ids is None else len(ids))
        if k <= 0:
            return np.zeros((len(q), 0), np.float32), np.zeros((len(q), 0), np.int64)
        if ids is None:
            return self.index.search(q, k)
        sel = faiss.IDSelectorBatch(np.ascontiguousarray(ids, dtype=np.int64))
        return self.index.search(q, k, params=faiss.SearchParameters(sel=sel))

    def range_search(self, queries: np.ndarray, threshold: float):
        """-> (lims, scores, ids): results of query i are [lims[i], lims[i+1]) with score >= threshold."""
        q = np.ascontiguousarray(queries, dtype=np.float32).reshape(-1, self.dim)
        if not self.ntotal:
            return np.zeros(len(q) + 1, np.int64), np.zeros(0, np.float32), np.zeros(0, np.int64)
        # faiss IP range search keeps scores > radius; nudge so that == threshold is kept
        return self.index.range_search(q, float(np.nextafter(np.float32(threshold), np.float32(-np.inf))))

    # ---- persistence ----------------------------------------------------------------------------------
    def save(self, path: str | os.PathLike, header: dict | None = None) -> None:
        """Write atomically: temp file in the same folder, fsync, os.replace."""
        path = Path(path)
        head = json.dumps({"dim": self.dim, "count": self.ntotal, **(header or {})}).encode()
        fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=str(path.parent))
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(MAGIC + struct.pack("<I", len(head)) + head)
                faiss.write_index(self.index, faiss.PyCallbackIOWriter(f.write))
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            try:
                os.unlink(tmp)
            except OSError:
                pass
            raise

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
        if int(index.d) != int(header["dim"]) or int(index.ntotal) != int(header["count"]):
            raise ValueError(f"{path}: header does not match the index")
        return cls(int(header["dim"]), index), header


# ---- DB <-> index -----------------------------------------------------------------------------------------
def build_from_db(db, model_hash: str, dim: int, min_gen: int | None = None) -> VectorIndex:
    vi = VectorIndex(dim)
    for ids, vecs in db.iter_vectors(model_hash, dim, min_gen=min_gen):
        vi.add(ids, vecs)
    return vi


def _expected(db, model_hash: str, dim: int, generation: int) -> dict:
    count, max_id = db.vector_stats(model_hash)
    return {"model_hash": model_hash, "dim": int(dim), "generation": int(generation), "count": count,
            "max_id": max_id}


def save_for_db(db, vi: VectorIndex, model_hash: str, generation: int) -> bool:
    """Save ``vi`` (built at DB ``generation``) as ``<db>.faiss`` and record it in meta. Best effort:
    returns False when the file or meta could not be written (read-only folder, DB busy)."""
    header = {"model_hash": model_hash, "dim": vi.dim, "generation": int(generation), "count": vi.ntotal,
              "max_id": vi.max_id()}
    try:
        vi.save(faiss_path(db.path), header)
        with db.transaction():
            for k in ("generation", "count", "max_id", "model_hash"):
                db._set_meta("faiss_" + k, header[k])
        return True
    except (OSError, sqlite3.Error):
        return False


def load_for_db(db, model_hash: str, dim: int, save: bool = True) -> tuple[VectorIndex, int, bool]:
    """The FAISS index matching the DB's current vectors for ``model_hash``.

    Returns (index, generation it reflects, loaded_from_file). Uses ``<db>.faiss`` when its header (and
    meta) agree with the DB — model hash, dim, generation, row count, max id — otherwise rebuilds from the
    ``vectors`` table and (``save=True``) writes the file again.
    """
    generation = db.generation()
    want = _expected(db, model_hash, dim, generation)
    path = faiss_path(db.path)
    if path.is_file():
        head = VectorIndex.read_header(path)
        meta = db.meta()
        if head is not None and all(head.get(k) == v for k, v in want.items()) and \
                str(meta.get("faiss_generation")) == str(generation):
            try:
                vi, head = VectorIndex.load(path)
                if vi.ntotal == want["count"] and vi.max_id() == want["max_id"]:
                    return vi, generation, True
            except (OSError, ValueError, RuntimeError, KeyError, struct.error):
                pass                                    # corrupt: rebuild below
    vi = build_from_db(db, model_hash, dim)
    # a writer may have committed while we were reading: re-check so the saved header is truthful
    if save and db.generation() == generation and vi.ntotal == want["count"]:
        save_for_db(db, vi, model_hash, generation)
    return vi, generation, False
