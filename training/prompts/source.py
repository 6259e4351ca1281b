"""``python -m training.prompts.source``: the MVLPT source prompt, trained on the union of the source tasks.

    python -m training.prompts.source --collection DIR --out assets/prompts/mvlpt-source-coop.safetensors \
        [--base coop|upt] [--shots 32] [--seeds 0 1 2] [--steps 300] [--exclude TASK ...]

Source tasks = every task of the collection except held-out ones (``cv-digits``) and ``--exclude``; each
contributes ``--shots`` images per class (softmax over the union of all their classes, deduplicated by
English name). One prompt is trained per seed and the checkpoints are averaged (MVLPT).

Measured on our collection (benchmarks/results/fewshot.json, ``protocol.source_upt*``): averaging works for CoOp
(a linear context; mean validation accuracy over the source tasks 0.77), but not for UPT's shared network -- its
3-seed weight average fell to 0.31 (one seed: 0.84) -- yet as a *target init* both UPT sources help (see the
protocol table). ``--seeds 0`` gives the one-seed source.
"""
from __future__ import annotations

import argparse
import json
import sys
import time


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m training.prompts.source", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--collection", required=True, help="task collection (python -m training.prompts.tasks build)")
    ap.add_argument("--out", required=True)
    ap.add_argument("--base", default="coop", choices=["coop", "upt"])
    ap.add_argument("--shots", type=int, default=32, help="images per class from each source task")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--lr", type=float, default=None)
    ap.add_argument("--exclude", nargs="*", default=[], help="tasks to keep out of the source set")
    ap.add_argument("--model", default="default")
    ap.add_argument("--name", default=None)
    args = ap.parse_args(argv)
    from .data import load_collection
    from .methods import FewShotConfig, LearningEnv, prepare, train_source
    from .tasks import source_tasks
    env = LearningEnv(model_name=args.model)
    tasks = source_tasks(load_collection(args.collection), args.exclude)
    print("source tasks:", ", ".join(t.name for t in tasks), file=sys.stderr)
    cache: dict = {}

    def datas(seed):                       # a different draw of the source shots per seed
        if seed not in cache:
            cache[seed] = [prepare(t, env, args.shots, seed, with_test=False) for t in tasks]
        return cache[seed]
    cfg = FewShotConfig(steps=args.steps)
    if args.lr:
        cfg = cfg.replace(lr=args.lr)
    t0 = time.perf_counter()
    last = [0.0]

    def progress(step, total, loss):
        if step == total or time.perf_counter() - last[0] > 5:
            last[0] = time.perf_counter()
            print(f"  step {step}/{total} loss {loss:.4f}", file=sys.stderr, flush=True)

    prompt, info = train_source(datas, env, cfg, base=args.base, seeds=args.seeds, progress=progress)
    prompt.meta["train_s"] = round(time.perf_counter() - t0, 1)
    prompt.meta["name"] = args.name or f"mvlpt-source-{args.base}"
    prompt.meta["description"] = (f"MVLPT source prompt ({args.base}) trained on {len(tasks)} tasks "
                                  f"({', '.join(t.name for t in tasks)}), {args.shots} shots per class, "
                                  + (f"seeds {args.seeds} (one draw each, one shared init) averaged"
                                     if len(args.seeds) > 1 else f"one seed ({args.seeds[0]}), not averaged"))
    prompt.meta["config"] = {"shots": args.shots, "steps": cfg.steps, "lr": cfg.lr, "ctx_init": cfg.ctx_init}
    out = prompt.save(args.out)
    print(json.dumps({"out": str(out), "tasks": prompt.meta["tasks"], "classes": prompt.num_classes,
                      "val_per_task": info["val_per_task"], "per_seed": info["per_seed"],
                      "train_s": prompt.meta["train_s"]}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
