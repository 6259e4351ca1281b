"""UI strings in English, simplified and traditional Chinese (``assets/data/ui_strings.json``).

Static labels use ``T(key)`` (the browser translates them from its language); messages built at run time are
formatted server-side with ``tr(lang, key, **kw)`` in the language ``lang_of(request)`` reads from the request.
"""
from __future__ import annotations

import functools
import json
import re
import unicodedata
from pathlib import Path

import gradio as gr

from dcclip_core.tokenizer import script_converter

HERE = Path(__file__).resolve().parent.parent
UI_STRINGS = HERE / "assets" / "data" / "ui_strings.json"
# {"en" | "zh" | "zh_hant": {key: text}}; zh_hant is zh through OpenCC s2twp (a test keeps them in step)
_strings = json.loads(UI_STRINGS.read_text(encoding="utf-8"))
EN, ZH, ZH_HANT = _strings["en"], _strings["zh"], _strings["zh_hant"]
TABLES = {"en": EN, "zh": ZH, "zh_hant": ZH_HANT}
I18N = gr.I18n(en=EN, zh=ZH, **{"zh-CN": ZH, "zh-SG": ZH, "zh-TW": ZH_HANT, "zh-HK": ZH_HANT, "zh-MO": ZH_HANT})
T = I18N  # T(name) -> a label the browser translates


def lang_of(request) -> str:
    """'zh' (simplified) or 'zh_hant' (zh-TW / zh-HK / zh-MO / zh-Hant) when the browser asks for Chinese first,
    else 'en' (for messages formatted server-side)."""
    try:
        al = (request.headers.get("accept-language") or "") if request is not None else ""
    except Exception:
        al = ""
    first = al.split(",")[0].split(";")[0].strip().lower().replace("_", "-")
    if not first.startswith("zh"):
        return "en"
    return "zh_hant" if first.startswith(("zh-tw", "zh-hk", "zh-mo", "zh-hant")) else "zh"


def tr(lang: str, key: str, **kw) -> str:
    """The string ``key`` in ``lang`` formatted with ``kw``. A count ``n`` picks the ``key_one`` variant when
    the table has one and n == 1 ("1 result", not "1 results")."""
    table = TABLES.get(lang, EN)
    if kw.get("n") == 1 and (key + "_one") in EN:
        key = key + "_one"
    s = table.get(key) or EN.get(key, key)
    return s.format(**kw) if kw else s


def is_zh(lang: str) -> bool:
    return str(lang).startswith("zh")


def display_width(text: str) -> int:
    """Columns a string takes in a monospace font (East Asian wide and full-width characters count 2)."""
    return sum(2 if unicodedata.east_asian_width(c) in "WF" else 1 for c in str(text))


def ellipsis(text: str, width: int) -> str:
    """``text`` cut to at most ``width`` display columns, ending in "…" when it was cut."""
    text = str(text)
    if display_width(text) <= width:
        return text
    out, w = [], 0
    for c in text:
        cw = 2 if unicodedata.east_asian_width(c) in "WF" else 1
        if w + cw > width - 1:
            break
        out.append(c)
        w += cw
    return "".join(out).rstrip(" ,，、") + "…"


# What a bad file's recorded reason (English, from dcclip_core.preprocess / index.indexer) starts with -> the
# key of its explanation; the English UI shows the recorded reason itself, with its details.
_REASONS = [("file not found", "reason_missing"), ("is a directory", "reason_not_image"),
            ("permission denied", "reason_permission"), ("empty", "reason_empty"),
            ("not an image", "reason_not_image"), ("truncated or corrupt", "reason_truncated"),
            ("too large", "reason_too_many_pixels"), ("file too large", "reason_file_too_big"),
            ("invalid size", "reason_not_image"), ("cannot decode", "reason_decode"),
            ("out of memory", "reason_memory"), ("cannot list folder", "reason_folder"),
            ("cannot stat", "reason_unreadable"), ("cannot read", "reason_unreadable"),
            ("cannot open", "reason_unreadable"), ("unsupported input", "reason_not_image"),
            ("unexpected error", "reason_unexpected"), ("text could not be read", "reason_text_failed"),
            ("faces could not be found", "reason_faces_failed")]


def reason_text(lang: str, reason: str) -> str:
    """Why a file could not be read, for people in ``lang`` (no environment variables or class names)."""
    r = str(reason or "").strip()
    low = r.lower()
    key = next((k for prefix, k in sorted(_REASONS, key=lambda x: -len(x[0])) if low.startswith(prefix)), None)
    if key is None:
        return r or tr(lang, "reason_unexpected")
    if lang == "en":                           # without environment variables or exception class names
        return re.sub(r"\s*\((DCCLIP_[A-Z_]+|\w+(Error|Exception)\b[^)]*)\)", "", r)
    return tr(lang, key)


@functools.lru_cache(maxsize=4096)
def short_name(name: str) -> str:
    """A concept's name as a chip shows it: the first of "a；b" alternatives, without a "（…）" / "(…)" gloss
    ("网球；打网球的球" -> "网球", "香水（瓶）" -> "香水", "（小儿用的）围嘴" -> "围嘴")."""
    s = re.split(r"[；;]", str(name))[0].strip()
    bare = re.sub(r"\s*[（(][^）)]*[）)]\s*", "", s).strip()
    return bare or s


def concept_name(concept: dict, lang: str) -> str:
    """A concept's short name in the page's language: {"en", "zh"} (a search result's ``why`` entry) ->
    the English name, the Chinese one, or that in traditional characters (OpenCC s2twp) for zh-TW/HK pages."""
    zh = concept.get("zh")
    zh = zh[0] if isinstance(zh, list) and zh else zh
    en = concept.get("en")
    en = en[0] if isinstance(en, list) and en else en
    if not is_zh(lang) or not zh:
        return short_name(str(en or zh or concept.get("concept") or concept.get("id") or "?"))
    name = short_name(str(zh))
    if lang == "zh_hant":
        try:
            name = script_converter("s2twp").convert(name)     # the tokenizer's cached OpenCC converters
        except Exception:
            pass
    return name
