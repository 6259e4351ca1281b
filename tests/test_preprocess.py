"""dcclip_core.preprocess on real and odd inputs (tests/data/, made by tests/data/make_test_images.py).

Fast (no model): every odd-but-valid file decodes to RGB and (3, 224, 224) float32 pixels, EXIF rotation,
clear ImageLoadErrors for broken files, the pixel cap, JPEG draft decoding, path/bytes/PIL equivalence.
"""
import io
import os
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from dcclip_core import preprocess as pp
from dcclip_core.preprocess import ImageLoadError, image_info, load_image, resize_center_crop, to_pixels

DATA = Path(__file__).resolve().parent / "data"
REPO = DATA.parent.parent
UNICODE_NAME = "猫 照片 🐱.jpg"

VALID = ["cat.jpg", "coffee.jpg", "rocket.jpg", "exif_rotated.jpg", "cmyk.jpg", "gray.png", "palette.png",
         "palette_transparent.png", "rgba.png", "gray16.png", "float.tif", "one_bit.png", "cat.webp",
         "animated.gif", "cat.tiff", "cat.bmp", "cat.heic", UNICODE_NAME, "tiny_1x1.png", "panorama.jpg"]
# decoded from the cat photo, so their pixels should be close to cat.jpg's (colour ones only)
CAT_COLOUR = ["exif_rotated.jpg", "cmyk.jpg", "palette.png", "cat.webp", "animated.gif", "cat.tiff", "cat.bmp",
              "cat.heic", UNICODE_NAME]


def _path(name: str) -> Path:
    p = DATA / name
    if name == "cat.heic" and (not p.is_file() or not pp.HEIF):
        pytest.skip("cat.heic not made or pillow-heif missing (HEVC encoder unavailable)")
    assert p.is_file(), f"{p} missing: run python tests/data/make_test_images.py"
    return p


def _mad(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a - b).mean())


@pytest.fixture(scope="module")
def cat_px() -> np.ndarray:
    return to_pixels(load_image(DATA / "cat.jpg"))


@pytest.fixture(scope="module")
def big_jpeg(tmp_path_factory) -> Path:
    """A smooth 3000x2000 JPEG (a 6 MP 'camera photo')."""
    y, x = np.mgrid[0:2000, 0:3000]
    a = np.stack([x * 255 // 2999, y * 255 // 1999, (x // 7 + y // 5) % 256], -1).astype(np.uint8)
    p = tmp_path_factory.mktemp("big") / "big.jpg"
    Image.fromarray(a).save(p, quality=85)
    return p


# ---------------------------------------------------------------- valid files, odd modes and containers

@pytest.mark.parametrize("name", VALID)
def test_valid_file_gives_rgb_and_finite_pixels(name):
    p = _path(name)
    im = load_image(p)
    assert isinstance(im, Image.Image) and im.mode == "RGB"
    assert min(im.size) >= 1
    px = to_pixels(im)
    assert px.dtype == np.float32 and px.shape == (3, 224, 224)
    assert np.isfinite(px).all()
    assert px.min() >= -1.0 - 1e-6 and px.max() <= 1.0 + 1e-6          # mean = std = 0.5 -> [-1, 1]
    assert px.flags["C_CONTIGUOUS"]
    assert Path(name).suffix.lower() in pp.IMAGE_EXTENSIONS


@pytest.mark.parametrize("name", CAT_COLOUR)
def test_variants_of_the_cat_look_like_the_cat(name, cat_px):
    px = to_pixels(load_image(_path(name)))
    assert _mad(px, cat_px) < 0.08, name                               # pixels in [-1, 1]
    other = to_pixels(load_image(DATA / "coffee.jpg"))
    assert _mad(other, cat_px) > 0.2                                   # ... and a different photo is far


def test_exif_orientation_is_applied(cat_px):
    stored = Image.open(DATA / "exif_rotated.jpg")
    assert stored.size == (213, 320) and stored.getexif().get(0x0112) == 6
    im = load_image(DATA / "exif_rotated.jpg")
    assert im.size == (320, 213)
    right = _mad(to_pixels(im), cat_px)
    ignored = _mad(to_pixels(stored.convert("RGB")), cat_px)           # EXIF not applied
    wrong_way = _mad(to_pixels(im.transpose(Image.Transpose.ROTATE_180)), cat_px)
    assert right < 0.03
    assert ignored > 5 * right and wrong_way > 5 * right
    assert image_info(DATA / "exif_rotated.jpg")["width"] == 320        # metadata agrees, without a decode
    assert image_info(DATA / "exif_rotated.jpg")["height"] == 213


def test_transparency_is_composited_onto_white():
    im = load_image(DATA / "palette_transparent.png")                   # 8-px transparent green border
    assert im.getpixel((0, 0)) == (255, 255, 255) and im.getpixel((im.width - 1, im.height - 1)) == (255, 255, 255)
    assert im.getpixel((im.width // 2, im.height // 2)) != (255, 255, 255)
    rgba = load_image(DATA / "rgba.png")                                # alpha 0 on the left edge, 255 on the right
    assert rgba.getpixel((0, rgba.height // 2)) == (255, 255, 255)
    src = Image.open(DATA / "rgba.png")
    x = rgba.width - 1
    assert rgba.getpixel((x, 5)) == src.getpixel((x, 5))[:3]


def test_high_bit_depth_and_bilevel_become_gray():
    g8 = np.asarray(load_image(DATA / "gray.png"))
    g16 = np.asarray(load_image(DATA / "gray16.png"))
    assert Image.open(DATA / "gray16.png").mode == "I;16"
    assert np.array_equal(g16, g8)                                       # value * 257 -> / 257
    f = np.asarray(load_image(DATA / "float.tif")).astype(int)
    assert Image.open(DATA / "float.tif").mode == "F"
    assert (f[..., 0] == f[..., 1]).all() and (f[..., 1] == f[..., 2]).all()
    assert f.min() == 0 and f.max() == 255                               # 0..1 floats rescaled to the full range
    assert np.corrcoef(f[..., 0].ravel(), g8[..., 0].ravel())[0, 1] > 0.99
    b = np.asarray(load_image(DATA / "one_bit.png"))
    assert set(np.unique(b)) <= {0, 255}


def test_animated_gif_gives_the_first_frame():
    gif = Image.open(DATA / "animated.gif")
    assert gif.n_frames == 3
    first = to_pixels(load_image(DATA / "animated.gif"))
    cat = to_pixels(load_image(DATA / "cat.jpg"))
    mirrored = to_pixels(load_image(DATA / "cat.jpg").transpose(Image.Transpose.FLIP_LEFT_RIGHT))
    assert _mad(first, cat) < 0.08 and _mad(first, mirrored) > 2 * _mad(first, cat)
    gif.seek(2)                                                          # a PIL image left on a later frame
    assert _mad(to_pixels(load_image(gif)), first) < 1e-6


def test_cmyk_jpeg_is_not_inverted(cat_px):
    assert Image.open(DATA / "cmyk.jpg").mode == "CMYK"
    px = to_pixels(load_image(DATA / "cmyk.jpg"))
    assert _mad(px, cat_px) < 0.05 and _mad(-px, cat_px) > 0.3


# ---------------------------------------------------------------- names and input kinds

def test_unicode_file_name(cat_px):
    p = _path(UNICODE_NAME)
    for arg in (p, str(p)):
        assert np.array_equal(to_pixels(load_image(arg)), cat_px)
    assert image_info(p)["width"] == 320


@pytest.mark.parametrize("name", ["cat.jpg", "exif_rotated.jpg", "rgba.png", "animated.gif", "gray16.png"])
def test_bytes_and_pil_inputs_match_the_path(name):
    p = DATA / name
    ref = to_pixels(load_image(p))
    data = p.read_bytes()
    assert np.array_equal(to_pixels(load_image(data)), ref)
    assert np.array_equal(to_pixels(load_image(bytearray(data))), ref)
    with Image.open(io.BytesIO(data)) as im:
        assert np.array_equal(to_pixels(load_image(im)), ref)
    assert np.array_equal(to_pixels(load_image(str(p))), ref)


def test_bytes_vs_path_on_a_large_jpeg_use_the_same_draft(big_jpeg):
    ref = load_image(big_jpeg)
    assert load_image(big_jpeg.read_bytes()).size == ref.size
    assert np.array_equal(to_pixels(load_image(big_jpeg.read_bytes())), to_pixels(ref))


# ---------------------------------------------------------------- broken inputs

@pytest.mark.parametrize("name, words", [
    ("truncated.jpg", ["truncated"]),
    ("empty.jpg", ["empty", "0 bytes"]),
    ("not_an_image.jpg", ["not an image"]),
])
def test_broken_files_raise_a_clear_error(name, words):
    p = DATA / name
    with pytest.raises(ImageLoadError) as ei:
        load_image(p)
    e = ei.value
    assert e.path == str(p) and name in str(e)
    for w in words:
        assert w in e.reason.lower()
    # the same data as bytes: same reason, a placeholder instead of the name
    with pytest.raises(ImageLoadError) as eb:
        load_image(p.read_bytes())
    assert any(w in eb.value.reason.lower() for w in words) and "bytes" in eb.value.path


def test_truncated_file_is_not_silently_padded():
    assert pp.ImageFile.LOAD_TRUNCATED_IMAGES is False


def test_missing_file_directory_and_bad_type(tmp_path):
    missing = tmp_path / "no_such_photo.jpg"
    with pytest.raises(ImageLoadError, match="no_such_photo.jpg: file not found"):
        load_image(missing)
    with pytest.raises(ImageLoadError, match="directory"):
        load_image(tmp_path)
    with pytest.raises(ImageLoadError, match="unsupported input type int"):
        load_image(123)
    with pytest.raises(ImageLoadError, match="file not found"):
        image_info(missing)


def test_error_is_an_exception_with_path_and_reason():
    e = ImageLoadError(Path("a/b.jpg"), "why")
    assert isinstance(e, Exception) and e.path == str(Path("a/b.jpg")) and e.reason == "why"
    assert str(e) == f"{Path('a/b.jpg')}: why"


# ---------------------------------------------------------------- pixel cap (decompression bombs)

def _png_header_only(path: Path, w: int, h: int) -> Path:
    """A PNG whose header claims w x h 8-bit gray but that carries no pixel data: a bomb's first bytes."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0))
                     + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b""))
    return path


def test_default_cap_refuses_a_huge_header_before_decoding(tmp_path):
    assert pp.MAX_PIXELS == int(os.environ.get("DCCLIP_MAX_PIXELS", 120_000_000))
    p = _png_header_only(tmp_path / "bomb.png", 40_000, 40_000)          # 1600 MP, 100 bytes on disk
    with pytest.raises(ImageLoadError) as ei:
        load_image(p)
    r = ei.value.reason
    assert "too large" in r and "40000x40000" in r and "DCCLIP_MAX_PIXELS" in r and "pixels" in r
    assert "bomb.png" in str(ei.value)


def test_small_cap_refuses_a_real_png(tmp_path, monkeypatch):
    p = tmp_path / "big.png"
    Image.new("L", (2000, 1500), 128).save(p)                           # 3 MP, a few KB compressed
    monkeypatch.setattr(pp, "MAX_PIXELS", 1_000_000)
    with pytest.raises(ImageLoadError, match=r"too large: 2000x1500 .*DCCLIP_MAX_PIXELS"):
        load_image(p)
    with pytest.raises(ImageLoadError, match="too large"):
        load_image(p.read_bytes())
    monkeypatch.setattr(pp, "MAX_PIXELS", 3_000_000)                     # exactly at the cap is allowed
    assert load_image(p).size == (2000, 1500)


def test_cap_is_read_from_the_environment_at_import(tmp_path):
    p = tmp_path / "small.png"
    Image.new("RGB", (200, 100), "red").save(p)
    code = ("import sys; from dcclip_core import preprocess as pp\n"
            "print(pp.MAX_PIXELS)\n"
            "try:\n    pp.load_image(sys.argv[1])\nexcept pp.ImageLoadError as e:\n    print('ERR', e.reason)\n")
    env = {**os.environ, "DCCLIP_MAX_PIXELS": "10000", "PYTHONPATH": str(REPO)}
    out = subprocess.run([sys.executable, "-c", code, str(p)], env=env, capture_output=True, text=True,
                         timeout=60, cwd=REPO)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0] == "10000"
    assert lines[1].startswith("ERR too large: 200x100") and "DCCLIP_MAX_PIXELS" in lines[1]


def test_cap_message_states_the_numbers(tmp_path, monkeypatch):
    p = tmp_path / "small.png"
    Image.new("RGB", (200, 100), "red").save(p)
    monkeypatch.setattr(pp, "MAX_PIXELS", 10_000)
    with pytest.raises(ImageLoadError) as ei:
        load_image(p)
    assert "0 MP exceeds the 0 MP" not in ei.value.reason


# ---------------------------------------------------------------- JPEG draft

def test_jpeg_draft_decodes_large_photos_at_reduced_scale(big_jpeg):
    im = load_image(big_jpeg, target_size=224)
    assert im.mode == "RGB"
    assert im.size[0] < 3000 and im.size[1] < 2000 and min(im.size) >= 224
    assert im.size == (375, 250)                                         # 1/8 DCT scale
    full = load_image(big_jpeg, target_size=None)
    assert full.size == (3000, 2000)
    assert _mad(to_pixels(im), to_pixels(full)) < 0.02                   # same picture, cheaper
    for ts in (225, 250, 251, 500, 501, 1000, 1001, 2000, 2500):
        scale = next(s for s in (8, 4, 2, 1) if 2000 // s >= ts or s == 1)  # the coarsest scale still >= ts
        assert load_image(big_jpeg, target_size=ts).size == (3000 // scale, 2000 // scale), ts


def test_jpeg_draft_with_exif_rotation(tmp_path, big_jpeg):
    exif = Image.Exif()
    exif[0x0112] = 6
    p = tmp_path / "big_rotated.jpg"
    with Image.open(big_jpeg) as im:
        im.save(p, quality=85, exif=exif.tobytes())
    got = load_image(p)
    assert got.size == (250, 375)
    ref = load_image(big_jpeg).transpose(Image.Transpose.ROTATE_270)
    assert _mad(to_pixels(got), to_pixels(ref)) < 0.01


def test_small_jpeg_is_drafted_only_as_far_as_the_target():
    assert load_image(DATA / "cat.jpg").size == (320, 213)               # shorter side 213 < 224: full size
    assert load_image(DATA / "cat.jpg", target_size=213).size == (320, 213)
    assert load_image(DATA / "cat.jpg", target_size=100).size == (160, 107)   # 1/2 scale still >= 100


# ---------------------------------------------------------------- shapes: centre crop

def test_tiny_1x1_fills_the_square():
    im = load_image(DATA / "tiny_1x1.png")
    assert im.size == (1, 1)
    px = to_pixels(im)
    expected = (np.asarray(im.getpixel((0, 0)), np.float32) / 255 - 0.5) / 0.5
    assert np.allclose(px, expected[:, None, None], atol=1e-6)


def test_panorama_is_centre_cropped():
    im = load_image(DATA / "panorama.jpg")
    assert im.size == (1200, 100)
    sq = resize_center_crop(im, 224)
    assert sq.size == (224, 224)
    centre = im.crop((550, 0, 650, 100))                                 # the middle 100x100 square
    assert _mad(to_pixels(im), to_pixels(centre)) < 0.03
    left = im.crop((0, 0, 100, 100))
    assert _mad(to_pixels(im), to_pixels(left)) > 3 * _mad(to_pixels(im), to_pixels(centre))


def test_to_pixels_normalisation_and_size():
    im = Image.new("RGB", (300, 200), (255, 0, 128))
    px = to_pixels(im, size=64, mean=(0.5, 0.25, 0.0), std=(0.5, 0.25, 1.0))
    assert px.shape == (3, 64, 64) and px.dtype == np.float32
    assert np.allclose(px[0], 1.0) and np.allclose(px[1], -1.0) and np.allclose(px[2], 128 / 255, atol=1e-6)
    assert to_pixels(Image.new("L", (10, 10), 0)).shape == (3, 224, 224)   # non-RGB input converted


# ---------------------------------------------------------------- regressions: thin strips, leaked handles

def test_extreme_strip_does_not_allocate_a_huge_intermediate(monkeypatch):
    requested = []
    real_resize = Image.Image.resize

    def spy(self, size, *a, **k):
        requested.append(tuple(size))
        if size[0] * size[1] > 16 * 224 * 224:
            raise MemoryError(f"intermediate {size[0]}x{size[1]} would be allocated")
        return real_resize(self, size, *a, **k)

    monkeypatch.setattr(Image.Image, "resize", spy)
    strip = Image.new("RGB", (1, 5000), (10, 20, 30))                    # 5000 pixels, far below any cap
    px = to_pixels(strip)
    assert px.shape == (3, 224, 224)


def test_errors_do_not_keep_files_open():
    before = len(os.listdir("/proc/self/fd"))
    errors = []
    for _ in range(20):
        try:
            load_image(DATA / "truncated.jpg")
        except ImageLoadError as e:
            errors.append(e)
    assert len(errors) == 20
    assert len(os.listdir("/proc/self/fd")) - before < 5


# ---------------------------------------------------------------- libjpeg-turbo fast path (simplejpeg)

needs_fast = pytest.mark.skipif(not pp.FAST_JPEG, reason="simplejpeg not installed")


def _pil_only(monkeypatch, fn):
    monkeypatch.setattr(pp, "FAST_JPEG", False)
    try:
        return fn()
    finally:
        monkeypatch.setattr(pp, "FAST_JPEG", True)


@needs_fast
@pytest.mark.parametrize("name", ["cat.jpg", "coffee.jpg", "exif_rotated.jpg", UNICODE_NAME, "panorama.jpg",
                                  "cmyk.jpg"])
def test_fast_jpeg_path_gives_the_same_pixels_as_pil(name, monkeypatch):
    p = DATA / name
    for src in (p, p.read_bytes()):
        for ts in (224, 100, None):
            fast = load_image(src, target_size=ts)
            slow = _pil_only(monkeypatch, lambda: load_image(src, target_size=ts))
            assert fast.mode == "RGB" and fast.size == slow.size, (name, ts)
            assert np.array_equal(np.asarray(fast), np.asarray(slow)), (name, ts)


@needs_fast
def test_fast_jpeg_path_is_taken_and_declines_what_it_cannot_decode():
    assert pp._decode_jpeg_fast((DATA / "cat.jpg").read_bytes(), 224) is not None
    assert pp._decode_jpeg_fast((DATA / "cmyk.jpg").read_bytes(), 224) is None          # CMYK: PIL
    assert pp._decode_jpeg_fast((DATA / "truncated.jpg").read_bytes(), 224) is None     # damaged: PIL's error
    assert pp._decode_jpeg_fast((DATA / "gray.png").read_bytes(), 224) is None          # not a JPEG
    assert pp._decode_jpeg_fast(b"\xff\xd8\xff" + b"\x00" * 50, 224) is None


@needs_fast
def test_fast_jpeg_large_photo_same_draft_scale_rotation_and_cap(big_jpeg, tmp_path, monkeypatch):
    data = big_jpeg.read_bytes()
    assert pp._decode_jpeg_fast(data, 224).size == (375, 250)                           # 1/8 DCT scale
    for ts in (224, 251, 501, 1001, 2500, None):
        slow = _pil_only(monkeypatch, lambda: load_image(data, target_size=ts))
        assert np.array_equal(np.asarray(load_image(data, target_size=ts)), np.asarray(slow)), ts
    for orientation in range(1, 9):                                                      # every EXIF rotation
        exif = Image.Exif()
        exif[0x0112] = orientation
        p = tmp_path / f"o{orientation}.jpg"
        with Image.open(big_jpeg) as im:
            im.save(p, quality=85, exif=exif.tobytes())
        fast = load_image(p)
        slow = _pil_only(monkeypatch, lambda: load_image(p))
        assert fast.size == slow.size and np.array_equal(np.asarray(fast), np.asarray(slow)), orientation
    monkeypatch.setattr(pp, "MAX_PIXELS", 1_000_000)                                     # the cap still holds
    with pytest.raises(ImageLoadError, match="too large"):
        load_image(data)


def test_draft_scale_matches_pil_draft():
    for w, h in [(4000, 3000), (3000, 4000), (1920, 1080), (800, 600), (640, 480), (450, 300), (224, 224),
                 (100, 80), (1200, 100), (5000, 230), (4032, 3024)]:
        with Image.new("RGB", (w, h)) as src:
            buf = io.BytesIO()
            src.save(buf, "JPEG")
        for ts in (224, 100, 500):
            with Image.open(io.BytesIO(buf.getvalue())) as im:
                s = ts / min(w, h)
                if s < 1:
                    im.draft("RGB", (max(1, int(np.ceil(w * s))), max(1, int(np.ceil(h * s)))))
                want = -(-w // im.size[0]) if s < 1 else 1
                assert im.size == (-(-w // want), -(-h // want))
            assert pp.draft_scale(w, h, ts) == want, (w, h, ts)


def test_mpo_from_phones_is_drafted_too(big_jpeg, tmp_path, monkeypatch):
    """Multi-picture JPEGs (MPO, e.g. portrait-mode phone photos) decode their first picture at reduced scale."""
    p = tmp_path / "portrait.mpo.jpg"
    with Image.open(big_jpeg) as im:
        im.load()
        im.save(p, "MPO", save_all=True, append_images=[im.resize((300, 200))])
    with Image.open(p) as im:
        assert im.format == "MPO" and im.n_frames == 2
    assert _pil_only(monkeypatch, lambda: load_image(p)).size == (375, 250)
    assert load_image(p).size == (375, 250)


def test_to_pixels_table_matches_the_formula():
    im = load_image(DATA / "coffee.jpg")
    for mean, std in [((0.5,) * 3, (0.5,) * 3), ((0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258,
                                                                                         0.27577711))]:
        a = np.asarray(resize_center_crop(im, 224), np.float32) / 255.0
        ref = ((a - np.asarray(mean, np.float32)) / np.asarray(std, np.float32)).transpose(2, 0, 1)
        got = to_pixels(im, 224, mean, std)
        assert got.dtype == np.float32 and got.flags.c_contiguous and np.array_equal(got, ref)
