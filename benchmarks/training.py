"""Training benchmark: samples/s of each training stage on this machine, and what the teacher-feature cache saves.

    python -m benchmarks training [--quick] [--threads 2] [--out benchmarks/results/training.json]

Measured, each with the real code path (``training.cmd_distill.run_distill`` / ``training.cmd_align.run_align``):
* teacher forward (features into the float16 cache): EfficientNet-Lite2 on photo views, e5 on texts
* stage 1 image: EfficientNet-Lite0 student (the default model's tower) distilled from cached Lite2 features,
  fp32 and bf16 autocast; stage 1 text: the default 4-layer text student from cached e5 features
* stage 2: InfoNCE alignment, text student trained end to end, image tower frozen (embeddings computed once)
Student rates are steady-state: measured from the end of the first (warm-up) step to the last.

Cache speed-up: with the cache an epoch costs N / student_rate (the teacher ran once, up front); without it every
epoch also runs the teacher: N / teacher_rate + N / student_rate. Reported per epoch after the first and for a
3-epoch run (cache build included), from the measured rates.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path

from .common import results_path, cache_dir, markdown_table, source_photos, write_json


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--quick", action="store_true", help="smoke test: fewer photos, texts and steps")
    p.add_argument("--threads", type=int, default=2, help="torch threads (default: %(default)s)")
    p.add_argument("--photos", type=int, help="source photos (default 16, --quick 6)")
    p.add_argument("--views", type=int, default=4, help="augmented views per photo (default: %(default)s)")
    p.add_argument("--steps", type=int, help="timed optimizer steps per stage (default 6, --quick 2)")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--model", default="default", help="student model (installed name or directory)")
    p.add_argument("--out", type=Path, help="JSON results (default benchmarks/results/training.json; --quick: "
                   "the cache dir); '-' to skip writing")
    p.add_argument("--json", action="store_true", help="print the JSON instead of the tables")


def _texts(n: int) -> list[str]:
    from .encoders import queries
    base = queries(200)
    extra = [f"{q} {i}" for i in range(n // len(base) + 1) for q in base]
    return (base + extra)[:n]


def _steady_rate(run_dir: Path, per_step: int | None = None) -> float:
    """samples/s between the first and the last logged step (the first step pays for allocator warm-up)."""
    rows = [json.loads(ln) for ln in (run_dir / "metrics.jsonl").read_text().splitlines()]
    rows = [r for r in rows if "elapsed_s" in r]
    a, b = rows[0], rows[-1]
    if per_step is None:                                      # align logs cumulative samples
        return (b["samples"] - a["samples"]) / max(b["elapsed_s"] - a["elapsed_s"], 1e-9)
    return (b["step"] - a["step"]) * per_step / max(b["elapsed_s"] - a["elapsed_s"], 1e-9)


def _speedup(teacher_sps: float, student_sps: float, epochs: int = 3) -> dict:
    t, s = 1.0 / teacher_sps, 1.0 / student_sps             # seconds per sample
    return {"per_epoch": (t + s) / s, f"run_{epochs}_epochs": epochs * (t + s) / (t + epochs * s)}


def run(args: argparse.Namespace) -> int:
    import torch

    from dcclip_core.config import model_dir
    from training.align import AlignSettings, run_align
    from training.distill import DistillSettings, run_distill
    from training.data import AugmentConfig, FeatureCache, ImageViews, cache_key
    from training.ddp import bf16_supported
    log = lambda m: print(m, file=sys.stderr, flush=True)
    torch.set_num_threads(args.threads)
    n_photos = args.photos or (6 if args.quick else 16)
    steps = args.steps or (3 if args.quick else 6)
    B = args.batch_size
    work = cache_dir() / "training"
    shutil.rmtree(work / "runs", ignore_errors=True)
    (work / "photos").mkdir(parents=True, exist_ok=True)
    photos = []
    for i, p in enumerate(source_photos()[:n_photos]):
        dst = work / "photos" / f"{i:02d}_{p.name}"
        if not dst.exists():
            shutil.copy2(p, dst)
        photos.append(dst)
    try:
        mdir = model_dir(args.model)
    except Exception as e:
        log(f"no student model: {e}")
        return 2
    res: dict = {"threads": args.threads, "batch_size": B, "steps": steps, "photos": len(photos),
                 "views": args.views, "bf16_supported": bf16_supported(), "load_avg_start": os.getloadavg()}
    common = dict(threads=args.threads, max_steps=steps, batch_size=B, log_every=1, ckpt_every=10 ** 6,
                  warmup_steps=1)

    # ---- stage 1, image: teacher -> cache, then the student from the cache ------------------------------------
    from training.teachers.efficientnet import LiteTeacher
    layers = [[3, 3], [5, 5], [7, 7]]
    views = ImageViews(photos, args.views, AugmentConfig(size=224), seed=0).check()
    n_img = len(views)
    teacher = LiteTeacher("efficientnet-lite2", image_size=224)
    key = cache_key("efficientnet-lite2", 224, [3, 5, 7], "grid", 2, views.fingerprint())
    shutil.rmtree(work / "cache_image", ignore_errors=True)
    log(f"teacher: EfficientNet-Lite2 on {n_img} views")
    t0 = time.perf_counter()

    def compute(idx):
        px = torch.from_numpy(views.pixels(idx, 224, teacher.mean, teacher.std))
        return {k: v.numpy() for k, v in teacher.image_features(px, [3, 5, 7], "grid", 2).items()}
    FeatureCache.build(work / "cache_image" / "train", n_img, compute, key, chunk=B, progress=False)
    res["teacher_image_sps"] = n_img / (time.perf_counter() - t0)
    del teacher
    rows = [["teacher forward (cache fill)", "EfficientNet-Lite2, 224 px", "fp32", res["teacher_image_sps"]]]
    precisions = ["fp32"] + (["bf16"] if bf16_supported() else [])
    for prec in precisions:
        log(f"stage 1 image student, {prec}")
        r = run_distill(DistillSettings(modality="image", teacher="efficientnet-lite2", student=str(mdir),
                                        layers=layers, images=str(work / "photos"), views=args.views,
                                        cache=str(work / "cache_image"), out=str(work / "runs" / f"img_{prec}"),
                                        precision=prec, adapter_init="identity", **common), progress=False)
        assert r["teacher_cache_s"].get("train", 0) < 1.0, "the image cache should have been reused"
        res[f"stage1_image_{prec}_sps"] = _steady_rate(work / "runs" / f"img_{prec}", r["global_batch"])
        rows.append(["stage 1 distill (image)", "Lite0 student <- cached Lite2", prec, res[f"stage1_image_{prec}_sps"]])

    # ---- stage 1, text --------------------------------------------------------------------------------------
    from training.teachers import E5TextTeacher
    n_txt = 256 if args.quick else 1024
    texts = _texts(n_txt)
    (work / "texts.txt").write_text("\n".join(texts), encoding="utf-8")
    log(f"teacher: e5 on {n_txt} texts")
    e5 = E5TextTeacher()
    shutil.rmtree(work / "cache_text", ignore_errors=True)
    t_layers = [3, 6, 9, 12]
    t0 = time.perf_counter()
    FeatureCache.build(work / "cache_text" / "train", n_txt,
                       lambda idx: {k: v.numpy() for k, v in e5.text_features([texts[i] for i in idx], t_layers).items()},
                       cache_key("e5", t_layers, cache_key(texts)), chunk=64, progress=False)
    res["teacher_text_sps"] = n_txt / (time.perf_counter() - t0)
    del e5
    rows.append(["teacher forward (cache fill)", "multilingual-e5-small (12 layers)", "fp32", res["teacher_text_sps"]])
    tb = 64
    for prec in precisions:
        log(f"stage 1 text student, {prec}")
        r = run_distill(DistillSettings(modality="text", teacher="e5", student=str(mdir),
                                        layers=[[1, 3], [2, 6], [3, 9], [4, 12]], texts=[str(work / "texts.txt")],
                                        cache=str(work / "cache_text"), out=str(work / "runs" / f"txt_{prec}"),
                                        precision=prec, adapter_init="identity", **{**common, "batch_size": tb}),
                        progress=False)
        assert r["teacher_cache_s"].get("train", 0) < 1.0, "the text cache should have been reused"
        res[f"stage1_text_{prec}_sps"] = _steady_rate(work / "runs" / f"txt_{prec}", r["global_batch"])
        rows.append(["stage 1 distill (text)", "4-layer student <- cached e5", prec, res[f"stage1_text_{prec}_sps"]])

    # ---- stage 2 -------------------------------------------------------------------------------------------
    pairs = work / "pairs.jsonl"
    qs = _texts(400)
    with open(pairs, "w", encoding="utf-8") as f:
        for i, p in enumerate(photos):
            name = p.stem.split("_", 1)[1].replace("_", " ")
            f.write(json.dumps({"image": str(p), "en": f"a photo of {name}", "zh": f"{name}的照片"},
                               ensure_ascii=False) + "\n")
        for i in range(0, len(qs) - 1, 2):                      # queries() interleaves EN, ZH
            f.write(json.dumps({"en": qs[i], "zh": qs[i + 1]}, ensure_ascii=False) + "\n")
    for prec in precisions:
        log(f"stage 2 align, {prec}")
        r = run_align(AlignSettings(student=str(mdir), pairs=[str(pairs)], steps=steps, batch_size=B,
                                    threads=args.threads, precision=prec, log_every=1, ckpt_every=10 ** 6,
                                    out=str(work / "runs" / f"align_{prec}")), progress=False)
        res[f"stage2_align_{prec}_sps"] = _steady_rate(work / "runs" / f"align_{prec}")
        rows.append(["stage 2 align (InfoNCE)", "text student + G, image frozen", prec, res[f"stage2_align_{prec}_sps"]])

    best = lambda k: max(res[f"{k}_{p}_sps"] for p in precisions)
    res["cache_speedup"] = {"image": _speedup(res["teacher_image_sps"], best("stage1_image")),
                            "text": _speedup(res["teacher_text_sps"], best("stage1_text"))}
    res["load_avg_end"] = os.getloadavg()
    res["table"] = [{"stage": a, "what": b, "precision": c, "samples_per_s": d} for a, b, c, d in rows]

    sp = res["cache_speedup"]
    table = markdown_table(["stage", "what", "precision", "samples/s"], rows)
    table2 = markdown_table(["modality", "teacher samples/s", "student samples/s", "speed-up per epoch",
                             "speed-up, 3 epochs"],
                            [["image", res["teacher_image_sps"], best("stage1_image"), sp["image"]["per_epoch"],
                              sp["image"]["run_3_epochs"]],
                             ["text", res["teacher_text_sps"], best("stage1_text"), sp["text"]["per_epoch"],
                              sp["text"]["run_3_epochs"]]])
    out = results_path("training", args)
    if str(out) != "-":
        write_json(out, {"suite": "training", **res})
        log(f"wrote {out}")
    if args.json:
        print(json.dumps(res, indent=1, default=float))
    else:
        print(f"training throughput, {args.threads} threads, batch {B} (text stage 1: 64), {steps} steps "
              f"(load average {res['load_avg_start'][0]:.1f} at start)\n")
        print(table)
        print("\nteacher-feature cache (teacher runs once instead of every epoch):\n")
        print(table2)
    return 0
