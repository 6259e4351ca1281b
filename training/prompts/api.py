"""The app's entry points: learn a prompt from labelled examples, classify images with labels or a prompt.

    from training.prompts import api
    p = api.learn_prompt({"cat": [a, b, c], "dog": [d, e, f]}, method="coop",
                         progress=lambda step, total, loss: ...)          # -> dcclip_core.prompts.Prompt
    p.save(api.library_path("pets"))                                      # into the user's prompt library
    api.classify(images, prompt=p)          # [[{"label", "class", "score"}, ...] per image], best first
    api.classify(images, labels=["猫", "狗"], lang="zh")                   # zero-shot with a label set

Images are paths, PIL images or bytes. ``classify`` never imports torch (ONNX Runtime + numpy); learning a
CoOp / UPT / VPT prompt does (lazily). Everything returns plain data.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable, Mapping, Sequence

import numpy as np

from dcclip_core.prompts import Prompt, PromptClassifier, load_prompt, model_ref, user_dir

Progress = Callable[[int, int, float], None]


def _model(model=None):
    import dcclip_core
    return model if model is not None else dcclip_core.load()


def library_path(name: str) -> Path:
    """Where a prompt called ``name`` goes in the user's library."""
    return user_dir() / f"{name}.safetensors"


def learn_prompt(examples: Mapping[str, Sequence], method: str = "coop", *, names: Mapping | None = None,
                 lang: str = "en", progress: Progress | None = None, model=None, config=None, seed: int = 0,
                 source: Prompt | str | None = None, name: str | None = None,
                 val_fraction: float | None = None,
                 on_eval: Callable[[int, float], None] | None = None) -> Prompt:
    """Learn a prompt from {label: [images]} (5 per class is enough to start).

    ``names`` maps a label to {"en": ..., "zh": ...} (default: the label itself in both languages).
    ``progress(step, total, loss)`` is called after every optimisation step. A validation split is held out
    only when every class has >= 10 examples (``val_fraction`` 0.2), otherwise all examples train.
    ``on_eval(step, accuracy)`` hears each validation while it learns (only with a validation split).
    """
    from .methods import (FewShotConfig, LearningEnv, data_from_examples, default_source, learn,
                          listen_evals)
    if len(examples) < 2:
        raise ValueError("need at least two labels to learn a classifier")
    empty = [k for k, v in examples.items() if not len(v)]
    if empty:
        raise ValueError(f"labels without example images: {empty}")
    env = LearningEnv(model=_model(model))
    labels = list(examples)
    nm = {"en": [], "zh": []}
    for lab in labels:
        v = (names or {}).get(lab, lab)
        v = {"en": v, "zh": v} if isinstance(v, str) else v
        nm["en"].append(v.get("en") or lab)
        nm["zh"].append(v.get("zh") or nm["en"][-1])
    if val_fraction is None:
        val_fraction = 0.2 if min(len(v) for v in examples.values()) >= 10 else 0.0
    data = data_from_examples(dict(examples), env, nm, val_fraction=val_fraction, seed=seed)
    cfg = config or FewShotConfig(lang=lang)
    if config is None and env.model.config.image.tower.startswith("vit-"):
        cfg = cfg.replace(visual="deep")                     # VPT on a ViT tower: tokens at every layer
    kw = {}
    if method == "mvlpt":
        src = load_prompt(source, model=env.model) if isinstance(source, (str, Path)) else source
        kw["source"] = src or default_source(env.model)
    with listen_evals(on_eval):
        prompt, info = learn(method, data, env, cfg, progress=progress, **kw)
    if name:
        prompt.meta["name"] = name
    prompt.meta["task"] = name or "examples"
    prompt.meta["examples"] = {lab: len(examples[lab]) for lab in labels}
    return prompt


def label_prompt(labels: Sequence[str] | Mapping[str, Mapping], lang: str = "en", model=None) -> Prompt:
    """A zero-shot prompt for a label set (template ensembles); no torch."""
    from .features import class_embeddings
    m = _model(model)
    if isinstance(labels, Mapping):
        classes = list(labels)
        nm = {lg: [labels[c].get(lg) or labels[c].get("en") or c for c in classes] for lg in ("en", "zh")}
    else:
        classes = list(labels)
        nm = {"en": classes, "zh": classes}
    W = class_embeddings(m, nm, lang)
    return Prompt({"method": "zeroshot", "model": model_ref(m), "classes": classes, "labels": nm, "lang": lang,
                   "logit_scale": 100.0, "shots": 0}, {"class_embeds": W})


def _prompt(m, labels, prompt: Prompt | str | None, lang: str) -> Prompt:
    """Exactly one of a label set (-> a zero-shot prompt) or a prompt (object, name or file)."""
    if (labels is None) == (prompt is None):
        raise ValueError("pass exactly one of labels= or prompt=")
    if labels is not None:
        return label_prompt(labels, lang, m)
    return load_prompt(prompt, model=m) if isinstance(prompt, (str, Path)) else prompt


def scores(images: Sequence, labels=None, prompt: Prompt | str | None = None, lang: str = "en",
           model=None) -> tuple[np.ndarray, list[str]]:
    """(n, C) class probabilities and the C labels (in ``lang``) for a label set or a prompt."""
    m = _model(model)
    p = _prompt(m, labels, prompt, lang)
    return PromptClassifier(m, p).scores(list(images)), p.labels(lang)


def classify(images: Sequence, labels=None, prompt: Prompt | str | None = None, lang: str = "en",
             model=None, top: int | None = None) -> list[list[dict]]:
    """Per image, [{"label", "class", "score"}, ...] best first (score = probability)."""
    m = _model(model)
    return PromptClassifier(m, _prompt(m, labels, prompt, lang)).classify(list(images), lang=lang, top=top)
