"""Shared benchmark plumbing: cache dir, machine info, timing, ONNX sessions, real test photos, tables, JSON."""
from __future__ import annotations

import json
import statistics
import time
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

REPO_DIR = Path(__file__).resolve().parent.parent
RESULTS_DIR = REPO_DIR / "benchmarks" / "results"


# ---- where derived benchmark files live (never in the repo) ---------------------------------------------
def cache_dir() -> Path:
    """``<cache>/bench``: ``$DCCLIP_CACHE/bench`` if set, else ``~/.cache/dcclip/bench``; created on demand."""
    from dcclip_core.config import cache_dir as cache_root
    d = cache_root() / "bench"
    d.mkdir(parents=True, exist_ok=True)
    return d


# ---- machine info and results JSON: one implementation (training.results, standard library only) --------------
from training.results import machine_info, write_json  # noqa: E402,F401  (the suites import them from here)


# ---- ONNX Runtime -------------------------------------------------------------------------------------
def make_session(path: str | Path, threads: int):
    """The app's session (``dcclip_core.runtime.make_session``) with ONNX Runtime's warnings kept out of the output."""
    from dcclip_core.runtime import make_session as runtime_session
    return runtime_session(path, threads, log_severity=3)


def file_mb(path: str | Path) -> float:
    """Size of an ONNX model in MB, including an external-data file beside it if there is one."""
    p = Path(path)
    size = p.stat().st_size
    data = p.with_name(p.name + ".data")
    if data.is_file():
        size += data.stat().st_size
    return round(size / 1e6, 2)


# ---- timing -------------------------------------------------------------------------------------------
def timed(fn: Callable[[], object], repeats: int, warmup: int = 1) -> list[float]:
    """Seconds per call of ``fn`` over ``repeats`` calls, after ``warmup`` untimed calls."""
    for _ in range(warmup):
        fn()
    out = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return out


def median(xs: Sequence[float]) -> float:
    return float(statistics.median(xs))


# ---- image decoding: the app's decoder when importable, else the same idea (PIL draft) ----------------
def image_decoder() -> tuple[Callable, Callable, str]:
    """(load_image, to_pixels, name): ``dcclip_core.preprocess`` if it imports, else a PIL-draft fallback."""
    try:
        from dcclip_core.preprocess import load_image, to_pixels
        return load_image, to_pixels, "dcclip_core.preprocess"
    except Exception:
        return _fallback_load_image, _fallback_to_pixels, "benchmarks.common fallback (PIL draft)"


def _fallback_load_image(path, target_size: int = 224):
    """Decode with JPEG DCT scaling (``draft``) to >= target_size, then resize the short side to it."""
    from PIL import Image, ImageOps
    im = Image.open(path)
    im.draft("RGB", (target_size, target_size))
    im = ImageOps.exif_transpose(im).convert("RGB")
    w, h = im.size
    s = target_size / min(w, h)
    return im.resize((max(target_size, round(w * s)), max(target_size, round(h * s))), Image.BICUBIC)


def _fallback_to_pixels(im, size: int, mean, std) -> np.ndarray:
    """PIL RGB -> float32 (3, size, size): centre crop, scale to [0, 1], normalise."""
    w, h = im.size
    left, top = (w - size) // 2, (h - size) // 2
    x = np.asarray(im.crop((left, top, left + size, top + size)), np.float32) / 255.0   # (S, S, 3)
    x = (x - np.asarray(mean, np.float32)) / np.asarray(std, np.float32)
    return np.ascontiguousarray(x.transpose(2, 0, 1))


# ---- real photos, upscaled once to phone-camera size -----------------------------------------------------
def _site_file(module: str, *parts: str) -> Path | None:
    try:
        mod = __import__(module)
    except Exception:
        return None
    p = Path(mod.__file__).parent.joinpath(*parts)
    return p if p.is_file() else None


_OPENCV = Path("/usr/share/doc/opencv-doc/examples/data")
_SKIMAGE = ["astronaut.png", "chelsea.png", "coffee.png", "rocket.jpg", "camera.png", "motorcycle_left.png",
            "motorcycle_right.png", "coins.png", "moon.png", "hubble_deep_field.jpg", "retina.jpg", "brick.png",
            "grass.png", "gravel.png", "ihc.png", "clock_motion.png"]
_OPENCV_FIRST = ["apple", "orange", "fruits", "baboon", "butterfly", "chicky_512", "squirrel_cls", "messi5",
                 "building", "aero1", "aero3", "home", "starry_night", "HappyFish", "leuvenA", "leuvenB",
                 "aloeL", "aloeR", "board", "licenseplate_motion", "ela_original", "text_defocus",
                 "Blender_Suzanne1"]
_OPENCV_SKIP = {"LinuxLogo", "WindowsLogo", "ellipses", "pca_test1"}


def source_photos() -> list[Path]:
    """Real photos that ship with installed packages (see /work/shared/ASSETS.md), in a fixed order."""
    out: list[Path] = []
    out += [p for n in _SKIMAGE if (p := _site_file("skimage", "data", n))]
    out += [p for n in ("china.jpg", "flower.jpg") if (p := _site_file("sklearn", "datasets", "images", n))]
    try:
        import matplotlib
        p = Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg"
        if p.is_file():
            out.append(p)
    except Exception:
        pass
    if _OPENCV.is_dir():
        first = [_OPENCV / f"{n}.jpg" for n in _OPENCV_FIRST]
        rest = sorted(p for p in _OPENCV.glob("*.jpg") if p.stem not in _OPENCV_SKIP and p not in first)
        out += [p for p in first + rest if p.is_file()]
    return out


def bench_photos(n: int, size: tuple[int, int] = (4000, 3000), quality: int = 90, grain: float = 5.0,
                 progress: Callable[[str], None] | None = None) -> list[Path]:
    """``n`` real photos as ~12 MP JPEGs (4:3 centre crop, upscaled, light sensor-like grain), cached.

    Upscaled images are unnaturally smooth and would decode faster than camera files; luma grain (sigma 5)
    brings the file to ~3 MB, like a 12 MP phone JPEG, since entropy decoding dominates a draft decode.
    """
    from PIL import Image

    from dcclip_core.atomic import atomic_path
    out_dir = cache_dir() / f"photos_{size[0]}x{size[1]}_q{quality}_g{grain:g}"
    out_dir.mkdir(parents=True, exist_ok=True)
    srcs = source_photos()
    if not srcs:
        raise FileNotFoundError("no source photos found (install scikit-image / scikit-learn / opencv-doc)")
    paths = []
    for i, src in enumerate(srcs[:n]):
        dst = out_dir / f"{i:03d}_{src.stem}.jpg"
        if not dst.is_file():
            if progress:
                progress(f"preparing 12 MP photo {i + 1}/{min(n, len(srcs))}: {src.name}")
            im = Image.open(src).convert("RGB")
            w, h = im.size
            tw, th = size
            if w * th > h * tw:                       # too wide: crop width
                cw = h * tw // th
                im = im.crop(((w - cw) // 2, 0, (w - cw) // 2 + cw, h))
            else:
                ch = w * th // tw
                im = im.crop((0, (h - ch) // 2, w, (h - ch) // 2 + ch))
            im = im.resize(size, Image.BICUBIC)
            rng = np.random.default_rng(i)
            x = np.asarray(im, np.float32)
            x += rng.normal(0.0, grain, size=x.shape[:2] + (1,)).astype(np.float32)   # luma grain
            im = Image.fromarray(np.clip(x, 0, 255).astype(np.uint8))
            with atomic_path(dst) as tmp:
                im.save(tmp, "JPEG", quality=quality)
        paths.append(dst)
    return paths


# ---- output -------------------------------------------------------------------------------------------
def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    def fmt(v):
        if v is None:
            return "—"
        if isinstance(v, float):
            return f"{v:,.1f}" if abs(v) >= 10 else f"{v:.2f}"
        return str(v)
    cells = [[fmt(v) for v in r] for r in rows]
    widths = [max(len(str(h)), *(len(r[i]) for r in cells)) if cells else len(str(h)) for i, h in enumerate(headers)]
    num = [all(isinstance(r[i], (int, float)) or r[i] is None for r in rows) for i in range(len(headers))]
    line = lambda vals: "| " + " | ".join(v.rjust(w) if n else v.ljust(w) for v, w, n in zip(vals, widths, num)) + " |"
    sep = "|" + "|".join(("-" * (w + 1) + ":") if n else ("-" * (w + 2)) for w, n in zip(widths, num)) + "|"
    return "\n".join([line([str(h) for h in headers]), sep] + [line(r) for r in cells])


def results_path(suite: str, args) -> str | Path:
    """Where a suite writes its JSON: ``--out`` if given ('-' = nowhere), else benchmarks/results/<suite>.json,
    or <cache>/<suite>-quick.json for ``--quick`` so a smoke test never overwrites real results."""
    return args.out or (cache_dir() / f"{suite}-quick.json" if args.quick else RESULTS_DIR / f"{suite}.json")




def publish(suite: str, args, res: dict, report: Callable[[dict], str], log: Callable[[str], None]) -> int:
    """The end of a suite: write ``res`` where ``results_path`` says (not for ``--out -``), then print the JSON
    (``--json``) or the markdown report. Returns the exit code 0."""
    out = results_path(suite, args)
    if str(out) != "-":
        log(f"wrote {write_json(out, res)} ({res['seconds']} s)")
    print(json.dumps(res, indent=2, ensure_ascii=False) if args.json else report(res))
    return 0
