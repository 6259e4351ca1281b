"""The photo app's service object: the model, the index and everything the page, its API and tests do with them.

    backend = Backend("photos.db", root="~/Pictures")      # loads the model and indexes root in a background thread
    backend.start(); backend.wait()
    backend.search_text("猫")                                # [{"path", "score", ...}] (async: await backend.search_text)
    backend.index_folder("/photos/more")                    # raises ReadOnlyError in demo mode

After the image pass, the text in the photos is read in a background thread of its own (``read_text_later``:
index.textpass), then the faces in them are found and grouped into people in the same thread (index.facepass;
nothing while the library's privacy switch, ``set_faces_enabled``, is off), never holding up searches or the image
index: every write to the index stops both first and starts them again after (``text_paused``), and they resume
where they stopped. People are listed, named, merged and corrected here too (``people``, ``rename_person``,
``merge_people``, ``remove_face``, ``regroup_faces``, ``delete_face_data``), each call opening the database briefly.

Demo mode (``--demo``, the conference booth) is enforced here, not in the page: every method that would write a
file or the database raises ``ReadOnlyError``; labelling runs in memory and returns rows for that visitor only;
prompts come from the shipped library only; paths are shown as file names. The booth's database lives in a
folder of its own and holds only the bundled photos (``prepare_booth``).
"""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import sys
import threading
import time
from pathlib import Path

import numpy as np

from .files import Thumbnails

HERE = Path(__file__).resolve().parent.parent
DEMO_ROOT = HERE / "assets" / "demo"
ROOTS_META = "app_roots"   # DB meta key: JSON list of folders added in the Index tab
LABEL_SET = "app"          # the label set the Label tab writes


class ReadOnlyError(PermissionError):
    """A write asked of the read-only demo (the page says "Demo mode: read-only")."""


class NotReadyError(RuntimeError):
    """The model or the index is still loading."""


def default_cache() -> Path:
    """$DCCLIP_CACHE or ~/.cache/dcclip (the app's databases, thumbnails, prompts)."""
    from dcclip_core.config import cache_dir
    return cache_dir()


def library_db(cache: Path) -> Path:
    """The database of plain ``python app.py``: <cache>/library.db (an older <cache>/demo.db, which the same
    command used to write and which may hold folders the user added, is moved there once)."""
    new, old = cache / "library.db", cache / "demo.db"
    if not new.exists() and old.is_file():
        for suffix in ("", "-wal", "-shm", ".faiss"):
            src = Path(str(old) + suffix)
            if src.exists():
                os.replace(src, str(new) + suffix)
    return new


def booth_dir(cache: Path) -> Path:
    """Everything ``--demo`` writes: its own database and thumbnails, apart from the user's library."""
    return cache / "booth"


def prepare_booth(db_path: Path, demo_root: Path = DEMO_ROOT) -> bool:
    """Make sure the booth database holds only the bundled photos: if it names any other file, any added folder,
    any label or correction, it is deleted (with its vector file) and rebuilt by the next index run. True when
    it was reset."""
    if not Path(db_path).is_file():
        return False
    from index import PhotoDB
    root = str(Path(demo_root).resolve())
    try:
        with PhotoDB(db_path, create=False) as db:
            foreign = db.count_images() - len(db.image_ids_under(root))
            dirty = foreign > 0 or json.loads(db.get_meta(ROOTS_META) or "[]") or db.label_set_metas()
    except Exception:
        dirty = True                                  # unreadable: start again
    if not dirty:
        return False
    folder = Path(db_path).parent
    for p in folder.glob(Path(db_path).name + "*"):
        p.unlink()
    shutil.rmtree(folder / "thumbs", ignore_errors=True)
    return True


# ---------------------------------------------------------------------------------------------------
# Models the user can pick
# ---------------------------------------------------------------------------------------------------
def user_models_dir() -> Path:
    """Models the user installed: $DCCLIP_MODELS or <cache>/models (one directory with config.json each)."""
    from dcclip_core.config import user_models_dir
    return user_models_dir()


def installed_models() -> list[str]:
    """Names of the shipped models (assets/models) and the user's (user_models_dir()), shipped first."""
    try:
        import dcclip_core
        names = list(dcclip_core.list_models()) or ["default"]
    except Exception:
        names = ["default"]
    d = user_models_dir()
    if d.is_dir():
        names += [p.parent.name for p in sorted(d.glob("*/config.json")) if p.parent.name not in names]
    return names


def model_path(name: str) -> str:
    """An installed model's name as dcclip_core.load() takes it (a path for the user's models)."""
    d = user_models_dir() / name
    if (d / "config.json").is_file() and not (HERE / "assets" / "models" / name / "config.json").is_file():
        return str(d)
    return name


def model_metrics(name: str = "default") -> dict:
    """assets/models/<name>/metrics.json (or {})."""
    try:
        from dcclip_core import model_dir
        d = Path(model_dir(model_path(name)))
    except Exception:
        d = HERE / "assets" / "models" / name
    try:
        return json.loads((d / "metrics.json").read_text(encoding="utf-8"))
    except Exception:
        return {}


# ---------------------------------------------------------------------------------------------------
# Concurrent text searches, batched
# ---------------------------------------------------------------------------------------------------
class SearchBatcher:
    """Text searches arriving together share one vector-index pass and one row lookup.

    A flat index reads every vector once per query (100 MB at 100k photos); a batch is one
    ``Searcher.search_many`` call, whose answers equal ``Searcher.search``'s. One worker thread takes whatever
    is queued (no waiting to fill a batch) and answers it; when the batch call fails, each search goes
    through ``Searcher.search`` on its own.
    """

    def __init__(self, searcher, max_batch: int = 32):
        import queue
        self.searcher, self.max_batch = searcher, max_batch
        self._q: "queue.Queue" = queue.Queue()
        self._thread: threading.Thread | None = None
        self._start_lock = threading.Lock()

    def submit(self, query: str, k: int = 20, threshold: float | None = None):
        """Queue a search; a concurrent.futures.Future of its results."""
        from concurrent.futures import Future
        if self._thread is None:
            with self._start_lock:
                if self._thread is None:
                    self._thread = threading.Thread(target=self._loop, name="dcclip-search", daemon=True)
                    self._thread.start()
        fut: Future = Future()
        self._q.put((str(query), int(k), threshold, fut))
        return fut

    def search(self, query: str, k: int = 20, threshold: float | None = None) -> list[dict]:
        return self.submit(query, k, threshold).result()

    def _loop(self):
        import queue
        while True:
            items = [self._q.get()]
            while len(items) < self.max_batch:
                try:
                    items.append(self._q.get_nowait())
                except queue.Empty:
                    break
            try:
                results = self._run(items)
            except Exception:
                results = None
            for i, (q, k, t, fut) in enumerate(items):
                if results is not None:
                    fut.set_result(results[i])
                    continue
                try:
                    fut.set_result(self.searcher.search(q, k=k, threshold=t))
                except Exception as e:
                    fut.set_exception(e)

    def _run(self, items) -> list[list[dict]]:
        """One Searcher.search_many call for the batch; each query keeps its own k and threshold."""
        want = max(k for _, k, _, _ in items)
        results = self.searcher.search_many([q for q, *_ in items], k=want)
        return [[r for r in res if t is None or r["score"] >= float(t)][:k]
                for res, (_, k, t, _) in zip(results, items)]


# ---------------------------------------------------------------------------------------------------
# The service
# ---------------------------------------------------------------------------------------------------
class Backend:
    """Holds the model and the searcher; loads, warms up and (re)indexes a root in a background thread."""

    def __init__(self, db_path: str | Path, model=None, searcher=None, root: str | Path | None = None,
                 demo: bool = False, thumb_dir: str | Path | None = None):
        self.db_path = str(db_path)
        self.model = model
        self.searcher = searcher
        self.root = Path(root).resolve() if root else None
        self.demo = bool(demo)
        self.thumbs = Thumbnails(Path(thumb_dir) if thumb_dir else default_cache() / "thumbs")
        self.state = "ready" if searcher is not None else "starting"
        self.done = 0
        self.total = 0
        self.reembedding = 0       # photos of the library embedded by another model, being re-embedded at start-up
        self.error = ""
        self.index_stats: dict = {}
        self._write_lock = threading.Lock()  # one index / label write at a time
        self._thread: threading.Thread | None = None
        self.started = time.time()
        self.ready_at: float | None = time.time() if searcher is not None else None
        self._batcher: SearchBatcher | None = None
        self.text_done = 0         # the background text pass (read_text_later): photos read so far of text_total
        self.text_total = 0
        self.text_error = ""       # why the last text pass failed ("" when it did not)
        self._text_thread: threading.Thread | None = None    # the background worker: the text pass, then faces
        self._text_stop = threading.Event()
        self._text_lock = threading.Lock()
        self._phase: str | None = None   # what the background worker does now: "text", "faces" or None
        self.faces_done = 0        # the background face pass (after the text pass): photos looked at of faces_total
        self.faces_total = 0
        self.faces_error = ""      # why the last face pass failed ("" when it did not)
        self._face_finder = None   # dcclip_core.faces.FaceFinder, made once (loading dlib's models takes ~1 s)
        self._people_lock = threading.Lock()    # one person edit at a time

    @property
    def thumb_dir(self) -> Path:
        return self.thumbs.dir

    # -- start-up --------------------------------------------------------------------------------
    def start(self) -> "Backend":
        if self.searcher is None and self._thread is None:
            self._thread = threading.Thread(target=self._run, name="dcclip-startup", daemon=True)
            self._thread.start()
        return self

    def wait(self, timeout: float | None = None) -> bool:
        if self._thread is not None:
            self._thread.join(timeout)
        return self.state == "ready"

    def _progress(self, done, total, path=None):
        self.done, self.total = int(done), int(total)

    def _run(self):
        try:
            self.state = "loading"
            model = self.model
            if model is None:
                import dcclip_core
                model = dcclip_core.load()
            if hasattr(model, "warmup"):
                model.warmup()
            self.model = model
            from index import Searcher
            if Path(self.db_path).is_file():
                # an existing library is searchable while it is re-scanned (or re-embedded for a new model): the
                # searcher picks up each batch the indexer commits
                self.searcher = Searcher(self.db_path, model=model)
            roots = self._startup_roots(model)
            if roots:
                self.state = "indexing"
                Path(self.db_path).parent.mkdir(parents=True, exist_ok=True)
                self.index_stats = self._index_roots(roots, model)
            if self.searcher is None:
                self.searcher = Searcher(self.db_path, model=model)
            self.reembedding = 0
            self.ready_at = time.time()
            self.state = "ready"
        except Exception as e:  # shown in the status line; the page stays up
            self.error = str(e) or type(e).__name__
            self.state = "error"
            return
        self.read_text_later()     # photos not read yet; lines the loaded model has not embedded (a new model)
        self._prewarm_thumbnails()

    def _startup_roots(self, model) -> list[str]:
        """The folders to (re)index at start: the start-up root, and, when the library holds photos embedded by
        another model (the shipped model changed, or another was used before), every folder added in the Index
        tab too, so all of them are re-embedded, not only the start-up root's. Sets ``reembedding`` (how many)."""
        roots = [str(self.root)] if self.root is not None else []
        if not Path(self.db_path).is_file():
            return roots
        from index import PhotoDB
        from index.indexer import model_identity
        try:
            mhash = model_identity(model)[1]
            with PhotoDB(self.db_path, create=False) as db:
                stale = db.count_images() - db.count_images(mhash)
        except Exception:
            return roots
        self.reembedding = max(0, int(stale))
        if stale > 0:
            roots += [r for r in self.roots() if r not in roots and Path(r).is_dir()]
        return roots

    def _index_roots(self, roots: list[str], model) -> dict:
        """build_index over each root in turn; ``done`` / ``total`` count over all of them (a later root's total
        is its photo count in the database until its scan says). The first root's stats are returned (the
        start-up root's, as before), the others' under "more"."""
        from index import PhotoDB, build_index
        known = []
        try:
            with PhotoDB(self.db_path, create=False) as db:
                known = [len(db.image_ids_under(r)) for r in roots]
        except Exception:
            known = [0] * len(roots)
        first, more, offset = {}, [], 0
        for i, root in enumerate(roots):
            rest = sum(known[i + 1:])

            def progress(done, total, path=None, _off=offset, _rest=rest):
                self.done, self.total = _off + int(done), _off + int(total) + _rest
            try:
                stats = build_index(root, self.db_path, model=model, progress=progress) or {}
            except Exception:
                if i == 0:
                    raise                              # the start-up root: as before, the start-up fails
                continue                               # an added folder that cannot be read now: keep going
            offset += int(stats.get("files") or 0)
            if i == 0:
                first = stats
            else:
                more.append(stats)
        return {**first, "more": more} if more else first

    def _prewarm_thumbnails(self, limit: int = 2000):
        """Make the thumbnails of a small root ahead of the first search (the demo: 16 photos)."""
        if self.root is None:
            return
        from dcclip_core.preprocess import IMAGE_EXTENSIONS
        try:
            files = []
            for p in self.root.rglob("*"):
                if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file():
                    files.append(p)
                    if len(files) > limit:
                        return
            for p in files:
                self.thumbs.make(str(p))
        except Exception:
            pass

    def require_ready(self) -> None:
        if self.state != "ready" or self.searcher is None:
            raise NotReadyError(self.state)

    @property
    def searchable(self) -> bool:
        """Searches can run: ready, or an existing library being re-scanned / re-embedded at start-up (results
        then cover the photos embedded with the loaded model so far)."""
        return self.searcher is not None and self.state in ("ready", "indexing")

    def require_searchable(self) -> None:
        if not self.searchable:
            raise NotReadyError(self.state)

    def require_writable(self) -> None:
        """Raise ReadOnlyError in demo mode (every write path calls this first)."""
        if self.demo:
            raise ReadOnlyError("demo mode is read-only")

    # -- the background passes: text in photos, then faces ------------------------------------------------
    @property
    def background_running(self) -> bool:
        """The background worker runs (the text pass or the face pass after it)."""
        t = self._text_thread
        return t is not None and t.is_alive()

    @property
    def text_running(self) -> bool:
        """The text pass is reading photos (or embedding their lines for the loaded model)."""
        return self.background_running and self._phase == "text"

    @property
    def faces_running(self) -> bool:
        """The face pass is looking for faces (after the text pass, in the same background worker)."""
        return self.background_running and self._phase == "faces"

    def read_text_later(self) -> None:
        """Start the background worker unless one runs: first the text pass (index.textpass.read_texts reads the
        photos whose text was not read yet and embeds the lines the loaded model has not, after a model change),
        then the face pass (index.facepass.find_faces: the photos whose faces were not looked for, grouped into
        people; nothing while the library's privacy switch is off). One photo at a time: searches and thumbnails
        keep the other core. The booth's own database is read too: that is the app building it, not a visitor
        writing."""
        with self._text_lock:
            if self.background_running or self.any_model() is None or not Path(self.db_path).is_file():
                return
            self._text_stop = threading.Event()
            self.text_done = self.text_total = 0
            self.faces_done = self.faces_total = 0
            self._phase = "text"
            self._text_thread = threading.Thread(target=self._read_texts, args=(self._text_stop, self.any_model()),
                                                 name="dcclip-text", daemon=True)
            self._text_thread.start()

    def _read_texts(self, stop: threading.Event, model) -> None:
        from index.textpass import read_texts

        def progress(done, total, path=None):
            self.text_done, self.text_total = int(done), int(total)
        try:
            try:
                read_texts(self.db_path, model=model, progress=progress, stop=stop, workers=1)
                self.text_error = ""
            except Exception as e:              # shown in the Index tab; the photos stay searchable by image
                self.text_error = str(e) or type(e).__name__
            if not stop.is_set():
                self._find_faces(stop)
        finally:
            self._phase = None

    def _find_faces(self, stop: threading.Event) -> None:
        """The face pass (in the background worker, after the text pass); resumable, stoppable like it."""
        self._phase = "faces"

        def progress(done, total, path=None):
            self.faces_done, self.faces_total = int(done), int(total)
        try:
            from index.facepass import find_faces
            if not self.faces_enabled():
                self.faces_error = ""
                return
            if self._face_finder is None:
                from dcclip_core.faces import FaceFinder
                self._face_finder = FaceFinder()
            find_faces(self.db_path, finder=self._face_finder, progress=progress, stop=stop, workers=1)
            self._name_demo_people()
            self.faces_error = ""
        except Exception as e:                  # shown in the Index and People tabs; search is not touched
            self.faces_error = str(e) or type(e).__name__

    def _name_demo_people(self) -> None:
        """The people in the bundled demo photos get their names (assets/demo/people.json) once their faces are
        found and while nobody has named them, so typing "Grace Hopper" works in the booth too (the app
        building its own database, like the passes: not a visitor writing)."""
        from index import people
        from index.db import PhotoDB
        known = json.loads((DEMO_ROOT / "people.json").read_text(encoding="utf-8"))
        names = {str(DEMO_ROOT / k): v for k, v in known.items() if not k.startswith("_")}
        with PhotoDB(self.db_path, create=False) as db:
            people.name_from_photos(db, names)

    def stop_text(self, timeout: float = 120.0) -> None:
        """Stop the background worker (text or face pass) after the photo it is on (the next read_text_later
        resumes where it stopped)."""
        with self._text_lock:
            self._text_stop.set()
            t = self._text_thread
        if t is not None:
            t.join(timeout)

    def wait_text(self, timeout: float | None = None) -> bool:
        """Wait for the background worker (the text pass and the face pass after it) to end; True when none
        runs."""
        t = self._text_thread
        if t is not None:
            t.join(timeout)
        return not self.background_running

    wait_background = wait_text

    @contextlib.contextmanager
    def text_paused(self):
        """A write to the index (image pass, removal, model change, regrouping people) with the background passes
        stopped: the image pass comes first, and no line or face is written for a photo being removed. The passes
        start again after the block and resume where they stopped."""
        self.stop_text()
        try:
            yield
        finally:
            self.read_text_later()

    def text_status(self) -> dict:
        """The text pass now: {"running", "done", "total" (photos of this run), "error"}."""
        return {"running": self.text_running, "done": self.text_done, "total": self.text_total,
                "error": self.text_error}

    def text_of(self, path: str) -> dict:
        """What the text pass read in a photo (index.Searcher.text_of: {"state", "note", "lines"}); {} when the
        searcher cannot say (not searchable yet, a photo not in the index)."""
        try:
            self.require_searchable()
            return dict(self.searcher.text_of(path))
        except Exception:
            return {}

    def text_stats(self) -> dict:
        """What the text pass has read (index.Searcher.text_stats: {"photos": {state: n}, "with_text", "lines",
        "pending", "errors"}); {} when the searcher cannot say."""
        try:
            return dict(self.searcher.text_stats())
        except Exception:
            return {}

    def text_problems(self, limit: int = 1000) -> list[dict]:
        """[{"path" (as shown), "state" ("error" / "capped"), "reason"}] of photos whose text could not be read or
        was cut at the caps, newest first."""
        return [{"path": self.shown_path(e.get("path", "")), "state": e.get("state"),
                 "reason": str(e.get("reason") or "")} for e in (self.text_stats().get("errors") or [])[:limit]]

    # -- faces and people (the face pass, the People tab) -----------------------------------------------
    def _db(self, write: bool = False):
        """The library database, opened for one call (never held: the face pass writes beside it)."""
        from index import PhotoDB
        if not write and not Path(self.db_path).is_file():
            raise FileNotFoundError(self.db_path)
        return PhotoDB(self.db_path, create=False)

    def faces_enabled(self) -> bool:
        """The library's privacy switch: whether faces are looked for in its photos (on unless turned off)."""
        try:
            with self._db() as db:
                return bool(db.faces_enabled())
        except Exception:
            return True

    def set_faces_enabled(self, on: bool) -> bool:
        """Turn looking for faces on (the face pass starts, after the text pass if that still runs) or off (the
        pass stops after the photo it is on; what it found stays until ``delete_face_data``). Stored in the
        library's database. Returns the switch as it is now."""
        self.require_writable()
        on = bool(on)
        with self.text_paused():               # stops the worker; it starts again with the new setting
            with self._db(write=True) as db:
                db.set_faces_enabled(on)
        return on

    def delete_face_data(self) -> int:
        """Forget every face, person and name of the library, with the cached face thumbnails, and turn looking
        for faces off (else the next pass would find them all again). Returns the faces deleted."""
        self.require_writable()
        with self._people_lock, self.text_paused():
            with self._db(write=True) as db:
                db.set_faces_enabled(False)
                n = int(db.delete_face_data())
            self._forget_face_thumbs()
        return n

    def face_status(self) -> dict:
        """The face pass now: {"running", "done", "total" (photos of this run), "error", "enabled"}."""
        return {"running": self.faces_running, "done": self.faces_done, "total": self.faces_total,
                "error": self.faces_error, "enabled": self.faces_enabled()}

    def face_generation(self) -> int:
        """Changes with every face or person write (the People tab refreshes when it does); -1 when unknown."""
        try:
            with self._db() as db:
                return int(db.face_generation())
        except Exception:
            return -1

    def face_stats(self) -> dict:
        """What the face pass has found (index.Searcher.face_stats: {"enabled", "photos": {state: n}, "with_faces",
        "faces", "people", "named", "pending", "errors": [{"path", "state", "reason", "time"}]}); {} when the
        searcher cannot say."""
        try:
            return dict(self.searcher.face_stats())
        except Exception:
            return {}

    def face_problems(self, limit: int = 1000) -> list[dict]:
        """[{"path" (as shown), "state" ("error" / "capped"), "reason"}] of photos the face pass could not look at
        or whose crowd was cut at the cap, newest first."""
        return [{"path": self.shown_path(e.get("path", "")), "state": e.get("state"),
                 "reason": str(e.get("reason") or "")} for e in (self.face_stats().get("errors") or [])[:limit]]

    def people(self) -> list[dict]:
        """[{"id", "name" (None until named), "faces", "photos", "cover" (a face id)}] of every person, most faces
        first (index.people.people)."""
        try:
            with self._db() as db:
                return db.people_rows()          # not index.people.people: its paths per person are not shown here
        except FileNotFoundError:
            return []

    def person(self, person_id: int) -> dict | None:
        """{"id", "name", "faces"} of a person (None when there is no such person)."""
        with self._db() as db:
            return db.person(int(person_id))

    def person_photos(self, person_id: int) -> list[str]:
        """Paths of the photos a person is in (by path)."""
        with self._db() as db:
            return list(db.person_paths(int(person_id)))

    def person_faces(self, person_id: int) -> list[dict]:
        """[{"id", "image_id", "path", "x0", "y0", "x1", "y1", "quality", "by_hand"}] of a person's faces, best
        first."""
        with self._db() as db:
            return list(db.faces_of_person(int(person_id)))

    def rename_person(self, person_id: int, name: str | None) -> dict:
        """Name a person (Chinese, English, any script; empty removes the name): searches for the name find
        their photos. Raises index.people.PersonNotFoundError, ValueError for a name over 80 characters."""
        self.require_writable()
        from index import people as P
        with self._people_lock, self._db(write=True) as db:
            return P.rename(db, int(person_id), name)

    def merge_people(self, keep: int, other: int) -> dict:
        """Make ``other`` part of ``keep`` (one person after all; ``keep``'s name stays, or ``other``'s is taken).
        The face pass pauses meanwhile (it may be adding faces to either)."""
        self.require_writable()
        from index import people as P
        with self._people_lock, self.text_paused(), self._db(write=True) as db:
            return P.merge(db, int(keep), int(other))

    def remove_face(self, face_id: int) -> int:
        """"Not this person": take a face out of its person into a person of its own (it never joins that person
        again); returns its new person's id."""
        self.require_writable()
        from index import people as P
        with self._people_lock, self._db(write=True) as db:
            return int(P.move_face(db, int(face_id), None))

    def regroup_faces(self) -> dict:
        """Group the faces into people again from scratch (index.people.recluster), keeping names and every face
        a person placed by hand; the face pass pauses meanwhile. {"faces", "people", "joined_named"}."""
        self.require_writable()
        from index import people as P
        with self._people_lock, self.text_paused(), self._db(write=True) as db:
            return P.recluster(db)

    # face thumbnails: cached JPEGs beside the photo thumbnails, served by the same /thumb/<key>.jpg route; their
    # keys start with FACE_KEY (hex, so the route takes them), so they can be found again and deleted
    FACE_KEY = "face"
    FACE_THUMB = 200            # px a side
    FACE_DECODE = 768           # the photo is decoded this big (short side) to cut the face from

    def _face_key(self, row: dict) -> str | None:
        import hashlib
        try:
            st = os.stat(row["path"])
        except OSError:
            return None
        box = ",".join(f"{float(row[k]):.4f}" for k in ("x0", "y0", "x1", "y1"))
        h = hashlib.sha1(f"{Path(row['path']).resolve()}|{st.st_mtime_ns}|{st.st_size}|{box}|{self.FACE_THUMB}"
                         .encode()).hexdigest()
        return self.FACE_KEY + h[:40 - len(self.FACE_KEY)]

    def face_thumb(self, face_id: int, row: dict | None = None) -> Path | None:
        """A square JPEG of one face (made once, dcclip_core.faces.face_thumbnail from the photo decoded at
        ~768 px, cached under the thumbnail folder); None when the face or its photo is gone. ``row``: the face's
        row when the caller has it (``person_faces``, ``face_row``)."""
        from dcclip_core.atomic import atomic_path
        from dcclip_core.faces import face_thumbnail
        from dcclip_core.preprocess import load_image
        if row is None:
            try:
                with self._db() as db:
                    row = db.face_row(int(face_id))
            except Exception:
                row = None
        if not row:
            return None
        key = self._face_key(row)
        if key is None:
            return None
        out = self.thumbs.file(key)
        if out.exists():
            return out
        try:
            im = load_image(row["path"], target_size=self.FACE_DECODE)
            thumb = face_thumbnail(im, (row["x0"], row["y0"], row["x1"], row["y1"]), self.FACE_THUMB)
            out.parent.mkdir(parents=True, exist_ok=True)
            with atomic_path(out) as tmp:
                thumb.convert("RGB").save(tmp, "JPEG", quality=88)
        except Exception:
            return None
        return out

    def face_thumb_url(self, face_id: int, origin: str, row: dict | None = None) -> str:
        """The URL of a face's thumbnail (GET /thumb/<key>.jpg; a 404 URL when it cannot be made)."""
        f = self.face_thumb(face_id, row)
        return self.thumbs.url_of_key(f.stem if f is not None else None, origin)

    def _forget_face_thumbs(self) -> int:
        """Delete every cached face thumbnail; returns how many."""
        n = 0
        for f in (self.thumbs.dir / self.FACE_KEY[:2]).glob(self.FACE_KEY + "*.jpg"):
            with contextlib.suppress(OSError):
                f.unlink()
                n += 1
        return n

    def faces_of(self, path: str) -> dict:
        """The faces in a photo (index.Searcher.faces_of: {"state": "none" / "faces" / "capped" / "error" / None
        (not looked at yet), "note", "faces": [{"id", "box": [x0, y0, x1, y1] pixels of the upright photo, "person",
        "name"}]}); {} when the searcher cannot say (not searchable yet, a photo not in the index)."""
        try:
            self.require_searchable()
            return dict(self.searcher.faces_of(path))
        except Exception:
            return {}

    def model_info(self) -> dict:
        m = self.any_model()
        try:
            return dict(m.info) if m is not None else {}
        except Exception:
            return {}

    def stats(self) -> dict:
        """The index's counts right now (read from the database on every call: never stale)."""
        if self.searcher is None:
            return {}
        try:
            return dict(self.searcher.stats())
        except Exception as e:
            return {"error": str(e)}

    def status(self) -> dict:
        st = {"state": self.state, "done": self.done, "total": self.total, "error": self.error,
              "images": None, "model_id": None, "torch_loaded": "torch" in sys.modules,
              "searchable": self.searchable, "reembedding": self.reembedding, "text": self.text_status(),
              "faces": self.face_status()}
        if self.state == "ready":
            s = self.stats()
            st["images"] = s.get("images")
            st["errors"] = s.get("errors")
            st["model_id"] = s.get("model_id") or self.model_info().get("id")
            st["ready_seconds"] = round((self.ready_at or time.time()) - self.started, 2)
        return st

    # -- folders -----------------------------------------------------------------------------------
    def roots(self, read_db: bool = True) -> list[str]:
        """The folders indexed into this DB (the start-up root + folders added in the Index tab);
        ``read_db=False``: the start-up root only (the page is built before the index package loads)."""
        out = [str(self.root)] if self.root is not None else []
        if not read_db:
            return out
        try:
            from index import PhotoDB
            if Path(self.db_path).exists():
                with PhotoDB(self.db_path, create=False) as db:
                    for r in json.loads(db.get_meta(ROOTS_META) or "[]"):
                        if r not in out:
                            out.append(r)
        except Exception:
            pass
        return out

    def _remember_root(self, root: str) -> None:
        from index import PhotoDB
        with PhotoDB(self.db_path) as db:
            cur = json.loads(db.get_meta(ROOTS_META) or "[]")
            if root not in cur:
                db.set_meta(ROOTS_META, json.dumps(cur + [root], ensure_ascii=False))

    def shown_path(self, path: str) -> str:
        """A path as the page may show it: the file name only in demo mode."""
        return Path(str(path)).name if self.demo else str(path)

    def bad_files(self, limit: int = 1000) -> list[dict]:
        """[{"path" (as shown), "reason"}] of the unreadable files, newest first."""
        s = self.stats()
        return [{"path": self.shown_path(e.get("path", "")), "reason": str(e.get("reason", ""))}
                for e in (s.get("error_list") or [])[:limit]]

    def index_folder(self, root: str, progress=None) -> dict:
        """Index (or re-scan) one folder into this DB with the loaded model; progress(done, total, path)."""
        self.require_writable()
        self.require_ready()
        from index import build_index
        root = str(Path(root).expanduser().resolve())
        if not Path(root).is_dir():
            raise FileNotFoundError(root)
        with self._write_lock, self.text_paused():        # the folder is remembered before the text pass goes on
            res = build_index(root, self.db_path, model=self.any_model(), progress=progress) or {}
            if self.root is None or root != str(self.root):
                self._remember_root(root)
        return res

    def remove_root(self, root: str) -> dict:
        """Take a folder out of the index (rows, vectors, labels, recorded errors); files stay on disk."""
        self.require_writable()
        from index import PhotoDB, remove_paths
        with self._write_lock, self.text_paused():
            res = remove_paths(self.db_path, [root])
            with PhotoDB(self.db_path) as db:
                cur = [r for r in json.loads(db.get_meta(ROOTS_META) or "[]") if r != root]
                db.set_meta(ROOTS_META, json.dumps(cur, ensure_ascii=False))
            if self.root is not None and str(self.root) == root:
                self.root = None      # the start-up folder: not indexed again until the next --root
        return res

    # -- photos ----------------------------------------------------------------------------------
    def any_model(self):
        """The loaded model (the searcher's when the backend was given a searcher)."""
        return self.model if self.model is not None else getattr(self.searcher, "model", None)

    def find_path(self, name: str) -> str | None:
        """An indexed photo's path from its path (not in demo mode) or its file name."""
        name = str(name or "").strip()
        if not name:
            return None
        from index import PhotoDB
        try:
            with PhotoDB(self.db_path, create=False) as db:
                if not self.demo and Path(name).is_absolute() and db.image_by_path(name):
                    return name
                base = Path(name).name
                paths = db.paths_ending_with(base)
        except Exception:
            return None
        return next((p for p in paths if Path(p).name == base), None)

    def photo_row(self, path: str) -> dict:
        """The index row of a photo ({} when it is not indexed)."""
        from index import PhotoDB
        try:
            with PhotoDB(self.db_path, create=False) as db:
                return db.image_by_path(str(path)) or {}
        except Exception:
            return {}

    def photo_path(self, image_id: int) -> str | None:
        """The file of an indexed photo by its id (the full-size route's only way to name a file)."""
        row = self._image_row(image_id)
        return str(row["path"]) if row else None

    def _image_row(self, image_id: int) -> dict:
        """The index row of a photo by its id ({} when it is not indexed)."""
        from index import PhotoDB
        try:
            with PhotoDB(self.db_path, create=False) as db:
                return db.image_by_id(int(image_id)) or {}
        except Exception:
            return {}

    def duplicates_of(self, path: str) -> list[dict]:
        """The duplicates of one photo under the index's one definition (same bytes, or the same picture
        resized / recompressed): [{"path", "score", "match"}]."""
        self.require_searchable()
        return list(self.searcher.duplicates_of(path))

    # -- why a photo matches ------------------------------------------------------------------------
    def concept_bank(self):
        """The loaded model's concept bank (dcclip_core.concepts.ConceptBank), None for models without one."""
        try:
            return getattr(self.any_model(), "concept_bank", None)
        except Exception:
            return None

    def _heat_concepts(self, bank, photo_id: int, concepts, top: int) -> tuple[list[int], list[float]]:
        """(bank columns, weights) of the concepts a heatmap shows: those given (a result's ``why`` entries,
        concept ids or columns; positive shares only), else the photo's own strongest stored concepts."""
        cols, weights = [], []
        if concepts:
            for c in concepts:
                w = 1.0
                if isinstance(c, dict):
                    if "concept" not in c:                              # the text line a result matched
                        continue
                    c, w = c.get("concept"), float(c.get("share", 1.0) or 0.0)
                col = int(c) if isinstance(c, (int, np.integer)) else bank.column(c)
                if col is not None and 0 <= col < len(bank.concepts) and w > 0 and col not in cols:
                    cols.append(col)
                    weights.append(w)
            return cols[:top], weights[:top]
        from index import PhotoDB
        with PhotoDB(self.db_path, create=False) as db:
            ids, w, _ = db.concepts_of([int(photo_id)]).get(int(photo_id), ((), (), None))
        return [int(i) for i in ids[:top]], [float(x) for x in w[:top]]

    def why_heatmap(self, photo_id: int, lang: str = "en", concepts=None, max_side: int = 640, top: int = 3):
        """Where in a photo the concepts that make it match are: (the photo, at most ``max_side`` px a side, with
        their class-activation maps (weighted by share) laid over it in warm colours; a caption naming them in
        ``lang``). ``concepts``: a search result's ``why`` entries (or concept ids / bank columns); None: the
        photo's own strongest concepts. Computed on demand for this one photo, which is named by its index id
        only; nothing is written (demo mode too). Raises NotReadyError before the model has loaded,
        FileNotFoundError for an id not in the index, ValueError for a model without concepts."""
        from .i18n import is_zh, tr
        if self.any_model() is None:
            raise NotReadyError(self.state)
        bank = self.concept_bank()
        if bank is None:
            raise ValueError(tr(lang, "why_no_concepts"))
        img, names = self._heat(bank, photo_id, lang, concepts, max_side, top)
        if not names:
            return img, tr(lang, "why_heat_none")
        return img, tr(lang, "why_heat", names=("、" if is_zh(lang) else ", ").join(names))

    def _why_photo(self, photo_id: int, max_side: int):
        """An indexed photo, upright (EXIF), decoded for a why picture at least ``max_side`` px (224 at least:
        what the heatmap needs); FileNotFoundError for an id not in the index."""
        from dcclip_core.preprocess import load_image
        path = self.photo_path(int(photo_id))
        if path is None:
            raise FileNotFoundError(f"photo {int(photo_id)}")
        return load_image(path, target_size=max(int(max_side), 224))

    def _heat(self, bank, photo_id: int, lang: str, concepts, max_side: int, top: int):
        """(the photo at most ``max_side`` px a side with the heatmap of ``concepts`` over it, their names in
        ``lang``); no names: none of them has a place in the photo, which is returned as it is."""
        from .i18n import concept_name
        from .why import overlay
        photo = self._why_photo(photo_id, max_side)                         # decoded once
        cols, weights = self._heat_concepts(bank, photo_id, concepts, top)
        maps = self.any_model().heatmap(photo, cols) if cols else np.zeros((0, 1, 1), np.float32)
        keep = [j for j in range(len(cols)) if float(maps[j].max()) > 0]    # colour / attribute concepts: no map
        photo.thumbnail((int(max_side), int(max_side)))
        if not keep:
            return photo, []
        w = np.asarray([weights[j] for j in keep], np.float32)
        cam = np.tensordot(w / w.sum(), maps[keep], axes=1)                 # (h, w)
        return overlay(photo, cam), [concept_name(bank.concepts[cols[j]], lang) for j in keep]

    def why_picture(self, photo_id: int, lang: str = "en", why=None, max_side: int = 640):
        """The detail view's picture of a search result: (why_heatmap of its ``why`` concepts, with a box drawn
        around the text line it matched (its ``why`` entry with "text" and "box", pixels of the upright photo) and
        around the faces of the people the query named (its ``why`` entries with "person"; the photo's other faces
        in grey), a caption saying all of it in ``lang``). A model without concepts gets the plain photo with the
        boxes; without a text line or a person this is why_heatmap. In memory, like the heatmap."""
        from .i18n import is_zh, tr
        from .why import draw_box
        said = next((w for w in why or [] if isinstance(w, dict) and w.get("text") and w.get("box")), None)
        persons = [w for w in why or [] if isinstance(w, dict) and "person" in w]
        row = self._image_row(photo_id) if (said or persons) else {}
        width = row.get("width")
        if not width:
            return self.why_heatmap(photo_id, lang, concepts=why, max_side=max_side)
        if self.any_model() is None:
            raise NotReadyError(self.state)
        bank = self.concept_bank()
        if bank is not None:
            img, names = self._heat(bank, photo_id, lang, why, max_side, 3)
        else:
            img, names = self._why_photo(photo_id, max_side), []
            img.thumbnail((int(max_side), int(max_side)))
        sep = "、" if is_zh(lang) else ", "
        scale = img.width / float(width)
        parts = [tr(lang, "why_heat", names=sep.join(names))] if names else []
        if said:
            img = draw_box(img, said["box"], scale)
            parts.append(tr(lang, "why_box", text=said["text"]))
        if persons:
            img, shown = self._draw_people(img, str(row.get("path") or ""), persons, scale, lang)
            if shown:
                parts.append(tr(lang, "why_face", names=sep.join(shown)))
        return img, " · ".join(parts)

    def _draw_people(self, img, path: str, persons: list[dict], scale: float, lang: str):
        """(``img`` with the photo's faces boxed: the people in ``persons`` (a result's ``why`` entries) in
        magenta with their names, the other faces in grey with theirs when named; the names boxed in magenta)."""
        from .i18n import tr
        from .why import FACE, FACE_OTHER, draw_face
        wanted = {int(w["person"]) for w in persons if w.get("person") is not None}
        faces = [f for f in (self.faces_of(path).get("faces") or []) if f.get("box")] if path else []
        if not any(f.get("person") in wanted for f in faces):     # the faces cannot be read: the why's boxes
            faces = [{"box": w["box"], "person": w.get("person"), "name": w.get("name")} for w in persons
                     if w.get("box")]
        shown = []
        for f in sorted(faces, key=lambda f: f.get("person") in wanted):        # the named people on top
            hit = f.get("person") in wanted
            name = (f.get("name") or tr(lang, "person_unnamed")) if hit else f.get("name")
            img = draw_face(img, f["box"], scale, name, FACE if hit else FACE_OTHER)
            if hit and name not in shown:
                shown.append(name)
        return img, shown

    # -- models ----------------------------------------------------------------------------------
    def switch_model(self, name: str) -> dict:
        """Load another installed model and search with it; photos embedded by another model are found
        again only after a re-scan (build_index re-embeds them); the text pass embeds the photos' text lines for
        it in the background. Returns vectors/images counts."""
        self.require_writable()
        import dcclip_core
        from index import PhotoDB, Searcher
        model = dcclip_core.load(model_path(name))
        if hasattr(model, "warmup"):
            model.warmup()
        with self._write_lock, self.text_paused():
            self.model = model
            self.searcher = Searcher(self.db_path, model=model)
            self._batcher = None
        info = dict(model.info)
        with PhotoDB(self.db_path, create=False) as db:
            n_vec = db.vector_stats(info["hash"])[0]
            n_img = db.count_images()
        return {"model_id": info.get("id"), "vectors": n_vec, "images": n_img}

    # -- search --------------------------------------------------------------------------------
    def run_search(self, query=None, image=None, k=20, threshold=None, **filters):
        """Text or image search; filters (folder, date_from, date_to, and for text: text — True for photos with text
        in them, a string for photos whose text contains it) are passed on only when set."""
        self.require_searchable()
        filters = {key: v for key, v in filters.items() if v}
        if image is not None:
            return self.searcher.search_image(image, k=int(k), threshold=threshold, **filters)
        if not filters and self.batcher() is not None:
            return self.batcher().search(query, k=int(k), threshold=threshold)
        return self.searcher.search(query, k=int(k), threshold=threshold, **filters)

    def batcher(self) -> SearchBatcher | None:
        """The batcher over the current searcher (None for searchers without ``search_many``, e.g. stubs)."""
        if not hasattr(self.searcher, "search_many"):
            return None
        if self._batcher is None or self._batcher.searcher is not self.searcher:
            self._batcher = SearchBatcher(self.searcher)
        return self._batcher

    async def search_text(self, query: str, k=20, threshold=None, **filters) -> list[dict]:
        """run_search for the event loop: a text search without filters waits on the batcher's thread
        (no worker thread per request); anything else runs in a worker thread."""
        import asyncio
        self.require_searchable()
        filters = {key: v for key, v in filters.items() if v}
        if not filters and self.batcher() is not None:
            return await asyncio.wrap_future(self.batcher().submit(query, int(k), threshold))
        return await asyncio.to_thread(self.run_search, query=query, k=k, threshold=threshold, **filters)

    # -- thumbnails --------------------------------------------------------------------------------
    def thumb_url(self, path: str, origin: str) -> str:
        return self.thumbs.url(path, origin)

    async def thumb_urls(self, paths: list[str], origin: str) -> list[str]:
        """Thumbnail URLs of photos; thumbnails still to be made are made in a worker thread (decoding photos
        must not hold up the event loop)."""
        import asyncio
        keys = [self.thumbs.ready(p) for p in paths]
        if all(keys):
            return [self.thumbs.url_of_key(key, origin) for key in keys]
        return await asyncio.to_thread(lambda: [self.thumbs.url(p, origin) for p in paths])

    # -- labels ----------------------------------------------------------------------------------
    def prompt_dirs(self) -> list[Path]:
        """Where prompts are read from: the shipped ones only in demo mode (a booth never shows a user's)."""
        from dcclip_core.prompts import SHIPPED_DIR, library_dirs
        return [SHIPPED_DIR] if self.demo else library_dirs()

    def prompts(self, check: bool = True) -> list[dict]:
        """Summaries of the prompts this page may use (``compatible`` with the loaded model when ``check``)."""
        from dcclip_core.prompts import list_prompts
        return list_prompts(dirs=self.prompt_dirs(), model=self.any_model() if check else None)

    def _prompt_file(self, name: str) -> Path:
        """A prompt's file by name, looked up only where this page may read prompts."""
        from dcclip_core.prompts import PromptError, SUFFIX
        for d in self.prompt_dirs():
            p = Path(d) / f"{name}{SUFFIX}"
            if p.is_file():
                return p
        raise PromptError(f"no prompt named {name!r}")

    def load_prompt(self, name: str):
        from dcclip_core.prompts import load_prompt
        return load_prompt(self._prompt_file(name), model=self.any_model())

    def save_prompt(self, prompt, name: str) -> Path:
        """Save a learned prompt into the user's library (FileExistsError when the name is taken)."""
        self.require_writable()
        from training.prompts.api import library_path
        dst = library_path(name)
        if dst.exists():
            raise FileExistsError(name)
        prompt.meta["name"] = name
        prompt.save(dst)
        return dst

    def import_prompt(self, src: str, name: str) -> Path:
        self.require_writable()
        from dcclip_core.prompts import import_prompt
        return import_prompt(src, name=name, model=self.any_model())

    def export_prompt(self, name: str) -> Path:
        """A copy of a prompt (+ its metadata as JSON) in a fresh temp folder, to download."""
        import tempfile
        from dcclip_core.prompts import export_prompt
        return export_prompt(self._prompt_file(name), Path(tempfile.mkdtemp(prefix="dcclip-prompt-")))

    def delete_prompt(self, name: str) -> None:
        self.require_writable()
        from dcclip_core.prompts import delete_prompt
        delete_prompt(name)

    # -- relevance -------------------------------------------------------------------------------
    def relevance(self):
        """The loaded model's relevance calibration (dcclip_core.relevance), loaded once per model."""
        from dcclip_core.relevance import load_relevance
        m = self.any_model()
        key = id(m)
        if getattr(self, "_rel_key", None) != key:
            self._rel, self._rel_key = load_relevance(m), key
        return self._rel

    def level(self, result: dict | float) -> int | None:
        """How well a result matches, for people: 3 strong, 2 good, 1 weak, 0 no good match (None: the model has
        no calibration, show no level). A search result is judged by its ``level_score`` (index.Searcher: for a
        text-space model the decorrelated cosine), a bare number as it is."""
        score = result.get("level_score", result["score"]) if isinstance(result, dict) else result
        lv = self.relevance().level(float(score))
        return None if lv is None else int(lv)

    def certainty(self, row: dict) -> float:
        """0..1: how sure a label is. A correction is certain; a zero-shot label's certainty is the calibrated
        relevance of its cosine; a prompt's label (no cosine) its probability."""
        if row.get("source") == "manual":
            return 1.0
        if row.get("cosine") is not None:
            pct = self.relevance().percent(float(row["cosine"]))
            if pct is not None:
                return float(pct) / 100.0
        return float(row.get("score") or 0.0)

    def query_has_match(self, query: str, results: list[dict]) -> bool:
        """False when nothing in the photos matches a text query: the query reads like nothing the image side
        knows (nonsense, emoji, a wall of text), or its best photo is no better than unrelated photos score. True
        when the query is written in the best photo ("qwxzv" on a sign), whatever it means to the image side, or
        names a person in it ("妈妈")."""
        rel = self.relevance()
        if not results:
            return False
        if results[0].get("text_match") in ("exact", "words"):
            return True                          # the words are written in the photo, whatever the model makes of them
        if any(isinstance(w, dict) and "person" in w for w in results[0].get("why") or []):
            return True                          # the query names a person who is in the photo
        if not rel.calibrated:
            return True
        try:
            qv = self.any_model().encode_text([str(query)])[0]          # (d,): 1-2 ms, the search already paid once
            return bool(rel.query_has_match(qv)) and (self.level(results[0]) or 0) >= 1
        except Exception:
            return True

    def stack_copies(self, results: list[dict]) -> list[dict]:
        """Results with exact copies (the same bytes) stacked on the best-ranked one, which gets "copies": n."""
        if len(results) < 2 or not all("id" in r for r in results):
            return results
        try:
            db = getattr(self.searcher, "db", None)      # the searcher's open connection: no connect per search
            if db is not None:
                rows = db.hash_rows_by_ids([int(r["id"]) for r in results])
            else:
                from index import PhotoDB
                with PhotoDB(self.db_path, create=False) as db:
                    rows = db.hash_rows_by_ids([int(r["id"]) for r in results])
        except Exception:
            return results
        out, first = [], {}
        for r in results:
            sha = (rows.get(int(r["id"])) or {}).get("sha256")
            if sha and sha in first:
                first[sha]["copies"] = first[sha].get("copies", 1) + 1
                continue
            r = dict(r)
            if sha:
                first[sha] = r
            out.append(r)
        return out

    # -- labels ----------------------------------------------------------------------------------
    def label(self, labels: list[str], prompt_name: str | None = None, lang: str = "en", progress=None) -> dict:
        """Label every photo with its best label of ``labels`` (zero-shot) or of a library prompt. Stored in the
        database's label set "app"; in demo mode nothing is written and the summary carries the "rows"."""
        self.require_ready()
        from index import labels as index_labels
        model = self.any_model()
        if self.demo:
            if prompt_name:
                raise ReadOnlyError("demo mode labels with typed labels only")
            return index_labels.classify_index(self.db_path, labels, model=model, progress=progress)
        with self._write_lock:
            if prompt_name:
                return index_labels.label_index_with_prompt(self.db_path, self.load_prompt(prompt_name), LABEL_SET,
                                                            model=model, lang=lang, progress=progress)
            return index_labels.label_index(self.db_path, labels, label_set=LABEL_SET, model=model, progress=progress)

    def label_rows(self, rows: list[dict] | None = None) -> list[dict]:
        """Each labelled photo's best label [{"path", "label", "score", "cosine", "source", "certainty"}]: from
        ``rows`` (a demo visitor's, in memory) or from the database."""
        from index import labels as index_labels
        if rows is None:
            if self.demo:
                return []
            try:
                rows = index_labels.labels_of(self.db_path, LABEL_SET, top_only=True)
            except index_labels.LabelError:
                return []
        return [{**r, "certainty": self.certainty(r)} for r in rows]

    def correct(self, path: str, label: str) -> int:
        """A correction: this photo is ``label``, whatever later labelling runs say (undo_correction removes it)."""
        self.require_writable()
        from index.labels import set_label
        with self._write_lock:
            return set_label(self.db_path, LABEL_SET, [path], label)

    def undo_correction(self, path: str) -> int:
        self.require_writable()
        from index.labels import remove_correction
        with self._write_lock:
            return remove_correction(self.db_path, LABEL_SET, [path])

    def copy_labelled(self, out_dir: str, sure: float = 0.0, unsure_folder: str = "not sure", progress=None) -> dict:
        """Copy labelled photos into out_dir/<label>/ (photos less certain than ``sure`` into ``unsure_folder``);
        never overwrites, never copies the same photo twice."""
        self.require_writable()
        from index.labels import copy_to_folders
        rows = self.label_rows()
        unsure = {r["path"] for r in rows if r.get("source") != "manual" and r["certainty"] < sure}
        return copy_to_folders(self.db_path, LABEL_SET, out_dir, progress=progress,
                               relabel={p: unsure_folder for p in unsure})

    def export_labels(self, fmt: str, rows: list[dict] | None = None) -> tuple[Path, int]:
        """The labels as CSV or JSON in a fresh temp folder: (file, rows). In demo mode: the visitor's ``rows``
        with file names only."""
        import tempfile
        from index import labels as index_labels
        out = Path(tempfile.mkdtemp(prefix="dcclip-export-")) / f"labels.{fmt}"
        if self.demo:
            if not rows:
                raise index_labels.LabelError("nothing labelled yet")
            shown = [{**{k: r.get(k) for k in index_labels.EXPORT_FIELDS}, "path": Path(str(r["path"])).name}
                     for r in rows]
            return out, index_labels.write_label_rows(shown, fmt, out)
        return out, index_labels.export_labels(self.db_path, LABEL_SET, fmt=fmt, out=out)

    def model_megabytes(self) -> float:
        """Size of the loaded model's runtime files (ONNX + tokenizer) in MB."""
        try:
            from dcclip_core import model_dir
            d = Path(model_dir(self.model_info().get("name") or "default"))
            cfg = json.loads((d / "config.json").read_text(encoding="utf-8"))
            files = [v for k, v in (cfg.get("files") or {}).items() if k != "weights"]
            return round(sum((d / f).stat().st_size for f in files if (d / f).is_file()) / 2 ** 20, 1)
        except Exception:
            return 0.0
