"""Incremental indexer: walk a folder, decode/preprocess in worker threads, encode in batches, commit per batch.

    stats = build_index(root, db_path, model=None, progress=None, batch_size=32, workers=2)

* unchanged files (same path, size, mtime, model hash) are skipped without being opened;
* a touched file whose content (SHA-256) is unchanged only gets its stat fields refreshed ("updated");
* a new path whose SHA-256 matches a row whose file no longer exists is a move: the row (vector, labels)
  follows the file, nothing is re-embedded;
* rows under ``root`` whose file vanished are removed; a changed model re-embeds everything (ids kept);
* every per-file failure is recorded in ``errors`` with a reason and the run goes on; an unchanged bad
  file is not retried on the next run unless its failure was not about its content (permission denied,
  vanished, I/O, ``TRANSIENT``); a later successful index of the path deletes its error row;
* each batch is one transaction, so killing the process loses at most one batch.
"""
from __future__ import annotations

import collections
import concurrent.futures as cf
import os
import time
from pathlib import Path
from typing import Callable

import numpy as np

from dcclip_core.encoder import Encoder, PixelEncoder

from .db import PhotoDB, now_iso
from .errors import RootNotFoundError
from .scan import STAGES, Job, Prepared, embed, prepare, scan
from . import vectors

Progress = Callable[[int, int, str], None]

# failures that say nothing about the file's content: retried on every run even when the file is unchanged
TRANSIENT = ("permission denied", "file vanished", "cannot read", "cannot stat", "out of memory", "encoder failed",
             "unexpected error", "cannot list folder")


# ---- helpers ----------------------------------------------------------------------------------------------
def model_identity(model: Encoder) -> tuple[str, str, int, int]:
    """(id, hash, dims, image_size) from ``model.info`` (``dcclip_core.encoder``; image_size 224 if absent)."""
    info = model.info
    mhash = str(info.get("hash") or "")
    if not mhash or not info.get("dims"):
        raise ValueError(f"model.info needs 'hash' and 'dims' (dcclip_core.encoder.INFO_KEYS), has {sorted(info)}")
    return str(info.get("id") or mhash), mhash, int(info["dims"]), int(info.get("image_size") or 224)


def default_model() -> PixelEncoder:
    import dcclip_core
    return dcclip_core.load()


def with_threads(model: PixelEncoder, threads: int | None) -> PixelEncoder:
    """``model`` with ``threads`` ONNX Runtime threads: a ``dcclip_core.Model`` set otherwise is re-loaded
    from the same folder (cached by dcclip_core.load; same files, same hash); anything else as given."""
    from dcclip_core.runtime import Model
    if not threads or not isinstance(model, Model) or model.threads == int(threads):
        return model
    import dcclip_core
    return dcclip_core.load(str(model.path), threads=int(threads))


def _under(path: str, dirs: list[str]) -> bool:
    return any(path == d or path.startswith(d.rstrip(os.sep) + os.sep) for d in dirs)


# ---- the indexer ------------------------------------------------------------------------------------------
def build_index(root, db_path, model: PixelEncoder | None = None, progress: Progress | None = None,
                batch_size: int = 32, workers: int = 2, save_faiss: bool = True, index_kind: str | None = None,
                ray: bool | str | None = None, profile: dict | None = None,
                encoder_threads: int | None = 1) -> dict:
    """Index every image below ``root`` into ``db_path``; returns counts of this run (see module doc).

    ``index_kind``: "auto" (exact up to 200k vectors, IVF-Flat above), "flat", "hnsw", "ivf-flat", "ivf-sq8", "ivf-pq";
    remembered in the DB (meta ``index_kind``); None keeps what the DB has.
    ``ray``: decode + embed on Ray Data workers (True: a local Ray with ``workers`` CPUs; a string: the
    cluster address, e.g. "auto"); needs ``ray[data]`` (see index.distributed).
    ``encoder_threads``: ONNX Runtime threads of the image encoder while the decode workers run; a
    ``dcclip_core.Model`` with another setting is swapped for the same model (cached) with this many. 1 is the
    cheapest on a laptop: decoding keeps the other cores busy and a second encoder thread mostly spins
    (measured: 35 vs 40 CPU ms per 12 MP photo). None keeps the model as given.
    ``profile``: a dict filled with seconds per stage summed over files ({"cpu_s": {stage: s}} for the worker
    stages in STAGES, thread CPU; "scan_s", "encode_s", "encode_cpu_s", "commit_s", "faiss_s": wall /
    main-thread CPU) and "decoded" (files that went through every stage), for benchmarks."""
    t0 = time.perf_counter()
    root_p = Path(root).expanduser()
    if not root_p.is_dir():
        raise RootNotFoundError(f"folder not found: {root}" if not root_p.exists() else f"not a folder: {root}")
    root_s = str(root_p.resolve())
    model = model if model is not None else default_model()
    if not ray:
        model = with_threads(model, encoder_threads)
    model_id, mhash, dim, target = model_identity(model)
    batch_size = max(1, int(batch_size))
    workers = max(1, int(workers))

    if index_kind is not None:
        vectors.choose_kind(0, index_kind)                      # ValueError on an unknown kind, before any work
    db = PhotoDB(db_path)
    counts = collections.Counter()
    prof = profile if profile is not None else {}
    prof.update({"cpu_s": dict.fromkeys(STAGES, 0.0), "decoded": 0, "scan_s": 0.0, "encode_s": 0.0,
                 "encode_cpu_s": 0.0, "encode_batches": 0, "commit_s": 0.0, "faiss_s": 0.0})
    try:
        db.set_model_meta(model_id, mhash, dim)
        if index_kind is not None and index_kind != vectors.configured_kind(db):
            db.set_meta("index_kind", index_kind)
        t_scan = time.perf_counter()
        jobs, bad, unreadable = scan(root_s)
        prof["scan_s"] += time.perf_counter() - t_scan
        known = db.images_under(root_s)
        known_err = db.errors_under(root_s)
        present = {j.path for j in jobs}

        # rows / error rows whose file is gone (folders we could not list are left alone)
        vanished = {p: r for p, r in known.items() if p not in present and not _under(p, unreadable)}
        orphans: dict[str, list[dict]] = collections.defaultdict(list)
        for r in vanished.values():
            if r["sha256"] and r["model_hash"] == mhash and r["has_vec"]:
                orphans[r["sha256"]].append(r)
        bad_paths = {p for p, _ in bad}
        stale_err = [p for p in known_err if p not in present and p not in bad_paths and not _under(p, unreadable)]
        if stale_err:
            db.clear_errors(stale_err)

        total = len(jobs) + len(bad)
        done = 0

        def tick(path: str):
            nonlocal done
            done += 1
            if progress is not None:
                progress(done, total, path)

        for p, reason in bad:
            db.record_error(p, reason)
            counts["errors"] += 1
            tick(p)

        todo: list[Job] = []
        for j in jobs:
            row = known.get(j.path)
            if row is not None and row["model_hash"] == mhash and row["has_vec"]:
                if row["size"] == j.size and row["mtime"] == j.mtime:
                    counts["skipped"] += 1
                    tick(j.path)
                    continue
                j.known_sha = row["sha256"]
            elif row is None:
                er = known_err.get(j.path)
                if er is not None and er["size"] == j.size and er["mtime"] == j.mtime and er["ctime"] == j.ctime \
                        and not (er["reason"] or "").startswith(TRANSIENT):
                    counts["skipped"] += 1                   # known bad file, unchanged: not retried
                    tick(j.path)
                    continue
            todo.append(j)

        consumed: set[int] = set()                           # orphan rows already claimed by a move
        batch: list[Prepared] = []
        ops: list[tuple] = []                                # non-embedding writes, committed with the batch

        def find_move(sha: str) -> dict | None:
            for r in orphans.get(sha, []):
                if r["id"] not in consumed and not os.path.exists(r["path"]):
                    return r
            for r in db.images_by_sha(sha):                  # moved in from outside this root
                if r["id"] not in consumed and r["model_hash"] == mhash and r["has_vec"] \
                        and r["path"] not in present and not os.path.exists(r["path"]):
                    return r
            return None

        def encode(items: list[Prepared]) -> list[tuple[Prepared, np.ndarray | None, tuple | None, str | None]]:
            done = [(it, it.emb, it.concepts, None) for it in items if it.emb is not None]
            items = [it for it in items if it.emb is None]
            return done + (encode_local(items) if items else [])

        def encode_local(items: list[Prepared]) -> list[tuple[Prepared, np.ndarray | None, tuple | None, str | None]]:
            t_wall, t_cpu = time.perf_counter(), time.thread_time()
            try:
                return [(it, e, c, err) for it, (e, c, err) in zip(items, embed(model, items))]
            finally:
                prof["encode_s"] += time.perf_counter() - t_wall
                prof["encode_cpu_s"] += time.thread_time() - t_cpu
                prof["encode_batches"] += 1

        def flush():
            nonlocal batch, ops
            encoded = encode(batch) if batch else []
            if not encoded and not ops:
                return
            when = now_iso()
            t_commit = time.perf_counter()
            with db.transaction():
                gen = db.bump_generation()
                for it, emb, concepts, err in encoded:
                    if err is not None:
                        db.record_error(it.job.path, err, it.job.size, it.job.mtime, it.job.ctime)
                        counts["errors"] += 1
                        continue
                    image_id = db.upsert_image({**it.fields, "model_hash": mhash, "indexed_at": when})
                    db.put_vector(image_id, emb, gen, concepts)
                    db.clear_errors([it.job.path])
                    counts["indexed"] += 1
                for op in ops:
                    kind = op[0]
                    if kind == "error":
                        _, j, reason = op
                        db.record_error(j.path, reason, j.size, j.mtime, j.ctime)
                    elif kind == "update":
                        _, j, image_id = op
                        db.update_image(image_id, size=j.size, mtime=j.mtime)
                        db.clear_errors([j.path])
                    elif kind == "move":
                        _, j, image_id = op
                        db.move_image(image_id, j.path, j.size, j.mtime)
                        db.clear_errors([j.path])
            prof["commit_s"] += time.perf_counter() - t_commit
            batch, ops = [], []

        def handle(res: Prepared):
            j = res.job
            for k, v in res.times.items():
                prof["cpu_s"][k] += v
            prof["decoded"] += res.kind == "pixels"
            if res.kind == "error":
                ops.append(("error", j, res.reason))
                counts["errors"] += 1
            elif res.kind == "same":
                ops.append(("update", j, known[j.path]["id"]))
                counts["updated"] += 1
            else:
                mv = find_move(res.sha256) if (res.kind == "maybe_move" or j.path not in known) else None
                if mv is not None:
                    consumed.add(mv["id"])
                    ops.append(("move", j, mv["id"]))
                    counts["moved"] += 1
                elif res.kind == "maybe_move":               # the orphan came back: decode after all
                    handle(prepare(j, model, target, shortcuts=False))
                    return
                else:
                    batch.append(res)
            if len(batch) >= batch_size or len(ops) >= 256:
                flush()

        orphan_shas = frozenset(orphans)
        if ray:
            from . import distributed
            for res in distributed.prepared(todo, model, target, orphan_shas, address=None if ray is True else
                                            str(ray), workers=workers, batch_size=batch_size):
                handle(res)
                tick(res.job.path)
        else:
            _run_local(todo, model, target, orphan_shas, workers, max(2 * batch_size, 4 * workers), handle, tick)
        flush()

        # prune rows whose file is gone (not moved), including files that vanished during this run
        gone = [r["id"] for p, r in vanished.items() if r["id"] not in consumed and not os.path.exists(p)]
        gone += [known[j.path]["id"] for j in todo if j.path in known and known[j.path]["id"] not in consumed
                 and not os.path.exists(j.path)]
        if gone:
            with db.transaction():
                db.delete_images(sorted(set(gone)))
                db.bump_generation()
            counts["removed"] += len(set(gone))

        if save_faiss:
            t_faiss = time.perf_counter()
            vectors.ensure_saved(db, mhash, dim)
            prof["faiss_s"] += time.perf_counter() - t_faiss
        n_images = db.count_images()
        n_err_total = db.count_errors()
    finally:
        db.close()
    return {"indexed": counts["indexed"], "skipped": counts["skipped"], "moved": counts["moved"],
            "errors": counts["errors"], "removed": counts["removed"],
            "seconds": round(time.perf_counter() - t0, 3), "images": n_images,
            "updated": counts["updated"], "files": total, "errors_total": n_err_total,
            "root": root_s, "db": str(Path(db_path).expanduser().absolute())}


def _run_local(todo, model, target, orphan_shas, workers, window, handle, tick) -> None:
    """Decode/preprocess ``todo`` on ``workers`` threads (a sliding window), handing results over in order."""
    with cf.ThreadPoolExecutor(max_workers=workers, thread_name_prefix="index-decode") as ex:
        pending: collections.deque = collections.deque()
        it = iter(todo)
        try:
            for j in it:
                pending.append(ex.submit(prepare, j, model, target, orphan_shas))
                if len(pending) >= window:
                    break
            while pending:
                res = pending.popleft().result()
                nxt = next(it, None)
                if nxt is not None:
                    pending.append(ex.submit(prepare, nxt, model, target, orphan_shas))
                handle(res)
                tick(res.job.path)
        finally:
            for f in pending:
                f.cancel()
