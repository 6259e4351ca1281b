"""DC-CLIP photo search: a bilingual (Chinese/English) offline photo search page (Gradio 6).

    python app.py [--host 127.0.0.1] [--port 7860] [--db PATH] [--root DIR] [--demo] [--auth user:pass]

Without --db the bundled demo photos (assets/demo) are indexed into <cache>/demo.db, where <cache> is
$DCCLIP_CACHE or ~/.cache/dcclip. The page is served first; then the model loads, warms up and the index is
(re)built in a background thread while a status line reports progress.

Tabs: Search (text / image, filters, detail with neighbours and duplicates), Label (typed labels or a library
prompt, review grid with manual corrections, CSV/JSON export, copy into class folders), Few-shot (examples
from search results or uploads; zero-shot, Tip-Adapter, linear probe, CoOp, VPT, UPT, MVLPT; live loss plot;
save to the prompt library), Prompts (list, details, apply, import/export, delete), Index (add, re-scan,
remove folders; bad files), Model (model card metrics, switch model). --demo hides everything that writes
files or shows paths. Thumbnails are served by GET /thumb/<sha1>.jpg only (no original file path reaches
the page). The logic lives in index/ (labels.py: labelling, corrections, copying) and training.prompts.api;
this module wires it to Gradio. Searching never imports torch; learning a prompt does, lazily.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import sys
import threading
import time
from pathlib import Path
from typing import Any

T_START = time.time()
if __name__ == "__main__" and "IPython" not in sys.modules:
    # a script, not a notebook: gradio's IPython extension would import IPython (0.25 s of start-up)
    sys.modules["IPython"] = None  # type: ignore[assignment]

import gradio as gr

HERE = Path(__file__).resolve().parent
DEMO_ROOT = HERE / "assets" / "demo"
EXAMPLE_QUERIES = ["猫", "a cat", "一杯咖啡", "rocket launch", "红色的花", "寺庙", "蝴蝶", "astronaut"]
THUMB_SIZE = 512
# Scores are cosine similarities. By default a photo must score at least 0 (negative = unrelated);
# the slider's minimum (-0.2) lifts the limit and shows every photo, ranked.
SCORE_MIN = -0.2
DUP_SCORE = 0.95           # neighbours at least this similar are shown as likely duplicates
DEFAULT_THRESHOLD = 0.0
MAX_UPLOAD = "20mb"
LABEL_SET = "app"          # the label set the Label tab writes
REVIEW_MAX = 200           # photos shown in the label review grid
FS_PICK = 24               # search results shown to pick few-shot examples from
FS_STEPS = 50              # default optimisation steps of the prompt methods in the app
FS_METHODS = [("Zero-shot", "zeroshot"), ("Tip-Adapter", "tip-adapter"), ("Tip-Adapter-F", "tip-adapter-f"),
              ("Linear probe", "linear-probe"), ("CoOp", "coop"), ("VPT", "vpt"), ("UPT", "upt"),
              ("MVLPT", "mvlpt")]
ROOTS_META = "app_roots"   # DB meta key: JSON list of folders added in the Index tab
THUMB_ROUTE = "/thumb"     # GET /thumb/<sha1>.jpg serves one cached thumbnail (and nothing else)
THUMB_KEY = re.compile(r"[0-9a-f]{40}")

# ---------------------------------------------------------------------------------------------------
# Translations. Static labels use I18N(key) (translated in the browser from its language); messages
# built at run time (status, counts) are formatted server-side in the language the request asks for.
# ---------------------------------------------------------------------------------------------------
# {"en" | "zh" | "zh_hant": {key: text}}; zh_hant is zh through OpenCC s2twp (a test keeps them in step)
UI_STRINGS = HERE / "assets" / "data" / "ui_strings.json"
_strings = json.loads(UI_STRINGS.read_text(encoding="utf-8"))
EN, ZH, ZH_HANT = _strings["en"], _strings["zh"], _strings["zh_hant"]
TABLES = {"en": EN, "zh": ZH, "zh_hant": ZH_HANT}
I18N = gr.I18n(en=EN, zh=ZH, **{"zh-CN": ZH, "zh-SG": ZH, "zh-TW": ZH_HANT, "zh-HK": ZH_HANT, "zh-MO": ZH_HANT})
T = I18N  # T(name) -> a label the browser translates


def lang_of(request: gr.Request | None) -> str:
    """'zh' (simplified) or 'zh_hant' (zh-TW / zh-HK / zh-MO / zh-Hant) when the browser asks for Chinese first,
    else 'en' (for messages formatted server-side)."""
    try:
        al = (request.headers.get("accept-language") or "") if request is not None else ""
    except Exception:
        al = ""
    first = al.split(",")[0].split(";")[0].strip().lower().replace("_", "-")
    if not first.startswith("zh"):
        return "en"
    return "zh_hant" if first.startswith(("zh-tw", "zh-hk", "zh-mo", "zh-hant")) else "zh"


def tr(lang: str, key: str, **kw) -> str:
    s = TABLES.get(lang, EN).get(key) or EN.get(key, key)
    return s.format(**kw) if kw else s


def default_cache() -> Path:
    return Path(os.environ.get("DCCLIP_CACHE") or Path.home() / ".cache" / "dcclip")


# ---------------------------------------------------------------------------------------------------
# Model card
# ---------------------------------------------------------------------------------------------------
LANG_NAMES = {"en": "English", "zh": "中文 (简体)", "zh_hant": "中文 (繁體)"}


def user_models_dir() -> Path:
    """Models the user installed: $DCCLIP_MODELS or <cache>/models (one directory with config.json each)."""
    return Path(os.environ.get("DCCLIP_MODELS") or default_cache() / "models")


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


def metrics_md(name: str, lang: str) -> str:
    """A compact Markdown table: real-photo recall@1/@5 per language and ImageNet held-out top-1."""
    m = model_metrics(name)
    if not m:
        return tr(lang, "m_none")
    real = m.get("real_photos") or {}
    inet = m.get("imagenet") or {}
    head = [tr(lang, "m_lang"), tr(lang, "m_r1"), tr(lang, "m_r5"), tr(lang, "m_in1")]
    rows = []
    for code, label in LANG_NAMES.items():
        r = real.get(f"student/{code}") or {}
        i = inet.get(f"student/{code}/calibrated") or inet.get(f"student/{code}/uncalibrated") or {}
        if not r and not i:
            continue
        pct = lambda v: "–" if v is None else f"{100 * float(v):.1f}%"  # noqa: E731
        rows.append([label, pct(r.get("recall@1")), pct(r.get("recall@5")), pct(i.get("held_top1"))])
    lines = [f"**{tr(lang, 'model_metrics')}** · `{m.get('model', name)}` · `{m.get('hash', '')}`", "",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    if real.get("n_photos"):
        lines += ["", tr(lang, "m_note", n=real["n_photos"])]
    return "\n".join(lines)


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
# Back end: model + index loaded in a background thread
# ---------------------------------------------------------------------------------------------------
class Backend:
    """Holds the searcher; loads the model, warms it up and (re)indexes a root in a background thread."""

    def __init__(self, db_path: str | Path, model=None, searcher=None, root: str | Path | None = None,
                 demo: bool = False, thumb_dir: str | Path | None = None):
        self.db_path = str(db_path)
        self.model = model
        self.searcher = searcher
        self.root = Path(root).resolve() if root else None
        self.demo = demo
        self.thumb_dir = Path(thumb_dir) if thumb_dir else default_cache() / "thumbs"
        self.state = "ready" if searcher is not None else "starting"
        self.done = 0
        self.total = 0
        self.error = ""
        self.index_stats: dict = {}
        self._lock = threading.Lock()
        self._index_lock = threading.Lock()  # one (re)scan at a time
        self._thread: threading.Thread | None = None
        self.started = time.time()
        self.ready_at: float | None = time.time() if searcher is not None else None
        self._keys: dict[str, tuple] = {}  # path -> ((mtime_ns, size), thumbnail key)
        self._batcher: SearchBatcher | None = None

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
            if self.root is not None:
                from index import build_index
                self.state = "indexing"
                Path(self.db_path).parent.mkdir(parents=True, exist_ok=True)
                self.index_stats = build_index(str(self.root), self.db_path, model=model,
                                               progress=self._progress) or {}
            from index import Searcher
            self.searcher = Searcher(self.db_path, model=model)
            self.ready_at = time.time()
            self.state = "ready"
        except Exception as e:  # shown in the status line; the page stays up
            self.error = f"{type(e).__name__}: {e}"
            self.state = "error"
            return
        self._prewarm_thumbnails()

    def _prewarm_thumbnails(self, limit: int = 2000):
        """Make the thumbnails of a small root ahead of the first search (the demo: 16 photos)."""
        if self.root is None:
            return
        try:
            exts = {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff", ".heic"}
            files = []
            for p in self.root.rglob("*"):
                if p.suffix.lower() in exts and p.is_file():
                    files.append(p)
                    if len(files) > limit:
                        return
            for p in files:
                self.thumbnail(str(p))
        except Exception:
            pass

    # -- status --------------------------------------------------------------------------------
    def model_info(self) -> dict:
        m = self.model
        if m is None and self.searcher is not None:
            m = getattr(self.searcher, "model", None)
        try:
            return dict(m.info) if m is not None else {}
        except Exception:
            return {}

    def stats(self) -> dict:
        if self.searcher is None:
            return {}
        try:
            return dict(self.searcher.stats())
        except Exception as e:
            return {"error": str(e)}

    def status(self) -> dict:
        st = {"state": self.state, "done": self.done, "total": self.total, "error": self.error,
              "images": None, "model_id": None, "torch_loaded": "torch" in sys.modules}
        if self.state == "ready":
            s = self.stats()
            st["images"] = s.get("images")
            st["errors"] = s.get("errors")
            st["model_id"] = s.get("model_id") or self.model_info().get("id")
            st["ready_seconds"] = round((self.ready_at or time.time()) - self.started, 2)
        return st

    def status_text(self, lang: str) -> str:
        st = self.state
        if st == "ready":
            s = self.status()
            return tr(lang, "st_ready", n=s.get("images") or 0, model=s.get("model_id") or "?")
        if st == "indexing":
            key = "st_indexing" if self.root is not None and self.root == DEMO_ROOT.resolve() else "st_indexing_n"
            return tr(lang, key, done=self.done, total=self.total or "…")
        if st == "error":
            return tr(lang, "st_error", err=self.error)
        return tr(lang, "st_loading" if st == "loading" else "st_starting")

    def about_md(self, lang: str) -> str:
        """Markdown for the About / Model panel (no file paths in demo mode)."""
        info = self.model_info()
        s = self.stats()
        lines = [f"**{tr(lang, 'about_model')}**", ""]
        if info:
            names = {"zh": "中文", "en": "English"}
            langs = ", ".join(f"{names.get(x, x)} ({x})" for x in info.get("languages") or [])
            lines += [f"- {tr(lang, 'about_id')}: `{info.get('id', '?')}`",
                      f"- {tr(lang, 'about_hash')}: `{info.get('hash', '?')}`",
                      f"- {tr(lang, 'about_dims')}: {info.get('dims', info.get('dim', '?'))}",
                      f"- {tr(lang, 'about_langs')}: {langs}"]
        else:
            lines.append(f"- {tr(lang, 'about_wait')}")
        lines += ["", f"**{tr(lang, 'about_index')}**", ""]
        if s:
            lines += [f"- {tr(lang, 'about_images')}: {s.get('images', '?')}",
                      f"- {tr(lang, 'about_errors')}: {s.get('errors', 0)}"]
            if not self.demo and s.get("db"):
                lines.append(f"- {tr(lang, 'about_db')}: `{s.get('db')}`")
        else:
            lines.append(f"- {self.status_text(lang)}")
        lines += ["", tr(lang, "about_offline")]
        return "\n".join(lines)

    # -- index management ------------------------------------------------------------------------
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

    def bad_files(self, limit: int = 1000) -> list[list[str]]:
        s = self.stats()
        return [[self.shown_path(e.get("path", "")), str(e.get("reason", ""))]
                for e in (s.get("error_list") or [])[:limit]]

    def index_folder(self, root: str, progress=None) -> dict:
        """Index (or re-scan) one folder into this DB with the loaded model; progress(done, total, path)."""
        from index import build_index
        if self.state != "ready" or self.model is None and self.searcher is None:
            raise RuntimeError("not ready")
        model = self.model if self.model is not None else getattr(self.searcher, "model", None)
        root = str(Path(root).expanduser().resolve())
        if not Path(root).is_dir():
            raise FileNotFoundError(root)
        with self._index_lock:
            res = build_index(root, self.db_path, model=model, progress=progress) or {}
        if self.root is None or root != str(self.root):
            self._remember_root(root)
        return res

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

    def remove_root(self, root: str) -> dict:
        """Take a folder out of the index (rows, vectors, labels, recorded errors); files stay on disk."""
        from index import PhotoDB, remove_paths
        with self._index_lock:
            res = remove_paths(self.db_path, [root])
            with PhotoDB(self.db_path) as db:
                cur = [r for r in json.loads(db.get_meta(ROOTS_META) or "[]") if r != root]
                db.set_meta(ROOTS_META, json.dumps(cur, ensure_ascii=False))
            if self.root is not None and str(self.root) == root:
                self.root = None      # the start-up folder: not indexed again until the next --root
        return res

    def switch_model(self, name: str) -> dict:
        """Load another installed model and search with it; photos embedded by another model are found
        again only after a re-scan (build_index re-embeds them). Returns vectors/images counts."""
        import dcclip_core
        from index import PhotoDB, Searcher
        model = dcclip_core.load(model_path(name))
        if hasattr(model, "warmup"):
            model.warmup()
        with self._index_lock:
            self.model = model
            self.searcher = Searcher(self.db_path, model=model)
            self._batcher = None
        info = dict(model.info)
        with PhotoDB(self.db_path, create=False) as db:
            n_vec = db.vector_stats(info["hash"])[0]
            n_img = db.count_images()
        return {"model_id": info.get("id"), "vectors": n_vec, "images": n_img}

    # -- search --------------------------------------------------------------------------------
    def thumb_key(self, path: str) -> str | None:
        """The cache key of a photo's thumbnail (sha1 of path, mtime, size), or None if it is unreadable."""
        p = str(path)
        try:
            st = os.stat(p)
        except OSError:
            return None
        hit = self._keys.get(p)
        if hit is not None and hit[0] == (st.st_mtime_ns, st.st_size):
            return hit[1]
        key = hashlib.sha1(f"{Path(p).resolve()}|{st.st_mtime_ns}|{st.st_size}|{THUMB_SIZE}".encode()).hexdigest()
        if len(self._keys) > 200_000:
            self._keys.clear()
        self._keys[p] = ((st.st_mtime_ns, st.st_size), key)
        return key

    def thumb_file(self, key: str) -> Path:
        return self.thumb_dir / key[:2] / f"{key}.jpg"

    def thumbnail(self, path: str) -> str:
        """A cached JPEG thumbnail for `path` (served instead of the original: no original file path
        ever reaches the browser, and big photos are not sent whole)."""
        from PIL import Image, ImageOps
        key = self.thumb_key(path)
        if key is None:
            return path
        out = self.thumb_file(key)
        if out.exists():
            return str(out)
        out.parent.mkdir(parents=True, exist_ok=True)
        try:
            with Image.open(path) as im:
                im.draft("RGB", (THUMB_SIZE, THUMB_SIZE))
                im = ImageOps.exif_transpose(im)
                im = im.convert("RGB")
                im.thumbnail((THUMB_SIZE, THUMB_SIZE))
                tmp = out.with_suffix(f".{os.getpid()}.{threading.get_ident()}.tmp")
                im.save(tmp, "JPEG", quality=85)
                os.replace(tmp, out)
        except Exception:
            return path
        return str(out)

    def thumb_url(self, path: str, origin: str) -> str:
        """An absolute URL of the photo's thumbnail on the /thumb route (made on first use). Gradio passes
        http URLs to the page untouched, so a gallery of them costs no hashing or copying per request."""
        t = self.thumbnail(path)
        key = Path(t).stem
        if not THUMB_KEY.fullmatch(key):   # unreadable photo: the route answers 404 (Gallery shows a gap)
            key = "0" * 40
        return f"{origin}{THUMB_ROUTE}/{key}.jpg"

    def run_search(self, query=None, image=None, k=20, threshold=None, **filters):
        """Text or image search; filters (folder, date_from, date_to) are passed on only when set."""
        if self.searcher is None:
            raise RuntimeError("not ready")
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
        if self.searcher is None:
            raise RuntimeError("not ready")
        filters = {key: v for key, v in filters.items() if v}
        if not filters and self.batcher() is not None:
            return await asyncio.wrap_future(self.batcher().submit(query, int(k), threshold))
        return await asyncio.to_thread(self.run_search, query=query, k=k, threshold=threshold, **filters)

    async def thumb_items(self, results: list[dict], origin: str, caption) -> list[tuple[str, str]]:
        """[(thumbnail URL, caption)] for a result list; thumbnails still to be made are made in a worker
        thread (decoding photos must not hold up the event loop)."""
        import asyncio
        keys = [self.thumb_key(r["path"]) for r in results]
        if all(key and self.thumb_file(key).exists() for key in keys):
            return [(f"{origin}{THUMB_ROUTE}/{key}.jpg", caption(r)) for key, r in zip(keys, results)]
        return await asyncio.to_thread(lambda: [(self.thumb_url(r["path"], origin), caption(r)) for r in results])


def origin_of(request: gr.Request | None) -> str:
    """The page's origin (scheme://host[:port]) as the browser sees it, for absolute thumbnail URLs."""
    try:
        h = request.headers
        host = (h.get("x-forwarded-host") or h.get("host") or "").split(",")[0].strip()
        proto = (h.get("x-forwarded-proto") or "http").split(",")[0].strip()
    except Exception:
        host, proto = "", "http"
    return f"{proto}://{host or '127.0.0.1'}"


def thumb_routes(be: Backend) -> list:
    """The GET /thumb/<key>.jpg route: one cached thumbnail by its 40-hex key, with the page's login
    (--auth) enforced; no other file can be named, so there is nothing to traverse."""
    from starlette.responses import FileResponse, Response
    from starlette.routing import Route

    async def thumb(request):
        app = request.app
        if getattr(app, "auth", None) is not None or getattr(app, "auth_dependency", None) is not None:
            cid = getattr(app, "cookie_id", "")
            token = request.cookies.get(f"access-token-{cid}") or request.cookies.get(f"access-token-unsecure-{cid}")
            if not getattr(app, "tokens", {}).get(token):
                return Response(status_code=401)
        key = request.path_params["key"]
        f = be.thumb_file(key) if THUMB_KEY.fullmatch(key) else None
        if f is None or not f.is_file():
            return Response(status_code=404)
        return FileResponse(f, media_type="image/jpeg",
                            headers={"Cache-Control": "private, max-age=86400, immutable"})

    return [Route(THUMB_ROUTE + "/{key}.jpg", thumb, methods=["GET"])]


def _err(e: Exception) -> str:
    return f"{type(e).__name__}: {e}"


def safe_prompt_name(name: str | None) -> str:
    """A prompt name usable as a file name: letters (any script), digits, - and _ (others become "-")."""
    n = re.sub(r"[^\w\-]+", "-", str(name or "").strip(), flags=re.UNICODE).strip("-._")
    return n[:80]


def thumb_gallery(**kw) -> gr.Gallery:
    """A gr.Gallery whose (thumbnail URL, caption) values are built directly: the stock postprocess starts
    a thread pool per call to inspect each item, a measurable share of a search under load. Other values
    take the stock path. (Bound per instance: a Gallery subclass would make gradio write app.pyi.)"""
    g = gr.Gallery(**kw)
    stock = g.postprocess

    def postprocess(value):
        if isinstance(value, list) and value and all(
                isinstance(v, tuple) and len(v) == 2 and isinstance(v[0], str) and v[0].startswith(("http://", "https://"))
                for v in value):
            from gradio.components.gallery import GalleryData, GalleryImage
            from gradio.data_classes import ImageData
            return GalleryData(root=[GalleryImage(image=ImageData(path=u, url=u, orig_name=u.rsplit("/", 1)[-1],
                                                                  mime_type="image/jpeg"), caption=c)
                                     for u, c in value])
        return stock(value)

    g.postprocess = postprocess
    return g


def _caption(r: dict) -> str:
    return f"{float(r['score']):.3f} · {Path(str(r['path'])).name}"


# ---------------------------------------------------------------------------------------------------
# UI
# ---------------------------------------------------------------------------------------------------
CSS = """
#title h1 { margin-bottom: 0.1em; }
#subtitle p { color: var(--body-text-color-subdued); margin-top: 0; }
#status p { font-size: 0.95em; margin: 0; }
#message p { margin: 0.2em 0; }
#query textarea, #query input { font-size: 1.1em; padding: 10px 12px; }
.example-row { flex-wrap: wrap !important; gap: 6px !important; align-items: center; justify-content: flex-start !important; }
#try { flex: 0 0 auto !important; width: auto !important; }
.example-row button { flex: 0 0 auto !important; min-width: 0 !important; }
#gallery .caption-label { white-space: nowrap; overflow: hidden; text-overflow: ellipsis; max-width: 100%; }
.end-btn { align-self: flex-end !important; flex-grow: 0 !important; margin-bottom: 4px; }
"""


def build_app(db_path: str | Path, model=None, searcher=None, demo: bool = False,
              root: str | Path | None = None, backend: Backend | None = None, start: bool = True) -> gr.Blocks:
    """Build the Blocks UI. With `searcher` given it is used as is; otherwise the model loads (and
    `root`, if given, is indexed into `db_path`) in a background thread, started here unless `start` is
    False (main() starts it once the page is served, so loading does not slow the first page)."""
    be = backend or Backend(db_path, model=model, searcher=searcher, root=root, demo=demo)
    be.demo = demo = bool(be.demo or demo)
    if start:
        be.start()

    def _threshold(t):
        try:
            t = float(t)
        except (TypeError, ValueError):
            return None
        return t if t > SCORE_MIN else None  # the slider's minimum means "no limit"

    def _floor(t):
        t = _threshold(t)
        return SCORE_MIN if t is None else t

    def not_ready(lang):
        if be.state == "error":
            return [], be.status_text(lang)
        return [], tr(lang, "msg_not_ready", status=be.status_text(lang))

    def _filters(folder, date_from, date_to, lang):
        """(filters, error message) from the filter inputs; dates must be ISO (YYYY-MM-DD)."""
        import datetime as _dt
        f = {}
        if folder and not demo and folder in be.roots():
            f["folder"] = folder
        for key, v in (("date_from", date_from), ("date_to", date_to)):
            v = (v or "").strip() if isinstance(v, str) else v
            if not v:
                continue
            try:
                _dt.date.fromisoformat(str(v)[:10])
            except ValueError:
                return None, tr(lang, "msg_bad_date", d=v)
            f[key] = str(v)[:10] if key == "date_from" else str(v)[:10] + "T23:59:59"
        return f, None

    async def do_search(query, k, threshold, folder=None, date_from=None, date_to=None,
                        request: gr.Request = None):
        """Text search (runs on the event loop: the work happens in the batcher's thread)."""
        lang = lang_of(request)
        q = (query or "").strip()
        if be.state != "ready":
            return (*not_ready(lang), [])
        if not q:
            return [], tr(lang, "msg_empty"), []
        f, err = _filters(folder, date_from, date_to, lang)
        if err:
            return [], err, []
        t0 = time.perf_counter()
        try:
            res = await be.search_text(q, k=k, threshold=_threshold(threshold), **f)
        except Exception as e:
            return [], tr(lang, "msg_failed", err=f"{type(e).__name__}: {e}"), []
        ms = int((time.perf_counter() - t0) * 1000)
        if not res:
            return [], tr(lang, "msg_none", t=_floor(threshold), q=q), []
        items = await be.thumb_items(res, origin_of(request), _caption)
        return items, tr(lang, "msg_results", n=len(res), q=q, ms=ms), [r["path"] for r in res]

    def do_image_search(image, k, threshold, folder=None, date_from=None, date_to=None,
                        request: gr.Request = None):
        lang = lang_of(request)
        if be.state != "ready":
            return (*not_ready(lang), [])
        if not image:  # cleared: keep the current results
            return gr.skip(), gr.skip(), gr.skip()
        f, err = _filters(folder, date_from, date_to, lang)
        if err:
            return [], err, []
        t0 = time.perf_counter()
        try:
            res = be.run_search(image=image, k=k, threshold=_threshold(threshold), **f)
        except Exception as e:
            return [], tr(lang, "msg_failed", err=f"{type(e).__name__}: {e}"), []
        ms = int((time.perf_counter() - t0) * 1000)
        if not res:
            return [], tr(lang, "msg_none_img", t=_floor(threshold)), []
        o = origin_of(request)
        items = [(be.thumb_url(r["path"], o), _caption(r)) for r in res]
        return items, tr(lang, "msg_results_img", n=len(res), ms=ms), [r["path"] for r in res]

    def photo_detail(path: str, lang: str, origin: str, k: int = 8):
        """(Markdown about the photo, [(thumbnail, caption)] of its nearest neighbours)."""
        name = Path(str(path)).name
        try:
            near = be.searcher.similar(path, k=k)
        except Exception as e:
            return f"**{name}** · {tr(lang, 'msg_failed', err=f'{type(e).__name__}: {e}')}", []
        dups = [Path(str(r["path"])).name for r in near if float(r["score"]) >= DUP_SCORE]
        row = near[0] if near else {}
        lines = [f"**{be.shown_path(path)}**"]
        try:
            from index import PhotoDB
            with PhotoDB(be.db_path, create=False) as db:
                row = db.image_by_path(str(path)) or {}
        except Exception:
            row = {}
        facts = []
        if row.get("width"):
            facts.append(f"{tr(lang, 'detail_size')}: {row['width']}×{row['height']}")
        if row.get("taken_at"):
            facts.append(f"{tr(lang, 'detail_taken')}: {str(row['taken_at'])[:10]}")
        if facts:
            lines.append(" · ".join(facts))
        lines.append(tr(lang, "dups_some", names=", ".join(dups)) if dups else tr(lang, "dups_none"))
        return "\n\n".join(lines), [(be.thumb_url(r["path"], origin), _caption(r)) for r in near]

    def on_select(paths, evt: gr.SelectData, request: gr.Request):
        lang = lang_of(request)
        try:
            path = paths[int(evt.index)]
        except (TypeError, ValueError, IndexError):
            return gr.skip(), gr.skip()
        return photo_detail(path, lang, origin_of(request))

    def api_detail(name: str) -> dict:
        """A photo's nearest neighbours and likely duplicates, by its file name (or path outside demo)."""
        if be.state != "ready":
            return {}
        path = name
        if demo or not Path(name).is_absolute():  # a bare file name: look it up in the index
            from index import PhotoDB
            base = Path(name).name
            with PhotoDB(be.db_path, create=False) as db:
                paths = db.paths_ending_with(base)
            path = next((p for p in paths if Path(p).name == base), name)
        near = be.searcher.similar(path, k=8)
        return {"neighbours": [{"name": Path(str(r["path"])).name, "score": round(float(r["score"]), 4)}
                               for r in near],
                "duplicates": [Path(str(r["path"])).name for r in near if float(r["score"]) >= DUP_SCORE]}

    def poll(request: gr.Request):
        """Start-up status (every second until ready); the folder lists once the index is there."""
        lang = lang_of(request)
        done = be.state in ("ready", "error")
        dd = folder_dropdowns() if be.state == "ready" else (gr.skip(), gr.skip())
        return be.status_text(lang), be.about_md(lang), gr.Timer(active=not done), *dd

    def api_status() -> dict:
        """Start-up state: {"state": starting|loading|indexing|ready|error, "done", "total", "images", ...}."""
        return be.status()

    async def api_search(query: str, k: int = 20) -> list:
        """Text search as JSON: [{"name": file name, "score": float}, ...] best first ([] until ready)."""
        if be.state != "ready" or not (query or "").strip():
            return []
        res = await be.search_text(query.strip(), k=k)
        return [{"name": Path(str(r["path"])).name, "score": round(float(r["score"]), 4)} for r in res]


    # -- Index tab -------------------------------------------------------------------------------
    def index_md(lang: str) -> str:
        roots = be.roots()
        st = be.stats()
        lines = [f"**{tr(lang, 'index_roots')}**", ""]
        if roots:
            lines += [f"- `{be.shown_path(r)}`" for r in roots]
        else:
            lines.append(f"- {tr(lang, 'index_none')}")
        if st:
            lines += ["", tr(lang, "index_counts", n=st.get("images", 0), e=st.get("errors", 0))]
        if demo:
            lines += ["", tr(lang, "index_readonly")]
        return "\n".join(lines)

    def index_view(request: gr.Request):
        lang = lang_of(request)
        return index_md(lang), be.bad_files()

    def _progress_cb(progress, lang, root):
        desc = tr(lang, "msg_scanning", root=be.shown_path(root))

        def cb(done, total, path=None):
            if total:
                progress((int(done), int(total)), desc=desc)
        return cb

    def do_rescan(request: gr.Request, progress=gr.Progress()):
        """Re-scan every indexed folder (new, changed, moved and deleted photos)."""
        lang = lang_of(request)
        if demo:
            return index_md(lang), be.bad_files(), tr(lang, "index_readonly")
        if be.state != "ready":
            return index_md(lang), be.bad_files(), tr(lang, "msg_not_ready", status=be.status_text(lang))
        t0 = time.perf_counter()
        tot = {"indexed": 0, "updated": 0, "removed": 0, "errors": 0}
        roots = be.roots()
        try:
            for r in roots:
                res = be.index_folder(r, progress=_progress_cb(progress, lang, r))
                for key in tot:
                    tot[key] += int(res.get(key) or 0)
        except Exception as e:
            return index_md(lang), be.bad_files(), tr(lang, "msg_index_failed", err=f"{type(e).__name__}: {e}")
        msg = tr(lang, "msg_rescanned", n=len(roots), added=tot["indexed"], updated=tot["updated"],
                 removed=tot["removed"], errors=tot["errors"], s=round(time.perf_counter() - t0, 1))
        return index_md(lang), be.bad_files(), msg

    def do_add_folder(folder: str, request: gr.Request, progress=gr.Progress()):
        """Index a new folder into the same database (its photos become searchable)."""
        lang = lang_of(request)
        if demo:
            return index_md(lang), be.bad_files(), tr(lang, "index_readonly")
        folder = (folder or "").strip()
        if not folder:
            return index_md(lang), be.bad_files(), tr(lang, "msg_no_folder")
        root = Path(folder).expanduser()
        if not root.is_dir():
            return index_md(lang), be.bad_files(), tr(lang, "msg_not_folder", root=folder)
        if be.state != "ready":
            return index_md(lang), be.bad_files(), tr(lang, "msg_not_ready", status=be.status_text(lang))
        root = str(root.resolve())
        t0 = time.perf_counter()
        try:
            res = be.index_folder(root, progress=_progress_cb(progress, lang, root))
        except Exception as e:
            return index_md(lang), be.bad_files(), tr(lang, "msg_index_failed", err=f"{type(e).__name__}: {e}")
        allowed = getattr(app, "allowed_paths", None)
        if isinstance(allowed, list) and root not in allowed:
            allowed.append(root)  # originals of the new folder may be viewed full size
        msg = tr(lang, "msg_added", root=root, added=int(res.get("indexed") or 0),
                 errors=int(res.get("errors") or 0), s=round(time.perf_counter() - t0, 1))
        return index_md(lang), be.bad_files(), msg

    # -- Model tab -------------------------------------------------------------------------------
    def model_view(name, request: gr.Request):
        lang = lang_of(request)
        return metrics_md(name or "default", lang), be.about_md(lang)

    # -- Label tab -------------------------------------------------------------------------------
    def review_items(origin: str):
        """(gallery items, their paths, the labels in use) of the review grid: best label per photo."""
        from index import labels_of
        rows = labels_of(be.db_path, LABEL_SET, top_only=True, limit=REVIEW_MAX)
        rows.sort(key=lambda r: (str(r["label"]), -float(r["score"])))
        items = [(be.thumb_url(r["path"], origin), f"{r['label']} · {float(r['score']):.2f}") for r in rows]
        return items, [r["path"] for r in rows], sorted({str(r["label"]) for r in rows})

    def _label_outputs(lang, origin, msg):
        try:
            items, paths, used = review_items(origin)
        except Exception:
            items, paths, used = [], [], []
        return items, msg, paths, gr.Dropdown(choices=used, value=None)

    def do_label(labels: str, prompt_name: str | None, request: gr.Request, progress=gr.Progress()):
        """Label every indexed photo: with the typed labels (zero-shot, zh/en, comma separated) or, when
        one is chosen, with a prompt from the library."""
        lang, origin = lang_of(request), origin_of(request)
        from index.labels import label_index, label_index_with_prompt, parse_labels
        if be.state != "ready":
            return [], tr(lang, "msg_not_ready", status=be.status_text(lang)), [], gr.skip()
        names = parse_labels(labels or "")
        if not names and not prompt_name:
            return [], tr(lang, "msg_no_labels"), [], gr.skip()
        desc = tr(lang, "msg_labeling")
        cb = lambda d, t: progress((int(d), int(t)), desc=desc) if t else None  # noqa: E731
        t0 = time.perf_counter()
        try:
            with be._index_lock:
                if prompt_name:
                    from dcclip_core.prompts import load_prompt
                    p = load_prompt(prompt_name, model=be.any_model())
                    res = label_index_with_prompt(be.db_path, p, LABEL_SET, model=be.any_model(),
                                                  lang="zh" if lang.startswith("zh") else "en", progress=cb)
                else:
                    res = label_index(be.db_path, names, label_set=LABEL_SET, model=be.any_model(), progress=cb)
        except Exception as e:
            return [], tr(lang, "msg_label_failed", err=_err(e)), [], gr.skip()
        counts = ", ".join(f"{k} {v}" for k, v in sorted(res["counts"].items(), key=lambda kv: -kv[1]))
        msg = tr(lang, "msg_labeled", n=res["images"], l=len(res["labels"]), s=round(time.perf_counter() - t0, 1),
                 counts=counts)
        return _label_outputs(lang, origin, msg)

    def on_review_select(paths, evt: gr.SelectData):
        try:
            path = paths[int(evt.index)]
        except (TypeError, ValueError, IndexError):
            return gr.skip()
        return be.shown_path(path)

    def do_correct(photo: str, label: str, request: gr.Request):
        """Correct one photo's label (stored with source "manual"; later labelling runs keep it)."""
        lang, origin = lang_of(request), origin_of(request)
        from index.labels import set_label
        path = be.find_path(photo or "")
        if not path:
            return gr.skip(), tr(lang, "msg_pick_photo"), gr.skip(), gr.skip()
        try:
            set_label(be.db_path, LABEL_SET, [path], label or "")
        except Exception as e:
            return gr.skip(), tr(lang, "msg_label_failed", err=_err(e)), gr.skip(), gr.skip()
        return _label_outputs(lang, origin, tr(lang, "msg_corrected", name=Path(path).name, label=label.strip()))

    def do_copy(out_dir: str, request: gr.Request, progress=gr.Progress()):
        """Copy the labelled photos into out_dir/<label>/ (never overwriting; not in demo mode)."""
        lang = lang_of(request)
        from index.labels import copy_to_folders
        if demo:
            return tr(lang, "demo_readonly")
        out_dir = (out_dir or "").strip()
        if not out_dir or not Path(out_dir).expanduser().is_absolute():
            return tr(lang, "msg_copy_where")
        desc = tr(lang, "msg_copying")
        try:
            res = copy_to_folders(be.db_path, LABEL_SET, out_dir,
                                  progress=lambda d, t: progress((int(d), int(t)), desc=desc))
        except Exception as e:
            return tr(lang, "msg_label_failed", err=_err(e))
        folders = ", ".join(f"{k} {v}" for k, v in sorted(res["folders"].items(), key=lambda kv: -kv[1]))
        msg = tr(lang, "msg_copied", n=res["copied"], k=len(res["folders"]), out=res["out"], folders=folders)
        if res["missing"]:
            msg += " · " + tr(lang, "msg_copy_missing", n=len(res["missing"]))
        return msg

    def do_export(fmt: str, request: gr.Request):
        """The labels as a CSV or JSON file (file names only in demo mode)."""
        import tempfile
        lang = lang_of(request)
        from index import export_labels, labels_of
        try:
            labels_of(be.db_path, LABEL_SET, limit=1)
        except Exception:
            return None, tr(lang, "msg_label_first")
        out = Path(tempfile.mkdtemp(prefix="dcclip-export-")) / f"labels.{fmt}"
        n = export_labels(be.db_path, LABEL_SET, fmt=fmt, out=out)
        if demo:  # no file paths leave the kiosk
            import csv as _csv, io as _io, json as _json
            if fmt == "json":
                rows = _json.loads(out.read_text(encoding="utf-8"))
                for r in rows:
                    r["path"] = Path(r["path"]).name
                out.write_text(_json.dumps(rows, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
            else:
                rows = list(_csv.DictReader(_io.StringIO(out.read_text(encoding="utf-8-sig"))))
                buf = _io.StringIO()
                w = _csv.DictWriter(buf, fieldnames=list(rows[0]) if rows else ["path"], lineterminator="\n")
                w.writeheader()
                for r in rows:
                    r["path"] = Path(r["path"]).name
                    w.writerow(r)
                out.write_text(buf.getvalue(), encoding="utf-8-sig")
        return gr.File(value=str(out), visible=True), tr(lang, "msg_exported", n=n, f=out.name)

    # -- Few-shot tab ----------------------------------------------------------------------------
    def fs_table(examples: dict) -> list[list]:
        return [[c, len(v), ", ".join(Path(str(p)).name for p in v[:4]) + (" …" if len(v) > 4 else "")]
                for c, v in (examples or {}).items()]

    def fs_find(query: str, request: gr.Request):
        """Search results to pick examples from (click photos to select them)."""
        lang, origin = lang_of(request), origin_of(request)
        q = (query or "").strip()
        if be.state != "ready":
            return [], [], [], tr(lang, "msg_not_ready", status=be.status_text(lang))
        if not q:
            return [], [], [], tr(lang, "msg_empty")
        res = be.run_search(query=q, k=FS_PICK)
        return ([(be.thumb_url(r["path"], origin), Path(str(r["path"])).name) for r in res],
                [r["path"] for r in res], [], tr(lang, "fs_pick_hint"))

    def fs_toggle(paths, picked, evt: gr.SelectData, request: gr.Request):
        """Click a result: select it as an example (click again to unselect); captions show ✓."""
        origin = origin_of(request)
        try:
            i = int(evt.index)
            paths[i]
        except (TypeError, ValueError, IndexError):
            return gr.skip(), gr.skip()
        picked = [x for x in (picked or []) if x != i] if i in (picked or []) else list(picked or []) + [i]
        items = [(be.thumb_url(p, origin), ("✓ " if j in picked else "") + Path(str(p)).name)
                 for j, p in enumerate(paths)]
        return items, picked

    def fs_add(cls: str, uploads, paths, picked, examples, request: gr.Request):
        """Add the selected results and uploaded photos as examples of class `cls`."""
        lang = lang_of(request)
        cls = " ".join((cls or "").split())
        examples = dict(examples or {})
        if not cls:
            return examples, fs_table(examples), tr(lang, "fs_no_class"), gr.skip(), gr.skip()
        new = [paths[i] for i in (picked or []) if 0 <= i < len(paths or [])]
        for f in uploads or []:
            f = f if isinstance(f, str) else getattr(f, "name", None) or (f.get("path") if isinstance(f, dict) else None)
            if f:
                new.append(str(f))
        if not new:
            return examples, fs_table(examples), tr(lang, "fs_nothing_picked"), gr.skip(), gr.skip()
        have = list(examples.get(cls, []))
        examples[cls] = have + [p for p in new if p not in have]
        origin = origin_of(request)
        unmarked = [(be.thumb_url(p, origin), Path(str(p)).name) for p in paths or []]   # selection cleared
        return examples, fs_table(examples), tr(lang, "fs_added", n=len(new), c=cls), [], unmarked

    def fs_clear(request: gr.Request):
        return {}, [], tr(lang_of(request), "fs_cleared"), None, None

    def fs_plot(points: list) -> "Any":
        """The loss curve as a LinePlot frame (numeric columns, so the axes are quantitative)."""
        import pandas as pd
        return pd.DataFrame({"step": pd.Series([p[0] for p in points or []], dtype="int64"),
                             "loss": pd.Series([p[1] for p in points or []], dtype="float64")})

    def fs_learn(method: str, steps: int, examples, request: gr.Request):
        """Learn a prompt from the examples (a generator: the loss plot updates while it learns)."""
        lang = lang_of(request)
        examples = {c: list(v) for c, v in (examples or {}).items() if v}
        if be.state != "ready":
            yield fs_plot([]), tr(lang, "msg_not_ready", status=be.status_text(lang)), None
            return
        if len(examples) < 2:
            yield fs_plot([]), tr(lang, "fs_need_two"), None
            return
        from training.prompts.api import learn_prompt
        from training.prompts.methods import FewShotConfig
        points: list = []
        box: dict = {}
        steps = max(1, int(steps or FS_STEPS))
        cfg = FewShotConfig(lang="zh" if lang.startswith("zh") else "en", steps=steps, tip_steps=steps,
                            vpt_steps=max(1, steps // 10), eval_every=max(1, steps // 5))

        def run():
            try:
                box["prompt"] = learn_prompt(examples, method=method, model=be.any_model(), config=cfg,
                                             progress=lambda s, t, loss: points.append((int(s), float(loss))))
            except Exception as e:
                box["error"] = e

        t0 = time.perf_counter()
        th = threading.Thread(target=run, name="dcclip-fewshot", daemon=True)
        th.start()
        shown = -1
        while th.is_alive():
            th.join(0.5)
            if len(points) != shown:
                shown = len(points)
                yield fs_plot(points), tr(lang, "fs_learning", m=method, step=points[-1][0] if points else 0,
                                          total=steps), None
        if "error" in box:
            yield fs_plot(points), tr(lang, "fs_failed", err=_err(box["error"])), None
            return
        p = box["prompt"]
        yield fs_plot(points), fs_result_md(p, examples, lang, time.perf_counter() - t0), p

    def fs_result_md(p, examples, lang, seconds) -> str:
        """Validation accuracy (held-out examples when every class has >= 10), else accuracy on the examples."""
        va = p.meta.get("val_accuracy")
        if va is not None:
            acc = tr(lang, "fs_val", a=100 * float(va))
        else:
            from training.prompts.api import classify
            paths = [x for v in examples.values() for x in v]
            truth = [c for c, v in examples.items() for _ in v]
            pred = [r[0]["class"] for r in classify(paths, prompt=p, model=be.any_model(), top=1)]
            acc = tr(lang, "fs_train_acc", a=100 * sum(a == b for a, b in zip(pred, truth)) / max(1, len(truth)))
        return tr(lang, "fs_done", m=p.method, c=p.num_classes, n=sum(len(v) for v in examples.values()),
                  s=round(seconds, 1)) + " " + acc

    def fs_save(name: str, prompt, request: gr.Request):
        """Save the learned prompt into the user's prompt library (not in demo mode)."""
        lang = lang_of(request)
        if demo:
            return tr(lang, "demo_readonly"), gr.skip(), gr.skip()
        if prompt is None:
            return tr(lang, "fs_learn_first"), gr.skip(), gr.skip()
        name = safe_prompt_name(name)
        if not name:
            return tr(lang, "fs_bad_name"), gr.skip(), gr.skip()
        from training.prompts.api import library_path
        dst = library_path(name)
        if dst.exists():
            return tr(lang, "fs_name_taken", name=name), gr.skip(), gr.skip()
        prompt.meta["name"] = name
        prompt.save(dst)
        ch = prompt_choices()
        return tr(lang, "fs_saved", name=name), gr.Dropdown(choices=ch, value=name), gr.Dropdown(choices=ch)

    # -- Prompts tab -----------------------------------------------------------------------------
    def library_names() -> list:
        """Every prompt in the library (before the model has loaded: compatibility is checked on use)."""
        try:
            from dcclip_core.prompts import list_prompts
            return [p["name"] for p in list_prompts()]
        except Exception:
            return []

    def prompt_choices() -> list:
        try:
            from dcclip_core.prompts import list_prompts
            return [p["name"] for p in list_prompts(model=be.any_model()) if p.get("compatible", True)]
        except Exception:
            return library_names()

    def prompts_table(lang: str) -> list[list]:
        from dcclip_core.prompts import list_prompts
        rows = []
        for p in list_prompts(model=be.any_model()):
            va = p.get("val_accuracy")
            rows.append([p["name"], p.get("method", "?"), p.get("classes", 0),
                         ", ".join((p.get("labels_zh") if lang.startswith("zh") else p.get("labels_en")) or [])[:80],
                         p.get("shots", "–"), "–" if va is None else f"{100 * float(va):.1f}%",
                         tr(lang, "yes") if p.get("compatible", True) else tr(lang, "no"),
                         tr(lang, "pr_shipped") if p.get("shipped") else tr(lang, "pr_user")])
        return rows

    def prompts_view(request: gr.Request):
        lang = lang_of(request)
        ch = prompt_choices()
        return prompts_table(lang), gr.Dropdown(choices=[r[0] for r in prompts_table(lang)]), gr.Dropdown(choices=ch)

    def prompt_detail(name: str, request: gr.Request) -> str:
        """Method, classes EN/ZH, shots, validation accuracy, and whether it fits the loaded model."""
        lang = lang_of(request)
        if not name:
            return tr(lang, "pr_pick")
        from dcclip_core.prompts import list_prompts
        s = next((p for p in list_prompts(model=be.any_model()) if p["name"] == name), None)
        if s is None:
            return tr(lang, "pr_missing", name=name)
        m = s.get("model") or {}
        va = s.get("val_accuracy")
        ok = s.get("compatible", True)
        lines = [f"**{name}** · {s.get('method', '?')} · {tr(lang, 'pr_shipped') if s.get('shipped') else tr(lang, 'pr_user')}",
                 "", f"- {tr(lang, 'pr_classes')} ({s.get('classes', 0)}): EN: {', '.join(s.get('labels_en') or [])}",
                 f"- {tr(lang, 'pr_classes')} ZH: {', '.join(s.get('labels_zh') or [])}",
                 f"- {tr(lang, 'pr_shots')}: {s.get('shots', '–')}",
                 f"- {tr(lang, 'pr_val')}: {'–' if va is None else f'{100 * float(va):.1f}%'}",
                 f"- {tr(lang, 'pr_model')}: `{m.get('id', '?')}` · `{str(m.get('hash', '?'))[:12]}` — "
                 + (tr(lang, "pr_ok") if ok else tr(lang, "pr_incompatible"))]
        if s.get("created"):
            lines.append(f"- {tr(lang, 'pr_created')}: {str(s['created'])[:19]}")
        return "\n".join(lines)

    def prompt_apply(name: str, request: gr.Request, progress=gr.Progress()):
        """Label the whole index with a library prompt (the Label tab's review grid shows the result)."""
        lang = lang_of(request)
        if not name:
            return tr(lang, "pr_pick"), gr.skip(), gr.skip(), gr.skip(), gr.skip()
        items, msg, paths, dd = do_label("", name, request, progress)
        return msg, items, msg, paths, dd

    def prompt_export(name: str, request: gr.Request):
        """The prompt's .safetensors file (its metadata is inside) and that metadata as JSON, to download."""
        import tempfile
        lang = lang_of(request)
        if not name:
            return None, tr(lang, "pr_pick")
        from dcclip_core.prompts import export_prompt
        try:
            dst = export_prompt(name, Path(tempfile.mkdtemp(prefix="dcclip-prompt-")))
        except Exception as e:
            return None, tr(lang, "pr_failed", err=_err(e))
        return gr.File(value=[str(dst), str(dst.with_suffix(".json"))], visible=True), tr(lang, "pr_exported",
                                                                                      name=name)

    def prompt_import(file, name: str, request: gr.Request):
        """Import a prompt: only a .safetensors file with valid prompt JSON metadata, learned for the loaded
        model (nothing is unpickled; anything else is refused with the reason)."""
        lang = lang_of(request)
        if demo:
            return tr(lang, "demo_readonly"), gr.skip(), gr.skip(), gr.skip()
        src = file if isinstance(file, str) else (file or {}).get("path") if isinstance(file, dict) else \
            getattr(file, "name", None)
        if not src:
            return tr(lang, "pr_no_file"), gr.skip(), gr.skip(), gr.skip()
        from dcclip_core.prompts import PromptError, PromptMismatchError, import_prompt
        if Path(src).suffix.lower() != ".safetensors":
            return tr(lang, "pr_not_safetensors", f=Path(src).name), gr.skip(), gr.skip(), gr.skip()
        name = safe_prompt_name(name or Path(src).stem)
        try:
            dst = import_prompt(src, name=name, model=be.any_model())
        except PromptMismatchError as e:
            return tr(lang, "pr_wrong_model", err=str(e)), gr.skip(), gr.skip(), gr.skip()
        except PromptError as e:
            return tr(lang, "pr_invalid", err=str(e).replace(str(src), Path(src).name)), gr.skip(), gr.skip(), gr.skip()
        tbl, dd, ch = prompts_view(request)
        return tr(lang, "pr_imported", name=dst.stem), tbl, dd, ch

    def prompt_delete(name: str, request: gr.Request):
        lang = lang_of(request)
        if demo:
            return tr(lang, "demo_readonly"), gr.skip(), gr.skip(), gr.skip()
        from dcclip_core.prompts import delete_prompt
        try:
            delete_prompt(name)
        except Exception as e:
            return tr(lang, "pr_failed", err=_err(e)), gr.skip(), gr.skip(), gr.skip()
        tbl, dd, ch = prompts_view(request)
        return tr(lang, "pr_deleted", name=name), tbl, dd, ch

    # -- Index tab: remove a folder ----------------------------------------------------------------
    def do_remove_folder(root: str, request: gr.Request):
        """Take a folder's photos out of the index (the files on disk are not touched; not in demo mode)."""
        lang = lang_of(request)
        if demo:
            return index_md(lang), be.bad_files(), tr(lang, "index_readonly"), gr.skip(), gr.skip()
        if not root or root not in be.roots():
            return index_md(lang), be.bad_files(), tr(lang, "msg_pick_folder"), gr.skip(), gr.skip()
        try:
            res = be.remove_root(root)
        except Exception as e:
            return index_md(lang), be.bad_files(), tr(lang, "msg_index_failed", err=_err(e)), gr.skip(), gr.skip()
        msg = tr(lang, "msg_removed", root=root, n=res["removed"], e=res["errors_removed"])
        return index_md(lang), be.bad_files(), msg, *folder_dropdowns()

    def folder_dropdowns():
        roots = be.roots()
        return (gr.Dropdown(choices=[(EN["folder_all"] + " · " + ZH["folder_all"], "")] + [(r, r) for r in roots],
                            value=""),
                gr.Dropdown(choices=roots, value=None))

    # -- Model tab: switch -------------------------------------------------------------------------
    def do_use_model(name: str, request: gr.Request):
        """Switch to another installed model; the index is re-embedded by a re-scan (the message says so)."""
        lang = lang_of(request)
        if demo:
            return tr(lang, "demo_readonly"), gr.skip()
        if be.state != "ready":
            return tr(lang, "msg_not_ready", status=be.status_text(lang)), gr.skip()
        try:
            res = be.switch_model(name)
        except Exception as e:
            return tr(lang, "msg_model_failed", err=_err(e)), gr.skip()
        key = "msg_model_ok" if res["vectors"] >= res["images"] else "msg_model_reindex"
        return tr(lang, key, model=res["model_id"], n=res["vectors"], total=res["images"]), be.about_md(lang)


    with gr.Blocks(title="DC-CLIP 照片搜索 · Photo search", fill_width=True) as app:
        gr.Markdown("# " + EN["title"], elem_id="title")
        gr.Markdown(T("subtitle"), elem_id="subtitle")
        status = gr.Markdown(be.status_text("en"), elem_id="status")
        with gr.Tab(T("tab_search")):
            with gr.Row(equal_height=False):
                with gr.Column(scale=3):
                    with gr.Row(equal_height=True, elem_id="search-bar"):
                        query = gr.Textbox(show_label=False, container=False, placeholder=T("query_placeholder"),
                                           scale=6, lines=1, max_lines=1, autofocus=True, elem_id="query")
                        btn = gr.Button(T("search_btn"), variant="primary", scale=1, min_width=100,
                                        elem_id="search-btn")
                    with gr.Row(elem_classes=["example-row"]):
                        gr.Markdown(T("examples_label"), container=False, min_width=40, elem_id="try")
                        ex_btns = [gr.Button(q, size="sm", variant="secondary", min_width=0, scale=0)
                                   for q in EXAMPLE_QUERIES]
                    with gr.Accordion(T("options"), open=False):
                        with gr.Row():
                            k = gr.Slider(1, 100, value=20, step=1, label=T("k_label"))
                            threshold = gr.Slider(SCORE_MIN, 1.0, value=DEFAULT_THRESHOLD, step=0.01,
                                                  label=T("threshold_label"), info=T("threshold_info"))
                        with gr.Row():
                            folder = gr.Dropdown([(EN["folder_all"] + " · " + ZH["folder_all"], "")] +
                                                 [(r, r) for r in be.roots(False)], value="", label=T("folder_label"),
                                                 visible=not demo, allow_custom_value=False, elem_id="folder")
                            date_from = gr.Textbox(label=T("date_from"), placeholder=T("date_placeholder"),
                                                   max_lines=1, elem_id="date-from")
                            date_to = gr.Textbox(label=T("date_to"), placeholder=T("date_placeholder"),
                                                 max_lines=1, elem_id="date-to")
                with gr.Column(scale=1, min_width=340):
                    image = gr.Image(type="filepath", label=T("image_label"), sources=["upload", "clipboard"],
                                     height=200, elem_id="image-query")
            message = gr.Markdown("", elem_id="message")
            gallery = thumb_gallery(label=T("gallery_label"), columns=5, height=620, object_fit="cover",
                                 allow_preview=True, show_label=False, elem_id="gallery", format="jpeg", fit_columns=False,
                                 interactive=False)
            result_paths = gr.State([])
            with gr.Accordion(T("detail_label"), open=True, elem_id="detail"):
                detail = gr.Markdown(T("detail_hint"), elem_id="detail-info")
                neighbours = thumb_gallery(label=T("neighbours_label"), columns=8, height=200, object_fit="cover",
                                        allow_preview=False, elem_id="neighbours", format="jpeg",
                                        interactive=False)
        with gr.Tab(T("tab_label"), elem_id="tab-label"):
            with gr.Row(equal_height=False):
                label_text = gr.Textbox(label=T("labels_label"), placeholder=T("labels_placeholder"),
                                        value="猫, 狗, 花, 咖啡, car, rocket", scale=4, elem_id="labels")
                label_prompt = gr.Dropdown([""] + library_names(), value="", label=T("label_prompt"),
                                           info=T("label_prompt_info"), scale=2, allow_custom_value=True,
                                           elem_id="label-prompt")
                label_btn = gr.Button(T("label_btn"), variant="primary", scale=1, min_width=160,
                                      elem_id="label-btn", elem_classes=["end-btn"])
            label_msg = gr.Markdown("", elem_id="label-msg")
            review = thumb_gallery(label=T("label_review"), columns=6, height=480, object_fit="cover",
                                allow_preview=False, elem_id="review", format="jpeg", interactive=False)
            review_paths = gr.State([])
            with gr.Row(equal_height=False):
                corr_photo = gr.Textbox(label=T("corr_photo"), placeholder=T("corr_photo_hint"), scale=3,
                                        max_lines=1, elem_id="corr-photo")
                corr_label = gr.Dropdown([], label=T("corr_label"), allow_custom_value=True, scale=2,
                                         elem_id="corr-label")
                corr_btn = gr.Button(T("corr_btn"), scale=1, min_width=140, elem_id="corr-btn",
                                     elem_classes=["end-btn"])
            with gr.Row(equal_height=False):
                with gr.Column(scale=2):
                    with gr.Row():
                        csv_btn = gr.Button(T("export_csv"), size="sm", min_width=110)
                        json_btn = gr.Button(T("export_json"), size="sm", min_width=110)
                    export_file = gr.File(label=T("export_file"), interactive=False, height=70, visible=False)
                with gr.Column(scale=3, visible=not demo):
                    with gr.Row(equal_height=False):
                        copy_dir = gr.Textbox(label=T("copy_dir"), placeholder=T("copy_dir_hint"), scale=3,
                                              max_lines=1, elem_id="copy-dir")
                        copy_btn = gr.Button(T("copy_btn"), scale=1, min_width=160, elem_id="copy-btn",
                                             elem_classes=["end-btn"])
        with gr.Tab(T("tab_fewshot"), elem_id="tab-fewshot"):
            fs_examples = gr.State({})
            fs_paths = gr.State([])
            fs_picked = gr.State([])
            fs_prompt = gr.State(None)
            gr.Markdown(T("fs_intro"), elem_id="fs-intro")
            with gr.Row(equal_height=False):
                with gr.Column(scale=3):
                    with gr.Row(equal_height=True):
                        fs_query = gr.Textbox(show_label=False, container=False, placeholder=T("fs_find_label"),
                                              scale=4, max_lines=1, elem_id="fs-query")
                        fs_find_btn = gr.Button(T("search_btn"), scale=1, min_width=100, elem_id="fs-find")
                    fs_results = thumb_gallery(show_label=False, columns=6, height=330, object_fit="cover",
                                            allow_preview=False, elem_id="fs-results", format="jpeg",
                                            interactive=False)
                with gr.Column(scale=2, min_width=320):
                    fs_class = gr.Textbox(label=T("fs_class"), placeholder=T("fs_class_hint"), max_lines=1,
                                          elem_id="fs-class")
                    fs_upload = gr.File(label=T("fs_upload"), file_count="multiple", file_types=["image"],
                                        type="filepath", height=110, elem_id="fs-upload")
                    with gr.Row():
                        fs_add_btn = gr.Button(T("fs_add"), variant="secondary", elem_id="fs-add")
                        fs_clear_btn = gr.Button(T("fs_clear"), size="sm", elem_id="fs-clear")
                    fs_msg = gr.Markdown("", elem_id="fs-msg")
                    fs_table_df = gr.Dataframe(value=[], headers=["类别 · Class", "例子 · Examples", "照片 · Photos"],
                                               interactive=False, wrap=True, column_count=(3, "fixed"),
                                               max_height=200, elem_id="fs-table")
            with gr.Row(equal_height=False):
                with gr.Column(scale=2):
                    fs_method = gr.Radio(FS_METHODS, value="tip-adapter", label=T("fs_method"),
                                         info=T("fs_method_info"), elem_id="fs-method")
                    fs_steps = gr.Slider(5, 300, value=FS_STEPS, step=5, label=T("fs_steps"), elem_id="fs-steps")
                    fs_learn_btn = gr.Button(T("fs_learn"), variant="primary", elem_id="fs-learn")
                    fs_result = gr.Markdown("", elem_id="fs-result")
                    with gr.Row(equal_height=False, visible=not demo):
                        fs_name = gr.Textbox(label=T("fs_name"), placeholder="my-pets", max_lines=1, scale=3,
                                             elem_id="fs-name")
                        fs_save_btn = gr.Button(T("fs_save"), scale=1, min_width=120, elem_id="fs-save",
                                                elem_classes=["end-btn"])
                    fs_save_msg = gr.Markdown("", elem_id="fs-save-msg")
                with gr.Column(scale=3):
                    fs_loss = gr.LinePlot(fs_plot([]), x="step", y="loss", label=T("fs_loss"), height=300,
                                          x_title=T("fs_axis_step"), y_title=T("fs_axis_loss"), elem_id="fs-loss")
        with gr.Tab(T("tab_prompts"), elem_id="tab-prompts") as prompts_tab:
            pr_table = gr.Dataframe(value=[], headers=["名称 Name", "方法 Method", "类 #", "类别 Labels",
                                                       "样本 Shots", "验证 Val", "适用 Fits", "来源 Source"],
                                    interactive=False, wrap=True, column_count=(8, "fixed"), max_height=300,
                                    column_widths=["17%", "10%", "6%", "35%", "8%", "8%", "8%", "8%"],
                                    elem_id="pr-table")
            with gr.Row(equal_height=False):
                with gr.Column(scale=3):
                    pr_pick = gr.Dropdown(library_names(), value=None, label=T("pr_pick_label"),
                                          allow_custom_value=True, elem_id="pr-pick")
                    pr_info = gr.Markdown(T("pr_pick"), elem_id="pr-info")
                    with gr.Row():
                        pr_apply_btn = gr.Button(T("pr_apply"), variant="primary", elem_id="pr-apply")
                        pr_export_btn = gr.Button(T("pr_export"), elem_id="pr-export")
                        pr_delete_btn = gr.Button(T("pr_delete"), variant="stop", visible=not demo,
                                                  elem_id="pr-delete")
                    pr_msg = gr.Markdown("", elem_id="pr-msg")
                    pr_file = gr.File(label=T("export_file"), file_count="multiple", interactive=False,
                                      height=90, visible=False, elem_id="pr-file")
                with gr.Column(scale=2, visible=not demo):
                    pr_upload = gr.File(label=T("pr_import_file"), file_types=[".safetensors"], type="filepath",
                                        height=110, elem_id="pr-upload")
                    pr_import_name = gr.Textbox(label=T("pr_import_name"), max_lines=1, elem_id="pr-import-name")
                    pr_import_btn = gr.Button(T("pr_import"), elem_id="pr-import")
        with gr.Tab(T("tab_index"), elem_id="tab-index") as index_tab:
            index_info = gr.Markdown("", elem_id="index-info")          # filled when the tab opens
            with gr.Row(visible=not demo):
                rescan_btn = gr.Button(T("rescan_btn"), variant="secondary", scale=0, min_width=200,
                                       elem_id="rescan-btn")
            with gr.Row(visible=not demo, equal_height=False):
                add_folder = gr.Textbox(label=T("add_folder_label"), placeholder=T("add_folder_placeholder"),
                                        scale=5, elem_id="add-folder")
                add_btn = gr.Button(T("add_folder_btn"), variant="primary", scale=1, min_width=160,
                                    elem_classes=["end-btn"])
            with gr.Row(visible=not demo, equal_height=False):
                remove_pick = gr.Dropdown(be.roots(False), value=None, label=T("remove_folder_label"),
                                          allow_custom_value=True,  # checked against the indexed folders
                                          info=T("remove_folder_info"), scale=5, elem_id="remove-folder")
                remove_btn = gr.Button(T("remove_folder_btn"), variant="stop", scale=1, min_width=160,
                                       elem_classes=["end-btn"],
                                       elem_id="remove-btn")
            index_msg = gr.Markdown("", elem_id="index-msg")
            bad_files = gr.Dataframe(value=be.bad_files(), headers=["文件 · File", "原因 · Reason"],
                                     label=T("index_bad"), interactive=False, wrap=True, max_height=400,
                                     column_count=(2, "fixed"), elem_id="bad-files")
        with gr.Tab(T("tab_model"), elem_id="tab-model") as model_tab:
            models = installed_models()
            with gr.Row(equal_height=False):
                model_pick = gr.Dropdown(models, value=models[0], label=T("model_pick"), scale=4,
                                         elem_id="model-pick")
                model_use_btn = gr.Button(T("model_use"), scale=1, min_width=160, visible=not demo,
                                          elem_classes=["end-btn"],
                                          elem_id="model-use")
            model_msg = gr.Markdown("", elem_id="model-msg")
            metrics = gr.Markdown(metrics_md(models[0], "en"), elem_id="metrics")
            model_about = gr.Markdown(be.about_md("en"), elem_id="model-about")
        with gr.Accordion(T("about"), open=False):
            about = gr.Markdown(be.about_md("en"), elem_id="about")

        inputs = [query, k, threshold, folder, date_from, date_to]
        outs = [gallery, message, result_paths]
        # searches are short (an 8 ms index query + thumbnails as URLs): no queue limit
        query.submit(do_search, inputs, outs, api_name="search", concurrency_limit=None)
        btn.click(do_search, inputs, outs, api_visibility="private", concurrency_limit=None)
        for b, q in zip(ex_btns, EXAMPLE_QUERIES):
            b.click(lambda q=q: q, None, query, queue=False, api_visibility="private").then(
                do_search, inputs, outs, api_visibility="private", concurrency_limit=None)
        # .change also covers a pasted (clipboard) photo, which fires no upload event
        image.change(do_image_search, [image, k, threshold, folder, date_from, date_to], outs,
                     api_name="search_image")
        gallery.select(on_select, [result_paths], [detail, neighbours], api_visibility="private")
        gr.api(api_detail, api_name="detail")
        timer = gr.Timer(1.0)
        timer.tick(poll, None, [status, about, timer, folder, remove_pick], api_visibility="private", queue=False)
        app.load(poll, None, [status, about, timer, folder, remove_pick], api_visibility="private", queue=False)
        gr.api(api_status, api_name="status")
        gr.api(api_search, api_name="search_json", concurrency_limit=None)

        # Label tab
        label_outs = [review, label_msg, review_paths, corr_label]
        label_text.submit(do_label, [label_text, label_prompt], label_outs, api_visibility="private",
                          concurrency_limit=1, concurrency_id="write")
        label_btn.click(do_label, [label_text, label_prompt], label_outs, api_name="label", concurrency_limit=1,
                        concurrency_id="write")
        review.select(on_review_select, [review_paths], [corr_photo], api_visibility="private", queue=False)
        corr_btn.click(do_correct, [corr_photo, corr_label], label_outs, api_name="label_correct",
                       concurrency_limit=1, concurrency_id="write")
        def export_csv(request: gr.Request):
            return do_export("csv", request)

        def export_json(request: gr.Request):
            return do_export("json", request)

        csv_btn.click(export_csv, None, [export_file, label_msg], api_name="export_csv")
        json_btn.click(export_json, None, [export_file, label_msg], api_name="export_json")
        copy_btn.click(do_copy, [copy_dir], [label_msg], api_name="label_copy", concurrency_limit=1)

        # Few-shot tab
        fs_query.submit(fs_find, [fs_query], [fs_results, fs_paths, fs_picked, fs_msg], api_visibility="private")
        fs_find_btn.click(fs_find, [fs_query], [fs_results, fs_paths, fs_picked, fs_msg], api_name="fewshot_find")
        fs_results.select(fs_toggle, [fs_paths, fs_picked], [fs_results, fs_picked], api_visibility="private")
        fs_add_btn.click(fs_add, [fs_class, fs_upload, fs_paths, fs_picked, fs_examples],
                         [fs_examples, fs_table_df, fs_msg, fs_picked, fs_results], api_name="fewshot_add").then(
            lambda: None, None, [fs_upload], api_visibility="private", queue=False)
        fs_clear_btn.click(fs_clear, None, [fs_examples, fs_table_df, fs_msg, fs_prompt, fs_upload],
                           api_name="fewshot_clear")
        fs_learn_btn.click(fs_learn, [fs_method, fs_steps, fs_examples], [fs_loss, fs_result, fs_prompt],
                           api_name="fewshot_learn", concurrency_limit=1, concurrency_id="learn")
        fs_save_btn.click(fs_save, [fs_name, fs_prompt], [fs_save_msg, label_prompt, pr_pick],
                          api_name="fewshot_save")

        # Prompts tab
        prompts_tab.select(prompts_view, None, [pr_table, pr_pick, label_prompt], api_name="prompts_list")
        pr_pick.change(prompt_detail, [pr_pick], [pr_info], api_name="prompt_detail", queue=False)
        pr_apply_btn.click(prompt_apply, [pr_pick], [pr_msg, review, label_msg, review_paths, corr_label],
                           api_name="prompt_apply", concurrency_limit=1, concurrency_id="write")
        pr_export_btn.click(prompt_export, [pr_pick], [pr_file, pr_msg], api_name="prompt_export")
        pr_import_btn.click(prompt_import, [pr_upload, pr_import_name], [pr_msg, pr_table, pr_pick, label_prompt],
                            api_name="prompt_import")
        pr_delete_btn.click(prompt_delete, [pr_pick], [pr_msg, pr_table, pr_pick, label_prompt],
                            api_name="prompt_delete")

        # Index and Model tabs
        index_tab.select(index_view, None, [index_info, bad_files], api_name="index_info", queue=False)
        rescan_btn.click(do_rescan, None, [index_info, bad_files, index_msg], api_name="rescan",
                         concurrency_limit=1, concurrency_id="write")
        add_folder.submit(do_add_folder, [add_folder], [index_info, bad_files, index_msg],
                          api_visibility="private", concurrency_limit=1, concurrency_id="write").then(
            folder_dropdowns, None, [folder, remove_pick], api_visibility="private", queue=False)
        add_btn.click(do_add_folder, [add_folder], [index_info, bad_files, index_msg], api_name="add_folder",
                      concurrency_limit=1, concurrency_id="write").then(
            folder_dropdowns, None, [folder, remove_pick], api_visibility="private", queue=False)
        remove_btn.click(do_remove_folder, [remove_pick], [index_info, bad_files, index_msg, folder, remove_pick],
                         api_name="remove_folder", concurrency_limit=1, concurrency_id="write")
        model_tab.select(model_view, [model_pick], [metrics, model_about], api_visibility="private", queue=False)
        model_pick.change(model_view, [model_pick], [metrics, model_about], api_name="model_card", queue=False)
        model_use_btn.click(do_use_model, [model_pick], [model_msg, model_about], api_name="model_use",
                            concurrency_limit=1, concurrency_id="write")

    app.backend = be  # for tests and main()
    return app


def launch_kwargs(app: gr.Blocks, demo: bool = False) -> dict:
    """Arguments for app.launch(): translations, looks and the files the page may serve."""
    be: Backend = app.backend
    # Results are shown as cached thumbnails, so only the thumbnail folder must be served; originals
    # inside the indexed root stay reachable for full-size viewing, except in the read-only demo mode.
    allowed = [str(be.thumb_dir)]
    if be.root is not None and not demo:
        allowed.append(str(be.root))
    be.thumb_dir.mkdir(parents=True, exist_ok=True)
    return dict(i18n=I18N, css=CSS, theme=gr.themes.Soft(primary_hue="indigo"), allowed_paths=allowed,
                app_kwargs={"routes": thumb_routes(be)},
                max_file_size=MAX_UPLOAD, share=False,
                footer_links=[] if demo else ["api", "settings"])


def parse_args(argv=None):
    p = argparse.ArgumentParser(description="DC-CLIP bilingual offline photo search (Gradio).")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=int(os.environ.get("GRADIO_SERVER_PORT") or 7860))
    p.add_argument("--db", default=None, help="index database (default: the demo photos, indexed into "
                                              "$DCCLIP_CACHE/demo.db)")
    p.add_argument("--root", default=None, help="folder to (re)index into --db in the background")
    p.add_argument("--demo", action="store_true", help="conference kiosk mode: read-only, no file paths")
    p.add_argument("--auth", default=None, help="user:password required to open the page")
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    cache = default_cache()
    root = args.root
    if args.db is None:
        db = cache / "demo.db"
        root = root or str(DEMO_ROOT)
    else:
        db = Path(args.db)
    auth = None
    if args.auth:
        if ":" not in args.auth:
            sys.exit("--auth must be user:password")
        auth = tuple(args.auth.split(":", 1))
    t0 = time.time()
    # the queue's default limit for events that set none (Blocks makes its queue when built; a second
    # app.queue() call would rebuild the whole route table: 0.3 s of start-up)
    os.environ.setdefault("GRADIO_DEFAULT_CONCURRENCY_LIMIT", "4")
    # gradio rebuilds its monitoring summary (a pandas frame of up to 10k past events) after every event by
    # default: on a busy page that is most of a search's server time. Every 200 events, over the last 2000.
    os.environ.setdefault("GRADIO_ANALYTICS_CACHE_FREQUENCY", "200")
    os.environ.setdefault("GRADIO_ANALYTICS_MAX_EVENTS", "2000")
    be = Backend(db, root=root, demo=args.demo, thumb_dir=cache / "thumbs")
    app = build_app(db, demo=args.demo, backend=be, start=False)
    kw = launch_kwargs(app, demo=args.demo)
    print(f"UI built in {time.time() - t0:.2f}s", flush=True)
    app.launch(server_name=args.host, server_port=args.port, auth=auth, show_error=False,
               prevent_thread_lock=True, **kw)
    be.start()  # model load, warm-up and indexing begin once the page is served
    print(f"page served after {time.time() - T_START:.2f}s (from interpreter start)", flush=True)
    app.block_thread()


if __name__ == "__main__":
    main()
