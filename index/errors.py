"""Exceptions of the index package (all derive from ``IndexErrorBase``)."""
from __future__ import annotations


class IndexErrorBase(Exception):
    """Base class of every error the index package raises on purpose (messages are meant for users)."""


class DatabaseNotFoundError(IndexErrorBase, FileNotFoundError):
    """The index database file does not exist."""


class RootNotFoundError(IndexErrorBase, FileNotFoundError):
    """The folder to index does not exist or is not a directory."""


class NotIndexedError(IndexErrorBase, KeyError):
    """A path that is not in the index (e.g. ``Searcher.similar`` of an unknown photo)."""

    def __str__(self):  # KeyError would quote the message
        return str(self.args[0]) if self.args else "not indexed"


class SchemaError(IndexErrorBase):
    """The database was written by a newer version of this program (or is not an index database)."""
