"""``python -m training.prompts.library``: list, show, import, export and delete learned prompts (no torch).

    python -m training.prompts.library list [--json]          # user library + shipped assets/prompts
    python -m training.prompts.library show NAME|FILE
    python -m training.prompts.library import FILE [--name NAME] [--force]
    python -m training.prompts.library export NAME DST        # DST.safetensors + DST.json (metadata)
    python -m training.prompts.library delete NAME

``import`` refuses a prompt learned for another model than ``--model`` (default: the installed default).
"""
from __future__ import annotations

import argparse
import json
import sys

from dcclip_core import prompts


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m training.prompts.library", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="default", help="model the prompts must fit (import, list)")
    sub = ap.add_subparsers(dest="cmd", required=True)
    ls = sub.add_parser("list")
    ls.add_argument("--json", action="store_true")
    sh = sub.add_parser("show")
    sh.add_argument("prompt")
    im = sub.add_parser("import")
    im.add_argument("file")
    im.add_argument("--name")
    im.add_argument("--force", action="store_true")
    ex = sub.add_parser("export")
    ex.add_argument("prompt")
    ex.add_argument("dst")
    de = sub.add_parser("delete")
    de.add_argument("prompt")
    args = ap.parse_args(argv)
    import dcclip_core
    model = dcclip_core.load(args.model)
    try:
        if args.cmd == "list":
            rows = prompts.list_prompts(model=model)
            if args.json:
                for r in rows:
                    print(json.dumps(r, ensure_ascii=False))
            else:
                print(f"{'name':34s} {'method':13s} {'classes':>7s} {'shots':>5s} {'val':>6s} {'fits':>4s}  where")
                for r in rows:
                    va = r.get("val_accuracy")
                    print(f"{r['name'][:34]:34s} {r.get('method', '?'):13s} {r['classes']:7d} "
                          f"{str(r.get('shots', '')):>5s} {('%.3f' % va) if va is not None else '-':>6s} "
                          f"{'yes' if r.get('compatible') else 'NO':>4s}  {'shipped' if r['shipped'] else 'user'}")
        elif args.cmd == "show":
            p = prompts.load_prompt(args.prompt)
            print(json.dumps({**p.meta, "tensors": {k: list(v.shape) for k, v in p.tensors.items()},
                              "path": str(p.path)}, ensure_ascii=False, indent=1))
        elif args.cmd == "import":
            print(prompts.import_prompt(args.file, name=args.name, model=model, overwrite=args.force))
        elif args.cmd == "export":
            print(prompts.export_prompt(args.prompt, args.dst))
        elif args.cmd == "delete":
            prompts.delete_prompt(args.prompt)
    except prompts.PromptError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
