"""The Label tab: label every photo with typed labels (zero-shot) or a library prompt, review them page by page
("not sure" below a certainty the user sets), correct a photo (a fact no relabelling erases) or undo that, export
CSV / JSON, copy into class folders. In demo mode labels live in the visitor's page only (``lab_mem``)."""
from __future__ import annotations

import time
from pathlib import Path
from types import SimpleNamespace

import gradio as gr

from ..backend import Backend
from ..common import bind, failed, label_caption, library_names, not_ready, thumb_gallery
from ..files import origin_of
from ..i18n import T, is_zh, lang_of, tr

REVIEW_PAGE = 60           # photos per page of the review grid
DEFAULT_SURE = 50          # a photo whose certainty is below this (%) is shown as "not sure"


def review_outputs(backend: Backend, lang: str, origin: str, msg, sure, page, which, mem, focus: str | None = None):
    """(review grid, message, its paths, label choices, page info, page, filter, in-memory rows): one page of
    the best label per photo, filtered ("" all, "__unsure__", "__corrected__" or one label), sorted by label
    then certainty; ``focus`` opens the page that shows that photo and selects it."""
    try:
        rows = backend.label_rows(mem)
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
    items = [(backend.thumb_url(r["path"], origin), label_caption(r, lang, sure)) for r in chunk]
    info = tr(lang, "review_page", page=page, pages=pages, n=len(rows)) if rows else tr(lang, "review_empty")
    filters = ([(tr(lang, "review_all"), ""), (tr(lang, "review_unsure"), "__unsure__"),
                (tr(lang, "review_corrected"), "__corrected__")] + [(u, u) for u in used])
    return (gr.Gallery(value=items, selected_index=selected), msg, [r["path"] for r in chunk],
            gr.Dropdown(choices=used, value=None), info, gr.Number(value=page, maximum=pages),
            gr.Dropdown(choices=filters, value=which or ""), mem)


def do_label(backend: Backend, labels: str, prompt_name: str | None, sure, mem, request: gr.Request, progress=gr.Progress()):
    """Label every indexed photo: with the typed labels (zero-shot, zh/en, comma separated) or, when
    one is chosen, with a prompt from the library. In demo mode the labels live in this page only."""
    lang, origin = lang_of(request), origin_of(request)
    from index.labels import parse_labels
    keep = (gr.skip(),) * 8
    if backend.state != "ready":
        return (gr.skip(), not_ready(backend, lang)) + keep[2:]
    names = parse_labels(labels or "")
    if not names and not prompt_name:
        return (gr.skip(), tr(lang, "msg_no_labels")) + keep[2:]
    desc = tr(lang, "msg_labeling")
    cb = lambda d, t: progress((int(d), int(t)), desc=desc) if t else None  # noqa: E731
    t0 = time.perf_counter()
    try:
        res = backend.label(names, prompt_name=prompt_name or None, lang="zh" if is_zh(lang) else "en", progress=cb)
    except Exception as e:
        return (gr.skip(), failed(lang, "msg_label_failed", e)) + keep[2:]
    mem = res.get("rows") if backend.demo else None
    counts = ", ".join(f"{k} {v}" for k, v in sorted(res["counts"].items(), key=lambda kv: -kv[1]))
    msg = tr(lang, "msg_labeled", n=res["images"], l=len(res["labels"]), s=round(time.perf_counter() - t0, 1),
             counts=counts)
    return review_outputs(backend, lang, origin, msg, sure, 1, "", mem)


def review_view(backend: Backend, sure, page, which, mem, request: gr.Request):
    return review_outputs(backend, lang_of(request), origin_of(request), gr.skip(), sure, page, which, mem)


def on_review_select(backend: Backend, paths, evt: gr.SelectData):
    try:
        path = paths[int(evt.index)]
    except (TypeError, ValueError, IndexError):
        return gr.skip()
    return backend.shown_path(path)


def _change_correction(backend: Backend, photo: str, change, lang: str):
    """(path, message) after ``change(path)`` on the photo named in the correction box; the message alone says
    why nothing changed (demo mode, no photo picked, a failure)."""
    if backend.demo:
        return None, tr(lang, "demo_readonly")
    path = backend.find_path(photo or "")
    if not path:
        return None, tr(lang, "msg_pick_photo")
    try:
        return path, change(path)
    except Exception as e:
        return None, failed(lang, "msg_label_failed", e)


def do_correct(backend: Backend, photo: str, label: str, sure, which, mem, request: gr.Request):
    """Correct one photo's label: a fact about the photo that later labelling runs keep (undo removes it)."""
    lang, origin = lang_of(request), origin_of(request)
    path, out = _change_correction(backend, photo, lambda p: backend.correct(p, label or ""), lang)
    if path is None:
        return (gr.skip(), out) + (gr.skip(),) * 6
    msg = tr(lang, "msg_corrected", name=Path(path).name, label=" ".join(str(label).split()))
    which = which if which in ("", "__corrected__") else ""
    return review_outputs(backend, lang, origin, msg, sure, 1, which, mem, focus=path)


def do_undo(backend: Backend, photo: str, sure, which, mem, request: gr.Request):
    """Remove a correction: the photo shows its automatic label again."""
    lang, origin = lang_of(request), origin_of(request)
    path, n = _change_correction(backend, photo, backend.undo_correction, lang)
    if path is None:
        return (gr.skip(), n) + (gr.skip(),) * 6
    msg = tr(lang, "msg_undone" if n else "msg_nothing_to_undo", name=Path(path).name)
    return review_outputs(backend, lang, origin, msg, sure, 1, "" if which == "__corrected__" else which, mem, focus=path)


def do_copy(backend: Backend, out_dir: str, sure, request: gr.Request, progress=gr.Progress()):
    """Copy the labelled photos into out_dir/<label>/ (never overwriting, never twice; not in demo mode)."""
    lang = lang_of(request)
    out_dir = (out_dir or "").strip()
    if backend.demo:
        return tr(lang, "demo_readonly")
    if not out_dir or not Path(out_dir).expanduser().is_absolute():
        return tr(lang, "msg_copy_where")
    desc = tr(lang, "msg_copying")
    try:
        res = backend.copy_labelled(out_dir, sure=float(DEFAULT_SURE if sure is None else sure) / 100,
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


def do_export(backend: Backend, fmt: str, mem, request: gr.Request):
    """The labels as a CSV or JSON file (file names only in demo mode, where they come from this page)."""
    lang = lang_of(request)
    try:
        out, n = backend.export_labels(fmt, mem)
    except Exception:
        return None, tr(lang, "msg_label_first")
    return gr.File(value=str(out), visible=True), tr(lang, "msg_exported", n=n, f=out.name)

def export_csv(backend: Backend, mem, request: gr.Request):
    return do_export(backend, "csv", mem, request)


def export_json(backend: Backend, mem, request: gr.Request):
    return do_export(backend, "json", mem, request)


def build(backend: Backend) -> SimpleNamespace:
    """The Label tab's components."""
    with gr.Tab(T("tab_label"), elem_id="tab-label") as tab:
        lab_mem = gr.State(None)         # demo mode: this visitor's labels (nothing is written)
        with gr.Row(equal_height=False):
            label_text = gr.Textbox(label=T("labels_label"), placeholder=T("labels_placeholder"),
                                    value="猫, 狗, 花, 咖啡, car, rocket", scale=4, elem_id="labels")
            label_prompt = gr.Dropdown([""] + library_names(backend), value="", label=T("label_prompt"),
                                       info=T("label_prompt_info"), scale=2, allow_custom_value=True,
                                       visible=not backend.demo, elem_id="label-prompt")
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
                               allow_preview=False, elem_id="review")
        review_paths = gr.State([])
        with gr.Row(equal_height=False, visible=not backend.demo):
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
            with gr.Column(scale=3, visible=not backend.demo):
                with gr.Row(equal_height=False):
                    copy_dir = gr.Textbox(label=T("copy_dir"), placeholder=T("copy_dir_hint"), scale=3,
                                          max_lines=1, elem_id="copy-dir")
                    copy_btn = gr.Button(T("copy_btn"), scale=1, min_width=160, elem_id="copy-btn",
                                         elem_classes=["end-btn"])
    return SimpleNamespace(tab=tab, lab_mem=lab_mem, label_text=label_text, label_prompt=label_prompt,
                           label_btn=label_btn, sure=sure, rv_filter=rv_filter, rv_page=rv_page,
                           label_msg=label_msg, rv_info=rv_info, review=review, review_paths=review_paths,
                           corr_photo=corr_photo, corr_label=corr_label, corr_btn=corr_btn, undo_btn=undo_btn,
                           csv_btn=csv_btn, json_btn=json_btn, export_file=export_file, copy_dir=copy_dir,
                           copy_btn=copy_btn)


def review_outputs_of(t: SimpleNamespace) -> list:
    """The components a labelling run updates (see review_outputs), in its order."""
    return [t.review, t.label_msg, t.review_paths, t.corr_label, t.rv_info, t.rv_page, t.rv_filter, t.lab_mem]


def wire(backend: Backend, ui: SimpleNamespace) -> None:
    t = ui.label
    outs = review_outputs_of(t)
    label_in = [t.label_text, t.label_prompt, t.sure, t.lab_mem]
    t.label_text.submit(bind(do_label, backend), label_in, outs, api_visibility="private", concurrency_limit=1,
                        concurrency_id="write")
    t.label_btn.click(bind(do_label, backend), label_in, outs, api_name="label", concurrency_limit=1,
                      concurrency_id="write")
    view_in = [t.sure, t.rv_page, t.rv_filter, t.lab_mem]
    for comp in (t.sure, t.rv_filter, t.rv_page):
        comp.change(bind(review_view, backend), view_in, outs, api_visibility="private", queue=False)
    t.review.select(bind(on_review_select, backend), [t.review_paths], [t.corr_photo], api_visibility="private",
                    queue=False)
    t.corr_btn.click(bind(do_correct, backend), [t.corr_photo, t.corr_label, t.sure, t.rv_filter, t.lab_mem], outs,
                     api_name="label_correct", concurrency_limit=1, concurrency_id="write")
    t.undo_btn.click(bind(do_undo, backend), [t.corr_photo, t.sure, t.rv_filter, t.lab_mem], outs, api_name="label_undo",
                     concurrency_limit=1, concurrency_id="write")
    t.csv_btn.click(bind(export_csv, backend), [t.lab_mem], [t.export_file, t.label_msg], api_name="export_csv")
    t.json_btn.click(bind(export_json, backend), [t.lab_mem], [t.export_file, t.label_msg], api_name="export_json")
    t.copy_btn.click(bind(do_copy, backend), [t.copy_dir, t.sure], [t.label_msg], api_name="label_copy",
                     concurrency_limit=1)
