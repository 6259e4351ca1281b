"""The offline few-shot task collection, built from real data that installed packages ship (no downloads).

    python -m training.prompts.tasks build OUT [--train-per-class 100] [--test-per-class 50] [--only NAME ...]
    python -m training.prompts.tasks list OUT

Tasks (one ImageFolder each: ``train/``, ``test/``, ``classnames.json`` EN/ZH, ``task.json``):

| task           | classes | source                                                                  | role     |
|----------------|---------|-------------------------------------------------------------------------|----------|
| sk-digits      | 10      | scikit-learn ``load_digits`` (UCI handwritten digits, 8x8 -> 64x64)      | source   |
| printed-digits | 10      | digits rendered with the fonts matplotlib (and the system) ship         | source   |
| zh-numerals    | 10      | 零 .. 九 rendered with the system's CJK fonts (skipped when there are none) | source |
| faces          | 2       | scikit-image ``lfw_subset`` (100 LFW faces, 100 non-face patches)       | source   |
| textures       | 6       | scikit-image photos: brick, grass, gravel, moon, Hubble field, IHC tissue | source |
| colours        | 6       | patches of the OpenCV / scikit-image sample photos, labelled by hue     | source   |
| shapes         | 4       | scikit-image ``draw.random_shapes``                                     | source   |
| cv-digits      | 10      | OpenCV ``samples/data/digits.png`` (5000 handwritten 20x20 digits)       | heldout  |

``cv-digits`` is the held-out target task: it is never part of a source or training set (``source_tasks``
refuses it). Train and test images of a task never overlap (patch tasks take them from disjoint regions or
from disjoint photos). Everything is deterministic for a given ``--seed``.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import sys
from pathlib import Path
from typing import Callable, Iterable

import numpy as np
from PIL import Image, ImageDraw, ImageFont

OPENCV_DATA = Path("/usr/share/doc/opencv-doc/examples/data")
DIGITS_PNG = OPENCV_DATA / "digits.png"
HELDOUT = ("cv-digits",)

DIGITS_EN = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
DIGITS_ZH = ["零", "一", "二", "三", "四", "五", "六", "七", "八", "九"]
DIGIT_CLASSES = {str(i): {"en": DIGITS_EN[i], "zh": DIGITS_ZH[i]} for i in range(10)}


class TaskUnavailable(RuntimeError):
    """The data a task needs is not installed here (the builder skips the task and says why)."""


# ---------------------------------------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------------------------------------


def _to_uint8(a: np.ndarray, lo: float, hi: float) -> np.ndarray:
    return np.clip((np.asarray(a, np.float64) - lo) / (hi - lo) * 255.0, 0, 255).round().astype(np.uint8)


def _upscale(a: np.ndarray, size: int = 64) -> Image.Image:
    return Image.fromarray(a).resize((size, size), Image.Resampling.BICUBIC)


def _split_per_class(items: dict[str, list], n_train: int, n_test: int, seed: int) -> dict:
    """{class: [image, ...]} -> {"train": {class: [...]}, "test": {class: [...]}} (shuffled, disjoint)."""
    rng = np.random.default_rng(seed)
    out = {"train": {}, "test": {}}
    for c, ims in items.items():
        order = rng.permutation(len(ims))
        n_te = min(n_test, len(ims) // 3 if len(ims) < n_train + n_test else n_test)
        out["test"][c] = [ims[i] for i in order[:n_te]]
        out["train"][c] = [ims[i] for i in order[n_te:n_te + n_train]]
    return out


# ---------------------------------------------------------------------------------------------------------
# task makers: each returns (classnames {folder: {"en","zh"}}, {"train": {folder: [PIL]}, "test": ...}, meta)
# ---------------------------------------------------------------------------------------------------------


def make_sk_digits(n_train: int, n_test: int, seed: int):
    from sklearn.datasets import load_digits
    d = load_digits()
    items = {str(c): [_upscale(_to_uint8(im, 0, 16)) for im in d.images[d.target == c]] for c in range(10)}
    return DIGIT_CLASSES, _split_per_class(items, n_train, n_test, seed), {
        "description": "UCI optical handwritten digits (scikit-learn load_digits), 8x8 grey levels upscaled "
                       "to 64x64, white ink on black", "license": "CC BY 4.0 (UCI ML repository)"}


def make_cv_digits(n_train: int, n_test: int, seed: int):
    if not DIGITS_PNG.is_file():
        raise TaskUnavailable(f"{DIGITS_PNG} not found (Debian package opencv-doc)")
    a = np.asarray(Image.open(DIGITS_PNG).convert("L"))                 # (1000, 2000): 50 rows x 100 cols
    cells = a.reshape(50, 20, 100, 20).transpose(0, 2, 1, 3)            # (50, 100, 20, 20)
    items = {str(c): [_upscale(cells[r, k]) for r in range(5 * c, 5 * c + 5) for k in range(100)]
             for c in range(10)}
    return DIGIT_CLASSES, _split_per_class(items, n_train, n_test, seed), {
        "description": "OpenCV samples/data/digits.png: 5000 handwritten digits in 20x20 cells (500 per "
                       "class), upscaled to 64x64. HELD-OUT target task: never in a source or training set.",
        "license": "OpenCV samples (Apache 2.0)"}


def make_faces(n_train: int, n_test: int, seed: int):
    from skimage.data import lfw_subset
    x = lfw_subset()                                                   # (200, 25, 25) float in [0, 1]
    items = {"face": [_upscale(_to_uint8(im, 0, 1)) for im in x[:100]],
             "background": [_upscale(_to_uint8(im, 0, 1)) for im in x[100:]]}
    names = {"face": {"en": "human face", "zh": "人脸"}, "background": {"en": "background", "zh": "背景"}}
    return names, _split_per_class(items, n_train, n_test, seed), {
        "description": "scikit-image lfw_subset: 100 Labeled Faces in the Wild crops and 100 random non-face "
                       "patches, 25x25 grey, upscaled to 64x64", "license": "LFW (research use)"}


def _region_crops(img: np.ndarray, n: int, size: int, rows: tuple[float, float], rng) -> list[Image.Image]:
    """n random size x size crops whose rows lie in the [rows[0], rows[1]) fraction of the image height."""
    h, w = img.shape[:2]
    r0, r1 = int(rows[0] * h), int(rows[1] * h) - size
    if r1 <= r0 or w < size:
        raise ValueError("image too small for the crop size")
    out = []
    for _ in range(n):
        y, x = rng.integers(r0, r1 + 1), rng.integers(0, w - size + 1)
        crop = img[y:y + size, x:x + size]
        out.append(Image.fromarray(crop).convert("RGB"))
    return out


def make_textures(n_train: int, n_test: int, seed: int):
    import skimage.data as sd
    spec = {
        "brick": (sd.brick, "brick wall", "砖墙"),
        "grass": (sd.grass, "grass", "草地"),
        "gravel": (sd.gravel, "gravel", "碎石"),
        "moon": (sd.moon, "moon surface", "月球表面"),
        "galaxies": (sd.hubble_deep_field, "galaxies in space", "太空中的星系"),
        "tissue": (sd.immunohistochemistry, "stained tissue under a microscope", "显微镜下的染色组织"),
    }
    rng = np.random.default_rng(seed)
    split = {"train": {}, "test": {}}
    names = {}
    for c, (fn, en, zh) in spec.items():
        img = fn()
        split["train"][c] = _region_crops(img, n_train, 96, (0.0, 0.7), rng)    # top 70 %: training crops
        split["test"][c] = _region_crops(img, n_test, 96, (0.7, 1.0), rng)      # bottom 30 %: test crops
        names[c] = {"en": en, "zh": zh}
    return names, split, {"description": "96x96 crops of scikit-image sample photos (brick, grass, gravel, "
                                         "moon, hubble_deep_field, immunohistochemistry); train crops from the "
                                         "top 70 % of each photo, test crops from the bottom 30 %",
                          "license": "scikit-image data (public domain / CC0, see skimage.data)"}


COLOURS = {  # folder: (en, zh)
    "red": ("red", "红色"), "yellow": ("yellow", "黄色"), "green": ("green", "绿色"),
    "blue": ("blue", "蓝色"), "white": ("white", "白色"), "black": ("black", "黑色"),
}


def _hue_class(patch: np.ndarray) -> str | None:
    """A colour name when >= 85 % of the patch's pixels fall in one hue/saturation/value bucket."""
    from skimage.color import rgb2hsv
    hsv = rgb2hsv(patch)
    h, s, v = hsv[..., 0] * 360, hsv[..., 1], hsv[..., 2]
    chroma = (s > 0.45) & (v > 0.35)
    masks = {
        "red": chroma & ((h < 12) | (h > 345)),
        "yellow": chroma & (h > 40) & (h < 70),
        "green": chroma & (h > 85) & (h < 160),
        "blue": chroma & (h > 195) & (h < 250),
        "white": (s < 0.12) & (v > 0.85),
        "black": v < 0.14,
    }
    for c, m in masks.items():
        if m.mean() >= 0.85:
            return c
    return None


def _photo_sources() -> list[tuple[str, np.ndarray]]:
    import skimage.data as sd
    photos = []
    for n in ("astronaut", "chelsea", "coffee", "rocket", "colorwheel", "immunohistochemistry", "retina",
              "hubble_deep_field", "logo"):
        try:
            a = getattr(sd, n)()
        except Exception:                                    # a data file that needs a download
            continue
        if a.ndim == 3:
            photos.append((f"skimage:{n}", a[..., :3] if a.shape[-1] == 4 else a))
    if OPENCV_DATA.is_dir():
        for p in sorted(OPENCV_DATA.iterdir()):
            if p.name == DIGITS_PNG.name or p.suffix.lower() not in (".jpg", ".png"):
                continue                                     # digits.png is the held-out task: never a source
            try:
                im = Image.open(p)
                if im.mode not in ("RGB", "RGBA", "P"):
                    continue
                photos.append((f"opencv:{p.name}", np.asarray(im.convert("RGB"))))
            except Exception:
                continue
    return photos


def make_colours(n_train: int, n_test: int, seed: int, patch: int = 24):
    photos = _photo_sources()
    if not photos:
        raise TaskUnavailable("no colour sample photos (scikit-image / opencv-doc)")
    found: dict[str, dict[str, list]] = {c: {} for c in COLOURS}
    for name, a in photos:
        im = Image.fromarray(a)
        scale = 320 / max(im.size)
        if scale < 1:
            im = im.resize((max(1, round(im.width * scale)), max(1, round(im.height * scale))),
                           Image.Resampling.BILINEAR)
        a = np.asarray(im)
        for y in range(0, a.shape[0] - patch + 1, patch // 2):
            for x in range(0, a.shape[1] - patch + 1, patch // 2):
                p = a[y:y + patch, x:x + patch]
                c = _hue_class(p)
                if c:
                    found[c].setdefault(name, []).append(Image.fromarray(np.ascontiguousarray(p)))
    # train and test come from different photos (patches of one photo are near-duplicates)
    split = {"train": {}, "test": {}}
    rng = np.random.default_rng(seed)
    for c, by_photo in found.items():
        srcs = sorted(by_photo, key=lambda s: hashlib.md5(f"{seed}:{s}".encode()).hexdigest())
        if len(srcs) < 2:
            raise TaskUnavailable(f"colour {c!r}: patches found in {len(srcs)} photo(s), need 2")
        total = sum(len(by_photo[s]) for s in srcs)
        test, n_te = [], 0
        for s in srcs[:-1]:                  # whole photos go to test until it holds about a third
            if n_te >= total / 3:
                break
            test.append(s)
            n_te += len(by_photo[s])
        train = [s for s in srcs if s not in test]
        tr = [im for s in train for im in by_photo[s]]
        te = [im for s in test for im in by_photo[s]]
        split["train"][c] = [tr[i] for i in rng.permutation(len(tr))[:n_train]]
        split["test"][c] = [te[i] for i in rng.permutation(len(te))[:n_test]]
    names = {c: {"en": en, "zh": zh} for c, (en, zh) in COLOURS.items()}
    return names, split, {"description": f"{patch}x{patch} patches of the OpenCV and scikit-image sample photos "
                                         "labelled by hue: >= 85 % of the pixels in one HSV bucket; train and "
                                         "test patches come from different photos",
                          "license": "OpenCV samples (Apache 2.0), scikit-image data (see skimage.data)"}


def make_shapes(n_train: int, n_test: int, seed: int):
    from skimage.draw import random_shapes
    spec = {"circle": ("circle", "圆形"), "rectangle": ("rectangle", "矩形"),
            "triangle": ("triangle", "三角形"), "ellipse": ("ellipse", "椭圆")}
    rng = np.random.default_rng(seed)
    items = {}
    for c in spec:
        ims = []
        while len(ims) < n_train + n_test:
            img, labels = random_shapes((64, 64), max_shapes=1, min_shapes=1, shape=c, min_size=22, max_size=56,
                                        channel_axis=-1, intensity_range=((0, 200),),
                                        rng=int(rng.integers(1 << 31)))
            if labels:
                ims.append(Image.fromarray(img))
        items[c] = ims
    names = {c: {"en": en, "zh": zh} for c, (en, zh) in spec.items()}
    return names, _split_per_class(items, n_train, n_test, seed), {
        "description": "one random filled shape on white (scikit-image draw.random_shapes), 64x64",
        "license": "generated (scikit-image, BSD-3)"}


def _fonts(cjk: bool) -> list[tuple[str, int]]:
    """(font file, face index) pairs: CJK fonts for Chinese numerals, else Latin fonts incl. matplotlib's."""
    fonts = []
    if cjk:
        for p in sorted(Path("/usr/share/fonts").rglob("*CJK*")):
            if p.suffix.lower() in (".ttc", ".otf", ".ttf"):
                fonts.append((str(p), 0))
        return fonts
    import matplotlib
    mpl = Path(matplotlib.get_data_path()) / "fonts" / "ttf"
    for p in sorted(mpl.glob("*.ttf")):
        if p.name.startswith(("DejaVu", "STIXGeneral", "cmr", "cmss", "cmtt", "cmb")) and "Display" not in p.name:
            fonts.append((str(p), 0))      # the *Display fonts carry no digit glyphs
    for d in ("dejavu", "liberation"):
        for p in sorted((Path("/usr/share/fonts/truetype") / d).glob("*.ttf")):
            if "Math" not in p.name:
                fonts.append((str(p), 0))
    return [f for f in fonts if _has_glyphs(*f)]


def _has_glyphs(font: str, index: int, text: str = "0123456789零九") -> bool:
    try:
        f = ImageFont.truetype(font, 32, index=index)
    except OSError:
        return False
    for ch in (text[:10] if "CJK" not in font else text[10:]):
        im = Image.new("L", (64, 64), 0)
        ImageDraw.Draw(im).text((8, 8), ch, fill=255, font=f)
        if np.asarray(im).max() < 128:
            return False
    return True


def _render(text: str, font: str, index: int, rng, size: int = 64) -> Image.Image:
    pt = int(rng.integers(34, 52))
    f = ImageFont.truetype(font, pt, index=index)
    canvas = Image.new("L", (size * 2, size * 2), 0)
    d = ImageDraw.Draw(canvas)
    x0, y0, x1, y1 = d.textbbox((0, 0), text, font=f)
    cx, cy = size + rng.integers(-5, 6), size + rng.integers(-5, 6)
    d.text((cx - (x0 + x1) / 2, cy - (y0 + y1) / 2), text, fill=int(rng.integers(200, 256)), font=f)
    canvas = canvas.rotate(float(rng.uniform(-12, 12)), resample=Image.Resampling.BICUBIC)
    return canvas.crop((size // 2, size // 2, size // 2 + size, size // 2 + size)).convert("RGB")


def _make_rendered(glyphs: list[str], cjk: bool, n_train: int, n_test: int, seed: int):
    fonts = _fonts(cjk)
    if not fonts:
        raise TaskUnavailable("no " + ("CJK " if cjk else "") + "fonts installed")
    rng = np.random.default_rng(seed)
    items = {}
    for c, g in enumerate(glyphs):
        ims = []
        for i in range(n_train + n_test):
            font, index = fonts[(i + c) % len(fonts)]
            ims.append(_render(g, font, index, rng))
        items[str(c)] = ims
    return items, fonts


def make_printed_digits(n_train: int, n_test: int, seed: int):
    items, fonts = _make_rendered([str(i) for i in range(10)], False, n_train, n_test, seed)
    return DIGIT_CLASSES, _split_per_class(items, n_train, n_test, seed), {
        "description": f"digits 0-9 rendered with {len(fonts)} fonts (matplotlib's DejaVu/STIX/Computer Modern, "
                       "system DejaVu/Liberation), 34-52 pt, rotated +-12 deg, white on black, 64x64",
        "license": "generated; fonts: Bitstream Vera / DejaVu, STIX (OFL), Liberation (OFL)"}


def make_zh_numerals(n_train: int, n_test: int, seed: int):
    items, fonts = _make_rendered(DIGITS_ZH, True, n_train, n_test, seed)
    return DIGIT_CLASSES, _split_per_class(items, n_train, n_test, seed), {
        "description": f"Chinese numerals 零..九 rendered with {len(fonts)} CJK fonts (Noto CJK), 34-52 pt, "
                       "rotated +-12 deg, white on black, 64x64", "license": "generated; fonts: Noto CJK (OFL)"}


MAKERS: dict[str, tuple[Callable, str]] = {
    "sk-digits": (make_sk_digits, "source"),
    "printed-digits": (make_printed_digits, "source"),
    "zh-numerals": (make_zh_numerals, "source"),
    "faces": (make_faces, "source"),
    "textures": (make_textures, "source"),
    "colours": (make_colours, "source"),
    "shapes": (make_shapes, "source"),
    "cv-digits": (make_cv_digits, "heldout"),
}


def write_task(out: Path, name: str, names: dict, split: dict, meta: dict) -> dict:
    """Write one ImageFolder task (PNG files) and return its summary."""
    d = out / name
    if d.exists():
        shutil.rmtree(d)
    counts = {}
    for part in ("train", "test"):
        n = 0
        for c, ims in split[part].items():
            (d / part / c).mkdir(parents=True, exist_ok=True)
            for i, im in enumerate(ims):
                im.save(d / part / c / f"{c}_{i:04d}.png", optimize=False)
                n += 1
        counts[part] = n
    (d / "classnames.json").write_text(json.dumps(names, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
    info = {"name": name, **meta, "classes": len(names), **counts}
    (d / "task.json").write_text(json.dumps(info, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
    return info


def build(out: str | Path, n_train: int = 100, n_test: int = 50, seed: int = 0,
          only: Iterable[str] | None = None, log=print) -> list[dict]:
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    only = list(only) if only else list(MAKERS)
    unknown = sorted(set(only) - set(MAKERS))
    if unknown:
        raise ValueError(f"unknown tasks {unknown} (have: {list(MAKERS)})")
    infos = []
    for name in only:
        fn, role = MAKERS[name]
        try:
            names, split, meta = fn(n_train, n_test, seed)
        except TaskUnavailable as e:
            log(f"skip {name}: {e}")
            continue
        info = write_task(out, name, names, split, {**meta, "role": role, "seed": seed})
        infos.append(info)
        log(f"{name:15s} {role:8s} classes={info['classes']:3d} train={info['train']:5d} test={info['test']:5d}")
    summary = {"tasks": {i["name"]: {k: i[k] for k in ("role", "classes", "train", "test")} for i in infos},
               "heldout": [i["name"] for i in infos if i["role"] == "heldout"], "seed": seed}
    prev = out / "collection.json"
    if prev.is_file() and only != list(MAKERS):
        old = json.loads(prev.read_text())
        old["tasks"].update(summary["tasks"])
        summary["tasks"] = old["tasks"]
        summary["heldout"] = sorted({*old.get("heldout", []), *summary["heldout"]})
    prev.write_text(json.dumps(summary, indent=1) + "\n")
    return infos


def source_tasks(tasks, exclude: Iterable[str] = ()) -> list:
    """Tasks allowed in a source set: never a held-out task (cv-digits), never one named in ``exclude``."""
    ex = set(exclude)
    return [t for t in tasks if t.role != "heldout" and t.name not in HELDOUT and t.name not in ex]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m training.prompts.tasks", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("build", help="write the task collection to OUT")
    b.add_argument("out")
    b.add_argument("--train-per-class", type=int, default=100)
    b.add_argument("--test-per-class", type=int, default=50)
    b.add_argument("--seed", type=int, default=0)
    b.add_argument("--only", nargs="*", help=f"subset of {list(MAKERS)}")
    ls = sub.add_parser("list", help="show the tasks of a built collection")
    ls.add_argument("out")
    args = p.parse_args(argv)
    if args.cmd == "build":
        build(args.out, args.train_per_class, args.test_per_class, args.seed, args.only)
        return 0
    from .data import load_collection
    for t in load_collection(args.out):
        print(f"{t.name:15s} {t.role:8s} {t.num_classes:3d} classes  train {len(t.train_paths):5d}  "
              f"test {len(t.test_paths):5d}  {', '.join(t.class_names('en')[:6])}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
