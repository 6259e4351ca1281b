"""Encoder benchmark: our model vs a CLIP ViT-B/32 reference, fp32 and int8, at 1 and 2 threads.

    python -m benchmarks encoders [--quick] [--model default] [--out benchmarks/results/encoders.json]

Images: end-to-end images/s on real ~12 MP JPEGs (decode with ``dcclip_core.preprocess.load_image`` +
``to_pixels`` for every model, batch 16; decoding runs on as many worker threads as the encoder gets),
plus decode-only and encoder-only images/s (pre-decoded pixels) so the split is visible.
Text: one query at a time (as search does), tokenisation included, on 200 short English/Chinese queries.
"""
from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import logging
import sys
import time
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .common import (REPO_DIR, bench_photos, file_mb, image_decoder, make_session, markdown_table, median,
                     publish, timed)

BATCH = 16
TARGET = 5.0

_SUBJECTS = [("cat", "猫"), ("dog", "狗"), ("bicycle", "自行车"), ("mountain lake", "山间湖泊"),
             ("birthday cake", "生日蛋糕"), ("red car", "红色汽车"), ("beach at sunset", "日落时的海滩"),
             ("old temple", "古老的寺庙"), ("bowl of noodles", "一碗面条"), ("cherry blossoms", "樱花"),
             ("city skyline", "城市天际线"), ("child playing football", "踢足球的孩子"), ("cup of coffee", "一杯咖啡"),
             ("snowy forest", "雪中的森林"), ("fireworks", "烟花"), ("horse", "马"), ("bridge", "桥"),
             ("birds on a wire", "电线上的鸟"), ("wedding dress", "婚纱"), ("panda", "熊猫")]
_TEMPLATES = [("a photo of a {}", "一张{}的照片"), ("{}", "{}"), ("my {} last summer", "去年夏天的{}"),
              ("a {} at night", "夜晚的{}"), ("close-up of the {}", "{}的特写")]


def queries(n: int) -> list[str]:
    """``n`` short queries, English and Chinese interleaved (200 distinct ones)."""
    out = []
    for en_t, zh_t in _TEMPLATES:
        for en, zh in _SUBJECTS:
            out += [en_t.format(en), zh_t.format(zh)]
    return out[:n]


# ---- what gets measured -------------------------------------------------------------------------------
@dataclass
class ImageEncoder:
    model: str                  # "ours" / "ViT-B/32"
    precision: str              # fp32 / int8
    path: Path
    input: str
    size: int
    mean: list
    std: list
    head: object = None         # ours, text space: the concept bank's numpy head after the graph (part of the cost)


@dataclass
class TextEncoder:
    model: str
    precision: str
    path: Path
    encode: object = None       # callable(threads) -> callable(list[str]) (built lazily per thread count)


@dataclass
class Ours:
    status: str                                   # "measured" or why it was skipped
    info: dict = field(default_factory=dict)
    images: list = field(default_factory=list)
    texts: list = field(default_factory=list)


def _precision(fname: str, default: str = "shipped") -> str:
    n = fname.lower()
    return "int8" if ("int8" in n or "qdq" in n or "quant" in n) else "fp32" if "fp32" in n else default


def _sha(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while b := f.read(1 << 20):
            h.update(b)
    return h.hexdigest()


def find_ours(name: str, build_dir: Path | None, log) -> Ours:
    """Our model's image/text ONNX variants: what ships, plus fp32/int8 siblings if the config (or the
    export's build dir, when its copy of the shipped file is byte-identical) has them."""
    d = Path(name) if (Path(name) / "config.json").is_file() else REPO_DIR / "assets" / "models" / name
    cfg_path = d / "config.json"
    if not cfg_path.is_file():
        return Ours(f"skipped: no model at {cfg_path} (being built? run `python -m training build-default`, "
                    f"or pass --model PATH)")
    cfg = json.loads(cfg_path.read_text(encoding="utf-8"))
    files = cfg.get("files", {})
    img_cfg = cfg.get("image", {})
    size = int(img_cfg.get("image_size", 224))
    mean, std = img_cfg.get("mean", [0.498] * 3), img_cfg.get("std", [0.502] * 3)
    try:
        shown = str(d.resolve().relative_to(REPO_DIR))
    except ValueError:
        shown = str(d)
    ours = Ours("measured", info={"id": cfg.get("id"), "name": cfg.get("name"), "path": shown,
                                  "embed_dim": cfg.get("embed_dim"), "files": files})

    def variants(role: str) -> dict[str, Path]:
        out: dict[str, Path] = {}
        if role in files:
            shipped = d / files[role]
            out[_precision(files[role])] = shipped
            if build_dir and (build_dir / shipped.name).is_file() and _sha(build_dir / shipped.name) == _sha(shipped):
                for p in sorted(build_dir.glob(f"{shipped.name.split('.')[0]}.*.onnx")):
                    out.setdefault(_precision(p.name, p.stem), p)
        for prec in ("fp32", "int8"):
            if f"{role}_{prec}" in files:
                out[prec] = d / files[f"{role}_{prec}"]
        order = {"fp32": 0, "int8": 1}
        return {k: v for k, v in sorted(out.items(), key=lambda kv: order.get(kv[0], 2)) if v.is_file()}

    head = None
    if (d / "concepts.json").is_file():
        from dcclip_core.concepts import ConceptBank
        head = ConceptBank.load(d)
    for prec, p in variants("image_onnx").items():
        ours.images.append(ImageEncoder("ours", prec, p, "pixels", size, mean, std, head))
    try:
        from dcclip_core.runtime import Model
    except Exception as e:                                   # tokenizer/preprocess not importable yet
        ours.status = f"measured, image only: text skipped, dcclip_core.runtime does not import ({e})"
        log(f"ours: {ours.status}")
        Model = None
    if Model is not None:
        for prec, p in variants("text_onnx").items():
            def make(threads: int, _p=p):
                m = Model(d, threads=threads)
                if _p.name != files.get("text_onnx"):
                    m.config = dataclasses.replace(m.config, files={**m.config.files, "text_onnx": str(_p.resolve())})
                return lambda texts: m.encode_text(texts)
            ours.texts.append(TextEncoder("ours", prec, p, make))
    if not ours.images and not ours.texts:
        ours.status = f"skipped: {cfg_path} lists no image_onnx/text_onnx files that exist"
    return ours


# ---- measurements -------------------------------------------------------------------------------------
def _decode_batches(paths, enc: ImageEncoder, pool, load_image, to_pixels):
    def one(p):
        return to_pixels(load_image(p, target_size=enc.size), enc.size, enc.mean, enc.std)
    for i in range(0, len(paths), BATCH):
        yield np.stack(list(pool.map(one, paths[i:i + BATCH])))                   # (b, 3, S, S)


def bench_images(encoders: list[ImageEncoder], photos: list[Path], threads: int, repeats: int, log) -> list[dict]:
    load_image, to_pixels, _ = image_decoder()
    rows = []
    pixels_cache: dict[tuple, list[np.ndarray]] = {}
    decode_ips: dict[tuple, float] = {}
    with ThreadPoolExecutor(threads) as pool:
        for enc in encoders:
            key = (enc.size, tuple(enc.mean), tuple(enc.std))
            if key not in pixels_cache:                                 # decode-only, once per preprocessing
                run = lambda: list(_decode_batches(photos, enc, pool, load_image, to_pixels))
                pixels_cache[key] = run()
                decode_ips[key] = len(photos) / median(timed(run, repeats, warmup=0))
            batches = pixels_cache[key]
            sess = make_session(enc.path, threads)
            if enc.head is None:
                feed = lambda px: sess.run(None, {enc.input: px})
            else:                   # what Model.encode_pixels + photo_colours do for the index
                def feed(px, bank=enc.head, sess=sess, enc=enc):
                    f, logits = sess.run(["features", "logits"], {enc.input: px})
                    return (bank.embed(bank.weights(f, px, enc.mean, enc.std, logits=logits)),
                            bank.photo_colours(px, enc.mean, enc.std))
            t_enc = median(timed(lambda: [feed(b) for b in batches], repeats))
            t_e2e = median(timed(lambda: [feed(b) for b in _decode_batches(photos, enc, pool, load_image,
                                                                           to_pixels)], repeats, warmup=0))
            row = {"model": enc.model, "precision": enc.precision, "threads": threads,
                   "decode_img_s": round(decode_ips[key], 1), "encoder_img_s": round(len(photos) / t_enc, 1),
                   "end_to_end_img_s": round(len(photos) / t_e2e, 1),
                   "encoder_ms_img": round(t_enc / len(photos) * 1000, 2),
                   "end_to_end_ms_img": round(t_e2e / len(photos) * 1000, 2), "file": enc.path.name}
            log(f"  image {enc.model} {enc.precision} x{threads}: encoder {row['encoder_img_s']} img/s, "
                f"end-to-end {row['end_to_end_img_s']} img/s (decode alone {row['decode_img_s']})")
            rows.append(row)
    return rows


def bench_texts(encoders: list[TextEncoder], qs: list[str], threads: int, log) -> list[dict]:
    rows = []
    for enc in encoders:
        fn = enc.encode(threads)
        for q in qs[:5]:                                                # warm-up (session creation, caches)
            fn([q])
        times = []
        for q in qs:
            t0 = time.perf_counter()
            fn([q])
            times.append(time.perf_counter() - t0)
        ms = np.asarray(times) * 1000
        row = {"model": enc.model, "precision": enc.precision, "threads": threads,
               "ms_query_median": round(float(np.median(ms)), 2), "ms_query_p90": round(float(np.percentile(ms, 90)), 2),
               "queries_s": round(len(qs) / float(np.sum(times)), 1), "file": enc.path.name}
        log(f"  text {enc.model} {enc.precision} x{threads}: {row['ms_query_median']} ms/query, "
            f"{row['queries_s']} queries/s")
        rows.append(row)
    return rows


def _reference_text(path: Path):
    from .reference import clip_standin_tokenize

    def make(threads: int):
        sess = make_session(path, threads)

        def encode(texts):
            ids, mask = clip_standin_tokenize(texts)                   # int64 (n, 77) each
            return sess.run(None, {"input_ids": ids, "attention_mask": mask})[0]
        return encode
    return make


# ---- ratios and report --------------------------------------------------------------------------------
def _get(rows, model, precision, threads):
    return next((r for r in rows if r["model"] == model and r["precision"] == precision
                 and r["threads"] == threads), None)


def ratios(img_rows, txt_rows, thread_counts, ours_image_prec, ours_text_prec) -> list[dict]:
    out = []
    for t in thread_counts:
        ref_i, our_i = _get(img_rows, "ViT-B/32", "int8", t), _get(img_rows, "ours", ours_image_prec, t)
        if ref_i and our_i:
            out.append({"what": f"images/s end-to-end, ours ({ours_image_prec}) ÷ ViT-B/32 int8", "threads": t,
                        "ratio": round(our_i["end_to_end_img_s"] / ref_i["end_to_end_img_s"], 2), "target": TARGET})
            out.append({"what": f"images/s encoder only, ours ({ours_image_prec}) ÷ ViT-B/32 int8", "threads": t,
                        "ratio": round(our_i["encoder_img_s"] / ref_i["encoder_img_s"], 2), "target": None})
            out.append({"what": "ceiling of the end-to-end ratio: decode alone ÷ ViT-B/32 int8 end-to-end",
                        "threads": t, "ratio": round(our_i["decode_img_s"] / ref_i["end_to_end_img_s"], 2),
                        "target": None})
        ref_t, our_t = _get(txt_rows, "CLIP text 12L", "int8", t), _get(txt_rows, "ours", ours_text_prec, t)
        if ref_t and our_t:
            out.append({"what": f"ms/query, CLIP text 12L int8 ÷ ours ({ours_text_prec})", "threads": t,
                        "ratio": round(ref_t["ms_query_median"] / our_t["ms_query_median"], 2), "target": TARGET})
    for r in out:
        r["meets_target"] = None if r["target"] is None else r["ratio"] >= r["target"]
    return out


def report(res: dict) -> str:
    parts = [f"### Images ({res['settings']['photos']} real photos, 4000×3000 JPEG q90, batch {BATCH})", "",
             markdown_table(["model", "precision", "threads", "decode img/s", "encoder img/s", "end-to-end img/s",
                             "end-to-end ms/img"],
                            [[r["model"], r["precision"], r["threads"], r["decode_img_s"], r["encoder_img_s"],
                              r["end_to_end_img_s"], r["end_to_end_ms_img"]] for r in res["image"]]),
             "", f"### Text ({res['settings']['queries']} EN/ZH queries, one at a time, tokenisation included)", "",
             markdown_table(["model", "precision", "threads", "ms/query (median)", "ms/query (p90)", "queries/s"],
                            [[r["model"], r["precision"], r["threads"], r["ms_query_median"], r["ms_query_p90"],
                              r["queries_s"]] for r in res["text"]]),
             "", "### Files", "",
             markdown_table(["model", "tower", "precision", "file", "MB"],
                            [[f["model"], f["tower"], f["precision"], f["file"], f["mb"]] for f in res["files"]])]
    if res["ratios"]:
        parts += ["", "### Ratios", "",
                  markdown_table(["ratio", "threads", "value", "target", "met"],
                                 [[r["what"], r["threads"], r["ratio"], None if r["target"] is None else f"≥ {r['target']:g}×",
                                   {True: "yes", False: "NO", None: "—"}[r["meets_target"]]] for r in res["ratios"]])]
    if res["ours"]["status"] != "measured":
        parts += ["", f"Our model: {res['ours']['status']}"]
    return "\n".join(parts)


# ---- CLI ----------------------------------------------------------------------------------------------
def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--quick", action="store_true", help="smoke test: 16 photos, 40 queries, 1 repeat")
    p.add_argument("--model", default="default",
                   help="our model: a name under assets/models/ or a model directory (default: %(default)s)")
    p.add_argument("--build-dir", type=Path, default=REPO_DIR / "build" / "default",
                   help="export work dir with fp32/int8 siblings of the shipped ONNX files; used only when its "
                        "copy of the shipped file is byte-identical (default: build/default)")
    p.add_argument("--threads", default="1,2", help="intra-op thread counts to measure (default: %(default)s)")
    p.add_argument("--photos", type=int, help="number of photos (default 48, --quick 16)")
    p.add_argument("--queries", type=int, help="number of text queries (default 200, --quick 40)")
    p.add_argument("--repeats", type=int, help="timed passes over the photos, median kept (default 3, --quick 1)")
    p.add_argument("--no-reference", action="store_true", help="measure only our model")
    p.add_argument("--out", type=Path,
                   help="JSON results (default: benchmarks/results/encoders.json; with --quick, "
                        "encoders-quick.json in the cache dir so a smoke test never overwrites real results); "
                        "'-' to skip writing")
    p.add_argument("--json", action="store_true", help="print the JSON results instead of the markdown tables")


def run(args: argparse.Namespace) -> int:
    t_start = time.perf_counter()
    log = lambda msg: print(msg, file=sys.stderr, flush=True)
    logging.getLogger().setLevel(logging.ERROR)                      # onnxruntime.quantization's root warnings
    warnings.filterwarnings("ignore")                                # torch tracer warnings during export
    n_photos = args.photos or (16 if args.quick else 48)
    n_queries = args.queries or (40 if args.quick else 200)
    repeats = args.repeats or (1 if args.quick else 3)
    thread_counts = [int(t) for t in str(args.threads).split(",") if t.strip()]

    photos = bench_photos(n_photos, progress=log)
    if len(photos) < n_photos:
        log(f"only {len(photos)} source photos found (asked for {n_photos})")
    qs = queries(n_queries)
    _, _, decoder = image_decoder()
    log(f"{len(photos)} photos, {len(qs)} queries, {repeats} repeat(s), threads {thread_counts}; decoder: {decoder}")

    images: list[ImageEncoder] = []
    texts: list[TextEncoder] = []
    files: list[dict] = []
    ref_notes = {}
    if not args.no_reference:
        from . import reference
        build_threads = max(thread_counts)
        vit = reference.vit_b32(photos[:16], threads=build_threads, log=log)
        txt = reference.clip_text(threads=build_threads, log=log)
        ref_notes = {"image": vit.to_dict()["notes"], "text": txt.to_dict()["notes"]}
        for prec in ("fp32", "int8"):
            images.append(ImageEncoder("ViT-B/32", prec, Path(vit.files[prec]), "pixels", 224,
                                       reference.CLIP_MEAN, reference.CLIP_STD))
            texts.append(TextEncoder("CLIP text 12L", prec, Path(txt.files[prec]), _reference_text(Path(txt.files[prec]))))

    ours = find_ours(args.model, args.build_dir, log)
    if ours.status.startswith("skipped"):
        log(f"ours: {ours.status}")
    images += ours.images
    texts += ours.texts
    for tower, encs in (("image", images), ("text", texts)):
        files += [{"model": e.model, "tower": tower, "precision": e.precision, "file": e.path.name,
                   "mb": file_mb(e.path)} for e in encs]

    img_rows, txt_rows = [], []
    for t in thread_counts:
        log(f"threads = {t}")
        img_rows += bench_images(images, photos, t, repeats, log)
        txt_rows += bench_texts(texts, qs, t, log)

    shipped = lambda role: _precision(ours.info.get("files", {}).get(role, ""))
    res = {
        "suite": "encoders",
        "quick": bool(args.quick),
        "settings": {"photos": len(photos), "photo_size": "4000x3000 JPEG q90", "batch": BATCH,
                     "queries": len(qs), "repeats": repeats, "threads": thread_counts, "decoder": decoder,
                     "decode_workers": "same as threads", "timing": "median over repeats"},
        "image": img_rows,
        "text": txt_rows,
        "files": files,
        "ratios": ratios(img_rows, txt_rows, thread_counts, shipped("image_onnx"), shipped("text_onnx")),
        "ours": {"status": ours.status, **ours.info},
        "reference": ref_notes,
        "seconds": None,
    }
    res["seconds"] = round(time.perf_counter() - t_start, 1)
    return publish("encoders", args, res, report, log)
