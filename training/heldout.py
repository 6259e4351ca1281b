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
    import opencc
    conv = opencc.OpenCC("s2twp")
    img = np.asarray(model.encode_image([it["path"] for it in present]), np.float32)
    cats = sorted({it["category"] for it in present})
    for lang in LANGS:
        texts, target, cat = [], [], []
        for j, it in enumerate(present):
            for q in _queries(it, lang, conv):
                texts.append(q)
                target.append(j)
                cat.append(it["category"])
        txt = np.asarray(model.encode_text(texts), np.float32)
        S = txt @ img.T
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
