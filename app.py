"""DC-CLIP photo search: a bilingual (Chinese/English) offline photo search page (Gradio 6).

    python app.py [--host 127.0.0.1] [--port 7860] [--db PATH] [--root DIR] [--demo] [--auth user:pass]

Without --db the bundled demo photos (assets/demo) are indexed into <cache>/demo.db, where <cache> is
$DCCLIP_CACHE or ~/.cache/dcclip. The page is built at once; the model loads, warms up and the index is
(re)built in a background thread while a status line reports progress. This module never imports torch.
"""
from __future__ import annotations

import argparse
import hashlib
import os
import sys
import threading
import time
from pathlib import Path
from typing import Any

import gradio as gr

HERE = Path(__file__).resolve().parent
DEMO_ROOT = HERE / "assets" / "demo"
EXAMPLE_QUERIES = ["猫", "a cat", "一杯咖啡", "rocket launch", "红色的花", "寺庙", "蝴蝶", "astronaut"]
THUMB_SIZE = 512
# Scores are cosine similarities. By default a photo must score at least 0 (negative = unrelated);
# the slider's minimum (-0.2) lifts the limit and shows every photo, ranked.
SCORE_MIN = -0.2
DEFAULT_THRESHOLD = 0.0
MAX_UPLOAD = "20mb"

# ---------------------------------------------------------------------------------------------------
# Translations. Static labels use I18N(key) (translated in the browser from its language); messages
# built at run time (status, counts) are formatted server-side in the language the request asks for.
# ---------------------------------------------------------------------------------------------------
EN = {
    "title": "DC-CLIP 照片搜索 · Photo search",
    "subtitle": "Search your photos in Chinese or English, fully offline on this computer — "
                "type what you are looking for, or drop in a photo to find similar ones.",
    "tab_search": "Search",
    "query_label": "Describe the photo",
    "query_placeholder": "Describe a photo, e.g. 猫 / a cat / 一杯咖啡",
    "search_btn": "Search",
    "examples_label": "Try:",
    "k_label": "Number of results",
    "threshold_label": "Minimum score",
    "threshold_info": "Hide weaker matches; move to the far left to show every photo, ranked.",
    "gallery_label": "Results",
    "image_label": "Search by image",
    "image_btn": "Find similar photos",
    "about": "About / Model",
    "refresh": "Refresh",
    "options": "Options",
    # run-time messages
    "st_starting": "Starting…",
    "st_loading": "Loading the model…",
    "st_indexing": "Indexing demo photos… {done}/{total}",
    "st_indexing_n": "Indexing photos… {done}/{total}",
    "st_ready": "Ready: {n} photos · model {model}",
    "st_error": "Could not start: {err}",
    "msg_not_ready": "Still getting ready ({status}). Please try again in a few seconds.",
    "msg_empty": "Type something to search for, e.g. 猫 or “a cat”.",
    "msg_no_image": "Upload a photo first.",
    "msg_results": "{n} results for “{q}” · {ms} ms",
    "msg_results_img": "{n} similar photos · {ms} ms",
    "msg_none": "No photos scored above {t:.2f} for “{q}”. Lower the minimum score or try other words.",
    "msg_none_img": "No similar photos scored above {t:.2f}.",
    "msg_failed": "Search failed: {err}",
    "about_model": "Model",
    "about_index": "Index",
    "about_id": "id", "about_hash": "hash", "about_dims": "dimensions", "about_langs": "languages",
    "about_images": "photos", "about_errors": "unreadable files", "about_db": "database",
    "about_offline": "Everything runs locally: no photo or query leaves this computer.",
    "about_wait": "Model information appears when the model has loaded.",
}
ZH = {
    "title": "DC-CLIP 照片搜索 · Photo search",
    "subtitle": "用中文或英文搜索你的照片，完全离线、在本机运行——输入你要找的内容，或上传一张照片查找相似的照片。",
    "tab_search": "搜索",
    "query_label": "描述你要找的照片",
    "query_placeholder": "描述你要找的照片，例如：猫 / a cat / 一杯咖啡",
    "search_btn": "搜索",
    "examples_label": "试试：",
    "k_label": "结果数量",
    "threshold_label": "最低分数",
    "threshold_info": "隐藏较弱的匹配；拖到最左边则按分数显示全部照片。",
    "gallery_label": "搜索结果",
    "image_label": "以图搜图",
    "image_btn": "查找相似照片",
    "about": "关于 / 模型",
    "refresh": "刷新",
    "options": "选项",
    "st_starting": "正在启动…",
    "st_loading": "正在加载模型…",
    "st_indexing": "正在为示例照片建立索引… {done}/{total}",
    "st_indexing_n": "正在建立索引… {done}/{total}",
    "st_ready": "就绪：{n} 张照片 · 模型 {model}",
    "st_error": "启动失败：{err}",
    "msg_not_ready": "仍在准备中（{status}），请稍后几秒再试。",
    "msg_empty": "请输入要搜索的内容，例如“猫”或 “a cat”。",
    "msg_no_image": "请先上传一张照片。",
    "msg_results": "“{q}”的 {n} 个结果 · {ms} 毫秒",
    "msg_results_img": "{n} 张相似照片 · {ms} 毫秒",
    "msg_none": "没有分数高于 {t:.2f} 的照片（“{q}”）。请降低最低分数或换个说法。",
    "msg_none_img": "没有分数高于 {t:.2f} 的相似照片。",
    "msg_failed": "搜索出错：{err}",
    "about_model": "模型",
    "about_index": "索引",
    "about_id": "编号", "about_hash": "哈希", "about_dims": "维度", "about_langs": "语言",
    "about_images": "照片", "about_errors": "无法读取的文件", "about_db": "数据库",
    "about_offline": "一切都在本机运行：照片和搜索内容不会离开这台电脑。",
    "about_wait": "模型加载完成后显示模型信息。",
}
I18N = gr.I18n(en=EN, zh=ZH, **{"zh-CN": ZH, "zh-TW": ZH, "zh-HK": ZH})
T = I18N  # T(name) -> a label the browser translates


def lang_of(request: gr.Request | None) -> str:
    """'zh' when the browser asks for Chinese first, else 'en' (for messages formatted server-side)."""
    try:
        al = (request.headers.get("accept-language") or "") if request is not None else ""
    except Exception:
        al = ""
    first = al.split(",")[0].strip().lower()
    return "zh" if first.startswith("zh") else "en"


def tr(lang: str, key: str, **kw) -> str:
    s = (ZH if lang == "zh" else EN).get(key) or EN.get(key, key)
    return s.format(**kw) if kw else s


def default_cache() -> Path:
    return Path(os.environ.get("DCCLIP_CACHE") or Path.home() / ".cache" / "dcclip")


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
        self._thread: threading.Thread | None = None
        self.started = time.time()
        self.ready_at: float | None = time.time() if searcher is not None else None

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

    # -- search --------------------------------------------------------------------------------
    def thumbnail(self, path: str) -> str:
        """A cached JPEG thumbnail for `path` (served instead of the original: no original file path
        ever reaches the browser, and big photos are not sent whole)."""
        from PIL import Image, ImageOps
        p = Path(path)
        try:
            st = p.stat()
            key = hashlib.sha1(f"{p.resolve()}|{st.st_mtime_ns}|{st.st_size}|{THUMB_SIZE}".encode()).hexdigest()
        except OSError:
            return path
        out = self.thumb_dir / key[:2] / f"{key}.jpg"
        if out.exists():
            return str(out)
        out.parent.mkdir(parents=True, exist_ok=True)
        try:
            with Image.open(p) as im:
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

    def run_search(self, query=None, image=None, k=20, threshold=None):
        if self.searcher is None:
            raise RuntimeError("not ready")
        if image is not None:
            return self.searcher.search_image(image, k=int(k), threshold=threshold)
        return self.searcher.search(query, k=int(k), threshold=threshold)


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
"""


def build_app(db_path: str | Path, model=None, searcher=None, demo: bool = False,
              root: str | Path | None = None, backend: Backend | None = None) -> gr.Blocks:
    """Build the Blocks UI. With `searcher` given it is used as is; otherwise the model loads (and
    `root`, if given, is indexed into `db_path`) in a background thread started here."""
    be = backend or Backend(db_path, model=model, searcher=searcher, root=root, demo=demo)
    be.demo = demo = bool(be.demo or demo)
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

    def do_search(query, k, threshold, request: gr.Request):
        lang = lang_of(request)
        q = (query or "").strip()
        if be.state != "ready":
            return not_ready(lang)
        if not q:
            return [], tr(lang, "msg_empty")
        t0 = time.perf_counter()
        try:
            res = be.run_search(query=q, k=k, threshold=_threshold(threshold))
        except Exception as e:
            return [], tr(lang, "msg_failed", err=f"{type(e).__name__}: {e}")
        ms = int((time.perf_counter() - t0) * 1000)
        if not res:
            return [], tr(lang, "msg_none", t=_floor(threshold), q=q)
        items = [(be.thumbnail(r["path"]), _caption(r)) for r in res]
        return items, tr(lang, "msg_results", n=len(res), q=q, ms=ms)

    def do_image_search(image, k, threshold, request: gr.Request):
        lang = lang_of(request)
        if be.state != "ready":
            return not_ready(lang)
        if not image:  # cleared: keep the current results
            return gr.skip(), gr.skip()
        t0 = time.perf_counter()
        try:
            res = be.run_search(image=image, k=k, threshold=_threshold(threshold))
        except Exception as e:
            return [], tr(lang, "msg_failed", err=f"{type(e).__name__}: {e}")
        ms = int((time.perf_counter() - t0) * 1000)
        if not res:
            return [], tr(lang, "msg_none_img", t=_floor(threshold))
        items = [(be.thumbnail(r["path"]), _caption(r)) for r in res]
        return items, tr(lang, "msg_results_img", n=len(res), ms=ms)

    def poll(request: gr.Request):
        lang = lang_of(request)
        done = be.state in ("ready", "error")
        return be.status_text(lang), be.about_md(lang), gr.Timer(active=not done)

    def api_status() -> dict:
        """Start-up state: {"state": starting|loading|indexing|ready|error, "done", "total", "images", ...}."""
        return be.status()

    def api_search(query: str, k: int = 20) -> list:
        """Text search as JSON: [{"name": file name, "score": float}, ...] best first ([] until ready)."""
        if be.state != "ready" or not (query or "").strip():
            return []
        res = be.run_search(query=query.strip(), k=k)
        return [{"name": Path(str(r["path"])).name, "score": round(float(r["score"]), 4)} for r in res]

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
                with gr.Column(scale=1, min_width=340):
                    image = gr.Image(type="filepath", label=T("image_label"), sources=["upload", "clipboard"],
                                     height=200, elem_id="image-query")
            message = gr.Markdown("", elem_id="message")
            gallery = gr.Gallery(label=T("gallery_label"), columns=5, height=620, object_fit="cover",
                                 allow_preview=True, show_label=False, elem_id="gallery", format="jpeg", fit_columns=False,
                                 interactive=False)
        with gr.Accordion(T("about"), open=False):
            about = gr.Markdown(be.about_md("en"), elem_id="about")

        inputs = [query, k, threshold]
        query.submit(do_search, inputs, [gallery, message], api_name="search")
        btn.click(do_search, inputs, [gallery, message], api_visibility="private")
        for b, q in zip(ex_btns, EXAMPLE_QUERIES):
            b.click(lambda q=q: q, None, query, queue=False, api_visibility="private").then(
                do_search, inputs, [gallery, message], api_visibility="private")
        # .change also covers a pasted (clipboard) photo, which fires no upload event
        image.change(do_image_search, [image, k, threshold], [gallery, message], api_name="search_image")
        timer = gr.Timer(1.0)
        timer.tick(poll, None, [status, about, timer], api_visibility="private", queue=False)
        app.load(poll, None, [status, about, timer], api_visibility="private", queue=False)
        gr.api(api_status, api_name="status")
        gr.api(api_search, api_name="search_json")

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
    be = Backend(db, root=root, demo=args.demo, thumb_dir=cache / "thumbs")
    app = build_app(db, demo=args.demo, backend=be)
    kw = launch_kwargs(app, demo=args.demo)
    print(f"UI built in {time.time() - t0:.2f}s", flush=True)
    app.queue(default_concurrency_limit=4).launch(server_name=args.host, server_port=args.port, auth=auth,
                                                  show_error=False, **kw)


if __name__ == "__main__":
    main()
