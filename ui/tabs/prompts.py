"""The Prompts tab: the prompt library (shipped and the user's; shipped only in demo mode), details, label every
photo with a prompt, export, import (.safetensors with validated metadata only), delete (after asking)."""
from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import gradio as gr

from ..backend import Backend
from ..common import (bind, dataframe, failed, library_names, method_name, prompt_choices,
                      safe_prompt_name)
from ..i18n import EN, T, ellipsis, is_zh, lang_of, tr
from . import label as label_tab


def prompts_table(backend: Backend, lang: str):
    rows = []
    for p in backend.prompts():
        va = p.get("val_accuracy")
        labels = ", ".join((p.get("labels_zh") if is_zh(lang) else p.get("labels_en")) or [])
        rows.append([p["name"], method_name(lang, p.get("method", "?")),
                     p.get("classes", 0), ellipsis(labels, 80), p.get("shots", "–"),
                     "–" if va is None else f"{100 * float(va):.1f}%",
                     tr(lang, "yes") if p.get("compatible", True) else tr(lang, "no"),
                     tr(lang, "pr_shipped") if p.get("shipped") else tr(lang, "pr_user")])
    return dataframe(rows, lang, ["pr_col_name", "pr_col_method", "pr_col_n", "pr_col_labels", "pr_col_shots",
                                  "pr_col_val", "pr_col_fits", "pr_col_source"])


def prompts_view(backend: Backend, request: gr.Request):
    lang = lang_of(request)
    ch = prompt_choices(backend)
    return prompts_table(backend, lang), gr.Dropdown(choices=library_names(backend)), gr.Dropdown(choices=[""] + ch)


def prompt_detail(backend: Backend, name: str, request: gr.Request) -> str:
    """Method, classes EN/ZH, shots, validation accuracy, and whether it fits the loaded model."""
    lang = lang_of(request)
    if not name:
        return tr(lang, "pr_pick")
    s = next((p for p in backend.prompts() if p["name"] == name), None)
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


def prompt_apply(backend: Backend, name: str, sure, mem, request: gr.Request, progress=gr.Progress()):
    """Label the whole index with a library prompt (the Label tab's review grid shows the result)."""
    lang = lang_of(request)
    if not name:
        return (tr(lang, "pr_pick"),) + (gr.skip(),) * 8
    out = label_tab.do_label(backend, "", name, sure, mem, request, progress)
    return (out[1],) + tuple(out)


def prompt_export(backend: Backend, name: str, request: gr.Request):
    """The prompt's .safetensors file (its metadata is inside) and that metadata as JSON, to download."""
    lang = lang_of(request)
    if not name:
        return None, tr(lang, "pr_pick")
    try:
        dst = backend.export_prompt(name)
    except Exception as e:
        return None, failed(lang, "pr_failed", e)
    return (gr.File(value=[str(dst), str(dst.with_suffix(".json"))], visible=True),
            tr(lang, "pr_exported", name=name))


def prompt_import(backend: Backend, file, name: str, request: gr.Request):
    """Import a prompt: only a .safetensors file with valid prompt JSON metadata, learned for the loaded
    model (nothing is unpickled; anything else is refused with the reason)."""
    lang = lang_of(request)
    skip = (gr.skip(),) * 3
    if backend.demo:
        return (tr(lang, "demo_readonly"),) + skip
    src = file if isinstance(file, str) else (file or {}).get("path") if isinstance(file, dict) else \
        getattr(file, "name", None)
    if not src:
        return (tr(lang, "pr_no_file"),) + skip
    from dcclip_core.prompts import PromptError, PromptMismatchError
    if Path(src).suffix.lower() != ".safetensors":
        return (tr(lang, "pr_not_safetensors", f=Path(src).name),) + skip
    try:
        dst = backend.import_prompt(src, safe_prompt_name(name or Path(src).stem))
    except PromptMismatchError as e:
        return (tr(lang, "pr_wrong_model", err=str(e)),) + skip
    except PromptError as e:
        return (tr(lang, "pr_invalid", err=str(e).replace(str(src), Path(src).name)),) + skip
    except Exception as e:
        return (failed(lang, "pr_failed", e),) + skip
    return (tr(lang, "pr_imported", name=dst.stem), *prompts_view(backend, request))


def ask_delete_prompt(backend: Backend, name: str, request: gr.Request):
    lang = lang_of(request)
    if backend.demo:
        return tr(lang, "demo_readonly"), gr.Row(visible=False)
    if not name:
        return tr(lang, "pr_pick"), gr.Row(visible=False)
    return tr(lang, "confirm_delete_prompt", name=name), gr.Row(visible=True)


def prompt_delete(backend: Backend, name: str, request: gr.Request):
    lang = lang_of(request)
    hide = gr.Row(visible=False)
    try:
        backend.delete_prompt(name)
    except Exception as e:
        return failed(lang, "pr_failed", e), gr.skip(), gr.skip(), gr.skip(), hide
    return (tr(lang, "pr_deleted", name=name), *prompts_view(backend, request), hide)

def build(backend: Backend) -> SimpleNamespace:
    """The Prompts tab's components."""
    with gr.Tab(T("tab_prompts"), elem_id="tab-prompts") as tab:
        pr_table = gr.Dataframe(value=[], headers=[EN[k] for k in ("pr_col_name", "pr_col_method", "pr_col_n",
                                                                   "pr_col_labels", "pr_col_shots", "pr_col_val",
                                                                   "pr_col_fits", "pr_col_source")],
                                interactive=False, wrap=True, column_count=(8, "fixed"), max_height=300,
                                column_widths=["17%", "12%", "6%", "33%", "8%", "8%", "8%", "8%"],
                                elem_id="pr-table")
        with gr.Row(equal_height=False):
            with gr.Column(scale=3):
                pr_pick = gr.Dropdown(library_names(backend), value=None, label=T("pr_pick_label"),
                                      allow_custom_value=True, elem_id="pr-pick")
                pr_info = gr.Markdown(T("pr_pick"), elem_id="pr-info")
                with gr.Row():
                    pr_apply_btn = gr.Button(T("pr_apply"), variant="primary", elem_id="pr-apply")
                    pr_export_btn = gr.Button(T("pr_export"), elem_id="pr-export")
                    pr_delete_btn = gr.Button(T("pr_delete"), variant="stop", visible=not backend.demo,
                                              elem_id="pr-delete")
                pr_msg = gr.Markdown("", elem_id="pr-msg")
                with gr.Row(visible=False) as pr_confirm_row:
                    pr_confirm_btn = gr.Button(T("confirm_yes_delete"), variant="stop", elem_id="pr-confirm")
                    pr_cancel_btn = gr.Button(T("confirm_cancel"), elem_id="pr-cancel")
                pr_file = gr.File(label=T("export_file"), file_count="multiple", interactive=False,
                                  height=90, visible=False, elem_id="pr-file")
            with gr.Column(scale=2, visible=not backend.demo):
                pr_upload = gr.File(label=T("pr_import_file"), file_types=[".safetensors"], type="filepath",
                                    height=150, elem_id="pr-upload")
                pr_import_name = gr.Textbox(label=T("pr_import_name"), max_lines=1, elem_id="pr-import-name")
                pr_import_btn = gr.Button(T("pr_import"), elem_id="pr-import")
    return SimpleNamespace(tab=tab, pr_table=pr_table, pr_pick=pr_pick, pr_info=pr_info, pr_apply_btn=pr_apply_btn,
                           pr_export_btn=pr_export_btn, pr_delete_btn=pr_delete_btn, pr_msg=pr_msg,
                           pr_confirm_row=pr_confirm_row, pr_confirm_btn=pr_confirm_btn,
                           pr_cancel_btn=pr_cancel_btn, pr_file=pr_file, pr_upload=pr_upload,
                           pr_import_name=pr_import_name, pr_import_btn=pr_import_btn)


def wire(backend: Backend, ui: SimpleNamespace) -> None:
    t, lab = ui.prompts, ui.label
    t.tab.select(bind(prompts_view, backend), None, [t.pr_table, t.pr_pick, lab.label_prompt], api_name="prompts_list")
    t.pr_pick.change(bind(prompt_detail, backend), [t.pr_pick], [t.pr_info], api_name="prompt_detail", queue=False)
    t.pr_apply_btn.click(bind(prompt_apply, backend), [t.pr_pick, lab.sure, lab.lab_mem],
                         [t.pr_msg] + label_tab.review_outputs_of(lab), api_name="prompt_apply", concurrency_limit=1,
                         concurrency_id="write")
    t.pr_export_btn.click(bind(prompt_export, backend), [t.pr_pick], [t.pr_file, t.pr_msg], api_name="prompt_export")
    t.pr_import_btn.click(bind(prompt_import, backend), [t.pr_upload, t.pr_import_name],
                          [t.pr_msg, t.pr_table, t.pr_pick, lab.label_prompt], api_name="prompt_import")
    t.pr_delete_btn.click(bind(ask_delete_prompt, backend), [t.pr_pick], [t.pr_msg, t.pr_confirm_row],
                          api_name="prompt_delete_ask", queue=False)
    t.pr_confirm_btn.click(bind(prompt_delete, backend), [t.pr_pick],
                           [t.pr_msg, t.pr_table, t.pr_pick, lab.label_prompt, t.pr_confirm_row],
                           api_name="prompt_delete")
    t.pr_cancel_btn.click(lambda: ("", gr.Row(visible=False)), None, [t.pr_msg, t.pr_confirm_row],
                          api_visibility="private", queue=False)
