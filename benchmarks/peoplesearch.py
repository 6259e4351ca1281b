"""People in search: ``python -m benchmarks peoplesearch [--weights 0,0.01,...] [--json] [--out PATH]``.

Indexes the held-out realistic photos (assets/data/heldout_photos.json; installed Debian packages, evaluation
only) the way a user does — image pass, text pass, face pass — and measures, for each weight of the people
signal (index.facesearch.SIGNAL_WEIGHT; 0 = the image tower alone):

* recall@5 of the held-out queries per split (dev: where the weight is chosen; test: the check) and language,
  over all queries, the queries of the "people" category, and the queries that ask for people
  (``asks_for``); and how many queries' target ranks worse than with the weight 0 ("nothing else drops");
* generic people queries ("a man", "一群人", "portrait of a woman", ...): how many of the top 5 are photos of
  people (the held-out "people" category) — precision@5 — per language.
"""
from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import numpy as np

from .common import cache_dir, markdown_table, publish

WEIGHTS = (0.0, 0.005, 0.01, 0.02, 0.03, 0.05)
GENERIC = {"en": ["a man", "a woman", "a person", "people", "a group of people", "portrait of a woman",
                  "portrait of a man", "friends together", "a couple", "a smiling man"],
           "zh": ["男人", "女人", "一个人", "人们", "一群人", "女人的肖像", "男人的肖像", "朋友们在一起", "情侣", "微笑的男人"]}


def add_arguments(p) -> None:
    p.add_argument("--weights", default=",".join(map(str, WEIGHTS)), help="people-signal weights to compare")
    p.add_argument("--quick", action="store_true", help="only the weights 0 and the shipped one")
    p.add_argument("--json", action="store_true", help="print JSON instead of the tables")
    p.add_argument("--out", default=None, help="JSON path ('-': none; default benchmarks/results/peoplesearch.json)")


def heldout_folder(work: Path) -> tuple[list[dict], dict[str, str], Path]:
    """The installed held-out photos copied into one flat folder under ``work`` (names by id keep targets unique):
    (items, {id: file name}, folder)."""
    from training.heldout import load_items
    items = [it for it in load_items() if os.path.isfile(it["path"])]
    folder = work / "heldout"
    folder.mkdir(parents=True, exist_ok=True)
    names = {}
    for it in items:
        dst = folder / f"{it['id']}{Path(it['path']).suffix.lower()}"
        if not dst.exists():
            shutil.copy(it["path"], dst)
        names[it["id"]] = dst.name
    return items, names, folder


def _ranks(searcher, queries: list[dict]) -> np.ndarray:
    out = []
    for q in queries:
        names = [Path(r["path"]).name for r in searcher.search(q["query"], k=50)]
        out.append(names.index(q["target"]) + 1 if q["target"] in names else 10 ** 6)
    return np.asarray(out)


def run(args) -> int:
    import dcclip_core
    from index import build_index
    from index.facepass import find_faces
    from index.facesearch import asks_for
    from index.search import Searcher
    from index.textpass import read_texts
    from training.heldout import split
    t0 = time.perf_counter()
    log = lambda m: print(m, flush=True)
    from index.facesearch import SIGNAL_WEIGHT
    weights = [0.0, SIGNAL_WEIGHT] if args.quick else [float(w) for w in str(args.weights).split(",")]
    work = cache_dir() / "peoplesearch"
    items, names, folder = heldout_folder(work)
    if not items:
        res = {"suite": "peoplesearch", "skipped": "held-out photos not installed (see training/heldout.py)",
               "seconds": 0.0}
        return publish("peoplesearch", args, res, report, log)
    model = dcclip_core.load()
    db = work / "heldout.db"
    for f in work.glob("heldout.db*"):
        f.unlink()
    log(f"indexing {len(items)} held-out photos (image, text and face passes)")
    build_index(folder, db, model=model)
    read_texts(db, model=model)
    faces = find_faces(db)
    s = Searcher(db, model=model)
    queries = [{"query": q, "target": names[it["id"]], "split": split(it), "lang": lang,
                "people": it["category"] == "people", "asks": asks_for(q) is not None}
               for it in items for lang in ("en", "zh") for q in it["queries"][lang]]
    people_photos = {names[it["id"]] for it in items if it["category"] == "people"}
    ranks, generic = {}, {}
    for w in weights:
        s.face_signal = w
        ranks[w] = _ranks(s, queries)
        generic[w] = {lang: float(np.mean([np.mean([Path(r["path"]).name in people_photos
                                                    for r in s.search(q, k=5)]) for q in qs]))
                      for lang, qs in GENERIC.items()}
    s.close()
    rows = {}
    for w in weights:
        r5 = ranks[w] <= 5
        worse = ranks[w] > ranks[weights[0]]
        cell = {}
        for sp in ("dev", "test"):
            for lang in ("en", "zh"):
                sel = [q["split"] == sp and q["lang"] == lang for q in queries]
                sel = np.asarray(sel)
                ppl = sel & np.asarray([q["people"] for q in queries])
                ask = sel & np.asarray([q["asks"] for q in queries])
                other = sel & ~np.asarray([q["people"] for q in queries])
                cell[f"{sp}/{lang}"] = {"all": round(float(r5[sel].mean()), 3),
                                        "people": round(float(r5[ppl].mean()), 3) if ppl.any() else None,
                                        "asks": round(float(r5[ask].mean()), 3) if ask.any() else None,
                                        "other": round(float(r5[other].mean()), 3),
                                        "worse": int(worse[sel].sum()), "queries": int(sel.sum()),
                                        "people_n": int(ppl.sum()), "asks_n": int(ask.sum())}
        rows[str(w)] = {"r5": cell, "generic_p5": {k: round(v, 3) for k, v in generic[w].items()},
                        "all_r5": {lang: round(float(r5[np.asarray([q["lang"] == lang for q in queries])].mean()), 3)
                                   for lang in ("en", "zh")}}
    res = {"suite": "peoplesearch", "photos": len(items), "people_photos": len(people_photos),
           "face_pass": faces, "queries": len(queries), "weights": rows, "generic": GENERIC,
           "seconds": round(time.perf_counter() - t0, 1)}
    return publish("peoplesearch", args, res, report, log)


def report(res: dict) -> str:
    out = ["## People in search (`python -m benchmarks peoplesearch`)", ""]
    if "skipped" in res:
        return "\n".join(out + [res["skipped"], ""])
    fp = res["face_pass"]
    out += [f"Held-out photos: {res['photos']} ({res['people_photos']} of people); the face pass found "
            f"{fp['faces']} faces in {fp['with_faces']} photos ({fp['new_people'] + 0} people). "
            f"{res['queries']} queries.", ""]
    head = ["weight", "all EN / ZH"]
    for key in ("dev/en", "dev/zh", "test/en", "test/zh"):
        head.append(f"{key}: all · people · asks · other · worse")
    head.append("generic P@5 EN / ZH")
    rows = []
    for w, v in res["weights"].items():
        row = [w, f"{v['all_r5']['en']:.3f} / {v['all_r5']['zh']:.3f}"]
        for key in ("dev/en", "dev/zh", "test/en", "test/zh"):
            c = v["r5"][key]
            row.append(f"{c['all']:.3f} · {c['people'] if c['people'] is not None else '-'} · "
                       f"{c['asks'] if c['asks'] is not None else '-'} · {c['other']} · {c['worse']}")
        row.append(f"{v['generic_p5']['en']:.2f} / {v['generic_p5']['zh']:.2f}")
        rows.append(row)
    out += ["Recall@5 of the held-out queries by people-signal weight (people: the queries of the people "
            "category; asks: the queries that ask for people; other: the queries of every other category; worse: queries whose target ranks lower than at "
            "weight 0), and the share of people photos in the top 5 of generic people queries:", "",
            markdown_table(head, rows), ""]
    return "\n".join(out)
