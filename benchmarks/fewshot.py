"""Few-shot prompt learning speed: seconds to learn a prompt for 5 classes x 16 shots on this CPU.

    python -m benchmarks fewshot [--quick] [--threads 1] [--out benchmarks/results/fewshot.json]

The task is 5 handwritten-digit classes from scikit-learn (real data; 16 shots + 4 validation images per
class, 250 test images), written once as an ImageFolder under the benchmark cache. Per method:
``learn_s`` = learning from cached frozen features (what the app waits for after the examples are encoded;
the median of ``--repeats`` runs for methods under a second, one run otherwise), ``cold_s`` = the first run
in a fresh process: + loading the torch text/image towers it needs; ``encode_s`` = encoding the 100
labelled images once (ONNX). Targets (issue 6): CoOp <= 30 s, Tip-Adapter <= 1 s.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

from .common import RESULTS_DIR, cache_dir, markdown_table, median, write_json

TARGETS = {"coop": 30.0, "tip-adapter": 1.0}


def make_task(root: Path, classes=(0, 1, 2, 3, 4), n_train: int = 20, n_test: int = 50) -> Path:
    from PIL import Image
    from sklearn.datasets import load_digits
    if (root / "classnames.json").is_file():
        return root
    d = load_digits()
    names = ["zero", "one", "two", "three", "four"]
    zh = ["零", "一", "二", "三", "四"]
    for c in classes:
        for i, a in enumerate(d.images[d.target == c][:n_train + n_test]):
            part = "train" if i < n_train else "test"
            (root / part / str(c)).mkdir(parents=True, exist_ok=True)
            Image.fromarray((a * 15.9).astype(np.uint8)).resize((64, 64), Image.Resampling.BICUBIC).save(
                root / part / str(c) / f"{i:03d}.png")
    (root / "classnames.json").write_text(json.dumps({str(c): {"en": names[c], "zh": zh[c]} for c in classes},
                                                     ensure_ascii=False))
    return root


# (label, method, config overrides, needs source)
VARIANTS = [
    ("zeroshot", "zeroshot", {}, False),
    ("tip-adapter", "tip-adapter", {}, False),
    ("tip-adapter-f", "tip-adapter-f", {}, False),
    ("linear-probe", "linear-probe", {}, False),
    ("coop", "coop", {}, False),
    ("coop (template init)", "coop", {"ctx_init": "a photo of a"}, False),
    ("upt", "upt", {}, False),
    ("mvlpt", "mvlpt", {}, True),
    ("vpt feature", "vpt", {"visual": "feature"}, False),
    ("vpt pixel", "vpt", {"visual": "pixel"}, False),
]


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--quick", action="store_true", help="skip pixel VPT and repeat fast methods once")
    p.add_argument("--threads", type=int, default=1, help="torch/BLAS threads for learning (default 1)")
    p.add_argument("--repeats", type=int, default=3, help="runs of methods under a second (median kept)")
    p.add_argument("--out", type=Path, help="JSON results (default benchmarks/results/fewshot.json, merged "
                                            "under 'speed'; '-' to skip)")
    p.add_argument("--json", action="store_true", help="print JSON instead of the table")


def run(args: argparse.Namespace) -> int:
    log = lambda m: print(m, file=sys.stderr, flush=True)
    from training.prompts.data import load_task
    from training.prompts.features import FeatureCache
    from training.prompts.methods import Env, FewShotConfig, evaluate, learn, prepare
    from training.fewshot import default_source
    import dcclip_core

    root = make_task(cache_dir() / "fewshot_task_5x16")
    model = dcclip_core.load()
    fcache = cache_dir() / f"fewshot_features_{os.getpid()}"               # a fresh cache: encode is measured
    env = Env(model=model, cache=FeatureCache(model, root=fcache))
    task = load_task(root)
    load0 = os.getloadavg()
    t0 = time.perf_counter()
    data = prepare(task, env, shots=16, seed=0)
    encode_s = time.perf_counter() - t0
    log(f"{task.num_classes} classes x {data.shots} shots ({len(data.train)} train, {len(data.val)} val, "
        f"{len(data.test)} test); encoded train+val+test in {encode_s:.1f} s")
    source = default_source(model)
    rows = []
    for label, method, over, needs_src in VARIANTS:
        if args.quick and label == "vpt pixel":
            continue
        if needs_src and source is None:
            log(f"{label}: no source prompt, skipped")
            continue
        cfg = FewShotConfig(threads=args.threads).replace(**over)
        kw = {"source": source} if needs_src else {}
        t_cold = time.perf_counter()
        prompt, info = learn(method, data, env, cfg, **kw)
        cold = time.perf_counter() - t_cold
        times = [info["train_s"]]
        if info["train_s"] < 1.0:
            for _ in range(max(0, (1 if args.quick else args.repeats) - 1)):
                times.append(learn(method, data, env, cfg, **kw)[1]["train_s"])
        acc = evaluate(prompt, data.test, env)
        row = {"method": label, "learn_s": round(median(times), 3), "cold_s": round(cold, 3),
               "accuracy": round(acc, 4), "target_s": TARGETS.get(label), "met": None}
        if row["target_s"]:
            row["met"] = row["learn_s"] <= row["target_s"]
        rows.append(row)
        log(f"{label:18s} learn {row['learn_s']:8.3f} s  cold {cold:7.2f} s  accuracy {acc:.3f}")
        env._tower = None if label == "vpt pixel" else env._tower             # free the CNN
    res = {"task": "sklearn digits 0-4 (ImageFolder, 64x64 PNG)", "classes": task.num_classes, "shots": 16,
           "threads": args.threads, "encode_s": round(encode_s, 2), "images_encoded": len(data.train) +
           len(data.val) + len(data.test), "loadavg_before": [round(x, 2) for x in load0],
           "loadavg_after": [round(x, 2) for x in os.getloadavg()], "rows": rows}
    import shutil
    shutil.rmtree(fcache, ignore_errors=True)
    out = args.out or RESULTS_DIR / "fewshot.json"
    if str(out) != "-":
        doc = {}
        if Path(out).is_file():
            try:
                doc = json.loads(Path(out).read_text())
                doc = {k: v for k, v in doc.items() if k not in ("created", "machine")}
            except json.JSONDecodeError:
                doc = {}
        doc["speed"] = res
        log(f"wrote {write_json(out, doc)}")
    if args.json:
        print(json.dumps(res, indent=2))
    else:
        print(markdown_table(["method", "learn s", "cold s", "accuracy", "target s", "met"],
                             [[r["method"], r["learn_s"], r["cold_s"], r["accuracy"], r["target_s"],
                               {True: "yes", False: "NO", None: ""}[r["met"]]] for r in rows]))
        print(f"\n5 classes x 16 shots; encoding the {res['images_encoded']} images once: {encode_s:.1f} s; "
              f"load average {res['loadavg_before']} -> {res['loadavg_after']}")
    return 0
