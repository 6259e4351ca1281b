"""``python -m training.prompts.ship --collection DIR``: rebuild the prompts shipped in assets/prompts.

Prompts are tied to the model they were learned with (id + hash); after the default model is rebuilt, run
this (about 10 min on 2 cores) to learn them again:

    mvlpt-source-coop         MVLPT source prompt: CoOp (16 random vectors) on the union of the 7 source tasks of
                              the collection (32 shots per class), seeds 0, 1, 2 averaged; cv-digits never in it
    mvlpt-source-upt-1seed    MVLPT source prompt: UPT on the same union, one seed (averaging UPT seeds breaks
                              it); the newest source, so `--method mvlpt` starts from it by default
    handwritten-digits-mvlpt  cv-digits (OpenCV digits.png), 16 shots, initialised from the source prompt
    colours-coop              colour names (red, yellow, green, blue, white, black), CoOp, 16 shots

The collection comes from ``python -m training.prompts.tasks build DIR``.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from dcclip_core.prompts import SHIPPED_DIR


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m training.prompts.ship", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--collection", required=True)
    ap.add_argument("--out-dir", type=Path, default=SHIPPED_DIR)
    ap.add_argument("--source", default=None, help="reuse this source prompt instead of training one")
    args = ap.parse_args(argv)
    from training.__main__ import main as training_main
    from . import source as source_cmd
    args.out_dir.mkdir(parents=True, exist_ok=True)
    src = args.out_dir / "mvlpt-source-coop.safetensors"
    if args.source:
        if Path(args.source).resolve() != src.resolve():
            src.write_bytes(Path(args.source).read_bytes())
    else:
        rc = source_cmd.main(["--collection", args.collection, "--out", str(src), "--shots", "32", "--steps", "300"])
        if rc:
            return rc
    upt = args.out_dir / "mvlpt-source-upt-1seed.safetensors"
    rc = source_cmd.main(["--collection", args.collection, "--base", "upt", "--seeds", "0", "--out", str(upt)])
    if rc:
        return rc
    coll = Path(args.collection)
    for name, task, method in (("handwritten-digits-mvlpt", "cv-digits", "mvlpt"), ("colours-coop", "colours", "coop")):
        rc = training_main(["fewshot", "--dataset", str(coll / task), "--method", method, "--shots", "16", "--seed",
                            "0", "--json", "--quiet", "--out", str(args.out_dir / f"{name}.safetensors"), "--name",
                            name] + (["--source", str(src)] if method == "mvlpt" else []))
        if rc:
            return rc
    for p in args.out_dir.glob("*.safetensors"):
        p.chmod(0o644)
    return 0


if __name__ == "__main__":
    sys.exit(main())
