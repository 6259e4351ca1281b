"""``python -m benchmarks <suite> [options]`` — see ``python -m benchmarks <suite> --help``."""
from __future__ import annotations

import argparse
import importlib
import sys

from . import SUITES


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description="Measure the speed and size of dcclip models on this machine (CPU, ONNX Runtime).",
        epilog="Results are printed as a markdown table and written as JSON (with machine info).")
    sub = parser.add_subparsers(dest="suite", metavar="SUITE")
    modules = {}
    for name, (module, help_) in SUITES.items():
        p = sub.add_parser(name, help=help_, description=help_)
        # each suite module defines its own options; import lazily so --help stays fast and torch-free
        modules[name] = importlib.import_module(module)
        modules[name].add_arguments(p)
    args = parser.parse_args(argv)
    if not args.suite:
        parser.print_help()
        return 2
    return int(modules[args.suite].run(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
