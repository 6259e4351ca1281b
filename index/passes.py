"""What the text pass and the face pass share: look at photos with a few workers, in order, stoppable, and turn
a photo's failure into a record instead of an end (``read_one``, ``find_one``: one photo, for the local path and
the Ray Data workers alike).

    for row, result in in_order(todo, tools, lambda tool, row: tool.read(row["path"]), stop):
        ...   # write it (the caller keeps every DB write)
    attempt(lambda: reader.read(path), lambda s, why: Reading("error", seconds=s, note=why), "reading text",
            "text could not be read")
"""
from __future__ import annotations

import collections
import concurrent.futures as cf
import threading
import time
from typing import Callable, Iterator, Sequence, TypeVar

from dcclip_core.faces import FaceFinder, FaceReading
from dcclip_core.ocr import Reading, TextReader
from dcclip_core.preprocess import ImageLoadError

T = TypeVar("T")
R = TypeVar("R")


def in_order(todo: Sequence[dict], tools: Sequence[T], work: Callable[[T, dict], R],
             stop: threading.Event | None = None, name: str = "index-pass") -> Iterator[tuple[dict, R]]:
    """(row, work(tool, row)) for each row of ``todo``, in order, one row per tool at a time (each tool — a
    TextReader, a FaceFinder — is used by one thread at a time); at most 2 rows per tool ahead. Ends after the
    row being yielded when ``stop`` is set; rows not started are never started."""
    free = collections.deque(tools)
    lock = threading.Lock()

    def run(row: dict) -> R:
        with lock:
            tool = free.popleft()
        try:
            return work(tool, row)
        finally:
            with lock:
                free.append(tool)

    with cf.ThreadPoolExecutor(max_workers=len(tools), thread_name_prefix=name) as ex:
        pending: collections.deque = collections.deque()
        it = iter(todo)
        for row in it:
            pending.append((row, ex.submit(run, row)))
            if len(pending) >= 2 * len(tools):
                break
        try:
            while pending:
                row, fut = pending.popleft()
                yield row, fut.result()
                if stop is not None and stop.is_set():
                    break
                nxt = next(it, None)
                if nxt is not None:
                    pending.append((nxt, ex.submit(run, nxt)))
        finally:
            for _, f in pending:
                f.cancel()


def attempt(work: Callable[[], R], failed: Callable[[float, str], R], doing: str, failure: str) -> R:
    """``work()``; when it fails, ``failed(seconds, reason)``: the file's own problem (ImageLoadError's reason),
    "out of memory while <doing>", or "<failure> (<error>)" when the models fail on this photo (the app
    translates the reasons by these words: ui.i18n.reason_text) — recorded, and the pass goes on."""
    t0 = time.perf_counter()
    try:
        return work()
    except ImageLoadError as e:
        return failed(time.perf_counter() - t0, e.reason)
    except MemoryError:
        return failed(time.perf_counter() - t0, f"out of memory while {doing}")
    except Exception as e:
        return failed(time.perf_counter() - t0, f"{failure} ({type(e).__name__}: {str(e)[:200]})")


def read_one(reader: TextReader, path: str) -> Reading:
    """One photo's reading; a failure becomes a Reading with state "error" and the reason in ``note``."""
    return attempt(lambda: reader.read(path), lambda s, why: Reading("error", seconds=s, note=why), "reading text",
                   "text could not be read")


def find_one(finder: FaceFinder, path: str) -> FaceReading:
    """One photo's faces; a failure becomes a FaceReading with state "error" and the reason in ``note``."""
    return attempt(lambda: finder.find(path), lambda s, why: FaceReading("error", seconds=s, note=why),
                   "looking for faces", "faces could not be found")
