"""`python -m training fewshot`: learn a prompt from K examples per class and measure it on the test split.

    python -m training fewshot --dataset DIR --method coop --shots 16 --seed 0 --json [--out PROMPT]

DIR is an ImageFolder task (``train/<class>/*``, ``test/<class>/*``, ``classnames.json`` with EN/ZH names) or an
ELEVATER dataset (dataset-info JSON or ``train.txt`` / ``test.txt`` + ``labels.txt``; iris or coco index; images
in zips or extracted; ``--elevater-name`` picks one of several datasets an info JSON lists).
K shots per class and a balanced validation split (max(1, round(K/4)) per class) are drawn from ``train/``
with ``--seed``; accuracy is top-1 on ``test/`` through the inference path (numpy + ONNX Runtime). The last
stdout line with ``--json``: ``{"method", "shots", "accuracy", "train_s", ...}``; ``train_s`` is the time to
learn the prompt from cached frozen features (image encoding and model loading excluded; ``total_s`` has all).

Methods: zeroshot | tip-adapter | tip-adapter-f | linear-probe | coop | vpt | upt | mvlpt (see
``training/prompts/methods.py``). ``mvlpt`` initialises CoOp/UPT from a multitask source prompt (``--source``,
default: the shipped ``mvlpt-source-*`` prompt for this model) and, with ``--group DIR ...``, trains one prompt
shared by DIR and the group's tasks (union softmax, logits sliced per task).
"""
from __future__ import annotations

import argparse
import json
import sys
import time


def add_args(p: argparse.ArgumentParser) -> None:
    from_here = p.add_argument
    from_here("--dataset", required=True, help="ImageFolder task directory (train/, test/, classnames.json) or "
                                                "an ELEVATER dataset directory")
    from_here("--elevater-name", default=None, help="ELEVATER: dataset name when the info JSON lists several")
    from_here("--method", default="coop",
              choices=["zeroshot", "tip-adapter", "tip-adapter-f", "linear-probe", "coop", "vpt", "upt", "mvlpt"])
    from_here("--shots", type=int, default=16, help="training images per class (default 16)")
    from_here("--seed", type=int, default=0, help="seed of the few-shot draw and the initialisation")
    from_here("--json", action="store_true", help="print the result as JSON on the last stdout line")
    from_here("--out", default=None, help="save the learned prompt (.safetensors + JSON metadata) here")
    from_here("--name", default=None, help="prompt name stored in its metadata (default: file name)")
    from_here("--model", default="default", help="installed model name or model directory")
    from_here("--lang", default="en", choices=["en", "zh", "both"], help="class-name language(s)")
    from_here("--ctx-init", default=None, help='template words initialising the context, e.g. "a photo of a" '
                                              '(M = its token count); default: random N(0, 0.02)')
    from_here("--n-ctx", type=int, default=None, help="M random context vectors (default 16)")
    from_here("--position", default=None, choices=["end", "middle", "front"], help="class token position")
    from_here("--steps", type=int, default=None, help="optimisation steps (coop/upt/mvlpt/vpt-feature)")
    from_here("--lr", type=float, default=None, help="learning rate (coop/upt/mvlpt)")
    from_here("--visual", default=None, choices=["pixel", "feature", "deep", "shallow"],
              help="VPT prompt: CNN towers: a pixel frame (trained through the CNN, slow) or feature-map tokens; "
                   "ViT towers: deep (tokens at every layer) or shallow (first layer)")
    from_here("--vpt-steps", type=int, default=None,
              help="steps of pixel / deep / shallow VPT (each = a batch through the image tower)")
    from_here("--vpt-tokens", type=int, default=None, help="deep / shallow VPT: prompt tokens per layer (8)")
    from_here("--vpt-batch", type=int, default=None, help="pixel / deep / shallow VPT: images per step (16)")
    from_here("--vpt-train-size", type=int, default=None,
              help="pixel VPT: run the CNN at this size while training (cheaper; inference stays full size)")
    from_here("--vpt-patience", type=int, default=None,
              help="pixel / deep / shallow VPT: stop when the loss has not improved for N steps")
    from_here("--source", default=None, help="mvlpt: source prompt (name or file)")
    from_here("--group", nargs="*", default=None, metavar="DIR",
              help="mvlpt: other ImageFolder tasks sharing one prompt with --dataset (multitask group)")
    from_here("--no-source", action="store_true", help="mvlpt: no source init (pure multitask group)")
    from_here("--max-test", type=int, default=None, help="evaluate on at most this many test images")
    from_here("--threads", type=int, default=None, help="torch threads for prompt learning (default 1)")
    from_here("--quiet", action="store_true", help="no progress on stderr")


def config_from_args(args):
    from .prompts.methods import FewShotConfig
    cfg = FewShotConfig(lang=args.lang)
    if args.ctx_init is not None:
        cfg = cfg.replace(ctx_init="" if args.ctx_init.lower() in ("random", "none", "") else args.ctx_init)
    for a, f in (("n_ctx", "n_ctx"), ("position", "position"), ("steps", "steps"), ("lr", "lr"),
                 ("visual", "visual"), ("vpt_steps", "vpt_steps"), ("vpt_tokens", "vit_tokens"),
                 ("vpt_batch", "vpt_batch"), ("vpt_train_size", "vpt_train_size"), ("vpt_patience", "vpt_patience"),
                 ("threads", "threads")):
        v = getattr(args, a)
        if v is not None:
            cfg = cfg.replace(**{f: v})
    return cfg


def run(args) -> int:
    from .datasets import DatasetError
    from .prompts.data import load_task
    from .prompts.methods import LearningEnv, default_source, evaluate, fit_group, learn, prepare

    t_total = time.perf_counter()
    log = (lambda *a: None) if args.quiet else (lambda *a: print(*a, file=sys.stderr, flush=True))
    try:
        task = load_task(args.dataset, args.elevater_name)
    except DatasetError as e:
        print(f"fewshot: {e}", file=sys.stderr)
        return 2
    if not len(task.train_paths) and args.method != "zeroshot":
        print(f"fewshot: {args.dataset} has no train/ images; only --method zeroshot works without them",
              file=sys.stderr)
        return 2
    cfg = config_from_args(args)
    env = LearningEnv(model_name=args.model)
    if args.visual is None and env.model.config.image.tower.startswith("vit-"):
        cfg = cfg.replace(visual="deep")                     # a ViT tower: deep VPT unless asked otherwise
    log(f"{task.name}: {task.num_classes} classes, {len(task.train_paths)} train / {len(task.test_paths)} test "
        f"images; encoding (cached per model)...")
    shots = 0 if args.method == "zeroshot" and not len(task.train_paths) else args.shots   # 0: test/ alone
    try:
        data = prepare(task, env, shots, args.seed, max_test=args.max_test)
    except DatasetError as e:
        print(f"fewshot: {e}", file=sys.stderr)
        return 2
    last = [0.0]

    def progress(step, total, loss):
        now = time.perf_counter()
        if step == total or now - last[0] > 2.0:
            last[0] = now
            log(f"  step {step}/{total} loss {loss:.4f}")

    extra = {}
    if args.method == "mvlpt":
        from dcclip_core.prompts import load_prompt
        source = None
        if not args.no_source:
            source = load_prompt(args.source, model=env.model) if args.source else default_source(env.model)
            if source is None:
                print("fewshot: no mvlpt source prompt for this model; build one with `python -m "
                      "training.prompts.source --collection DIR --out PROMPT` and pass --source PROMPT "
                      "(or --no-source with --group)", file=sys.stderr)
                return 2
            if task.name in source.meta.get("tasks", []):
                log(f"warning: the source prompt was trained on {task.name!r} itself (not a transfer result)")
        if args.group is not None:
            datas = [data] + [prepare(load_task(g), env, args.shots, args.seed, max_test=args.max_test)
                              for g in args.group]
            t0 = time.perf_counter()
            prompts, info = fit_group(datas, env, cfg, base=(source.meta.get("base", "coop") if source else "coop"),
                                      progress=progress, source=source, seed=args.seed)
            info["train_s"] = time.perf_counter() - t0
            prompt = prompts[0]
            prompt.meta["val_accuracy"] = evaluate(prompt, data.val, env)
            extra["group"] = {d.name: evaluate(p, d.test, env) for d, p in zip(datas, prompts)}
        else:
            if source is None:
                print("fewshot: --no-source needs --group (otherwise mvlpt is plain coop)", file=sys.stderr)
                return 2
            prompt, info = learn("mvlpt", data, env, cfg, progress=progress, source=source)
    else:
        try:
            prompt, info = learn(args.method, data, env, cfg, progress=progress)
        except TypeError as e:                     # e.g. deep VPT asked of a CNN image tower
            if "VPT" not in str(e):
                raise
            print(f"fewshot: {e}", file=sys.stderr)
            return 2
    t_eval = time.perf_counter()
    acc = evaluate(prompt, data.test, env)
    prompt.meta["test_accuracy"] = acc
    out = None
    if args.out:
        if args.name:
            prompt.meta["name"] = args.name
        out = str(prompt.save(args.out))
        log(f"saved {out}")
    va = prompt.meta.get("val_accuracy")
    res = {"method": args.method, "shots": int(args.shots), "accuracy": float(acc),
           "train_s": round(float(info["train_s"]), 3), "val_accuracy": va, "seed": int(args.seed),
           "dataset": task.name, "classes": task.num_classes,
           "test_images": 0 if data.test is None else len(data.test), "eval_s": round(time.perf_counter() - t_eval, 3),
           "total_s": round(time.perf_counter() - t_total, 3), "prompt": out, **extra}
    if args.json:
        print(json.dumps(res, ensure_ascii=False))
    else:
        print(f"{args.method} {task.name} K={args.shots} seed={args.seed}: accuracy {acc:.4f} "
              f"(val {va if va is None else round(va, 4)}), learned in {info['train_s']:.2f} s")
    return 0
