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
import hashlib
import io
import os
import re
import stat as stat_mod
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from dcclip_core.preprocess import IMAGE_EXTENSIONS, ImageLoadError, image_info, load_image

from .db import PhotoDB, now_iso
from .errors import RootNotFoundError
from . import vectors as V

Progress = Callable[[int, int, str], None]

MAX_FILE_BYTES = int(float(os.environ.get("INDEX_MAX_FILE_MB", 1024)) * 2**20)   # larger files are refused
# failures that say nothing about the file's content: retried on every run even when the file is unchanged
TRANSIENT = ("permission denied", "file vanished", "cannot read", "cannot stat", "out of memory", "encoder failed",
             "unexpected error", "cannot list folder")
SKIP_DIRS = {"@eaDir", "$RECYCLE.BIN", "System Volume Information", "lost+found"}  # NAS thumbnails, system dirs


# ---- helpers ----------------------------------------------------------------------------------------------
def model_identity(model) -> tuple[str, str, int, int]:
    """(id, hash, dim, image_size) of a model object (dcclip_core.Model or anything with the same API)."""
    info = dict(getattr(model, "info", {}) or {})
    dim = int(getattr(model, "dim", 0) or info.get("dim") or info.get("dims"))
    mhash = str(info.get("hash") or getattr(model, "hash", "") or "")
    if not mhash:
        raise ValueError("model.info has no 'hash'")
    return str(info.get("id") or info.get("name") or mhash), mhash, dim, int(info.get("image_size") or 224)


def default_model():
    import dcclip_core
    return dcclip_core.load()


def with_threads(model, threads: int | None):
    """``model`` with ``threads`` ONNX Runtime threads: a ``dcclip_core.Model`` set otherwise is re-loaded
    from the same folder (cached by dcclip_core.load; same files, same hash); anything else as given."""
    from dcclip_core.runtime import Model
    if not threads or not isinstance(model, Model) or model.threads == int(threads):
        return model
    import dcclip_core
    return dcclip_core.load(str(model.path), threads=int(threads))


_EXIF_DATE = re.compile(r"^\s*(\d{4})[:\-/](\d{2})[:\-/](\d{2})(?:[ T](\d{2}):(\d{2})(?::(\d{2}))?)?")


def exif_to_iso(value) -> str | None:
    """'2021:05:01 12:34:56' -> '2021-05-01T12:34:56' (None for missing / zero / unparsable dates)."""
    if not value:
        return None
    m = _EXIF_DATE.match(str(value))
    if not m:
        return None
    y, mo, d, hh, mm, ss = m.groups()
    if int(y) == 0 or not (1 <= int(mo) <= 12) or not (1 <= int(d) <= 31):
        return None
    if hh is None:
        return f"{y}-{mo}-{d}"
    return f"{y}-{mo}-{d}T{hh}:{mm}:{ss or '00'}"


def dhash(im, size: int = 8) -> str:
    """64-bit difference hash of a PIL image as 16 hex digits (for near-duplicate checks)."""
    from PIL import Image
    g = np.asarray(im.convert("L").resize((size + 1, size), Image.Resampling.BILINEAR), dtype=np.int16)
    bits = (g[:, 1:] > g[:, :-1]).flatten()
    return f"{int(''.join('1' if b else '0' for b in bits), 2):0{size * size // 4}x}"


def image_meta(data: bytes) -> dict:
    """width, height (after EXIF rotation), format, EXIF date of an image that decoded. PNG: only an eXIf
    chunk before the pixels is read (Pillow's getexif would decode the whole PNG a second time)."""
    from PIL import Image
    try:
        with Image.open(io.BytesIO(data)) as im:
            w, h = im.size
            fmt = im.format
            if fmt == "PNG":
                exif = Image.Exif()
                if im.info.get("exif"):
                    exif.load(im.info["exif"])
            else:
                exif = im.getexif()
            if exif.get(0x0112, 1) in (5, 6, 7, 8):
                w, h = h, w
            try:
                date = exif.get_ifd(0x8769).get(0x9003) or exif.get(0x0132)
            except Exception:
                date = exif.get(0x0132)
            return {"width": w, "height": h, "format": fmt, "exif_date": str(date) if date else None}
    except Exception:                                         # damaged metadata of a file that decoded
        try:
            return image_info(data)
        except Exception:
            return {}


def _os_reason(e: OSError, what: str = "cannot read") -> str:
    if isinstance(e, PermissionError):
        return "permission denied"
    if isinstance(e, FileNotFoundError):
        return "file vanished while indexing"
    if isinstance(e, IsADirectoryError):
        return "is a directory, not an image"
    return f"{what}: {e.strerror or e}"


@dataclass
class _Job:
    path: str
    size: int
    mtime: float
    ctime: float
    known_sha: str | None = None         # same path, current model: content unchanged -> no re-embed


@dataclass
class _Prepared:
    job: _Job
    kind: str                            # "same" | "maybe_move" | "pixels" | "error"
    sha256: str | None = None
    pixels: np.ndarray | None = None
    fields: dict = field(default_factory=dict)
    reason: str | None = None
    emb: np.ndarray | None = None        # already embedded (the Ray path)
    times: dict = field(default_factory=dict)   # stage -> thread CPU seconds spent on it (see STAGES)


# per-image stages of ``_prepare`` (timed with the worker thread's CPU clock) and of the main loop (encode,
# commit: wall clock); ``build_index(profile=...)`` sums them
STAGES = ("read", "hash", "decode", "preprocess", "phash", "exif")


def _prepare(job: _Job, model, target: int, orphan_shas: frozenset | set = frozenset(),
             shortcuts: bool = True) -> _Prepared:
    """Worker: read bytes, hash, and (unless it is an unchanged/moved file) decode + preprocess.

    One decode per file: the DCT-scaled image (>= target on its shorter side, e.g. 500x375 for 12 MP) feeds
    the encoder's pixels and the perceptual hash; metadata comes from the headers."""
    if job.size > MAX_FILE_BYTES:
        return _Prepared(job, "error", reason=f"file too large ({job.size / 2**20:.0f} MB; limit "
                                              f"{MAX_FILE_BYTES / 2**20:.0f} MB, env INDEX_MAX_FILE_MB)")
    clock = time.thread_time
    times = {}
    t = clock()
    try:
        with open(job.path, "rb") as f:
            data = f.read()
    except OSError as e:
        return _Prepared(job, "error", reason=_os_reason(e))
    if not data:
        return _Prepared(job, "error", reason="empty file (0 bytes)")
    t, times["read"] = clock(), clock() - t
    sha = hashlib.sha256(data).hexdigest()
    t, times["hash"] = clock(), clock() - t
    if shortcuts and job.known_sha and sha == job.known_sha:
        return _Prepared(job, "same", sha, times=times)
    if shortcuts and sha in orphan_shas:
        return _Prepared(job, "maybe_move", sha, times=times)
    try:
        im = load_image(data, target_size=target)            # first: it refuses bombs before decoding
        t, times["decode"] = clock(), clock() - t
        px = np.asarray(model.preprocess(im), dtype=np.float32)
        t, times["preprocess"] = clock(), clock() - t
        ph = dhash(im)
        t, times["phash"] = clock(), clock() - t
        info = image_meta(data)
        times["exif"] = clock() - t
    except ImageLoadError as e:
        return _Prepared(job, "error", sha, reason=e.reason, times=times)
    except MemoryError:
        return _Prepared(job, "error", sha, reason="out of memory while decoding", times=times)
    except Exception as e:                                   # never let one file abort the run
        return _Prepared(job, "error", sha, reason=f"unexpected error: {type(e).__name__}: {e}", times=times)
    fields = {"path": job.path, "size": len(data), "mtime": job.mtime, "sha256": sha, "phash": ph,
              "width": info.get("width"), "height": info.get("height"),
              "taken_at": exif_to_iso(info.get("exif_date")), "format": info.get("format")}
    return _Prepared(job, "pixels", sha, px, fields, times=times)


def scan(root: str) -> tuple[list[_Job], list[tuple[str, str]], list[str]]:
    """Walk ``root`` (no symlinked dirs, so loops are safe; hidden folders and NAS thumbnail folders skipped)
    -> (jobs, [(path, reason)], unreadable dirs)."""
    jobs: list[_Job] = []
    bad: list[tuple[str, str]] = []
    unreadable: list[str] = []

    def onerror(e: OSError):
        p = getattr(e, "filename", None) or "?"
        if str(p) == root:
            raise RootNotFoundError(f"cannot list folder {root}: {_os_reason(e, 'error')}") from None
        unreadable.append(str(p))
        bad.append((str(p), "cannot list folder: " + _os_reason(e, "error").replace("file vanished while indexing",
                                                                                    "folder vanished")))

    for dirpath, dirnames, filenames in os.walk(root, topdown=True, onerror=onerror, followlinks=False):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith(".") and d not in SKIP_DIRS)
        for name in sorted(filenames):
            if os.path.splitext(name)[1].lower() not in IMAGE_EXTENSIONS or name.startswith("._"):
                continue
            path = os.path.join(dirpath, name)
            try:
                path.encode("utf-8")
            except UnicodeEncodeError:
                bad.append((path.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace"),
                            "file name is not valid UTF-8 (rename the file)"))
                continue
            try:
                st = os.stat(path)
            except FileNotFoundError:
                bad.append((path, "broken symbolic link" if os.path.islink(path) else "file vanished while indexing"))
                continue
            except OSError as e:
                bad.append((path, _os_reason(e, "cannot stat")))
                continue
            if not stat_mod.S_ISREG(st.st_mode):
                bad.append((path, "not a regular file"))
                continue
            jobs.append(_Job(path, st.st_size, st.st_mtime, st.st_ctime))
    return jobs, bad, unreadable


def _under(path: str, dirs: list[str]) -> bool:
    return any(path == d or path.startswith(d.rstrip(os.sep) + os.sep) for d in dirs)


# ---- the indexer ------------------------------------------------------------------------------------------
def build_index(root, db_path, model=None, progress: Progress | None = None, batch_size: int = 32,
                workers: int = 2, save_faiss: bool = True, index_kind: str | None = None,
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
        V.choose_kind(0, index_kind)                            # ValueError on an unknown kind, before any work
    db = PhotoDB(db_path)
    counts = collections.Counter()
    prof = profile if profile is not None else {}
    prof.update({"cpu_s": dict.fromkeys(STAGES, 0.0), "decoded": 0, "scan_s": 0.0, "encode_s": 0.0,
                 "encode_cpu_s": 0.0, "encode_batches": 0, "commit_s": 0.0, "faiss_s": 0.0})
    try:
        db.set_model_meta(model_id, mhash, dim)
        if index_kind is not None and index_kind != V.configured_kind(db):
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

        todo: list[_Job] = []
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
        batch: list[_Prepared] = []
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

        def encode(items: list[_Prepared]) -> list[tuple[_Prepared, np.ndarray | None, str | None]]:
            done = [(it, it.emb, None) for it in items if it.emb is not None]
            items = [it for it in items if it.emb is None]
            return done + (encode_local(items) if items else [])

        def encode_local(items: list[_Prepared]) -> list[tuple[_Prepared, np.ndarray | None, str | None]]:
            t_wall, t_cpu = time.perf_counter(), time.thread_time()
            try:
                return _encode_local(items)
            finally:
                prof["encode_s"] += time.perf_counter() - t_wall
                prof["encode_cpu_s"] += time.thread_time() - t_cpu
                prof["encode_batches"] += 1

        def _encode_local(items: list[_Prepared]) -> list[tuple[_Prepared, np.ndarray | None, str | None]]:
            try:
                embs = np.asarray(model.encode_pixels(np.stack([it.pixels for it in items])), np.float32)
                return [(it, embs[i], None) for i, it in enumerate(items)]
            except Exception:
                out = []
                for it in items:                             # isolate the item that breaks the encoder
                    try:
                        e = np.asarray(model.encode_pixels(it.pixels[None]), np.float32)[0]
                        out.append((it, e, None))
                    except Exception as ex:
                        out.append((it, None, f"encoder failed: {type(ex).__name__}: {ex}"))
                return out

        def flush():
            nonlocal batch, ops
            encoded = encode(batch) if batch else []
            if not encoded and not ops:
                return
            when = now_iso()
            t_commit = time.perf_counter()
            with db.transaction():
                gen = db.bump_generation()
                for it, emb, err in encoded:
                    if err is not None:
                        db.record_error(it.job.path, err, it.job.size, it.job.mtime, it.job.ctime)
                        counts["errors"] += 1
                        continue
                    image_id = db.upsert_image({**it.fields, "model_hash": mhash, "indexed_at": when})
                    db.put_vector(image_id, emb, gen)
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

        def handle(res: _Prepared):
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
                    handle(_prepare(j, model, target, shortcuts=False))
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
            ensure_faiss(db, mhash, dim)
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
                pending.append(ex.submit(_prepare, j, model, target, orphan_shas))
                if len(pending) >= window:
                    break
            while pending:
                res = pending.popleft().result()
                nxt = next(it, None)
                if nxt is not None:
                    pending.append(ex.submit(_prepare, nxt, model, target, orphan_shas))
                handle(res)
                tick(res.job.path)
        finally:
            for f in pending:
                f.cancel()


def ensure_faiss(db: PhotoDB, model_hash: str, dim: int) -> bool:
    """Make ``<db>.faiss`` match the DB (no work when its header already agrees; an older save of this DB is
    updated with the changes since, else rebuilt). Best effort."""
    try:
        want = V._expected(db, model_hash, dim, db.generation())
        if V.header_matches(db, V.VectorIndex.read_header(V.faiss_path(db.path)), want):
            return True
        V.load_for_db(db, model_hash, dim, save=True)
        return V.header_matches(db, V.VectorIndex.read_header(V.faiss_path(db.path)), want)
    except Exception:
        return False
