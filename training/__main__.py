"""python -m training <command> — build, distil, align, evaluate, export and prompt-tune bilingual students.

Commands:
  distill         stage 1: feature distillation of image/text students from a teacher (cached teacher features)
  align           stage 2: symmetric InfoNCE alignment on image-text / text-text pairs (EN + ZH)
  eval            zero-shot evaluation on an ImageFolder / ELEVATER dataset (EN or ZH)
  export          export a model directory to ONNX fp32/int8 with parity checks
  fewshot         few-shot prompt learning and baselines (CoOp, VPT, UPT, MVLPT, Tip-Adapter, linear probe)
  build-default   build assets/models/default from real weights pip packages ship (stage 1, concept bank, export)
  concept-bank    re-embed (or list) a model's concept bank with its own text tower
  eval-default    measure the default model vs its e5 teacher and the ridge baseline (table + JSON)

Each command lives in its own module with ``add_args(parser)`` and ``run(args) -> int | dict | None``;
modules import torch lazily so ``--help`` stays fast.
"""
from __future__ import annotations

import argparse
import importlib
import sys

# command -> (module, one-line help). Order = order in --help.
COMMANDS = {
    "distill": ("training.cmd_distill", "stage 1: distil image/text students from a teacher's features"),
    "align": ("training.cmd_align", "stage 2: contrastive (InfoNCE) alignment on EN/ZH pairs"),
    "eval": ("training.cmd_eval", "zero-shot evaluation on an ImageFolder or ELEVATER dataset"),
    "export": ("training.export_default", "export a model directory to ONNX fp32/int8 with parity checks"),
    "fewshot": ("training.cmd_fewshot", "few-shot prompt learning / baselines on an ImageFolder dataset"),
    "build-default": ("training.build_default", "build the embedded default model (about 90 min on 2 cores)"),
    "concept-bank": ("training.concept_bank", "re-embed or list a model's concept bank (after a text-tower change)"),
    "eval-default": ("training.eval_default", "evaluate the default model: ImageNet prototypes + real photos"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m training", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module, help_) in COMMANDS.items():
        p = sub.add_parser(name, help=help_, description=help_)
        try:
            mod = importlib.import_module(module)
        except ModuleNotFoundError as e:
            if e.name != module:
                raise
            p.set_defaults(_missing=module)
            continue
        mod.add_args(p)
        p.set_defaults(_module=module)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    if getattr(args, "_missing", None):
        print(f"python -m training {args.command}: not available in this checkout ({args._missing} missing)",
              file=sys.stderr)
        return 2
    result = importlib.import_module(args._module).run(args)
    return result if isinstance(result, int) else 0


if __name__ == "__main__":
    sys.exit(main())
