"""Text in photos: read Chinese and English text with the OCR models the ``rapidocr`` wheel ships (no download).

    reader = TextReader(threads=2)
    r = reader.read("receipt.jpg")        # -> Reading(state, lines=[Line(text, box, conf, script)], ...)
    normalise("車票 Ticket")              # -> "车票 ticket": the form full-text search matches on

Two steps, both on ONNX Runtime (rapidocr 3.10: PP-OCRv6 small detection + recognition, PP-OCR mobile
orientation classifier; Apache-2.0):

* a gate: the text detector on the photo shrunk to ``GATE_SIDE`` px (longest side). A photo where it finds no
  text region is done ("none"); most photos stop here, for the cost of one small detector run. Where it finds
  regions, its largest few are recognised first (``confirm``): when none reads as a line, the photo is done
  too — the detector fires on 14-20 % of photos without text (leaves, bricks, waves) and a full reading of
  each cost ~400 ms;
* reading: detection, orientation and recognition on the photo at ``READ_SIDE`` px. Lines under ``MIN_CONF``
  and lines of symbols are dropped (what the recogniser makes of texture, mirrored writing, noise); a page
  with more than ``MAX_LINES`` lines or ``MAX_CHARS`` characters keeps the first ones (reading order) and says so ("capped").

Boxes are fractions of the upright photo (EXIF orientation applied): [x0, y0, x1, y1] in 0..1, so they hold at
any display size; ``Line.pixels(w, h)`` turns them into pixels.
The sizes and the thresholds were chosen by measurement (``python -m benchmarks ocr``; BENCHMARKS.md).
"""
from __future__ import annotations

import re
import threading
import time
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from .preprocess import ImageInput, load_image
from .tokenizer import script_converter

GATE_SIDE = 480          # longest side the gate's detector sees
READ_SIDE = 960          # longest side detection + recognition see
MIN_CONF = 0.75          # recognition confidence a kept line needs
MAX_LINES = 300          # lines kept from one photo (a dense page is capped and recorded)
MAX_CHARS = 6000         # characters kept from one photo
MIN_SIDE = 16            # photos smaller than this (either side) have no readable text
MAX_DET_BOXES = 600      # text regions the detector may return (rapidocr's max_candidates)
CONFIRM_REGIONS = 8      # the gate's largest regions recognised to confirm there is text

CJK = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\U00020000-\U0002ebef]")    # a Chinese character
_LATIN = re.compile(r"[A-Za-z]")
_SPACE_BETWEEN_CJK = re.compile(r"(?<=[\u3000-\u9fff\uf900-\uffef])\s+(?=[\u3000-\u9fff\uf900-\uffef])")
_SPACES = re.compile(r"\s+")


class OCRUnavailableError(RuntimeError):
    """The OCR package or its model files are missing (``pip install -r requirements.txt``)."""


@dataclass
class Line:
    text: str
    box: tuple[float, float, float, float]      # x0, y0, x1, y1 as fractions of the upright photo
    conf: float
    script: str                                  # "zh-Hans", "zh-Hant", "latin" or "other"

    def pixels(self, width: int, height: int) -> list[int]:
        x0, y0, x1, y1 = self.box
        return [round(x0 * width), round(y0 * height), round(x1 * width), round(y1 * height)]


@dataclass
class Reading:
    state: str                                   # "none" (no text), "text", "capped" (page cut at the caps)
    lines: list[Line] = field(default_factory=list)
    seconds: float = 0.0
    gate_regions: int = 0                        # text regions the gate saw (0: recognition never ran)
    dropped: int = 0                             # lines past the caps (state "capped")
    note: str = ""                               # why it was capped / skipped, for the record


def script_of(text: str) -> str:
    """"zh-Hant" when the text has Chinese characters that simplified Chinese writes otherwise, "zh-Hans" for
    other Chinese text, "latin" for Latin letters without Chinese, else "other" (digits, symbols)."""
    if CJK.search(text):
        conv = script_converter("t2s")
        return "zh-Hant" if conv is not None and conv.convert(text) != text else "zh-Hans"
    return "latin" if _LATIN.search(text) else "other"


def worth_keeping(text: str) -> bool:
    """A line worth storing: any Chinese character, or at least two letters / digits ("***", a lone "8" read
    from texture are not)."""
    return bool(CJK.search(text)) or sum(c.isalnum() for c in text) >= 2


def has_words(text: str) -> bool:
    """Enough of a line for its meaning to count (two Chinese characters or three letters): what "X1" or "8"
    mean to the text tower is noise."""
    return len(CJK.findall(text)) >= 2 or len(_LATIN.findall(text)) >= 3


def normalise(text: str) -> str:
    """The form text is matched in: NFKC (full-width letters and digits to ASCII), case folded, traditional
    Chinese to simplified (OpenCC t2s, as the tokenizer does), spaces between Chinese characters removed (OCR
    puts them in at random), other runs of spaces as one."""
    s = unicodedata.normalize("NFKC", str(text)).casefold()
    conv = script_converter("t2s")
    if conv is not None and CJK.search(s):
        s = conv.convert(s)
    s = _SPACE_BETWEEN_CJK.sub("", s)
    return _SPACES.sub(" ", s).strip()


def _model_files() -> dict[str, Path]:
    try:
        import rapidocr
    except ImportError as e:                     # pragma: no cover - a requirements.txt install has it
        raise OCRUnavailableError(f"reading text in photos needs rapidocr (pip install -r requirements.txt): {e}") \
            from None
    root = Path(rapidocr.__file__).resolve().parent / "models"
    files = {"det": root / "PP-OCRv6_det_small.onnx", "rec": root / "PP-OCRv6_rec_small.onnx",
             "cls": root / "ch_ppocr_mobile_v2.0_cls_mobile.onnx"}
    missing = [str(p) for p in files.values() if not p.is_file()]
    if missing:                                  # never let rapidocr fetch them: say what is missing instead
        raise OCRUnavailableError(f"OCR model files missing: {', '.join(missing)} (reinstall rapidocr)")
    return files


def reader_version() -> str:
    """What a stored reading was made with; a photo read by another version (or other settings) is read again."""
    try:
        from importlib.metadata import version
        v = version("rapidocr")
    except Exception:                            # pragma: no cover
        v = "?"
    return f"rapidocr-{v}/PP-OCRv6-small/gate{GATE_SIDE}+confirm{CONFIRM_REGIONS}/read{READ_SIDE}/conf{MIN_CONF}"


class TextReader:
    """Reads the text in photos (see module doc). Thread-safe: one reading at a time per reader."""

    def __init__(self, threads: int | None = 1, gate_side: int = GATE_SIDE, read_side: int = READ_SIDE,
                 min_conf: float = MIN_CONF, max_lines: int = MAX_LINES, max_chars: int = MAX_CHARS):
        files = _model_files()
        from rapidocr import RapidOCR
        n = int(threads) if threads else -1
        self.gate_side, self.read_side = int(gate_side), int(read_side)
        self.min_conf, self.max_lines, self.max_chars = float(min_conf), int(max_lines), int(max_chars)
        self.version = reader_version()
        self._lock = threading.Lock()
        # limit_type "max": the detector shrinks the longest side to limit_side_len (never enlarges); the images
        # handed over are already at the size wanted, so this only rounds them to multiples of 32
        self._engine = RapidOCR(params={
            "Global.log_level": "critical", "Global.text_score": self.min_conf,
            "Global.max_side_len": max(self.read_side, self.gate_side) * 2, "Global.min_side_len": 8,
            "Det.model_path": str(files["det"]), "Rec.model_path": str(files["rec"]),
            "Cls.model_path": str(files["cls"]), "Det.limit_type": "max",
            "Det.limit_side_len": max(self.read_side, self.gate_side), "Det.max_candidates": MAX_DET_BOXES,
            "EngineConfig.onnxruntime.intra_op_num_threads": n,
            "EngineConfig.onnxruntime.inter_op_num_threads": 1})

    # ---- steps ------------------------------------------------------------------------------------------
    @staticmethod
    def _fit(im: Image.Image, side: int) -> Image.Image:
        """``im`` with its longest side at most ``side`` (never enlarged)."""
        w, h = im.size
        s = side / max(w, h)
        if s >= 1:
            return im
        return im.resize((max(1, round(w * s)), max(1, round(h * s))), Image.BILINEAR, reducing_gap=2.0)

    def gate_boxes(self, im: Image.Image) -> np.ndarray:
        """Text regions the detector finds in ``im`` at the gate's size: quads (n, 4, 2) in ``im``'s pixels."""
        small = self._fit(im, self.gate_side)
        with self._lock:
            out = self._engine(np.ascontiguousarray(np.asarray(small)[:, :, ::-1]), use_det=True, use_cls=False,
                               use_rec=False)                                       # BGR (h, w, 3) uint8
        if out.boxes is None or not len(out.boxes):
            return np.zeros((0, 4, 2), np.float32)
        return np.asarray(out.boxes, np.float32) * (im.size[0] / small.size[0])

    def regions(self, im: Image.Image) -> int:
        """How many text regions the gate finds in ``im``."""
        return len(self.gate_boxes(im))

    def confirm(self, im: Image.Image, boxes: np.ndarray) -> bool:
        """Whether the gate's regions hold text: the largest ``CONFIRM_REGIONS`` of them, cut from the photo at
        the reading size, recognised — true when one reads as a line worth keeping at ``min_conf``. What the
        detector takes for text in leaves, bricks or waves reads as nothing, and the photo is spared the
        reading (detection at the reading size costs ~4x the gate)."""
        big = self._fit(im, self.read_side)
        quads = boxes * (big.size[0] / im.size[0])                                # (n, 4, 2) pixels of ``big``
        area = (quads[:, :, 0].max(1) - quads[:, :, 0].min(1)) * (quads[:, :, 1].max(1) - quads[:, :, 1].min(1))
        quads = quads[np.argsort(-area)[:CONFIRM_REGIONS]]
        bgr = np.ascontiguousarray(np.asarray(big)[:, :, ::-1])
        with self._lock:
            crops = self._engine.crop_text_regions(bgr, quads)
            crops, _ = self._engine.cls_and_rotate(crops)
            rec = self._engine.recognize_txt(crops)
        return any(float(c) >= self.min_conf and worth_keeping(str(t).strip())
                   for t, c in zip(rec.txts or (), rec.scores or ()))

    def recognise(self, im: Image.Image) -> tuple[list[Line], int]:
        """Every line at the reading size, in reading order, with the count of lines past the caps."""
        big = self._fit(im, self.read_side)
        W, H = big.size
        with self._lock:
            out = self._engine(np.ascontiguousarray(np.asarray(big)[:, :, ::-1]), use_det=True, use_cls=True,
                               use_rec=True)         # every step named: rapidocr keeps the last call's choice
        if out.boxes is None or out.txts is None:
            return [], 0
        lines = []
        for quad, text, conf in zip(out.boxes, out.txts, out.scores):     # quad (4, 2) pixels of ``big``
            text = str(text).strip()
            if float(conf) < self.min_conf or not worth_keeping(text):
                continue
            q = np.asarray(quad, np.float32)
            box = (max(0.0, float(q[:, 0].min()) / W), max(0.0, float(q[:, 1].min()) / H),
                   min(1.0, float(q[:, 0].max()) / W), min(1.0, float(q[:, 1].max()) / H))
            lines.append(Line(text, tuple(round(v, 4) for v in box), round(float(conf), 4), script_of(text)))
        kept, chars = [], 0
        for ln in lines:
            if len(kept) >= self.max_lines or chars + len(ln.text) > self.max_chars:
                break
            kept.append(ln)
            chars += len(ln.text)
        return kept, len(lines) - len(kept)

    # ---- the whole reading ------------------------------------------------------------------------------
    def read(self, image: ImageInput | Image.Image) -> Reading:
        """Read one photo (path, bytes or PIL image). Raises ``dcclip_core.ImageLoadError`` for a file that is no
        image; anything the OCR models raise propagates (the text pass records it per file)."""
        t0 = time.perf_counter()
        # decoded (JPEG: DCT-scaled) so the shorter side keeps what the reading size needs of it
        im = load_image(image, target_size=self.read_side * 3 // 4)
        if min(im.size) < MIN_SIDE:
            return Reading("none", seconds=time.perf_counter() - t0, note="too small to hold text")
        boxes = self.gate_boxes(im)
        n = len(boxes)
        if n == 0 or not self.confirm(im, boxes):
            return Reading("none", seconds=time.perf_counter() - t0, gate_regions=n)
        lines, dropped = self.recognise(im)
        state = "capped" if dropped else ("text" if lines else "none")
        note = (f"{dropped} more lines than the {self.max_lines} lines / {self.max_chars} characters kept"
                if dropped else "")
        return Reading(state, lines, time.perf_counter() - t0, n, dropped, note)
