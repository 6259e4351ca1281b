"""The few-shot protocol: methods x {1, 5, 16} shots x 3 seeds on a held-out target task; table + plot.

    python -m training.prompts.protocol --collection DIR [--target cv-digits] [--source PROMPT]
        [--source-upt PROMPT] [--methods ...] [--shots 1 5 16] [--seeds 0 1 2] [--out benchmarks/results/fewshot.json]
        [--plot docs/fewshot.png]

Every method sees the same split per (shots, seed): K shots per class and a balanced validation split
(max(1, round(K/4)) per class) from the target's ``train/``; accuracy is top-1 on its ``test/``. Variants:

    zeroshot, tip-adapter, tip-adapter-f, linear-probe, coop (16 random vectors), coop-tmpl ("a photo of a"),
    vpt-feature, vpt-pixel, upt, source-only (the source prompt, not tuned), mvlpt (coop from the source),
    source-only-upt / mvlpt-upt (the same with a UPT source prompt: ``--source-upt``, trained with
    ``python -m training.prompts.source --base upt``; the target is a UPT prompt initialised from it),
    source-only-upt1 / mvlpt-upt1 (a UPT source of one seed, not averaged: ``--source-upt1``),
    mcoop-digits / mvlpt-digits (the target shares one prompt with sk-digits + printed-digits at K shots
    each, without / with source init), mcoop-mixed (shares with unrelated tasks: shapes + colours).

Results are appended to the JSON as they come (a re-run resumes); the table is mean +- std over seeds.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

VARIANTS = ["zeroshot", "tip-adapter", "tip-adapter-f", "linear-probe", "coop", "coop-tmpl", "vpt-feature",
            "vpt-pixel", "upt", "source-only", "mvlpt", "source-only-upt", "mvlpt-upt", "source-only-upt1",
            "mvlpt-upt1", "mcoop-digits", "mvlpt-digits", "mcoop-mixed"]
UPT_VARIANTS = {"source-only-upt": "upt", "mvlpt-upt": "upt", "source-only-upt1": "upt1", "mvlpt-upt1": "upt1"}
GROUPS = {"digits": ["sk-digits", "printed-digits"], "mixed": ["shapes", "colours"]}


def run_variant(name: str, data, env, cfg, source, group_data, upt_sources=None) -> tuple[float, float, float, dict]:
    """(test accuracy, val accuracy, learn seconds, extra) for one variant on one split."""
    from .methods import evaluate, fit_group, learn
    extra = {}
    t0 = time.perf_counter()
    if name in UPT_VARIANTS:
        name, source = name.rsplit("-", 1)[0], (upt_sources or {})[UPT_VARIANTS[name]]
    if name in ("zeroshot", "tip-adapter", "tip-adapter-f", "linear-probe", "coop", "upt"):
        p, info = learn(name, data, env, cfg)
    elif name == "coop-tmpl":
        p, info = learn("coop", data, env, cfg.replace(ctx_init="a photo of a"))
    elif name == "vpt-feature":
        p, info = learn("vpt", data, env, cfg.replace(visual="feature"))
    elif name == "vpt-pixel":
        p, info = learn("vpt", data, env, cfg.replace(visual="pixel"))
    elif name == "source-only":
        p, info = learn("mvlpt", data, env, cfg.replace(steps=0), source=source)
    elif name == "mvlpt":
        p, info = learn("mvlpt", data, env, cfg, source=source)
    elif name.startswith(("mcoop-", "mvlpt-")):
        others = group_data[name.split("-", 1)[1]]
        prompts, info = fit_group([data] + others, env, cfg, source=source if name.startswith("mvlpt") else None,
                                  seed=data.seed)
        p = prompts[0]
        info["val_accuracy"] = evaluate(p, data.val, env)
        extra["group"] = {d.name: round(evaluate(q, d.test, env), 4) for d, q in zip(others, prompts[1:])}
    else:
        raise ValueError(f"unknown variant {name!r} (have: {VARIANTS})")
    dt = info.get("train_s", time.perf_counter() - t0)
    if name.startswith(("mcoop-", "mvlpt-")):
        dt = time.perf_counter() - t0
    return evaluate(p, data.test, env), float(info.get("val_accuracy") or float("nan")), dt, extra


def summarise(results: list[dict]) -> dict:
    """{variant: {shots: {"mean", "std", "n", "learn_s"}}} over seeds."""
    out: dict = {}
    for r in results:
        out.setdefault(r["variant"], {}).setdefault(r["shots"], []).append(r)
    return {v: {k: {"mean": float(np.mean([r["accuracy"] for r in rs])),
                    "std": float(np.std([r["accuracy"] for r in rs])), "n": len(rs),
                    "learn_s": float(np.mean([r["learn_s"] for r in rs]))}
                for k, rs in sorted(by.items())} for v, by in out.items()}


def table(summary: dict, shots: list[int], order: list[str]) -> str:
    head = "| method | " + " | ".join(f"{k} shot{'s' if k > 1 else ''}" for k in shots) + " | learn s (16) |"
    sep = "|---|" + "---:|" * len(shots) + "---:|"
    lines = [head, sep]
    for v in order:
        if v not in summary:
            continue
        cells = []
        for k in shots:
            s = summary[v].get(k)
            cells.append(f"{100 * s['mean']:.1f} ± {100 * s['std']:.1f}" if s else "—")
        t = summary[v].get(max(shots), {}).get("learn_s")
        lines.append(f"| {v} | " + " | ".join(cells) + (f" | {t:.1f} |" if t is not None else " | — |"))
    return "\n".join(lines)


def plot(summary: dict, shots: list[int], order: list[str], path: Path, title: str) -> Path:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(10.5, 5.6), dpi=110)
    styles = {"zeroshot": ("grey", ":"), "tip-adapter": ("tab:orange", "--"), "tip-adapter-f": ("tab:orange", "-"),
              "linear-probe": ("black", "-"), "coop": ("tab:blue", "-"), "coop-tmpl": ("tab:blue", ":"),
              "vpt-feature": ("tab:brown", ":"), "vpt-pixel": ("tab:brown", "-"), "upt": ("tab:purple", "-"),
              "source-only": ("tab:green", ":"), "mvlpt": ("tab:green", "-"),
              "source-only-upt": ("tab:olive", ":"), "mvlpt-upt": ("tab:olive", "-"),
              "source-only-upt1": ("tab:cyan", ":"), "mvlpt-upt1": ("tab:cyan", "-"), "mcoop-digits": ("tab:red", "--"),
              "mvlpt-digits": ("tab:red", "-"), "mcoop-mixed": ("tab:pink", "--")}
    for v in order:
        if v not in summary:
            continue
        ks = [k for k in shots if k in summary[v]]
        m = np.array([summary[v][k]["mean"] for k in ks]) * 100
        s = np.array([summary[v][k]["std"] for k in ks]) * 100
        c, ls = styles.get(v, (None, "-"))
        ax.errorbar(ks, m, yerr=s, label=v, color=c, linestyle=ls, marker="o", capsize=3, linewidth=1.6)
    ax.set_xscale("log")
    ax.set_xticks(shots)
    ax.set_xticklabels([str(k) for k in shots])
    ax.set_xlabel("shots per class")
    ax.set_ylabel("test accuracy (%), mean ± std over seeds")
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, ncol=1, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path


def main(argv=None) -> int:
    from dcclip_core.config import REPO_DIR
    ap = argparse.ArgumentParser(prog="python -m training.prompts.protocol", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--collection", required=True)
    ap.add_argument("--target", default="cv-digits")
    ap.add_argument("--source", default=None, help="source prompt (default: the shipped mvlpt-source)")
    ap.add_argument("--source-upt", default=None, help="UPT source prompt for source-only-upt / mvlpt-upt")
    ap.add_argument("--source-upt1", default=None, help="one-seed UPT source for source-only-upt1 / mvlpt-upt1")
    ap.add_argument("--methods", nargs="+", default=VARIANTS)
    ap.add_argument("--shots", type=int, nargs="+", default=[1, 5, 16])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--out", type=Path, default=REPO_DIR / "benchmarks" / "results" / "fewshot.json")
    ap.add_argument("--plot", type=Path, default=REPO_DIR / "docs" / "fewshot.png")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--report-only", action="store_true", help="only rebuild the table and plot from --out")
    args = ap.parse_args(argv)
    log = lambda m: print(m, file=sys.stderr, flush=True)

    doc = json.loads(args.out.read_text()) if args.out.is_file() else {}
    doc = {k: v for k, v in doc.items() if k not in ("created", "machine")}
    prot = doc.get("protocol") or {}
    import dcclip_core
    model_hash = dcclip_core.load().info["hash"]
    results = [r for r in prot.get("results", []) if r.get("target") == args.target
               and r.get("model_hash", model_hash) == model_hash]        # results of another model are dropped
    done = {(r["variant"], r["shots"], r["seed"]) for r in results}
    order = VARIANTS + [v for v in args.methods if v not in VARIANTS]    # the table shows every variant measured

    def save():
        from training.results import write_json
        summ = summarise(results)
        doc["protocol"] = {"target": args.target, "model_hash": model_hash, "collection": str(args.collection),
                           "shots": args.shots,
                           "seeds": args.seeds, "validation": "balanced, max(1, round(K/4)) per class",
                           "source": prot.get("source"), "source_upt": prot.get("source_upt"),
                           "source_upt1": prot.get("source_upt1"), "groups": GROUPS,
                           "results": results, "summary": summ, "table": table(summ, args.shots, order)}
        write_json(args.out, doc)

    if not args.report_only:
        from dcclip_core.prompts import load_prompt
        from .data import load_collection
        from .methods import FewShotConfig, LearningEnv, default_source, prepare
        from .tasks import HELDOUT
        env = LearningEnv()
        tasks = {t.name: t for t in load_collection(args.collection)}
        if args.target not in tasks:
            raise SystemExit(f"target {args.target!r} not in {sorted(tasks)}")
        source = load_prompt(args.source, model=env.model) if args.source else default_source(env.model)
        if source is not None:
            leak = set(source.meta.get("tasks", [])) & ({args.target} | set(HELDOUT))
            if leak:
                raise SystemExit(f"the source prompt was trained on {sorted(leak)}: not a held-out evaluation")
            prot["source"] = {"name": source.name, "tasks": source.meta.get("tasks"),
                              "created": source.meta.get("created")}
        upt_sources = {}
        for key, arg in (("upt", args.source_upt), ("upt1", args.source_upt1)):
            if not arg:
                continue
            src = upt_sources[key] = load_prompt(arg, model=env.model)
            leak = set(src.meta.get("tasks", [])) & ({args.target} | set(HELDOUT))
            if leak or src.meta.get("base") != "upt":
                raise SystemExit(f"{arg}: needs a UPT source prompt without {sorted(leak or [args.target])}")
            prot[f"source_{key}"] = {"name": src.name, "tasks": src.meta.get("tasks"), "seeds": src.meta.get("seeds"),
                                     "created": src.meta.get("created"), "train_s": src.meta.get("train_s"),
                                     "val_accuracy": src.meta.get("val_accuracy"),
                                     "val_per_task": src.meta.get("val_per_task"),
                                     "description": src.meta.get("description")}
        cfg = FewShotConfig(threads=args.threads)
        for k in args.shots:
            for seed in args.seeds:
                todo = [v for v in args.methods if (v, k, seed) not in done]
                if not todo:
                    continue
                data = prepare(tasks[args.target], env, k, seed)
                group_data = {g: [prepare(tasks[n], env, k, seed, max_test=200) for n in names if n in tasks]
                              for g, names in GROUPS.items()
                              if any(v.endswith("-" + g) for v in todo)}
                for v in todo:
                    if v in ("source-only", "mvlpt", "mvlpt-digits") and source is None:
                        log(f"{v}: no source prompt, skipped")
                        continue
                    if v in UPT_VARIANTS and UPT_VARIANTS[v] not in upt_sources:
                        log(f"{v}: no --source-{UPT_VARIANTS[v]} prompt, skipped")
                        continue
                    acc, va, dt, extra = run_variant(v, data, env, cfg, source, group_data, upt_sources)
                    results.append({"target": args.target, "model_hash": model_hash, "variant": v, "shots": k,
                                    "seed": seed,
                                    "accuracy": round(acc, 4), "val_accuracy": round(va, 4), "learn_s": round(dt, 2),
                                    **extra})
                    done.add((v, k, seed))
                    log(f"K={k:2d} seed={seed} {v:14s} acc {acc:.3f} val {va:.3f} ({dt:.1f} s)")
                    save()
    summ = summarise(results)
    save()
    print(table(summ, args.shots, order))
    if args.plot:
        p = plot(summ, args.shots, order, args.plot,
                 f"held-out target {args.target}: few-shot accuracy (dcclip default model, CPU)")
        log(f"wrote {p}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
