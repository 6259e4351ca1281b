"""The People tab: the people the face pass found, as a grid of faces ("妈妈 · 12 photos", "Unnamed · 3 photos");
a person's photos and faces; naming (any language: the name then works in Search), merging two people, taking a
wrong face out ("Not this person"), grouping all faces again; the privacy switch ("Find faces in my photos") and
deleting every face, person and name (after asking). Thin: the logic is ``ui.backend.Backend``'s (``people``,
``rename_person``, ``merge_people``, ``remove_face``, ``regroup_faces``, ``set_faces_enabled``,
``delete_face_data``); handlers are module-level functions of it. Read-only in demo mode (the switch and the
delete button are shown disabled, with a note why)."""
from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import gradio as gr

from ..backend import Backend
from ..common import bind, failed, not_ready, person_name, thumb_gallery
from ..files import origin_of
from ..i18n import T, lang_of, tr

MAX_PHOTOS = 300          # photos of one person shown (the most a gallery shows at once without paging)
MAX_FACES = 200           # faces of one person shown


def _summary(rows: list[dict]) -> list[tuple]:
    """What the grid shows of each person (compared on the timer's ticks: the grid is redrawn only on a change)."""
    return [(r["id"], r.get("name"), r.get("photos"), r.get("cover")) for r in rows]


def caption(lang: str, row: dict) -> str:
    """A person's tile: "妈妈 · 12 张照片", "Unnamed · 1 photo"."""
    return tr(lang, "person_caption", name=person_name(lang, row.get("name")), n=int(row.get("photos") or 0))


def choice_label(lang: str, row: dict) -> str:
    """A person in the merge list: named people by name, unnamed ones by number ("Unnamed #7 · 2 photos")."""
    name = row.get("name") or tr(lang, "person_unnamed_n", id=row["id"])
    return tr(lang, "person_caption", name=name, n=int(row.get("photos") or 0))


def head_md(backend: Backend, lang: str, rows: list[dict]) -> str:
    """The line above the grid: how many people, the face pass's progress, or the empty state (switched off,
    still looking, nothing found, failed)."""
    if backend.state != "ready":
        return not_ready(backend, lang)
    on = backend.faces_enabled()
    running = backend.faces_running or (on and backend.text_running)
    progress = (tr(lang, "st_faces", done=backend.faces_done, total=backend.faces_total or "…")
                if backend.faces_running else tr(lang, "people_waiting"))
    if not rows:
        if not on:
            return tr(lang, "people_off")
        if backend.faces_error:
            return tr(lang, "people_failed", err=backend.faces_error)
        if running:
            return tr(lang, "people_looking", progress=progress)
        return tr(lang, "people_none")
    parts = [tr(lang, "people_count", n=len(rows))]
    if not on:
        parts.append(tr(lang, "people_off_short"))
    elif backend.faces_error:
        parts.append(tr(lang, "people_failed", err=backend.faces_error))
    elif running:
        parts.append(progress)
    else:
        parts.append(tr(lang, "people_hint_demo" if backend.demo else "people_hint"))
    return " · ".join(parts)


def grid_outputs(backend: Backend, lang: str, origin: str, rows: list[dict] | None = None):
    """(the head line, the grid's update: [(face thumbnail URL, caption)], hidden when empty (the head line says
    why), the grid's people (state))."""
    rows = backend.people() if rows is None else rows
    items = [(backend.face_thumb_url(r["cover"], origin), caption(lang, r)) for r in rows if r.get("cover")]
    return head_md(backend, lang, rows), gr.update(value=items, visible=bool(items)), rows


def no_person():
    """The person panel hidden (no person chosen, or the person is gone)."""
    return (gr.Column(visible=False), "", "", [], [], [], None, gr.Dropdown(choices=[], value=None), None)


def person_outputs(backend: Backend, person_id, lang: str, origin: str, rows: list[dict] | None = None):
    """The person panel of ``person_id``: (panel, heading, name box, photos [(URL, caption)], faces [(URL,
    caption)], the faces' ids (state), the picked face (state, cleared), merge choices, the person's id)."""
    if person_id is None:
        return no_person()
    try:
        me = backend.person(int(person_id))
    except Exception:
        me = None
    if not me or not me.get("faces"):
        return no_person()
    rows = backend.people() if rows is None else rows
    photos = backend.person_photos(int(person_id))
    faces = backend.person_faces(int(person_id))[:MAX_FACES]
    name = person_name(lang, me.get("name"))
    head = f"### {name}\n\n" + tr(lang, "person_counts", n=len(photos), faces=int(me["faces"]))
    if not me.get("name") and not backend.demo:
        head += "\n\n" + tr(lang, "person_name_hint")
    shown = [(backend.thumb_url(p, origin), Path(p).name) for p in photos[:MAX_PHOTOS]]
    face_items = [(backend.face_thumb_url(f["id"], origin, row=f), None) for f in faces]     # a caption would hide it
    others = [(choice_label(lang, r), r["id"]) for r in rows if r["id"] != int(person_id)]
    return (gr.Column(visible=True), head, me.get("name") or "", shown, face_items, [f["id"] for f in faces], None,
            gr.Dropdown(choices=others, value=None), int(person_id))


def show_people(backend: Backend, chosen, request: gr.Request):
    """The tab opened: the grid, the settings, and the chosen person again (it may have changed meanwhile)."""
    lang, origin = lang_of(request), origin_of(request)
    rows = backend.people() if backend.state == "ready" else []
    on = backend.faces_enabled()
    return (*grid_outputs(backend, lang, origin, rows), *person_outputs(backend, chosen, lang, origin, rows),
            gr.Checkbox(value=on), gr.Accordion(open=not on))


def tick(backend: Backend, shown: list[dict], request: gr.Request):
    """The status timer's tick (while the background passes run): the head line; the grid only when the people
    changed (the face pass groups new faces every few photos)."""
    if backend.state != "ready":
        return gr.skip(), gr.skip(), gr.skip()
    lang = lang_of(request)
    rows = backend.people()
    if _summary(rows) == _summary(shown or []):
        return head_md(backend, lang, rows), gr.skip(), gr.skip()
    return grid_outputs(backend, lang, origin_of(request), rows)


def pick_person(backend: Backend, shown: list[dict], evt: gr.SelectData, request: gr.Request):
    try:
        person_id = shown[int(evt.index)]["id"]
    except (TypeError, ValueError, IndexError, KeyError):
        return (*[gr.skip()] * 9, gr.skip())
    return (*person_outputs(backend, person_id, lang_of(request), origin_of(request)), "")


def pick_face(face_ids: list, evt: gr.SelectData, request: gr.Request):
    """A face clicked: remembered for "Not this person"."""
    try:
        return int(face_ids[int(evt.index)]), tr(lang_of(request), "person_face_picked")
    except (TypeError, ValueError, IndexError):
        return None, ""


def _after(backend: Backend, person_id, request, msg: str):
    """(grid outputs, person outputs, message) after an edit."""
    lang, origin = lang_of(request), origin_of(request)
    rows = backend.people()
    return (*grid_outputs(backend, lang, origin, rows), *person_outputs(backend, person_id, lang, origin, rows), msg)


def _refused(lang: str, e: Exception):
    return (*[gr.skip()] * 12, failed(lang, "msg_people_failed", e))


def do_rename(backend: Backend, person_id, name: str, request: gr.Request):
    """Name (or rename) the chosen person; an empty name removes it."""
    lang = lang_of(request)
    if person_id is None:
        return (*[gr.skip()] * 12, tr(lang, "msg_pick_person"))
    try:
        row = backend.rename_person(int(person_id), name)
    except Exception as e:
        return _refused(lang, e)
    msg = tr(lang, "msg_person_named", name=row["name"]) if row.get("name") else tr(lang, "msg_person_unnamed")
    return _after(backend, person_id, request, msg)


def do_merge(backend: Backend, person_id, other, request: gr.Request):
    """Put every face of the person picked in the list into the chosen person."""
    lang = lang_of(request)
    if person_id is None or other in (None, ""):
        return (*[gr.skip()] * 12, tr(lang, "msg_pick_merge"))
    try:
        row = backend.merge_people(int(person_id), int(other))
    except Exception as e:
        return _refused(lang, e)
    return _after(backend, person_id, request,
                  tr(lang, "msg_merged", name=person_name(lang, row.get("name")), n=int(row.get("faces") or 0)))


def do_not_this(backend: Backend, person_id, face_id, request: gr.Request):
    """Take the picked face out of the chosen person (into a person of its own)."""
    lang = lang_of(request)
    if person_id is None or face_id is None:
        return (*[gr.skip()] * 12, tr(lang, "msg_pick_face"))
    try:
        backend.remove_face(int(face_id))
    except Exception as e:
        return _refused(lang, e)
    return _after(backend, person_id, request, tr(lang, "msg_face_removed"))


def do_regroup(backend: Backend, person_id, request: gr.Request):
    """Group every face again from scratch, keeping names and what was done by hand."""
    lang = lang_of(request)
    try:
        res = backend.regroup_faces()
    except Exception as e:
        return _refused(lang, e)
    return _after(backend, person_id, request, tr(lang, "msg_regrouped", n=int(res.get("people") or 0),
                                                  faces=int(res.get("faces") or 0)))


def set_switch(backend: Backend, on: bool, request: gr.Request):
    """The privacy switch changed: (head, grid, people, settings message, the status timer on)."""
    lang, origin = lang_of(request), origin_of(request)
    try:
        on = backend.set_faces_enabled(bool(on))
    except Exception as e:
        return (gr.skip(), gr.skip(), gr.skip(), failed(lang, "msg_people_failed", e),
                gr.Checkbox(value=backend.faces_enabled()), gr.Timer(active=True))
    return (*grid_outputs(backend, lang, origin), tr(lang, "msg_faces_on" if on else "msg_faces_off"),
            gr.Checkbox(value=on), gr.Timer(active=True))


def ask_delete(backend: Backend, request: gr.Request):
    """First click on "Delete all face data": ask (nothing is deleted yet)."""
    lang = lang_of(request)
    if backend.demo:
        return tr(lang, "faces_demo_note"), gr.Row(visible=False)
    st = backend.face_stats()
    return (tr(lang, "confirm_delete_faces", faces=st.get("faces", 0), people=st.get("people", 0)),
            gr.Row(visible=True))


def do_delete(backend: Backend, request: gr.Request):
    """Delete every face, person, name and face thumbnail, and turn looking for faces off."""
    lang, origin = lang_of(request), origin_of(request)
    try:
        n = backend.delete_face_data()
    except Exception as e:
        return (*[gr.skip()] * 13, failed(lang, "msg_people_failed", e), gr.skip(), gr.Row(visible=False))
    return (*grid_outputs(backend, lang, origin, []), *no_person(), "", tr(lang, "msg_faces_deleted", n=n),
            gr.Checkbox(value=False), gr.Row(visible=False))


def build(backend: Backend) -> SimpleNamespace:
    """The People tab's components."""
    ro = backend.demo
    with gr.Tab(T("tab_people"), elem_id="tab-people") as tab:
        head = gr.Markdown("", elem_id="people-head")
        grid = thumb_gallery(label=T("people_grid"), show_label=False, columns=6, height="auto", object_fit="cover",
                             allow_preview=False, fit_columns=False, visible=False, elem_id="people-grid")
        shown = gr.State([])               # the grid's people, in its order
        chosen = gr.State(None)            # the person whose panel is open
        face_ids, face_pick = gr.State([]), gr.State(None)
        with gr.Column(visible=False, elem_id="person") as panel:
            person_md = gr.Markdown("", elem_id="person-head")
            with gr.Row(visible=not ro, equal_height=False):
                name_box = gr.Textbox(label=T("person_name_label"), placeholder=T("person_name_placeholder"),
                                      max_lines=1, scale=4, elem_id="person-name")
                name_btn = gr.Button(T("person_name_btn"), variant="primary", scale=1, min_width=140,
                                     elem_classes=["end-btn"], elem_id="person-name-btn")
            photos = thumb_gallery(label=T("person_photos"), columns=6, height="auto", object_fit="cover",
                                   allow_preview=True, fit_columns=False, elem_id="person-photos")
            faces = thumb_gallery(label=T("person_faces"), columns=10, height="auto", object_fit="cover",
                                  allow_preview=False, fit_columns=False, elem_id="person-faces")
            with gr.Row(visible=not ro, equal_height=False):
                gr.Markdown(T("person_not_hint"), elem_id="person-not-hint")
                not_btn = gr.Button(T("person_not_btn"), variant="secondary", scale=0, min_width=200,
                                    elem_id="person-not-btn")
            with gr.Row(visible=not ro, equal_height=False):
                merge_pick = gr.Dropdown(choices=[], value=None, label=T("person_merge_label"),
                                         info=T("person_merge_info"), scale=4, elem_id="person-merge")
                merge_btn = gr.Button(T("person_merge_btn"), scale=1, min_width=200, elem_classes=["end-btn"],
                                      elem_id="person-merge-btn")
        msg = gr.Markdown("", elem_id="people-msg")
        with gr.Accordion(T("faces_settings"), open=False, elem_id="faces-settings") as settings:
            switch = gr.Checkbox(value=True, label=T("faces_switch"), info=T("faces_switch_info"),
                                 interactive=not ro, elem_id="faces-switch")
            with gr.Row():
                regroup_btn = gr.Button(T("faces_regroup_btn"), visible=not ro, scale=0, min_width=200,
                                        elem_id="faces-regroup")
                delete_btn = gr.Button(T("faces_delete_btn"), variant="stop", interactive=not ro, scale=0,
                                       min_width=200, elem_id="faces-delete")
            settings_msg = gr.Markdown(T("faces_demo_note") if ro else "", elem_id="faces-msg")
            with gr.Row(visible=False) as confirm_row:
                delete_yes = gr.Button(T("confirm_yes_delete_faces"), variant="stop", scale=0, min_width=240,
                                       elem_id="faces-delete-yes")
                delete_no = gr.Button(T("confirm_cancel"), scale=0, min_width=120, elem_id="faces-delete-no")
    return SimpleNamespace(tab=tab, head=head, grid=grid, shown=shown, chosen=chosen, face_ids=face_ids,
                           face_pick=face_pick, panel=panel, person_md=person_md, name_box=name_box,
                           name_btn=name_btn, photos=photos, faces=faces, not_btn=not_btn, merge_pick=merge_pick,
                           merge_btn=merge_btn, msg=msg, settings=settings, switch=switch, regroup_btn=regroup_btn,
                           delete_btn=delete_btn, confirm_row=confirm_row, delete_yes=delete_yes, delete_no=delete_no,
                           settings_msg=settings_msg)


def wire(backend: Backend, ui: SimpleNamespace) -> None:
    p, search = ui.people, ui.search
    grid = [p.head, p.grid, p.shown]
    person = [p.panel, p.person_md, p.name_box, p.photos, p.faces, p.face_ids, p.face_pick, p.merge_pick, p.chosen]
    private = dict(api_visibility="private")
    write = dict(concurrency_limit=1, concurrency_id="people")
    p.tab.select(bind(show_people, backend), [p.chosen], grid + person + [p.switch, p.settings],
                 api_visibility="private")
    search.timer.tick(bind(tick, backend), [p.shown], grid, queue=False, **private)
    p.grid.select(bind(pick_person, backend), [p.shown], person + [p.msg], **private)
    p.faces.select(pick_face, [p.face_ids], [p.face_pick, p.msg], queue=False, **private)
    edits = grid + person + [p.msg]
    for event in (p.name_btn.click, p.name_box.submit):
        event(bind(do_rename, backend), [p.chosen, p.name_box], edits, **private, **write)
    p.merge_btn.click(bind(do_merge, backend), [p.chosen, p.merge_pick], edits, **private, **write)
    p.not_btn.click(bind(do_not_this, backend), [p.chosen, p.face_pick], edits, **private, **write)
    p.regroup_btn.click(bind(do_regroup, backend), [p.chosen], edits, **private, **write)
    # the privacy switch: .input fires for a person's click only (not for the value set when the tab opens)
    p.switch.input(bind(set_switch, backend), [p.switch], grid + [p.settings_msg, p.switch, search.timer],
                   **private, **write)
    p.delete_btn.click(bind(ask_delete, backend), None, [p.settings_msg, p.confirm_row], queue=False, **private)
    p.delete_yes.click(bind(do_delete, backend), None, edits + [p.settings_msg, p.switch, p.confirm_row],
                       **private, **write)
    p.delete_no.click(lambda: ("", gr.Row(visible=False)), None, [p.settings_msg, p.confirm_row], queue=False,
                      **private)
