"""The text pass: read the text in every indexed photo (dcclip_core.ocr), after the image pass, resumably.

    stats = read_texts(db_path, reader=None, model=None, progress=None, stop=None, workers=2)

* the photos to read are those with a vector whose text was never read, or read from other bytes (the file
  changed) or by another reader version (``PhotoDB.text_todo``): the image index is complete and searchable
  before this starts, and never waits for it;
* each photo's lines and its record (state "none" / "text" / "capped" / "error" with a reason) are one
  transaction, so a killed run loses at most the photos being read and the next run starts where it stopped;
* a photo the OCR cannot read is recorded with the reason and stays searchable by its image; it is not retried
  until the file changes;
* each line is also embedded by the model's text tower (float16 in ``text_lines.vec``), which lets a query find
  a photo by what its text means ("ticket" -> a photo that says 车票); lines embedded by another model are
  embedded again here;
* ``workers`` readers run side by side (one ONNX thread each: decoding and the small OCR graphs parallelise
  better across photos than inside one); ``ray`` reads on Ray Data workers instead (index.distributed), the
  writes stay here.
"""
from __future__ import annotations

import collections
import threading
import time
from pathlib import Path
from typing import Callable, Iterable, Iterator

import numpy as np

from dcclip_core.ocr import Reading, TextReader, has_words, normalise, reader_version

from .db import PhotoDB
from .passes import in_order, read_one

Progress = Callable[[int, int, str], None]
EMBED_BATCH = 64              # lines per text-tower call when embedding


def _line_rows(reading: Reading, model) -> list[dict]:
    """The reading's lines as PhotoDB.put_text rows; lines with words (``has_words``) carry their vector."""
    texts = [ln.text for ln in reading.lines]
    vecs = _vectors(model, texts) if model is not None else {}
    mhash = str(model.info.get("hash") or "") if model is not None else None
    return [{"text": ln.text, "norm": normalise(ln.text), "box": ln.box, "conf": ln.conf, "script": ln.script,
             "vec": vecs.get(i), "model_hash": mhash} for i, ln in enumerate(reading.lines)]


def _vectors(model, texts: list[str]) -> dict[int, np.ndarray]:
    """{position: (d,) text-tower vector} of the ``texts`` with words to mean (``has_words``), in batches."""
    worded = [i for i, t in enumerate(texts) if has_words(t)]
    out: dict[int, np.ndarray] = {}
    for s in range(0, len(worded), EMBED_BATCH):
        chunk = worded[s:s + EMBED_BATCH]
        out.update(zip(chunk, np.asarray(model.encode_text([texts[i] for i in chunk]), np.float32)))
    return out


def embed_lines(db: PhotoDB, model, stop: threading.Event | None = None, progress: Progress | None = None) -> int:
    """Embed every stored line that ``model`` has not embedded yet (after a model change); returns how many.
    ``progress(done, total, "")`` counts lines."""
    mhash = str(model.info.get("hash") or "")
    total = db.count_lines_without_vectors(mhash)
    n = done = 0
    while not (stop is not None and stop.is_set()):
        rows = db.lines_without_vectors(mhash, limit=512)
        if not rows:
            break
        vecs = _vectors(model, [t for _, t in rows])
        db.put_line_vectors([(i, vecs.get(j)) for j, (i, _) in enumerate(rows)], mhash)   # none: no words to mean
        n += len(vecs)
        done += len(rows)
        if progress is not None:
            progress(done, total, "")
    return n


def _readings_local(todo: list[dict], workers: int, threads: int, reader: TextReader | None,
                    stop: threading.Event | None) -> Iterator[tuple[dict, Reading]]:
    """(photo, reading) in ``todo`` order, ``workers`` photos at a time (one TextReader each)."""
    readers = [reader] if reader is not None else []
    readers += [TextReader(threads=threads) for _ in range(max(1, workers) - len(readers))]
    return in_order(todo, readers, lambda r, row: read_one(r, row["path"]), stop, "index-text")


def read_texts(db_path, reader: TextReader | None = None, model=None, progress: Progress | None = None,
               stop: threading.Event | None = None, workers: int = 2, threads: int = 1,
               ray: bool | str | None = None, limit: int | None = None) -> dict:
    """Read the text of every photo in ``db_path`` that needs it (see module doc); returns counts of this run:
    {"read", "with_text", "capped", "errors", "lines", "embedded", "pending", "seconds", "text_s"}.
    ``model``: the index's model (its text tower embeds the lines; None skips that). ``stop``: an event that
    ends the run after the photo being written. ``limit``: read at most this many photos. ``progress(done,
    total, path)``: lines embedded for a new model first (path ""), then photos read, from (0, total, "")."""
    t0 = time.perf_counter()
    version = reader.version if reader is not None else reader_version()
    counts = collections.Counter()
    db = PhotoDB(db_path, create=False)
    try:
        if model is not None:
            counts["embedded"] += embed_lines(db, model, stop, progress)
        todo = db.text_todo(version, limit=limit)
        if progress is not None:
            progress(0, len(todo), "")
        if not todo:
            stream: Iterable = ()
        elif ray:
            from . import distributed
            stream = distributed.readings(todo, address=None if ray is True else str(ray),
                                                    workers=workers)
        else:
            stream = _readings_local(todo, workers, threads, reader, stop)
        for done, (row, reading) in enumerate(stream, 1):
            db.put_text(row["id"], row["sha256"], version, reading.state, _line_rows(reading, model),
                        reading.seconds, reading.note)
            counts["read"] += 1
            counts["with_text"] += reading.state in ("text", "capped")
            counts["capped"] += reading.state == "capped"
            counts["errors"] += reading.state == "error"
            counts["lines"] += len(reading.lines)
            counts["text_s"] += reading.seconds
            if progress is not None:
                progress(done, len(todo), row["path"])
            if stop is not None and stop.is_set():
                break
        pending = db.text_pending(version)
    finally:
        db.close()
    return {"read": counts["read"], "with_text": counts["with_text"], "capped": counts["capped"],
            "errors": counts["errors"], "lines": counts["lines"], "embedded": counts["embedded"],
            "pending": pending, "seconds": round(time.perf_counter() - t0, 3),
            "text_s": round(counts["text_s"], 3), "db": str(Path(db_path).expanduser().absolute())}
