"""Choose the concept mix (temperature, top-k, how much groups / learned heads / colours / attributes weigh) on
the held-out set's *dev* split only, and report the untouched *test* split beside it.

    python -m training.tune_mix [--model DIR] [--json]

Prints one row per setting tried (recall@5 EN / ZH on dev and on test). Each part is tried alone against the
plain class mix; ``training.build_default.MIX`` takes a part only where it raised dev recall@5 in both languages.
Needs the held-out photos installed (training/heldout.py names the packages).
"""
from __future__ import annotations

import argparse
import dataclasses
import json

import numpy as np

from dcclip_core.concepts import ranking_scores

GRID = [
    {}, {"temperature": 1.0}, {"temperature": 3.0}, {"top_k": 10}, {"top_k": 50},
    {"group_weight": 0.05}, {"group_weight": 0.15}, {"group_weight": 0.5},
    {"head_weight": 0.1}, {"head_weight": 0.3}, {"head_weight": 1.0},
    {"colour_weight": 0.02}, {"colour_weight": 0.05}, {"colour_weight": 0.15},
    {"attribute_weight": 0.05}, {"attribute_weight": 0.2},
    {"colour_boost": 0.0}, {"colour_boost": 0.03}, {"colour_boost": 0.3},
    {"colour_affinity": 0.2}, {"colour_affinity": 0.5},
]


def recall_at(model, V: np.ndarray, items: list[dict], idx: np.ndarray, k: int = 5,
              colours: np.ndarray | None = None) -> dict:
    """Recall@k per language of the queries of items[idx] ranked among all photos' vectors V (+ the query-aware
    colour term when the bank has a colour boost and ``colours`` (n, c) are given)."""
    out = {}
    for lang in ("en", "zh"):
        texts, target = [], []
        for j in idx:
            for q in items[j]["queries"][lang]:
                texts.append(q)
                target.append(j)
        q = model.encode_text(texts)
        S = ranking_scores(q, V, model.concept_bank, colours)
        t = np.asarray(target)
        pos = (S > S[np.arange(len(t)), t][:, None]).sum(1)
        out[lang] = round(float((pos < k).mean()), 3)
    return out


def run_grid(model, grid=GRID) -> list[dict]:
    import os

    from training.heldout import load_items, split
    bank = model.concept_bank
    items = [it for it in load_items() if os.path.isfile(it["path"])]
    px = np.stack([model.preprocess(it["path"]) for it in items])                 # (n, 3, S, S)
    _, feats = model.encode_pixels(px, return_features=True)                      # (n, F)
    dev = np.array([i for i, it in enumerate(items) if split(it) == "dev"])
    test = np.array([i for i, it in enumerate(items) if split(it) == "test"])
    base = dataclasses.replace(bank.mix)
    rows = []
    c = model.config.image
    try:
        for change in grid:
            bank.mix = dataclasses.replace(base, **change)
            V = bank.embed(bank.weights(feats, px, c.mean, c.std))
            col = bank.photo_colours(px, c.mean, c.std)
            rows.append({"change": change or "shipped mix", "dev": recall_at(model, V, items, dev, colours=col),
                         "test": recall_at(model, V, items, test, colours=col)})
    finally:
        bank.mix = base
    return rows


def main(argv=None) -> list[dict]:
    p = argparse.ArgumentParser(prog="python -m training.tune_mix", description=__doc__.splitlines()[0])
    p.add_argument("--model", default="default")
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    import dcclip_core
    model = dcclip_core.load(args.model)
    if model.concept_bank is None:
        raise SystemExit(f"{args.model}: not a text-space model (no concept bank)")
    rows = run_grid(model)
    if args.json:
        print(json.dumps(rows, ensure_ascii=False))
    else:
        print(f"{'setting':32s} {'dev EN':>7s} {'dev ZH':>7s} {'test EN':>8s} {'test ZH':>8s}")
        for r in rows:
            name = r["change"] if isinstance(r["change"], str) else ", ".join(f"{k}={v}" for k, v in r["change"].items())
            print(f"{name:32s} {r['dev']['en']:7.3f} {r['dev']['zh']:7.3f} {r['test']['en']:8.3f} {r['test']['zh']:8.3f}")
    return rows


if __name__ == "__main__":
    main()
