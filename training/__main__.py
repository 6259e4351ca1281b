"""python -m training <command> — build, export and evaluate bilingual students.

Commands:
  build-default   build assets/models/default from real weights pip packages ship (DC-CLIP stages 1+2, export)
  eval-default    measure the default model vs its e5 teacher and the ridge baseline (table + JSON)
  export          re-export a model directory's torch weights to ONNX fp32/int8 with parity checks
"""
from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    from training import build_default, eval_default
    p = sub.add_parser("build-default", help="build the embedded default model (about 40 min on 2 cores)")
    build_default.add_args(p)
    p = sub.add_parser("eval-default", help="evaluate the default model: ImageNet prototypes + real photos")
    eval_default.add_args(p)
    p = sub.add_parser("export", help="export a model directory to ONNX fp32/int8 with parity checks")
    p.add_argument("model_dir", help="directory with config.json + model.safetensors")
    p.add_argument("--work", default="build/export", help="where the fp32/int8 candidates are kept")

    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    if args.command == "build-default":
        build_default.run(args)
    elif args.command == "eval-default":
        eval_default.run(args)
    elif args.command == "export":
        from training.export_default import export_model
        export_model(args.model_dir, args.work)
    return 0


if __name__ == "__main__":
    sys.exit(main())
