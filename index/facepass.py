"""The face pass: find the faces in every indexed photo (dcclip_core.faces), after the image pass, resumably, and
group them into people (index.people).

    stats = find_faces(db_path, finder=None, progress=None, stop=None, workers=1)

* the photos to look at are those with a vector whose faces were never looked for, or looked for in other bytes
  (the file changed) or by another finder version (``PhotoDB.face_todo``): the image index is complete and
  searchable before this starts, and never waits for it;
* each photo's faces and its record (state "none" / "faces" / "capped" / "error" with a reason) are one
  transaction, so a killed run loses at most the photo being looked at and the next run starts where it
  stopped; faces found again where they were keep their person and what was done to them by hand;
* new faces join people as they come (``people.assign_new`` every ``ASSIGN_EVERY`` photos and at the end), so
  the People tab fills while the pass runs;
* nothing runs while the library's privacy switch is off (``PhotoDB.faces_enabled``);
* ``workers`` finders run side by side (dlib's descriptor network already uses both cores, so one is the
  default); ``ray`` looks on Ray Data workers instead (index.distributed), the writes stay here.
"""
from __future__ import annotations

import collections
import threading
import time
from pathlib import Path
from typing import Callable, Iterable, Iterator

from dcclip_core.faces import FaceFinder, FaceReading, finder_version

from . import people
from .db import PhotoDB
from .passes import in_order, find_one

Progress = Callable[[int, int, str], None]
ASSIGN_EVERY = 25            # photos between two rounds of grouping new faces into people


def face_rows(reading: FaceReading) -> list[dict]:
    """The reading's faces as PhotoDB.put_faces rows."""
    return [{"box": f.box, "score": f.score, "side": f.side, "sharpness": f.sharpness, "quality": f.quality,
             "vec": f.vec} for f in reading.faces]


def _local(todo: list[dict], workers: int, finder: FaceFinder | None,
           stop: threading.Event | None) -> Iterator[tuple[dict, FaceReading]]:
    """(photo, reading) in ``todo`` order, ``workers`` photos at a time (one FaceFinder each)."""
    finders = [finder] if finder is not None else []
    finders += [FaceFinder() for _ in range(max(1, workers) - len(finders))]
    return in_order(todo, finders, lambda f, row: find_one(f, row["path"]), stop, "index-faces")


def find_faces(db_path, finder: FaceFinder | None = None, progress: Progress | None = None,
               stop: threading.Event | None = None, workers: int = 1, ray: bool | str | None = None,
               limit: int | None = None, join: float = people.JOIN) -> dict:
    """Find the faces of every photo in ``db_path`` that needs it and group them into people (module doc);
    returns counts of this run: {"looked", "with_faces", "faces", "capped", "errors", "joined", "new_people",
    "pending", "seconds", "faces_s", "enabled"}. ``stop``: an event that ends the run after the photo being
    written. ``limit``: look at most this many photos. ``progress(done, total, path)`` from (0, total, "")."""
    t0 = time.perf_counter()
    version = finder.version if finder is not None else finder_version()
    counts = collections.Counter()
    db = PhotoDB(db_path, create=False)
    try:
        enabled = db.faces_enabled()
        todo = db.face_todo(version, limit=limit) if enabled else []
        if progress is not None:
            progress(0, len(todo), "")
        if not todo:
            stream: Iterable = ()
        elif ray:
            from . import distributed
            stream = distributed.face_readings(todo, address=None if ray is True else str(ray), workers=workers)
        else:
            stream = _local(todo, workers, finder, stop)
        since = 0
        for done, (row, reading) in enumerate(stream, 1):
            if not db.faces_enabled():           # switched off meanwhile: write nothing more
                break
            db.put_faces(row["id"], row["sha256"], version, reading.state, face_rows(reading), reading.seconds,
                         reading.note)
            counts["looked"] += 1
            counts["with_faces"] += reading.state in ("faces", "capped")
            counts["capped"] += reading.state == "capped"
            counts["errors"] += reading.state == "error"
            counts["faces"] += len(reading.faces)
            counts["faces_s"] += reading.seconds
            since += bool(reading.faces)
            if since >= ASSIGN_EVERY:
                counts.update(people.assign_new(db, join))
                since = 0
            if progress is not None:
                progress(done, len(todo), row["path"])
            if stop is not None and stop.is_set():
                break
        if db.faces_enabled():
            counts.update(people.assign_new(db, join))
        pending = db.face_pending(version) if enabled else 0
    finally:
        db.close()
    return {"looked": counts["looked"], "with_faces": counts["with_faces"], "faces": counts["faces"],
            "capped": counts["capped"], "errors": counts["errors"], "joined": counts["joined"],
            "new_people": counts["new_people"], "pending": pending, "enabled": enabled,
            "seconds": round(time.perf_counter() - t0, 3), "faces_s": round(counts["faces_s"], 3),
            "db": str(Path(db_path).expanduser().absolute())}
