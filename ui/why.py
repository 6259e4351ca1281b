"""Why a photo matches, drawn: a concept heatmap over the photo, a box around the text line a search found in
it and boxes around the faces of the people it named, with their names (numpy + PIL only), and the photo as an
in-memory ``data:`` URI for the page (no file is written and no path is named).

    img = overlay(photo, cam)      # cam: (h, w) in [0, 1] over the photo's central square (what the model saw)
    img = draw_box(img, box, img.width / original_width)      # box: [x0, y0, x1, y1] pixels of the original
    img = draw_face(img, box, img.width / original_width, "妈妈")   # a face: magenta, its name on a tag
    uri = data_uri(img)            # "data:image/jpeg;base64,…"
"""
from __future__ import annotations

import base64
import functools
import io
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

# warm colours by heat: dark red -> orange -> yellow (value, RGB)
WARM = [(0.0, (150, 20, 20)), (0.45, (230, 70, 10)), (0.75, (255, 150, 0)), (1.0, (255, 235, 80))]
MAX_ALPHA = 0.5        # the hottest place: half warm colour, half photo
DIM = 0.55             # the cold places (and the strips outside the square the model saw) at 45 % brightness
FLOOR = 0.2            # heat below this is cold (most of a 7x7 map is low but not zero)
BOX = (40, 220, 255)   # the matched text line's box: cyan, apart from the heatmap's warm colours
FACE = (255, 60, 200)  # a face's box and name tag: magenta, apart from the cyan text box and the warm heatmap
FACE_OTHER = (235, 235, 235)   # the photo's other faces (people the query did not name): light grey
# fonts with Chinese for the name tags (Debian's fonts-noto-cjk first); PIL's own font draws Latin names only
LABEL_FONTS = ["/usr/share/fonts/opentype/noto/NotoSansCJK-Bold.ttc",
               "/usr/share/fonts/opentype/noto/NotoSansCJK-Regular.ttc",
               "/usr/share/fonts/truetype/noto/NotoSansCJK-Regular.ttc",
               "/usr/share/fonts/truetype/wqy/wqy-microhei.ttc", "/usr/share/fonts/truetype/wqy/wqy-zenhei.ttc",
               "/System/Library/Fonts/PingFang.ttc", "C:/Windows/Fonts/msyh.ttc"]


def _warm(v: np.ndarray) -> np.ndarray:
    """(H, W) heat in [0, 1] -> (H, W, 3) float RGB along WARM."""
    xs = [x for x, _ in WARM]
    return np.stack([np.interp(v, xs, [c[i] for _, c in WARM]) for i in range(3)], -1)


def overlay(photo: Image.Image, cam: np.ndarray) -> Image.Image:
    """``photo`` (RGB) with ``cam`` ((h, w) in [0, 1], the class-activation map of its central square, as the
    model crops it) upsampled smoothly and laid over it as a spotlight: hot places lit in semi-transparent warm
    colours, the rest of the photo dimmed (so the heat reads on warm-coloured photos too)."""
    im = photo.convert("RGB")
    W, H = im.size
    side = min(W, H)
    x0, y0 = (W - side) // 2, (H - side) // 2
    cam = np.clip(np.nan_to_num(np.asarray(cam, np.float32)), 0.0, 1.0)
    small = Image.fromarray((cam * 255).astype(np.uint8), "L")
    heat = small.resize((side, side), Image.Resampling.BICUBIC)
    heat = heat.filter(ImageFilter.GaussianBlur(radius=max(1.0, side / (2.5 * max(cam.shape)))))
    v = np.asarray(heat, np.float32) / 255.0
    v = v / (v.max() or 1.0)
    t = np.clip((v - FLOOR) / (1.0 - FLOOR), 0.0, 1.0)
    t = t * t * (3 - 2 * t)                                          # smoothstep: soft edges
    base = np.asarray(im, np.float32)
    out = base * (1 - DIM)
    lit = base[y0:y0 + side, x0:x0 + side] * (1 - DIM * (1 - t))[..., None]
    a = (MAX_ALPHA * t)[..., None]
    out[y0:y0 + side, x0:x0 + side] = lit * (1 - a) + _warm(v) * a
    return Image.fromarray(np.clip(out, 0, 255).astype(np.uint8), "RGB")


def draw_box(img: Image.Image, box, scale: float = 1.0) -> Image.Image:
    """A copy of ``img`` with a box around ``box`` ([x0, y0, x1, y1] in pixels of the photo ``img`` was shrunk
    from by ``scale``), a little outside the text: a cyan line edged in black, which shows on light and dark
    places alike."""
    out = img.convert("RGB")                                        # a copy, also of an RGB image
    W, H = out.size
    line = max(2, round(max(W, H) / 160))
    pad = line + 1
    x0, y0, x1, y1 = (float(v) * scale for v in box)
    rect = [max(0, x0 - pad - 1), max(0, y0 - pad - 1), min(W - 1, x1 + pad + 1), min(H - 1, y1 + pad + 1)]
    draw = ImageDraw.Draw(out)
    draw.rectangle(rect, outline=(0, 0, 0), width=line + 2)
    draw.rectangle([rect[0] + 1, rect[1] + 1, rect[2] - 1, rect[3] - 1], outline=BOX, width=line)
    return out


@functools.lru_cache(maxsize=8)
def label_font(size: int):
    """(a font for name tags at ``size`` px, whether it draws Chinese): the first of LABEL_FONTS there is, else
    PIL's own font (Latin only)."""
    from PIL import ImageFont
    for f in LABEL_FONTS:
        if Path(f).is_file():
            try:
                return ImageFont.truetype(f, size), True
            except OSError:
                continue
    try:
        return ImageFont.load_default(size), False
    except TypeError:                                                # Pillow < 10.1: a fixed bitmap font
        return ImageFont.load_default(), False


def draw_face(img: Image.Image, box, scale: float = 1.0, name: str | None = None,
              colour: tuple[int, int, int] = FACE) -> Image.Image:
    """A copy of ``img`` with a box around a face (``box`` [x0, y0, x1, y1] in pixels of the photo ``img`` was
    shrunk from by ``scale``), edged in black like ``draw_box``, and ``name`` on a tag of the same colour above it
    (below it when the face touches the top). A name the available fonts cannot draw (Chinese without a CJK
    font) is left out: the caption says it."""
    out = img.convert("RGB")
    W, H = out.size
    line = max(2, round(max(W, H) / 200))
    x0, y0, x1, y1 = (float(v) * scale for v in box)
    rect = [max(0, x0 - 1), max(0, y0 - 1), min(W - 1, x1 + 1), min(H - 1, y1 + 1)]
    draw = ImageDraw.Draw(out)
    draw.rectangle(rect, outline=(0, 0, 0), width=line + 2)
    draw.rectangle([rect[0] + 1, rect[1] + 1, rect[2] - 1, rect[3] - 1], outline=colour, width=line)
    name = " ".join(str(name or "").split())
    if not name:
        return out
    font, cjk = label_font(max(12, round(max(W, H) / 28)))
    if not cjk and not name.isascii():
        return out
    l, t, r, b = draw.textbbox((0, 0), name, font=font)
    pad = max(2, (b - t) // 5)
    tw, th = r - l + 2 * pad, b - t + 2 * pad
    tx = min(max(0, rect[0]), max(0, W - tw))
    ty = rect[1] - th if rect[1] - th >= 0 else min(H - th, rect[3] + 1)
    draw.rectangle([tx, ty, tx + tw, ty + th], fill=colour, outline=(0, 0, 0))
    ink = (0, 0, 0) if 0.2126 * colour[0] + 0.7152 * colour[1] + 0.0722 * colour[2] > 100 else (255, 255, 255)
    draw.text((tx + pad - l, ty + pad - t), name, font=font, fill=ink)
    return out


def data_uri(img: Image.Image, quality: int = 85) -> str:
    """A JPEG ``data:`` URI of an image (for the page's HTML: nothing written to disk, no URL to a file)."""
    buf = io.BytesIO()
    img.convert("RGB").save(buf, "JPEG", quality=quality)
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode("ascii")
