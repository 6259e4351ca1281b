"""The numpy helpers every part of the project shares (one implementation each).

    from dcclip_core.numeric import l2_normalize, softmax
    l2_normalize(emb)           # rows scaled to unit length; an all-zero row stays zero
    softmax(100 * cos)          # probabilities along the last axis, computed stably
"""
from __future__ import annotations

import numpy as np

__all__ = ["l2_normalize", "softmax"]

EPS = 1e-12


def l2_normalize(x, axis: int = -1) -> np.ndarray:
    """``x`` divided by its L2 norm along ``axis`` (norms below 1e-12 count as 1e-12, so zeros stay zeros).
    Floating input keeps its dtype; anything else (ints, lists of ints) becomes float32."""
    x = np.asarray(x)
    if not np.issubdtype(x.dtype, np.floating):
        x = x.astype(np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=axis, keepdims=True), EPS)


def softmax(z, axis: int = -1) -> np.ndarray:
    """exp(z) / sum(exp(z)) along ``axis``, shifted by the maximum first so that large logits do not overflow."""
    z = np.asarray(z)
    e = np.exp(z - z.max(axis, keepdims=True))
    return e / e.sum(axis, keepdims=True)
