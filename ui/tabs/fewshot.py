"""The Few-shot tab: pick examples from search results or uploads, learn a prompt (zero-shot, Tip-Adapter, linear
probe, CoOp, VPT, UPT, MVLPT) with its validation accuracy plotted live, save it to the library. Learning imports
torch (lazily); nothing else here does."""
from __future__ import annotations

import threading
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import gradio as gr

from ..backend import Backend
from ..common import (bind, dataframe, failed, method_name, not_ready, prompt_choices,
                      safe_prompt_name, thumb_gallery)
from ..files import origin_of
from ..i18n import EN, T, ellipsis, is_zh, lang_of, tr

FS_PICK = 24               # search results shown to pick examples from
FS_STEPS = 50              # default optimisation steps of the prompt methods in the app
FS_METHODS = ["zeroshot", "tip-adapter", "tip-adapter-f", "linear-probe", "coop", "vpt", "upt", "mvlpt"]


def fs_method_choices(lang: str) -> list[tuple[str, str]]:
    return [(method_name(lang, m), m) for m in FS_METHODS]


def fs_table(examples: dict, lang: str = "en"):
    rows = [[c, len(v), ellipsis(", ".join(Path(str(p)).name for p in v), 60)]
            for c, v in (examples or {}).items()]
    return dataframe(rows, lang, ["fs_col_class", "fs_col_n", "fs_col_photos"])


def fs_find(backend: Backend, query: str, request: gr.Request):
    """Search results to pick examples from (click photos to select them)."""
    lang, origin = lang_of(request), origin_of(request)
    q = (query or "").strip()
    if backend.state != "ready":
        return [], [], [], not_ready(backend, lang)
    if not q:
        return [], [], [], tr(lang, "msg_empty")
    res = backend.run_search(query=q, k=FS_PICK)
    return ([(backend.thumb_url(r["path"], origin), Path(str(r["path"])).name) for r in res],
            [r["path"] for r in res], [], tr(lang, "fs_pick_hint"))


def fs_toggle(backend: Backend, paths, picked, evt: gr.SelectData, request: gr.Request):
    """Click a result: select it as an example (click again to unselect); captions show ✓."""
    origin = origin_of(request)
    try:
        i = int(evt.index)
        paths[i]
    except (TypeError, ValueError, IndexError):
        return gr.skip(), gr.skip()
    picked = [x for x in (picked or []) if x != i] if i in (picked or []) else list(picked or []) + [i]
    items = [(backend.thumb_url(p, origin), ("✓ " if j in picked else "") + Path(str(p)).name)
             for j, p in enumerate(paths)]
    return items, picked


def fs_add(backend: Backend, cls: str, uploads, paths, picked, examples, request: gr.Request):
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
    unmarked = [(backend.thumb_url(p, origin), Path(str(p)).name) for p in paths or []]   # selection cleared
    return examples, fs_table(examples, lang), tr(lang, "fs_added", n=len(new), c=cls), [], unmarked


def fs_clear(backend: Backend, request: gr.Request):
    lang = lang_of(request)
    return {}, fs_table({}, lang), tr(lang, "fs_cleared"), None, None, ""


def fs_plot(points: list) -> "Any":
    """Validation accuracy (%) by step as a LinePlot frame (numeric columns: quantitative axes)."""
    import pandas as pd
    return pd.DataFrame({"step": pd.Series([p[0] for p in points or []], dtype="int64"),
                         "accuracy": pd.Series([p[1] for p in points or []], dtype="float64")})


def fs_learn(backend: Backend, method: str, steps: int, examples, request: gr.Request):
    """Learn a prompt from the examples (a generator: the accuracy plot updates while it learns). A class
    with at least 5 examples keeps one in five aside to measure validation accuracy."""
    lang = lang_of(request)
    examples = {c: list(v) for c, v in (examples or {}).items() if v}
    if backend.state != "ready":
        yield fs_plot([]), not_ready(backend, lang), None, ""
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
            box["prompt"] = learn_prompt(examples, method=method, model=backend.any_model(), config=cfg,
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
    yield fs_plot(evals), fs_result_md(backend, p, examples, lang, time.perf_counter() - t0), p, ""


def fs_result_md(backend: Backend, p, examples, lang, seconds) -> str:
    """Validation accuracy (held-out examples when every class has >= 5), else accuracy on the examples."""
    va = p.meta.get("val_accuracy")
    if va is not None:
        acc = tr(lang, "fs_val", a=100 * float(va))
    else:
        from training.prompts.api import classify
        paths = [x for v in examples.values() for x in v]
        truth = [c for c, v in examples.items() for _ in v]
        pred = [r[0]["class"] for r in classify(paths, prompt=p, model=backend.any_model(), top=1)]
        acc = tr(lang, "fs_train_acc", a=100 * sum(a == b for a, b in zip(pred, truth)) / max(1, len(truth)))
    return tr(lang, "fs_done", m=method_name(lang, p.method), c=p.num_classes,
              n=sum(len(v) for v in examples.values()), s=round(seconds, 1)) + " " + acc


def fs_save(backend: Backend, name: str, prompt, request: gr.Request):
    """Save the learned prompt into the user's prompt library (not in demo mode)."""
    lang = lang_of(request)
    if backend.demo:
        return tr(lang, "demo_readonly"), gr.skip(), gr.skip()
    if prompt is None:
        return tr(lang, "fs_learn_first"), gr.skip(), gr.skip()
    name = safe_prompt_name(name)
    if not name:
        return tr(lang, "fs_bad_name"), gr.skip(), gr.skip()
    try:
        backend.save_prompt(prompt, name)
    except FileExistsError:
        return tr(lang, "fs_name_taken", name=name), gr.skip(), gr.skip()
    except Exception as e:
        return failed(lang, "pr_failed", e), gr.skip(), gr.skip()
    ch = prompt_choices(backend)
    return tr(lang, "fs_saved", name=name), gr.Dropdown(choices=[""] + ch, value=name), gr.Dropdown(choices=ch)

def build(backend: Backend) -> SimpleNamespace:
    """The Few-shot tab's components."""
    with gr.Tab(T("tab_fewshot"), elem_id="tab-fewshot") as tab:
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
                                           allow_preview=False, elem_id="fs-results")
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
                with gr.Row(equal_height=False, visible=not backend.demo):
                    fs_name = gr.Textbox(label=T("fs_name"), placeholder="my-pets", max_lines=1, scale=3,
                                         elem_id="fs-name")
                    fs_save_btn = gr.Button(T("fs_save"), scale=1, min_width=120, elem_id="fs-save",
                                            elem_classes=["end-btn"])
                fs_save_msg = gr.Markdown("", elem_id="fs-save-msg")
            with gr.Column(scale=3):
                fs_curve = gr.LinePlot(fs_plot([]), x="step", y="accuracy", label=T("fs_curve"), height=300,
                                       x_title=T("fs_axis_step"), y_title=T("fs_axis_acc"), y_lim=[0, 100],
                                       elem_id="fs-curve")
    return SimpleNamespace(tab=tab, fs_examples=fs_examples, fs_paths=fs_paths, fs_picked=fs_picked,
                           fs_prompt=fs_prompt, fs_query=fs_query, fs_find_btn=fs_find_btn, fs_results=fs_results,
                           fs_class=fs_class, fs_upload=fs_upload, fs_add_btn=fs_add_btn,
                           fs_clear_btn=fs_clear_btn, fs_msg=fs_msg, fs_table_df=fs_table_df, fs_method=fs_method,
                           fs_steps=fs_steps, fs_learn_btn=fs_learn_btn, fs_result=fs_result, fs_name=fs_name,
                           fs_save_btn=fs_save_btn, fs_save_msg=fs_save_msg, fs_curve=fs_curve)


def wire(backend: Backend, ui: SimpleNamespace) -> None:
    t = ui.fewshot
    find_outs = [t.fs_results, t.fs_paths, t.fs_picked, t.fs_msg]
    t.fs_query.submit(bind(fs_find, backend), [t.fs_query], find_outs, api_visibility="private")
    t.fs_find_btn.click(bind(fs_find, backend), [t.fs_query], find_outs, api_name="fewshot_find")
    t.fs_results.select(bind(fs_toggle, backend), [t.fs_paths, t.fs_picked], [t.fs_results, t.fs_picked],
                        api_visibility="private")
    t.fs_add_btn.click(bind(fs_add, backend), [t.fs_class, t.fs_upload, t.fs_paths, t.fs_picked, t.fs_examples],
                       [t.fs_examples, t.fs_table_df, t.fs_msg, t.fs_picked, t.fs_results], api_name="fewshot_add").then(
        lambda: None, None, [t.fs_upload], api_visibility="private", queue=False)
    t.fs_clear_btn.click(bind(fs_clear, backend), None, [t.fs_examples, t.fs_table_df, t.fs_msg, t.fs_prompt, t.fs_upload,
                                          t.fs_save_msg], api_name="fewshot_clear")
    t.fs_learn_btn.click(bind(fs_learn, backend), [t.fs_method, t.fs_steps, t.fs_examples],
                         [t.fs_curve, t.fs_result, t.fs_prompt, t.fs_save_msg], api_name="fewshot_learn",
                         concurrency_limit=1, concurrency_id="learn")
    t.fs_save_btn.click(bind(fs_save, backend), [t.fs_name, t.fs_prompt],
                        [t.fs_save_msg, ui.label.label_prompt, ui.prompts.pr_pick], api_name="fewshot_save")
