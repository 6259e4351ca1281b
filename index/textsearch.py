"""What a photo says, for search: the query found in a photo's text, and the query's meaning close to a line's.

Two signals per photo, both from the text pass's lines (index/textpass.py):

* ``literal``: the normalised query (``dcclip_core.ocr.normalise``: case, full-width, traditional -> simplified)
  in the photo's normalised text, through the FTS5 trigram index: the whole query as a word or phrase
  (``EXACT``), every word of a several-word query somewhere in the photo (``WORDS``; at least half of its
  telling words — not "the", "的": ``SOME`` times the share found — "exit 出口" on a sign saying EXIT), or
  the query inside a longer word ("cat" in "education": ``PART``), or a translation of the query from CC-CEDICT
  (dcclip_core.dictionary: "ticket" -> 车票, 毕业典礼 -> "graduation ceremony", or word by word: 日落海滩 ->
  "sunset" + "beach": ``TRANSLATED``; some of the words: ``SOME`` times the share). A query or a
  translation of one Chinese character counts as a part only (花 is in 花园路 and in every florist's sign: a
  sign is not what someone typing 花 wants first);
* ``meaning``: the text tower's similarity between the query and each line (decorrelated cosines, as the
  relevance levels use), past ``MEANING_FLOOR`` — the 99.9th percentile of the similarities between
  *different* concept names of the model's own bank (its first 600 concepts; English-English, Chinese-Chinese
  and across: text alone, no photo). A lower floor (0.21, that percentile across languages only) let lines
  like "Stationery" match every English query and cost the held-out picture queries 0.12 of recall@5
  (``python -m benchmarks textsearch``); at 0.65 a line counts only when it says nearly what the query says.

``fuse`` turns them and the visual score into one ranking; two ways, measured in ``python -m benchmarks
textsearch``: "score" (the default: visual cosine + weighted text evidence; the weights were set before
measuring: a literal match outranks any picture-only match, a part of one does not) and "rrf" (reciprocal-rank
fusion of the three rankings: as good on exact queries, worse across languages). Results name the matched line
(its text and box) in their ``why``.
"""
from __future__ import annotations

import re
import threading

import numpy as np

from dcclip_core.dictionary import segments, translations
from dcclip_core.ocr import CJK, has_words, normalise

from .db import PhotoDB

EXACT, WORDS, TRANSLATED, SOME, PART = 1.0, 0.9, 0.8, 0.6, 0.3      # literal match strengths
MEANING_FLOOR = 0.65                        # decorrelated cosine a line's meaning must pass (see module doc)
MIN_SHARE = 0.5                             # SOME: at least half of the query's telling words
# function words: found in any text, they tell nothing about which photo is meant
STOPWORDS = frozenset("""a an the and or of to in on at by for from with without into onto over under near
    is are was were be been it its this that these those my your our their his her me you we they i he she
    some any all no not very just as than then there here up down out off about above below photo picture
    image 的 了 在 是 和 与 及 或 有 个 一 这 那 些 上 下 里 中 张 照片 图片""".split())
W_LITERAL = 0.5                             # "score" fusion: what a literal match adds to the visual cosine
W_MEANING = 0.25                            # ... and what meaning above the floor adds, per unit of cosine
STRONG = frozenset({"exact", "words", "translation"})    # literal kinds that read as a strong match
RRF_K = 60
FUSIONS = ("score", "rrf", "none")
_WORDCH = re.compile(r"[0-9a-z]")


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


def telling_word(word: str) -> bool:
    """A query word that can tell photos apart by their text: words (``has_words``) that are not function words."""
    return has_words(word) and word not in STOPWORDS


def literal(db: PhotoDB, query: str, allowed: np.ndarray | None = None) -> dict[int, tuple[float, dict, str]]:
    """image id -> (strength, the best line row, kind: "exact" / "words" / "translation" / "some words" /
    "part") for photos whose text contains the query (see module doc)."""
    q = normalise(query)
    if not q:
        return {}
    ids = None if allowed is None else allowed.tolist()
    best: dict[int, tuple[float, dict, str]] = {}

    def offer(image_id: int, s: float, kind: str, row: dict):
        if s > best.get(image_id, (0.0,))[0]:
            best[image_id] = (s, row, kind)

    def whole(text: str, strength: float, kind: str):
        """Lines holding ``text``: ``kind`` when it stands as a word there, else a part (one Chinese character
        is always a part)."""
        lone_han = len(text) == 1 and bool(CJK.match(text))
        for row in db.lines_matching(text, ids):
            if lone_han or not _bounded(text, row["norm"]):
                offer(int(row["image_id"]), PART, "part", row)
            else:
                offer(int(row["image_id"]), strength, kind, row)

    whole(q, EXACT, "exact")
    if " " in q:                                         # OCR drops spaces: "NO PARKING" read as "NOPARKING"
        glued = q.replace(" ", "")
        for row in db.lines_matching(glued, ids):
            if _bounded(glued, row["norm"]):
                offer(int(row["image_id"]), EXACT, "exact", row)
    for t in translations(q):                            # the whole query in the other language
        whole(normalise(t), TRANSLATED, "translation")
    pieces = [(w, alts) for w, alts in segments(q) if telling_word(w)]
    if len(pieces) > 1:                                  # ... or word by word ("日落海滩" -> sunset, beach)
        found: dict[int, dict[int, tuple[float, dict]]] = {}
        for n, (_, alts) in enumerate(pieces):
            for t in map(normalise, alts):
                credit = 0.5 if len(t) == 1 and CJK.match(t) else 1.0           # a lone character: half
                for row in db.lines_matching(t, ids):
                    got = found.setdefault(int(row["image_id"]), {})
                    if _bounded(t, row["norm"]) and credit > got.get(n, (0.0,))[0]:
                        got[n] = (credit, row)
        for image_id, got in found.items():
            share = sum(c for c, _ in got.values()) / len(pieces)
            if share >= MIN_SHARE:
                row = next(iter(got.values()))[1]
                offer(image_id, *((TRANSLATED, "translation") if share >= 1.0 else (SOME * share, "some words")), row)
    words = [w for w in q.split(" ") if w]
    if len(words) > 1:                                   # the words of the query somewhere in the photo's text
        per_word = [{int(r["image_id"]): r for r in db.lines_matching(w, ids) if _bounded(w, r["norm"])}
                    for w in words]
        telling = [d for w, d in zip(words, per_word) if telling_word(w)]
        for image_id in set().union(*per_word):
            rows = [d[image_id] for d in per_word if image_id in d]
            if len(rows) == len(words):
                offer(image_id, WORDS, "words", rows[0])
            elif telling:
                some = [d[image_id] for d in telling if image_id in d]
                if len(some) >= MIN_SHARE * len(telling):
                    offer(image_id, SOME * len(some) / len(telling), "some words", some[0])
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


def fuse(visual: list[tuple[int, float]], lit: dict[int, tuple], mean: dict[int, tuple[float, int]],
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
