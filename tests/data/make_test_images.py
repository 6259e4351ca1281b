"""Rebuild the small test images in tests/data/ (see README.md there for the list).

    python tests/data/make_test_images.py

Needs scikit-image (requirements-build.txt): its bundled photos chelsea.png (the cat), coffee.png and
rocket.jpg are the sources; every odd input is derived from the cat. Rerunnable and deterministic (no
randomness; Pillow's encoders are deterministic for the same Pillow/libjpeg/libpng/libwebp builds).
HEIC needs pillow-heif with an HEVC encoder; without one cat.heic is skipped with a printed note.
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

OUT = Path(__file__).resolve().parent
PHOTO_SIDE = 320        # longer side of cat/coffee/rocket and the compressed variants
SMALL_SIDE = 160        # longer side of the losslessly stored variants (png, gif, bmp, tiff): keeps the dir small
QUALITY = 85
UNICODE_NAME = "猫 照片 🐱.jpg"


def skimage_photo(name: str) -> Image.Image:
    import skimage
    p = Path(skimage.__file__).resolve().parent / "data" / name
    with Image.open(p) as im:
        im.load()
        im = ImageOps.exif_transpose(im).convert("RGB")
    return Image.frombytes("RGB", im.size, im.tobytes())          # fresh object: no EXIF/ICC carried over


def fit(im: Image.Image, side: int) -> Image.Image:
    w, h = im.size
    s = side / max(w, h)
    if s >= 1:
        return im
    return im.resize((round(w * s), round(h * s)), Image.Resampling.LANCZOS)


def save(im: Image.Image, name: str, **kw) -> Path:
    p = OUT / name
    im.save(p, **kw)
    return p


def jpeg(im: Image.Image, name: str, **kw) -> Path:
    return save(im, name, format="JPEG", quality=QUALITY, optimize=False, progressive=False, **kw)


def main() -> int:
    cat_full = skimage_photo("chelsea.png")                        # 451x300
    cat = fit(cat_full, PHOTO_SIDE)                                # 320x213
    small = fit(cat_full, SMALL_SIDE)                              # 160x106
    made: list[Path] = []

    # real photos (tests/test_model.py uses these names)
    made.append(jpeg(cat, "cat.jpg"))
    made.append(jpeg(fit(skimage_photo("coffee.png"), PHOTO_SIDE), "coffee.jpg"))
    made.append(jpeg(fit(skimage_photo("rocket.jpg"), PHOTO_SIDE), "rocket.jpg"))

    # stored rotated 90° counter-clockwise; EXIF Orientation=6 ("rotate 90° CW to view") makes it upright
    exif = Image.Exif()
    exif[0x0112] = 6
    made.append(jpeg(cat.transpose(Image.Transpose.ROTATE_90), "exif_rotated.jpg", exif=exif.tobytes()))

    # odd modes
    made.append(jpeg(cat.convert("CMYK"), "cmyk.jpg"))
    made.append(save(small.convert("L"), "gray.png"))
    made.append(save(small.quantize(colors=256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE),
                     "palette.png"))
    # palette image whose 8-px border is one fully transparent palette entry (index 255, bright green)
    pal = small.quantize(colors=255, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)
    colours = pal.getpalette()[: 255 * 3] + [0, 255, 0]
    pal.putpalette(colours)
    a = np.asarray(pal).copy()
    a[:8, :] = a[-8:, :] = 255
    a[:, :8] = a[:, -8:] = 255
    pal_t = Image.fromarray(a, "P")
    pal_t.putpalette(colours)
    made.append(save(pal_t, "palette_transparent.png", transparency=255))
    # RGBA: alpha falls off towards the left edge (opaque on the right half)
    w, h = small.size
    alpha = np.clip(np.linspace(0, 2, w), 0, 1)[None, :].repeat(h, 0)
    rgba = small.copy()
    rgba.putalpha(Image.fromarray((alpha * 255).round().astype(np.uint8), "L"))
    made.append(save(rgba, "rgba.png"))
    g16 = np.asarray(small.convert("L"), dtype=np.uint16) * 257
    made.append(save(Image.fromarray(g16), "gray16.png"))                     # mode I;16
    f32 = np.asarray(small.convert("L"), dtype=np.float32) / 255.0
    made.append(save(Image.fromarray(f32, "F"), "float.tif"))                 # mode F, values 0..1
    made.append(save(small.convert("1"), "one_bit.png"))                        # Floyd-Steinberg dithered

    # other containers
    made.append(save(cat, "cat.webp", quality=80, method=4))
    frames = [small, small.transpose(Image.Transpose.FLIP_LEFT_RIGHT), ImageOps.invert(small)]
    made.append(save(frames[0], "animated.gif", save_all=True, append_images=frames[1:],
                     duration=200, loop=0))
    made.append(save(small, "cat.tiff", compression="tiff_lzw"))
    made.append(save(small, "cat.bmp"))
    try:
        import pillow_heif
        pillow_heif.register_heif_opener()
        made.append(save(cat, "cat.heic", quality=60))
    except Exception as e:                                                    # no HEVC encoder here
        print(f"note: cat.heic not made ({type(e).__name__}: {e}); the HEIC test will skip")

    # names and broken files
    made.append(jpeg(cat, UNICODE_NAME))
    data = (OUT / "cat.jpg").read_bytes()
    (OUT / "truncated.jpg").write_bytes(data[: int(len(data) * 0.4)])
    (OUT / "empty.jpg").write_bytes(b"")
    (OUT / "not_an_image.jpg").write_text("This is a text file with a .jpg name, not an image.\n",
                                          encoding="utf-8")
    made += [OUT / "truncated.jpg", OUT / "empty.jpg", OUT / "not_an_image.jpg"]

    # extreme shapes
    mean = tuple(int(v) for v in np.asarray(cat).reshape(-1, 3).mean(0).round())
    made.append(save(Image.new("RGB", (1, 1), mean), "tiny_1x1.png"))
    wide = cat_full.resize((1200, 798), Image.Resampling.LANCZOS)             # 1200 x 100 strip through the eyes
    made.append(jpeg(wide.crop((0, 250, 1200, 350)), "panorama.jpg"))

    for p in made:
        print(f"{p.name:26s} {p.stat().st_size / 1024:7.1f} KB")
    total = sum(p.stat().st_size for p in OUT.iterdir() if p.is_file())
    print(f"{len(made)} files; tests/data total {total / 1024:.0f} KB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
