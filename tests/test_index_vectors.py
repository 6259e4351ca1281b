"""index/vectors.py: index kind by size (flat / IVF-Flat; HNSW / IVF-SQ8 / IVF-PQ on request), tuning to recall@10 >= 0.95,
tombstones, atomic save + header checks, incremental catch-up of an older save, and Searcher on each kind."""
import numpy as np
import pytest

from index import PhotoDB, Searcher
from index import vectors
from index.db import now_iso, vec_to_blob

DIM = 33


def clustered(n, dim=DIM, clusters=50, spread=0.35, seed=0):
    """L2-normalised vectors around ``clusters`` random centres (photo collections are clustered)."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((clusters, dim)).astype(np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    x = centres[rng.integers(0, clusters, n)] + spread * rng.standard_normal((n, dim)).astype(np.float32) / np.sqrt(dim)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def text_like(x, n, seed=1):
    """Queries whose best matches score ~0.3, like a text query against image vectors."""
    rng = np.random.default_rng(seed)
    q = x[rng.choice(len(x), n, replace=False)]
    noise = rng.standard_normal(q.shape).astype(np.float32)
    q = q + 3.0 * noise / np.linalg.norm(noise, axis=1, keepdims=True)
    return q / np.linalg.norm(q, axis=1, keepdims=True)


def exact_ids(x, ids, q, k=10):
    return ids[np.argsort(-(q @ x.T), axis=1, kind="stable")[:, :k]]


def test_choose_kind():
    assert vectors.choose_kind(10) == "flat" and vectors.choose_kind(vectors.EXACT_MAX) == "flat"
    assert vectors.choose_kind(vectors.EXACT_MAX + 1) == "ivf-flat" and vectors.choose_kind(5, "auto") == "flat"
    assert vectors.choose_kind(5, "hnsw") == "hnsw"
    assert vectors.choose_kind(100, "ivf-sq8") == "flat"    # too few vectors to train
    assert vectors.choose_kind(5000, "ivf-pq") == "ivf-sq8" and vectors.choose_kind(50_000, "ivf-pq") == "ivf-pq"
    with pytest.raises(ValueError):
        vectors.choose_kind(5, "annoy")


@pytest.mark.parametrize("kind", ["hnsw", "ivf-flat", "ivf-sq8", pytest.param("ivf-pq", marks=pytest.mark.slow)])
def test_approximate_kinds_reach_recall_and_handle_removal(kind, tmp_path):
    n = 12_000
    x = clustered(n)
    ids = np.arange(1, n + 1, dtype=np.int64) * 3                       # ids are images.id, not positions
    vi = vectors.VectorIndex.create(DIM, kind, n, train=x)
    assert vi.kind == kind
    vi.add(ids, x)
    if kind in vectors.REFINE:                                          # exact re-ranking from "the DB"
        lookup = {int(i): r for i, r in zip(ids, x)}
        vi.refine = lambda want: (np.asarray([i for i in want if int(i) in lookup], np.int64),
                                  np.asarray([lookup[int(i)] for i in want if int(i) in lookup], np.float32))
    tuned = vi.tune(x, exact_batches=lambda: [(ids, x)])
    assert tuned["recall"] >= 0.95, tuned
    q = text_like(x, 100, seed=7)                                       # fresh queries, not the tuning ones
    _, I = vi.search(q, 10)
    assert vectors.recall_at_k(I, exact_ids(x, ids, q)) >= 0.95
    D, I = vi.search(x[:5], 1)
    assert list(I[:, 0]) == list(ids[:5]) and np.allclose(D[:, 0], 1.0, atol=0.02)

    # removal: tombstones are never returned, counts and ids follow
    gone = ids[:5]
    assert vi.remove(gone) == 5 and vi.remove(gone) == 0
    assert vi.ntotal == n - 5 and vi.dead == (0 if kind == "flat" else 5)
    _, I = vi.search(x[:5], 3)
    assert not set(I.ravel().tolist()) & set(gone.tolist()) and -1 not in I[:, 0]
    assert set(vi.ids().tolist()) == set(ids[5:].tolist()) and vi.max_id() == int(ids.max())
    assert vi.reconstruct(int(gone[0])) is None
    # upsert: an id re-added with a new vector is found by it
    vi.upsert(ids[10:11], x[20:21])
    if kind in vectors.REFINE:
        lookup[int(ids[10])] = x[20]
    _, I = vi.search(x[20:21], 2)
    assert set(I[0].tolist()) == {int(ids[10]), int(ids[20])}
    # filters: narrow (exact over the subset) and wide (selector inside the ANN search)
    narrow = ids[100:130]
    _, I = vi.search(q[:3], 5, ids=narrow)
    assert set(I.ravel().tolist()) <= set(narrow.tolist()) and (I >= 0).all()
    assert np.array_equal(I, exact_ids(x[100:130], narrow, q[:3], 5))
    wide = ids[ids % 2 == 0]
    _, I = vi.search(q[:3], 5, ids=wide)
    assert set(I.ravel().tolist()) <= set(wide.tolist())

    # save / load keeps kind, tuned parameter and tombstones
    path = tmp_path / "x.faiss"
    vi.save(path, {"generation": 1})
    vi2, head = vectors.VectorIndex.load(path)
    assert (vi2.kind, vi2.ntotal, vi2.dead, head["kind"]) == (kind, vi.ntotal, vi.dead, kind)
    assert vi2.params[tuned["param"]] == tuned["value"]
    if kind in vectors.REFINE:
        vi2.refine = vi.refine
    assert np.array_equal(vi2.search(q[:10], 10)[1], vi.search(q[:10], 10)[1])


def fill_db(dbp, x, model_hash="syn", start=0):
    """Rows + vectors for synthetic embeddings, as the indexer would write them."""
    db = PhotoDB(dbp)
    db.set_model_meta("syn", model_hash, x.shape[1])
    with db.transaction():
        gen = db.bump_generation()
        db.conn.executemany(
            "INSERT INTO images(path, size, mtime, model_hash, indexed_at) VALUES (?, 1, 0, ?, ?)",
            [(f"/p/{start + i:07d}.jpg", model_hash, now_iso()) for i in range(len(x))])
        rows = db.conn.execute("SELECT id, path FROM images WHERE path >= ? ORDER BY path",
                               (f"/p/{start:07d}.jpg",)).fetchall()
        db.conn.executemany("INSERT INTO vectors(image_id, vec, gen) VALUES (?, ?, ?)",
                            [(r[0], vec_to_blob(v), gen) for r, v in zip(rows, x)])
    return db


class VecModel:
    """Searcher's model for synthetic vectors: the 'text' is an index into a query table."""

    def __init__(self, queries, dim=DIM):
        self.q = queries
        self.info = {"id": "syn", "hash": "syn", "dims": dim, "image_size": 32}

    def encode_text(self, texts):
        return self.q[[int(t) for t in texts]]


@pytest.mark.parametrize("kind", ["hnsw", "ivf-sq8"])
def test_searcher_on_approximate_index_saves_loads_and_catches_up(kind, tmp_path):
    x = clustered(6000, seed=3)
    dbp = tmp_path / "s.db"
    db = fill_db(dbp, x)
    db.set_meta("index_kind", kind)
    q = text_like(x, 40, seed=9)
    m = VecModel(q)
    s = Searcher(dbp, model=m)
    res = s.search("0", k=10)
    vi_first = s.vector_index()
    assert vi_first.kind == kind and not s.loaded_from_file and vectors.faiss_path(dbp).is_file()
    assert vectors.VectorIndex.read_header(vectors.faiss_path(dbp))["kind"] == kind
    truth = exact_ids(x, np.arange(1, len(x) + 1), q)
    found = np.asarray([[int(r["path"][3:10]) + 1 for r in s.search(str(i), k=10)] for i in range(len(q))])
    assert vectors.recall_at_k(found, truth) >= 0.95
    assert all(abs(r["score"] - float(x[int(r["path"][3:10])] @ q[0])) < 1e-5 for r in res)   # exact cosines
    s1 = Searcher(dbp, model=m)
    assert [r["path"] for r in s1.search("0", k=10)] == [r["path"] for r in res] and s1.loaded_from_file

    # new vectors and deletions after the save: a new Searcher loads the old file and applies the delta
    extra = clustered(50, seed=4)
    fill_db(dbp, extra, start=10_000)
    db.delete_paths(["/p/0000000.jpg", "/p/0000001.jpg"])
    db.bump_generation()
    s2 = Searcher(dbp, model=m)
    s2.search("0")
    assert s2.loaded_from_file and s2.vector_index().ntotal == 6048
    assert s2.vector_index().dead == 2
    q2 = VecModel(np.concatenate([q, extra[:1]]))
    s3 = Searcher(dbp, model=q2)
    assert s3.search(str(len(q)), k=1)[0]["path"] == "/p/0010000.jpg"
    # the running Searcher follows too (tombstones for the deleted rows, no rebuild)
    m.q = q2.q                                              # its model learns the new query
    assert s.search(str(len(q)), k=1)[0]["path"] == "/p/0010000.jpg" and s.vector_index() is vi_first
    assert not {r["path"] for r in s.search("0", k=6048)} & {"/p/0000000.jpg", "/p/0000001.jpg"}


def test_auto_kind_switches_to_ivf_flat_above_threshold(tmp_path, monkeypatch):
    """Above EXACT_MAX "auto" builds IVF-Flat straight away (no HNSW build first), tuned to the recall target
    for text-like and unrelated queries."""
    monkeypatch.setattr(vectors, "EXACT_MAX", 1000)
    x = clustered(1500, seed=5)
    dbp = tmp_path / "a.db"
    db = fill_db(dbp, x[:900])
    assert vectors.build_from_db(db, "syn", DIM).kind == "flat"
    fill_db(dbp, x[900:], start=900)
    vi = vectors.build_from_db(db, "syn", DIM)
    assert vi.kind == "ivf-flat" and vi.asked == "ivf-flat" and vi.ntotal == 1500
    assert "fallback_from" not in vi.params
    assert vi.params["tuned"]["recall"] >= 0.95 and vi.params["tuned"]["recall_unrelated"] >= 0.95
    q = text_like(x, 100, seed=11)
    assert vectors.recall_at_k(vi.search(q, 10)[1], exact_ids(x, np.arange(1, 1501), q)) >= 0.95
    # a saved flat file no longer matches once the DB passed the threshold: rebuilt as IVF-Flat
    vi3, _, from_file = vectors.load_for_db(db, "syn", DIM)
    assert vi3.kind == "ivf-flat" and not from_file
    assert vectors.load_for_db(db, "syn", DIM)[2]


def test_hnsw_missing_the_recall_target_falls_back_to_ivf_flat(tmp_path, monkeypatch):
    """Isotropic clusters + text-like queries give a graph nothing to follow; at a capped efSearch HNSW misses
    the target, and the build keeps an IVF-Flat index instead (saved, reloaded, not rebuilt every time)."""
    monkeypatch.setattr(vectors, "_EF_STEPS", (10,))
    rng = np.random.default_rng(0)
    centres = rng.standard_normal((20, DIM)).astype(np.float32)
    x = centres[rng.integers(0, 20, 4000)] + rng.standard_normal((4000, DIM)).astype(np.float32) * 0.7
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    dbp = tmp_path / "f.db"
    db = fill_db(dbp, x)
    db.set_meta("index_kind", "hnsw")                                   # asked for explicitly
    vi, _, from_file = vectors.load_for_db(db, "syn", DIM)
    assert (vi.kind, vi.asked, from_file) == ("ivf-flat", "hnsw", False)
    assert vi.params["fallback_from"]["recall"] < 0.95 <= vi.params["tuned"]["recall"]
    q = text_like(x, 100, seed=3)
    assert vectors.recall_at_k(vi.search(q, 10)[1], exact_ids(x, np.arange(1, 4001), q)) >= 0.95
    vi2, _, from_file = vectors.load_for_db(db, "syn", DIM)
    assert from_file and vi2.kind == "ivf-flat" and vi2.asked == "hnsw"
