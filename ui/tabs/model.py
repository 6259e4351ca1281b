"""The Model tab: what the model does for the user (languages, where it runs, its size), its model-card metrics,
switching to another installed model (not in demo mode)."""
from __future__ import annotations

from types import SimpleNamespace

import gradio as gr

from ..backend import Backend, installed_models, model_metrics
from ..common import bind, failed, not_ready, status_text
from ..i18n import T, lang_of, tr

LANG_NAMES = {"en": "English", "zh": "中文 (简体)", "zh_hant": "中文 (繁體)"}


def metrics_md(name: str, lang: str) -> str:
    """A compact Markdown table: real-photo recall@1/@5 per language and ImageNet held-out top-1."""
    m = model_metrics(name)
    if not m:
        return tr(lang, "m_none")
    if (m.get("heldout") or {}).get("retrieval", {}).get("current"):
        return heldout_md(m, name, lang)
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


def heldout_md(m: dict, name: str, lang: str) -> str:
    """The metrics of a model measured on the held-out realistic photos (eval-default's "heldout" section):
    recall@5 there and on the package photos, and zero-shot labelling into the 11 categories, per language."""
    h = m["heldout"]
    ret = h["retrieval"]["current"]["languages"]
    pkg = (h.get("package_photos") or {}).get("current") or {}
    zs = (h.get("zeroshot") or {}).get("current") or {}
    pct = lambda v: "–" if v is None else f"{100 * float(v):.1f}%"  # noqa: E731
    head = [tr(lang, "m_lang"), tr(lang, "m_held5"), tr(lang, "m_pkg5"), tr(lang, "m_zs")]
    rows = [[label, pct((ret.get(code) or {}).get("recall@5")), pct((pkg.get(code) or {}).get("recall@5")),
             pct((zs.get(code) or {}).get("top1"))] for code, label in LANG_NAMES.items() if code in ret]
    lines = [f"**{tr(lang, 'model_metrics')}** · `{m.get('model', name)}`", "",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    lines += ["", tr(lang, "m_note_heldout", n=h.get("n_photos", "?"),
                     p=(h.get("package_photos") or {}).get("n_photos", "?"))]
    return "\n".join(lines)


def about_md(backend: Backend, lang: str) -> str:
    """The Model tab's panel: what the model does for the user (languages, where it runs, its size, speed) and
    the index's counts (no file paths in demo mode)."""
    info = backend.model_info()
    s = backend.stats()
    lines = [f"**{tr(lang, 'about_model')}**", ""]
    if info:
        names = {"zh": "中文", "en": "English"}
        langs = ", ".join(names.get(x, x) for x in info.get("languages") or [])
        lines += [f"- {tr(lang, 'about_id')}: `{info.get('id', '?')}`",
                  f"- {tr(lang, 'about_langs')}: {langs} · {tr(lang, 'about_trad')}",
                  f"- {tr(lang, 'about_runs')}",
                  f"- {tr(lang, 'about_size', mb=backend.model_megabytes())}"]
    else:
        lines.append(f"- {tr(lang, 'about_wait')}")
    lines += ["", f"**{tr(lang, 'about_index')}**", ""]
    if s:
        lines += [f"- {tr(lang, 'about_images')}: {s.get('images', '?')}",
                  f"- {tr(lang, 'about_errors')}: {s.get('errors', 0)}"]
        if not backend.demo and s.get("db"):
            lines.append(f"- {tr(lang, 'about_db')}: `{s.get('db')}`")
    else:
        lines.append(f"- {status_text(backend, lang)}")
    lines += ["", tr(lang, "about_offline")]
    return "\n".join(lines)


def model_view(backend: Backend, name, request: gr.Request):
    lang = lang_of(request)
    return metrics_md(name or "default", lang), about_md(backend, lang)


def do_use_model(backend: Backend, name: str, request: gr.Request):
    """Switch to another installed model; the index is re-embedded by a re-scan (the message says so)."""
    lang = lang_of(request)
    if backend.state != "ready":
        return not_ready(backend, lang), gr.skip(), gr.skip()
    try:
        res = backend.switch_model(name)
    except Exception as e:
        return failed(lang, "msg_model_failed", e), gr.skip(), gr.skip()
    key = "msg_model_ok" if res["vectors"] >= res["images"] else "msg_model_reindex"
    return (tr(lang, key, model=res["model_id"], n=res["vectors"], total=res["images"]), about_md(backend, lang),
            status_text(backend, lang))

def build(backend: Backend) -> SimpleNamespace:
    """The Model tab's components."""
    models = installed_models()
    with gr.Tab(T("tab_model"), elem_id="tab-model") as tab:
        with gr.Row(equal_height=False):
            model_pick = gr.Dropdown(models, value=models[0], label=T("model_pick"), scale=4,
                                     elem_id="model-pick")
            model_use_btn = gr.Button(T("model_use"), scale=1, min_width=160, visible=not backend.demo,
                                      elem_classes=["end-btn"], elem_id="model-use")
        model_msg = gr.Markdown("", elem_id="model-msg")
        model_about = gr.Markdown("", elem_id="model-about")
        metrics = gr.Markdown("", elem_id="metrics")

    return SimpleNamespace(tab=tab, model_pick=model_pick, model_use_btn=model_use_btn, model_msg=model_msg,
                           model_about=model_about, metrics=metrics)


def wire(backend: Backend, ui: SimpleNamespace) -> None:
    t = ui.model
    t.tab.select(bind(model_view, backend), [t.model_pick], [t.metrics, t.model_about], api_visibility="private",
                 queue=False)
    t.model_pick.change(bind(model_view, backend), [t.model_pick], [t.metrics, t.model_about], api_name="model_card",
                        queue=False)
    t.model_use_btn.click(bind(do_use_model, backend), [t.model_pick], [t.model_msg, t.model_about, ui.status],
                          api_name="model_use", concurrency_limit=1, concurrency_id="write").then(
        lambda: gr.Timer(active=True), None, ui.search.timer, api_visibility="private",
        queue=False)                            # the status line follows the text pass embedding lines for it
