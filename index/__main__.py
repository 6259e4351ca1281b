"""python -m index {build,search,stats,duplicates,label,export,remove} — see ``python -m index COMMAND --help``.

Exit codes: 0 ok (build: also when some files are bad — they are recorded, see ``stats``), 2 bad input
(missing folder / database / query image / label set, a missing or empty query, a path to remove that is not
indexed, bad arguments), 3 model not available, 1 unexpected failure, 130 interrupted.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import unicodedata
from pathlib import Path

from .duplicates import FLOOR, HAMMING, SIMILAR

EXIT_OK, EXIT_FAIL, EXIT_INPUT, EXIT_MODEL = 0, 1, 2, 3


def _out(obj) -> None:
    print(json.dumps(obj, ensure_ascii=False), flush=True)


def _width(text: str) -> int:
    """Columns ``text`` takes in a terminal: east-asian wide / full-width characters 2, combining marks 0."""
    return sum(0 if unicodedata.combining(c) else 2 if unicodedata.east_asian_width(c) in "WF" else 1
               for c in str(text))


def _pad(text: str, width: int) -> str:
    """``text`` left-aligned in ``width`` terminal columns (``str.ljust`` counts a Chinese character as 1)."""
    return str(text) + " " * max(0, width - _width(text))


def _load_model(name: str | None):
    import dcclip_core
    return dcclip_core.load(name or "default")


def cmd_build(a) -> int:
    from .indexer import build_index
    if not os.path.isdir(a.dir):
        print(f"error: folder not found: {a.dir}" if not os.path.exists(a.dir) else f"error: not a folder: {a.dir}",
              file=sys.stderr)
        return EXIT_INPUT
    if a.ray:
        from .distributed import available
        if not available():
            print("error: --ray needs ray[data]: pip install -r requirements-cluster.txt", file=sys.stderr)
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
        stats = build_index(a.dir, a.db, model=model, progress=progress, batch_size=a.batch_size, workers=a.workers,
                            index_kind=a.index_kind, ray=a.ray)
        if not a.no_text:                          # the image index is complete and searchable from here on
            if bar is not None:
                bar.close()
                bar = tqdm(total=0, unit="img", file=sys.stderr, dynamic_ncols=True, desc="reading text",
                           mininterval=0.5)
            from .textpass import read_texts
            stats["text"] = read_texts(a.db, model=model, progress=progress, workers=a.workers, ray=a.ray)
        if not a.no_faces:                         # after the text pass: the index is searchable meanwhile
            if bar is not None:
                bar.close()
                bar = tqdm(total=0, unit="img", file=sys.stderr, dynamic_ncols=True, desc="finding faces",
                           mininterval=0.5)
            from .facepass import find_faces
            stats["faces"] = find_faces(a.db, progress=progress, workers=1 if not a.ray else a.workers, ray=a.ray)
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
        t = stats.get("text")
        if t:
            print(f"text: {t['read']} photos read in {t['seconds']:.1f}s, {t['with_text']} with text "
                  f"({t['lines']} lines), {t['errors']} could not be read, {t['capped']} capped")
        f = stats.get("faces")
        if f and not f["enabled"]:
            print("faces: switched off for this library (python -m index people --db DB --faces on)")
        elif f:
            print(f"faces: {f['looked']} photos looked at in {f['seconds']:.1f}s, {f['faces']} faces in "
                  f"{f['with_faces']} photos, {f['new_people']} new people, {f['joined']} joined a person, "
                  f"{f['errors']} could not be read, {f['capped']} capped")
        if stats["errors"] or (t and (t["errors"] or t["capped"])) or (f and (f["errors"] or f["capped"])):
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
    if any(not q.strip() for q in queries):
        print('error: an empty QUERY (type what to look for, e.g. "一只猫" or "a cat")', file=sys.stderr)
        return EXIT_INPUT
    s = _searcher(a)
    _warn_model_mismatch(s)
    jobs = [("image", p) for p in images] + [("text", q) for q in queries]
    for kind, q in jobs:
        try:
            kw = dict(k=a.k, threshold=a.threshold, offset=a.offset, folder=a.folder, date_from=a.date_from,
                      date_to=a.date_to)
            kw["text"] = a.text_contains or (True if a.with_text else None)
            res = s.search_image(q, **kw) if kind == "image" else s.search(q, **kw)
        except ImageLoadError as e:
            print(f"error: cannot read query image {q}: {e.reason}", file=sys.stderr)
            return EXIT_INPUT
        if a.json:
            _out({"query": q, "results": [{"path": r["path"], "score": round(r["score"], 6), "width": r["width"],
                                           "height": r["height"], "taken_at": r["taken_at"],
                                           "why": r.get("why", [])} for r in res]})
        else:
            print(f"# {q}" + (" (image)" if kind == "image" else ""))
            if not res:
                print("  (no results)")
            for i, r in enumerate(res, 1 + a.offset):
                why = ", ".join(f"“{w['text']}”" if "text" in w else f"{w['en']} / {w['zh']} {w['share']:.2f}"
                                for w in r.get("why", []))
                print(f"{i:4d}  {r['score']:.4f}  {r['path']}" + (f"   [{why}]" if why else ""))
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
    idx = st["index"]
    print(f"index      {idx['kind']}" + (f" (asked: {idx['configured']})" if idx["configured"] != "auto" else "")
          + ("" if idx["file"] else ", not saved yet"))
    for ls in st["label_sets"]:
        print(f"labels     {ls['label_set']}: {ls['images']} photos, {len(ls['labels'])} labels "
              f"({', '.join(ls['labels'][:8])}{', ...' if len(ls['labels']) > 8 else ''})")
    print(f"errors     {st['errors']}" + ("" if not st["errors_by_reason"] else "  (" + ", ".join(
        f"{k}: {n}" for k, n in st["errors_by_reason"].items()) + ")"))
    for e in st["error_list"]:
        print(f"  {e['path']}: {e['reason']}  [{e['time']}]")
    if st["errors"] > len(st["error_list"]):
        print(f"  ... {st['errors'] - len(st['error_list'])} more (--all-errors)")
    t = st["text"]
    print(f"text       {t['with_text']} photos with text ({t['lines']} lines), {sum(t['photos'].values())} read, "
          f"{t['pending']} to read" + (f", {len(t['errors'])} could not be read or were capped" if t["errors"] else ""))
    for e in t["errors"]:
        print(f"  {e['path']}: {e['state']}: {e['reason']}  [{e['time']}]")
    f = st["faces"]
    print("faces      " + ("switched off, " if not f["enabled"] else "") + f"{f['faces']} faces in {f['with_faces']} "
          f"photos, {f['people']} people ({f['named']} named), {sum(f['photos'].values())} looked at, "
          f"{f['pending']} to look at" + (f", {len(f['errors'])} could not be read or were capped"
                                           if f["errors"] else ""))
    for e in f["errors"]:
        print(f"  {e['path']}: {e['state']}: {e['reason']}  [{e['time']}]")
    return EXIT_OK


def cmd_people(a) -> int:
    """List people, or change them (--rename, --merge, --recluster, --faces on|off, --delete-faces)."""
    from . import people
    from .db import PhotoDB
    with PhotoDB(a.db, create=False) as db:
        try:
            if a.delete_faces:                  # and finding off, unless asked on (else the next build finds them again)
                db.set_faces_enabled(a.faces == "on")
                n = db.delete_face_data()
                print(f"deleted {n} faces and every person; finding faces is "
                      f"{'on' if a.faces == 'on' else 'off (--faces on)'}", file=sys.stderr)
            elif a.faces is not None:
                db.set_faces_enabled(a.faces == "on")
            if a.rename is not None:
                people.rename(db, int(a.rename[0]), a.rename[1])
            if a.merge is not None:
                people.merge(db, int(a.merge[0]), int(a.merge[1]))
            if a.recluster:
                r = people.recluster(db)
                print(f"re-grouped {r['faces']} faces into {r['people']} people", file=sys.stderr)
        except (people.PersonNotFoundError, ValueError) as e:
            print(f"error: {e}", file=sys.stderr)
            return EXIT_INPUT
        rows = people.people(db)
        if a.json:
            for r in rows:
                _out({"id": r["id"], "name": r["name"], "faces": r["faces"], "paths": r["paths"]})
            return EXIT_OK
        if not rows:
            print("no people yet" + ("" if db.faces_enabled() else " (face finding is switched off: --faces on)"))
        for r in rows:
            print(f"{r['id']:5d}  {_pad(r['name'] or '(unnamed)', 20)}  {r['faces']:4d} faces  {r['photos']:4d} photos"
                  f"  {', '.join(os.path.basename(p) for p in r['paths'][:4])}{', ...' if r['photos'] > 4 else ''}")
    return EXIT_OK


def cmd_duplicates(a) -> int:
    s = _searcher(a)
    _warn_model_mismatch(s)
    hmax = None if a.no_hash else a.hamming
    a.threshold, a.floor = s.cosines(a.threshold, a.floor)          # None = the model's own cosines
    pairs = s.duplicates(threshold=a.threshold, max_hamming=hmax, floor=a.floor, similar=a.similar)
    what = ("identical files" + ("" if hmax is None else f" or hash within {hmax} bits at similarity >= {a.floor}")
            + (f" or similarity >= {a.threshold}" if a.similar else ""))
    if a.groups:
        from .duplicates import group_duplicates
        groups = group_duplicates(pairs, s.db)
        for g in groups:
            if a.json:
                _out({"group": g["group"], "size": g["size"], "score": g["score"], "keep": g["keep"],
                      "paths": g["paths"]})
            else:
                print(f"group {g['group']}: {g['size']} photos, similarity >= {g['score']:.4f} (keep {g['keep']})")
                for path in g["paths"]:
                    print(f"    {path}")
        if not a.json and not groups:
            print(f"no duplicates ({what})")
        return EXIT_OK
    for p in pairs:
        if a.json:
            obj = {"a": p["a"], "b": p["b"], "score": round(p["score"], 6)}
            if a.details:
                obj.update(hamming=p["hamming"], match=p["match"])
            _out(obj)
        else:
            ham = "" if p["hamming"] is None else f"  hash±{p['hamming']:2d}"
            print(f"{p['score']:.4f}{ham}  {_pad(p['match'], 9)}  {p['a']}  <->  {p['b']}")
    if not a.json and not pairs:
        print(f"no pairs of duplicates ({what})")
    return EXIT_OK


def cmd_label(a) -> int:
    from .labels import label_index
    model = _load_model(a.model)
    bar = None
    if not a.quiet and not a.json:
        from tqdm import tqdm
        bar = tqdm(total=0, unit="img", file=sys.stderr, dynamic_ncols=True, desc="labelling", mininterval=0.5)

    def progress(done, total):
        if bar is not None:
            bar.total = total
            bar.update(done - bar.n)

    try:
        res = label_index(a.db, a.labels, label_set=a.label_set, model=model, top=a.top, relabel=a.relabel,
                          progress=progress)
    finally:
        if bar is not None:
            bar.close()
    if a.json:
        _out(res)
        return EXIT_OK
    print(f"label set {res['label_set']!r}: {res['labeled']} photos labelled now, {res['images']} in the set "
          f"({res['seconds']:.1f}s)")
    width = max(_width(lb) for lb in res["counts"])
    for lb, n in sorted(res["counts"].items(), key=lambda kv: -kv[1]):
        print(f"  {_pad(lb, width)}  {n}")
    print(f"export with: python -m index export --db {a.db} --label-set {res['label_set']} --format csv --out FILE")
    return EXIT_OK


def cmd_export(a) -> int:
    from .labels import export_labels, label_sets
    fmt = a.format or (Path(a.out).suffix.lstrip(".").lower() if a.out and a.out != "-" else "csv")
    if fmt not in ("csv", "json"):
        print(f"error: cannot tell the format from {a.out!r}; pass --format csv|json", file=sys.stderr)
        return EXIT_INPUT
    name = a.label_set
    if name is None:
        sets = label_sets(a.db)
        if len(sets) != 1:
            print("error: pass --label-set NAME (sets: " + (", ".join(x["label_set"] for x in sets) or "none yet; "
                  "create one with: python -m index label") + ")", file=sys.stderr)
            return EXIT_INPUT
        name = sets[0]["label_set"]
    n = export_labels(a.db, name, fmt, a.out, top_only=a.top_only)
    if a.out and a.out != "-":
        if a.json:
            _out({"label_set": name, "rows": n, "format": fmt, "out": str(Path(a.out).expanduser().absolute())})
        else:
            print(f"wrote {n} rows of label set {name!r} to {a.out}", file=sys.stderr)
    return EXIT_OK


def cmd_remove(a) -> int:
    from .labels import remove_paths
    res = remove_paths(a.db, a.paths)
    if a.json:
        _out(res)
    else:
        print(f"removed {res['removed']} photos and {res['errors_removed']} error records from the index")
    for p in res["not_found"]:
        print(f"warning: not in the index: {p}", file=sys.stderr)
    return EXIT_INPUT if res["not_found"] else EXIT_OK


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
    b.add_argument("--ray", nargs="?", const=True, default=None, metavar="ADDRESS",
                   help="decode + embed with Ray Data: a local Ray with --workers CPUs, or the cluster at ADDRESS "
                        "(e.g. auto, ray://host:10001; workers must see the same paths); needs "
                        "requirements-cluster.txt")
    b.add_argument("--no-text", action="store_true",
                   help="skip the text pass (reading the text in photos, after the image index; resumable)")
    b.add_argument("--no-faces", action="store_true",
                   help="skip the face pass (finding faces and grouping them into people, after the text pass; "
                        "resumable)")
    b.add_argument("--index-kind", choices=["auto", "flat", "hnsw", "ivf-flat", "ivf-sq8", "ivf-pq"], default=None,
                   help="vector index: auto = exact up to 200k photos, IVF-Flat above (HNSW on request) (default: keep the DB's "
                        "setting, initially auto); ivf-sq8/ivf-pq use 4-8x less memory for millions")
    b.set_defaults(fn=cmd_build)

    s = sub.add_parser("search", help="text and/or image queries")
    s.add_argument("query", nargs="*", metavar="QUERY")
    common(s)
    s.add_argument("--k", "-k", type=int, default=20)
    s.add_argument("--image", action="append", metavar="PATH", help="query by image (repeatable)")
    s.add_argument("--threshold", type=float, default=0.0,
                   help="drop results scoring below this cosine similarity (default: %(default)s, as the app: "
                        "below 0 a photo is unrelated to the query; -1 shows everything)")
    s.add_argument("--offset", type=int, default=0, help="skip this many results (paging)")
    s.add_argument("--folder", default=None, help="only photos below this folder")
    s.add_argument("--from", dest="date_from", default=None, metavar="DATE", help="taken on/after (YYYY-MM-DD)")
    s.add_argument("--to", dest="date_to", default=None, metavar="DATE", help="taken on/before (YYYY-MM-DD)")
    s.add_argument("--with-text", action="store_true", help="only photos with text in them (the text pass)")
    s.add_argument("--text-contains", default=None, metavar="STRING",
                   help="only photos whose text contains STRING (traditional / simplified, case ignored)")
    s.set_defaults(fn=cmd_search)

    st = sub.add_parser("stats", help="counts, model and the list of bad files")
    common(st)
    st.add_argument("--all-errors", action="store_true", help="list every error (default: newest 1000)")
    st.set_defaults(fn=cmd_stats)

    d = sub.add_parser("duplicates", help="duplicate photos (same file, or resized / recompressed copies)",
                       description="Pairs (default) or groups (--groups) of duplicate photos. A pair is a duplicate "
                                   'when its files are identical (match "identical"), or when its 64-bit '
                                   "perceptual hashes differ in <= --hamming bits and its embedding similarity is "
                                   '>= --floor (match "near"). Similarity alone is no duplicate (photos of one '
                                   "kind of thing score >= 0.95): --similar adds those pairs (match \"similar\", "
                                   'similarity >= --threshold). JSON: one {"a", "b", "score"} per line (--details '
                                   'adds "hamming" and "match"); with --groups one {"group", "size", "score", '
                                   '"keep", "paths"} per line.')
    common(d)
    d.add_argument("--similar", action="store_true",
                   help="also list pairs similar by the embedding alone (not duplicates; see --threshold)")
    d.add_argument("--threshold", type=float, default=None,
                   help=f"similarity of a --similar pair (default: the model's own; {SIMILAR} in a v1 model)")
    d.add_argument("--hamming", type=int, default=HAMMING,
                   help="max differing hash bits of 64 (default: %(default)s)")
    d.add_argument("--floor", type=float, default=None,
                   help=f"min similarity for a hash match (default: the model's own; {FLOOR} in a v1 model)")
    d.add_argument("--no-hash", action="store_true",
                   help="leave the perceptual hash out: identical files only (plus --similar pairs)")
    d.add_argument("--groups", action="store_true", help="connected groups instead of pairs")
    d.add_argument("--details", action="store_true", help="JSON pairs also carry hamming and match")
    d.set_defaults(fn=cmd_duplicates)
    lb = sub.add_parser("label", help="zero-shot label every photo with your labels (Chinese and/or English)",
                        description="Scores every indexed photo against LABELS (prompt templates per language, "
                                    "ensembled; a label with Chinese characters uses Chinese templates) and "
                                    "stores the best --top labels with their probability in the label set. "
                                    "Re-running with the same labels labels only photos indexed since.")
    common(lb)
    lb.add_argument("--labels", required=True, help='comma-separated, e.g. "猫,狗,beach,生日蛋糕"')
    lb.add_argument("--label-set", default=None, help="name to store them under (default: default)")
    lb.add_argument("--top", type=int, default=1, help="labels kept per photo (default: %(default)s)")
    lb.add_argument("--relabel", action="store_true", help="label every photo again")
    lb.add_argument("--quiet", action="store_true", help="no progress bar")
    lb.set_defaults(fn=cmd_label)

    ex = sub.add_parser("export", help="write a label set as CSV or JSON",
                        description="CSV columns path,label,score,cosine,rank,source (UTF-8 with BOM); JSON: "
                                    "an array of objects with the same keys. A photo whose label was corrected by "
                                    "hand has one row: its corrected label, score 1.0, source manual.")
    common(ex)
    ex.add_argument("--label-set", default=None, help="set to export (default: the only one)")
    ex.add_argument("--format", choices=["csv", "json"], default=None, help="default: from --out's suffix, else csv")
    ex.add_argument("--out", default="-", help="file to write (default: stdout)")
    ex.add_argument("--top-only", action="store_true", help="only each photo's best label")
    ex.set_defaults(fn=cmd_export)

    pe = sub.add_parser("people", help="the people found in the photos: list, name, merge, re-group",
                        description="Lists the people the face pass grouped the faces into (one line, or one JSON "
                                    "object {id, name, faces, paths}, per person), after applying the changes asked.")
    pe.add_argument("--rename", nargs=2, metavar=("ID", "NAME"), help="name (or rename) a person, e.g. 3 妈妈")
    pe.add_argument("--merge", nargs=2, type=int, metavar=("ID", "OTHER"),
                    help="put every face of OTHER into ID (they are one person)")
    pe.add_argument("--recluster", action="store_true",
                    help="group the faces again from scratch (names and what was done by hand are kept)")
    pe.add_argument("--faces", choices=["on", "off"], default=None,
                    help="switch face finding on or off for this library (off: the face pass does nothing)")
    pe.add_argument("--delete-faces", action="store_true",
                    help="delete every face, person and name, and switch face finding off (unless --faces on)")
    common(pe)
    pe.set_defaults(fn=cmd_people)

    rm = sub.add_parser("remove", help="un-index files or whole folders (the files are not touched)",
                        description="Deletes the photos' rows, vectors, labels and error records; a later build "
                                    "of a folder that contains them indexes them again. Exit code 2 when a PATH "
                                    "was not in the index.")
    rm.add_argument("paths", nargs="+", metavar="PATH")
    common(rm)
    rm.set_defaults(fn=cmd_remove)
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
