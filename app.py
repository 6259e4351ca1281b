"""DC-CLIP photo search: a bilingual (Chinese/English) offline photo search page (Gradio 6).

    python app.py [--host 127.0.0.1] [--port 7860] [--db PATH] [--root DIR] [--demo] [--auth user:pass]

Without --db the bundled demo photos (assets/demo) are indexed into <cache>/library.db (the user's library:
folders added in the Index tab go there too), where <cache> is $DCCLIP_CACHE or ~/.cache/dcclip. ``--demo``
(the conference booth) uses a database and thumbnails of its own under <cache>/booth that hold only the bundled
photos and is read-only (``ui.backend``). The page is served first; then the model loads, warms up and the
index is (re)built in a background thread while a status line reports progress.

Tabs: Search (text / image, filters, detail with neighbours and duplicates), Label (typed labels or a library
prompt, review grid with paging and manual corrections, CSV/JSON export, copy into class folders), Few-shot
(examples from search results or uploads; zero-shot, Tip-Adapter, linear probe, CoOp, VPT, UPT, MVLPT; save to
the prompt library), Prompts (list, details, apply, import/export, delete), Index (add, re-scan, remove
folders; bad files), Model (model card, switch model). Photos reach the page only as thumbnails and full-size
views named by an id (``ui.files``). The logic lives in ``ui.backend`` (the service), index/ and
training.prompts.api; this module lays out the page. Searching never imports torch; learning a prompt does.
"""
from __future__ import annotations

import argparse
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

from ui.backend import (DEMO_ROOT, LABEL_SET, Backend, NotReadyError, ReadOnlyError,  # noqa: E402,F401
                        SearchBatcher, booth_dir, default_cache, installed_models, library_db, model_metrics,
                        prepare_booth)
from ui.files import LoginBackoff, origin_of, photo_url, routes as file_routes  # noqa: E402
from ui.i18n import EN, I18N, T, TABLES, ZH, ellipsis, is_zh, lang_of, reason_text, tr  # noqa: E402,F401

HERE = Path(__file__).resolve().parent
EXAMPLE_KEYS = [f"ex_{i}" for i in range(1, 9)]   # example queries, per language (assets/data/ui_strings.json)
# What the search shows, by relevance level (ui.backend.Backend.level: 3 strong, 2 good, 1 weak, 0 none)
SHOW_CHOICES = ["good", "any", "all"]
SHOW_MIN_LEVEL = {"good": 2, "any": 1, "all": None}
DEFAULT_SHOW = "any"
LEVEL_DOTS = {3: "●●●", 2: "●●○", 1: "●○○", 0: "○○○"}
MAX_UPLOAD = "20mb"
MAX_UPLOAD_BYTES = 20 * 2 ** 20
REVIEW_PAGE = 60           # photos per page of the label review grid
FS_PICK = 24               # search results shown to pick few-shot examples from
FS_STEPS = 50              # default optimisation steps of the prompt methods in the app
FS_METHODS = ["zeroshot", "tip-adapter", "tip-adapter-f", "linear-probe", "coop", "vpt", "upt", "mvlpt"]
DEFAULT_SURE = 50          # Label tab: a photo whose certainty is below this (%) is shown as "not sure"
LANG_NAMES = {"en": "English", "zh": "中文 (简体)", "zh_hant": "中文 (繁體)"}


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
    lines = [f"**{tr(lang, 'model_metrics')}** · `{m.get('model', name)}`", "",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    if real.get("n_photos"):
        lines += ["", tr(lang, "m_note", n=real["n_photos"])]
    return "\n".join(lines)


def status_text(be: Backend, lang: str) -> str:
    """The status line: start-up progress, or the photo count read from the database now (never stale)."""
    st = be.state
    if st == "ready":
        s = be.status()
        return tr(lang, "st_ready", n=s.get("images") or 0, model=s.get("model_id") or "?")
    if st == "indexing":
        key = "st_indexing" if be.root is not None and be.root == DEMO_ROOT.resolve() else "st_indexing_n"
        return tr(lang, key, done=be.done, total=be.total or "…")
    if st == "error":
        return tr(lang, "st_error", err=be.error)
    return tr(lang, "st_loading" if st == "loading" else "st_starting")


def about_md(be: Backend, lang: str) -> str:
    """The Model tab's panel: what the model does for the user (languages, where it runs, its size, speed) and
    the index's counts (no file paths in demo mode)."""
    info = be.model_info()
    s = be.stats()
    lines = [f"**{tr(lang, 'about_model')}**", ""]
    if info:
        names = {"zh": "中文", "en": "English"}
        langs = ", ".join(names.get(x, x) for x in info.get("languages") or [])
        lines += [f"- {tr(lang, 'about_id')}: `{info.get('id', '?')}`",
                  f"- {tr(lang, 'about_langs')}: {langs} · {tr(lang, 'about_trad')}",
                  f"- {tr(lang, 'about_runs')}",
                  f"- {tr(lang, 'about_size', mb=be.model_megabytes())}"]
    else:
        lines.append(f"- {tr(lang, 'about_wait')}")
    lines += ["", f"**{tr(lang, 'about_index')}**", ""]
    if s:
        lines += [f"- {tr(lang, 'about_images')}: {s.get('images', '?')}",
                  f"- {tr(lang, 'about_errors')}: {s.get('errors', 0)}"]
        if not be.demo and s.get("db"):
            lines.append(f"- {tr(lang, 'about_db')}: `{s.get('db')}`")
    else:
        lines.append(f"- {status_text(be, lang)}")
    lines += ["", tr(lang, "about_offline")]
    return "\n".join(lines)


def user_error(lang: str, e: Exception) -> str:
    """An error as a user reads it, in their language: no exception class names, no temp paths, no
    environment variables."""
    from dcclip_core.preprocess import ImageLoadError
    if isinstance(e, ReadOnlyError):
        return tr(lang, "demo_readonly")
    if isinstance(e, NotReadyError):
        return tr(lang, "msg_not_ready_short")
    if isinstance(e, ImageLoadError):
        return tr(lang, "msg_bad_image", why=reason_text(lang, e.reason))
    if isinstance(e, FileNotFoundError):
        return tr(lang, "msg_not_found", what=Path(str(e.filename or e)).name)
    if isinstance(e, PermissionError):
        return tr(lang, "msg_no_permission")
    text = str(e).strip() or tr(lang, "msg_unknown_error")
    try:
        import tempfile
        text = text.replace(tempfile.gettempdir(), "…")
    except Exception:
        pass
    return text


def failed(lang: str, key: str, e: Exception) -> str:
    """The message ``key`` ("… failed: {err}") for an error; a refused write in demo mode says only that."""
    if isinstance(e, ReadOnlyError):
        return tr(lang, "demo_readonly")
    return tr(lang, key, err=user_error(lang, e))


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


def uploaded_path(payload) -> str | None:
    """The file of an upload event that skips Gradio's preprocessing (``preprocess=False``): gr.Image opens every
    upload with PIL first, so a text file named .jpg or a 400-megapixel image failed inside Gradio with a
    traceback and red "Error" badges instead of our message (dcclip_core's loader checks format and size and
    says why). Only files in Gradio's upload folder are accepted, as its own preprocessing would."""
    from gradio.processing_utils import get_upload_folder
    from gradio.utils import is_in_or_equal
    path = payload.get("path") if isinstance(payload, dict) else getattr(payload, "path", None)
    if not path or not is_in_or_equal(str(path), get_upload_folder()):
        return None
    return str(path)


def result_caption(be: Backend, r: dict, names: dict[str, int], lang: str, levels: bool = True) -> str:
    """A result tile's caption: relevance dots (text searches only: the calibration is of text-to-photo scores),
    file name, its folder when another result has the same name (never in demo mode), the date it was taken (or
    last changed), and ×n for stacked exact copies."""
    p = Path(str(r["path"]))
    dots = LEVEL_DOTS.get(be.level(r["score"]), "") if levels else ""      # none without a calibration
    parts = [f"{dots} {p.name}".strip()]
    if names.get(p.name, 0) > 1 and not be.demo:
        parts.append(f"{p.parent.name or p.parent}/")
    when = str(r.get("taken_at") or "")[:10]
    if not when and r.get("mtime"):
        when = time.strftime("%Y-%m-%d", time.localtime(float(r["mtime"])))
    if when:
        parts.append(when)
    if r.get("copies", 1) > 1:
        parts.append(f"×{r['copies']}")
    return " · ".join(parts)


def captions(be: Backend, results: list[dict], lang: str, levels: bool = True) -> list[str]:
    names: dict[str, int] = {}
    for r in results:
        n = Path(str(r["path"])).name
        names[n] = names.get(n, 0) + 1
    return [result_caption(be, r, names, lang, levels) for r in results]


def label_caption(row: dict, lang: str, sure: float) -> str:
    """A label review tile: "✎ label" for a correction, "label" when certain enough, else "not sure (label?)"."""
    if row.get("source") == "manual":
        return f"✎ {row['label']}"
    if float(row.get("certainty", 1.0)) * 100 < float(sure):
        return tr(lang, "label_unsure", label=row["label"])
    return str(row["label"])


def method_name(lang: str, method: str) -> str:
    """A prompt method's name for people ("Tip-Adapter (instant)", "零样本（无需训练）"); unknown ones as stored."""
    key = "fsm_" + str(method).replace("-", "_")
    return tr(lang, key) if key in EN else str(method)


def fs_method_choices(lang: str) -> list[tuple[str, str]]:
    return [(method_name(lang, m), m) for m in FS_METHODS]


def dataframe(value: list[list], lang: str, keys: list[str], **kw) -> gr.Dataframe:
    """A Dataframe update with headers in the request's language."""
    return gr.Dataframe(value=value, headers=[tr(lang, k) for k in keys], **kw)


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
.caption-label { white-space: nowrap; overflow: hidden; text-overflow: ellipsis; max-width: 100%; }
.end-btn { align-self: flex-end !important; flex-grow: 0 !important; margin-bottom: 4px; }
#fs-table table { table-layout: auto !important; }
#fs-table th, #fs-table td { min-width: 6em; word-break: normal !important; overflow-wrap: anywhere; }
#pr-upload { min-height: 150px; }
button, .tab-nav button { text-transform: none !important; font-variant: normal !important; }
"""
# Local fonts only (a booth has no network): a sans-serif that draws Latin and CJK alike, no web-font download.
FONTS = ["Noto Sans CJK SC", "Noto Sans SC", "Noto Sans", "PingFang SC", "Microsoft YaHei", "Source Han Sans SC",
         "system-ui", "sans-serif"]
# Gradio's upload size check runs in the browser and says so in English: translate that one toast for zh pages.
HEAD = """<script>
(() => {
  const lang = (navigator.language || "").toLowerCase();
  if (!lang.startsWith("zh")) return;
  const hant = /^zh-(tw|hk|mo|hant)/.test(lang);
  const msg = hant ? "檔案太大：上傳的照片不能超過 20 MB。" : "文件太大：上传的照片不能超过 20 MB。";
  const title = hant ? "無法上傳" : "无法上传";
  new MutationObserver(() => {
    for (const el of document.querySelectorAll("[data-testid='toast-text']")) {
      if (!el.textContent.includes("exceed the maximum allowed size")) continue;
      el.textContent = msg;
      const t = el.closest(".toast-body")?.querySelector(".toast-title");
      if (t) t.textContent = title;
    }
  }).observe(document.documentElement, {childList: true, subtree: true, characterData: true});
})();
</script>"""


def build_app(db_path: str | Path, model=None, searcher=None, demo: bool = False,
              root: str | Path | None = None, backend: Backend | None = None, start: bool = True) -> gr.Blocks:
    """Build the Blocks UI. With `searcher` given it is used as is; otherwise the model loads (and
    `root`, if given, is indexed into `db_path`) in a background thread, started here unless `start` is
    False (main() starts it once the page is served, so loading does not slow the first page)."""
    be = backend or Backend(db_path, model=model, searcher=searcher, root=root, demo=demo)
    be.demo = demo = bool(be.demo or demo)
    if start:
        be.start()

    def not_ready(lang):
        if be.state == "error":
            return status_text(be, lang)
        return tr(lang, "msg_not_ready", status=status_text(be, lang))

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
        if f.get("date_from") and f.get("date_to") and f["date_from"] > f["date_to"][:10]:
            return None, tr(lang, "msg_dates_swapped", a=f["date_from"], b=f["date_to"][:10])
        return f, None

    def _shown(res: list[dict], show: str | None) -> list[dict]:
        """Results at or above the chosen relevance (all of them for "all")."""
        floor = SHOW_MIN_LEVEL.get(show or DEFAULT_SHOW, 1)
        if floor is None:
            return res
        return [r for r in res if _level_or_top(r["score"]) >= floor]

    def _level_or_top(score: float) -> int:
        lv = be.level(score)
        return 3 if lv is None else lv            # an uncalibrated model hides nothing

    async def do_search(query, k, show=DEFAULT_SHOW, folder=None, date_from=None, date_to=None,
                        request: gr.Request = None):
        """Text search (runs on the event loop: the work happens in the batcher's thread). The photo in
        "search by image" is cleared: the results shown are this query's."""
        lang = lang_of(request)
        q = (query or "").strip()
        if be.state != "ready":
            return [], not_ready(lang), [], gr.skip()
        if not q:
            return [], tr(lang, "msg_empty"), [], gr.skip()
        f, err = _filters(folder, date_from, date_to, lang)
        if err:
            return [], err, [], gr.skip()
        t0 = time.perf_counter()
        try:
            res = await be.search_text(q, k=int(k), **f)
        except Exception as e:
            return [], failed(lang, "msg_failed", e), [], None
        ms = int((time.perf_counter() - t0) * 1000)
        if show != "all" and not be.query_has_match(q, res):
            return [], tr(lang, "msg_no_match", q=q), [], None
        res = be.stack_copies(_shown(res, show))
        if not res:
            return [], tr(lang, "msg_none", q=q), [], None
        urls = await be.thumb_urls([r["path"] for r in res], origin_of(request))
        items = list(zip(urls, captions(be, res, lang)))
        return items, tr(lang, "msg_results", n=len(res), q=q, ms=ms), [r["path"] for r in res], None

    def do_image_search(upload, k, show=DEFAULT_SHOW, folder=None, date_from=None, date_to=None,
                        request: gr.Request = None):
        """Search by an uploaded photo (raw event data: ``upload`` is Gradio's file payload, see uploaded_path)."""
        lang = lang_of(request)
        if not upload:  # cleared (also when a text search clears it): keep the current results
            return gr.skip(), gr.skip(), gr.skip()
        image = uploaded_path(upload)
        if image is None:
            return [], tr(lang, "msg_image_failed", err=tr(lang, "msg_unknown_error")), []
        if be.state != "ready":
            return [], not_ready(lang), []
        try:
            if os.path.getsize(image) > MAX_UPLOAD_BYTES:
                return [], tr(lang, "msg_upload_too_big", mb=MAX_UPLOAD_BYTES // 2 ** 20), []
        except (OSError, TypeError):
            pass
        f, err = _filters(folder, date_from, date_to, lang)
        if err:
            return [], err, []
        t0 = time.perf_counter()
        try:
            res = be.run_search(image=image, k=int(k), **f)
        except Exception as e:
            return [], failed(lang, "msg_image_failed", e), []
        ms = int((time.perf_counter() - t0) * 1000)
        res = be.stack_copies(res)            # photo-to-photo scores have no calibrated levels: the top k, ranked
        if not res:
            return [], tr(lang, "msg_none_img"), []
        o = origin_of(request)
        items = [(be.thumb_url(r["path"], o), c) for r, c in zip(res, captions(be, res, lang, levels=False))]
        return items, tr(lang, "msg_results_img", n=len(res), ms=ms), [r["path"] for r in res]

    def photo_detail(path: str, lang: str, origin: str, k: int = 8):
        """(Markdown about the photo, [(thumbnail, caption)] of its nearest neighbours)."""
        name = Path(str(path)).name
        try:
            near = be.searcher.similar(path, k=k)
            dups = be.duplicates_of(path)
        except Exception as e:
            return f"**{name}** · {tr(lang, 'msg_failed', err=user_error(lang, e))}", []
        row = be.photo_row(path)
        lines = [f"**{be.shown_path(path)}**"]
        facts = []
        if row.get("width"):
            facts.append(f"{tr(lang, 'detail_size')}: {row['width']}×{row['height']}")
        if row.get("taken_at"):
            facts.append(f"{tr(lang, 'detail_taken')}: {str(row['taken_at'])[:10]}")
        if row.get("id") is not None:
            facts.append(f"[{tr(lang, 'detail_full')}]({photo_url(row['id'], origin)})")
        if facts:
            lines.append(" · ".join(facts))
        names = ", ".join(be.shown_path(d["path"]) for d in dups)
        lines.append(tr(lang, "dups_some", names=names) if dups else tr(lang, "dups_none"))
        return "\n\n".join(lines), [(be.thumb_url(r["path"], origin), c)
                                    for r, c in zip(near, captions(be, near, lang, levels=False))]

    def on_select(paths, evt: gr.SelectData, request: gr.Request):
        lang = lang_of(request)
        try:
            path = paths[int(evt.index)]
        except (TypeError, ValueError, IndexError):
            return gr.skip(), gr.skip()
        return photo_detail(path, lang, origin_of(request))

    def api_detail(name: str) -> dict:
        """A photo's nearest neighbours and duplicates, by its file name (or path outside demo)."""
        if be.state != "ready":
            return {}
        path = be.find_path(name)
        if path is None:
            return {"error": "not in the index"}
        near = be.searcher.similar(path, k=8)
        return {"neighbours": [{"name": Path(str(r["path"])).name, "score": round(float(r["score"]), 4)}
                               for r in near],
                "duplicates": [Path(str(d["path"])).name for d in be.duplicates_of(path)],
                "full": photo_url(be.photo_row(path).get("id"))}

    def poll(request: gr.Request):
        """Start-up status (every second until ready); the folder lists once the index is there."""
        lang = lang_of(request)
        done = be.state in ("ready", "error")
        dd = folder_dropdowns(lang) if be.state == "ready" else (gr.skip(), gr.skip())
        return status_text(be, lang), gr.Timer(active=not done), *dd

    def api_status() -> dict:
        """Start-up state: {"state": starting|loading|indexing|ready|error, "done", "total", "images", ...}."""
        return be.status()

    async def api_search(query: str, k: int = 20) -> list:
        """Text search as JSON: [{"name": file name, "score": float, "level": 0-3}, ...] best first ([] until
        ready, and for a query nothing in the photos matches)."""
        q = (query or "").strip()
        if be.state != "ready" or not q:
            return []
        res = await be.search_text(q, k=k)
        if not be.query_has_match(q, res):
            return []
        return [{"name": Path(str(r["path"])).name, "score": round(float(r["score"]), 4),
                 "level": be.level(r["score"])} for r in _shown(res, "any")]

    def example_query(i: int):
        def fill(request: gr.Request):
            return tr(lang_of(request), EXAMPLE_KEYS[i])
        return fill

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

    def bad_table(lang: str):
        rows = [[b["path"], reason_text(lang, b["reason"])] for b in be.bad_files()]
        return dataframe(rows, lang, ["col_file", "col_reason"])

    def index_outputs(lang: str, msg: str):
        """(index info, bad files, message, status line)."""
        return index_md(lang), bad_table(lang), msg, status_text(be, lang)

    def index_view(request: gr.Request):
        lang = lang_of(request)
        return index_md(lang), bad_table(lang)

    def _progress_cb(progress, lang, root):
        desc = tr(lang, "msg_scanning", root=be.shown_path(root))

        def cb(done, total, path=None):
            if total:
                progress((int(done), int(total)), desc=desc)
        return cb

    def do_rescan(request: gr.Request, progress=gr.Progress()):
        """Re-scan every indexed folder (new, changed, moved and deleted photos)."""
        lang = lang_of(request)
        if be.state != "ready":
            return index_outputs(lang, not_ready(lang))
        t0 = time.perf_counter()
        tot = {"indexed": 0, "updated": 0, "removed": 0}
        roots = be.roots()
        try:
            be.require_writable()
            for r in roots:
                res = be.index_folder(r, progress=_progress_cb(progress, lang, r))
                for key in tot:
                    tot[key] += int(res.get(key) or 0)
        except Exception as e:
            return index_outputs(lang, failed(lang, "msg_index_failed", e))
        msg = tr(lang, "msg_rescanned", n=len(roots), added=tot["indexed"], updated=tot["updated"],
                 removed=tot["removed"], errors=be.stats().get("errors", 0), s=round(time.perf_counter() - t0, 1))
        return index_outputs(lang, msg)

    def do_add_folder(folder: str, request: gr.Request, progress=gr.Progress()):
        """Index a new folder into the same database (its photos become searchable)."""
        lang = lang_of(request)
        if demo:
            return index_outputs(lang, tr(lang, "index_readonly"))
        folder = (folder or "").strip()
        if not folder:
            return index_outputs(lang, tr(lang, "msg_no_folder"))
        root = Path(folder).expanduser()
        if not root.is_dir():
            return index_outputs(lang, tr(lang, "msg_not_folder", root=folder))
        if be.state != "ready":
            return index_outputs(lang, not_ready(lang))
        root = str(root.resolve())
        t0 = time.perf_counter()
        try:
            res = be.index_folder(root, progress=_progress_cb(progress, lang, root))
        except Exception as e:
            return index_outputs(lang, failed(lang, "msg_index_failed", e))
        msg = tr(lang, "msg_added", root=root, added=int(res.get("indexed") or 0),
                 errors=int(res.get("errors") or 0), s=round(time.perf_counter() - t0, 1))
        return index_outputs(lang, msg)

    def ask_remove_folder(root: str, request: gr.Request):
        """First click on "Remove": ask to confirm (nothing is removed yet)."""
        lang = lang_of(request)
        if demo:
            return tr(lang, "index_readonly"), gr.Row(visible=False)
        if not root or root not in be.roots():
            return tr(lang, "msg_pick_folder"), gr.Row(visible=False)
        return tr(lang, "confirm_remove_folder", root=root), gr.Row(visible=True)

    def do_remove_folder(root: str, request: gr.Request):
        """Take a folder's photos out of the index (the files on disk are not touched; not in demo mode)."""
        lang = lang_of(request)
        hide = gr.Row(visible=False)
        if not root or root not in be.roots():
            return (*index_outputs(lang, tr(lang, "msg_pick_folder")), gr.skip(), gr.skip(), hide)
        try:
            res = be.remove_root(root)
        except Exception as e:
            return (*index_outputs(lang, failed(lang, "msg_index_failed", e)), gr.skip(),
                    gr.skip(), hide)
        msg = tr(lang, "msg_removed", root=root, n=res["removed"], e=res["errors_removed"])
        return (*index_outputs(lang, msg), *folder_dropdowns(lang), hide)

    def folder_dropdowns(lang: str = "en"):
        roots = be.roots()
        return (gr.Dropdown(choices=[(tr(lang, "folder_all"), "")] + [(r, r) for r in roots], value=""),
                gr.Dropdown(choices=roots, value=None))

    def folders_after_add(request: gr.Request):
        return folder_dropdowns(lang_of(request))

    # -- Model tab -------------------------------------------------------------------------------
    def model_view(name, request: gr.Request):
        lang = lang_of(request)
        return metrics_md(name or "default", lang), about_md(be, lang)

    def do_use_model(name: str, request: gr.Request):
        """Switch to another installed model; the index is re-embedded by a re-scan (the message says so)."""
        lang = lang_of(request)
        if be.state != "ready":
            return not_ready(lang), gr.skip(), gr.skip()
        try:
            res = be.switch_model(name)
        except Exception as e:
            return failed(lang, "msg_model_failed", e), gr.skip(), gr.skip()
        key = "msg_model_ok" if res["vectors"] >= res["images"] else "msg_model_reindex"
        return (tr(lang, key, model=res["model_id"], n=res["vectors"], total=res["images"]), about_md(be, lang),
                status_text(be, lang))

    # -- Label tab -------------------------------------------------------------------------------
    def review_outputs(lang: str, origin: str, msg, sure, page, which, mem, focus: str | None = None):
        """(review grid, message, its paths, label choices, page info, page, filter, in-memory rows): one page of
        the best label per photo, filtered ("" all, "__unsure__", "__corrected__" or one label), sorted by label
        then certainty; ``focus`` opens the page that shows that photo and selects it."""
        try:
            rows = be.label_rows(mem)
        except Exception:
            rows = []
        used = sorted({str(r["label"]) for r in rows})
        sure = float(DEFAULT_SURE if sure is None else sure)
        if which == "__unsure__":
            rows = [r for r in rows if r.get("source") != "manual" and 100 * r["certainty"] < sure]
        elif which == "__corrected__":
            rows = [r for r in rows if r.get("source") == "manual"]
        elif which:
            rows = [r for r in rows if str(r["label"]) == which]
        unsure = lambda r: r.get("source") != "manual" and 100 * r["certainty"] < sure  # noqa: E731
        rows.sort(key=lambda r: (unsure(r), str(r["label"]), -float(r["certainty"]), str(r["path"])))
        pages = max(1, -(-len(rows) // REVIEW_PAGE))
        selected = None
        try:
            page = int(page or 1)
        except (TypeError, ValueError):
            page = 1
        if focus is not None:
            at = next((i for i, r in enumerate(rows) if r["path"] == focus), None)
            if at is not None:
                page, selected = at // REVIEW_PAGE + 1, at % REVIEW_PAGE
        page = min(max(1, page), pages)
        chunk = rows[(page - 1) * REVIEW_PAGE: page * REVIEW_PAGE]
        items = [(be.thumb_url(r["path"], origin), label_caption(r, lang, sure)) for r in chunk]
        info = tr(lang, "review_page", page=page, pages=pages, n=len(rows)) if rows else tr(lang, "review_empty")
        filters = ([(tr(lang, "review_all"), ""), (tr(lang, "review_unsure"), "__unsure__"),
                    (tr(lang, "review_corrected"), "__corrected__")] + [(u, u) for u in used])
        return (gr.Gallery(value=items, selected_index=selected), msg, [r["path"] for r in chunk],
                gr.Dropdown(choices=used, value=None), info, gr.Number(value=page, maximum=pages),
                gr.Dropdown(choices=filters, value=which or ""), mem)

    def do_label(labels: str, prompt_name: str | None, sure, mem, request: gr.Request, progress=gr.Progress()):
        """Label every indexed photo: with the typed labels (zero-shot, zh/en, comma separated) or, when
        one is chosen, with a prompt from the library. In demo mode the labels live in this page only."""
        lang, origin = lang_of(request), origin_of(request)
        from index.labels import parse_labels
        keep = (gr.skip(),) * 8
        if be.state != "ready":
            return (gr.skip(), not_ready(lang)) + keep[2:]
        names = parse_labels(labels or "")
        if not names and not prompt_name:
            return (gr.skip(), tr(lang, "msg_no_labels")) + keep[2:]
        desc = tr(lang, "msg_labeling")
        cb = lambda d, t: progress((int(d), int(t)), desc=desc) if t else None  # noqa: E731
        t0 = time.perf_counter()
        try:
            res = be.label(names, prompt_name=prompt_name or None, lang="zh" if is_zh(lang) else "en", progress=cb)
        except Exception as e:
            return (gr.skip(), failed(lang, "msg_label_failed", e)) + keep[2:]
        mem = res.get("rows") if demo else None
        counts = ", ".join(f"{k} {v}" for k, v in sorted(res["counts"].items(), key=lambda kv: -kv[1]))
        msg = tr(lang, "msg_labeled", n=res["images"], l=len(res["labels"]), s=round(time.perf_counter() - t0, 1),
                 counts=counts)
        return review_outputs(lang, origin, msg, sure, 1, "", mem)

    def review_view(sure, page, which, mem, request: gr.Request):
        return review_outputs(lang_of(request), origin_of(request), gr.skip(), sure, page, which, mem)

    def on_review_select(paths, evt: gr.SelectData):
        try:
            path = paths[int(evt.index)]
        except (TypeError, ValueError, IndexError):
            return gr.skip()
        return be.shown_path(path)

    def _change_correction(photo: str, change, lang: str):
        """(path, message) after ``change(path)`` on the photo named in the correction box; the message alone says
        why nothing changed (demo mode, no photo picked, a failure)."""
        if demo:
            return None, tr(lang, "demo_readonly")
        path = be.find_path(photo or "")
        if not path:
            return None, tr(lang, "msg_pick_photo")
        try:
            return path, change(path)
        except Exception as e:
            return None, failed(lang, "msg_label_failed", e)

    def do_correct(photo: str, label: str, sure, which, mem, request: gr.Request):
        """Correct one photo's label: a fact about the photo that later labelling runs keep (undo removes it)."""
        lang, origin = lang_of(request), origin_of(request)
        path, out = _change_correction(photo, lambda p: be.correct(p, label or ""), lang)
        if path is None:
            return (gr.skip(), out) + (gr.skip(),) * 6
        msg = tr(lang, "msg_corrected", name=Path(path).name, label=" ".join(str(label).split()))
        which = which if which in ("", "__corrected__") else ""
        return review_outputs(lang, origin, msg, sure, 1, which, mem, focus=path)

    def do_undo(photo: str, sure, which, mem, request: gr.Request):
        """Remove a correction: the photo shows its automatic label again."""
        lang, origin = lang_of(request), origin_of(request)
        path, n = _change_correction(photo, be.undo_correction, lang)
        if path is None:
            return (gr.skip(), n) + (gr.skip(),) * 6
        msg = tr(lang, "msg_undone" if n else "msg_nothing_to_undo", name=Path(path).name)
        return review_outputs(lang, origin, msg, sure, 1, "" if which == "__corrected__" else which, mem, focus=path)

    def do_copy(out_dir: str, sure, request: gr.Request, progress=gr.Progress()):
        """Copy the labelled photos into out_dir/<label>/ (never overwriting, never twice; not in demo mode)."""
        lang = lang_of(request)
        out_dir = (out_dir or "").strip()
        if demo:
            return tr(lang, "demo_readonly")
        if not out_dir or not Path(out_dir).expanduser().is_absolute():
            return tr(lang, "msg_copy_where")
        desc = tr(lang, "msg_copying")
        try:
            res = be.copy_labelled(out_dir, sure=float(DEFAULT_SURE if sure is None else sure) / 100,
                                   unsure_folder=tr(lang, "folder_unsure"),
                                   progress=lambda d, t: progress((int(d), int(t)), desc=desc))
        except Exception as e:
            return failed(lang, "msg_label_failed", e)
        folders = ", ".join(f"{k} {v}" for k, v in sorted(res["folders"].items(), key=lambda kv: -kv[1]))
        msg = tr(lang, "msg_copied", n=res["copied"], k=len(res["folders"]), out=res["out"], folders=folders or "–")
        if res.get("already"):
            msg += " · " + tr(lang, "msg_copy_already", n=res["already"])
        if res["missing"]:
            msg += " · " + tr(lang, "msg_copy_missing", n=len(res["missing"]))
        return msg

    def do_export(fmt: str, mem, request: gr.Request):
        """The labels as a CSV or JSON file (file names only in demo mode, where they come from this page)."""
        lang = lang_of(request)
        try:
            out, n = be.export_labels(fmt, mem)
        except Exception:
            return None, tr(lang, "msg_label_first")
        return gr.File(value=str(out), visible=True), tr(lang, "msg_exported", n=n, f=out.name)

    # -- Few-shot tab ----------------------------------------------------------------------------
    def fs_table(examples: dict, lang: str = "en"):
        rows = [[c, len(v), ellipsis(", ".join(Path(str(p)).name for p in v), 60)]
                for c, v in (examples or {}).items()]
        return dataframe(rows, lang, ["fs_col_class", "fs_col_n", "fs_col_photos"])

    def fs_find(query: str, request: gr.Request):
        """Search results to pick examples from (click photos to select them)."""
        lang, origin = lang_of(request), origin_of(request)
        q = (query or "").strip()
        if be.state != "ready":
            return [], [], [], not_ready(lang)
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
            return examples, fs_table(examples, lang), tr(lang, "fs_no_class"), gr.skip(), gr.skip()
        new = [paths[i] for i in (picked or []) if 0 <= i < len(paths or [])]
        for f in uploads or []:
            f = f if isinstance(f, str) else getattr(f, "name", None) or (f.get("path") if isinstance(f, dict) else None)
            if f:
                new.append(str(f))
        if not new:
            return examples, fs_table(examples, lang), tr(lang, "fs_nothing_picked"), gr.skip(), gr.skip()
        have = list(examples.get(cls, []))
        examples[cls] = have + [p for p in new if p not in have]
        origin = origin_of(request)
        unmarked = [(be.thumb_url(p, origin), Path(str(p)).name) for p in paths or []]   # selection cleared
        return examples, fs_table(examples, lang), tr(lang, "fs_added", n=len(new), c=cls), [], unmarked

    def fs_clear(request: gr.Request):
        lang = lang_of(request)
        return {}, fs_table({}, lang), tr(lang, "fs_cleared"), None, None, ""

    def fs_plot(points: list) -> "Any":
        """Validation accuracy (%) by step as a LinePlot frame (numeric columns: quantitative axes)."""
        import pandas as pd
        return pd.DataFrame({"step": pd.Series([p[0] for p in points or []], dtype="int64"),
                             "accuracy": pd.Series([p[1] for p in points or []], dtype="float64")})

    def fs_learn(method: str, steps: int, examples, request: gr.Request):
        """Learn a prompt from the examples (a generator: the accuracy plot updates while it learns). A class
        with at least 5 examples keeps one in five aside to measure validation accuracy."""
        lang = lang_of(request)
        examples = {c: list(v) for c, v in (examples or {}).items() if v}
        if be.state != "ready":
            yield fs_plot([]), not_ready(lang), None, ""
            return
        if len(examples) < 2:
            yield fs_plot([]), tr(lang, "fs_need_two"), None, ""
            return
        from training.prompts.api import learn_prompt
        from training.prompts.methods import FewShotConfig
        evals: list = []
        box: dict = {"step": 0}
        steps = max(1, int(steps or FS_STEPS))
        cfg = FewShotConfig(lang="zh" if is_zh(lang) else "en", steps=steps, tip_steps=steps,
                            vpt_steps=max(1, steps // 10), eval_every=max(1, steps // 10))
        val = 0.2 if min(len(v) for v in examples.values()) >= 5 else 0.0

        def run():
            try:
                box["prompt"] = learn_prompt(examples, method=method, model=be.any_model(), config=cfg,
                                             val_fraction=val,
                                             progress=lambda s, t, loss: box.__setitem__("step", int(s)),
                                             on_eval=lambda s, acc: evals.append((int(s), 100 * float(acc))))
            except Exception as e:
                box["error"] = e

        t0 = time.perf_counter()
        th = threading.Thread(target=run, name="dcclip-fewshot", daemon=True)
        th.start()
        shown = (-1, -1)
        while th.is_alive():
            th.join(0.5)
            if (len(evals), box["step"]) != shown:
                shown = (len(evals), box["step"])
                yield fs_plot(evals), tr(lang, "fs_learning", m=method_name(lang, method),
                                         step=box["step"], total=steps), None, ""
        if "error" in box:
            yield fs_plot(evals), failed(lang, "fs_failed", box["error"]), None, ""
            return
        p = box["prompt"]
        yield fs_plot(evals), fs_result_md(p, examples, lang, time.perf_counter() - t0), p, ""

    def fs_result_md(p, examples, lang, seconds) -> str:
        """Validation accuracy (held-out examples when every class has >= 5), else accuracy on the examples."""
        va = p.meta.get("val_accuracy")
        if va is not None:
            acc = tr(lang, "fs_val", a=100 * float(va))
        else:
            from training.prompts.api import classify
            paths = [x for v in examples.values() for x in v]
            truth = [c for c, v in examples.items() for _ in v]
            pred = [r[0]["class"] for r in classify(paths, prompt=p, model=be.any_model(), top=1)]
            acc = tr(lang, "fs_train_acc", a=100 * sum(a == b for a, b in zip(pred, truth)) / max(1, len(truth)))
        return tr(lang, "fs_done", m=method_name(lang, p.method), c=p.num_classes,
                  n=sum(len(v) for v in examples.values()), s=round(seconds, 1)) + " " + acc

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
        try:
            be.save_prompt(prompt, name)
        except FileExistsError:
            return tr(lang, "fs_name_taken", name=name), gr.skip(), gr.skip()
        except Exception as e:
            return failed(lang, "pr_failed", e), gr.skip(), gr.skip()
        ch = prompt_choices()
        return tr(lang, "fs_saved", name=name), gr.Dropdown(choices=[""] + ch, value=name), gr.Dropdown(choices=ch)

    # -- Prompts tab -----------------------------------------------------------------------------
    def library_names() -> list:
        """Every prompt in the library (before the model has loaded: compatibility is checked on use)."""
        try:
            return [p["name"] for p in be.prompts(check=False)]
        except Exception:
            return []

    def prompt_choices() -> list:
        try:
            return [p["name"] for p in be.prompts() if p.get("compatible", True)]
        except Exception:
            return library_names()

    def prompts_table(lang: str):
        rows = []
        for p in be.prompts():
            va = p.get("val_accuracy")
            labels = ", ".join((p.get("labels_zh") if is_zh(lang) else p.get("labels_en")) or [])
            rows.append([p["name"], method_name(lang, p.get("method", "?")),
                         p.get("classes", 0), ellipsis(labels, 80), p.get("shots", "–"),
                         "–" if va is None else f"{100 * float(va):.1f}%",
                         tr(lang, "yes") if p.get("compatible", True) else tr(lang, "no"),
                         tr(lang, "pr_shipped") if p.get("shipped") else tr(lang, "pr_user")])
        return dataframe(rows, lang, ["pr_col_name", "pr_col_method", "pr_col_n", "pr_col_labels", "pr_col_shots",
                                      "pr_col_val", "pr_col_fits", "pr_col_source"])

    def prompts_view(request: gr.Request):
        lang = lang_of(request)
        ch = prompt_choices()
        return prompts_table(lang), gr.Dropdown(choices=library_names()), gr.Dropdown(choices=[""] + ch)

    def prompt_detail(name: str, request: gr.Request) -> str:
        """Method, classes EN/ZH, shots, validation accuracy, and whether it fits the loaded model."""
        lang = lang_of(request)
        if not name:
            return tr(lang, "pr_pick")
        s = next((p for p in be.prompts() if p["name"] == name), None)
        if s is None:
            return tr(lang, "pr_missing", name=name)
        m = s.get("model") or {}
        va = s.get("val_accuracy")
        ok = s.get("compatible", True)
        method = method_name(lang, s.get("method", "?"))
        lines = [f"**{name}** · {method} · {tr(lang, 'pr_shipped') if s.get('shipped') else tr(lang, 'pr_user')}",
                 "", f"- {tr(lang, 'pr_classes')} ({s.get('classes', 0)}): EN: {', '.join(s.get('labels_en') or [])}",
                 f"- {tr(lang, 'pr_classes')} ZH: {', '.join(s.get('labels_zh') or [])}",
                 f"- {tr(lang, 'pr_shots')}: {s.get('shots', '–')}",
                 f"- {tr(lang, 'pr_val')}: {'–' if va is None else f'{100 * float(va):.1f}%'}",
                 f"- {tr(lang, 'pr_model')}: `{m.get('id', '?')}` — "
                 + (tr(lang, "pr_ok") if ok else tr(lang, "pr_incompatible"))]
        if s.get("created"):
            lines.append(f"- {tr(lang, 'pr_created')}: {str(s['created'])[:19]}")
        return "\n".join(lines)

    def prompt_apply(name: str, sure, mem, request: gr.Request, progress=gr.Progress()):
        """Label the whole index with a library prompt (the Label tab's review grid shows the result)."""
        lang = lang_of(request)
        if not name:
            return (tr(lang, "pr_pick"),) + (gr.skip(),) * 8
        out = do_label("", name, sure, mem, request, progress)
        return (out[1],) + tuple(out)

    def prompt_export(name: str, request: gr.Request):
        """The prompt's .safetensors file (its metadata is inside) and that metadata as JSON, to download."""
        lang = lang_of(request)
        if not name:
            return None, tr(lang, "pr_pick")
        try:
            dst = be.export_prompt(name)
        except Exception as e:
            return None, failed(lang, "pr_failed", e)
        return (gr.File(value=[str(dst), str(dst.with_suffix(".json"))], visible=True),
                tr(lang, "pr_exported", name=name))

    def prompt_import(file, name: str, request: gr.Request):
        """Import a prompt: only a .safetensors file with valid prompt JSON metadata, learned for the loaded
        model (nothing is unpickled; anything else is refused with the reason)."""
        lang = lang_of(request)
        skip = (gr.skip(),) * 3
        if demo:
            return (tr(lang, "demo_readonly"),) + skip
        src = file if isinstance(file, str) else (file or {}).get("path") if isinstance(file, dict) else \
            getattr(file, "name", None)
        if not src:
            return (tr(lang, "pr_no_file"),) + skip
        from dcclip_core.prompts import PromptError, PromptMismatchError
        if Path(src).suffix.lower() != ".safetensors":
            return (tr(lang, "pr_not_safetensors", f=Path(src).name),) + skip
        try:
            dst = be.import_prompt(src, safe_prompt_name(name or Path(src).stem))
        except PromptMismatchError as e:
            return (tr(lang, "pr_wrong_model", err=str(e)),) + skip
        except PromptError as e:
            return (tr(lang, "pr_invalid", err=str(e).replace(str(src), Path(src).name)),) + skip
        except Exception as e:
            return (failed(lang, "pr_failed", e),) + skip
        return (tr(lang, "pr_imported", name=dst.stem), *prompts_view(request))

    def ask_delete_prompt(name: str, request: gr.Request):
        lang = lang_of(request)
        if demo:
            return tr(lang, "demo_readonly"), gr.Row(visible=False)
        if not name:
            return tr(lang, "pr_pick"), gr.Row(visible=False)
        return tr(lang, "confirm_delete_prompt", name=name), gr.Row(visible=True)

    def prompt_delete(name: str, request: gr.Request):
        lang = lang_of(request)
        hide = gr.Row(visible=False)
        try:
            be.delete_prompt(name)
        except Exception as e:
            return failed(lang, "pr_failed", e), gr.skip(), gr.skip(), gr.skip(), hide
        return (tr(lang, "pr_deleted", name=name), *prompts_view(request), hide)

    def page_language(request: gr.Request):
        """On load: what the server writes into the page, in the browser's language (folder choices, table
        headers, method names, status)."""
        lang = lang_of(request)
        return (status_text(be, lang), *folder_dropdowns(lang), bad_table(lang), fs_table({}, lang),
                gr.Radio(choices=fs_method_choices(lang)), about_md(be, lang), metrics_md(models[0], lang),
                prompts_table(lang))

    models = installed_models()
    with gr.Blocks(title="DC-CLIP 照片搜索 · Photo search", fill_width=True) as app:
        gr.Markdown("# " + EN["title"], elem_id="title")
        gr.Markdown(T("subtitle"), elem_id="subtitle")
        status = gr.Markdown(T("st_starting"), elem_id="status")
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
                        ex_btns = [gr.Button(T(key), size="sm", variant="secondary", min_width=0, scale=0,
                                             elem_classes=["example-btn"]) for key in EXAMPLE_KEYS]
                    with gr.Accordion(T("options"), open=False):
                        with gr.Row():
                            k = gr.Slider(1, 100, value=20, step=1, label=T("k_label"))
                            show = gr.Radio([(T(f"show_{c}"), c) for c in SHOW_CHOICES], value=DEFAULT_SHOW,
                                            label=T("show_label"), info=T("show_info"), elem_id="show")
                        with gr.Row():
                            folder = gr.Dropdown([(T("folder_all"), "")] + [(r, r) for r in be.roots(False)],
                                                 value="", label=T("folder_label"), visible=not demo,
                                                 allow_custom_value=False, elem_id="folder")
                            date_from = gr.Textbox(label=T("date_from"), placeholder=T("date_placeholder"),
                                                   max_lines=1, elem_id="date-from")
                            date_to = gr.Textbox(label=T("date_to"), placeholder=T("date_placeholder"),
                                                 max_lines=1, elem_id="date-to")
                with gr.Column(scale=1, min_width=300):
                    image = gr.Image(type="filepath", label=T("image_label"), sources=["upload", "clipboard"],
                                     height=200, elem_id="image-query")
            message = gr.Markdown("", elem_id="message")
            gallery = thumb_gallery(label=T("gallery_label"), columns=5, height=620, object_fit="cover",
                                    allow_preview=True, show_label=False, elem_id="gallery", format="jpeg",
                                    fit_columns=False, interactive=False)
            result_paths = gr.State([])
            with gr.Accordion(T("detail_label"), open=True, elem_id="detail"):
                detail = gr.Markdown(T("detail_hint"), elem_id="detail-info")
                neighbours = thumb_gallery(label=T("neighbours_label"), columns=8, height=200, object_fit="cover",
                                           allow_preview=False, elem_id="neighbours", format="jpeg",
                                           interactive=False)
        with gr.Tab(T("tab_label"), elem_id="tab-label"):
            lab_mem = gr.State(None)         # demo mode: this visitor's labels (nothing is written)
            with gr.Row(equal_height=False):
                label_text = gr.Textbox(label=T("labels_label"), placeholder=T("labels_placeholder"),
                                        value="猫, 狗, 花, 咖啡, car, rocket", scale=4, elem_id="labels")
                label_prompt = gr.Dropdown([""] + library_names(), value="", label=T("label_prompt"),
                                           info=T("label_prompt_info"), scale=2, allow_custom_value=True,
                                           visible=not demo, elem_id="label-prompt")
                label_btn = gr.Button(T("label_btn"), variant="primary", scale=1, min_width=160,
                                      elem_id="label-btn", elem_classes=["end-btn"])
            with gr.Row(equal_height=False):
                sure = gr.Slider(0, 100, value=DEFAULT_SURE, step=5, label=T("sure_label"), info=T("sure_info"),
                                 scale=3, elem_id="sure")
                rv_filter = gr.Dropdown([(T("review_all"), "")], value="", label=T("review_filter"), scale=2,
                                        elem_id="review-filter")
                rv_page = gr.Number(value=1, minimum=1, precision=0, step=1, label=T("review_page_label"), scale=1,
                                    min_width=100, elem_id="review-page")
            label_msg = gr.Markdown("", elem_id="label-msg")
            rv_info = gr.Markdown("", elem_id="review-info")
            review = thumb_gallery(label=T("label_review"), columns=6, height=480, object_fit="cover",
                                   allow_preview=False, elem_id="review", format="jpeg", interactive=False)
            review_paths = gr.State([])
            with gr.Row(equal_height=False, visible=not demo):
                corr_photo = gr.Textbox(label=T("corr_photo"), placeholder=T("corr_photo_hint"), scale=3,
                                        max_lines=1, elem_id="corr-photo")
                corr_label = gr.Dropdown([], label=T("corr_label"), allow_custom_value=True, scale=2,
                                         elem_id="corr-label")
                corr_btn = gr.Button(T("corr_btn"), scale=1, min_width=140, elem_id="corr-btn",
                                     elem_classes=["end-btn"])
                undo_btn = gr.Button(T("undo_btn"), scale=1, min_width=140, elem_id="undo-btn",
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
                                        type="filepath", height=140, elem_id="fs-upload")
                    with gr.Row():
                        fs_add_btn = gr.Button(T("fs_add"), variant="secondary", elem_id="fs-add")
                        fs_clear_btn = gr.Button(T("fs_clear"), size="sm", elem_id="fs-clear")
                    fs_msg = gr.Markdown("", elem_id="fs-msg")
                    fs_table_df = gr.Dataframe(value=[], headers=[EN["fs_col_class"], EN["fs_col_n"],
                                                                  EN["fs_col_photos"]],
                                               interactive=False, wrap=True, column_count=(3, "fixed"),
                                               column_widths=["30%", "15%", "55%"], max_height=220,
                                               elem_id="fs-table")
            with gr.Row(equal_height=False):
                with gr.Column(scale=2):
                    fs_method = gr.Radio(fs_method_choices("en"), value="tip-adapter", label=T("fs_method"),
                                         elem_id="fs-method")
                    gr.Markdown(T("fs_method_help"), elem_id="fs-method-help")
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
                    fs_curve = gr.LinePlot(fs_plot([]), x="step", y="accuracy", label=T("fs_curve"), height=300,
                                           x_title=T("fs_axis_step"), y_title=T("fs_axis_acc"), y_lim=[0, 100],
                                           elem_id="fs-curve")
        with gr.Tab(T("tab_prompts"), elem_id="tab-prompts") as prompts_tab:
            pr_table = gr.Dataframe(value=[], headers=[EN[k] for k in ("pr_col_name", "pr_col_method", "pr_col_n",
                                                                       "pr_col_labels", "pr_col_shots", "pr_col_val",
                                                                       "pr_col_fits", "pr_col_source")],
                                    interactive=False, wrap=True, column_count=(8, "fixed"), max_height=300,
                                    column_widths=["17%", "12%", "6%", "33%", "8%", "8%", "8%", "8%"],
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
                    with gr.Row(visible=False) as pr_confirm_row:
                        pr_confirm_btn = gr.Button(T("confirm_yes_delete"), variant="stop", elem_id="pr-confirm")
                        pr_cancel_btn = gr.Button(T("confirm_cancel"), elem_id="pr-cancel")
                    pr_file = gr.File(label=T("export_file"), file_count="multiple", interactive=False,
                                      height=90, visible=False, elem_id="pr-file")
                with gr.Column(scale=2, visible=not demo):
                    pr_upload = gr.File(label=T("pr_import_file"), file_types=[".safetensors"], type="filepath",
                                        height=150, elem_id="pr-upload")
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
                                       elem_classes=["end-btn"], elem_id="remove-btn")
            index_msg = gr.Markdown("", elem_id="index-msg")
            with gr.Row(visible=False) as rm_confirm_row:
                rm_confirm_btn = gr.Button(T("confirm_yes_remove"), variant="stop", elem_id="remove-confirm")
                rm_cancel_btn = gr.Button(T("confirm_cancel"), elem_id="remove-cancel")
            bad_files = gr.Dataframe(value=[], headers=[EN["col_file"], EN["col_reason"]],
                                     label=T("index_bad"), interactive=False, wrap=True, max_height=400,
                                     column_count=(2, "fixed"), elem_id="bad-files")
        with gr.Tab(T("tab_model"), elem_id="tab-model") as model_tab:
            with gr.Row(equal_height=False):
                model_pick = gr.Dropdown(models, value=models[0], label=T("model_pick"), scale=4,
                                         elem_id="model-pick")
                model_use_btn = gr.Button(T("model_use"), scale=1, min_width=160, visible=not demo,
                                          elem_classes=["end-btn"], elem_id="model-use")
            model_msg = gr.Markdown("", elem_id="model-msg")
            model_about = gr.Markdown("", elem_id="model-about")
            metrics = gr.Markdown("", elem_id="metrics")

        inputs = [query, k, show, folder, date_from, date_to]
        outs = [gallery, message, result_paths, image]
        # searches are short (an 8 ms index query + thumbnails as URLs): no queue limit
        query.submit(do_search, inputs, outs, api_name="search", concurrency_limit=None)
        btn.click(do_search, inputs, outs, api_visibility="private", concurrency_limit=None)
        for i, b in enumerate(ex_btns):
            b.click(example_query(i), None, query, queue=False, api_visibility="private").then(
                do_search, inputs, outs, api_visibility="private", concurrency_limit=None)
        # .change also covers a pasted (clipboard) photo, which fires no upload event
        image.change(do_image_search, [image, k, show, folder, date_from, date_to], outs[:3],
                     api_name="search_image", preprocess=False)          # the handler reads the file itself
        gallery.select(on_select, [result_paths], [detail, neighbours], api_visibility="private")
        gr.api(api_detail, api_name="detail")
        timer = gr.Timer(1.0)
        timer.tick(poll, None, [status, timer, folder, remove_pick], api_visibility="private", queue=False)
        app.load(page_language, None, [status, folder, remove_pick, bad_files, fs_table_df, fs_method, model_about,
                                       metrics, pr_table], api_visibility="private", queue=False)
        gr.api(api_status, api_name="status")
        gr.api(api_search, api_name="search_json", concurrency_limit=None)

        # Label tab
        review_outs = [review, label_msg, review_paths, corr_label, rv_info, rv_page, rv_filter, lab_mem]
        label_in = [label_text, label_prompt, sure, lab_mem]
        label_text.submit(do_label, label_in, review_outs, api_visibility="private",
                          concurrency_limit=1, concurrency_id="write")
        label_btn.click(do_label, label_in, review_outs, api_name="label", concurrency_limit=1,
                        concurrency_id="write")
        view_in = [sure, rv_page, rv_filter, lab_mem]
        for comp in (sure, rv_filter, rv_page):
            comp.change(review_view, view_in, review_outs, api_visibility="private", queue=False)
        review.select(on_review_select, [review_paths], [corr_photo], api_visibility="private", queue=False)
        corr_btn.click(do_correct, [corr_photo, corr_label, sure, rv_filter, lab_mem], review_outs,
                       api_name="label_correct", concurrency_limit=1, concurrency_id="write")
        undo_btn.click(do_undo, [corr_photo, sure, rv_filter, lab_mem], review_outs, api_name="label_undo",
                       concurrency_limit=1, concurrency_id="write")

        def export_csv(mem, request: gr.Request):
            return do_export("csv", mem, request)

        def export_json(mem, request: gr.Request):
            return do_export("json", mem, request)

        csv_btn.click(export_csv, [lab_mem], [export_file, label_msg], api_name="export_csv")
        json_btn.click(export_json, [lab_mem], [export_file, label_msg], api_name="export_json")
        copy_btn.click(do_copy, [copy_dir, sure], [label_msg], api_name="label_copy", concurrency_limit=1)

        # Few-shot tab
        fs_query.submit(fs_find, [fs_query], [fs_results, fs_paths, fs_picked, fs_msg], api_visibility="private")
        fs_find_btn.click(fs_find, [fs_query], [fs_results, fs_paths, fs_picked, fs_msg], api_name="fewshot_find")
        fs_results.select(fs_toggle, [fs_paths, fs_picked], [fs_results, fs_picked], api_visibility="private")
        fs_add_btn.click(fs_add, [fs_class, fs_upload, fs_paths, fs_picked, fs_examples],
                         [fs_examples, fs_table_df, fs_msg, fs_picked, fs_results], api_name="fewshot_add").then(
            lambda: None, None, [fs_upload], api_visibility="private", queue=False)
        fs_clear_btn.click(fs_clear, None, [fs_examples, fs_table_df, fs_msg, fs_prompt, fs_upload, fs_save_msg],
                           api_name="fewshot_clear")
        fs_learn_btn.click(fs_learn, [fs_method, fs_steps, fs_examples], [fs_curve, fs_result, fs_prompt, fs_save_msg],
                           api_name="fewshot_learn", concurrency_limit=1, concurrency_id="learn")
        fs_save_btn.click(fs_save, [fs_name, fs_prompt], [fs_save_msg, label_prompt, pr_pick],
                          api_name="fewshot_save")

        # Prompts tab
        prompts_tab.select(prompts_view, None, [pr_table, pr_pick, label_prompt], api_name="prompts_list")
        pr_pick.change(prompt_detail, [pr_pick], [pr_info], api_name="prompt_detail", queue=False)
        pr_apply_btn.click(prompt_apply, [pr_pick, sure, lab_mem], [pr_msg] + review_outs,
                           api_name="prompt_apply", concurrency_limit=1, concurrency_id="write")
        pr_export_btn.click(prompt_export, [pr_pick], [pr_file, pr_msg], api_name="prompt_export")
        pr_import_btn.click(prompt_import, [pr_upload, pr_import_name], [pr_msg, pr_table, pr_pick, label_prompt],
                            api_name="prompt_import")
        pr_delete_btn.click(ask_delete_prompt, [pr_pick], [pr_msg, pr_confirm_row], api_name="prompt_delete_ask",
                            queue=False)
        pr_confirm_btn.click(prompt_delete, [pr_pick], [pr_msg, pr_table, pr_pick, label_prompt, pr_confirm_row],
                             api_name="prompt_delete")
        pr_cancel_btn.click(lambda: ("", gr.Row(visible=False)), None, [pr_msg, pr_confirm_row],
                            api_visibility="private", queue=False)

        # Index and Model tabs
        index_outs = [index_info, bad_files, index_msg, status]
        index_tab.select(index_view, None, [index_info, bad_files], api_name="index_info", queue=False)
        rescan_btn.click(do_rescan, None, index_outs, api_name="rescan", concurrency_limit=1, concurrency_id="write")
        add_folder.submit(do_add_folder, [add_folder], index_outs, api_visibility="private", concurrency_limit=1,
                          concurrency_id="write").then(folders_after_add, None, [folder, remove_pick],
                                                       api_visibility="private", queue=False)
        add_btn.click(do_add_folder, [add_folder], index_outs, api_name="add_folder", concurrency_limit=1,
                      concurrency_id="write").then(folders_after_add, None, [folder, remove_pick],
                                                   api_visibility="private", queue=False)
        remove_btn.click(ask_remove_folder, [remove_pick], [index_msg, rm_confirm_row], api_name="remove_folder_ask",
                         queue=False)
        rm_confirm_btn.click(do_remove_folder, [remove_pick], index_outs + [folder, remove_pick, rm_confirm_row],
                             api_name="remove_folder", concurrency_limit=1, concurrency_id="write")
        rm_cancel_btn.click(lambda: ("", gr.Row(visible=False)), None, [index_msg, rm_confirm_row],
                            api_visibility="private", queue=False)
        model_tab.select(model_view, [model_pick], [metrics, model_about], api_visibility="private", queue=False)
        model_pick.change(model_view, [model_pick], [metrics, model_about], api_name="model_card", queue=False)
        model_use_btn.click(do_use_model, [model_pick], [model_msg, model_about, status], api_name="model_use",
                            concurrency_limit=1, concurrency_id="write")

    app.backend = be  # for tests and main()
    return app


def launch_kwargs(app: gr.Blocks, demo: bool = False) -> dict:
    """Arguments for app.launch(): translations, looks, the routes that serve photos and the login back-off.
    Gradio's own file route gets no indexed folder (``allowed_paths`` is empty): photos reach the page only
    through /thumb and /photo, by keys and ids (ui.files)."""
    from starlette.middleware import Middleware
    be: Backend = app.backend
    be.thumb_dir.mkdir(parents=True, exist_ok=True)
    theme = gr.themes.Soft(primary_hue="indigo", font=FONTS, font_mono=["Noto Sans Mono CJK SC", "monospace"])
    return dict(i18n=I18N, css=CSS, head=HEAD, theme=theme, allowed_paths=[],
                app_kwargs={"routes": file_routes(be.thumbs, be.photo_path),
                            "middleware": [Middleware(LoginBackoff)]},
                max_file_size=MAX_UPLOAD, share=False,
                footer_links=[] if demo else ["api", "settings"])


def parse_args(argv=None):
    p = argparse.ArgumentParser(description="DC-CLIP bilingual offline photo search (Gradio).")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=int(os.environ.get("GRADIO_SERVER_PORT") or 7860))
    p.add_argument("--db", default=None, help="index database (default: $DCCLIP_CACHE/library.db, which starts "
                                              "with the bundled demo photos)")
    p.add_argument("--root", default=None, help="folder to (re)index into --db in the background")
    p.add_argument("--demo", action="store_true", help="conference booth: only the bundled photos, in a database "
                                                       "of its own; read-only; no file paths")
    p.add_argument("--auth", default=None, help="user:password required to open the page")
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    cache = default_cache()
    if args.demo:
        if args.db or args.root:
            sys.exit("--demo shows only the bundled photos in a database of its own: it takes no --db or --root")
        booth = booth_dir(cache)
        booth.mkdir(parents=True, exist_ok=True)
        db, root, thumbs = booth / "demo.db", str(DEMO_ROOT), booth / "thumbs"
        if prepare_booth(db, DEMO_ROOT):
            print("booth database held more than the bundled photos: rebuilt", flush=True)
    elif args.db is None:
        cache.mkdir(parents=True, exist_ok=True)
        db, root, thumbs = library_db(cache), args.root or str(DEMO_ROOT), cache / "thumbs"
    else:
        db, root, thumbs = Path(args.db), args.root, cache / "thumbs"
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
    be = Backend(db, root=root, demo=args.demo, thumb_dir=thumbs)
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
