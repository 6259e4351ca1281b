"""Readable relevance and a "no good match" decision for search results (numpy only; no torch, no ONNX).

    import dcclip_core
    from dcclip_core.relevance import load_relevance
    m = dcclip_core.load()
    rel = load_relevance(m)                    # reads <model dir>/relevance.json
    q = m.encode_text(["一杯咖啡"])[0]          # (d,)
    rel.query_has_match(q)                     # False for "qwxzv", "🐱🐱🐱", 2000 random characters ...
    rel.level(0.18), rel.percent(0.18)         # -> 3, 82: a per-photo level 0..3 and a 0-100 relevance
    rel.judge(q, scores)                       # both at once for one query's result cosines (any order)

What the numbers mean
---------------------
Raw cosines of this model are small and uneven (a cat photo scores 0.23 for "a cat"; an unrelated photo can
score 0.1), so the app must not show them. ``relevance.json``, written by ``python -m training.calibrate_relevance``
for one model (its id, hash and width are recorded, and a file made for another model is ignored), holds:

* **Score knots** ``s0 < s1 < s2 < s3 < s4`` for the cosine between a query and a photo. They are quantiles of
  a *null* distribution: the cosines that real class-name queries (the 1000 ImageNet class names, bare and in
  prompt templates, English and Chinese, ``assets/data``) get against the image-side vectors of *other*
  classes, i.e. photos they do not describe. The image-side vector of class k is exactly what the image tower
  outputs for a photo its classifier is sure is class k (the one-hot mix of the model's class prototypes);
  for a model without prototypes the null comes from synthetic images (noise, gradients, stripes, shapes)
  through the real image tower. ``s0`` = null median, ``s1`` / ``s2`` / ``s3`` / ``s4`` = the null's 95th /
  99th / 99.9th / 99.99th percentiles. So:

  ======  ================  ============================================================================
  level   name              the photo's score ...
  ======  ================  ============================================================================
  0       none              ... is within what 95 % of unrelated (query, photo) pairs reach: no good match
  1       weak              ... beats 95 % of unrelated pairs (p < 0.05)
  2       good              ... beats 99 % (p < 0.01)
  3       strong            ... beats 99.9 % (p < 0.001)
  ======  ================  ============================================================================

  ``percent`` interpolates linearly between the knots (s0 -> 0, s1 -> 25, s2 -> 50, s3 -> 75, s4 -> 100), so
  ``level == min(3, percent // 25)`` and both are monotone in the score. It is a readable rank against
  unrelated photos, not a probability. The scale is for *text -> photo* cosines (``q . image_vector``, the
  ``score`` of a text search); photo -> photo similarities live on another scale and must not be mapped.

* **A query gate** that needs no photos. A query "can match" when either
  (a) its *text score* ``w . q + b >= 0``: a logistic regression on the query vector fitted on real texts
  (the same ImageNet class names and templates, EN + ZH, plus their English WordNet glosses and hypernym
  names) against generated nonsense (random letters, keyboard mashes, letter/digit ids, emoji, digits,
  punctuation, 200-2000-character strings, mixed scripts, random CJK characters), its bias set so that 5 % of
  the real calibration texts score below 0; or
  (b) its *visibility* - the largest cosine between the query's prototype-space part and the image side's
  class prototypes (``image.protos`` in the model's weights) - reaches the 99.5th percentile of what the
  generated nonsense reaches: the query lands squarely on something the image tower can recognise (this
  rescues real names that read like noise to the text score, e.g. "Shih Tzu"). Models without prototypes
  use (a) alone.

Nothing is calibrated or tuned on photos that packages or the demo folder ship; those are only used to
*report* how the decision works (``relevance.json`` -> ``evaluation``).

A result list has a good match when the query passes the gate **and** its best photo reaches level 1
(``Judgement.has_match``). Without a usable ``relevance.json`` everything degrades to "unknown":
``calibrated`` is False, ``query_has_match`` is True (never hide results), ``level`` / ``percent`` return None
(show no levels), and nothing raises.
"""
from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple, Sequence

import numpy as np

__all__ = ["Relevance", "Judgement", "load_relevance", "load_prototypes", "FILENAME", "FORMAT", "LEVEL_NAMES",
           "PERCENT_AT_KNOTS"]

FILENAME = "relevance.json"
FORMAT = 1
LEVEL_NAMES = ("none", "weak", "good", "strong")      # level 0..3; UI strings translate these keys
PERCENT_AT_KNOTS = (0.0, 25.0, 50.0, 75.0, 100.0)     # percent at score knots s0..s4

log = logging.getLogger(__name__)


class Judgement(NamedTuple):
    """One query's verdict. ``has_match`` is None when the model has no calibration (show results as usual)."""
    has_match: bool | None
    query_ok: bool | None                     # the query gate alone
    levels: list[int | None]                  # per result, same order as the scores given
    percents: list[int | None]


@dataclass(frozen=True)
class Relevance:
    """Calibrated mapping for one model: raw cosine -> level / percent, query vector -> gate.

    ``knots`` is empty and ``gate_w`` is None for the uncalibrated fallback (``Relevance.uncalibrated()``).
    """
    knots: tuple[float, ...] = ()             # s0..s4, strictly increasing cosines
    gate_w: np.ndarray | None = field(default=None, compare=False)    # (d,) float32
    gate_b: float = 0.0
    anchors: np.ndarray | None = field(default=None, compare=False, repr=False)   # (K, D) unit prototypes
    anchor_dims: tuple[int, int] = (0, 0)     # the query coordinates [a, b) that live in prototype space
    visibility_threshold: float | None = None
    dim: int | None = None
    model_id: str = ""
    model_hash: str = ""
    meta: dict = field(default_factory=dict, compare=False, repr=False)

    # ---- construction -------------------------------------------------------------------------------
    @classmethod
    def uncalibrated(cls) -> "Relevance":
        return cls()

    @classmethod
    def from_dict(cls, d: dict, anchors: np.ndarray | None = None) -> "Relevance":
        """Parse a relevance.json document (+ the prototypes its visibility route names, if loaded); raises
        ValueError when it is malformed."""
        if int(d.get("format", 0)) != FORMAT:
            raise ValueError(f"relevance.json format {d.get('format')!r}, expected {FORMAT}")
        knots = tuple(float(x) for x in d["score"]["knots"])
        if len(knots) != len(PERCENT_AT_KNOTS) or not all(np.isfinite(knots)) \
                or any(b <= a for a, b in zip(knots, knots[1:])):
            raise ValueError(f"score knots must be {len(PERCENT_AT_KNOTS)} increasing numbers, got {knots}")
        w = np.asarray(d["gate"]["w"], np.float32)
        dim = int(d["model"]["dim"])
        if w.shape != (dim,) or not np.isfinite(w).all():
            raise ValueError(f"gate weights have shape {w.shape}, expected ({dim},)")
        vis = d["gate"].get("visibility") or {}
        a, b = (int(x) for x in vis.get("query_dims", (0, 0)))
        thr = vis.get("threshold")
        if anchors is not None:
            anchors = np.asarray(anchors, np.float32)
            if thr is None or anchors.ndim != 2 or anchors.shape[1] != b - a or not 0 <= a < b <= dim:
                raise ValueError(f"prototypes of shape {anchors.shape} do not fit query dims [{a}, {b})")
            anchors = anchors / np.maximum(np.linalg.norm(anchors, axis=1, keepdims=True), 1e-12)
        return cls(knots=knots, gate_w=w, gate_b=float(d["gate"]["b"]), dim=dim,
                   anchors=anchors, anchor_dims=(a, b),
                   visibility_threshold=float(thr) if anchors is not None else None,
                   model_id=str(d["model"].get("id", "")), model_hash=str(d["model"].get("hash", "")), meta=d)

    # ---- state --------------------------------------------------------------------------------------
    @property
    def calibrated(self) -> bool:
        return bool(self.knots) and self.gate_w is not None

    @property
    def cut_points(self) -> dict[str, float]:
        """Lowest cosine of each level >= 1: {"weak": s1, "good": s2, "strong": s3} ({} if uncalibrated)."""
        return dict(zip(LEVEL_NAMES[1:], self.knots[1:4])) if self.calibrated else {}

    # ---- query gate ---------------------------------------------------------------------------------
    def _queries(self, query_vec) -> np.ndarray:
        q = np.asarray(query_vec, np.float32)
        if q.shape[-1] != self.dim:
            raise ValueError(f"query vector has width {q.shape[-1]}, this calibration is for {self.dim}")
        return q

    def query_score(self, query_vec) -> float | np.ndarray | None:
        """Text score of a query vector (d,) -> float, or (n, d) -> (n,); >= 0 reads as real text. None if
        uncalibrated."""
        if not self.calibrated:
            return None
        q = self._queries(query_vec)
        s = q @ self.gate_w + self.gate_b
        return float(s) if q.ndim == 1 else s

    def visibility(self, query_vec) -> float | np.ndarray | None:
        """Largest cosine between the query's prototype-space part and the image side's class prototypes,
        (d,) -> float or (n, d) -> (n,). None when uncalibrated or the model has no prototypes."""
        if not self.calibrated or self.anchors is None:
            return None
        q = self._queries(query_vec)
        a, b = self.anchor_dims
        u = q[..., a:b]
        u = u / np.maximum(np.linalg.norm(u, axis=-1, keepdims=True), 1e-12)
        v = (u @ self.anchors.T).max(-1)                                      # (n,) or ()
        return float(v) if q.ndim == 1 else v

    def query_has_match(self, query_vec) -> bool | np.ndarray:
        """True when the query (its vector alone) means something the model's photos can show: text score
        >= 0 or visibility >= its threshold. Always True when uncalibrated. (d,) -> bool, (n, d) -> bool array."""
        s = self.query_score(query_vec)
        if s is None:
            q = np.asarray(query_vec)
            return True if q.ndim == 1 else np.ones(len(q), bool)
        ok = np.asarray(s) >= 0
        v = self.visibility(query_vec)
        if v is not None:
            ok = ok | (np.asarray(v) >= self.visibility_threshold)
        return bool(ok) if ok.ndim == 0 else ok

    # ---- per-result scale ---------------------------------------------------------------------------
    def percents(self, scores: Sequence[float] | np.ndarray) -> np.ndarray | None:
        """Cosines (n,) -> float64 (n,) relevance in [0, 100] (None if uncalibrated)."""
        if not self.calibrated:
            return None
        s = np.nan_to_num(np.asarray(scores, np.float64), nan=-1.0)
        return np.interp(s, self.knots, PERCENT_AT_KNOTS)          # clamps to 0 / 100 outside the knots

    def levels(self, scores: Sequence[float] | np.ndarray) -> np.ndarray | None:
        """Cosines (n,) -> int (n,) levels 0..3 (None if uncalibrated)."""
        if not self.calibrated:
            return None
        s = np.nan_to_num(np.asarray(scores, np.float64), nan=-1.0)
        return np.searchsorted(np.asarray(self.knots[1:4]), s, side="right").astype(int)

    def level(self, score: float) -> int | None:
        """One cosine -> 0 none / 1 weak / 2 good / 3 strong (None if uncalibrated)."""
        lv = self.levels([score])
        return None if lv is None else int(lv[0])

    def percent(self, score: float) -> int | None:
        """One cosine -> relevance 0..100, rounded down so that ``level == min(3, percent // 25)``."""
        p = self.percents([score])
        return None if p is None else int(np.floor(p[0] + 1e-9))

    def level_name(self, score: float) -> str | None:
        lv = self.level(score)
        return None if lv is None else LEVEL_NAMES[lv]

    # ---- both -------------------------------------------------------------------------------------
    def judge(self, query_vec, scores: Sequence[float] | np.ndarray) -> Judgement:
        """A query vector (d,) and its results' cosines (best first or any order) -> Judgement."""
        if not self.calibrated:
            n = len(scores)
            return Judgement(None, None, [None] * n, [None] * n)
        ok = bool(self.query_has_match(query_vec))
        lv = self.levels(scores)
        pc = self.percents(scores)
        best = int(lv.max()) if len(lv) else 0
        return Judgement(ok and best >= 1, ok, [int(x) for x in lv], [int(np.floor(x + 1e-9)) for x in pc])


def _model_identity(model) -> tuple[Path, int | None, str | None]:
    """Model | model dir | installed name -> (dir, width or None, hash or None)."""
    if hasattr(model, "path") and hasattr(model, "config"):
        return Path(model.path), int(model.dim), str(model.hash)
    from .config import model_dir
    d = model_dir(str(model))
    try:
        from .runtime import Model
        m = Model(d)
        return d, int(m.dim), str(m.hash)
    except Exception:                       # an unreadable config: the file check below still applies
        return d, None, None


def load_prototypes(model_path: str | os.PathLike, doc: dict) -> np.ndarray | None:
    """The class prototypes (K, D) the visibility route of a relevance document names, read from the model's
    weights with safetensors' numpy reader (no torch); None (text score only) when absent or the wrong shape."""
    vis = (doc.get("gate") or {}).get("visibility")
    if not vis:
        return None
    path = Path(model_path) / vis.get("file", "model.safetensors")
    try:
        from safetensors import safe_open
        with safe_open(str(path), framework="np") as fh:
            P = fh.get_tensor(vis.get("tensor", "image.protos")).astype(np.float32)      # (K, D)
        a, b = (int(x) for x in vis["query_dims"])
        if P.ndim != 2 or P.shape[1] != b - a:
            raise ValueError(f"shape {P.shape} does not fit query dims [{a}, {b})")
        return P
    except Exception as e:                  # missing file / tensor: degrade to the text score alone
        log.warning("relevance: cannot use %s from %s (%s); the query gate uses the text score only",
                    vis.get("tensor"), path, e)
        return None


_cache: dict[tuple[str, int, int], Relevance] = {}


def load_relevance(model="default", path: str | os.PathLike | None = None) -> Relevance:
    """The calibration of a model (a ``dcclip_core.Model``, a model directory or an installed name).

    Reads ``<model dir>/relevance.json`` (or ``path``). Falls back to ``Relevance.uncalibrated()`` with a
    logged warning - never raises - when the file is missing, malformed, or made for another model (different
    width or hash): run ``python -m training.calibrate_relevance --model DIR`` to (re)make it.
    """
    try:
        d, dim, mhash = _model_identity(model)
    except Exception as e:                  # unknown model name
        log.warning("relevance: %s; showing no relevance levels", e)
        return Relevance.uncalibrated()
    f = Path(path) if path is not None else d / FILENAME
    try:
        st = f.stat()
        key = (str(f.resolve()), st.st_mtime_ns, st.st_size)     # a rewrite within one clock tick changes the size
    except OSError:
        log.info("relevance: no %s for model %s; showing no relevance levels "
                 "(python -m training.calibrate_relevance --model %s)", f.name, d, d)
        return Relevance.uncalibrated()
    rel = _cache.get(key)
    if rel is None:
        try:
            doc = json.loads(f.read_text(encoding="utf-8"))
            rel = Relevance.from_dict(doc, anchors=load_prototypes(d, doc))
        except (OSError, ValueError, KeyError, TypeError) as e:
            log.warning("relevance: %s is unusable (%s); showing no relevance levels", f, e)
            return Relevance.uncalibrated()
        _cache[key] = rel
    if dim is not None and rel.dim != dim:
        log.warning("relevance: %s was made for a %s-d model, this one is %s-d; showing no relevance levels "
                    "(python -m training.calibrate_relevance --model %s)", f, rel.dim, dim, d)
        return Relevance.uncalibrated()
    if mhash is not None and rel.model_hash and rel.model_hash != mhash:
        log.warning("relevance: %s was made for model hash %s, this one is %s; showing no relevance levels "
                    "(python -m training.calibrate_relevance --model %s)", f, rel.model_hash, mhash, d)
        return Relevance.uncalibrated()
    return rel
