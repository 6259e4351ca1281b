"""What a photo says, for search: the query found in a photo's text, and the query's meaning close to a line's.

Two signals per photo, both from the text pass's lines (index/textpass.py):

* ``literal``: the normalised query (``dcclip_core.ocr.normalise``: case, full-width, traditional -> simplified)
  in the photo's normalised text, through the FTS5 trigram index: the whole query as a word or phrase
  (``EXACT``), every word of a several-word query somewhere in the photo (``WORDS``; some of its telling
  words: ``SOME`` times the share found — "exit 出口" on a sign saying EXIT), or the query inside a
  longer word ("cat" in "education": ``PART``), or a translation of the query from CC-CEDICT
  (dcclip_core.dictionary: "ticket" -> 车票, 毕业典礼 -> "graduation ceremony", or word by word: 日落海滩 ->
  "sunset" + "beach": ``TRANSLATED``; some of the words: ``SOME`` times the share). A query or a
  translation of one Chinese character counts as a part only (花 is in 花园路 and in every florist's sign: a
  sign is not what someone typing 花 wants first);
* ``meaning``: the text tower's similarity between the query and each line (decorrelated cosines, as the
  relevance levels use), past ``MEANING_FLOOR`` — the 99th percentile of English -> Chinese similarities
  between *different* concept names of the model's own bank (text alone, no photo): what the query means
  close to what a line says in other words or the other language.

``fuse`` turns them and the visual score into one ranking; two ways, measured in ``python -m benchmarks ocr``:
"score" (the default: visual cosine + weighted text evidence) and "rrf" (reciprocal-rank fusion of the three
rankings). Results name the matched line (its text and box) in their ``why``.
"""
from __future__ import annotations

import re
import threading

import numpy as np

from dcclip_core.dictionary import segments, translations
from dcclip_core.ocr import has_words, normalise

from .db import PhotoDB

EXACT, WORDS, TRANSLATED, SOME, PART = 1.0, 0.9, 0.8, 0.6, 0.3      # literal match strengths
MEANING_FLOOR = 0.21                        # decorrelated cosine a line's meaning must pass (see module doc)
W_LITERAL = 0.5                             # "score" fusion: what a literal match adds to the visual cosine
W_MEANING = 0.25                            # ... and what meaning above the floor adds, per unit of cosine
RRF_K = 60
FUSIONS = ("score", "rrf", "none")
_WORDCH = re.compile(r"[0-9a-z]")
_CJK = re.compile(r"[\u3400-\u9fff\uf900-\ufaff]")


def _bounded(q: str, text: str) -> bool:
    """``q`` occurs in ``text`` not glued to other Latin letters or digits on a side where ``q`` itself ends
    in one ("cat" in "a cat!" yes, in "education" no; Chinese needs no boundaries)."""
    start = text.find(q)
    while start >= 0:
        end = start + len(q)
        left_ok = not (_WORDCH.match(q[0]) and start > 0 and _WORDCH.match(text[start - 1]))
        right_ok = not (_WORDCH.match(q[-1]) and end < len(text) and _WORDCH.match(text[end]))
        if left_ok and right_ok:
            return True
        start = text.find(q, start + 1)
    return False


def literal(db: PhotoDB, query: str, allowed: np.ndarray | None = None) -> dict[int, tuple[float, dict]]:
    """image id -> (strength, the best line row) for photos whose text contains the query (see module doc)."""
    q = normalise(query)
    if not q:
        return {}
    ids = None if allowed is None else allowed.tolist()
    single_han = len(q) == 1 and bool(_CJK.match(q))
    best: dict[int, tuple[float, dict]] = {}

    def offer(image_id: int, s: float, row: dict):
        if s > best.get(image_id, (0.0, None))[0]:
            best[image_id] = (s, row)

    for row in db.lines_matching(q, ids):
        offer(int(row["image_id"]), PART if single_han or not _bounded(q, row["norm"]) else EXACT, row)
    for t in translations(q):                            # the whole query in the other language
        t = normalise(t)
        weak = len(t) == 1 and bool(_CJK.match(t))
        for row in db.lines_matching(t, ids):
            offer(int(row["image_id"]), PART if weak or not _bounded(t, row["norm"]) else TRANSLATED, row)
    pieces = segments(q)
    if len(pieces) > 1:                                  # ... or word by word ("日落海滩" -> sunset, beach)
        found: dict[int, dict[int, tuple[float, dict]]] = {}
        for n, (_, alts) in enumerate(pieces):
            for t in map(normalise, alts):
                credit = 0.5 if len(t) == 1 and _CJK.match(t) else 1.0          # a lone character: half
                for row in db.lines_matching(t, ids):
                    if _bounded(t, row["norm"]) and credit > found.setdefault(int(row["image_id"]), {}).get(
                            n, (0.0, None))[0]:
                        found[int(row["image_id"])][n] = (credit, row)
        for image_id, got in found.items():
            share = sum(c for c, _ in got.values()) / len(pieces)
            row = next(iter(got.values()))[1]
            offer(image_id, TRANSLATED if share >= 1.0 else SOME * share, row)
    words = [w for w in q.split(" ") if w]
    if len(words) > 1:                                   # the words of the query somewhere in the photo's text
        per_word = [{int(r["image_id"]): r for r in db.lines_matching(w, ids) if _bounded(w, r["norm"])}
                    for w in words]
        telling = [d for w, d in zip(words, per_word) if has_words(w)]     # "the", "a", "9" alone tell nothing
        for image_id in set().union(*per_word):
            found = [d[image_id] for d in per_word if image_id in d]
            if len(found) == len(words):
                offer(image_id, WORDS, found[0])
            elif telling:
                some = [d[image_id] for d in telling if image_id in d]
                if some:
                    offer(image_id, SOME * len(some) / len(telling), some[0])
    return best


class LineVectors:
    """Every stored line's text-tower vector, decorrelated, in memory; reloaded when the DB's text generation
    or the model changes (cheap to check per query). Thread-safe."""

    def __init__(self):
        self._lock = threading.Lock()
        self._key = None
        self.line_ids = np.zeros(0, np.int64)
        self.image_ids = np.zeros(0, np.int64)
        self.vecs = np.zeros((0, 0), np.float32)

    def refresh(self, db: PhotoDB, model) -> "LineVectors":
        bank = getattr(model, "concept_bank", None)
        info = model.info
        key = (db.text_generation(), info.get("hash"))
        with self._lock:
            if key != self._key:
                lid, iid, V = db.line_vectors(str(info.get("hash")), int(info["dims"]))     # (n,), (n,), (n, d)
                self.line_ids, self.image_ids = lid, iid
                self.vecs = bank.decorrelate(V) if bank is not None and len(V) else V
                self._key = key
        return self

    def meaning(self, q: np.ndarray, model, allowed: np.ndarray | None = None) -> dict[int, tuple[float, int]]:
        """image id -> (best line's decorrelated cosine with the query, that line's id), for lines past the floor."""
        if not len(self.vecs):
            return {}
        bank = getattr(model, "concept_bank", None)
        qd = bank.decorrelate(q) if bank is not None else np.asarray(q, np.float32)      # (d,)
        sims = self.vecs @ qd                                                              # (n,)
        keep = np.flatnonzero(sims > MEANING_FLOOR)
        if allowed is not None and len(keep):
            keep = keep[np.isin(self.image_ids[keep], allowed)]
        out: dict[int, tuple[float, int]] = {}
        for j in keep[np.argsort(-sims[keep])]:
            out.setdefault(int(self.image_ids[j]), (float(sims[j]), int(self.line_ids[j])))
        return out


def fuse(visual: list[tuple[int, float]], lit: dict[int, tuple[float, dict]], mean: dict[int, tuple[float, int]],
         method: str = "score") -> list[tuple[int, float]]:
    """One ranking from the visual hits [(id, cosine)] (every candidate has one), the literal matches and the
    meaning matches: [(id, fused score)] best first."""
    if method == "none" or (not lit and not mean):
        return sorted(visual, key=lambda h: -h[1])
    if method == "score":
        fused = [(i, s + W_LITERAL * lit.get(i, (0.0,))[0]
                  + W_MEANING * max(0.0, mean.get(i, (MEANING_FLOOR,))[0] - MEANING_FLOOR)) for i, s in visual]
        return sorted(fused, key=lambda h: -h[1])
    if method != "rrf":
        raise ValueError(f"unknown fusion {method!r}; one of {FUSIONS}")
    score = {i: 1.0 / (RRF_K + r) for r, (i, _) in enumerate(sorted(visual, key=lambda h: -h[1]), 1)}
    for ranked in (sorted(lit, key=lambda i: -lit[i][0]), sorted(mean, key=lambda i: -mean[i][0])):
        for r, i in enumerate(ranked, 1):
            if i in score:
                score[i] += 1.0 / (RRF_K + r)
    return sorted(score.items(), key=lambda h: -h[1])
