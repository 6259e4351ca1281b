"""What the training-run commands (``distill``, ``align``) share on the command line: a flag table that maps onto
a settings dataclass, ``--config`` recipes (training/configs) under the flags, ``--set key=value`` over both, and
one way to run the stage and print its result (one JSON line with ``--json``; exit 2 on bad settings)."""
from __future__ import annotations

import argparse
import json
import sys
from typing import Callable, Sequence

# flag -> (settings field, type, help); type list = several values, "pairs" = "a:b,c:d" -> [[a, b], [c, d]]
Flags = dict[str, tuple[str, object, str]]

RUN_FLAGS: Flags = {                          # the same in every training run
    "--precision": ("precision", str, "auto | fp32 | bf16"),
    "--threads": ("threads", int, "torch threads per process"),
}


def add_settings_args(p: argparse.ArgumentParser, flags: Flags, description: str, config_help: str,
                      set_help: str = "override any setting (JSON values)") -> None:
    p.formatter_class = argparse.RawDescriptionHelpFormatter
    p.description = description
    p.add_argument("--config", default=None, help=config_help)
    for flag, (_, typ, help_) in flags.items():
        if typ is list:
            p.add_argument(flag, nargs="+", default=None, help=help_)
        else:
            p.add_argument(flag, type=str if typ == "pairs" else typ, default=None, help=help_)
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help=set_help)
    p.add_argument("--json", action="store_true", help="print the result as one JSON line")


def settings_from_args(args: argparse.Namespace, cls, flags: Flags, where: str):
    """The recipe (``--config``), then the flags given, then ``--set`` -> a ``cls`` (unknown keys fail)."""
    from training.configs import apply_overrides, load_config, to_dataclass
    data = load_config(args.config) if args.config else {}
    for flag, (name, typ, _) in flags.items():
        v = getattr(args, flag[2:].replace("-", "_"), None)
        if v is None:
            continue
        if typ == "pairs":
            v = [[int(x) for x in pair.split(":")] for pair in v.split(",") if pair]
        data[name] = v
    return to_dataclass(cls, apply_overrides(data, args.set), where)


def run_stage(command: str, args: argparse.Namespace, settings: Callable, run: Callable, keys: Sequence[str],
              width: int, hide: Sequence[str] = ()) -> int:
    """settings(args) -> run(settings, progress=...) -> print the result (rank 0 only under torchrun): one JSON
    line with ``--json`` (without ``hide``), else the ``keys`` it has, one per line."""
    try:
        s = settings(args)
        res = run(s, progress=not args.json)
    except (ValueError, FileNotFoundError) as e:
        print(f"python -m training {command}: {e}", file=sys.stderr)
        return 2
    if res.get("rank", 0) != 0:                               # torchrun: only rank 0 reports
        return 0
    if args.json:
        print(json.dumps({k: v for k, v in res.items() if k not in hide}, default=str))
    else:
        for k in keys:
            if k in res:
                print(f"{k:{width}s} {res[k]}")
    return 0
