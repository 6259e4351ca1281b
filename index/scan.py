"""The indexer's per-file step, shared by the local threads (``index.indexer``) and the Ray workers
(``index.distributed``): find the image files below a folder, then read, hash, decode and preprocess each one.

    jobs, bad, unreadable = scan(root)                 # [Job], [(path, reason)], [folder we could not list]
    res = prepare(jobs[0], model, target=224)          # Prepared: "pixels" | "same" | "maybe_move" | "error"
    embed(model, [res])            # [(embedding (d,), concepts | None, None) | (None, None, "encoder failed: ...")]

Every failure is a reason string (``Prepared.reason``), never an exception: one bad file never stops a run.
"""
from __future__ import annotations

import hashlib
import io
import os
import re
import stat as stat_mod
import time
from dataclasses import dataclass, field

import numpy as np

from dcclip_core.encoder import PixelEncoder
from dcclip_core.preprocess import IMAGE_EXTENSIONS, ImageLoadError, image_info, load_image

from .errors import RootNotFoundError

MAX_FILE_BYTES = int(float(os.environ.get("INDEX_MAX_FILE_MB", 1024)) * 2**20)   # larger files are refused
SKIP_DIRS = {"@eaDir", "$RECYCLE.BIN", "System Volume Information", "lost+found"}  # NAS thumbnails, system dirs


@dataclass
class Job:
    """A file to index, as the folder walk saw it."""
    path: str
    size: int
    mtime: float
    ctime: float
    known_sha: str | None = None         # same path, current model: content unchanged -> no re-embed


@dataclass
class Prepared:
    """What ``prepare`` made of a ``Job``."""
    job: Job
    kind: str                            # "same" | "maybe_move" | "pixels" | "error"
    sha256: str | None = None
    pixels: np.ndarray | None = None
    fields: dict = field(default_factory=dict)
    reason: str | None = None
    emb: np.ndarray | None = None        # already embedded (the Ray path)
    concepts: tuple | None = None        # with emb: the photo's sparse concept (ids, weights), text-space models
    times: dict = field(default_factory=dict)   # stage -> thread CPU seconds spent on it (see STAGES)


# per-image stages of ``prepare`` (timed with the worker thread's CPU clock) and of the main loop (encode,
# commit: wall clock); ``build_index(profile=...)`` sums them
STAGES = ("read", "hash", "decode", "preprocess", "phash", "exif")


def scan(root: str) -> tuple[list[Job], list[tuple[str, str]], list[str]]:
    """Walk ``root`` (no symlinked dirs, so loops are safe; hidden folders and NAS thumbnail folders skipped)
    -> (jobs, [(path, reason)], unreadable dirs)."""
    jobs: list[Job] = []
    bad: list[tuple[str, str]] = []
    unreadable: list[str] = []

    def onerror(e: OSError):
        p = getattr(e, "filename", None) or "?"
        if str(p) == root:
            raise RootNotFoundError(f"cannot list folder {root}: {_os_reason(e, 'error')}") from None
        unreadable.append(str(p))
        bad.append((str(p), "cannot list folder: " + _os_reason(e, "error").replace("file vanished while indexing",
                                                                                    "folder vanished")))

    for dirpath, dirnames, filenames in os.walk(root, topdown=True, onerror=onerror, followlinks=False):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith(".") and d not in SKIP_DIRS)
        for name in sorted(filenames):
            if os.path.splitext(name)[1].lower() not in IMAGE_EXTENSIONS or name.startswith("._"):
                continue
            path = os.path.join(dirpath, name)
            try:
                path.encode("utf-8")
            except UnicodeEncodeError:
                bad.append((path.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace"),
                            "file name is not valid UTF-8 (rename the file)"))
                continue
            try:
                st = os.stat(path)
            except FileNotFoundError:
                bad.append((path, "broken symbolic link" if os.path.islink(path) else "file vanished while indexing"))
                continue
            except OSError as e:
                bad.append((path, _os_reason(e, "cannot stat")))
                continue
            if not stat_mod.S_ISREG(st.st_mode):
                bad.append((path, "not a regular file"))
                continue
            jobs.append(Job(path, st.st_size, st.st_mtime, st.st_ctime))
    return jobs, bad, unreadable


def prepare(job: Job, model: PixelEncoder, target: int, orphan_shas: frozenset | set = frozenset(),
            shortcuts: bool = True) -> Prepared:
    """Worker: read bytes, hash, and (unless it is an unchanged/moved file) decode + preprocess.

    One decode per file: the DCT-scaled image (>= target on its shorter side, e.g. 500x375 for 12 MP) feeds
    the encoder's pixels and the perceptual hash; metadata comes from the headers."""
    if job.size > MAX_FILE_BYTES:
        return Prepared(job, "error", reason=f"file too large ({job.size / 2**20:.0f} MB; limit "
                                             f"{MAX_FILE_BYTES / 2**20:.0f} MB, env INDEX_MAX_FILE_MB)")
    clock = time.thread_time
    times = {}
    t = clock()
    try:
        with open(job.path, "rb") as f:
            data = f.read()
    except OSError as e:
        return Prepared(job, "error", reason=_os_reason(e))
    if not data:
        return Prepared(job, "error", reason="empty file (0 bytes)")
    t, times["read"] = clock(), clock() - t
    sha = hashlib.sha256(data).hexdigest()
    t, times["hash"] = clock(), clock() - t
    if shortcuts and job.known_sha and sha == job.known_sha:
        return Prepared(job, "same", sha, times=times)
    if shortcuts and sha in orphan_shas:
        return Prepared(job, "maybe_move", sha, times=times)
    try:
        im = load_image(data, target_size=target)            # first: it refuses bombs before decoding
        t, times["decode"] = clock(), clock() - t
        px = np.asarray(model.preprocess(im), dtype=np.float32)
        t, times["preprocess"] = clock(), clock() - t
        ph = dhash(im)
        t, times["phash"] = clock(), clock() - t
        info = image_meta(data)
        times["exif"] = clock() - t
    except ImageLoadError as e:
        return Prepared(job, "error", sha, reason=e.reason, times=times)
    except MemoryError:
        return Prepared(job, "error", sha, reason="out of memory while decoding", times=times)
    except Exception as e:                                   # never let one file abort the run
        return Prepared(job, "error", sha, reason=f"unexpected error: {type(e).__name__}: {e}", times=times)
    fields = {"path": job.path, "size": len(data), "mtime": job.mtime, "sha256": sha, "phash": ph,
              "width": info.get("width"), "height": info.get("height"),
              "taken_at": exif_to_iso(info.get("exif_date")), "format": info.get("format")}
    return Prepared(job, "pixels", sha, px, fields, times=times)


def embed(model: PixelEncoder, items: list[Prepared]) -> list[tuple[np.ndarray | None, tuple | None, str | None]]:
    """The pixels of ``items`` through ``model.encode_pixels`` in one batch -> per item (embedding (d,),
    concepts, None), where concepts is the photo's sparse (ids, weights) for a model with a concept bank
    (``dcclip_core.concepts``) and None otherwise; when the batch fails, item by item, so that only an item
    that breaks the encoder gets (None, None, reason)."""
    try:
        return _encode(model, np.stack([it.pixels for it in items]))
    except Exception:
        out: list[tuple[np.ndarray | None, tuple | None, str | None]] = []
        for it in items:                                     # isolate the item that breaks the encoder
            try:
                out += _encode(model, it.pixels[None])
            except Exception as ex:
                out.append((None, None, f"encoder failed: {type(ex).__name__}: {ex}"))
        return out


def _encode(model: PixelEncoder, px: np.ndarray) -> list[tuple[np.ndarray, tuple | None, None]]:
    """(n, 3, S, S) -> per photo (embedding (d,), sparse concepts or None, None)."""
    if getattr(model, "concept_bank", None) is None:
        embs = np.asarray(model.encode_pixels(px), np.float32)                              # (n, d)
        return [(e, None, None) for e in embs]
    from dcclip_core.concepts import sparse
    embs, weights = model.encode_pixels(px, return_concepts=True)                          # (n, d), (n, C)
    colours = model.photo_colours(px)                                                      # (n, c) or None
    return [(np.asarray(e, np.float32), (*sparse(w), None if colours is None else colours[i]), None)
            for i, (e, w) in enumerate(zip(embs, weights))]


# ---- helpers ----------------------------------------------------------------------------------------------
_EXIF_DATE = re.compile(r"^\s*(\d{4})[:\-/](\d{2})[:\-/](\d{2})(?:[ T](\d{2}):(\d{2})(?::(\d{2}))?)?")


def exif_to_iso(value) -> str | None:
    """'2021:05:01 12:34:56' -> '2021-05-01T12:34:56' (None for missing / zero / unparsable dates)."""
    if not value:
        return None
    m = _EXIF_DATE.match(str(value))
    if not m:
        return None
    y, mo, d, hh, mm, ss = m.groups()
    if int(y) == 0 or not (1 <= int(mo) <= 12) or not (1 <= int(d) <= 31):
        return None
    if hh is None:
        return f"{y}-{mo}-{d}"
    return f"{y}-{mo}-{d}T{hh}:{mm}:{ss or '00'}"


def dhash(im, size: int = 8) -> str:
    """64-bit difference hash of a PIL image as 16 hex digits (for near-duplicate checks)."""
    from PIL import Image
    g = np.asarray(im.convert("L").resize((size + 1, size), Image.Resampling.BILINEAR), dtype=np.int16)
    bits = (g[:, 1:] > g[:, :-1]).flatten()
    return f"{int(''.join('1' if b else '0' for b in bits), 2):0{size * size // 4}x}"


def image_meta(data: bytes) -> dict:
    """width, height (after EXIF rotation), format, EXIF date of an image that decoded. PNG: only an eXIf
    chunk before the pixels is read (Pillow's getexif would decode the whole PNG a second time)."""
    from PIL import Image
    try:
        with Image.open(io.BytesIO(data)) as im:
            w, h = im.size
            fmt = im.format
            if fmt == "PNG":
                exif = Image.Exif()
                if im.info.get("exif"):
                    exif.load(im.info["exif"])
            else:
                exif = im.getexif()
            if exif.get(0x0112, 1) in (5, 6, 7, 8):
                w, h = h, w
            try:
                date = exif.get_ifd(0x8769).get(0x9003) or exif.get(0x0132)
            except Exception:
                date = exif.get(0x0132)
            return {"width": w, "height": h, "format": fmt, "exif_date": str(date) if date else None}
    except Exception:                                         # damaged metadata of a file that decoded
        try:
            return image_info(data)
        except Exception:
            return {}


def _os_reason(e: OSError, what: str = "cannot read") -> str:
    if isinstance(e, PermissionError):
        return "permission denied"
    if isinstance(e, FileNotFoundError):
        return "file vanished while indexing"
    if isinstance(e, IsADirectoryError):
        return "is a directory, not an image"
    return f"{what}: {e.strerror or e}"
