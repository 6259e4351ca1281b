"""Photo index and search: SQLite (WAL) + FAISS over dcclip_core embeddings (onnxruntime + numpy, no torch).

    from index import PhotoDB, build_index, Searcher, IndexErrorBase
    stats = build_index("~/Pictures", "photos.db", progress=lambda done, total, path: ...)
    s = Searcher("photos.db")
    s.search("一只猫", k=20)          # [{"path", "score", "width", "height", "size", "mtime", "taken_at"}, ...]

    from index.labels import label_index, labels_of, export_labels, remove_paths
    label_index("photos.db", "猫,狗,beach", label_set="mine")   # zero-shot labels, stored in the DB
    s.duplicate_groups()                  # duplicates: identical files, resized / recompressed copies
    s.duplicates_of("/photos/a.jpg")      # the same, for one photo: [{"path", "score", "match"}]

Every entry point takes an optional ``model`` (a ``dcclip_core.Encoder``; building an index also needs its
``preprocess`` and ``encode_pixels``, ``dcclip_core.encoder.PixelEncoder``); by default ``dcclip_core.load()`` is
called lazily, on first need. Every error raised on purpose is an ``IndexErrorBase``.
"""
from .errors import DatabaseNotFoundError, IndexErrorBase, NotIndexedError, RootNotFoundError, SchemaError
from .db import PhotoDB
from .indexer import build_index
from .search import Searcher
from .labels import export_labels, label_index, label_sets, labels_of, remove_paths

__all__ = ["PhotoDB", "build_index", "Searcher", "label_index", "label_sets", "labels_of", "export_labels",
           "remove_paths", "IndexErrorBase", "DatabaseNotFoundError",
           "RootNotFoundError", "NotIndexedError", "SchemaError"]
