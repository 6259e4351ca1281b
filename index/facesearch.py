"""People in search: a person's name in a query, and the faces as a "person / people / portrait" signal.

    FaceIndex().refresh(db)                  # names, each person's photos, each photo's faces (cached per change)
    names_in(query, idx)  -> ([person ids], rest of the query)       "妈妈 在海边" -> ([3], "在海边")
    asks_for(query)       -> "group" | "portrait" | "person" | None  "一群人" -> "group", "a man" -> "person"
    signal(kind, faces, share) -> 0..1                               how well a photo's faces answer it

* a name filters: only photos with that person (all of them, when a query names several) are ranked, by the
  rest of the query ("Alice with a dog" ranks Alice's photos by "with a dog"); names match as whole words in
  Latin script, anywhere in Chinese, traditional = simplified, case ignored (index.people.find_names);
* the image tower has no "person" class (ImageNet has groom, scuba diver and ballplayer, not person), so a query
  asking for people (words in assets/data/person_words.json) adds ``SIGNAL_WEIGHT`` x signal to each candidate's
  score: person — a face; group — two or more; portrait — one face large in the photo. The weight was chosen on
  the held-out set's dev half and checked on its test half (``python -m benchmarks peoplesearch``;
  BENCHMARKS.md).
"""
from __future__ import annotations

import functools
import json
import re
import threading
import unicodedata

import numpy as np

from dcclip_core.config import ASSETS_DIR

from . import people as P

SIGNAL_WEIGHT = 0.005      # added to a candidate's score x signal (0..1) when the query asks for people
PORTRAIT_SHARE = 0.25      # a face this large (side / the photo's shorter side) makes a portrait
WORDS_FILE = ASSETS_DIR / "data" / "person_words.json"
KINDS = ("group", "portrait", "person")          # the first kind a query's words name wins
_HAN = re.compile(r"[\u4e00-\u9fff]")


@functools.lru_cache(maxsize=1)
def person_words() -> dict[str, dict[str, str]]:
    """{"en": {word: kind}, "zh": {word (simplified): kind}} from assets/data/person_words.json."""
    data = json.loads(WORDS_FILE.read_text(encoding="utf-8"))
    out: dict[str, dict[str, str]] = {"en": {}, "zh": {}}
    for kind in reversed(KINDS):                                   # a word listed twice keeps the stronger kind
        for lang in ("en", "zh"):
            for w in data[kind][lang]:
                out[lang][w.casefold()] = kind
    return out


def _zh_words(text: str) -> list[str]:
    """Chinese text cut into words, longest dictionary word from the left (CC-CEDICT headwords plus the person
    words), so 人 in 机器人 is no word of its own."""
    try:
        from dcclip_core.dictionary import cedict_zh_to_en
        heads = cedict_zh_to_en()
    except Exception:                                  # no dictionary: the person words alone
        heads = {}
    own = person_words()["zh"]
    out, i = [], 0
    while i < len(text):
        for j in range(min(len(text), i + 6), i, -1):
            w = text[i:j]
            if w in own or (j - i > 1 and w in heads):
                out.append(w)
                i = j
                break
        else:
            i += 1
    return out


def asks_for(query: str) -> str | None:
    """The kind of people a query asks for ("group" / "portrait" / "person"), None when it asks for none."""
    q = P.name_key(query)
    words = person_words()
    kinds = {words["en"][w] for w in re.findall(r"[a-z][a-z-]*", unicodedata.normalize("NFKC", q))
             if w in words["en"]}
    if "group photo" in q:
        kinds.add("group")
    for run in re.findall(r"[\u4e00-\u9fff]+", q):
        for w in _zh_words(run):
            if w in words["zh"]:
                kinds.add(words["zh"][w])
            elif w.endswith("们") and w[:-1] in words["zh"]:          # 孩子们, 朋友们: more than one
                kinds.add("group")
    return next((k for k in KINDS if k in kinds), None)


def signal(kind: str | None, faces: int, share: float) -> float:
    """0..1: how well a photo with ``faces`` faces, the largest ``share`` of its shorter side, answers ``kind``."""
    if not kind or faces <= 0:
        return 0.0
    if kind == "group":
        return 1.0 if faces >= 2 else 0.0
    if kind == "portrait":
        return float(min(1.0, share / PORTRAIT_SHARE))
    return 1.0


class FaceIndex:
    """What search needs of the faces, read once per change of the face tables (``face_generation``)."""

    def __init__(self):
        self._lock = threading.Lock()
        self._key = None
        self.names: dict[int, str] = {}
        self.summary: dict[int, tuple[int, float]] = {}
        self._photos: dict[int, np.ndarray] = {}

    def refresh(self, db) -> "FaceIndex":
        key = db.face_generation()
        with self._lock:
            if key != self._key:
                self.names = db.person_names()
                self.summary = db.face_summary()
                self._photos = {}
                self._key = key
        return self

    def photos_of(self, db, person_id: int) -> np.ndarray:
        """Sorted image ids (int64) of a person's photos."""
        with self._lock:
            ids = self._photos.get(person_id)
            if ids is None:
                ids = self._photos[person_id] = db.person_image_ids(person_id)
            return ids

    def boosted(self, hits: list[tuple[int, float]], kind: str | None,
                weight: float = SIGNAL_WEIGHT) -> list[tuple[int, float]]:
        """``hits`` [(id, score)] with weight x signal added for a query asking for ``kind``, re-sorted."""
        if not kind or weight == 0 or not self.summary:
            return hits
        out = []
        for i, s in hits:
            n, share = self.summary.get(i, (0, 0.0))
            out.append((i, s + weight * signal(kind, n, share)))
        return sorted(out, key=lambda h: -h[1])


def names_in(query: str, idx: FaceIndex) -> tuple[list[int], str]:
    """(the people a query names, the query without their names) — see index.people.find_names."""
    if not idx.names:
        return [], query
    return P.find_names(query, idx.names)
