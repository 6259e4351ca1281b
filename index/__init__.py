"""Photo index and search: SQLite (WAL) + FAISS over dcclip_core embeddings (onnxruntime + numpy, no torch).

    from index import PhotoDB, build_index, Searcher, IndexError_
    stats = build_index("~/Pictures", "photos.db", progress=lambda done, total, path: ...)
    s = Searcher("photos.db")
    s.search("一只猫", k=20)          # [{"path", "score", "width", "height", "size", "mtime", "taken_at"}, ...]

Every entry point takes an optional ``model`` (anything with the dcclip_core.Model API); by default
``dcclip_core.load()`` is called lazily, on first need.
"""
from .errors import (DatabaseNotFoundError, IndexError_, IndexErrorBase, NotIndexedError, RootNotFoundError,
                     SchemaError)
from .db import PhotoDB
from .indexer import build_index
from .search import Searcher

__all__ = ["PhotoDB", "build_index", "Searcher", "IndexError_", "IndexErrorBase", "DatabaseNotFoundError",
           "RootNotFoundError", "NotIndexedError", "SchemaError"]
