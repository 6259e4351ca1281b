"""Held-out realistic photo evaluation (numpy + dcclip_core only; no torch).

The photos come from Debian packages (desktop wallpapers, KPhotoAlbum's demo album, the GIMP and Hugin manuals)
listed in assets/data/heldout_photos.json. EVALUATION ONLY: never train, tune or choose anything on them.
Install: apt-get install -y --no-install-recommends plasma-workspace-wallpapers mate-backgrounds
         lomiri-wallpapers-16.04 gimp-help-en hugin-data kphotoalbum opencv-doc scribus-template

`python -m training.heldout [--json]` prints recall@1/5/10 and MRR per language (en, zh, zh_hant = OpenCC s2twp
of zh) and per category. Each query is ranked against all installed held-out photos; missing photos are skipped
and counted.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
from pathlib import Path

import numpy as np

from dcclip_core.concepts import ranking_scores

HELDOUT_JSON = Path(__file__).resolve().parents[1] / "assets" / "data" / "heldout_photos.json"
LANGS = ("en", "zh", "zh_hant")
SPLITS = ("dev", "test")


def load_items(path: str | os.PathLike = HELDOUT_JSON) -> list[dict]:
    return json.loads(Path(path).read_text(encoding="utf-8"))


def split(item: dict) -> str:
    """Deterministic ~50/50 "dev" / "test" split by a hash of the photo id (stable across runs and machines)."""
    h = hashlib.sha256(item["id"].encode("utf-8")).digest()
    return SPLITS[h[-1] & 1]


_split_of = split  # evaluate_heldout's `split` argument shadows the function


def _queries(item: dict, lang: str, conv) -> list[str]:
    if lang == "zh_hant":
        return [conv.convert(q) for q in item["queries"]["zh"]]
    return list(item["queries"][lang])


def _scores(pos: np.ndarray) -> dict:
    if len(pos) == 0:
        return {"n": 0}
    return {"n": int(len(pos)), "recall@1": float((pos < 1).mean()), "recall@5": float((pos < 5).mean()),
            "recall@10": float((pos < 10).mean()), "mrr": float((1.0 / (pos + 1)).mean())}


def evaluate_heldout(model, items: list[dict] | None = None, split: str | None = None) -> dict:
    """Text -> photo retrieval over the installed held-out photos (only those of one split if split is given).

    Returns {"n_photos", "n_skipped", "skipped": [ids], "languages": {lang: scores},
             "categories": {cat: {lang: scores}}}; scores = n, recall@1/5/10, mrr.
    """
    if items is None:
        items = load_items()
    if split is not None:
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
        items = [it for it in items if _split_of(it) == split]
    present = [it for it in items if os.path.isfile(it["path"])]
    out: dict = {"n_photos": len(present), "n_skipped": len(items) - len(present),
                 "skipped": [it["id"] for it in items if not os.path.isfile(it["path"])],
                 "languages": {}, "categories": {}}
    if not present:
        return out
    px = np.stack([model.preprocess(it["path"]) for it in present])                    # (n, 3, S, S)
    img = np.asarray(model.encode_pixels(px), np.float32)
    colours = model.photo_colours(px) if hasattr(model, "photo_colours") else None      # (n, c) or None
    out.update(retrieval_metrics(img, present, model.encode_text, colours=colours,
                                 bank=getattr(model, "concept_bank", None)))
    return out


def _converter():
    from dcclip_core.tokenizer import script_converter        # one cached OpenCC converter per configuration
    return script_converter("s2twp")


def retrieval_metrics(img: np.ndarray, items: list[dict], encode_text, conv=None, langs=LANGS,
                      colours: np.ndarray | None = None, bank=None) -> dict:
    """Text -> photo retrieval with precomputed photo vectors: img (n, d), row j = items[j] (all installed).
    With ``colours`` (n, c) and a ``bank`` whose mix has a colour boost, each score gains the query-aware colour
    term, as index.search ranks (``ConceptBank.colour_terms``).

    Each query of each item is ranked among all n photos (rank = photos scoring strictly higher than its own).
    Returns {"languages": {lang: scores}, "categories": {cat: {lang: scores}}}; scores = n, recall@1/5/10, mrr.
    ``conv`` converts simplified to traditional Chinese for zh_hant (default OpenCC s2twp).
    """
    img = np.asarray(img, np.float32)
    out: dict = {"languages": {}, "categories": {}}
    if not len(items):
        return out
    if conv is None and "zh_hant" in langs:
        conv = _converter()
    cats = sorted({it["category"] for it in items})
    for lang in langs:
        texts, target, cat = [], [], []
        for j, it in enumerate(items):
            for q in _queries(it, lang, conv):
                texts.append(q)
                target.append(j)
                cat.append(it["category"])
        if not texts:
            continue
        txt = np.asarray(encode_text(texts), np.float32)
        S = ranking_scores(txt, img, bank, colours)                                     # (q, n)
        t = np.array(target)
        # rank of the target photo = number of photos scoring strictly higher
        pos = (S > S[np.arange(len(t)), t][:, None]).sum(1)
        out["languages"][lang] = _scores(pos)
        cat = np.array(cat)
        for c in cats:
            out["categories"].setdefault(c, {})[lang] = _scores(pos[cat == c])
    return out


def format_table(m: dict) -> str:
    lines = [f"Held-out photos: {m['n_photos']} evaluated, {m['n_skipped']} not installed (skipped)"]
    hdr = f"{'':12s} {'lang':8s} {'n':>4s} {'R@1':>6s} {'R@5':>6s} {'R@10':>6s} {'MRR':>6s}"
    lines.append(hdr)
    rows = [("ALL", m["languages"])] + sorted(m["categories"].items())
    for name, by_lang in rows:
        for lang in LANGS:
            v = by_lang.get(lang, {"n": 0})
            if v.get("n"):
                lines.append(f"{name:12s} {lang:8s} {v['n']:4d} {v['recall@1']:6.3f} {v['recall@5']:6.3f} "
                             f"{v['recall@10']:6.3f} {v['mrr']:6.3f}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(prog="python -m training.heldout", description=__doc__.splitlines()[0])
    p.add_argument("--model", default=None, help="model directory or name (default: the shipped model)")
    p.add_argument("--json", action="store_true", help="print the metrics as JSON instead of a table")
    p.add_argument("--split", choices=SPLITS, default=None, help="evaluate only this split (default: all photos)")
    args = p.parse_args(argv)
    import dcclip_core
    model = dcclip_core.load(args.model) if args.model else dcclip_core.load()
    m = evaluate_heldout(model, split=args.split)
    print(json.dumps(m, ensure_ascii=False, indent=1) if args.json else format_table(m))
    return m


if __name__ == "__main__":
    main()


# ---- comparisons (``python -m training eval-default``): several systems on the same photos -------------------------
INSTALL_APT = ("plasma-workspace-wallpapers mate-backgrounds lomiri-wallpapers-16.04 gimp-help-en hugin-data "
               "kphotoalbum opencv-doc scribus-template")
CATEGORIES = ("landscape", "sky", "city", "flower", "plant", "people", "animal", "food", "vehicle", "indoor", "text")
# zero-shot label names of the 11 categories (the Label tab's job); ZH as the concept groups name them
CATEGORY_NAMES = {"en": list(CATEGORIES),
                  "zh": ["风景", "天空", "城市", "花", "植物", "人", "动物", "食物", "交通工具", "室内", "文字"]}


def installed(items: list[dict]) -> tuple[list[dict], list[str]]:
    """(items whose photo is installed, ids of the others)."""
    present = [it for it in items if os.path.isfile(it["path"])]
    return present, [it["id"] for it in items if not os.path.isfile(it["path"])]


def split_metrics(img: np.ndarray, items: list[dict], encode_text, conv=None, langs=LANGS,
                  colours: np.ndarray | None = None, bank=None) -> dict:
    """{split: {lang: scores}}: retrieval within each split's photos alone (as ``evaluate_heldout(split=...)``)."""
    out = {}
    for sp in SPLITS:
        idx = [j for j, it in enumerate(items) if _split_of(it) == sp]
        if idx:
            m = retrieval_metrics(np.asarray(img)[idx], [items[j] for j in idx], encode_text, conv, langs,
                                  colours=None if colours is None else np.asarray(colours)[idx], bank=bank)
            out[sp] = dict(m["languages"], n_photos=len(idx))
    return out


def zeroshot_categories(img: np.ndarray, items: list[dict], encode_text, names: dict | None = None, conv=None,
                        langs=LANGS, bank=None) -> dict:
    """Zero-shot classification of the photos (img (n, d), row j = items[j]) into their categories.

    Class embeddings: ``dcclip_core.zeroshot.class_embeddings(encode_text, names)`` with the bundled templates of
    each name's language (in ``bank``'s label space for a text-space model, as the Label tab does); zh_hant = the
    ZH names and templates converted to traditional characters. Returns
    {lang: {"n", "top1", "categories": {cat: {"n", "top1", "predicted": {cat: count}}}}}.
    """
    from dcclip_core.zeroshot import class_embeddings, templates
    names = names or CATEGORY_NAMES
    cats = list(names["en"])
    img = np.asarray(img, np.float32)
    truth = np.array([cats.index(it["category"]) if it["category"] in cats else -1 for it in items])
    out: dict = {}
    if not len(items):
        return out
    for lang in langs:
        if lang == "zh_hant":
            conv = conv or _converter()
            T = class_embeddings(encode_text, [conv.convert(n) for n in names["zh"]],
                                 [conv.convert(t) for t in templates("zh")], bank=bank)
        else:
            T = class_embeddings(encode_text, list(names[lang]), bank=bank)
        pred = np.argmax(img @ T.T, axis=1)
        per = {}
        for ci, c in enumerate(cats):
            sel = truth == ci
            if sel.any():
                got = pred[sel]
                per[c] = {"n": int(sel.sum()), "top1": float((got == ci).mean()),
                          "predicted": {cats[k]: int((got == k).sum()) for k in np.unique(got)}}
        known = truth >= 0
        out[lang] = {"n": int(known.sum()), "top1": float((pred[known] == truth[known]).mean()) if known.any()
                     else 0.0, "categories": per}
    return out


def _num(v, key: str, width: int = 6) -> str:
    if not isinstance(v, dict) or not v.get("n") or key not in v:
        return f"{'-':>{width}s}"
    return f"{v[key]:{width}.3f}"


def format_languages(systems: dict, retrieval: dict, langs=LANGS) -> str:
    """Rows = system x language, columns n R@1 R@5 R@10 MRR. systems: {key: label}; retrieval: {key: metrics or
    None} (metrics = retrieval_metrics output; None = not measured)."""
    w = max([len(lbl) for lbl in systems.values()] + [6])
    lines = [f"{'system':{w}s}  {'lang':8s} {'queries':>7s} {'R@1':>6s} {'R@5':>6s} {'R@10':>6s} {'MRR':>6s}"]
    for key, label in systems.items():
        m = retrieval.get(key)
        for lang in langs:
            v = (m or {}).get("languages", {}).get(lang)
            n = f"{v['n']:7d}" if v and v.get("n") else f"{'-':>7s}"
            lines.append(f"{label:{w}s}  {lang:8s} {n} {_num(v, 'recall@1')} {_num(v, 'recall@5')} "
                         f"{_num(v, 'recall@10')} {_num(v, 'mrr')}")
    return "\n".join(lines)


def format_categories(systems: dict, retrieval: dict, key: str = "recall@5", langs=("en", "zh"),
                      counts: dict | None = None) -> str:
    """Rows = categories (+ ALL), columns = ``key`` per language for each system (compact); counts = photos per
    category (shown when given)."""
    cats = sorted({c for m in retrieval.values() if m for c in m.get("categories", {})})
    counts = counts or {}
    if counts and "ALL" not in counts:
        counts = dict(counts, ALL=sum(counts.values()))
    cw = 7 * len(langs) - 1
    lines = [f"{'':10s} {'photos':>6s} " + " ".join(f"{k[:cw]:^{cw}s}" for k in systems),
             f"{'category':10s} {'':>6s} " + " ".join(" ".join(f"{lang:>6s}" for lang in langs) for _ in systems)]
    for c in cats + ["ALL"]:
        cells = []
        for k in systems:
            m = retrieval.get(k) or {}
            by_lang = m.get("languages", {}) if c == "ALL" else m.get("categories", {}).get(c, {})
            cells.append(" ".join(_num(by_lang.get(lang), key) for lang in langs))
        lines.append(f"{c:10s} {counts.get(c, ''):>6} " + " ".join(cells))
    return "\n".join(lines)


def format_zeroshot(systems: dict, zeroshot: dict, langs=LANGS) -> str:
    """Top-1 accuracy per language (one row per system), then per category (columns = system x en/zh)."""
    w = max([len(lbl) for lbl in systems.values()] + [6])
    shown = {k: lbl for k, lbl in systems.items() if zeroshot.get(k)}
    lines = [f"{'system':{w}s}  {'photos':>6s} " + " ".join(f"{lang:>8s}" for lang in langs)]
    for k, label in systems.items():
        z = zeroshot.get(k) or {}
        n = next((z[lang]["n"] for lang in langs if lang in z), None)
        lines.append(f"{label:{w}s}  {('-' if n is None else n):>6} " + " ".join(
            f"{z[lang]['top1']:8.3f}" if lang in z else f"{'-':>8s}" for lang in langs))
    if shown:
        lines.append("")
        per = ("en", "zh")
        lines.append(f"{'category':10s} {'photos':>6s} " + " ".join(f"{k[:8]:^13s}" for k in shown))
        lines.append(f"{'':10s} {'':>6s} " + " ".join(" ".join(f"{lang:>6s}" for lang in per) for _ in shown))
        found = {c for k in shown for lang in per for c in (zeroshot[k].get(lang) or {}).get("categories", {})}
        cats = [c for c in CATEGORY_NAMES["en"] if c in found] + sorted(found - set(CATEGORY_NAMES["en"]))
        for c in cats:
            n = next((zeroshot[k][lang]["categories"][c]["n"] for k in shown for lang in per
                      if c in zeroshot[k].get(lang, {}).get("categories", {})), "")
            cells = []
            for k in shown:
                for lang in per:
                    v = zeroshot[k].get(lang, {}).get("categories", {}).get(c)
                    cells.append(f"{v['top1']:6.3f}" if v else f"{'-':>6s}")
            lines.append(f"{c:10s} {n:>6} " + " ".join(" ".join(cells[i * 2:i * 2 + 2]) for i in range(len(shown))))
    return "\n".join(lines)


def format_columns(systems: dict, data: dict, columns: list[tuple[str, str, str]], count: str | None = "queries") -> str:
    """One row per system; columns = [(header, lang, metric key)] read from data[system][lang] (None = "-"); the
    ``count`` column (header ``count``, None = no column) is the n of the first column that has one."""
    w = max([len(lbl) for lbl in systems.values()] + [6])
    cw = len(count) if count else 0
    lines = [f"{'system':{w}s}  " + (f"{count} " if count else "") + " ".join(f"{h:>8s}" for h, _, _ in columns)]
    for k, label in systems.items():
        d = data.get(k) or {}
        n = next((d[lang]["n"] for _, lang, _ in columns if isinstance(d.get(lang), dict) and d[lang].get("n")), None)
        lines.append(f"{label:{w}s}  " + (f"{('-' if n is None else n):>{cw}} " if count else "") + " ".join(
            _num(d.get(lang), key, 8) for _, lang, key in columns))
    return "\n".join(lines)
