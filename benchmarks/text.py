"""Text encoder: latency, throughput and batch invariance, now (one run per text) vs before (one shared run).

    python -m benchmarks text [--quick] [--threads 1,2] [--out benchmarks/results/text.json]

The shipped text tower is dynamic int8: activations are quantised with one scale per tensor, so when several
texts share one ONNX run (padded to the longest), every text moves the others' vectors. ``before`` is that
shared run (the runtime's old ``encode_text``: 64 texts per run), rebuilt here on the same session settings;
``now`` is ``dcclip_core.Model.encode_text`` (each distinct text alone at its own length, a list spread over
``threads`` workers). Per thread count: one query at a time (p50/p95, tokenisation included), a batch of 64
queries, and labelling (the 8 short templates x 10 labels that ``index.labels`` encodes). Timings are the
median over ``--repeats`` interleaved rounds (before/now alternate, so a busy machine hurts both alike).
Invariance: the real-photo queries of ``assets/data/real_photo_queries.json`` (en, zh, and zh-Hant by OpenCC)
encoded in batches of 8 / 64 / all vs one at a time: rows that differ, max |diff|, and how many rankings of
the 16 demo photos change (top-1, top-5 order).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

from .common import REPO_DIR, markdown_table, median, publish
from .encoders import queries

LABELS = ["cat", "dog", "beach", "birthday cake", "bicycle", "猫", "狗", "海滩", "生日蛋糕", "自行车"]
BATCHES = (8, 64)


def real_queries() -> list[str]:
    """The evaluation queries of the real test photos: en + zh as written, and zh converted to zh-Hant."""
    from dcclip_core.tokenizer import script_converter
    data = json.loads((REPO_DIR / "assets" / "data" / "real_photo_queries.json").read_text(encoding="utf-8"))
    per = data["queries"].values()
    en, zh = [t for q in per for t in q.get("en", [])], [t for q in per for t in q.get("zh", [])]
    s2t = script_converter("s2t")
    return en + zh + [s2t.convert(t) for t in zh]


def label_prompts() -> list[str]:
    from dcclip_core.zeroshot import fill, language_of, templates
    return [fill(t, lb) for lb in LABELS for t in templates(language_of(lb))]


def shared_run(model, threads: int, batch_size: int = 64):
    """The old ``encode_text``: ``batch_size`` texts per ONNX run, padded to the longest, intra-op ``threads``."""
    from dcclip_core.numeric import l2_normalize

    from .common import make_session
    sess = make_session(model.path / model.config.files["text_onnx"], threads)

    def encode(texts):
        out = []
        for i in range(0, len(texts), batch_size):
            ids, mask = model.tokenizer(texts[i:i + batch_size])                     # int64 (b, L) each
            (emb,) = sess.run(["embedding"], {"input_ids": ids, "attention_mask": mask})
            out.append(l2_normalize(emb))
        return np.concatenate(out) if out else np.zeros((0, model.dim), np.float32)
    return encode


# ---- measurements -------------------------------------------------------------------------------------
def _one_at_a_time(fn, qs) -> list[float]:
    times = []
    for q in qs:
        t0 = time.perf_counter()
        fn([q])
        times.append(time.perf_counter() - t0)
    return times


def _once(fn, texts) -> float:
    t0 = time.perf_counter()
    fn(texts)
    return time.perf_counter() - t0


def bench_speed(encoders: dict, qs: list[str], prompts: list[str], repeats: int, log) -> list[dict]:
    """encoders: {(variant, threads): fn}. Interleaved rounds; per round p50/p95 of single queries and one
    timed batch-64 and labelling call each; medians over rounds."""
    raw: dict = {k: {"p50": [], "p95": [], "b64": [], "labels": []} for k in encoders}
    batch = qs[:64]
    for fn in encoders.values():                                                 # warm-up: sessions, caches
        fn(batch)
        fn(prompts)
    for r in range(repeats):
        for key, fn in encoders.items():
            ms = np.asarray(_one_at_a_time(fn, qs)) * 1000
            raw[key]["p50"].append(float(np.median(ms)))
            raw[key]["p95"].append(float(np.percentile(ms, 95)))
            raw[key]["b64"].append(_once(fn, batch) * 1000)
            raw[key]["labels"].append(_once(fn, prompts) * 1000)
        log(f"  round {r + 1}/{repeats} done (load average {os.getloadavg()[0]:.1f})")
    rows = []
    for (variant, threads), v in raw.items():
        b64, lab = median(v["b64"]), median(v["labels"])
        rows.append({"variant": variant, "threads": threads, "ms_query_p50": round(median(v["p50"]), 3),
                     "ms_query_p95": round(median(v["p95"]), 3), "batch64_ms": round(b64, 1),
                     "batch64_texts_s": round(64e3 / b64, 1), "labels_ms": round(lab, 1),
                     "labels_texts": len(prompts)})
    return rows


def _rank_changes(A: np.ndarray, B: np.ndarray, ref: np.ndarray) -> tuple[int, int]:
    ra, rb = np.argsort(-(A @ ref.T), 1, kind="stable"), np.argsort(-(B @ ref.T), 1, kind="stable")   # (n, m)
    return int((ra[:, 0] != rb[:, 0]).sum()), int((ra[:, :5] != rb[:, :5]).any(1).sum())


def bench_invariance(encoders: dict, texts: list[str], photos: np.ndarray) -> list[dict]:
    """encoders: {variant: fn}. Batched vs one-at-a-time vectors of ``texts`` and rankings of ``photos``."""
    rows = []
    for variant, fn in encoders.items():
        alone = np.concatenate([fn([t]) for t in texts])                                          # (n, d)
        for bs in (*BATCHES, len(texts)):
            batched = np.concatenate([fn(texts[i:i + bs]) for i in range(0, len(texts), bs)])      # (n, d)
            diff = np.abs(batched - alone).max(1)
            top1, top5 = _rank_changes(batched, alone, photos)
            rows.append({"variant": variant, "batch": bs, "texts": len(texts),
                         "rows_differ": int((diff > 0).sum()), "max_abs_diff": float(diff.max()),
                         "min_cos": round(float((batched * alone).sum(1).min()), 6),
                         "top1_changed": top1, "top5_order_changed": top5, "photos": len(photos)})
    return rows


def padding_check(model, threads: int, texts=("cat", "猫", "a photo of a dog", "an astronaut"), L: int = 40) -> list[dict]:
    """Padding alone: a short text run by itself but padded to ``L`` tokens (as in a shared run with a long
    text) vs unpadded: max |diff| of its vector. ``now`` never pads, so it is the text's own vector."""
    from dcclip_core.tokenizer import PAD
    from .common import make_session
    sess = make_session(model.path / model.config.files["text_onnx"], threads)
    out = []
    for t in texts:
        ids, mask = model.tokenizer([t])                                                   # int64 (1, l) each
        pids, pmask = np.full((1, L), PAD, np.int64), np.zeros((1, L), np.int64)          # (1, L)
        pids[0, :ids.shape[1]], pmask[0, :ids.shape[1]] = ids[0], 1
        run = lambda i, m: sess.run(["embedding"], {"input_ids": i, "attention_mask": m})[0][0]
        out.append({"text": t, "tokens": int(ids.shape[1]), "padded_to": L,
                    "max_abs_diff": float(np.abs(run(pids, pmask) - run(ids, mask)).max())})
    return out


# ---- report -------------------------------------------------------------------------------------------
def report(res: dict) -> str:
    s = res["settings"]
    parts = [f"### Text encoder speed ({s['queries']} EN/ZH queries one at a time; batch = 64 queries; labels = "
             f"{s['label_texts']} prompts; median of {s['repeats']} interleaved rounds)", "",
             markdown_table(["variant", "threads", "ms/query p50", "ms/query p95", "batch-64 ms", "batch-64 texts/s",
                             "labels ms"],
                            [[r["variant"], r["threads"], r["ms_query_p50"], r["ms_query_p95"], r["batch64_ms"],
                              r["batch64_texts_s"], r["labels_ms"]] for r in res["speed"]]),
             "", f"### Batch invariance ({s['invariance_texts']} real-photo queries, batched vs alone; rankings of "
                 f"{s['photos']} demo photos)", "",
             markdown_table(["variant", "batch", "rows that differ", "max abs diff", "min cos", "top-1 changed",
                             "top-5 order changed"],
                            [[r["variant"], r["batch"], r["rows_differ"], f"{r['max_abs_diff']:.2e}", f"{r['min_cos']:.6f}",
                              r["top1_changed"], r["top5_order_changed"]] for r in res["invariance"]]),
             "", "### Padding alone (before: a text run by itself, padded as a shared run would pad it; now never pads)",
             "", markdown_table(["text", "tokens", "padded to", "max abs diff vs unpadded"],
                                [[p["text"], p["tokens"], p["padded_to"], f"{p['max_abs_diff']:.2e}"]
                                 for p in res["padding"]])]
    return "\n".join(parts)


# ---- CLI ----------------------------------------------------------------------------------------------
def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--quick", action="store_true", help="smoke test: 40 queries, 1 round")
    p.add_argument("--model", default="default", help="installed model name or model directory (default: %(default)s)")
    p.add_argument("--threads", default="1,2", help="thread counts to measure (default: %(default)s)")
    p.add_argument("--queries", type=int, help="queries timed one at a time per round (default 200, --quick 40)")
    p.add_argument("--repeats", type=int, help="interleaved rounds, median kept (default 5, --quick 1)")
    p.add_argument("--out", type=Path, help="JSON results (default benchmarks/results/text.json; --quick: "
                                            "text-quick.json in the cache dir); '-' to skip writing")
    p.add_argument("--json", action="store_true", help="print the JSON results instead of the tables")


def run(args: argparse.Namespace) -> int:
    import dcclip_core
    from dcclip_core.runtime import Model
    t_start = time.perf_counter()
    log = lambda msg: print(msg, file=sys.stderr, flush=True)
    qs = queries(args.queries or (40 if args.quick else 200))
    repeats = args.repeats or (1 if args.quick else 5)
    thread_counts = [int(t) for t in str(args.threads).split(",") if t.strip()]
    path = dcclip_core.model_dir(args.model)
    prompts = label_prompts()
    load_before = list(os.getloadavg())

    speed_encoders = {}
    for t in thread_counts:
        m = Model(path, threads=t)                    # a fresh object per thread count (dcclip_core.load caches)
        speed_encoders[("before: shared run", t)] = shared_run(m, t)
        speed_encoders[("now: one run per text", t)] = m.encode_text
    log(f"speed: {len(qs)} queries, batch 64, {len(prompts)} label prompts, threads {thread_counts}, "
        f"{repeats} round(s)")
    speed = bench_speed(speed_encoders, qs, prompts, repeats, log)

    m = Model(path, threads=max(thread_counts))
    shared = shared_run(m, max(thread_counts))
    demo = sorted(p for p in (REPO_DIR / "assets" / "demo").iterdir() if p.suffix.lower() == ".jpg")
    photos = m.encode_image(demo)                                                        # (16, d)
    texts = real_queries()
    log(f"invariance: {len(texts)} real-photo queries, {len(demo)} demo photos")
    invariance = bench_invariance({"before: shared run": shared, "now: one run per text": m.encode_text},
                                  texts, photos)
    res = {
        "suite": "text",
        "quick": bool(args.quick),
        "settings": {"model": m.info["id"], "text_onnx": m.config.files["text_onnx"], "queries": len(qs),
                     "label_texts": len(prompts), "labels": LABELS, "repeats": repeats, "threads": thread_counts,
                     "invariance_texts": len(texts), "photos": len(demo),
                     "timing": "median over interleaved rounds; single-query p50/p95 within a round",
                     "loadavg_before": [round(x, 2) for x in load_before]},
        "speed": speed,
        "invariance": invariance,
        "padding": padding_check(m, max(thread_counts)),
        "seconds": None,
    }
    res["settings"]["loadavg_after"] = [round(x, 2) for x in os.getloadavg()]
    res["seconds"] = round(time.perf_counter() - t_start, 1)
    return publish("text", args, res, report, log)
