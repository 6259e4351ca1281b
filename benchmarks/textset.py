"""The "text in photos" evaluation set: real photos with Chinese / English text rendered on them, real photos of
signs, and photos without any text, plus the queries that should find each one.

    python -m benchmarks.textset OUT_DIR [--big] [--n-scale 1.0] [--seed 0]
    manifest = build_textset(out_dir)            # or ensure_textset(out_dir): reuse a finished build

EVALUATION ONLY: the photos come from Debian packages (held-out photos of assets/data/heldout_photos.json) and
scikit-image's data directory; never train or tune a model on them. Nothing is downloaded.

Why rendered text: the reader has to be measured on Chinese (simplified and traditional) as well as English, at
known sizes, angles and contrasts, with the exact text known; the installed photos with real text are all
English/Czech signs. Each rendered photo carries ONE phrase in ONE language on a photo without any other writing
(photos with visible writing were excluded by eye, ``HAS_WRITING``), so a cross-language query (the phrase's
translation) has exactly one right answer. Every phrase, word query and translation is unique in the set
(checked at build time: no query is a substring of another photo's text, nor the other way round).

Photos are named ``photo_NNN.jpg`` in a seeded shuffle (the name says nothing about the content).
``manifest.json``::

    {"photos": [{"file", "kind": "rendered" | "real" | "none", "text", "lang": "en" | "zh-Hans" | "zh-Hant" |
                 "cs" | null, "box": [x0, y0, x1, y1] (fractions of the photo) | null, "size_px", "angle",
                 "contrast": "high" | "low" | null, "source", ...}],
     "queries": [{"query", "target": file, "type": "exact-en" | "exact-zh" | "trad-to-simp" | "simp-to-trad" |
                  "cross-en-zh" | "cross-zh-en"}],
     "common_words": [...], "settings": {...}}

Queries: ``exact-en`` is Latin-script text as written (an English phrase, each of its words that is unique
in the set, a real photo's words, the Czech ones of the newspaper too); ``exact-zh`` a Chinese phrase as
written; ``trad-to-simp`` the traditional form (OpenCC s2t) of a simplified photo's phrase, ``simp-to-trad`` the
simplified form of a traditional photo's phrase; ``cross-en-zh`` the English translation of a Chinese photo's
phrase, ``cross-zh-en`` the Chinese translation of an English one.

Rendered photos also record ``translation``, ``plate`` (drawn on a sign), ``drawn_box`` (text and sign),
``font``, ``size_frac`` (font size / photo height), ``size_bucket``, ``angle_bucket`` and ``luma_delta`` (text
vs its surroundings); real photos record ``words`` (each readable by eye). ``angle`` is in degrees,
counter-clockwise. ``big=True`` writes 12 MP (4000x3000, q90, light grain) versions of the same layouts for cost
measurements; otherwise photos keep their size up to 1600 px on the long side.
"""
from __future__ import annotations

import argparse
import json
import random
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont, ImageOps

from dcclip_core.ocr import normalise
from dcclip_core.tokenizer import script_converter

REPO_DIR = Path(__file__).resolve().parent.parent
HELDOUT_JSON = REPO_DIR / "assets" / "data" / "heldout_photos.json"
FONT_DIR = Path("/usr/share/fonts/opentype/noto")
FONT_FILES = ("NotoSansCJK-Regular.ttc", "NotoSansCJK-Bold.ttc", "NotoSerifCJK-Regular.ttc",
              "NotoSerifCJK-Bold.ttc")
LONG_SIDE = 1600                 # normal set: longest side kept at most this
BIG_SIZE = (4000, 3000)          # big set: 12 MP
JPEG_QUALITY = 90
BIG_GRAIN = 5.0                  # luma noise sigma of the big set (as benchmarks.common.bench_photos)
MIN_RENDER_SIDE = 300            # bases with a shorter side get no rendered text (only "none" photos)
MIN_FONT_PX = 12                 # smallest rendered font size, px of the written photo
MANIFEST = "manifest.json"
VERSION = 2                      # bump when the layout or the tables change (ensure_textset rebuilds)

# ---- what is rendered: (phrase as written, translation); each concept appears once in the whole set --------
EN_PHRASES = [
    ("EXIT", "出口"), ("Sunset Beach", "日落海滩"), ("Coffee Menu", "咖啡菜单"), ("Boarding Pass", "登机牌"),
    ("Happy Birthday", "生日快乐"), ("Post Office", "邮局"), ("Museum", "博物馆"), ("Bakery", "面包店"),
    ("Flower Market", "花市"), ("Swimming Pool", "游泳池"), ("Ice Cream", "冰淇淋"), ("Cinema", "电影院"),
    ("Fresh Fruit", "新鲜水果"), ("Summer Sale", "夏季促销"), ("Lost and Found", "失物招领"),
    ("Keep Left", "靠左行驶"), ("Mind the Step", "小心台阶"), ("Bike Lane", "自行车道"), ("Night Market", "夜市"),
    ("Tea Garden", "茶园"), ("Gift Shop", "礼品店"), ("City Hall", "市政厅"), ("Book Fair", "书展"),
    ("Wet Paint", "油漆未干"), ("Quiet Please", "请保持安静"), ("Fish Market", "鱼市场"),
    ("Ticket Office", "售票处"), ("Bus Stop", "公交车站"), ("Good Luck", "好运"), ("Beach Bar", "海滩酒吧"),
]
# simplified Chinese, rendered as written
HANS_PHRASES = [
    ("毕业典礼", "Graduation Ceremony"), ("地铁站", "Subway Station"), ("火车站", "Railway Station"),
    ("超市", "Supermarket"), ("药店", "Pharmacy"), ("洗手间", "Restroom"), ("面馆", "Noodle Shop"),
    ("水果店", "Fruit Shop"), ("电梯", "Elevator"), ("警察局", "Police Station"), ("消防通道", "Fire Lane"),
    ("小心地滑", "Caution Wet Floor"), ("营业时间", "Opening Hours"), ("会议室", "Meeting Room"),
    ("餐厅", "Restaurant"), ("海鲜市场", "Seafood Market"), ("加油站", "Gas Station"), ("出租车", "Taxi"),
    ("婚礼", "Wedding"), ("新年快乐", "Happy New Year"), ("儿童乐园", "Playground"), ("请勿触摸", "Do Not Touch"),
    ("入口", "Entrance"), ("收银台", "Checkout"), ("厨房", "Kitchen"), ("急诊", "Emergency"), ("茶馆", "Teahouse"),
    ("美好的一天", "Have a Nice Day"), ("自助洗车", "Car Wash"), ("阅览室", "Reading Room"),
]
# given in simplified Chinese, rendered in traditional (OpenCC s2t; each differs from its simplified form)
HANT_PHRASES = [
    ("图书馆", "Library"), ("医院", "Hospital"), ("机场", "Airport"), ("欢迎光临", "Welcome"),
    ("停车场", "Parking Lot"), ("禁止吸烟", "No Smoking"), ("车票", "Train Ticket"), ("书店", "Bookstore"),
    ("银行", "Bank"), ("动物园", "Zoo"), ("体育馆", "Gymnasium"), ("洗衣店", "Laundry"), ("牙医诊所", "Dental Clinic"),
    ("电影票", "Movie Ticket"), ("美术馆", "Art Gallery"), ("汽车站", "Bus Station"), ("钟表店", "Watch Shop"),
    ("点心", "Dim Sum"), ("东门", "East Gate"), ("一路顺风", "Have a Safe Trip"), ("请排队", "Please Queue"),
    ("谢谢光临", "Thank You for Coming"), ("营业中", "Open Now"), ("毕业快乐", "Happy Graduation"),
]

# held-out photos of category "text": words a person reads in them (checked by eye; the reader must find these)
REAL_WORDS = {
    "ocv-sign-double-parking": ("en", ["NOTICE", "DOUBLE PARKING", "PROHIBITED", "AT ALL TIMES",
                                        "Washington Post"]),
    "ocv-sign-directions": ("en", ["Sports Centre", "Conference Centre", "Car Parks"]),
    "ocv-sign-no-parking-barrier": ("en", ["NO PARKING"]),
    "ocv-sign-hotel": ("en", ["HOTEL"]),
    "ocv-sign-stationery-shop": ("en", ["Stationery Box", "COMPUTER"]),
    "ocv-sign-freephone": ("en", ["Customer", "Freephone", "Private Hire", "Service"]),
    "ocv-sign-fosters": ("en", ["FOSTER'S"]),
    "ocv-book-page": ("en", ["Median Filter"]),
    "ocv-sign-copy-centre": ("en", ["copy centre"]),
    "ocv-newspaper": ("cs", ["deník", "vysočina", "Výstava mapuje rozvoj velké firmy"]),   # printed sideways
}

# held-out photos (not of category "text") with visible writing: never a base nor a "none" photo
HAS_WRITING = {
    "kpa-anne-helene": "print on the shirt", "kpa-bar55": "logo on the shirt", "kpa-bar55-2": "printed beer mat",
    "kpa-cold-water": "LAS VEGAS on the sweater", "kpa-new-wave-2": "notices on the wall",
    "kpa-qt-logo": "date stamp", "kpa-spiff-2": "Carlsberg box", "kpa-pool": "poster",
    "kpa-snow-airport": "airline names", "gimp-red-car": "number plate", "hugin-grand-central": "signs",
    "ocv-london-bus": "adverts, route number", "ocv-buran-shuttle": "Буран on the hull",
}
# scikit-image data photos without writing (astronaut: patches, motorcycles: YAMAHA, rocket: logo; the rest
# are not photos)
SKIMAGE_PHOTOS = ("chelsea.png", "coffee.png", "camera.png", "hubble_deep_field.jpg", "moon.png", "brick.png",
                  "grass.png", "gravel.png")

# words too common to identify a photo (never a one-word query; for search-level checks of common-word queries)
COMMON_WORDS = ["the", "a", "an", "and", "of", "to", "in", "on", "at", "for", "is", "please", "no", "you",
                "的", "了", "是", "在", "和", "有", "不", "一", "请", "我", "你"]

# layout buckets: (name, weight, range)
SIZES = [("small", 0.3, (0.025, 0.035)), ("medium", 0.4, (0.05, 0.08)), ("large", 0.3, (0.10, 0.16))]
ANGLES = [("0", 0.6, None), ("tilt", 0.3, (5.0, 15.0)), ("90", 0.1, None)]
LOW_CONTRAST_SHARE = 0.3
PLATE_SHARE = 0.5
# sign colours: (plate, text)
SIGN_COLOURS = [((22, 110, 60), (250, 250, 250)), ((25, 60, 150), (250, 250, 250)), ((245, 245, 240), (20, 20, 20)),
                ((250, 205, 30), (20, 20, 20)), ((190, 30, 35), (250, 250, 250)), ((30, 30, 30), (250, 220, 60))]
LIGHT_TEXT = [(250, 250, 250), (255, 230, 90), (200, 240, 255)]
DARK_TEXT = [(15, 15, 15), (120, 20, 20), (20, 30, 90)]


@dataclass(frozen=True)
class Base:
    id: str                      # "heldout:<id>" or "skimage:<file>"
    path: Path
    category: str


# ---- sources --------------------------------------------------------------------------------------------
def heldout_items() -> list[dict]:
    return json.loads(HELDOUT_JSON.read_text(encoding="utf-8"))


def base_photos() -> list[Base]:
    """Installed photos without writing: held-out photos (not "text", not ``HAS_WRITING``) then scikit-image's."""
    out = [Base(f"heldout:{it['id']}", Path(it["path"]), it["category"]) for it in heldout_items()
           if it["category"] != "text" and it["id"] not in HAS_WRITING and Path(it["path"]).is_file()]
    import skimage
    sk = Path(skimage.__file__).parent / "data"
    return out + [Base(f"skimage:{n}", sk / n, "skimage") for n in SKIMAGE_PHOTOS if (sk / n).is_file()]


def real_text_photos() -> list[tuple[Base, str, list[str]]]:
    """Installed held-out photos of category "text" with their language and readable words."""
    return [(Base(f"heldout:{it['id']}", Path(it["path"]), "text"), *REAL_WORDS[it["id"]])
            for it in heldout_items() if it["id"] in REAL_WORDS and Path(it["path"]).is_file()]


def fonts() -> list[Path]:
    found = [FONT_DIR / f for f in FONT_FILES if (FONT_DIR / f).is_file()]
    if not found:
        raise FileNotFoundError(f"no CJK font in {FONT_DIR} (need {FONT_FILES[0]}): "
                                "apt-get install fonts-noto-cjk")
    return found


def font_face(path: Path, lang: str, size: int) -> ImageFont.FreeTypeFont:
    """The SC face of a CJK collection for English / simplified text, the TC face for traditional."""
    want = " TC" if lang == "zh-Hant" else " SC"
    for i in range(10):
        f = ImageFont.truetype(str(path), size, index=i)
        if f.getname()[0].endswith(want):
            return f
    raise ValueError(f"{path} has no{want} face")


# ---- phrases and queries --------------------------------------------------------------------------------
def phrases() -> list[dict]:
    """Every renderable phrase: {"text", "lang", "translation", "simplified"} (simplified: the zh form in
    simplified script, None for English), interleaved en / zh-Hans / zh-Hant."""
    s2t = script_converter("s2t")
    en = [{"text": t, "lang": "en", "translation": tr, "simplified": None} for t, tr in EN_PHRASES]
    hans = [{"text": t, "lang": "zh-Hans", "translation": tr, "simplified": t} for t, tr in HANS_PHRASES]
    hant = [{"text": s2t.convert(t), "lang": "zh-Hant", "translation": tr, "simplified": t} for t, tr in HANT_PHRASES]
    out = []
    for i in range(max(len(en), len(hans), len(hant))):
        out += [group[i] for group in (en, hans, hant) if i < len(group)]
    return out


def _texts(photo: dict) -> list[str]:
    return photo.get("words") or ([photo["text"]] if photo.get("text") else [])


def _match_texts(photos: list[dict]) -> dict[str, list[str]]:
    """{file: normalised texts a query could match}: the photo's text(s) and its translation."""
    return {p["file"]: [normalise(t) for t in _texts(p) + ([p["translation"]] if p.get("translation") else [])]
            for p in photos}


def _others_matching(query: str, target: str, texts: dict[str, list[str]]) -> list[str]:
    """Files other than ``target`` whose text contains the normalised query or is contained in it."""
    nq = normalise(query)
    return [f for f, ts in texts.items() if f != target and any(nq in t or t in nq for t in ts)]


def make_queries(photos: list[dict]) -> list[dict]:
    """The queries of the rendered and real photos (see the module doc for the types). An English phrase also
    gives one-word queries for its words that are long (4+ letters), not common and match no other photo."""
    s2t = script_converter("s2t")
    texts = _match_texts(photos)
    out = []
    add = lambda q, p, t: out.append({"query": q, "target": p["file"], "type": t})
    for p in photos:
        if p["kind"] == "real":
            for w in p["words"]:
                add(w, p, "exact-en")
        elif p["kind"] == "rendered" and p["lang"] == "en":
            add(p["text"], p, "exact-en")
            words = p["text"].split()
            for w in words if len(words) > 1 else []:
                if len(w) >= 4 and normalise(w) not in COMMON_WORDS and not _others_matching(w, p["file"], texts):
                    add(w, p, "exact-en")
            add(p["translation"], p, "cross-zh-en")
        elif p["kind"] == "rendered":
            add(p["text"], p, "exact-zh")
            if p["lang"] == "zh-Hans" and s2t.convert(p["text"]) != p["text"]:
                add(s2t.convert(p["text"]), p, "trad-to-simp")
            if p["lang"] == "zh-Hant":
                add(p["simplified"], p, "simp-to-trad")
            add(p["translation"], p, "cross-en-zh")
    return out


def check_unique(photos: list[dict], queries: list[dict]) -> None:
    """Raise ValueError when a query could match a photo other than its target: its normalised form inside
    another photo's text or that text inside the query (translations included: they are not rendered, but a
    rendered phrase equal to another phrase's translation would make the cross query ambiguous)."""
    texts = _match_texts(photos)
    bad = [f"{q['query']!r} ({q['type']}, {q['target']}) also matches {f} {texts[f]}"
           for q in queries for f in _others_matching(q["query"], q["target"], texts)]
    if bad:
        raise ValueError("queries that are not unique:\n  " + "\n  ".join(bad))


def queries_by_type(manifest: dict) -> dict[str, list[dict]]:
    """{type: [{"query", "target", "type"}, ...]} in manifest order."""
    out: dict[str, list[dict]] = {}
    for q in manifest["queries"]:
        out.setdefault(q["type"], []).append(q)
    return out


def photo_paths(manifest: dict, out_dir: str | Path) -> list[Path]:
    """The photos' paths, in manifest order (``path.name`` is the manifest's ``file``)."""
    return [Path(out_dir) / p["file"] for p in manifest["photos"]]


# ---- canvases -------------------------------------------------------------------------------------------
def canvas(path: str | Path, big: bool = False) -> Image.Image:
    """The base photo as written before any text: upright RGB, longest side <= ``LONG_SIDE`` (never enlarged);
    ``big``: centre-cropped to 4:3 and resized to 4000x3000."""
    im = ImageOps.exif_transpose(Image.open(path)).convert("RGB")
    w, h = im.size
    if big:
        tw, th = BIG_SIZE
        if w * th > h * tw:
            cw = h * tw // th
            im = im.crop(((w - cw) // 2, 0, (w - cw) // 2 + cw, h))
        else:
            ch = w * th // tw
            im = im.crop((0, (h - ch) // 2, w, (h - ch) // 2 + ch))
        return im.resize(BIG_SIZE, Image.BICUBIC)
    s = LONG_SIDE / max(w, h)
    return im if s >= 1 else im.resize((round(w * s), round(h * s)), Image.LANCZOS)


def _grain(im: Image.Image, seed: int) -> Image.Image:
    """Sensor-like luma noise (upscaled photos are unnaturally smooth and would decode too fast)."""
    x = np.asarray(im, np.float32)                                                      # (H, W, 3)
    x += np.random.default_rng(seed).normal(0.0, BIG_GRAIN, size=x.shape[:2] + (1,)).astype(np.float32)
    return Image.fromarray(np.clip(x, 0, 255).astype(np.uint8))


# ---- rendering ------------------------------------------------------------------------------------------
def size_bucket(size_frac: float) -> str:
    """"small" / "medium" / "large" for a drawn font size (fraction of the photo's height; the font may have
    shrunk to fit, so the drawn size, not the planned one, decides)."""
    return "small" if size_frac < 0.045 else "medium" if size_frac < 0.09 else "large"


def _pick(rng: random.Random, buckets) -> tuple[str, object]:
    name, _, rng_range = rng.choices(buckets, weights=[b[1] for b in buckets])[0]
    return name, rng_range


def layout(rng: random.Random, font_files: list[Path]) -> dict:
    """Where and how one phrase is drawn, independent of the photo's size (so the big set has the same); the
    caller seeds ``rng`` per phrase, so a smaller ``n_scale`` keeps the layouts of the phrases it keeps."""
    _, (lo, hi) = _pick(rng, SIZES)
    angle_bucket, tilt = _pick(rng, ANGLES)
    if angle_bucket == "tilt":
        angle = rng.uniform(*tilt) * rng.choice((-1, 1))
    else:
        angle = 90.0 * rng.choice((1, -1)) if angle_bucket == "90" else 0.0
    return {"size_frac": rng.uniform(lo, hi), "angle": round(angle, 1),
            "angle_bucket": angle_bucket, "contrast": "low" if rng.random() < LOW_CONTRAST_SHARE else "high",
            "plate": rng.random() < PLATE_SHARE, "font": rng.choice(font_files).name,
            "pos": (rng.random(), rng.random()), "colour_pick": rng.random(), "low_sign": rng.choice((-1, 1))}


def _text_layer(text: str, font: ImageFont.FreeTypeFont, fill, plate) -> tuple[Image.Image, Image.Image]:
    """(RGBA layer with the text, and its plate if ``plate`` is a colour; L mask of the text's ink), upright."""
    x0, y0, x1, y1 = font.getbbox(text)
    pad = round(0.4 * font.size) if plate is not None else 2
    w, h = x1 - x0 + 2 * pad, y1 - y0 + 2 * pad
    layer = Image.new("RGBA", (w, h), (0, 0, 0, 0))
    ink = Image.new("L", (w, h), 0)
    if plate is not None:
        ImageDraw.Draw(layer).rounded_rectangle((0, 0, w - 1, h - 1), radius=max(2, pad // 2), fill=(*plate, 255))
    ImageDraw.Draw(layer).text((pad - x0, pad - y0), text, font=font, fill=(*fill, 255))
    ImageDraw.Draw(ink).text((pad - x0, pad - y0), text, font=font, fill=255)
    return layer, ink


def _luma(rgb) -> float:
    r, g, b = rgb
    return 0.299 * r + 0.587 * g + 0.114 * b


def _colours(spec: dict, background) -> tuple[tuple, tuple | None]:
    """(text colour, plate colour or None) for the layout's contrast, given the mean colour behind the text."""
    bg = _luma(background)
    if spec["plate"]:
        if spec["contrast"] == "high":
            plate, fill = SIGN_COLOURS[int(spec["colour_pick"] * len(SIGN_COLOURS))]
            return fill, plate
        g = 110 + int(spec["colour_pick"] * 60)                                         # grey sign, grey text
        return (g + 45 * spec["low_sign"],) * 3, (g,) * 3
    if spec["contrast"] == "high":
        pal = DARK_TEXT if bg >= 128 else LIGHT_TEXT
        return pal[int(spec["colour_pick"] * len(pal))], None
    g = bg + 45 if bg < 128 else bg - 45                                                # grey on grey
    return (int(round(g)),) * 3, None


def render(im: Image.Image, text: str, lang: str, spec: dict) -> tuple[Image.Image, dict]:
    """``im`` with ``text`` drawn as ``spec`` says; returns the photo and its record (box of the text's ink in
    fractions, size_px, angle, ...). The font shrinks until the rotated text fits in 94% of the photo."""
    W, H = im.size
    size = max(MIN_FONT_PX, round(spec["size_frac"] * H))
    font_path = FONT_DIR / spec["font"]
    while True:
        font = font_face(font_path, lang, size)
        x0, y0, x1, y1 = font.getbbox(text)
        tw, th = _rotated_size(x1 - x0 + 0.8 * size, y1 - y0 + 0.8 * size, spec["angle"])
        if (tw <= 0.94 * W and th <= 0.94 * H) or size <= MIN_FONT_PX:
            break
        size = max(MIN_FONT_PX, int(size * 0.9))
    margin = 0.03
    px = round(W * margin + spec["pos"][0] * max(0.0, W * (1 - 2 * margin) - tw))
    py = round(H * margin + spec["pos"][1] * max(0.0, H * (1 - 2 * margin) - th))
    behind = np.asarray(im.crop((px, py, px + int(tw), py + int(th))), np.float32).reshape(-1, 3).mean(0)
    fill, plate = _colours(spec, tuple(behind))
    layer, ink = _text_layer(text, font, fill, plate)
    layer = layer.rotate(spec["angle"], Image.BICUBIC, expand=True)
    ink = ink.rotate(spec["angle"], Image.BILINEAR, expand=True)
    blur = max(0.5, H / 1800)                                        # a lens's softness, not a vector edge
    layer = layer.filter(ImageFilter.GaussianBlur(blur))
    px, py = max(0, min(px, W - layer.width)), max(0, min(py, H - layer.height))
    out = im.copy()
    out.paste(layer, (px, py), layer)
    frac = lambda b: [round((px + b[0]) / W, 4), round((py + b[1]) / H, 4), round((px + b[2]) / W, 4),
                      round((py + b[3]) / H, 4)]
    return out, {"box": frac(ink.point(lambda v: 255 if v >= 96 else 0).getbbox()),
                 "drawn_box": frac(layer.getchannel("A").point(lambda v: 255 if v >= 16 else 0).getbbox()),
                 "size_px": size, "size_frac": round(size / H, 4),
                 "luma_delta": round(_luma_delta(out, ink, (px, py)), 1)}


def _rotated_size(w: float, h: float, angle: float) -> tuple[float, float]:
    a = np.deg2rad(angle)
    c, s = abs(np.cos(a)), abs(np.sin(a))
    return w * c + h * s, w * s + h * c


def _luma_delta(im: Image.Image, ink: Image.Image, at: tuple[int, int]) -> float:
    """|mean luma of the text's ink - mean luma of the pixels around it| in the written photo."""
    m = np.asarray(ink) >= 128                                                          # (h, w)
    x = np.asarray(im.convert("L").crop((at[0], at[1], at[0] + ink.width, at[1] + ink.height)), np.float32)
    if not m.any() or m.all():
        return 0.0
    return float(abs(x[m].mean() - x[~m].mean()))


# ---- the set --------------------------------------------------------------------------------------------
def _count(n: int, n_scale: float) -> int:
    return min(n, max(1, round(n * n_scale))) if n else 0


def _min_side(path: Path) -> int:
    with Image.open(path) as im:
        return min(im.size)


def plan(n_scale: float = 1.0, seed: int = 0) -> list[dict]:
    """What each photo of the set is (no pixels): rendered, real and none entries, shuffled, with file names."""
    rng = random.Random(seed)
    bases = base_photos()
    if not bases:
        raise FileNotFoundError("no base photos installed (scikit-image's data directory is missing)")
    font_files = fonts()
    renderable = [b for b in bases if _min_side(b.path) >= MIN_RENDER_SIDE]
    order = rng.sample(renderable, len(renderable))
    todo = phrases()
    todo = todo[:_count(min(len(todo), 4 * len(renderable)), n_scale)]
    entries = []
    for i, ph in enumerate(todo):
        b = order[i % len(order)]
        spec = layout(random.Random(f"{seed}/{ph['text']}"), font_files)
        entries.append({"kind": "rendered", "text": ph["text"], "lang": ph["lang"], "translation": ph["translation"],
                        "simplified": ph["simplified"], "source": b.id, "source_path": str(b.path),
                        "category": b.category, "layout": spec})
    real = real_text_photos()
    for b, lang, words in real[:_count(len(real), n_scale)]:
        entries.append({"kind": "real", "text": words[0], "lang": lang, "words": words, "source": b.id,
                        "source_path": str(b.path), "category": b.category})
    for b in rng.sample(bases, len(bases))[:_count(len(bases), n_scale)]:
        entries.append({"kind": "none", "text": None, "lang": None, "source": b.id, "source_path": str(b.path),
                        "category": b.category})
    rng.shuffle(entries)
    for i, e in enumerate(entries):
        e["file"] = f"photo_{i:03d}.jpg"
    return entries


def write_photo(entry: dict, out_dir: Path, big: bool, grain_seed: int) -> dict:
    """Write one planned photo; returns its manifest record."""
    im = canvas(entry["source_path"], big)
    rec = {"file": entry["file"], "kind": entry["kind"], "text": entry["text"], "lang": entry["lang"], "box": None,
           "size_px": None, "angle": None, "contrast": None, "source": entry["source"],
           "source_path": entry["source_path"], "category": entry["category"], "width": im.width,
           "height": im.height}
    if entry["kind"] == "rendered":
        spec = entry["layout"]
        im, drawn = render(im, entry["text"], entry["lang"], spec)
        rec.update(drawn, angle=spec["angle"], contrast=spec["contrast"], plate=spec["plate"], font=spec["font"],
                   translation=entry["translation"], simplified=entry["simplified"],
                   size_bucket=size_bucket(drawn["size_frac"]), angle_bucket=spec["angle_bucket"])
    elif entry["kind"] == "real":
        rec["words"] = entry["words"]
    if big:
        im = _grain(im, grain_seed)
    im.save(out_dir / entry["file"], "JPEG", quality=JPEG_QUALITY)
    return rec


def settings(n_scale: float, seed: int, big: bool) -> dict:
    return {"version": VERSION, "n_scale": n_scale, "seed": seed, "big": big,
            "size": list(BIG_SIZE) if big else f"long side <= {LONG_SIDE}", "jpeg_quality": JPEG_QUALITY}


def build_textset(out_dir: str | Path, n_scale: float = 1.0, seed: int = 0, big: bool = False,
                  progress=None) -> dict:
    """Write the set's photos and ``manifest.json`` into ``out_dir`` (see the module doc); deterministic for
    the same installed packages, ``n_scale`` (fraction of each kind kept, at least one) and ``seed``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    entries = plan(n_scale, seed)
    photos = []
    for i, e in enumerate(entries):
        if progress and (i % 25 == 0 or i + 1 == len(entries)):
            progress(f"writing photo {i + 1}/{len(entries)}")
        photos.append(write_photo(e, out, big, seed * 100003 + i))
    queries = make_queries(photos)
    check_unique(photos, queries)
    manifest = {"settings": settings(n_scale, seed, big), "photos": photos, "queries": queries,
                "common_words": COMMON_WORDS, "missing_sources": missing_sources()}
    (out / MANIFEST).write_text(json.dumps(manifest, ensure_ascii=False, indent=1), encoding="utf-8")
    return manifest


def missing_sources() -> list[str]:
    """Held-out photos the set would use that are not installed (the set is smaller without them)."""
    return [it["id"] for it in heldout_items() if it["id"] not in HAS_WRITING and not Path(it["path"]).is_file()]


def load_manifest(out_dir: str | Path) -> dict:
    return json.loads((Path(out_dir) / MANIFEST).read_text(encoding="utf-8"))


def ensure_textset(out_dir: str | Path, n_scale: float = 1.0, seed: int = 0, big: bool = False,
                   progress=None) -> dict:
    """The manifest of a finished build in ``out_dir`` with these settings, else a fresh build there."""
    try:
        m = load_manifest(out_dir)
        if m["settings"] == settings(n_scale, seed, big) and all(p.is_file() for p in photo_paths(m, out_dir)):
            return m
    except (OSError, ValueError, KeyError):
        pass
    return build_textset(out_dir, n_scale, seed, big, progress)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.textset", description=__doc__.splitlines()[0])
    p.add_argument("out_dir", type=Path)
    p.add_argument("--n-scale", type=float, default=1.0, help="fraction of each kind of photo kept (default 1)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--big", action="store_true", help="12 MP (4000x3000) photos, for cost measurements")
    args = p.parse_args(argv)
    m = build_textset(args.out_dir, args.n_scale, args.seed, args.big)
    kinds = {k: sum(p["kind"] == k for p in m["photos"]) for k in ("rendered", "real", "none")}
    types = {t: len(qs) for t, qs in queries_by_type(m).items()}
    print(f"{args.out_dir}/{MANIFEST}: {len(m['photos'])} photos {kinds}, {len(m['queries'])} queries {types}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
