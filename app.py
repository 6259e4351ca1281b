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
DUP_SCORE = 0.95           # neighbours at least this similar are shown as likely duplicates
DEFAULT_THRESHOLD = 0.0
MAX_UPLOAD = "20mb"
LABEL_SET = "app"          # the label set the Label tab writes
REVIEW_MAX = 200           # photos shown in the label review grid
ROOTS_META = "app_roots"   # DB meta key: JSON list of folders added in the Index tab

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
    "tab_index": "Index",
    "index_roots": "Indexed folders",
    "index_counts": "{n} photos · {e} unreadable files",
    "index_bad": "Unreadable files and why",
    "col_file": "File", "col_reason": "Reason",
    "rescan_btn": "Re-scan folders",
    "add_folder_label": "Add a folder",
    "add_folder_placeholder": "Full path of a folder with photos, e.g. /home/me/Pictures",
    "add_folder_btn": "Add and index",
    "index_readonly": "Demo mode: the index is read-only.",
    "msg_scanning": "Scanning {root}",
    "msg_rescanned": "Re-scanned {n} folder(s): {added} new, {updated} updated, {removed} removed, {errors} unreadable · {s} s",
    "msg_added": "Indexed {root}: {added} new photos, {errors} unreadable · {s} s",
    "msg_no_folder": "Type the full path of a folder first.",
    "msg_not_folder": "Not a folder: {root}",
    "msg_index_failed": "Indexing failed: {err}",
    "index_none": "No folders indexed yet.",
    "filters": "Filters",
    "folder_label": "Folder",
    "folder_all": "All folders",
    "date_from": "From date", "date_to": "To date", "date_placeholder": "YYYY-MM-DD",
    "msg_bad_date": "Dates look like 2024-05-31 (got “{d}”).",
    "detail_label": "Photo details",
    "detail_hint": "Click a photo in the results to see similar photos and duplicates.",
    "neighbours_label": "Similar photos",
    "dups_none": "No duplicates of this photo.",
    "dups_some": "Likely duplicates: {names}",
    "detail_taken": "taken", "detail_size": "size",
    "tab_label": "Label",
    "labels_label": "Labels (comma separated, Chinese or English)",
    "labels_placeholder": "e.g. 猫, 狗, 花, car",
    "label_btn": "Label all photos",
    "label_review": "Review: best label · score",
    "export_csv": "Export CSV", "export_json": "Export JSON",
    "export_file": "Download",
    "msg_labeling": "Labelling photos",
    "msg_labeled": "Labelled {n} photos with {l} labels · {s} s — {counts}",
    "msg_no_labels": "Type some labels first, e.g. 猫, 狗, 花, car.",
    "msg_label_failed": "Labelling failed: {err}",
    "msg_label_first": "Label the photos first.",
    "tab_model": "Model",
    "model_pick": "Installed models",
    "model_metrics": "Model card metrics",
    "model_in_use": "In use",
    "m_lang": "Language", "m_r1": "Real photos recall@1", "m_r5": "Real photos recall@5",
    "m_in1": "ImageNet held-out top-1", "m_n": "queries",
    "m_note": "Real photos: {n} photos, each found by its own captions; ImageNet: classes never seen in training.",
    "m_none": "No metrics.json for this model.",
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
    "tab_index": "索引",
    "index_roots": "已索引的文件夹",
    "index_counts": "{n} 张照片 · {e} 个无法读取的文件",
    "index_bad": "无法读取的文件及原因",
    "col_file": "文件", "col_reason": "原因",
    "rescan_btn": "重新扫描文件夹",
    "add_folder_label": "添加文件夹",
    "add_folder_placeholder": "照片文件夹的完整路径，例如 /home/me/Pictures",
    "add_folder_btn": "添加并建立索引",
    "index_readonly": "演示模式：索引为只读。",
    "msg_scanning": "正在扫描 {root}",
    "msg_rescanned": "已重新扫描 {n} 个文件夹：新增 {added}，更新 {updated}，移除 {removed}，无法读取 {errors} · {s} 秒",
    "msg_added": "已为 {root} 建立索引：新增 {added} 张照片，无法读取 {errors} 个 · {s} 秒",
    "msg_no_folder": "请先输入文件夹的完整路径。",
    "msg_not_folder": "不是文件夹：{root}",
    "msg_index_failed": "建立索引出错：{err}",
    "index_none": "尚未索引任何文件夹。",
    "filters": "筛选",
    "folder_label": "文件夹",
    "folder_all": "全部文件夹",
    "date_from": "起始日期", "date_to": "截止日期", "date_placeholder": "年-月-日，如 2024-05-31",
    "msg_bad_date": "日期格式应为 2024-05-31（收到“{d}”）。",
    "detail_label": "照片详情",
    "detail_hint": "点击结果中的照片，查看相似照片和重复照片。",
    "neighbours_label": "相似照片",
    "dups_none": "这张照片没有重复。",
    "dups_some": "可能的重复：{names}",
    "detail_taken": "拍摄于", "detail_size": "尺寸",
    "tab_label": "标注",
    "labels_label": "标签（用逗号分隔，中文或英文）",
    "labels_placeholder": "例如：猫, 狗, 花, car",
    "label_btn": "标注全部照片",
    "label_review": "检查：最佳标签 · 分数",
    "export_csv": "导出 CSV", "export_json": "导出 JSON",
    "export_file": "下载",
    "msg_labeling": "正在标注照片",
    "msg_labeled": "已用 {l} 个标签标注 {n} 张照片 · {s} 秒 —— {counts}",
    "msg_no_labels": "请先输入标签，例如：猫, 狗, 花, car。",
    "msg_label_failed": "标注出错：{err}",
    "msg_label_first": "请先标注照片。",
    "tab_model": "模型",
    "model_pick": "已安装的模型",
    "model_metrics": "模型卡指标",
    "model_in_use": "正在使用",
    "m_lang": "语言", "m_r1": "真实照片 recall@1", "m_r5": "真实照片 recall@5",
    "m_in1": "ImageNet 未见类别 top-1", "m_n": "查询数",
    "m_note": "真实照片：{n} 张照片，用各自的描述检索；ImageNet：训练中从未见过的类别。",
    "m_none": "该模型没有 metrics.json。",
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
# Model card
# ---------------------------------------------------------------------------------------------------
LANG_NAMES = {"en": "English", "zh": "中文 (简体)", "zh_hant": "中文 (繁體)"}


def installed_models() -> list[str]:
    try:
        import dcclip_core
        return list(dcclip_core.list_models()) or ["default"]
    except Exception:
        return ["default"]


def model_metrics(name: str = "default") -> dict:
    """assets/models/<name>/metrics.json (or {})."""
    import json
    try:
        from dcclip_core import model_dir
        d = Path(model_dir(name))
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
    def roots(self) -> list[str]:
        """The folders indexed into this DB (the start-up root + folders added in the Index tab)."""
        out = [str(self.root)] if self.root is not None else []
        try:
            from index import PhotoDB
            if Path(self.db_path).exists():
                with PhotoDB(self.db_path, create=False) as db:
                    import json
                    for r in json.loads(db.get_meta(ROOTS_META) or "[]"):
                        if r not in out:
                            out.append(r)
        except Exception:
            pass
        return out

    def _remember_root(self, root: str) -> None:
        import json
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

    def run_search(self, query=None, image=None, k=20, threshold=None, **filters):
        """Text or image search; filters (folder, date_from, date_to) are passed on only when set."""
        if self.searcher is None:
            raise RuntimeError("not ready")
        filters = {key: v for key, v in filters.items() if v}
        if image is not None:
            return self.searcher.search_image(image, k=int(k), threshold=threshold, **filters)
        return self.searcher.search(query, k=int(k), threshold=threshold, **filters)


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

    def do_search(query, k, threshold, folder=None, date_from=None, date_to=None, request: gr.Request = None):
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
            res = be.run_search(query=q, k=k, threshold=_threshold(threshold), **f)
        except Exception as e:
            return [], tr(lang, "msg_failed", err=f"{type(e).__name__}: {e}"), []
        ms = int((time.perf_counter() - t0) * 1000)
        if not res:
            return [], tr(lang, "msg_none", t=_floor(threshold), q=q), []
        items = [(be.thumbnail(r["path"]), _caption(r)) for r in res]
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
        items = [(be.thumbnail(r["path"]), _caption(r)) for r in res]
        return items, tr(lang, "msg_results_img", n=len(res), ms=ms), [r["path"] for r in res]

    def photo_detail(path: str, lang: str, k: int = 8):
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
        return "\n\n".join(lines), [(be.thumbnail(r["path"]), _caption(r)) for r in near]

    def on_select(paths, evt: gr.SelectData, request: gr.Request):
        lang = lang_of(request)
        try:
            path = paths[int(evt.index)]
        except (TypeError, ValueError, IndexError):
            return gr.skip(), gr.skip()
        return photo_detail(path, lang)

    def api_detail(name: str) -> dict:
        """A photo's nearest neighbours and likely duplicates, by its file name (or path outside demo)."""
        if be.state != "ready":
            return {}
        path = name
        if demo or not Path(name).is_absolute():  # a bare file name: look it up in the index
            from index import PhotoDB
            base = Path(name).name
            with PhotoDB(be.db_path, create=False) as db:
                rows = db.query("SELECT path FROM images WHERE path LIKE ? ORDER BY path LIMIT 50",
                                ("%" + base,))
            path = next((r["path"] for r in rows if Path(r["path"]).name == base), name)
        near = be.searcher.similar(path, k=8)
        return {"neighbours": [{"name": Path(str(r["path"])).name, "score": round(float(r["score"]), 4)}
                               for r in near],
                "duplicates": [Path(str(r["path"])).name for r in near if float(r["score"]) >= DUP_SCORE]}

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
    def review_items():
        from index import labels_of
        rows = labels_of(be.db_path, LABEL_SET, top_only=True, limit=REVIEW_MAX)
        rows.sort(key=lambda r: (str(r["label"]), -float(r["score"])))
        return [(be.thumbnail(r["path"]), f"{r['label']} · {float(r['score']):.2f}") for r in rows]

    def do_label(labels: str, request: gr.Request, progress=gr.Progress()):
        """Zero-shot label every indexed photo with the best of the given labels (zh/en, comma separated)."""
        lang = lang_of(request)
        from index.labels import parse_labels
        if be.state != "ready":
            return [], tr(lang, "msg_not_ready", status=be.status_text(lang))
        names = parse_labels(labels or "")
        if not names:
            return [], tr(lang, "msg_no_labels")
        from index import label_index
        model = be.model if be.model is not None else getattr(be.searcher, "model", None)
        desc = tr(lang, "msg_labeling")
        t0 = time.perf_counter()
        try:
            with be._index_lock:
                res = label_index(be.db_path, names, label_set=LABEL_SET, model=model,
                                  progress=lambda d, t: progress((int(d), int(t)), desc=desc) if t else None)
            items = review_items()
        except Exception as e:
            return [], tr(lang, "msg_label_failed", err=f"{type(e).__name__}: {e}")
        counts = ", ".join(f"{k} {v}" for k, v in sorted(res["counts"].items(), key=lambda kv: -kv[1]))
        return items, tr(lang, "msg_labeled", n=res["images"], l=len(names), s=round(time.perf_counter() - t0, 1),
                         counts=counts)

    def do_export(fmt: str, request: gr.Request):
        """The labels as a CSV or JSON file (file names only in demo mode)."""
        lang = lang_of(request)
        from index import export_labels, labels_of
        try:
            labels_of(be.db_path, LABEL_SET, limit=1)
        except Exception:
            return None, tr(lang, "msg_label_first")
        out_dir = Path(be.thumb_dir).parent / "exports"
        out = out_dir / f"labels.{fmt}"
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
        return str(out), f"{n} rows → labels.{fmt}"

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
                                                 [(r, r) for r in be.roots()], value="", label=T("folder_label"),
                                                 visible=not demo, allow_custom_value=False, elem_id="folder")
                            date_from = gr.Textbox(label=T("date_from"), placeholder=T("date_placeholder"),
                                                   max_lines=1, elem_id="date-from")
                            date_to = gr.Textbox(label=T("date_to"), placeholder=T("date_placeholder"),
                                                 max_lines=1, elem_id="date-to")
                with gr.Column(scale=1, min_width=340):
                    image = gr.Image(type="filepath", label=T("image_label"), sources=["upload", "clipboard"],
                                     height=200, elem_id="image-query")
            message = gr.Markdown("", elem_id="message")
            gallery = gr.Gallery(label=T("gallery_label"), columns=5, height=620, object_fit="cover",
                                 allow_preview=True, show_label=False, elem_id="gallery", format="jpeg", fit_columns=False,
                                 interactive=False)
            result_paths = gr.State([])
            with gr.Accordion(T("detail_label"), open=True, elem_id="detail"):
                detail = gr.Markdown(T("detail_hint"), elem_id="detail-info")
                neighbours = gr.Gallery(label=T("neighbours_label"), columns=8, height=200, object_fit="cover",
                                        allow_preview=False, elem_id="neighbours", format="jpeg",
                                        interactive=False)
        with gr.Tab(T("tab_label"), elem_id="tab-label"):
            with gr.Row(equal_height=True):
                label_text = gr.Textbox(label=T("labels_label"), placeholder=T("labels_placeholder"),
                                        value="猫, 狗, 花, 咖啡, car, rocket", scale=5, elem_id="labels")
                label_btn = gr.Button(T("label_btn"), variant="primary", scale=1, min_width=160,
                                      elem_id="label-btn")
            label_msg = gr.Markdown("", elem_id="label-msg")
            review = gr.Gallery(label=T("label_review"), columns=6, height=520, object_fit="cover",
                                allow_preview=True, elem_id="review", format="jpeg", interactive=False)
            with gr.Row():
                csv_btn = gr.Button(T("export_csv"), size="sm", scale=0, min_width=140)
                json_btn = gr.Button(T("export_json"), size="sm", scale=0, min_width=140)
                export_file = gr.File(label=T("export_file"), interactive=False, height=80, scale=3)
        with gr.Tab(T("tab_index"), elem_id="tab-index") as index_tab:
            index_info = gr.Markdown(index_md("en"), elem_id="index-info")
            with gr.Row(visible=not demo):
                rescan_btn = gr.Button(T("rescan_btn"), variant="secondary", scale=0, min_width=200,
                                       elem_id="rescan-btn")
            with gr.Row(visible=not demo, equal_height=True):
                add_folder = gr.Textbox(label=T("add_folder_label"), placeholder=T("add_folder_placeholder"),
                                        scale=5, elem_id="add-folder")
                add_btn = gr.Button(T("add_folder_btn"), variant="primary", scale=1, min_width=160)
            index_msg = gr.Markdown("", elem_id="index-msg")
            bad_files = gr.Dataframe(value=be.bad_files(), headers=["文件 · File", "原因 · Reason"],
                                     label=T("index_bad"), interactive=False, wrap=True, max_height=400,
                                     column_count=(2, "fixed"), elem_id="bad-files")
        with gr.Tab(T("tab_model"), elem_id="tab-model") as model_tab:
            models = installed_models()
            model_pick = gr.Dropdown(models, value=models[0], label=T("model_pick"), interactive=len(models) > 1,
                                     elem_id="model-pick")
            metrics = gr.Markdown(metrics_md(models[0], "en"), elem_id="metrics")
            model_about = gr.Markdown(be.about_md("en"), elem_id="model-about")
        with gr.Accordion(T("about"), open=False):
            about = gr.Markdown(be.about_md("en"), elem_id="about")

        inputs = [query, k, threshold, folder, date_from, date_to]
        outs = [gallery, message, result_paths]
        query.submit(do_search, inputs, outs, api_name="search")
        btn.click(do_search, inputs, outs, api_visibility="private")
        for b, q in zip(ex_btns, EXAMPLE_QUERIES):
            b.click(lambda q=q: q, None, query, queue=False, api_visibility="private").then(
                do_search, inputs, outs, api_visibility="private")
        # .change also covers a pasted (clipboard) photo, which fires no upload event
        image.change(do_image_search, [image, k, threshold, folder, date_from, date_to], outs,
                     api_name="search_image")
        gallery.select(on_select, [result_paths], [detail, neighbours], api_visibility="private")
        gr.api(api_detail, api_name="detail")
        timer = gr.Timer(1.0)
        timer.tick(poll, None, [status, about, timer], api_visibility="private", queue=False)
        app.load(poll, None, [status, about, timer], api_visibility="private", queue=False)
        gr.api(api_status, api_name="status")
        gr.api(api_search, api_name="search_json")
        index_tab.select(index_view, None, [index_info, bad_files], api_name="index_info", queue=False)
        model_tab.select(model_view, [model_pick], [metrics, model_about], api_visibility="private", queue=False)
        model_pick.change(model_view, [model_pick], [metrics, model_about], api_name="model_card", queue=False)
        label_text.submit(do_label, [label_text], [review, label_msg], api_visibility="private",
                          concurrency_limit=1)
        label_btn.click(do_label, [label_text], [review, label_msg], api_name="label", concurrency_limit=1)
        def export_csv(request: gr.Request):
            return do_export("csv", request)

        def export_json(request: gr.Request):
            return do_export("json", request)

        csv_btn.click(export_csv, None, [export_file, label_msg], api_name="export_csv")
        json_btn.click(export_json, None, [export_file, label_msg], api_name="export_json")
        rescan_btn.click(do_rescan, None, [index_info, bad_files, index_msg], api_name="rescan",
                         concurrency_limit=1)
        def folder_choices():
            return gr.Dropdown(choices=[(EN["folder_all"] + " · " + ZH["folder_all"], "")] +
                               [(r, r) for r in be.roots()])

        add_folder.submit(do_add_folder, [add_folder], [index_info, bad_files, index_msg],
                          api_visibility="private", concurrency_limit=1).then(
            folder_choices, None, folder, api_visibility="private", queue=False)
        add_btn.click(do_add_folder, [add_folder], [index_info, bad_files, index_msg], api_name="add_folder",
                      concurrency_limit=1).then(folder_choices, None, folder, api_visibility="private", queue=False)

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
