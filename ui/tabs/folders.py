"""The Index tab: the indexed folders and their counts, add a folder, re-scan, remove a folder (after asking; files
on disk are never touched), the unreadable files and why, the text read in the photos (progress, and the photos
whose text could not be read), the faces found (progress, counts, and the photos the face pass could not look at),
in the page's language. Read-only in demo mode."""
from __future__ import annotations

import time
from pathlib import Path
from types import SimpleNamespace

import gradio as gr

from ..backend import Backend
from ..common import bind, dataframe, failed, folder_dropdowns, not_ready, status_text
from ..i18n import EN, T, lang_of, reason_text, tr


def index_md(backend: Backend, lang: str) -> str:
    roots = backend.roots()
    st = backend.stats()
    lines = [f"**{tr(lang, 'index_roots')}**", ""]
    if roots:
        lines += [f"- `{backend.shown_path(r)}`" for r in roots]
    else:
        lines.append(f"- {tr(lang, 'index_none')}")
    if st:
        lines += ["", tr(lang, "index_counts", n=st.get("images", 0), e=st.get("errors", 0))]
    if backend.demo:
        lines += ["", tr(lang, "index_readonly")]
    return "\n".join(lines)


def text_md(backend: Backend, lang: str) -> str:
    """The text pass in a line: photos with text and lines read, then the run's progress, the photos still to
    read or why it stopped ("" before the index has any text record)."""
    text = backend.text_stats()
    if not text.get("photos") and not backend.text_running and not backend.text_error:
        return ""
    parts = [tr(lang, "index_text", n=text.get("with_text", 0), lines=text.get("lines", 0))]
    if backend.text_running:
        parts.append(tr(lang, "st_text", done=backend.text_done, total=backend.text_total or "…"))
    elif backend.text_error:
        parts.append(tr(lang, "index_text_failed", err=backend.text_error))
    elif text.get("pending"):
        parts.append(tr(lang, "index_text_pending", n=text["pending"]))
    return " · ".join(parts)


def faces_md(backend: Backend, lang: str) -> str:
    """The face pass in a line: photos with faces, faces and people, then the run's progress, the photos still to
    look at, why it stopped, or that it is switched off ("" before it has looked at any photo)."""
    st = backend.face_stats()
    on = backend.faces_enabled()
    if not st.get("photos") and not backend.faces_running and not backend.faces_error:
        return tr(lang, "index_faces_off") if st and not on else ""
    parts = [tr(lang, "index_faces", n=st.get("with_faces", 0), faces=st.get("faces", 0),
                people=st.get("people", 0))]
    if backend.faces_running:
        parts.append(tr(lang, "st_faces", done=backend.faces_done, total=backend.faces_total or "…"))
    elif backend.faces_error:
        parts.append(tr(lang, "index_faces_failed", err=backend.faces_error))
    elif not on:
        parts.append(tr(lang, "index_faces_off"))
    elif st.get("pending"):
        parts.append(tr(lang, "index_faces_pending", n=st["pending"]))
    return " · ".join(parts)


def faces_table(backend: Backend, lang: str):
    """The photos the face pass could not look at (and why) or whose crowd was cut at the cap; hidden when there
    are none."""
    rows = [[f["path"], reason_text(lang, f["reason"]) if f["state"] == "error" else tr(lang, "faces_capped_short")]
            for f in backend.face_problems()]
    return dataframe(rows, lang, ["col_file", "col_reason"], visible=bool(rows))


def bad_table(backend: Backend, lang: str):
    rows = [[b["path"], reason_text(lang, b["reason"])] for b in backend.bad_files()]
    return dataframe(rows, lang, ["col_file", "col_reason"])


def text_table(backend: Backend, lang: str):
    """The photos whose text could not be read (and why) or was cut at the caps; hidden when there are none."""
    rows = [[t["path"], reason_text(lang, t["reason"]) if t["state"] == "error" else tr(lang, "text_capped_short")]
            for t in backend.text_problems()]
    return dataframe(rows, lang, ["col_file", "col_reason"], visible=bool(rows))


def index_outputs(backend: Backend, lang: str, msg: str):
    """(index info, bad files, message, status line)."""
    return index_md(backend, lang), bad_table(backend, lang), msg, status_text(backend, lang)


def index_view(backend: Backend, request: gr.Request):
    lang = lang_of(request)
    return index_md(backend, lang), bad_table(backend, lang)


def text_view(backend: Backend, request: gr.Request):
    """(the text pass's line, the photos whose text was not read); on the status timer's ticks too (while the
    text pass runs, and once when it ends): nothing before the index is ready."""
    if backend.state != "ready":
        return gr.skip(), gr.skip()
    lang = lang_of(request)
    return text_md(backend, lang), text_table(backend, lang)


def faces_view(backend: Backend, request: gr.Request):
    """(the face pass's line, the photos it could not look at); on the status timer's ticks too."""
    if backend.state != "ready":
        return gr.skip(), gr.skip()
    lang = lang_of(request)
    return faces_md(backend, lang), faces_table(backend, lang)


def _progress_cb(backend: Backend, progress, lang, root):
    desc = tr(lang, "msg_scanning", root=backend.shown_path(root))

    def cb(done, total, path=None):
        if total:
            progress((int(done), int(total)), desc=desc)
    return cb


def do_rescan(backend: Backend, request: gr.Request, progress=gr.Progress()):
    """Re-scan every indexed folder (new, changed, moved and deleted photos)."""
    lang = lang_of(request)
    if backend.state != "ready":
        return index_outputs(backend, lang, not_ready(backend, lang))
    t0 = time.perf_counter()
    tot = {"indexed": 0, "updated": 0, "removed": 0}
    roots = backend.roots()
    try:
        backend.require_writable()
        for r in roots:
            res = backend.index_folder(r, progress=_progress_cb(backend, progress, lang, r))
            for key in tot:
                tot[key] += int(res.get(key) or 0)
    except Exception as e:
        return index_outputs(backend, lang, failed(lang, "msg_index_failed", e))
    msg = tr(lang, "msg_rescanned", n=len(roots), added=tot["indexed"], updated=tot["updated"],
             removed=tot["removed"], errors=backend.stats().get("errors", 0), s=round(time.perf_counter() - t0, 1))
    return index_outputs(backend, lang, msg)


def do_add_folder(backend: Backend, folder: str, request: gr.Request, progress=gr.Progress()):
    """Index a new folder into the same database (its photos become searchable)."""
    lang = lang_of(request)
    if backend.demo:
        return index_outputs(backend, lang, tr(lang, "index_readonly"))
    folder = (folder or "").strip()
    if not folder:
        return index_outputs(backend, lang, tr(lang, "msg_no_folder"))
    root = Path(folder).expanduser()
    if not root.is_dir():
        return index_outputs(backend, lang, tr(lang, "msg_not_folder", root=folder))
    if backend.state != "ready":
        return index_outputs(backend, lang, not_ready(backend, lang))
    root = str(root.resolve())
    t0 = time.perf_counter()
    try:
        res = backend.index_folder(root, progress=_progress_cb(backend, progress, lang, root))
    except Exception as e:
        return index_outputs(backend, lang, failed(lang, "msg_index_failed", e))
    msg = tr(lang, "msg_added", root=root, added=int(res.get("indexed") or 0),
             errors=int(res.get("errors") or 0), s=round(time.perf_counter() - t0, 1))
    return index_outputs(backend, lang, msg)


def ask_remove_folder(backend: Backend, root: str, request: gr.Request):
    """First click on "Remove": ask to confirm (nothing is removed yet)."""
    lang = lang_of(request)
    if backend.demo:
        return tr(lang, "index_readonly"), gr.Row(visible=False)
    if not root or root not in backend.roots():
        return tr(lang, "msg_pick_folder"), gr.Row(visible=False)
    return tr(lang, "confirm_remove_folder", root=root), gr.Row(visible=True)


def do_remove_folder(backend: Backend, root: str, request: gr.Request):
    """Take a folder's photos out of the index (the files on disk are not touched; not in demo mode)."""
    lang = lang_of(request)
    hide = gr.Row(visible=False)
    if not root or root not in backend.roots():
        return (*index_outputs(backend, lang, tr(lang, "msg_pick_folder")), gr.skip(), gr.skip(), hide)
    try:
        res = backend.remove_root(root)
    except Exception as e:
        return (*index_outputs(backend, lang, failed(lang, "msg_index_failed", e)), gr.skip(),
                gr.skip(), hide)
    msg = tr(lang, "msg_removed", root=root, n=res["removed"], e=res["errors_removed"])
    return (*index_outputs(backend, lang, msg), *folder_dropdowns(backend, lang), hide)


def folders_after_add(backend: Backend, request: gr.Request):
    return folder_dropdowns(backend, lang_of(request))

def build(backend: Backend) -> SimpleNamespace:
    """The Index tab's components."""
    with gr.Tab(T("tab_index"), elem_id="tab-index") as tab:
        index_info = gr.Markdown("", elem_id="index-info")          # filled when the tab opens
        text_info = gr.Markdown("", elem_id="text-info")            # ... and while the text pass runs
        faces_info = gr.Markdown("", elem_id="faces-info")          # ... and while the face pass runs
        with gr.Row(visible=not backend.demo):
            rescan_btn = gr.Button(T("rescan_btn"), variant="secondary", scale=0, min_width=200,
                                   elem_id="rescan-btn")
        with gr.Row(visible=not backend.demo, equal_height=False):
            add_folder = gr.Textbox(label=T("add_folder_label"), placeholder=T("add_folder_placeholder"),
                                    scale=5, elem_id="add-folder")
            add_btn = gr.Button(T("add_folder_btn"), variant="primary", scale=1, min_width=160,
                                elem_classes=["end-btn"])
        with gr.Row(visible=not backend.demo, equal_height=False):
            remove_pick = gr.Dropdown(backend.roots(False), value=None, label=T("remove_folder_label"),
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
        text_bad = gr.Dataframe(value=[], headers=[EN["col_file"], EN["col_reason"]], label=T("index_text_bad"),
                                interactive=False, wrap=True, max_height=300, column_count=(2, "fixed"),
                                visible=False, elem_id="text-bad")
        faces_bad = gr.Dataframe(value=[], headers=[EN["col_file"], EN["col_reason"]], label=T("index_faces_bad"),
                                 interactive=False, wrap=True, max_height=300, column_count=(2, "fixed"),
                                 visible=False, elem_id="faces-bad")
    return SimpleNamespace(tab=tab, index_info=index_info, rescan_btn=rescan_btn, add_folder=add_folder,
                           add_btn=add_btn, remove_pick=remove_pick, remove_btn=remove_btn, index_msg=index_msg,
                           rm_confirm_row=rm_confirm_row, rm_confirm_btn=rm_confirm_btn,
                           rm_cancel_btn=rm_cancel_btn, bad_files=bad_files, text_info=text_info,
                           text_bad=text_bad, faces_info=faces_info, faces_bad=faces_bad)


def wire(backend: Backend, ui: SimpleNamespace) -> None:
    t, search = ui.folders, ui.search
    outs = [t.index_info, t.bad_files, t.index_msg, ui.status]
    text, faces = [t.text_info, t.text_bad], [t.faces_info, t.faces_bad]
    t.tab.select(bind(index_view, backend), None, [t.index_info, t.bad_files], api_name="index_info",
                 queue=False).then(bind(text_view, backend), None, text, api_visibility="private", queue=False).then(
        bind(faces_view, backend), None, faces, api_visibility="private", queue=False)
    # the status timer (ui.tabs.search) follows the text and face passes a write started again, here too
    search.timer.tick(bind(text_view, backend), None, text, api_visibility="private", queue=False)
    search.timer.tick(bind(faces_view, backend), None, faces, api_visibility="private", queue=False)
    watch = dict(fn=lambda: gr.Timer(active=True), inputs=None, outputs=search.timer, api_visibility="private",
                 queue=False)
    t.rescan_btn.click(bind(do_rescan, backend), None, outs, api_name="rescan", concurrency_limit=1,
                       concurrency_id="write").then(**watch)
    for event, api in ((t.add_folder.submit, None), (t.add_btn.click, "add_folder")):
        event(bind(do_add_folder, backend), [t.add_folder], outs, api_name=api, api_visibility="public" if api else "private",
              concurrency_limit=1, concurrency_id="write").then(
            bind(folders_after_add, backend), None, [search.folder, t.remove_pick], api_visibility="private",
            queue=False).then(**watch)
    t.remove_btn.click(bind(ask_remove_folder, backend), [t.remove_pick], [t.index_msg, t.rm_confirm_row],
                       api_name="remove_folder_ask", queue=False)
    t.rm_confirm_btn.click(bind(do_remove_folder, backend), [t.remove_pick],
                           outs + [search.folder, t.remove_pick, t.rm_confirm_row], api_name="remove_folder",
                           concurrency_limit=1, concurrency_id="write").then(**watch)
    t.rm_cancel_btn.click(lambda: ("", gr.Row(visible=False)), None, [t.index_msg, t.rm_confirm_row],
                          api_visibility="private", queue=False)
