"""DC-CLIP photo search: a bilingual (Chinese/English) offline photo search page (Gradio 6). This file only parses
arguments and launches; the page is ``ui.page`` (one module per tab in ``ui/tabs``), the service behind it
``ui.backend.Backend``, what the page may fetch ``ui.files``.

    python app.py [--host 127.0.0.1] [--port 7860] [--db PATH] [--root DIR] [--demo] [--auth user:pass]

Without --db the bundled demo photos (assets/demo) are indexed into <cache>/library.db (the user's library: folders
added in the Index tab go there too), where <cache> is $DCCLIP_CACHE or ~/.cache/dcclip. ``--demo`` (the conference
booth) uses a database and thumbnails of its own under <cache>/booth that hold only the bundled photos, and is
read-only. The page is served first; then the model loads, warms up and the index is (re)built in a background
thread while the status line reports progress; then the text in the photos is read, in a thread of its own
(search works meanwhile; the booth's photos are read too).
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

T_START = time.time()
if __name__ == "__main__" and "IPython" not in sys.modules:
    # a script, not a notebook: gradio's IPython extension would import IPython (0.25 s of start-up)
    sys.modules["IPython"] = None  # type: ignore[assignment]

from ui.backend import (DEMO_ROOT, Backend, SearchBatcher, booth_dir, default_cache, installed_models,  # noqa: E402,F401
                        library_db, prepare_booth)
from ui.i18n import EN, I18N, TABLES, ZH, lang_of, tr  # noqa: E402,F401  (the tests read them here)
from ui.page import build_app, launch_kwargs  # noqa: E402
from ui.tabs.model import about_md, metrics_md  # noqa: E402,F401


def parse_args(argv=None):
    p = argparse.ArgumentParser(description="DC-CLIP bilingual offline photo search (Gradio).")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=int(os.environ.get("GRADIO_SERVER_PORT") or 7860))
    p.add_argument("--db", default=None, help="index database (default: $DCCLIP_CACHE/library.db, which starts "
                                              "with the bundled demo photos)")
    p.add_argument("--root", default=None, help="folder to (re)index into --db in the background")
    p.add_argument("--demo", action="store_true", help="conference booth: only the bundled photos, in a database "
                                                       "of its own; read-only; no file paths")
    p.add_argument("--auth", default=None, help="user:password required to open the page")
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    cache = default_cache()
    if args.demo:
        if args.db or args.root:
            sys.exit("--demo shows only the bundled photos in a database of its own: it takes no --db or --root")
        booth = booth_dir(cache)
        booth.mkdir(parents=True, exist_ok=True)
        db, root, thumbs = booth / "demo.db", str(DEMO_ROOT), booth / "thumbs"
        if prepare_booth(db, DEMO_ROOT):
            print("booth database held more than the bundled photos: rebuilt", flush=True)
    elif args.db is None:
        cache.mkdir(parents=True, exist_ok=True)
        db, root, thumbs = library_db(cache), args.root or str(DEMO_ROOT), cache / "thumbs"
    else:
        db, root, thumbs = Path(args.db), args.root, cache / "thumbs"
    auth = None
    if args.auth:
        if ":" not in args.auth:
            sys.exit("--auth must be user:password")
        auth = tuple(args.auth.split(":", 1))
    t0 = time.time()
    # the queue's default limit for events that set none (Blocks makes its queue when built; a second
    # app.queue() call would rebuild the whole route table: 0.3 s of start-up)
    os.environ.setdefault("GRADIO_DEFAULT_CONCURRENCY_LIMIT", "4")
    # gradio rebuilds its monitoring summary (a pandas frame of up to 10k past events) after every event by
    # default: on a busy page that is most of a search's server time. Every 200 events, over the last 2000.
    os.environ.setdefault("GRADIO_ANALYTICS_CACHE_FREQUENCY", "200")
    os.environ.setdefault("GRADIO_ANALYTICS_MAX_EVENTS", "2000")
    backend = Backend(db, root=root, demo=args.demo, thumb_dir=thumbs)
    app = build_app(db, demo=args.demo, backend=backend, start=False)
    kw = launch_kwargs(app, demo=args.demo)
    print(f"UI built in {time.time() - t0:.2f}s", flush=True)
    app.launch(server_name=args.host, server_port=args.port, auth=auth, show_error=False,
               prevent_thread_lock=True, **kw)
    backend.start()  # model load, warm-up and indexing begin once the page is served
    print(f"page served after {time.time() - T_START:.2f}s (from interpreter start)", flush=True)
    app.block_thread()


if __name__ == "__main__":
    main()
