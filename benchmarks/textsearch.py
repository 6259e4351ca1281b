"""Text in photos, search side: ``python -m benchmarks textsearch [--quick] [--set DIR] [--json] [--out PATH]``.

Indexes the text set (benchmarks.textset: photos with rendered Chinese / English text, real signs, photos
without text) and the held-out realistic photos (assets/data/heldout_photos.json) the way a user does
(``build_index`` then the text pass), then measures with each fusion of index.textsearch ("none" = the image
alone, "score", "rrf"):

* recall@1 / @5 per query type of the set (exact English / Chinese words, traditional <-> simplified,
  cross-language) — targets: exact R@1 >= 0.9, trad <-> simp >= 0.9, cross-language R@5 >= 0.6;
* false positives: how many photos WITHOUT text get a text result for common words ("the", "的", ...), and
  how many lines the reader found in photos without text at all;
* the held-out queries (pictures, not words: "a cat on a sofa", "城市夜景") R@5 per language — the image-only
  search must not get worse;
* the text pass's cost per photo with / without text on this set (2 cores; 12 MP costs: ``benchmarks ocr``)
  and the query latency.

EVALUATION ONLY: nothing here is tuned on these photos; the fusion weights and floors in index.textsearch were
set from text alone (see its docstring) and the method chosen by this report.
"""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from .common import cache_dir, markdown_table, publish

FUSIONS = ("none", "score", "rrf")


def add_arguments(p) -> None:
    p.add_argument("--quick", action="store_true", help="a quarter of the set, no held-out photos")
    p.add_argument("--set", default=None, help="text set folder (default: built in the benchmark cache)")
    p.add_argument("--workers", type=int, default=2, help="text pass readers (one ONNX thread each)")
    p.add_argument("--big-set", default=None, help="12 MP text set folder for the pass's cost (default: built "
                                                    "in the benchmark cache at half the set's size)")
    p.add_argument("--json", action="store_true", help="print JSON instead of the tables")
    p.add_argument("--out", default=None, help="JSON path ('-': none; default benchmarks/results/textsearch.json)")


def _index(folder: Path, db: Path, model, workers: int) -> dict:
    from index import build_index
    from index.textpass import read_texts
    t0 = time.perf_counter()
    img = build_index(folder, db, model=model)
    t1 = time.perf_counter()
    txt = read_texts(db, model=model, workers=workers)
    return {"image_s": round(t1 - t0, 2), "text_s": round(time.perf_counter() - t1, 2), "photos": img["images"],
            "text": txt}


def _recall(searcher, queries: list[dict], fusion: str, k: int = 5) -> dict:
    """R@1, R@5 and MRR of queries [{"query", "target" (file name)}] over the indexed set."""
    searcher.text_fusion = fusion
    ranks = []
    for q in queries:
        names = [Path(r["path"]).name for r in searcher.search(q["query"], k=50)]
        ranks.append(names.index(q["target"]) + 1 if q["target"] in names else 10 ** 6)
    r = np.asarray(ranks)
    return {"n": len(r), "r1": round(float((r <= 1).mean()), 3), f"r{k}": round(float((r <= k).mean()), 3),
            "mrr": round(float((1.0 / r).mean()), 3)}


def _false_positives(searcher, words: list[str], no_text: set[str]) -> dict:
    """Per common word: photos without text that come back with a text match (any kind), over the top 20."""
    searcher.text_fusion = "score"
    out = {}
    for w in words:
        res = searcher.search(w, k=20)
        out[w] = sum(1 for r in res if "text_match" in r and Path(r["path"]).name in no_text)
    return out


def _pass_cost(db: Path) -> dict:
    """Mean seconds the text pass spent per photo with and without text (its own record)."""
    from index import PhotoDB
    with PhotoDB(db, create=False) as d:
        rows = d.text_read_times()
    by = {"with_text": [sec for st, sec in rows if st in ("text", "capped")],
          "no_text": [sec for st, sec in rows if st == "none"]}
    return {k: {"photos": len(v), "mean_ms": round(1000 * float(np.mean(v)), 1) if v else None} for k, v in by.items()}


def _throughput(model, manifest: dict, set_dir: Path, work: Path, workers: int) -> dict:
    """The text pass as it runs (``workers`` readers of one ONNX thread each on this machine's cores): wall
    seconds per photo over the photos without text and over those with text, each group indexed on its own."""
    import os
    from index import build_index
    from index.textpass import read_texts
    out = {}
    for group, kinds in (("no_text", ("none",)), ("with_text", ("rendered", "real"))):
        folder = work / f"pass-{group}"
        folder.mkdir(parents=True, exist_ok=True)
        for p in manifest["photos"]:
            if p["kind"] in kinds and not (folder / p["file"]).exists():
                os.symlink(set_dir / p["file"], folder / p["file"])
        db = work / f"pass-{group}.db"
        for f in work.glob(f"pass-{group}.db*"):
            f.unlink()
        build_index(folder, db, model=model)
        t0 = time.perf_counter()
        st = read_texts(db, model=model, workers=workers)
        wall = time.perf_counter() - t0
        out[group] = {"photos": st["read"], "ms_per_photo": round(1000 * wall / max(1, st["read"]), 1),
                      "found_text": st["with_text"]}
    return out


def _heldout(model, work: Path, workers: int) -> dict:
    """The held-out queries through the Searcher with each fusion: R@5 per language (installed photos)."""
    import os
    import shutil
    from index.search import Searcher
    from training.heldout import load_items
    items = [it for it in load_items() if os.path.isfile(it["path"])]
    if not items:
        return {"skipped": "held-out photos not installed (see training/heldout.py)"}
    folder = work / "heldout"
    folder.mkdir(parents=True, exist_ok=True)
    names = {}
    for it in items:                               # one flat folder; names by id keep the targets unique
        dst = folder / f"{it['id']}{Path(it['path']).suffix.lower()}"
        if not dst.exists():
            shutil.copy(it["path"], dst)
        names[it["id"]] = dst.name
    db = work / "heldout.db"
    for f in work.glob("heldout.db*"):                 # read afresh: the pass's cost is part of the report
        f.unlink()
    built = _index(folder, db, model, workers)
    s = Searcher(db, model=model)
    out = {"photos": len(items), "index": built, "pass_cost": _pass_cost(db)}
    for lang in ("en", "zh"):
        qs = [{"query": q, "target": names[it["id"]]} for it in items for q in it["queries"][lang]]
        out[lang] = {f: _recall(s, qs, f) for f in FUSIONS}
    s.close()
    return out


def _big_throughput(model, args, work: Path) -> dict:
    """``_throughput`` on the 12 MP version of the set (the photos a phone takes)."""
    from .textset import ensure_textset
    big_dir = Path(args.big_set) if args.big_set else work / "set-12mp"
    m = ensure_textset(big_dir, n_scale=0.5, big=True)
    return _throughput(model, m, big_dir, work / "12mp", args.workers)


def run(args) -> int:
    import dcclip_core
    from index.search import Searcher
    from .textset import ensure_textset, photo_paths, queries_by_type
    t0 = time.perf_counter()
    log = lambda m: print(m, flush=True)
    work = cache_dir() / ("textsearch-quick" if args.quick else "textsearch")
    set_dir = Path(args.set) if args.set else work / "set"
    manifest = ensure_textset(set_dir, n_scale=0.25 if args.quick else 1.0, progress=None)
    model = dcclip_core.load()
    db = work / "set.db"
    for p in work.glob("set.db*"):
        p.unlink()
    log(f"indexing {len(photo_paths(manifest, set_dir))} photos of the text set (image pass, then text pass)")
    built = _index(set_dir, db, model, args.workers)
    s = Searcher(db, model=model)
    from dcclip_core.dictionary import translations
    translations("ticket"), translations("车票")  # the dictionary parsed before any timing
    by_type = queries_by_type(manifest)
    recall = {t: {f: _recall(s, qs, f) for f in FUSIONS} for t, qs in by_type.items()}
    no_text = {p["file"] for p in manifest["photos"] if p["kind"] == "none"}
    with_lines = {r for r in no_text if s.text_of(set_dir / r)["lines"]}
    fp = _false_positives(s, manifest["common_words"], no_text)
    s.text_fusion = "score"
    lat = []
    for q in [q["query"] for qs in by_type.values() for q in qs][:60]:
        t = time.perf_counter()
        s.search(q, k=20)
        lat.append(1000 * (time.perf_counter() - t))
    s.close()
    res = {"suite": "textsearch", "quick": bool(args.quick), "set": str(set_dir), "index": built,
           "workers": args.workers,
           "pass_cost": _pass_cost(db), "recall": recall,
           "no_text_photos": len(no_text), "no_text_photos_with_lines": sorted(with_lines),
           "false_positives": fp, "query_ms": {"median": round(float(np.median(lat)), 2),
                                               "p95": round(float(np.percentile(lat, 95)), 2)},
           "heldout": {} if args.quick else _heldout(model, work, args.workers),
           "throughput": {} if args.quick else _big_throughput(model, args, work),
           "seconds": round(time.perf_counter() - t0, 1)}
    return publish("textsearch", args, res, report, log)


def report(res: dict) -> str:
    out = ["## Text in photos: search (`python -m benchmarks textsearch`)", ""]
    rows = [[t] + [f"{v[f]['r1']:.2f} / {v[f]['r5']:.2f}" for f in FUSIONS] + [v["score"]["n"]]
            for t, v in res["recall"].items()]
    out += ["Recall@1 / @5 per query type, by fusion:", "",
            markdown_table(["query type", *FUSIONS, "queries"], rows), ""]
    fp = res["false_positives"]
    out += [f"Photos without text: {res['no_text_photos']}; the reader found lines in "
            f"{len(res['no_text_photos_with_lines'])} of them. Photos without text returned with a text match for "
            f"a common word (top 20): {sum(fp.values())} over {len(fp)} words "
            f"({', '.join(f'{w}: {n}' for w, n in fp.items() if n) or 'none'}).", ""]
    pc = res["pass_cost"]
    out += [f"Text pass on this set: {pc['no_text']['mean_ms']} ms per photo without text "
            f"({pc['no_text']['photos']}), {pc['with_text']['mean_ms']} ms with text ({pc['with_text']['photos']}); "
            f"image pass {res['index']['image_s']} s, text pass {res['index']['text_s']} s. Query "
            f"{res['query_ms']['median']} ms median, {res['query_ms']['p95']} ms p95.", ""]
    tp = res.get("throughput") or {}
    if tp:
        out += [f"Text pass on 12 MP photos ({res.get('workers', 2)} readers, one thread each, wall time): "
                f"{tp['no_text']['ms_per_photo']} ms per photo without text ({tp['no_text']['photos']}), "
                f"{tp['with_text']['ms_per_photo']} ms per photo with text ({tp['with_text']['photos']}; text found "
                f"in {tp['with_text']['found_text']}). Targets: 150 / 1500 ms.", ""]
    h = res.get("heldout") or {}
    if "en" in h:
        rows = [[lang] + [f"{h[lang][f]['r5']:.3f}" for f in FUSIONS] for lang in ("en", "zh")]
        out += [f"Held-out photos ({h['photos']}), picture queries, recall@5 by fusion:", "",
                markdown_table(["language", *FUSIONS], rows), "",
                f"Text pass on them: {round(1000 * h['index']['text_s'] / max(1, h['photos']))} ms per photo (wall, "
                f"{h['index']['text']['with_text']} with text); one photo at a time "
                f"{h['pass_cost']['no_text']['mean_ms']} ms without text, {h['pass_cost']['with_text']['mean_ms']} ms "
                "with text.", ""]
    elif h:
        out += [f"Held-out: {h.get('skipped')}", ""]
    return "\n".join(out)
