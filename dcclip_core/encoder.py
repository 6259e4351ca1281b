"""What the rest of the project may ask of a model: ``Encoder`` (search, labels) and ``PixelEncoder`` (indexing).

``dcclip_core.Model`` satisfies both; so can a test fake or a reference model in a benchmark, as long as it has
these methods and an ``info`` mapping with the keys in ``INFO_KEYS``:

    id          str   the model's name for people (stored in index databases beside the vectors)
    hash        str   identity of the exact weights: vectors of two models compare only when their hashes agree
    dims        int   embedding width d
    languages   list  the query languages, e.g. ["zh", "en"]

The runtime model's ``info`` also has ``name``, ``image_size`` (the side of its square input; the indexer decodes
for it and assumes 224 without it), ``feature_dim``, ``files`` and ``path``.
"""
from __future__ import annotations

from typing import Any, Mapping, Protocol, Sequence, runtime_checkable

import numpy as np

from .preprocess import ImageInput

__all__ = ["Encoder", "PixelEncoder", "INFO_KEYS"]

INFO_KEYS = ("id", "hash", "dims", "languages")


@runtime_checkable
class Encoder(Protocol):
    """Texts and images into one space: rows L2-normalised, comparable by inner product."""

    @property
    def info(self) -> Mapping[str, Any]:
        """At least ``INFO_KEYS``."""

    def encode_text(self, texts: Sequence[str]) -> np.ndarray:
        """list[str] -> float32 (n, d)."""

    def encode_image(self, images: Sequence[ImageInput]) -> np.ndarray:
        """list[path | bytes | PIL image] -> float32 (n, d)."""


@runtime_checkable
class PixelEncoder(Encoder, Protocol):
    """An ``Encoder`` whose image side splits into preprocessing (worker threads) and encoding (batches)."""

    def preprocess(self, image: ImageInput) -> np.ndarray:
        """One image -> float32 (3, S, S), S = ``info["image_size"]``."""

    def encode_pixels(self, pixels: np.ndarray) -> np.ndarray:
        """float32 (n, 3, S, S) -> float32 (n, d)."""
