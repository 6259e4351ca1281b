"""Zero-shot classification's one implementation: prompt templates and class embeddings (numpy only).

    from dcclip_core.zeroshot import class_embeddings, templates
    T = class_embeddings(model.encode_text, ["猫", "a dog"])          # (C, d): each name in its own language
    T = class_embeddings(model.encode_text, names, templates("zh"))   # one template list for every name
    probs = softmax(100 * photo_vecs @ T.T)                           # CLIP's scale

A class embedding is the L2-normalised mean of the text embeddings of the name filled into each template (the
bundled 8 short templates per language, ``assets/data/templates.json``; the full 80 with ``kind="full"``). With no
templates given, a name containing CJK characters takes the Chinese ones and any other name the English ones.
Labelling (``index.labels``), prompt learning (``training.prompts``) and evaluation (``training.evaluate``) all
call this module, so a label set means the same thing everywhere.
"""
from __future__ import annotations

import functools
import json
import re
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from .config import ASSETS_DIR

TEMPLATES_FILE = ASSETS_DIR / "data" / "templates.json"
FALLBACK = {"en": ["a photo of a {}."], "zh": ["一张{}的照片。"]}
_CJK = re.compile(r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\uac00-\ud7af]")

EncodeText = Callable[[list[str]], np.ndarray]


def has_cjk(text: str) -> bool:
    return bool(_CJK.search(str(text)))


def language_of(name: str) -> str:
    """"zh" for a name with CJK characters, else "en" (which bundled templates it takes)."""
    return "zh" if has_cjk(name) else "en"


@functools.lru_cache(maxsize=8)
def _load(path: str) -> dict[str, list[str]]:
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


def templates(lang: str, kind: str = "short", path: str | Path | None = None) -> list[str]:
    """The bundled templates of ``lang`` ("en" | "zh"): the 8 ``short`` ones or the ``full`` 80 (a built-in one
    when the file is missing). Each has a ``{}`` for the name."""
    data = _load(str(path or TEMPLATES_FILE))
    key = lang if kind == "full" else f"{lang}_short"
    found = [t for t in data.get(key, []) if "{}" in t]
    return found or list(FALLBACK["zh" if lang == "zh" else "en"])


def fill(template: str, name: str) -> str:
    """A template with the name in it (a template without ``{}`` gets the name appended)."""
    return template.format(name) if "{}" in template else f"{template} {name}"


def class_embeddings(encode_text: EncodeText, names: Sequence[str], template_list: Sequence[str] | None = None,
                     kind: str = "short", bank=None) -> np.ndarray:
    """(C, d) float32: per name the L2-normalised mean of its filled templates' text embeddings. ``template_list``
    applies to every name; None: each name takes the bundled templates of its own language. ``bank`` (a
    text-space model's ``concept_bank``) moves the rows to its label space (``ConceptBank.label_space``)."""
    out = _class_embeddings(encode_text, names, template_list, kind)
    return bank.label_space(out) if bank is not None and len(out) else out


def _class_embeddings(encode_text: EncodeText, names: Sequence[str], template_list: Sequence[str] | None,
                      kind: str) -> np.ndarray:
    per_name = [list(template_list) if template_list is not None else templates(language_of(n), kind) for n in names]
    texts = [fill(t, n) for n, ts in zip(names, per_name) for t in ts]
    emb = np.asarray(encode_text(texts), np.float32)                       # (sum of templates, d)
    out, i = [], 0
    for ts in per_name:
        v = emb[i:i + len(ts)].mean(0)
        out.append(v / max(float(np.linalg.norm(v)), 1e-12))
        i += len(ts)
    return np.stack(out).astype(np.float32) if out else np.zeros((0, emb.shape[-1] if emb.ndim == 2 else 0),
                                                                np.float32)
