"""Rebuild the demo photos in assets/demo/ from real photos that installed packages ship.

    python assets/demo/make_demo.py

Needs scikit-image, scikit-learn and matplotlib (requirements-build.txt) and Debian's opencv-doc
(``apt-get install opencv-doc``: /usr/share/doc/opencv-doc/examples/data/). Each photo is made upright,
RGB (transparency composited onto white), downscaled so the longer side is at most 640 px (never
upscaled), and saved as baseline JPEG quality 85 without EXIF/ICC/comment metadata. Rerunnable and
deterministic: the same inputs and Pillow/libjpeg give byte-identical files. A missing source is reported
and skipped (the committed file is left as it is). Sources and licences: SOURCES.md.
"""
from __future__ import annotations

import importlib
import sys
from pathlib import Path

from PIL import Image, ImageOps

OUT = Path(__file__).resolve().parent
MAX_SIDE = 640
QUALITY = 85
OPENCV_DATA = Path("/usr/share/doc/opencv-doc/examples/data")

# output name -> (package or None for an absolute path, path inside the package / absolute path)
SOURCES: dict[str, tuple[str | None, str]] = {
    "cat_chelsea.jpg": ("skimage", "data/chelsea.png"),
    "coffee.jpg": ("skimage", "data/coffee.png"),
    "rocket.jpg": ("skimage", "data/rocket.jpg"),
    "astronaut.jpg": ("skimage", "data/astronaut.png"),
    "motorcycle.jpg": ("skimage", "data/motorcycle_left.png"),
    "temple_china.jpg": ("sklearn", "datasets/images/china.jpg"),
    "flower.jpg": ("sklearn", "datasets/images/flower.jpg"),
    "grace_hopper.jpg": ("matplotlib", "mpl-data/sample_data/grace_hopper.jpg"),
    "baboon.jpg": (None, str(OPENCV_DATA / "baboon.jpg")),
    "apple.jpg": (None, str(OPENCV_DATA / "apple.jpg")),
    "orange.jpg": (None, str(OPENCV_DATA / "orange.jpg")),
    "squirrel.jpg": (None, str(OPENCV_DATA / "squirrel_cls.jpg")),
    "dog_chicky.jpg": (None, str(OPENCV_DATA / "chicky_512.png")),
    "butterfly.jpg": (None, str(OPENCV_DATA / "butterfly.jpg")),
    "starry_night.jpg": (None, str(OPENCV_DATA / "starry_night.jpg")),
    "fruits.jpg": (None, str(OPENCV_DATA / "fruits.jpg")),
    # photos with text in them (the text pass): two real signs from OpenCV's text samples, and a Chinese one
    "sign_no_parking.jpg": (None, "/usr/share/doc/opencv-doc/examples/text/scenetext01.jpg"),
    "sign_hotel.jpg": (None, "/usr/share/doc/opencv-doc/examples/text/scenetext_segmented_word01.jpg"),
}
CJK_FONT = Path("/usr/share/fonts/opentype/noto/NotoSansCJK-Bold.ttc")     # apt-get install fonts-noto-cjk
# output name -> (a demo photo made above, sign lines, plate colour): text drawn on a real photo, because no
# installed package ships a photo of Chinese writing
RENDERED: dict[str, tuple[str, list[str], tuple[int, int, int]]] = {
    "sign_station_zh.jpg": ("temple_china.jpg", ["北京西站 出口", "Beijing West Railway Station  EXIT"], (22, 110, 60)),
}


def source_path(package: str | None, rel: str) -> Path | None:
    if package is None:
        return Path(rel)
    try:
        mod = importlib.import_module(package)
    except ImportError:
        return None
    return Path(mod.__file__).resolve().parent / rel


def clean_rgb(im: Image.Image) -> Image.Image:
    """Upright, RGB on white, and a fresh image object so that no metadata (EXIF, ICC, comments) survives."""
    im = ImageOps.exif_transpose(im)
    if im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info):
        rgba = im.convert("RGBA")
        bg = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        im = Image.alpha_composite(bg, rgba)
    im = im.convert("RGB")
    return Image.frombytes("RGB", im.size, im.tobytes())


def shrink(im: Image.Image, max_side: int) -> Image.Image:
    w, h = im.size
    if max(w, h) <= max_side:
        return im
    s = max_side / max(w, h)
    return im.resize((max(1, round(w * s)), max(1, round(h * s))), Image.Resampling.LANCZOS)


def make(name: str, package: str | None, rel: str) -> Path | None:
    src = source_path(package, rel)
    if src is None or not src.is_file():
        print(f"skip {name}: source not found ({package or ''} {rel}); install it (see the docstring)")
        return None
    with Image.open(src) as im:
        im.load()
        out = shrink(clean_rgb(im), MAX_SIDE)
    dst = OUT / name
    out.save(dst, "JPEG", quality=QUALITY, optimize=False, progressive=False, subsampling="4:2:0")
    print(f"{name:18s} {out.size[0]}x{out.size[1]}  {dst.stat().st_size / 1024:6.1f} KB  <- {src}")
    return dst


def render_sign(name: str, base: str, lines: list[str], plate: tuple[int, int, int]) -> Path | None:
    """A station-style sign (white text on a coloured plate) drawn on the upper part of demo photo ``base``."""
    from PIL import ImageDraw, ImageFont
    if not CJK_FONT.is_file() or not (OUT / base).is_file():
        print(f"skip {name}: needs {CJK_FONT} (fonts-noto-cjk) and {base}")
        return None
    with Image.open(OUT / base) as im:
        out = clean_rgb(im)
    d = ImageDraw.Draw(out)
    w, h = out.size
    fonts = [ImageFont.truetype(str(CJK_FONT), round(h * f), index=2) for f in (0.085, 0.04)]   # index 2: SC
    boxes = [d.textbbox((0, 0), t, font=f) for t, f in zip(lines, fonts)]
    pw = max(b[2] - b[0] for b in boxes) + round(0.06 * w)
    ph = sum(b[3] - b[1] for b in boxes) + round(0.09 * h)
    x0, y0 = (w - pw) // 2, round(0.06 * h)
    d.rounded_rectangle((x0, y0, x0 + pw, y0 + ph), radius=round(0.015 * w), fill=plate, outline=(240, 240, 240),
                        width=max(2, w // 200))
    y = y0 + round(0.03 * h)
    for t, f, b in zip(lines, fonts, boxes):
        d.text(((w - (b[2] - b[0])) // 2 - b[0], y - b[1]), t, font=f, fill=(250, 250, 250))
        y += (b[3] - b[1]) + round(0.03 * h)
    dst = OUT / name
    out.save(dst, "JPEG", quality=QUALITY, optimize=False, progressive=False, subsampling="4:2:0")
    print(f"{name:18s} {w}x{h}  {dst.stat().st_size / 1024:6.1f} KB  <- {base} + sign {lines}")
    return dst


def main() -> int:
    made = [make(name, pkg, rel) for name, (pkg, rel) in SOURCES.items()]
    made += [render_sign(name, *spec) for name, spec in RENDERED.items()]
    missing = sum(m is None for m in made)
    total = sum(p.stat().st_size for p in OUT.glob("*.jpg"))
    print(f"{len(made) - missing} made, {missing} skipped; assets/demo/*.jpg total {total / 1024:.0f} KB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
