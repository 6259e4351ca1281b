"""Embedding with Ray Data (``build --ray [ADDRESS]``): the decode + encode stage of the indexer on Ray workers,
the text pass's reading (``readings``) and the face pass's finding (``face_readings``).

Only the per-file work moves: workers read each file, hash it, decode, preprocess and embed in batches, and
stream back what the local path's worker threads produce (``index.scan.prepare``, then ``index.scan.embed``). The
driver keeps every DB write, in input order, through the same code as the local path, so a Ray build makes
the same rows, ids and vectors. Workers must see the files under the same paths (local mode, or a cluster
with shared storage) and have this repository and the model importable.

Needs ``ray[data]`` (``pip install -r requirements-cluster.txt``); nothing here is imported otherwise.
"""
from __future__ import annotations

import dataclasses
import json
import os
from typing import Iterator

import numpy as np

from dcclip_core.encoder import PixelEncoder

from .db import blob_to_concepts, concepts_to_blob
from .scan import Job, Prepared, embed, prepare


class RayUnavailableError(RuntimeError):
    """``ray`` is not installed (or cannot start)."""


def available() -> bool:
    try:
        import ray  # noqa: F401
        import ray.data  # noqa: F401
        return True
    except Exception:
        return False


def model_spec(model: PixelEncoder):
    """What a worker needs to rebuild the model: a dcclip_core model directory, else the object itself."""
    path = getattr(model, "path", None)
    if path is not None and type(model).__module__.startswith("dcclip_core"):
        return {"dcclip_path": str(path)}
    return {"object": model}


def _load(spec, threads: int):
    if "dcclip_path" in spec:
        from dcclip_core.runtime import Model
        return Model(spec["dcclip_path"], threads=threads)
    return spec["object"]


class _Embedder:
    """Ray Data actor: a batch of file jobs -> prepared results with embeddings (one model per actor)."""

    def __init__(self, spec, target: int, orphan_shas: list, threads: int = 1):
        self.model = _load(spec, threads)
        self.target = int(target)
        self.orphans = frozenset(orphan_shas)

    def __call__(self, batch: dict) -> dict:
        jobs = [Job(str(p), int(s), float(m), float(c), k or None)
                for p, s, m, c, k in zip(batch["path"], batch["size"], batch["mtime"], batch["ctime"],
                                         batch["known_sha"])]
        res = [prepare(j, self.model, self.target, self.orphans) for j in jobs]
        px = [r for r in res if r.kind == "pixels"]
        embs: dict[int, bytes] = {}
        cons: dict[int, bytes] = {}
        errs: dict[int, str] = {}
        for r, (e, c, err) in zip(px, embed(self.model, px) if px else []):
            if err is None:
                embs[id(r)] = e.astype("<f4").tobytes()
                if c is not None:
                    cons[id(r)] = concepts_to_blob(*c)
            else:
                errs[id(r)] = err
        return {
            "path": np.asarray([r.job.path for r in res], dtype=object),
            "kind": np.asarray([r.kind for r in res], dtype=object),
            "sha256": np.asarray([r.sha256 or "" for r in res], dtype=object),
            "reason": np.asarray([r.reason or "" for r in res], dtype=object),
            "fields": np.asarray([json.dumps(r.fields, ensure_ascii=False) for r in res], dtype=object),
            "emb": np.asarray([embs.get(id(r), b"") for r in res], dtype=object),
            "concepts": np.asarray([cons.get(id(r), b"") for r in res], dtype=object),
            "enc_error": np.asarray([errs.get(id(r), "") for r in res], dtype=object),
        }


def init(address: str | None, num_cpus: int | None = None) -> None:
    """Connect to ``address`` ("auto", "ray://host:10001", ...) or start a local Ray with ``num_cpus``."""
    try:
        import ray
    except Exception as e:
        raise RayUnavailableError("build --ray needs ray[data]: pip install -r requirements-cluster.txt "
                                  f"({type(e).__name__}: {e})") from None
    if ray.is_initialized():
        return
    kw = dict(include_dashboard=False, log_to_driver=False, ignore_reinit_error=True, configure_logging=False)
    if address and address not in ("local", "LOCAL"):
        ray.init(address=address, **kw)
    else:
        ray.init(num_cpus=num_cpus or os.cpu_count() or 1, **kw)


def _data(address: str | None, workers: int):
    """``ray.data`` on a started Ray, its results in input order (ids are given in input order, as locally) and
    no progress bars."""
    init(address, num_cpus=max(1, workers))
    import ray.data
    ctx = ray.data.DataContext.get_current()
    ctx.execution_options.preserve_order = True
    try:
        ctx.enable_progress_bars = False
        ctx.print_on_execution_start = False
    except Exception:
        pass
    return ray.data


def prepared(jobs: list[Job], model: PixelEncoder, target: int, orphan_shas, address: str | None = None,
             workers: int = 2, batch_size: int = 32) -> Iterator[Prepared]:
    """Run ``prepare`` + ``embed`` for ``jobs`` on ``workers`` Ray actors; yields ``Prepared`` (with ``emb`` set
    for embedded images) in the order of ``jobs``."""
    if not jobs:
        return
    ray_data = _data(address, workers)
    by_path = {j.path: j for j in jobs}
    ds = ray_data.from_items([{"path": j.path, "size": j.size, "mtime": j.mtime, "ctime": j.ctime,
                               "known_sha": j.known_sha or ""} for j in jobs],
                             override_num_blocks=max(1, min(len(jobs) // max(1, batch_size), 64)))
    ds = ds.map_batches(_Embedder, fn_constructor_kwargs={"spec": model_spec(model), "target": target,
                                                          "orphan_shas": sorted(orphan_shas), "threads": 1},
                        batch_size=batch_size, compute=ray_data.ActorPoolStrategy(size=max(1, workers)),
                        num_cpus=1, batch_format="numpy")
    for batch in ds.iter_batches(batch_size=batch_size, batch_format="numpy", prefetch_batches=2):
        for path, kind, sha, reason, fields, emb, con, enc_err in zip(
                batch["path"], batch["kind"], batch["sha256"], batch["reason"], batch["fields"], batch["emb"],
                batch["concepts"], batch["enc_error"]):
            job = by_path[str(path)]
            if enc_err:
                yield Prepared(job, "error", sha or None, reason=str(enc_err))
                continue
            p = Prepared(job, str(kind), sha or None, None, json.loads(fields), reason or None)
            if kind == "pixels":
                p.emb = np.frombuffer(bytes(emb), dtype="<f4").astype(np.float32)
                p.concepts = blob_to_concepts(bytes(con)) if len(con) else None
            yield p


class _Reader:
    """Ray Data actor: a batch of photos -> their text readings (one TextReader per actor, index.textpass)."""

    def __init__(self, threads: int = 1):
        from dcclip_core.ocr import TextReader
        self.reader = TextReader(threads=threads)

    def __call__(self, batch: dict) -> dict:
        from .passes import read_one
        out = [read_one(self.reader, str(p)) for p in batch["path"]]
        return {"id": batch["id"],
                "result": np.asarray([json.dumps(dataclasses.asdict(r), ensure_ascii=False) for r in out],
                                     dtype=object)}


def _looked_at(rows: list[dict], actor, address: str | None, workers: int, batch_size: int):
    """(row, JSON-decoded result) for each of ``rows`` ([{"id", "path", ...}]), in order, from ``actor`` (a Ray
    Data actor class mapping {"id", "path"} batches to {"id", "result": JSON text}) on ``workers`` actors."""
    ray_data = _data(address, workers)
    by_id = {int(r["id"]): r for r in rows}
    ds = ray_data.from_items([{"id": int(r["id"]), "path": r["path"]} for r in rows],
                             override_num_blocks=max(1, min(len(rows) // max(1, batch_size), 64)))
    ds = ds.map_batches(actor, fn_constructor_kwargs={"threads": 1}, batch_size=batch_size,
                        compute=ray_data.ActorPoolStrategy(size=max(1, workers)), num_cpus=1, batch_format="numpy")
    for batch in ds.iter_batches(batch_size=batch_size, batch_format="numpy", prefetch_batches=2):
        for image_id, blob in zip(batch["id"], batch["result"]):
            yield by_id[int(image_id)], json.loads(blob)


def readings(rows: list[dict], address: str | None = None, workers: int = 2, batch_size: int = 8):
    """The text pass's reading step on ``workers`` Ray actors: yields (row, dcclip_core.ocr.Reading) in the
    order of ``rows`` ([{"id", "path", ...}] from PhotoDB.text_todo); the caller writes them."""
    if not rows:
        return
    from dcclip_core.ocr import Line, Reading
    for row, d in _looked_at(rows, _Reader, address, workers, batch_size):
        d["lines"] = [Line(ln["text"], tuple(ln["box"]), ln["conf"], ln["script"]) for ln in d["lines"]]
        yield row, Reading(**d)


class _FaceLooker:
    """Ray Data actor: a batch of photos -> their faces (one FaceFinder per actor, index.facepass)."""

    def __init__(self, threads: int = 1):
        from dcclip_core.faces import FaceFinder
        self.finder = FaceFinder()

    def __call__(self, batch: dict) -> dict:
        from .passes import find_one
        out = []
        for p in batch["path"]:
            d = dataclasses.asdict(find_one(self.finder, str(p)))
            for f in d["faces"]:
                f["vec"] = np.asarray(f["vec"], np.float32).tolist()
            out.append(json.dumps(d, ensure_ascii=False))
        return {"id": batch["id"], "result": np.asarray(out, dtype=object)}


def face_readings(rows: list[dict], address: str | None = None, workers: int = 2, batch_size: int = 8):
    """The face pass's finding step on ``workers`` Ray actors: yields (row, dcclip_core.faces.FaceReading) in the
    order of ``rows`` ([{"id", "path", ...}] from PhotoDB.face_todo); the caller writes them and groups the
    faces into people."""
    if not rows:
        return
    from dcclip_core.faces import Face, FaceReading
    for row, d in _looked_at(rows, _FaceLooker, address, workers, batch_size):
        d["faces"] = [Face(**{**f, "box": tuple(f["box"]), "vec": np.asarray(f["vec"], np.float32)})
                      for f in d["faces"]]
        yield row, FaceReading(**d)
