"""Text in photos, at the reader: how much of the text it finds and what it costs, for choosing ``GATE_SIDE``,
``READ_SIDE`` and ``MIN_CONF`` (``dcclip_core.ocr``).

    python -m benchmarks ocr [--set DIR] [--threads 1 2] [--repeats 3] [--quick] [--out PATH] [--json]

On the evaluation set of ``benchmarks.textset`` (built into the cache dir unless ``--set`` names one): photos
with an English / simplified / traditional Chinese phrase rendered on them, real photos of signs, photos without
text. A phrase is *found* when its normalised form (``dcclip_core.ocr.normalise``: what full-text search matches
on) is a substring of the photo's normalised lines joined by spaces; "found, spaces ignored" drops every space
from both first (OCR often reads "NO PARKING" as "NOPARKING"). CER is the character error rate of the phrase
against its best-matching stretch of the reading (edit distance / phrase length, spaces ignored, at most 1).
Real photos count each readable word listed in ``textset.REAL_WORDS`` once.

Measured (the sweeps on the largest ``--threads``):

* accuracy of the shipped settings, end to end (``read``: gate, then reading) per text kind and per size /
  angle / contrast / sign bucket;
* the gate at several sides: recall on photos with text (regions > 0), false-positive rate on photos without,
  ms (detector only, photo already decoded);
* the reading at several sides (gate skipped): found rate and ms of ``recognise``;
* MIN_CONF: one end-to-end reading at confidence 0.5, filtered at each threshold: found rate and lines read
  on photos without text (junk);
* cost per photo of ``read`` from the file (decoding included) with each thread count, photos with and without
  text, on the ~1600 px set and on its 12 MP version (targets: <= 150 ms without text, <= 1500 ms with).

Times are per photo the fastest of ``--repeats`` runs, the settings compared interleaved photo by photo (the
machine is shared: a busy spell then slows one run of every setting, not one setting); the load averages before
and after are in the JSON.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

from . import textset
from .common import cache_dir, markdown_table, publish

GATE_SIDES = (320, 480, 640)
READ_SIDES = (640, 960, 1280)
CONFS = (0.5, 0.65, 0.75, 0.85, 0.9, 0.95)
TARGET_MS = {"none": 150, "text": 1500}
BIG_N_SCALE = {"full": 0.5, "quick": 0.1}       # share of the set written at 12 MP for the cost table
QUICK_PHOTOS = {"rendered": 12, "real": 3, "none": 10}
KINDS = ("en", "zh-Hans", "zh-Hant", "real")
BUCKETS = (("size", "size_bucket"), ("angle", "angle_bucket"), ("contrast", "contrast"), ("sign", "plate"))


# ---- matching a reading against the known text ----------------------------------------------------------
def targets(photo: dict) -> list[str]:
    """What the reader should find in a photo: its phrase, or a real photo's readable words."""
    return list(photo["words"]) if photo["kind"] == "real" else [photo["text"]]


def cer(phrase: str, text: str) -> float:
    """Edit distance of ``phrase`` to its best-matching substring of ``text`` / len(phrase), capped at 1."""
    p, t = phrase.replace(" ", ""), text.replace(" ", "")
    if not p:
        return 0.0
    prev = np.zeros(len(t) + 1, np.int32)                    # row 0: the match may start anywhere in text
    for i, pc in enumerate(p, 1):
        cur = np.empty_like(prev)
        cur[0] = i
        for j, tc in enumerate(t, 1):
            cur[j] = min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (pc != tc))
        prev = cur
    return min(1.0, float(prev.min()) / len(p))


def score(photo: dict, lines: list[str]) -> list[dict]:
    """One record per target of ``photo``: found, found with spaces ignored, CER."""
    from dcclip_core.ocr import normalise
    text = normalise(" ".join(lines))
    out = []
    for t in targets(photo):
        nt = normalise(t)
        out.append({"found": nt in text, "found_nospace": nt.replace(" ", "") in text.replace(" ", ""),
                    "cer": cer(nt, text)})
    return out


def kind_of(photo: dict) -> str:
    return "real" if photo["kind"] == "real" else photo["lang"]


def _pct(xs) -> float | None:
    xs = list(xs)
    return round(100.0 * sum(map(bool, xs)) / len(xs), 1) if xs else None


def _mean(xs) -> float | None:
    xs = list(xs)
    return round(float(np.mean(xs)), 3) if xs else None


def _ms(seconds: list[float]) -> dict:
    ms = np.asarray(seconds) * 1000
    return {"ms_mean": round(float(ms.mean()), 1), "ms_p50": round(float(np.median(ms)), 1),
            "ms_p95": round(float(np.percentile(ms, 95)), 1)} if len(ms) else \
        {"ms_mean": None, "ms_p50": None, "ms_p95": None}


def summary(scored: list[dict]) -> dict:
    return {"targets": len(scored), "found_pct": _pct(s["found"] for s in scored),
            "found_nospace_pct": _pct(s["found_nospace"] for s in scored),
            "cer": _mean(s["cer"] for s in scored)}


# ---- readings -------------------------------------------------------------------------------------------
def _decode(path: Path, side: int):
    """A photo decoded as ``TextReader.read`` decodes it for a reading side (JPEG DCT-scaled)."""
    from dcclip_core.preprocess import load_image
    return load_image(path, target_size=side * 3 // 4)


def _fastest(calls: dict, repeats: int) -> dict:
    """{key: (result, seconds)}: each call of ``calls`` ({key: zero-argument function}) run ``repeats`` times,
    the keys interleaved (a busy spell of the machine hits every setting alike); fastest time, first result."""
    out: dict = {}
    for _ in range(repeats):
        for key, fn in calls.items():
            t0 = time.perf_counter()
            res = fn()
            dt = time.perf_counter() - t0
            out[key] = (out[key][0], min(out[key][1], dt)) if key in out else (res, dt)
    return out


def _record(photo: dict, reading, seconds: float) -> dict:
    return {"file": photo["file"], "kind": photo["kind"], "state": reading.state,
            "gate_regions": reading.gate_regions, "seconds": seconds,
            "lines": [[ln.text, ln.conf] for ln in reading.lines]}


def read_all(readers: dict, photos: list[dict], paths: list[Path], repeats: int, log) -> dict[object, list[dict]]:
    """``read`` of every photo by each reader ({key: TextReader}), interleaved: {key: [{"file", "kind", "state",
    "gate_regions", "seconds" (fastest of ``repeats``), "lines": [[text, conf]]}]}."""
    out: dict = {key: [] for key in readers}
    for i, (ph, path) in enumerate(zip(photos, paths)):
        runs = _fastest({key: (lambda r=r: r.read(path)) for key, r in readers.items()}, repeats)
        for key, (reading, secs) in runs.items():
            out[key].append(_record(ph, reading, secs))
        if (i + 1) % 25 == 0:
            log(f"    {i + 1}/{len(photos)} photos read")
    return out


def _kept(reading: dict, conf: float) -> list[str]:
    return [t for t, c in reading["lines"] if c >= conf]


# ---- measurements ---------------------------------------------------------------------------------------
def accuracy(photos: list[dict], readings: list[dict], conf: float) -> dict:
    """Found rate / CER per text kind and per bucket of the rendered photos, lines kept at ``conf``."""
    scored = [(ph, score(ph, _kept(r, conf)), r) for ph, r in zip(photos, readings) if ph["kind"] != "none"]
    kinds = []
    for k in KINDS:
        rows = [(ph, s, r) for ph, s, r in scored if kind_of(ph) == k]
        if rows:
            kinds.append({"kind": k, "photos": len(rows), **summary([x for _, s, _ in rows for x in s]),
                          "gate_passed_pct": _pct(r["gate_regions"] > 0 for _, _, r in rows)})
    buckets = []
    rendered = [(ph, s) for ph, s, _ in scored if ph["kind"] == "rendered"]
    for name, field in BUCKETS:
        for value in sorted({str(ph[field]) for ph, _ in rendered}):
            rows = [s for ph, s in rendered if str(ph[field]) == value]
            buckets.append({"bucket": name, "value": value, **summary([x for s in rows for x in s])})
    return {"conf": conf, "kinds": kinds, "buckets": buckets,
            "all_rendered": summary([x for _, s in rendered for x in s])}


def gate_sweep(photos: list[dict], paths: list[Path], sides, threads: int, repeats: int, log) -> list[dict]:
    """Gate recall on photos with text, false positives on photos without, detector ms, per gate side."""
    from dcclip_core.ocr import READ_SIDE, TextReader
    readers = {side: TextReader(threads=threads, gate_side=side) for side in sides}
    n: dict = {side: [] for side in sides}
    secs: dict = {side: [] for side in sides}
    for i, path in enumerate(paths):
        im = _decode(path, READ_SIDE)
        if i == 0:
            _fastest({side: (lambda r=r: r.regions(im)) for side, r in readers.items()}, 1)      # warm-up
        for side, (k, dt) in _fastest({side: (lambda r=r: r.regions(im)) for side, r in readers.items()},
                                      repeats).items():
            n[side].append(k)
            secs[side].append(dt)
    has = [ph["kind"] != "none" for ph in photos]
    small = [ph.get("size_bucket") == "small" for ph in photos]
    rows = []
    for side in sides:
        rows.append({"gate_side": side,
                     "recall_pct": _pct(k > 0 for k, h in zip(n[side], has) if h),
                     "recall_small_text_pct": _pct(k > 0 for k, s in zip(n[side], small) if s),
                     "false_positive_pct": _pct(k > 0 for k, h in zip(n[side], has) if not h),
                     **_ms(secs[side])})
        log(f"  gate {side}: recall {rows[-1]['recall_pct']} %, false positives {rows[-1]['false_positive_pct']} %, "
            f"{rows[-1]['ms_mean']} ms")
    return rows


def read_sweep(photos: list[dict], paths: list[Path], sides, threads: int, repeats: int, log) -> list[dict]:
    """``recognise`` (gate skipped) on the photos with text at each reading side: found rate, CER, ms."""
    from dcclip_core.ocr import TextReader
    readers = {side: TextReader(threads=threads, read_side=side) for side in sides}
    with_text = [(ph, p) for ph, p in zip(photos, paths) if ph["kind"] != "none"]
    scored: dict = {side: [] for side in sides}
    secs: dict = {side: [] for side in sides}
    for i, (ph, path) in enumerate(with_text):
        images = {side: _decode(path, side) for side in sides}
        calls = {side: (lambda side=side: readers[side].recognise(images[side])) for side in sides}
        if i == 0:
            _fastest(calls, 1)                                                                    # warm-up
        for side, ((lines, _), dt) in _fastest(calls, repeats).items():
            scored[side].append((ph, score(ph, [ln.text for ln in lines])))
            secs[side].append(dt)
    rows = []
    for side in sides:
        pick = lambda keep: [x for ph, s in scored[side] if keep(ph) for x in s]
        rows.append({"read_side": side, **summary(pick(lambda ph: True)),
                     "found_small_pct": summary(pick(lambda ph: ph.get("size_bucket") == "small"))["found_pct"],
                     "found_zh_pct": summary(pick(lambda ph: ph["lang"] in ("zh-Hans", "zh-Hant")))["found_pct"],
                     "found_real_pct": summary(pick(lambda ph: ph["kind"] == "real"))["found_pct"], **_ms(secs[side])})
        log(f"  read {side}: found {rows[-1]['found_pct']} %, {rows[-1]['ms_mean']} ms")
    return rows


def conf_sweep(photos: list[dict], readings: list[dict], confs) -> list[dict]:
    """Found rate and junk (lines on photos without text) when lines under each confidence are dropped."""
    rows = []
    for conf in confs:
        pairs = list(zip(photos, readings))
        rendered = [x for ph, r in pairs if ph["kind"] == "rendered" for x in score(ph, _kept(r, conf))]
        real = [x for ph, r in pairs if ph["kind"] == "real" for x in score(ph, _kept(r, conf))]
        junk = [len(_kept(r, conf)) for ph, r in pairs if ph["kind"] == "none"]
        rows.append({"min_conf": conf, "found_rendered_pct": summary(rendered)["found_pct"],
                     "found_real_pct": summary(real)["found_pct"], "cer_rendered": summary(rendered)["cer"],
                     "junk_lines": int(sum(junk)), "no_text_photos": len(junk),
                     "no_text_photos_with_lines_pct": _pct(n > 0 for n in junk),
                     "lines_on_text_photos": int(sum(len(_kept(r, conf)) for ph, r in pairs if ph["kind"] != "none"))})
    return rows


def cost(photos: list[dict], paths: list[Path], thread_counts, repeats: int, set_name: str, log) -> list[dict]:
    """``read`` from the file (decoding included) per photo, with and without text, per thread count."""
    from dcclip_core.ocr import MIN_CONF, TextReader
    readers = {t: TextReader(threads=t) for t in thread_counts}
    read_all(readers, photos[:2], paths[:2], 1, log)                                               # warm-up
    readings = read_all(readers, photos, paths, repeats, log)
    rows = []
    for t in thread_counts:
        for group, keep in (("none", lambda ph: ph["kind"] == "none"), ("text", lambda ph: ph["kind"] != "none")):
            sel = [(ph, r) for ph, r in zip(photos, readings[t]) if keep(ph)]
            ms = _ms([r["seconds"] for _, r in sel])
            found = summary([x for ph, r in sel if ph["kind"] != "none" for x in score(ph, _kept(r, MIN_CONF))])
            rows.append({"set": set_name, "threads": t, "photos": group, "n": len(sel), **ms,
                         "gate_fired_pct": _pct(r["gate_regions"] > 0 for _, r in sel),
                         "found_pct": found["found_pct"], "target_ms": TARGET_MS[group],
                         "meets_target": ms["ms_mean"] is not None and ms["ms_mean"] <= TARGET_MS[group]})
        log(f"  cost {set_name}, {t} thread(s): " + ", ".join(f"{r['photos']} {r['ms_mean']} ms"
                                                            for r in rows[-2:]))
    return rows


# ---- the sets -------------------------------------------------------------------------------------------
def quick_subset(photos: list[dict]) -> list[int]:
    """Indices of the first few photos of each kind (``QUICK_PHOTOS``), in manifest order."""
    taken = {k: 0 for k in QUICK_PHOTOS}
    keep = []
    for i, ph in enumerate(photos):
        if taken[ph["kind"]] < QUICK_PHOTOS[ph["kind"]]:
            taken[ph["kind"]] += 1
            keep.append(i)
    return keep


def load_set(directory: Path, n_scale: float, seed: int, big: bool, quick: bool, log) -> tuple[list, list]:
    """(photos, paths) of a set, built in ``directory`` unless a finished build with these settings is there."""
    log(f"text set ({'12 MP' if big else '~1600 px'}): {directory}")
    m = textset.ensure_textset(directory, n_scale=n_scale, seed=seed, big=big, progress=lambda msg: log("  " + msg))
    paths = textset.photo_paths(m, directory)
    keep = quick_subset(m["photos"]) if quick and not big else range(len(m["photos"]))
    return [m["photos"][i] for i in keep], [paths[i] for i in keep]


# ---- report ---------------------------------------------------------------------------------------------
def report(res: dict) -> str:
    s = res["settings"]
    acc = res["accuracy"]
    timing = f"ms: fastest of {s['repeats']} interleaved runs per photo, {s['threads_sweeps']} threads"
    parts = [f"### Reader accuracy, shipped settings (gate {s['gate_side']}, read {s['read_side']}, MIN_CONF "
             f"{acc['conf']}; {s['photos']} photos, {s['threads_sweeps']} threads)", "",
             markdown_table(["text", "photos", "targets", "found %", "found, spaces ignored %", "CER",
                             "gate passed %"],
                            [[k["kind"], k["photos"], k["targets"], k["found_pct"], k["found_nospace_pct"], k["cer"],
                              k["gate_passed_pct"]] for k in acc["kinds"]]),
             "", "#### Rendered phrases by bucket", "",
             markdown_table(["bucket", "value", "phrases", "found %", "found, spaces ignored %", "CER"],
                            [[b["bucket"], b["value"], b["targets"], b["found_pct"], b["found_nospace_pct"], b["cer"]]
                             for b in acc["buckets"]]),
             "", "### Gate (detector only, photo decoded; recall on photos with text, false positives on photos "
                 f"without; {timing})", "",
             markdown_table(["gate side", "recall %", "recall, small text %", "false positives %", "ms mean",
                             "ms p95"],
                            [[r["gate_side"], r["recall_pct"], r["recall_small_text_pct"], r["false_positive_pct"],
                              r["ms_mean"], r["ms_p95"]] for r in res["gate"]]),
             "", f"### Reading side (gate skipped; photos with text; {timing})", "",
             markdown_table(["read side", "found %", "spaces ignored %", "small text %", "Chinese %", "real %",
                             "CER", "ms mean", "ms p95"],
                            [[r["read_side"], r["found_pct"], r["found_nospace_pct"], r["found_small_pct"],
                              r["found_zh_pct"], r["found_real_pct"], r["cer"], r["ms_mean"], r["ms_p95"]]
                             for r in res["read"]]),
             "", f"### MIN_CONF (one end-to-end reading at {CONFS[0]}, filtered)", "",
             markdown_table(["min conf", "found % (rendered)", "found % (real words)", "CER (rendered)",
                             "junk lines (no-text photos)", "no-text photos with a line %", "lines on text photos"],
                            [[r["min_conf"], r["found_rendered_pct"], r["found_real_pct"], r["cer_rendered"],
                              r["junk_lines"], r["no_text_photos_with_lines_pct"], r["lines_on_text_photos"]]
                             for r in res["min_conf"]]),
             "", f"### Cost of `read` per photo from the file (decoding included; shipped settings; "
                 f"{os.cpu_count()} cores; fastest of {s['repeats']} runs, thread counts interleaved)", "",
             markdown_table(["set", "threads", "photos", "n", "ms mean", "ms p50", "ms p95", "gate fired %",
                             "found %", "target ms", "meets target"],
                            [[r["set"], r["threads"], r["photos"], r["n"], r["ms_mean"], r["ms_p50"], r["ms_p95"],
                              r["gate_fired_pct"], r["found_pct"], r["target_ms"], "yes" if r["meets_target"] else "no"]
                             for r in res["cost"]])]
    return "\n".join(parts)


# ---- CLI ------------------------------------------------------------------------------------------------
def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--quick", action="store_true",
                   help=f"smoke test: {sum(QUICK_PHOTOS.values())} photos, the shipped setting of each sweep, the "
                        "largest thread count")
    p.add_argument("--set", type=Path, help="text set directory (built there if it has no finished build; "
                                            "default: the cache dir)")
    p.add_argument("--big-set", type=Path, help="12 MP text set directory (default: the cache dir)")
    p.add_argument("--seed", type=int, default=0, help="text set seed (default: %(default)s)")
    p.add_argument("--threads", type=int, nargs="+", default=[1, 2],
                   help="thread counts for the cost table; the sweeps use the largest (default: 1 2)")
    p.add_argument("--repeats", type=int, help="timed runs per photo and setting, interleaved, fastest kept "
                                               "(default 3, --quick 1)")
    p.add_argument("--out", type=Path, help="JSON results (default benchmarks/results/ocr.json; --quick: "
                                            "ocr-quick.json in the cache dir); '-' to skip writing")
    p.add_argument("--json", action="store_true", help="print the JSON results instead of the tables")


def run(args: argparse.Namespace) -> int:
    import dcclip_core.ocr as ocr
    t_start = time.perf_counter()
    log = lambda msg: print(msg, file=sys.stderr, flush=True)
    load_before = list(os.getloadavg())
    threads = max(args.threads)
    repeats = args.repeats or (1 if args.quick else 3)
    size = "quick" if args.quick else "full"
    photos, paths = load_set(args.set or cache_dir() / f"textset-s{args.seed}", 1.0, args.seed, False,
                             args.quick, log)
    big_n = BIG_N_SCALE[size]
    big_photos, big_paths = load_set(args.big_set or cache_dir() / f"textset-big-s{args.seed}-n{big_n:g}", big_n,
                                     args.seed, True, args.quick, log)
    log(f"accuracy + MIN_CONF: {len(photos)} photos read end to end at confidence {CONFS[0]}")
    readings = read_all({"low": ocr.TextReader(threads=threads, min_conf=CONFS[0])}, photos, paths, 1, log)["low"]
    log(f"gate sweep (fastest of {repeats} interleaved runs per photo)")
    gate = gate_sweep(photos, paths, (ocr.GATE_SIDE,) if args.quick else GATE_SIDES, threads, repeats, log)
    log("reading-side sweep")
    read = read_sweep(photos, paths, (ocr.READ_SIDE,) if args.quick else READ_SIDES, threads, repeats, log)
    log("cost")
    thread_counts = [threads] if args.quick else sorted(set(args.threads), reverse=True)
    costs = (cost(photos, paths, thread_counts, repeats, "~1600 px", log)
             + cost(big_photos, big_paths, thread_counts, repeats, "12 MP", log))
    kinds = {k: sum(ph["kind"] == k for ph in photos) for k in ("rendered", "real", "none")}
    res = {
        "suite": "ocr",
        "quick": bool(args.quick),
        "settings": {"reader": ocr.reader_version(), "gate_side": ocr.GATE_SIDE, "read_side": ocr.READ_SIDE,
                     "min_conf": ocr.MIN_CONF, "photos": len(photos), "kinds": kinds,
                     "big_photos": len(big_photos), "threads_sweeps": threads, "threads_cost": thread_counts,
                     "repeats": repeats, "timing": "fastest of the interleaved repeats, per photo",
                     "seed": args.seed, "loadavg_before": [round(x, 2) for x in load_before]},
        "accuracy": accuracy(photos, readings, ocr.MIN_CONF),
        "gate": gate,
        "read": read,
        "min_conf": conf_sweep(photos, readings, CONFS),
        "cost": costs,
        "readings": readings,
        "seconds": None,
    }
    res["settings"]["loadavg_after"] = [round(x, 2) for x in os.getloadavg()]
    res["seconds"] = round(time.perf_counter() - t_start, 1)
    return publish("ocr", args, res, report, log)
