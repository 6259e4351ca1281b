"""Pieces every tab of the page uses: binding handlers to the service, errors and captions for people, galleries
of thumbnail URLs, the status line and the folder choices.

Handlers in ``ui.tabs.*`` are module-level functions whose first argument is the service (``ui.backend.Backend``);
``bind(fn, backend)`` gives Gradio a function of the remaining arguments with the same signature (Gradio reads it for
``gr.Request`` and ``gr.Progress``), of the same kind (plain, async or generator).
"""
from __future__ import annotations

import functools
import inspect
import re
import time
from pathlib import Path

import gradio as gr

from .backend import DEMO_ROOT, Backend, NotReadyError, ReadOnlyError
from .i18n import EN, concept_name, ellipsis, reason_text, tr

LEVEL_DOTS = {3: "●●●", 2: "●●○", 1: "●○○", 0: "○○○"}   # relevance levels (ui.backend.Backend.level)
CAPTION_WHY = 2          # concepts a result tile's caption names (the detail panel shows all of a result's ``why``)
CAPTION_NAME_WIDTH = 22  # display columns of one concept name in a caption (longer names end in "…")
CAPTION_TEXT_WIDTH = 26  # display columns of the matched text line in a caption


def bind(fn, backend: Backend):
    """``fn(backend, ...)`` as a handler of the remaining arguments (signature, kind and name kept)."""
    if inspect.iscoroutinefunction(fn):
        async def bound(*a, **kw):
            return await fn(backend, *a, **kw)
    elif inspect.isgeneratorfunction(fn):
        def bound(*a, **kw):
            yield from fn(backend, *a, **kw)
    else:
        def bound(*a, **kw):
            return fn(backend, *a, **kw)
    functools.update_wrapper(bound, fn)
    sig = inspect.signature(fn)
    bound.__signature__ = sig.replace(parameters=list(sig.parameters.values())[1:])
    return bound


def status_text(backend: Backend, lang: str) -> str:
    """The status line: start-up progress, or the photo count read from the database now (never stale)."""
    st = backend.state
    if st == "ready":
        s = backend.status()
        ready = tr(lang, "st_ready", n=s.get("images") or 0, model=s.get("model_id") or "?")
        if backend.text_running:
            return f"{ready} · {tr(lang, 'st_text', done=backend.text_done, total=backend.text_total or '…')}"
        if backend.faces_running:
            return f"{ready} · {tr(lang, 'st_faces', done=backend.faces_done, total=backend.faces_total or '…')}"
        return ready
    if st == "indexing" and backend.reembedding and backend.searchable:
        return tr(lang, "st_reembedding", done=backend.done, total=backend.total or "…")
    if st == "indexing":
        key = "st_indexing" if backend.root is not None and backend.root == DEMO_ROOT.resolve() else "st_indexing_n"
        return tr(lang, key, done=backend.done, total=backend.total or "…")
    if st == "error":
        return tr(lang, "st_error", err=backend.error)
    return tr(lang, "st_loading" if st == "loading" else "st_starting")


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
    """A gr.Gallery of thumbnail URLs with captions (JPEG, not interactive); handlers return [(url, caption)]."""
    return gr.Gallery(format="jpeg", interactive=False, **kw)


def gallery_payload(items: list[tuple[str, str]]) -> list[dict]:
    """[(thumbnail URL, caption)] as the Gallery's wire format, for events run with ``postprocess=False``: the
    stock postprocess starts a thread pool per call to inspect each item, a measurable share of a search under
    load, and thumbnail URLs need no inspection."""
    from gradio.components.gallery import GalleryData, GalleryImage
    from gradio.data_classes import ImageData
    return GalleryData(root=[GalleryImage(image=ImageData(path=u, url=u, orig_name=u.rsplit("/", 1)[-1],
                                                          mime_type="image/jpeg"), caption=c)
                             for u, c in items]).model_dump()


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


def text_said(r: dict) -> dict | None:
    """The text line a search result matched: its ``why`` entry {"text", "box", "match"} (index.Searcher puts it
    first), None when the photo's text did not match."""
    return next((w for w in r.get("why") or [] if "text" in w), None)


def people_said(r: dict) -> list[dict]:
    """The people a search result matched because the query named them: its ``why`` entries {"person", "name",
    "box"} (index.Searcher puts them first); [] when the query named nobody."""
    return [w for w in r.get("why") or [] if isinstance(w, dict) and "person" in w]


def person_name(lang: str, name: str | None) -> str:
    """A person's name as the page shows it ("Unnamed" / "未命名" until a person names them)."""
    return str(name) if name else tr(lang, "person_unnamed")


def quoted(text: str, width: int | None = None) -> str:
    """A line of a photo's text as the page quotes it: “北京大学2024年毕业典礼” (cut to ``width`` columns)."""
    text = " ".join(str(text).split())
    return f"“{ellipsis(text, width) if width else text}”"


def why_items(r: dict, lang: str, top: int = 3, min_percent: int = 1) -> list[tuple[str, int]]:
    """Why a search result matches, for people: [(concept name in ``lang``, percent of the result's score)] for
    its ``why`` concepts (index.Searcher: the top 3 by their exact share of the score), largest first; concepts
    under ``min_percent`` are left out (a share can also be negative: a concept that pulls the score down). The
    matched text line is not a concept (see ``text_said``)."""
    score = float(r.get("score") or 0.0)
    if score <= 0:
        return []
    pct: dict[str, float] = {}                # concepts with the same name here ("missile" twice) are one chip
    for w in r.get("why") or []:
        if "text" in w or "person" in w:
            continue
        name = concept_name(w, lang)
        pct[name] = pct.get(name, 0.0) + 100.0 * float(w.get("share") or 0.0) / score
    out = [(n, int(round(p))) for n, p in pct.items()]
    return [x for x in sorted(out, key=lambda x: -x[1]) if x[1] >= min_percent][:top]


def why_text(r: dict, lang: str, top: int = CAPTION_WHY, width: int = CAPTION_NAME_WIDTH) -> str:
    """The why of a result as one caption line: the people the query named ("人物：妈妈" — words, not an emoji a
    booth's fonts may lack), the text line it matched, quoted (after "≈" when only its meaning is close to the
    query), then its concepts: "“北京大学2024年毕业典礼” · 礼服 21%", "人物：妈妈 · 雏菊 41%" ("" when the
    result has none)."""
    said = text_said(r)
    parts = []
    names = list(dict.fromkeys(person_name(lang, w.get("name")) for w in people_said(r)))
    if names:
        parts.append(tr(lang, "caption_person",
                        names=ellipsis(("、" if lang.startswith("zh") else ", ").join(names), width)))
    if said:
        parts.append(("≈" if said.get("match") == "meaning" else "") + quoted(said["text"], CAPTION_TEXT_WIDTH))
    parts += [f"{ellipsis(n, width)} {p}%" for n, p in why_items(r, lang, top=top, min_percent=3)]
    return " · ".join(parts)


def result_caption(backend: Backend, r: dict, names: dict[str, int], lang: str, levels: bool = True,
                   why: bool = False) -> str:
    """A result tile's caption: relevance dots (text searches only: the calibration is of text-to-photo scores),
    file name, its folder when another result has the same name (never in demo mode), the date it was taken (or
    last changed), and ×n for stacked exact copies; with ``why``, a second line naming the concepts that make
    most of its score ("雏菊 41% · 蜜蜂 12%", in the page's language)."""
    p = Path(str(r["path"]))
    dots = LEVEL_DOTS.get(backend.level(r), "") if levels else ""      # none without a calibration
    parts = [f"{dots} {p.name}".strip()]
    if names.get(p.name, 0) > 1 and not backend.demo:
        parts.append(f"{p.parent.name or p.parent}/")
    when = str(r.get("taken_at") or "")[:10]
    if not when and r.get("mtime"):
        when = time.strftime("%Y-%m-%d", time.localtime(float(r["mtime"])))
    if when:
        parts.append(when)
    if r.get("copies", 1) > 1:
        parts.append(f"×{r['copies']}")
    line = " · ".join(parts)
    reasons = why_text(r, lang) if why else ""
    return f"{line}\n{reasons}" if reasons else line


def captions(backend: Backend, results: list[dict], lang: str, levels: bool = True, why: bool = False) -> list[str]:
    names: dict[str, int] = {}
    for r in results:
        n = Path(str(r["path"])).name
        names[n] = names.get(n, 0) + 1
    return [result_caption(backend, r, names, lang, levels, why) for r in results]


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


def dataframe(value: list[list], lang: str, keys: list[str], **kw) -> gr.Dataframe:
    """A Dataframe update with headers in the request's language."""
    return gr.Dataframe(value=value, headers=[tr(lang, k) for k in keys], **kw)


def not_ready(backend: Backend, lang):
    if backend.state == "error":
        return status_text(backend, lang)
    return tr(lang, "msg_not_ready", status=status_text(backend, lang))


def folder_dropdowns(backend: Backend, lang: str = "en"):
    roots = backend.roots()
    return (gr.Dropdown(choices=[(tr(lang, "folder_all"), "")] + [(r, r) for r in roots], value=""),
            gr.Dropdown(choices=roots, value=None))


def library_names(backend: Backend) -> list:
    """Every prompt in the library (before the model has loaded: compatibility is checked on use)."""
    try:
        return [p["name"] for p in backend.prompts(check=False)]
    except Exception:
        return []


def prompt_choices(backend: Backend) -> list:
    try:
        return [p["name"] for p in backend.prompts() if p.get("compatible", True)]
    except Exception:
        return library_names(backend)
