"""The Search tab: text and photo queries, relevance levels, filters (folder, dates, text in the photo), a photo's
details (why it matches, the text in it, neighbours, duplicates, full-size view). Handlers are module-level
functions of the service (bound with ``ui.common.bind``)."""
from __future__ import annotations

import html
import os
import time
from pathlib import Path
from types import SimpleNamespace

import gradio as gr

from ..backend import Backend
from ..common import (bind, captions, failed, folder_dropdowns, gallery_payload, not_ready, people_said, person_name,
                      quoted, status_text, text_said, thumb_gallery, uploaded_path, user_error, why_items)
from ..files import origin_of, photo_url
from ..i18n import T, is_zh, lang_of, reason_text, tr

EXAMPLE_KEYS = [f"ex_{i}" for i in range(1, 9)]   # example queries, per language (assets/data/ui_strings.json)
# What the search shows, by relevance level (Backend.level: 3 strong, 2 good, 1 weak, 0 none)
SHOW_CHOICES = ["good", "any", "all"]
SHOW_MIN_LEVEL = {"good": 2, "any": 1, "all": None}
DEFAULT_SHOW = "any"
# The "text in photo" filter: every photo, photos with text in them, photos whose text contains what is typed
TEXT_CHOICES = ["all", "with", "contains"]
# How a result's text matched the query (index.Searcher: its ``why`` line's "match") -> what the detail panel says
SAID = {"exact": "why_said_exact", "words": "why_said_words", "part": "why_said_part", "meaning": "why_said_meaning"}
MAX_UPLOAD_BYTES = 20 * 2 ** 20
# a person's chip in the detail panel: a drawn icon (an emoji needs an emoji font, which a booth may lack)
PERSON_ICON = ('<svg class="why-person-icon" viewBox="0 0 16 16" width="0.95em" height="0.95em" aria-hidden="true">'
               '<circle cx="8" cy="4.6" r="3.2" fill="currentColor"/>'
               '<path d="M1.8 15.5c0-3.6 2.8-6.2 6.2-6.2s6.2 2.6 6.2 6.2z" fill="currentColor"/></svg>')


def _filters(backend: Backend, folder, date_from, date_to, lang, text_mode="all", text_value=None):
    """(filters, error message) from the filter inputs; dates must be ISO (YYYY-MM-DD); the text filter is
    ``text=True`` (photos with text) or ``text="…"`` (photos whose text contains it)."""
    import datetime as _dt
    f = {}
    if text_mode == "with":
        f["text"] = True
    elif text_mode == "contains":
        f["text"] = (text_value or "").strip()
        if not f["text"]:
            return None, tr(lang, "msg_text_empty")
    if folder and not backend.demo and folder in backend.roots():
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


def _shown(backend: Backend, res: list[dict], show: str | None) -> list[dict]:
    """Results at or above the chosen relevance (all of them for "all")."""
    floor = SHOW_MIN_LEVEL.get(show or DEFAULT_SHOW, 1)
    if floor is None:
        return res
    return [r for r in res if _level_or_top(backend, r) >= floor]


def _level_or_top(backend: Backend, result: dict) -> int:
    lv = backend.level(result)
    return 3 if lv is None else lv            # an uncalibrated model hides nothing


def _kept(res: list[dict]) -> list[dict]:
    """What the page remembers of the results shown (server-side state), for the detail panel: path, index id,
    score and why."""
    return [{"path": r["path"], "id": r.get("id"), "score": r.get("score"), "why": r.get("why") or []}
            for r in res]


def _partial(backend: Backend, lang: str, msg: str) -> str:
    """A results message, with a note while the start-up (re-)indexing still runs (results may grow)."""
    if backend.state != "indexing":
        return msg
    return f"{msg} · {tr(lang, 'msg_partial', done=backend.done, total=backend.total or '…')}"


async def do_search(backend: Backend, query, k, show=DEFAULT_SHOW, folder=None, date_from=None, date_to=None,
                    text_mode="all", text_value=None, request: gr.Request = None):
    """Text search (runs on the event loop: the work happens in the batcher's thread). The photo in
    "search by image" is cleared: the results shown are this query's."""
    lang = lang_of(request)
    q = (query or "").strip()
    if not backend.searchable:
        return [], not_ready(backend, lang), [], gr.skip()
    if not q:
        return [], tr(lang, "msg_empty"), [], gr.skip()
    f, err = _filters(backend, folder, date_from, date_to, lang, text_mode, text_value)
    if err:
        return [], err, [], gr.skip()
    t0 = time.perf_counter()
    try:
        res = await backend.search_text(q, k=int(k), **f)
    except Exception as e:
        return [], failed(lang, "msg_failed", e), [], None
    ms = int((time.perf_counter() - t0) * 1000)
    if show != "all" and not backend.query_has_match(q, res):
        return [], _partial(backend, lang, tr(lang, "msg_no_match", q=q)), [], None
    res = backend.stack_copies(_shown(backend, res, show))
    if not res:
        return [], _partial(backend, lang, tr(lang, "msg_none", q=q)), [], None
    urls = await backend.thumb_urls([r["path"] for r in res], origin_of(request))
    items = list(zip(urls, captions(backend, res, lang, why=True)))
    msg = _partial(backend, lang, tr(lang, "msg_results", n=len(res), q=q, ms=ms))
    return gallery_payload(items), msg, _kept(res), None


def do_image_search(backend: Backend, upload, k, show=DEFAULT_SHOW, folder=None, date_from=None, date_to=None,
                    request: gr.Request = None):
    """Search by an uploaded photo (raw event data: ``upload`` is Gradio's file payload, see uploaded_path)."""
    lang = lang_of(request)
    if not upload:  # cleared (also when a text search clears it): keep the current results
        return gr.skip(), gr.skip(), gr.skip()
    image = uploaded_path(upload)
    if image is None:
        return [], tr(lang, "msg_image_failed", err=tr(lang, "msg_unknown_error")), []
    if not backend.searchable:
        return [], not_ready(backend, lang), []
    try:
        if os.path.getsize(image) > MAX_UPLOAD_BYTES:
            return [], tr(lang, "msg_upload_too_big", mb=MAX_UPLOAD_BYTES // 2 ** 20), []
    except (OSError, TypeError):
        pass
    f, err = _filters(backend, folder, date_from, date_to, lang)
    if err:
        return [], err, []
    t0 = time.perf_counter()
    try:
        res = backend.run_search(image=image, k=int(k), **f)
    except Exception as e:
        return [], failed(lang, "msg_image_failed", e), []
    ms = int((time.perf_counter() - t0) * 1000)
    res = backend.stack_copies(res)            # photo-to-photo scores have no calibrated levels: the top k, ranked
    if not res:
        return [], tr(lang, "msg_none_img"), []
    o = origin_of(request)
    items = [(backend.thumb_url(r["path"], o), c)
             for r, c in zip(res, captions(backend, res, lang, levels=False, why=True))]
    return gallery_payload(items), _partial(backend, lang, tr(lang, "msg_results_img", n=len(res), ms=ms)), _kept(res)


def why_html(backend: Backend, result: dict, lang: str) -> str:
    """The detail panel's "why it matches" block for one result: the people the query named (their faces are
    boxed in the photo); the text line it matched in the photo, quoted, with how it matched; its concepts as chips
    with their share of the score ("雏菊 41%"); and the photo with a heatmap of where those concepts are and boxes
    around that line and those faces (computed now, for this photo only, shown as an in-memory data: URI). ""
    when the result has no why (another model's photo, a stub)."""
    from ..why import data_uri
    chips = why_items(result, lang, top=3)
    said = text_said(result)
    persons = list(dict.fromkeys(person_name(lang, w.get("name")) for w in people_said(result)))
    if not chips and not said and not persons:
        return ""
    e = html.escape
    parts = [f'<div class="why-head">{e(tr(lang, "why_label"))}</div>']
    if persons:
        parts.append('<div class="why-people">' + "".join(f'<span class="why-person">{PERSON_ICON}{e(n)}</span> '
                                                          for n in persons)
                     + f'<span class="why-kind">{e(tr(lang, "why_person_kind"))}</span></div>')
    if said:
        parts.append(f'<div class="why-said"><span class="why-quote">{e(quoted(said["text"]))}</span> '
                     f'<span class="why-kind">{e(tr(lang, SAID.get(said.get("match"), "why_said_exact")))}</span>'
                     '</div>')
    if chips:
        parts += ['<div class="why-chips">'] + [f'<span class="why-chip">{e(n)} <b>{p}%</b></span>'
                                                for n, p in chips] + ["</div>"]
    if result.get("id") is not None:
        try:
            img, caption = backend.why_picture(int(result["id"]), lang, why=result.get("why"))
            sep = "、" if is_zh(lang) else ", "
            alt = tr(lang, "why_heat_alt", names=sep.join(n for n, _ in chips)) if chips else caption
            parts.append(f'<figure class="why-fig"><img src="{data_uri(img)}" alt="{e(alt)}" '
                         f'width="{img.width}" height="{img.height}"><figcaption>{e(caption)}</figcaption></figure>')
        except Exception as ex:                  # the chips stay; say why there is no picture
            parts.append(f'<p class="why-note">{e(user_error(lang, ex))}</p>')
    return '<div class="why-panel">' + "".join(parts) + "</div>"


def text_note(text: dict, lang: str) -> str:
    """The detail panel's line about a photo's text (``Backend.text_of``) when there is something to say: it
    could not be read (and why), it was cut at the caps, or it is not read yet; "" otherwise."""
    if not text:
        return ""
    state = text.get("state")
    if state == "error":
        return tr(lang, "text_error_note", why=reason_text(lang, text.get("note") or ""))
    if state == "capped":
        return tr(lang, "text_capped_note", n=len(text.get("lines") or []))
    return tr(lang, "text_unread_note") if state is None else ""


def faces_note(faces: dict, lang: str) -> str:
    """The detail panel's line about the people in a photo (``Backend.faces_of``): "People: 妈妈, Jesper and 1
    unnamed person", or why its faces could not be looked for; "" when it has none or they were not looked for."""
    if not faces:
        return ""
    if faces.get("state") == "error":
        return tr(lang, "faces_error_note", why=reason_text(lang, faces.get("note") or ""))
    found = faces.get("faces") or []
    if not found:
        return ""
    named = list(dict.fromkeys(str(f["name"]) for f in found if f.get("name")))
    unnamed = sum(1 for f in found if not f.get("name"))
    sep = "、" if is_zh(lang) else ", "
    if named and unnamed:
        return tr(lang, "faces_note_mixed", names=sep.join(named), n=unnamed)
    if named:
        return tr(lang, "faces_note_named", names=sep.join(named))
    return tr(lang, "faces_note_unnamed", n=unnamed)


def text_box(text: dict, lang: str) -> gr.Textbox:
    """The detail panel's read-only box with all of a photo's text, a line a line (hidden when it has none)."""
    lines = [ln["text"] for ln in text.get("lines") or []]
    return gr.Textbox(value="\n".join(lines), label=tr(lang, "photo_text_label", n=len(lines)), visible=bool(lines))


def photo_detail(backend: Backend, result, lang: str, origin: str, k: int = 8, text: dict | None = None):
    """(Markdown about the photo, the why block (HTML), [(thumbnail, caption)] of its nearest neighbours) for a
    result ({"path", "id", "score", "why"}, or a bare path). ``text``: the photo's ``Backend.text_of`` (read
    here when not given), for the line about its text."""
    result = result if isinstance(result, dict) else {"path": result}
    path = result["path"]
    name = Path(str(path)).name
    try:
        near = backend.searcher.similar(path, k=k)
        dups = backend.duplicates_of(path)
    except Exception as e:
        return f"**{name}** · {tr(lang, 'msg_failed', err=user_error(lang, e))}", "", []
    row = backend.photo_row(path)
    lines = [f"**{backend.shown_path(path)}**"]
    facts = []
    if row.get("width"):
        facts.append(f"{tr(lang, 'detail_size')}: {row['width']}×{row['height']}")
    if row.get("taken_at"):
        facts.append(f"{tr(lang, 'detail_taken')}: {str(row['taken_at'])[:10]}")
    if row.get("id") is not None:
        facts.append(f"[{tr(lang, 'detail_full')}]({photo_url(row['id'], origin)})")
    if facts:
        lines.append(" · ".join(facts))
    names = ", ".join(backend.shown_path(d["path"]) for d in dups)
    lines.append(tr(lang, "dups_some", names=names) if dups else tr(lang, "dups_none"))
    note = text_note(backend.text_of(path) if text is None else text, lang)
    if note:
        lines.append(note)
    note = faces_note(backend.faces_of(path), lang)
    if note:
        lines.append(note)
    if result.get("id") is None and row.get("id") is not None:
        result = {**result, "id": row["id"]}
    return "\n\n".join(lines), why_html(backend, result, lang), [(backend.thumb_url(r["path"], origin), c)
                                for r, c in zip(near, captions(backend, near, lang, levels=False))]


def on_select(backend: Backend, results, evt: gr.SelectData, request: gr.Request):
    lang = lang_of(request)
    try:
        result = results[int(evt.index)]
    except (TypeError, ValueError, IndexError):
        return gr.skip(), gr.skip(), gr.skip(), gr.skip()
    text = backend.text_of(result["path"])
    info, why, near = photo_detail(backend, result, lang, origin_of(request), text=text)
    return info, gr.HTML(value=why, visible=bool(why)), near, text_box(text, lang)


def api_detail(backend: Backend, name: str) -> dict:
    """A photo's nearest neighbours, duplicates, text ({"state", "lines": [line, ...]}) and people ([{"name" (None
    until named), "box"}]), by its file name (or path outside demo mode)."""
    if not backend.searchable:
        return {}
    path = backend.find_path(name)
    if path is None:
        return {"error": "not in the index"}
    near = backend.searcher.similar(path, k=8)
    return {"neighbours": [{"name": Path(str(r["path"])).name, "score": round(float(r["score"]), 4)}
                           for r in near],
            "duplicates": [Path(str(d["path"])).name for d in backend.duplicates_of(path)],
            "full": photo_url(backend.photo_row(path).get("id")), "text": _text_json(backend.text_of(path)),
            "people": [{"name": f.get("name"), "box": f.get("box")}
                       for f in backend.faces_of(path).get("faces") or []]}


def _text_json(text: dict) -> dict:
    return {"state": text.get("state"), "lines": [ln["text"] for ln in text.get("lines") or []]}


async def api_search(backend: Backend, query: str, k: int = 20, show: str = DEFAULT_SHOW) -> list:
    """Text search as JSON: [{"name": file name, "score": float, "level": 0-3, "why": [{"concept", "en", "zh",
    "percent"}]}, ...] best first (``why``: the concepts making most of the score, with their percent of it; the
    text line the query matched in the photo comes first, as {"text", "match", "box"}, after the people the query
    named, as {"person", "name", "box"}).
    ``show`` as in the page: "good", "any" (default; [] for a query nothing in the photos matches) or "all" (the
    top k, ranked)."""
    q = (query or "").strip()
    if not backend.searchable or not q:
        return []
    res = await backend.search_text(q, k=k)
    if show != "all" and not backend.query_has_match(q, res):
        return []
    return [{"name": Path(str(r["path"])).name, "score": round(float(r["score"]), 4),
             "level": backend.level(r), "why": _why_json(r)} for r in _shown(backend, res, show)]


def _why_json(r: dict) -> list[dict]:
    score = float(r.get("score") or 0.0)
    return [{"text": w["text"], "match": w.get("match"), "box": w.get("box")} if "text" in w else
            {"person": w.get("person"), "name": w.get("name"), "box": w.get("box")} if "person" in w else
            {"concept": w.get("concept"), "en": w.get("en"), "zh": w.get("zh"),
             "percent": round(100.0 * float(w.get("share") or 0.0) / score, 1) if score > 0 else None}
            for w in r.get("why") or []]


def poll(backend: Backend, listed: bool, request: gr.Request):
    """The status line every second until the start-up and the background passes (text, faces) are done (writes
    to the index start the timer again); the folder lists once, when the index is there (``listed``: this page has
    them)."""
    lang = lang_of(request)
    done = backend.state in ("ready", "error") and not backend.background_running
    fresh = backend.state == "ready" and not listed
    dd = folder_dropdowns(backend, lang) if fresh else (gr.skip(), gr.skip())
    return status_text(backend, lang), gr.Timer(active=not done), *dd, listed or fresh

def example_query(i: int):
    """The handler of example button i: the example in the page's language (zh-TW gets traditional characters)."""
    def fill(request: gr.Request):
        return tr(lang_of(request), EXAMPLE_KEYS[i])
    return fill


def build(backend: Backend) -> SimpleNamespace:
    """The Search tab's components (inside the page's Blocks)."""
    with gr.Tab(T("tab_search")) as tab:
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
                        folder = gr.Dropdown([(T("folder_all"), "")] + [(r, r) for r in backend.roots(False)],
                                             value="", label=T("folder_label"), visible=not backend.demo,
                                             allow_custom_value=False, elem_id="folder")
                        date_from = gr.Textbox(label=T("date_from"), placeholder=T("date_placeholder"),
                                               max_lines=1, elem_id="date-from")
                        date_to = gr.Textbox(label=T("date_to"), placeholder=T("date_placeholder"),
                                             max_lines=1, elem_id="date-to")
                    with gr.Row():
                        text_mode = gr.Radio([(T(f"text_{c}"), c) for c in TEXT_CHOICES], value="all", scale=3,
                                             label=T("text_filter_label"), elem_id="text-filter")
                        text_value = gr.Textbox(label=T("text_contains_label"), placeholder=T("text_placeholder"),
                                                max_lines=1, visible=False, scale=2, elem_id="text-contains")
            with gr.Column(scale=1, min_width=300):
                image = gr.Image(type="filepath", label=T("image_label"), sources=["upload", "clipboard"],
                                 height=200, elem_id="image-query")
        message = gr.Markdown("", elem_id="message")
        gallery = thumb_gallery(label=T("gallery_label"), columns=5, height=620, object_fit="cover",
                                allow_preview=True, show_label=False, elem_id="gallery", fit_columns=False)
        results = gr.State([])            # what the detail panel needs of each result shown (search._kept)
        with gr.Accordion(T("detail_label"), open=True, elem_id="detail"):
            with gr.Row(equal_height=False, elem_id="detail-row"):
                why = gr.HTML("", elem_id="why", min_height=0, padding=False, visible=False)
                with gr.Column(elem_id="detail-info"):
                    detail = gr.Markdown(T("detail_hint"), elem_id="detail-md")
                    photo_text = gr.Textbox(label=T("photo_text"), interactive=False, buttons=["copy"], lines=2,
                                            max_lines=12, visible=False, elem_id="photo-text")
            neighbours = thumb_gallery(label=T("neighbours_label"), columns=8, height=200, object_fit="cover",
                                       allow_preview=False, elem_id="neighbours")
    return SimpleNamespace(tab=tab, query=query, btn=btn, ex_btns=ex_btns, k=k, show=show, folder=folder,
                           date_from=date_from, date_to=date_to, text_mode=text_mode, text_value=text_value,
                           image=image, message=message, gallery=gallery, results=results, detail=detail, why=why,
                           photo_text=photo_text, neighbours=neighbours)


def wire(backend: Backend, ui: SimpleNamespace) -> None:
    """The Search tab's events and the page's JSON API (/search_json, /detail, /status)."""
    s = ui.search
    options = [s.k, s.show, s.folder, s.date_from, s.date_to]
    # the text filter comes last: the /search API keeps its earlier parameters (the new ones have defaults)
    inputs = [s.query, *options, s.text_mode, s.text_value]
    outs = [s.gallery, s.message, s.results, s.image]
    search = bind(do_search, backend)
    # searches are short (an 8 ms index query + thumbnails as URLs): no queue limit; their handlers return the
    # gallery already in its wire format (gallery_payload), so Gradio's postprocessing is skipped
    fast = dict(concurrency_limit=None, postprocess=False)
    s.query.submit(search, inputs, outs, api_name="search", **fast)
    s.btn.click(search, inputs, outs, api_visibility="private", **fast)
    for i, b in enumerate(s.ex_btns):
        b.click(example_query(i), None, s.query, queue=False, api_visibility="private").then(
            search, inputs, outs, api_visibility="private", **fast)
    # .change also covers a pasted (clipboard) photo, which fires no upload event; the handler reads the file
    # itself (preprocess=False: Gradio would open it with PIL first, see uploaded_path). No text filter here:
    # index.Searcher.search_image takes none
    s.image.change(bind(do_image_search, backend), [s.image, *options], outs[:3], api_name="search_image",
                   preprocess=False, postprocess=False)
    s.text_mode.change(lambda mode: gr.Textbox(visible=mode == "contains"), s.text_mode, s.text_value,
                       api_visibility="private", queue=False)
    s.gallery.select(bind(on_select, backend), [s.results], [s.detail, s.why, s.neighbours, s.photo_text],
                     api_visibility="private")
    gr.api(bind(api_detail, backend), api_name="detail")
    gr.api(bind(api_search, backend), api_name="search_json", concurrency_limit=None)
    s.timer, listed = gr.Timer(1.0), gr.State(False)
    s.timer.tick(bind(poll, backend), [listed], [ui.status, s.timer, s.folder, ui.folders.remove_pick, listed],
                 api_visibility="private", queue=False)
