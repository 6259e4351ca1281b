"""python -m index {build,search,stats,duplicates} — see ``python -m index COMMAND --help``.

Exit codes: 0 ok (build: also when some files are bad — they are recorded, see ``stats``), 2 bad input
(missing folder / database / query image, bad arguments), 3 model not available, 1 unexpected failure.
"""
from __future__ import annotations

import argparse
import json
import os
import sys

EXIT_OK, EXIT_FAIL, EXIT_INPUT, EXIT_MODEL = 0, 1, 2, 3


def _out(obj) -> None:
    print(json.dumps(obj, ensure_ascii=False), flush=True)


def _load_model(name: str | None):
    import dcclip_core
    return dcclip_core.load(name or "default")


def cmd_build(a) -> int:
    from .indexer import build_index
    if not os.path.isdir(a.dir):
        print(f"error: folder not found: {a.dir}" if not os.path.exists(a.dir) else f"error: not a folder: {a.dir}",
              file=sys.stderr)
        return EXIT_INPUT
    model = _load_model(a.model)
    bar = None
    if not a.quiet:
        from tqdm import tqdm
        bar = tqdm(total=0, unit="img", file=sys.stderr, dynamic_ncols=True, desc="indexing", mininterval=0.5)

    def progress(done, total, path):
        if bar is not None:
            if bar.total != total:
                bar.total = total
                bar.refresh()
            bar.update(done - bar.n)

    try:
        stats = build_index(a.dir, a.db, model=model, progress=progress, batch_size=a.batch_size, workers=a.workers)
    finally:
        if bar is not None:
            bar.close()
    if a.json:
        _out(stats)
    else:
        rate = stats["indexed"] / stats["seconds"] if stats["seconds"] > 0 else 0.0
        print(f"{stats['files']} files: {stats['indexed']} indexed, {stats['skipped']} unchanged, "
              f"{stats['updated']} refreshed, {stats['moved']} moved, {stats['removed']} removed, "
              f"{stats['errors']} errors in {stats['seconds']:.1f}s ({rate:.1f} images/s); "
              f"{stats['images']} images in {stats['db']}")
        if stats["errors"]:
            print(f"bad files are listed by: python -m index stats --db {a.db}")
    return EXIT_OK


def _searcher(a, need_model: bool = True):
    from .search import Searcher
    return Searcher(a.db, model=_load_model(a.model) if need_model else None)


def cmd_search(a) -> int:
    from dcclip_core import ImageLoadError
    queries = list(a.query or [])
    images = list(a.image or [])
    if not queries and not images:
        print("error: give a QUERY or --image PATH", file=sys.stderr)
        return EXIT_INPUT
    s = _searcher(a)
    _warn_model_mismatch(s)
    jobs = [("image", p) for p in images] + [("text", q) for q in queries]
    for kind, q in jobs:
        try:
            kw = dict(k=a.k, threshold=a.threshold, offset=a.offset, folder=a.folder, date_from=a.date_from,
                      date_to=a.date_to)
            res = s.search_image(q, **kw) if kind == "image" else s.search(q, **kw)
        except ImageLoadError as e:
            print(f"error: cannot read query image {q}: {e.reason}", file=sys.stderr)
            return EXIT_INPUT
        if a.json:
            _out({"query": q, "results": [{"path": r["path"], "score": round(r["score"], 6), "width": r["width"],
                                           "height": r["height"], "taken_at": r["taken_at"]} for r in res]})
        else:
            print(f"# {q}" + (" (image)" if kind == "image" else ""))
            if not res:
                print("  (no results)")
            for i, r in enumerate(res, 1 + a.offset):
                print(f"{i:4d}  {r['score']:.4f}  {r['path']}")
    return EXIT_OK


def _warn_model_mismatch(s) -> None:
    from .indexer import model_identity
    built = s.db.model_meta()
    _, mhash, _, _ = model_identity(s.model)
    if built["model_hash"] and built["model_hash"] != mhash:
        print(f"warning: the index was built with model {built['model_id']} ({built['model_hash']}), not the one "
              f"loaded ({mhash}); photos are found again after: python -m index build DIR --db {s.db_path}",
              file=sys.stderr)


def cmd_stats(a) -> int:
    s = _searcher(a, need_model=False)
    st = s.stats(error_limit=None if a.all_errors else 1000)
    if a.json:
        _out(st)
        return EXIT_OK
    print(f"database   {st['db']}")
    print(f"model      {st['model_id'] or '-'} ({st['model_hash'] or '-'}, dim {st['dim']})")
    print(f"images     {st['images']}")
    print(f"vectors    {st['vectors']}")
    print(f"errors     {st['errors']}")
    for e in st["error_list"]:
        print(f"  {e['path']}: {e['reason']}  [{e['time']}]")
    if st["errors"] > len(st["error_list"]):
        print(f"  ... {st['errors'] - len(st['error_list'])} more (--all-errors)")
    return EXIT_OK


def cmd_duplicates(a) -> int:
    s = _searcher(a)
    _warn_model_mismatch(s)
    pairs = s.duplicates(threshold=a.threshold)
    for p in pairs:
        if a.json:
            _out({"a": p["a"], "b": p["b"], "score": round(p["score"], 6)})
        else:
            print(f"{p['score']:.4f}  {p['a']}  <->  {p['b']}")
    if not a.json and not pairs:
        print(f"no pairs with similarity >= {a.threshold}")
    return EXIT_OK


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m index", description="Photo index and search (Chinese/English).")
    sub = p.add_subparsers(dest="cmd", required=True, metavar="COMMAND")

    def common(sp, db_required=True):
        sp.add_argument("--db", required=db_required, help="index database (SQLite) path")
        sp.add_argument("--model", default=None, help="model name or directory (default: the shipped 'default')")
        sp.add_argument("--json", action="store_true", help="machine-readable JSON lines")

    b = sub.add_parser("build", help="index (incrementally) every image under DIR")
    b.add_argument("dir", metavar="DIR")
    common(b)
    b.add_argument("--batch-size", type=int, default=32)
    b.add_argument("--workers", type=int, default=2, help="decode/preprocess threads")
    b.add_argument("--quiet", action="store_true", help="no progress bar")
    b.set_defaults(fn=cmd_build)

    s = sub.add_parser("search", help="text and/or image queries")
    s.add_argument("query", nargs="*", metavar="QUERY")
    common(s)
    s.add_argument("--k", "-k", type=int, default=20)
    s.add_argument("--image", action="append", metavar="PATH", help="query by image (repeatable)")
    s.add_argument("--threshold", type=float, default=None, help="drop results scoring below this")
    s.add_argument("--offset", type=int, default=0, help="skip this many results (paging)")
    s.add_argument("--folder", default=None, help="only photos below this folder")
    s.add_argument("--from", dest="date_from", default=None, metavar="DATE", help="taken on/after (YYYY-MM-DD)")
    s.add_argument("--to", dest="date_to", default=None, metavar="DATE", help="taken on/before (YYYY-MM-DD)")
    s.set_defaults(fn=cmd_search)

    st = sub.add_parser("stats", help="counts, model and the list of bad files")
    common(st)
    st.add_argument("--all-errors", action="store_true", help="list every error (default: newest 1000)")
    st.set_defaults(fn=cmd_stats)

    d = sub.add_parser("duplicates", help="pairs of near-identical photos by embedding similarity")
    common(d)
    d.add_argument("--threshold", type=float, default=0.95)
    d.set_defaults(fn=cmd_duplicates)
    return p


def main(argv=None) -> int:
    try:
        sys.stdout.reconfigure(errors="backslashreplace")
    except Exception:
        pass
    a = parser().parse_args(argv)
    from dcclip_core.config import ModelNotFoundError
    from .errors import IndexErrorBase
    try:
        if a.cmd != "build" and not os.path.isfile(a.db):
            print(f"error: index database not found: {a.db} (create it with: python -m index build DIR --db {a.db})",
                  file=sys.stderr)
            return EXIT_INPUT
        return a.fn(a)
    except ModelNotFoundError as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_MODEL
    except IndexErrorBase as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_INPUT
    except KeyboardInterrupt:
        print("interrupted (everything committed so far is kept)", file=sys.stderr)
        return 130
    except BrokenPipeError:
        try:
            sys.stdout = open(os.devnull, "w")
        except Exception:
            pass
        return EXIT_OK
    except Exception as e:                                      # no tracebacks for users
        print(f"error: {type(e).__name__}: {e}", file=sys.stderr)
        if os.environ.get("INDEX_DEBUG"):
            raise
        return EXIT_FAIL


if __name__ == "__main__":
    sys.exit(main())
