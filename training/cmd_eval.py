"""`python -m training eval`: zero-shot image classification on an ImageFolder or ELEVATER dataset, EN or ZH.

    python -m training eval --dataset DIR --lang en|zh [--model NAME] [--out DIR] [--json]

Runs the ONNX runtime model (``dcclip_core.load``; no torch) through ``training.evaluate.evaluate_zeroshot`` on a
dataset ``training.datasets.load_dataset`` reads (ImageFolder: ``DIR/test/<class>/*`` + ``classnames.json``;
ELEVATER: a dataset-info JSON or ``test.txt`` + ``labels.txt``, iris or coco index, images in zips; ``--name``
picks one of several datasets an info JSON lists). The primary metric is chosen from the dataset's name or
``--metric``. Writes a report table, JSON and a plot (confusion matrix or per-class accuracy) to ``--out``;
``--json`` prints the summary as the last stdout line: ``{"accuracy": float, "metric": str, "score": float, ...}``.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from dcclip_core.zeroshot import templates as bundled_templates
from training.datasets import DatasetError, load_dataset, templates_file
from training.evaluate import METRICS, evaluate_zeroshot, plot_report, report_table, summary


def add_args(p: argparse.ArgumentParser) -> None:
    p.formatter_class = argparse.RawDescriptionHelpFormatter
    p.description = __doc__.split("\n\n", 2)[0] + "\n\n" + "Layouts: ImageFolder (test/<class>/..., classnames.json) " \
        "or ELEVATER (dataset-info JSON / test.txt + labels.txt, iris or coco index, images in zips)."
    p.add_argument("--dataset", required=True, help="dataset directory (ImageFolder or ELEVATER layout)")
    p.add_argument("--lang", default="en", choices=["en", "zh"], help="language of class names and templates")
    p.add_argument("--model", default="default", help="installed model name or model directory (ONNX runtime)")
    p.add_argument("--split", default="test", help="split to evaluate (test, val, train)")
    p.add_argument("--name", default=None, help="ELEVATER: dataset name when the info JSON lists several")
    p.add_argument("--metric", default=None, choices=METRICS, help="primary metric (default: by dataset)")
    p.add_argument("--templates", default="short", help="'short' / 'full' bundled templates, or a JSON file "
                   "({'en': [...], 'zh': [...]} or a list); a dataset's own templates.json wins over 'short'/'full'")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--limit", type=int, default=None, help="evaluate only the first N images (quick checks)")
    p.add_argument("--threads", type=int, default=None, help="ONNX Runtime threads (default: all cores)")
    p.add_argument("--out", default=None, help="write eval_<lang>.json, report_<lang>.md and eval_<lang>.png here")
    p.add_argument("--json", action="store_true", help="print the summary as one JSON line (last line of stdout)")


def run(args: argparse.Namespace) -> int:
    import dcclip_core
    try:
        ds = load_dataset(args.dataset, args.name)
    except DatasetError as e:
        print(f"python -m training eval: {e}", file=sys.stderr)
        return 2
    try:
        model = dcclip_core.load(args.model, threads=args.threads)
    except dcclip_core.ModelNotFoundError as e:
        print(f"python -m training eval: {e}", file=sys.stderr)
        return 2
    missing = [r for r in ("text_onnx", "image_onnx", "tokenizer") if not (model.path / model.config.files.get(r, "-")).is_file()]
    if missing:
        print(f"python -m training eval: {model.path} has no {', '.join(missing)} file(s); a trained model directory "
              f"needs `python -m training export {model.path}` first", file=sys.stderr)
        return 2
    templates = None
    if args.templates not in ("short", "full"):
        t = templates_file(Path(args.templates))
        if not t:
            print(f"python -m training eval: templates file {args.templates} not found or empty", file=sys.stderr)
            return 2
        templates = t.get(args.lang) or next(iter(t.values()))
    elif not ds.templates.get(args.lang):
        templates = bundled_templates(args.lang, args.templates)
    try:
        res = evaluate_zeroshot(model, ds, args.lang, args.split, templates, args.metric, args.batch_size,
                                args.limit, progress=not args.json)
    except DatasetError as e:
        print(f"python -m training eval: {e}", file=sys.stderr)
        return 2
    res["model"] = model.info.get("id", args.model)
    if res["n"] == 0:
        print(f"python -m training eval: no readable images in {args.dataset} ({res['errors']} errors)",
              file=sys.stderr)
        return 1
    table = report_table(res)
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / f"eval_{args.lang}.json").write_text(json.dumps(res, indent=1, ensure_ascii=False), encoding="utf-8")
        (out / f"report_{args.lang}.md").write_text(table + "\n", encoding="utf-8")
        plot_report(res, out / f"eval_{args.lang}.png")
    if args.json:
        print(json.dumps(summary(res), ensure_ascii=False))
    else:
        print(table)
        if args.out:
            print(f"\nwrote {args.out}/eval_{args.lang}.json, report_{args.lang}.md, eval_{args.lang}.png")
    return 0
