"""Image loading and preprocessing in numpy/PIL: the single code path for training, export and ONNX runtime.

load_image(x)  : path | bytes | PIL.Image -> RGB PIL.Image (EXIF-rotated, first frame, JPEG draft-decoded)
to_pixels(im)  : RGB PIL.Image -> float32 (3, S, S): shorter side -> S (bicubic), centre crop, (x/255-mean)/std

Every failure is an ``ImageLoadError`` carrying the path and a human-readable reason; huge images are refused
before decoding (pixel cap, env ``DCCLIP_MAX_PIXELS``).

JPEG files and bytes are decoded by libjpeg-turbo through ``simplejpeg`` when it is installed (one call, GIL
released, DCT scaling to the same power-of-two scale PIL's ``draft`` picks, EXIF orientation applied), which
skips PIL's chunked decoder loop; anything it declines (CMYK, damaged data, other formats, PIL images) goes
through PIL, which also produces every error message.
"""
from __future__ import annotations

import functools
import io
import os
import warnings
from pathlib import Path
from typing import Sequence, Union

import numpy as np
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

from .config import fast_jpeg, max_pixels

ImageInput = Union[str, os.PathLike, bytes, Image.Image]

MAX_PIXELS = max_pixels()
Image.MAX_IMAGE_PIXELS = None          # we check the cap ourselves, with a clear message
ImageFile.LOAD_TRUNCATED_IMAGES = False

try:                                    # libjpeg-turbo in one GIL-free call (optional; PIL is the fallback)
    import simplejpeg
except Exception:                       # pragma: no cover - optional at runtime
    simplejpeg = None
FAST_JPEG = simplejpeg is not None and fast_jpeg()
FAST_JPEG_MAX_BYTES = 64 << 20          # larger .jpg files are left to PIL (which streams them)
_JPEG_EXT = frozenset({".jpg", ".jpeg", ".jpe", ".jfif"})
# EXIF orientation -> the transpose that makes the image upright (as ImageOps.exif_transpose)
_ORIENT = {2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180, 4: Image.Transpose.FLIP_TOP_BOTTOM,
           5: Image.Transpose.TRANSPOSE, 6: Image.Transpose.ROTATE_270, 7: Image.Transpose.TRANSVERSE,
           8: Image.Transpose.ROTATE_90}

try:                                    # HEIC / HEIF / AVIF from phones
    import pillow_heif
    pillow_heif.register_heif_opener()
    HEIF = True
except Exception:                       # pragma: no cover - optional at runtime
    HEIF = False

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".jpe", ".png", ".webp", ".gif", ".tif", ".tiff", ".bmp",
                              ".heic", ".heif", ".avif"})


class ImageLoadError(Exception):
    """An image that could not be read; ``path`` and ``reason`` are meant for users (error tables, the UI)."""

    def __init__(self, path, reason: str):
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")


def _describe(image: ImageInput) -> str:
    if isinstance(image, (str, os.PathLike)):
        return str(image)
    if isinstance(image, bytes):
        return f"<{len(image)} bytes>"
    return f"<{type(image).__name__}>"


def _open(image: ImageInput) -> Image.Image:
    name = _describe(image)
    if isinstance(image, Image.Image):
        return image
    if isinstance(image, (str, os.PathLike)):
        p = Path(image)
        if not p.exists():
            raise ImageLoadError(name, "file not found")
        if p.is_dir():
            raise ImageLoadError(name, "is a directory, not an image")
        try:
            size = p.stat().st_size
        except OSError as e:
            raise ImageLoadError(name, f"cannot stat: {e.strerror or e}") from None
        if size == 0:
            raise ImageLoadError(name, "empty file (0 bytes)")
        src = p
    elif isinstance(image, (bytes, bytearray)):
        if not image:
            raise ImageLoadError(name, "empty image data (0 bytes)")
        src = io.BytesIO(image)
    else:
        raise ImageLoadError(name, f"unsupported input type {type(image).__name__}")
    try:
        return Image.open(src)
    except PermissionError:
        raise ImageLoadError(name, "permission denied") from None
    except FileNotFoundError:
        raise ImageLoadError(name, "file not found (vanished while reading)") from None
    except UnidentifiedImageError:
        raise ImageLoadError(name, "not an image (unrecognised format)") from None
    except OSError as e:
        raise ImageLoadError(name, f"cannot open: {e}") from None


def _to_rgb(im: Image.Image) -> Image.Image:
    """Any PIL mode -> RGB. Transparency is composited onto white; 16-bit/float are rescaled to 8 bits."""
    mode = im.mode
    if mode == "RGB":
        return im
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        a = np.asarray(im, dtype=np.float64)
        if mode.startswith("I;16"):
            a = a / 257.0
        elif a.size:
            lo, hi = float(np.nanmin(a)), float(np.nanmax(a))
            if mode == "I" and lo >= 0 and hi <= 255:
                pass
            elif mode == "I" and lo >= 0 and hi <= 65535:
                a = a / 257.0
            else:
                a = (a - lo) / max(hi - lo, 1e-12) * 255.0
        g = np.clip(np.nan_to_num(a), 0, 255).astype(np.uint8)
        return Image.fromarray(g, "L").convert("RGB")
    if mode == "P":
        im = im.convert("RGBA") if "transparency" in im.info else im.convert("RGB")
        mode = im.mode
    if mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = im.convert("RGBA")
        bg = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(bg, rgba).convert("RGB")
    if mode == "RGB;16" or mode.startswith("BGR"):
        return im.convert("RGB")
    return im.convert("RGB")            # L, 1, CMYK, YCbCr, LAB, HSV


def load_image(image: ImageInput, target_size: int | None = 224) -> Image.Image:
    """Open and fully decode an image as RGB, upright (EXIF), first frame of animations.

    JPEGs are decoded at a reduced DCT scale (``draft``) as long as the shorter side stays >= target_size,
    which makes 12 MP photos several times cheaper. Raises ImageLoadError with a clear reason.
    """
    name = _describe(image)
    if FAST_JPEG and isinstance(image, (bytes, bytearray, memoryview)):
        im = _decode_jpeg_fast(image, target_size)
        if im is not None:
            return im
    elif FAST_JPEG and isinstance(image, (str, os.PathLike)) and Path(image).suffix.lower() in _JPEG_EXT:
        try:
            if 0 < os.path.getsize(image) <= FAST_JPEG_MAX_BYTES:
                with open(image, "rb") as f:
                    im = _decode_jpeg_fast(f.read(), target_size)
                if im is not None:
                    return im
        except OSError:
            pass                                        # PIL below says what is wrong, in its words
    caller_owned = isinstance(image, Image.Image)      # never shrink or close the caller's own image object
    im = _open(bytes(image) if isinstance(image, memoryview) else image)
    try:
        return _decode(im, name, target_size, allow_draft=not caller_owned)
    except BaseException:
        if not caller_owned:
            im.close()                                  # release the file handle before the error escapes
        raise


def draft_scale(w: int, h: int, target_size: int | None) -> int:
    """The JPEG DCT scale denominator (1, 2, 4 or 8) PIL's ``draft`` picks so the shorter side stays >= target."""
    if not target_size or min(w, h) <= target_size:
        return 1
    s = target_size / min(w, h)
    rw, rh = max(1, int(np.ceil(w * s))), max(1, int(np.ceil(h * s)))
    ratio = min(w // rw, h // rh)
    return next(a for a in (8, 4, 2, 1) if ratio >= a)


def _decode_jpeg_fast(data, target_size: int | None) -> Image.Image | None:
    """A YCbCr / gray JPEG decoded by libjpeg-turbo (simplejpeg) at ``draft_scale``, EXIF-rotated, as RGB;
    None when simplejpeg declines it (not a JPEG, CMYK, over the pixel cap, damaged: PIL decides then)."""
    if len(data) < 4 or bytes(data[:3]) != b"\xff\xd8\xff":
        return None
    try:
        h, w, colorspace, _ = simplejpeg.decode_jpeg_header(data)
        if colorspace not in ("YCbCr", "Gray") or w <= 0 or h <= 0 or w * h > MAX_PIXELS:
            return None
        a = draft_scale(w, h, target_size)
        arr = simplejpeg.decode_jpeg(data, colorspace="RGB", min_height=-(-h // a), min_width=-(-w // a),
                                     strict=True)                           # (h / a, w / a, 3) uint8
        orientation = _exif_orientation(data)
    except Exception:                                   # damaged, truncated, unsupported: PIL's turn
        return None
    im = Image.fromarray(arr, "RGB")
    return im.transpose(_ORIENT[orientation]) if orientation in _ORIENT else im


def _exif_orientation(data) -> int:
    """EXIF orientation tag (1 when absent) read from the JPEG headers only."""
    with Image.open(io.BytesIO(data)) as im:
        if im.format not in ("JPEG", "MPO"):
            raise ValueError("not a JPEG")
        return int(im.getexif().get(0x0112, 1) or 1)


def _decode(im: Image.Image, name: str, target_size: int | None, allow_draft: bool) -> Image.Image:
    try:
        w, h = im.size
        if w <= 0 or h <= 0:
            raise ImageLoadError(name, f"invalid size {w}x{h}")
        if w * h > MAX_PIXELS:
            raise ImageLoadError(name, f"too large: {w}x{h} = {w * h:,} pixels exceeds the {MAX_PIXELS:,}-pixel "
                                       f"limit (DCCLIP_MAX_PIXELS)")
        if getattr(im, "n_frames", 1) > 1:
            im.seek(0)
        if target_size and allow_draft and im.format in ("JPEG", "MPO") and im.mode in ("RGB", "L", "CMYK", "YCbCr"):
            # draft picks the largest scale 1/1..1/8 whose result is >= the requested size
            scale = max(target_size / min(w, h), 0.0)
            if scale < 1:
                im.draft(im.mode, (max(1, int(np.ceil(w * scale))), max(1, int(np.ceil(h * scale)))))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            im.load()
            im = ImageOps.exif_transpose(im) or im
        return _to_rgb(im)
    except ImageLoadError:
        raise
    except Image.DecompressionBombError as e:
        raise ImageLoadError(name, f"too large: {e}") from None
    except (OSError, SyntaxError, ValueError, EOFError) as e:
        msg = str(e) or type(e).__name__
        if "truncated" in msg.lower() or isinstance(e, EOFError):
            msg = f"truncated or corrupt image data ({msg})"
        else:
            msg = f"cannot decode: {msg}"
        raise ImageLoadError(name, msg) from None
    except MemoryError:
        raise ImageLoadError(name, "out of memory while decoding") from None


def resize_center_crop(im: Image.Image, size: int) -> Image.Image:
    """The central square of the image, resized to size x size (bicubic) in one step.

    Cropping in source coordinates first means a 1x50000 strip never becomes a 224x11M intermediate.
    """
    w, h = im.size
    side = min(w, h)
    box = ((w - side) / 2, (h - side) / 2, (w + side) / 2, (h + side) / 2)
    if side == size and (w, h) == (size, size):
        return im
    return im.resize((size, size), Image.Resampling.BICUBIC, box=box, reducing_gap=None)


def to_pixels(im: Image.Image, size: int = 224, mean: Sequence[float] = (0.5, 0.5, 0.5),
              std: Sequence[float] = (0.5, 0.5, 0.5)) -> np.ndarray:
    """RGB PIL image -> float32 (3, size, size), normalised (x / 255 - mean) / std."""
    if im.mode != "RGB":
        im = _to_rgb(im)
    u = np.asarray(resize_center_crop(im, size))                                # (S, S, 3) uint8
    lut = _norm_lut(tuple(float(m) for m in mean), tuple(float(s) for s in std))   # (3, 256)
    out = np.empty((3,) + u.shape[:2], np.float32)                              # (3, S, S)
    for c in range(3):                # a table lookup per channel: the same float32 values, 3x cheaper
        np.take(lut[c], u[..., c], out=out[c])
    return out


@functools.lru_cache(maxsize=8)
def _norm_lut(mean: tuple, std: tuple) -> np.ndarray:
    """float32 (3, 256): (v / 255 - mean[c]) / std[c] for every byte value v, computed as to_pixels always did."""
    v = np.arange(256, dtype=np.float32)[:, None] / 255.0                       # (256, 1)
    lut = (v - np.asarray(mean, np.float32)) / np.asarray(std, np.float32)      # (256, 3)
    return np.ascontiguousarray(lut.T)


def image_info(path: str | os.PathLike) -> dict:
    """Cheap metadata without a full decode: width, height (after EXIF rotation), format, EXIF date."""
    im = _open(path)
    try:
        w, h = im.size
        exif = im.getexif()
        if exif.get(0x0112, 1) in (5, 6, 7, 8):
            w, h = h, w
        date = None
        try:
            date = exif.get_ifd(0x8769).get(0x9003) or exif.get(0x0132)
        except Exception:
            date = exif.get(0x0132)
        return {"width": w, "height": h, "format": im.format, "exif_date": str(date) if date else None}
    finally:
        im.close()
