"""Duplicate photos — one definition — as pairs, as groups, and for one photo.

A pair of indexed photos is a duplicate when it is
  "identical": the same bytes (same sha256), or
  "near":      perceptual hashes (64-bit dHash) within ``HAMMING`` bits and embedding cosine >= ``FLOOR``
               (resized, recompressed, re-saved copies; the floor stops flat or dark frames, whose hashes
               collide, from matching).
Embedding similarity alone is no duplicate: this model puts every photo of one ImageNet class close together
(a cheetah's face, a cub and a running cheetah all score >= 0.95). Such pairs are "similar" and reported only
when asked for (``similar=True``: cosine >= ``threshold``).

    pairs = find_duplicates(searcher)                  # [{"a", "b", "score", "hamming", "match"}], best first
    groups = group_duplicates(pairs, searcher.db)      # [{"size", "score", "paths", "keep"}], biggest first
    searcher.duplicates_of("/photos/a.jpg")            # [{"path", "score", "match"}]: the same, for one photo

``score`` is the cosine (1.0 for identical files). Groups are the connected components of the pairs;
``score`` is the weakest link, ``keep`` the largest photo.
"""
from __future__ import annotations

import numpy as np

from .db import PhotoDB

HAMMING = 6            # of 64 bits: resized / recompressed copies stay within ~0-4
FLOOR = 0.80           # minimum cosine for a hash match to count
SIMILAR = 0.95         # cosine of an embedding-only ("similar") pair, when those are asked for
# FLOOR and SIMILAR are cosines of the v1 prototype space. In a text-space model (photos are mixes of concept
# embeddings, dcclip_core.concepts) every photo is within about 0.96-0.99 of every other one, so the same
# meaning sits at other cosines: unrelated demo photos 0.96-0.975, other framings of one cat 0.9994-0.9999,
# a half-size q70 copy 0.9999. A model states its own in config.json (joint.similar / joint.near_floor).


def model_cosines(info) -> tuple[float, float]:
    """(similar threshold, near floor) of a model from its ``info`` (``similarity``), else SIMILAR, FLOOR."""
    own = (info or {}).get("similarity") or {}
    return float(own.get("similar", SIMILAR)), float(own.get("near_floor", FLOOR))
_KNN = 32              # neighbours per photo when the search is approximate (large collections)
_KNN_ONE = 512         # the same for one photo's duplicates (one query: more neighbours are cheap)


def hamming(a: str | None, b: str | None) -> int | None:
    """Bits that differ between two hex hashes (None when either is missing)."""
    if not a or not b:
        return None
    try:
        return int(bin(int(a, 16) ^ int(b, 16)).count("1"))
    except ValueError:
        return None


def match_of(ra: dict, rb: dict, cosine: float | None, max_hamming: int | None = HAMMING, floor: float = FLOOR,
             similar: float | None = None) -> tuple[str | None, int | None]:
    """(match, hamming) of two image rows ({"sha256", "phash"}) at embedding ``cosine`` (None: unknown):
    "identical", "near", "similar" (only when ``similar`` is a cosine threshold) or None (no duplicate)."""
    ham = hamming(ra.get("phash"), rb.get("phash"))
    if ra.get("sha256") and ra["sha256"] == rb.get("sha256"):
        return "identical", ham
    if cosine is None:
        return None, ham
    if max_hamming is not None and ham is not None and ham <= max_hamming and cosine >= floor:
        return "near", ham
    if similar is not None and cosine >= similar:
        return "similar", ham
    return None, ham


def _hash_row(db: PhotoDB, row: dict) -> bool:
    """Compute and store the dHash of one image row from its file (False when it cannot be read)."""
    from dcclip_core.preprocess import ImageLoadError, load_image
    from .scan import dhash
    try:
        ph = dhash(load_image(row["path"], target_size=64))
    except (ImageLoadError, OSError, ValueError):
        return False
    db.update_image(row["id"], phash=ph)
    row["phash"] = ph
    return True


def fill_missing_phash(db: PhotoDB, limit: int | None = None) -> int:
    """Compute the dHash of rows that have none (e.g. written by an older version) from their files."""
    return sum(_hash_row(db, r) for r in db.images_without_phash(limit))


def _neighbours(vi, vecs: np.ndarray, low: float, knn: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(lims (n+1,), scores, ids) of the stored vectors with cosine >= ``low`` to each row of ``vecs`` (n, d):
    row i's are [lims[i]:lims[i+1]]. Exact on a flat index, else among the ``knn`` nearest."""
    if vi.kind == "flat":
        return vi.range_search(vecs, low)
    D, I = vi.search(vecs, min(knn, vi.ntotal))
    keep = (I >= 0) & (D >= np.float32(low))
    return np.concatenate([[0], np.cumsum(keep.sum(1))]), D[keep], I[keep]


def _candidates(vi, db: PhotoDB, model_hash: str, dim: int, floor: float, batch: int = 2048) -> dict:
    """(a, b) -> cosine for every pair of stored vectors with cosine >= ``floor`` (a < b)."""
    from . import vectors
    search_vi = vi
    if vi.kind == "flat" and vi.ntotal > 20_000:                # n^2 is too slow: a throwaway HNSW graph
        search_vi = vectors.VectorIndex.create(dim, "hnsw", vi.ntotal)
        with vectors.build_threads():
            for ids, vecs in db.iter_vectors(model_hash, dim):
                search_vi.add(ids, vecs)
        search_vi.params["ef"] = 96
    pairs: dict[tuple[int, int], float] = {}
    for ids, vecs in db.iter_vectors(model_hash, dim, batch=batch):
        lims, D, I = _neighbours(search_vi, vecs, floor, _KNN)
        for qi, a in enumerate(ids.tolist()):
            for score, b in zip(D[lims[qi]:lims[qi + 1]].tolist(), I[lims[qi]:lims[qi + 1]].tolist()):
                if a != b and b >= 0:
                    key = (a, b) if a < b else (b, a)
                    if score > pairs.get(key, -2.0):
                        pairs[key] = score
    return pairs


def find_duplicates(searcher, threshold: float = SIMILAR, max_hamming: int | None = HAMMING,
                    floor: float = FLOOR, similar: bool = False) -> list[dict]:
    """Every duplicate pair of indexed photos (see module doc), best first:
    [{"a": path, "b": path, "score": cosine, "hamming": int | None, "match": "identical" | "near"}];
    ``similar=True`` adds the embedding-only pairs with cosine >= ``threshold`` (match "similar").
    ``max_hamming=None`` leaves the hash out (identical files only, unless ``similar``). Rows without a hash
    (older DBs) get one first."""
    if max_hamming is not None:
        fill_missing_phash(searcher.db)
    with searcher.current_index() as (vi, mhash):
        db, dim = searcher.db, vi.dim
        low = _lowest(threshold, max_hamming, floor, similar)
        cand = _candidates(vi, db, mhash, dim, low) if low is not None else {}
        for group in db.same_bytes_ids(mhash):                    # identical files, whatever the vector search
            for i, a in enumerate(group):
                for b in group[i + 1:]:
                    cand.setdefault((a, b), 1.0)
        info = db.hash_rows_by_ids(sorted({x for ab in cand for x in ab}))
    out = []
    for (a, b), score in cand.items():
        ra, rb = info.get(a), info.get(b)
        if ra is None or rb is None:
            continue
        match, ham = match_of(ra, rb, score, max_hamming, floor, threshold if similar else None)
        if match is not None:
            out.append({"a": ra["path"], "b": rb["path"], "score": _score(match, score), "hamming": ham,
                        "match": match})
    out.sort(key=lambda d: (-d["score"], d["a"], d["b"]))
    return out


def duplicates_of(db: PhotoDB, vi, model_hash: str, image_id: int, vec: np.ndarray, threshold: float = SIMILAR,
                  max_hamming: int | None = HAMMING, floor: float = FLOOR, similar: bool = False) -> list[dict]:
    """The duplicates of one indexed photo (``image_id``, its vector ``vec`` (d,) in ``vi``), under the same
    definition and arguments as ``find_duplicates``: [{"path", "score", "match", "hamming"}], best first.
    Use ``Searcher.duplicates_of(path)``."""
    low = _lowest(threshold, max_hamming, floor, similar)
    cand: dict[int, float] = {}
    if low is not None:
        lims, D, I = _neighbours(vi, np.asarray(vec, np.float32).reshape(1, -1), low, _KNN_ONE)
        for score, b in zip(D[lims[0]:lims[1]].tolist(), I[lims[0]:lims[1]].tolist()):
            if b >= 0 and b != image_id:
                cand[int(b)] = max(score, cand.get(int(b), -2.0))
    me = db.hash_rows_by_ids([image_id]).get(image_id)
    if me is None:
        return []
    for group in db.same_bytes_ids(model_hash, me["sha256"]) if me["sha256"] else ():
        for b in group:
            if b != image_id:
                cand.setdefault(b, 1.0)
    info = db.hash_rows_by_ids(sorted(cand))
    if max_hamming is not None:                                   # rows of an older version: hash them now
        for r in [me, *info.values()]:
            if r["phash"] is None:
                _hash_row(db, r)
    out = []
    for b, score in cand.items():
        rb = info.get(b)
        if rb is None:
            continue
        match, ham = match_of(me, rb, score, max_hamming, floor, threshold if similar else None)
        if match is not None:
            out.append({"path": rb["path"], "score": _score(match, score), "match": match, "hamming": ham})
    out.sort(key=lambda d: (-d["score"], d["path"]))
    return out


def _lowest(threshold: float, max_hamming: int | None, floor: float, similar: bool) -> float | None:
    """The lowest cosine a "near" or "similar" pair may have (None: neither is looked for)."""
    lows = ([floor] if max_hamming is not None else []) + ([threshold] if similar else [])
    return min(lows) if lows else None


def _score(match: str, cosine: float) -> float:
    return 1.0 if match == "identical" else min(float(cosine), 1.0)


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
