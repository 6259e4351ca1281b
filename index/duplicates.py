"""Near-duplicate photos: embedding similarity plus a 64-bit perceptual hash (dHash), pairs and groups.

    pairs = find_duplicates(searcher, threshold=0.95)     # [{"a", "b", "score", "hamming", "match"}], best first
    groups = group_duplicates(pairs, searcher.db)         # [{"size", "score", "paths", "keep"}], biggest first

A pair is a duplicate when its cosine is >= ``threshold``, or when its perceptual hashes differ in at most
``hamming`` bits and its cosine is still >= ``floor`` (the hash catches resized / recompressed copies whose
embeddings drift a little; the floor stops flat or dark frames, whose hashes collide, from matching).
``match``: "identical" (same bytes), "near" (hash within ``hamming``), "similar" (embedding only).
Groups are the connected components of the pairs; ``score`` is the weakest link, ``keep`` the largest photo.
"""
from __future__ import annotations

import numpy as np

from .db import PhotoDB

HAMMING = 6            # of 64 bits: resized / recompressed copies stay within ~0-4
FLOOR = 0.80           # minimum cosine for a hash match to count
_KNN = 32              # neighbours per photo when the search is approximate (large collections)


def hamming(a: str | None, b: str | None) -> int | None:
    """Bits that differ between two hex hashes (None when either is missing)."""
    if not a or not b:
        return None
    try:
        return int(bin(int(a, 16) ^ int(b, 16)).count("1"))
    except ValueError:
        return None


def fill_missing_phash(db: PhotoDB, limit: int | None = None) -> int:
    """Compute the dHash of rows that have none (e.g. written by an older version) from their files."""
    from dcclip_core.preprocess import ImageLoadError, load_image
    from .indexer import dhash
    rows = db.images_without_phash(limit)
    done = 0
    for r in rows:
        try:
            ph = dhash(load_image(r["path"], target_size=64))
        except (ImageLoadError, OSError, ValueError):
            continue
        db.update_image(r["id"], phash=ph)
        done += 1
    return done


def _candidates(vi, db: PhotoDB, model_hash: str, dim: int, floor: float, batch: int = 2048) -> dict:
    """(a, b) -> cosine for every pair of stored vectors with cosine >= ``floor`` (a < b)."""
    from . import vectors as V
    search_vi = vi
    if vi.kind == "flat" and vi.ntotal > 20_000:                # n^2 is too slow: a throwaway HNSW graph
        search_vi = V.VectorIndex.create(dim, "hnsw", vi.ntotal)
        with V.build_threads():
            for ids, vecs in db.iter_vectors(model_hash, dim):
                search_vi.add(ids, vecs)
        search_vi.params["ef"] = 96
    pairs: dict[tuple[int, int], float] = {}
    exact = search_vi.kind == "flat"
    for ids, vecs in db.iter_vectors(model_hash, dim, batch=batch):
        if exact:
            lims, D, I = search_vi.range_search(vecs, floor)
        else:
            D, I = search_vi.search(vecs, min(_KNN, search_vi.ntotal))
            keep = (I >= 0) & (D >= np.float32(floor))
            lims = np.concatenate([[0], np.cumsum(keep.sum(1))])
            D, I = D[keep], I[keep]
        for qi, a in enumerate(ids.tolist()):
            for score, b in zip(D[lims[qi]:lims[qi + 1]].tolist(), I[lims[qi]:lims[qi + 1]].tolist()):
                if a != b and b >= 0:
                    key = (a, b) if a < b else (b, a)
                    if score > pairs.get(key, -2.0):
                        pairs[key] = score
    return pairs


def find_duplicates(searcher, threshold: float = 0.95, max_hamming: int | None = HAMMING,
                    floor: float = FLOOR) -> list[dict]:
    """Pairs of near-identical indexed photos, best first:
    [{"a": path, "b": path, "score": cosine, "hamming": int | None, "match": str}] (see module doc).
    ``max_hamming=None`` uses the embedding alone. Rows without a hash (older DBs) get one first."""
    if max_hamming is not None:
        fill_missing_phash(searcher.db)
    with searcher.current_index() as (vi, mhash):
        db, dim = searcher.db, vi.dim
        low = threshold if max_hamming is None else min(threshold, floor)
        cand = _candidates(vi, db, mhash, dim, low)
        info = db.hash_rows_by_ids(sorted({x for ab in cand for x in ab}))
    out = []
    for (a, b), score in cand.items():
        ra, rb = info.get(a), info.get(b)
        if ra is None or rb is None:
            continue
        ham = hamming(ra["phash"], rb["phash"])
        identical = bool(ra["sha256"]) and ra["sha256"] == rb["sha256"]
        near = max_hamming is not None and ham is not None and ham <= max_hamming
        if not (identical or score >= threshold or near):
            continue
        match = "identical" if identical else "near" if near else "similar"
        out.append({"a": ra["path"], "b": rb["path"], "score": 1.0 if identical else min(float(score), 1.0),
                    "hamming": ham, "match": match})
    out.sort(key=lambda d: (-d["score"], d["a"], d["b"]))
    return out


def group_duplicates(pairs: list[dict], db: PhotoDB | None = None) -> list[dict]:
    """Connected components of ``pairs``: [{"group", "size", "score" (weakest link), "max_score", "paths",
    "keep"}], biggest group first; ``paths`` best first (most pixels, then largest file) when ``db`` is
    given, ``keep`` = paths[0]."""
    parent: dict[str, str] = {}

    def find(x: str) -> str:
        parent.setdefault(x, x)
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for p in pairs:
        ra, rb = find(p["a"]), find(p["b"])
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)
    members: dict[str, list[str]] = {}
    for x in list(parent):
        members.setdefault(find(x), []).append(x)
    low: dict[str, float] = {}
    high: dict[str, float] = {}
    for p in pairs:
        r = find(p["a"])
        low[r] = min(low.get(r, 2.0), p["score"])
        high[r] = max(high.get(r, -2.0), p["score"])
    rows = db.size_rows_by_paths(list(parent)) if db is not None else {}
    rank = {p: ((r["width"] or 0) * (r["height"] or 0), r["size"] or 0) for p, r in rows.items()}
    groups = []
    for root, paths in members.items():
        paths.sort(key=lambda p: (tuple(-v for v in rank.get(p, (0, 0))), p))
        groups.append({"size": len(paths), "score": round(low[root], 6), "max_score": round(high[root], 6),
                       "paths": paths, "keep": paths[0]})
    groups.sort(key=lambda g: (-g["size"], -g["score"], g["keep"]))
    for i, g in enumerate(groups, 1):
        g["group"] = i
    return groups
