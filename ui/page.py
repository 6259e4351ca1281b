"""The page: the title and status line, one tab per module of ``ui.tabs``, the look (local fonts only: a booth has
no network) and what ``app.launch`` is given (no folder for Gradio's file route; photos come from ``ui.files``).

    app = build_app("photos.db", backend=Backend("photos.db", root="~/Pictures"))
    app.launch(**launch_kwargs(app))
"""
from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import gradio as gr

from .backend import Backend, installed_models
from .common import bind, folder_dropdowns, status_text
from .files import LoginBackoff, routes as file_routes
from .i18n import EN, I18N, T, lang_of
from .tabs import fewshot, folders, label, model, people, prompts, search

MAX_UPLOAD = "20mb"
TABS = (search, people, label, fewshot, prompts, folders, model)     # in the order the page shows them
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
#gallery .caption-label { white-space: pre; line-height: 1.35; }   /* name · date, then why: "雏菊 41% · 蜜蜂 12%" */
#gallery .preview .caption { white-space: pre; line-height: 1.4; }
#gallery .preview .media-button { height: calc(100% - 60px - 3.4em) !important; }   /* room for both lines */
#detail-row { gap: 16px; align-items: flex-start; }
#why { flex: 2 1 320px !important; min-width: min(320px, 100%) !important; }
#detail-info { flex: 3 1 300px !important; }
.why-head { font-weight: 600; margin: 2px 0 6px; }
.why-chips { display: flex; flex-wrap: wrap; gap: 6px; margin-bottom: 10px; }
.why-chip { background: #fff3e0; color: #8a3a00; border: 1px solid #f3c07f; border-radius: 999px; padding: 2px 10px;
  font-size: 0.95em; white-space: nowrap; }
.why-chip b { font-weight: 600; margin-left: 2px; }
.why-said { margin-bottom: 10px; line-height: 1.5; }
.why-quote { font-size: 1.1em; font-weight: 600; background: #e6f9ff; color: #00516b; border: 1px solid #7fd8f3;
  border-radius: 6px; padding: 2px 8px; overflow-wrap: anywhere; }
.why-kind { color: var(--body-text-color-subdued); font-size: 0.9em; margin-left: 4px; }
.why-people { margin-bottom: 10px; line-height: 1.5; }
.why-person { font-size: 1.05em; font-weight: 600; background: #ffe8f8; color: #86005e; border: 1px solid #f59bdc;
  border-radius: 999px; padding: 2px 10px; margin-right: 4px; white-space: nowrap; }
.why-person { display: inline-flex; align-items: center; gap: 5px; }
.why-person svg.why-person-icon { display: inline-block !important; flex: 0 0 auto; width: 0.95em !important;
  height: 0.95em !important; margin: 0 !important; }
#people-grid .grid-wrap, #person-photos .grid-wrap, #person-faces .grid-wrap {   /* as tall as what they hold */
  height: auto !important; min-height: 0 !important; max-height: 560px; }
#people-grid .caption-label, #person-faces .caption-label { text-align: center; }
#person-not-hint p { margin: 0; color: var(--body-text-color-subdued); }
.why-fig { margin: 0; }
.why-fig img { display: block; width: auto; height: auto; max-width: 100%; max-height: 380px; border-radius: 8px; }
.why-fig figcaption { color: var(--body-text-color-subdued); font-size: 0.9em; margin-top: 6px; }
.why-note { color: var(--body-text-color-subdued); font-size: 0.9em; }
@media (max-width: 600px) {   /* a phone: two thumbnails a row, the grid as tall as its results */
  #gallery .grid-container, #review .grid-container, #fs-results .grid-container {
    grid-template-columns: repeat(2, minmax(0, 1fr)) !important; }
  #gallery .grid-wrap, #review .grid-wrap { height: auto !important; max-height: 75vh; }
  #neighbours .grid-container { grid-template-columns: repeat(4, minmax(0, 1fr)) !important; }
  #people-grid .grid-container, #person-photos .grid-container {
    grid-template-columns: repeat(3, minmax(0, 1fr)) !important; }
  #person-faces .grid-container { grid-template-columns: repeat(4, minmax(0, 1fr)) !important; }
}
"""
FONTS = ["Noto Sans CJK SC", "Noto Sans SC", "Noto Sans", "PingFang SC", "Microsoft YaHei", "Source Han Sans SC",
         "system-ui", "sans-serif"]
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


def page_language(backend: Backend, request: gr.Request):
    """On load: what the server writes into the page, in the browser's language (status, folder choices, table
    headers, method names, the model card)."""
    lang = lang_of(request)
    return (status_text(backend, lang), *folder_dropdowns(backend, lang), folders.bad_table(backend, lang),
            fewshot.fs_table({}, lang), gr.Radio(choices=fewshot.fs_method_choices(lang)), model.about_md(backend, lang),
            model.metrics_md(installed_models()[0], lang), prompts.prompts_table(backend, lang))


def build_app(db_path: str | Path, model=None, searcher=None, demo: bool = False,
              root: str | Path | None = None, backend: Backend | None = None, start: bool = True) -> gr.Blocks:
    """Build the page over a service. With ``searcher`` given it is used as is; otherwise the model loads (and
    ``root``, if given, is indexed into ``db_path``) in a background thread, started here unless ``start`` is
    False (app.main starts it once the page is served, so loading does not slow the first page)."""
    backend = backend or Backend(db_path, model=model, searcher=searcher, root=root, demo=demo)
    backend.demo = bool(backend.demo or demo)
    if start:
        backend.start()
    with gr.Blocks(title="DC-CLIP 照片搜索 · Photo search", fill_width=True) as app:
        gr.Markdown("# " + EN["title"], elem_id="title")
        gr.Markdown(T("subtitle"), elem_id="subtitle")
        ui = SimpleNamespace(app=app, status=gr.Markdown(T("st_starting"), elem_id="status"))
        for tab in TABS:
            setattr(ui, tab.__name__.rsplit(".", 1)[-1], tab.build(backend))
        for tab in TABS:
            tab.wire(backend, ui)
        app.load(bind(page_language, backend), None,
                 [ui.status, ui.search.folder, ui.folders.remove_pick, ui.folders.bad_files, ui.fewshot.fs_table_df,
                  ui.fewshot.fs_method, ui.model.model_about, ui.model.metrics, ui.prompts.pr_table],
                 api_visibility="private", queue=False)
        gr.api(backend.status, api_name="status")
    app.backend = backend  # for tests and app.main()
    return app


def launch_kwargs(app: gr.Blocks, demo: bool = False) -> dict:
    """Arguments for app.launch(): translations, looks, the routes that serve photos and the login back-off.
    Gradio's own file route gets no indexed folder (``allowed_paths`` is empty): photos reach the page only
    through /thumb and /photo, by keys and ids (ui.files)."""
    from starlette.middleware import Middleware
    backend: Backend = app.backend
    backend.thumb_dir.mkdir(parents=True, exist_ok=True)
    theme = gr.themes.Soft(primary_hue="indigo", font=FONTS, font_mono=["Noto Sans Mono CJK SC", "monospace"])
    return dict(i18n=I18N, css=CSS, head=HEAD, theme=theme, allowed_paths=[],
                app_kwargs={"routes": file_routes(backend.thumbs, backend.photo_path),
                            "middleware": [Middleware(LoginBackoff)]},
                max_file_size=MAX_UPLOAD, share=False,
                footer_links=[] if demo else ["api", "settings"])
