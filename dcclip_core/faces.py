"""Faces in photos: find them and describe each by 128 numbers, with the dlib models that packages ship (no download).

    finder = FaceFinder()
    r = finder.find("party.jpg")      # -> FaceReading(state, faces=[Face(box, score, side, sharpness, quality, vec)])
    distance(a.vec, b.vec)             # same person usually < 0.6 (dlib's ResNet; the join threshold is measured)

Models (``dlib-bin`` runs them; ``face-recognition-models`` ships the files; both CC0 / public domain):

* detection: dlib's HOG frontal face detector (inside dlib) on the photo shrunk to ``DETECT_SIDE`` px (longest
  side), ``UPSAMPLE`` times upsampled. Its weakest detections (score below ``VERIFY_BELOW``) are checked by the
  CNN detector (``mmod_human_face_detector.dat``) on a crop around them, which costs a fraction of running the CNN
  on the whole photo (~1.3 s at 512 px) and removes what HOG takes for a face in bark or fabric;
* alignment: the 5-point landmark model (``shape_predictor_5_face_landmarks.dat``) -> a 150 px face chip;
  the 68-point model in the same package is never used (its training data excludes commercial use);
* description: the ResNet face descriptor (``dlib_face_recognition_resnet_model_v1.dat``, 128 floats, ~86 ms a
  face on 2 cores).

Faces smaller than ``MIN_SIDE`` px (in the photo at full size) or with a chip sharper than ``MIN_SHARPNESS`` are
dropped (a descriptor of a tiny or blurred face places it near everyone); a crowd keeps its ``MAX_FACES``
largest faces and says so ("capped"). Boxes are fractions of the upright photo (EXIF orientation applied).
The sizes and thresholds were chosen by measurement (``python -m benchmarks faces``; BENCHMARKS.md).
"""
from __future__ import annotations

import importlib.util
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from .preprocess import ImageInput, load_image

DETECT_SIDE = 1024        # longest side the HOG detector sees
UPSAMPLE = 0              # HOG upsampling (each doubles the side: finds faces half as large, ~4x the time)
ENLARGE = True            # photos smaller than DETECT_SIDE are enlarged to it before HOG (faces under 80 px found)
HOG_FLOOR = 0.0           # HOG detections need at least this score (dlib's adjust_threshold)
VERIFY_BELOW = 0.5        # HOG detections scoring under this are checked by the CNN detector on a crop
CNN_FLOOR = 0.0           # the CNN's confidence a checked detection needs
MIN_SIDE = 40             # faces smaller than this (px at the photo's full size) are dropped
MIN_SHARPNESS = 20.0      # faces whose 150 px chip has less Laplacian variance than this are dropped
MAX_FACES = 30            # faces kept from one photo (a crowd keeps its largest and is recorded as "capped")
CHIP = 150                # the descriptor's input: an aligned face chip of CHIP x CHIP px
PADDING = 0.25            # chip padding around the landmarks (dlib's default for the descriptor)
DECODE_SHORT = 750        # JPEGs are DCT-decoded with the shorter side at least this (a 12 MP photo: 1/4 scale, 1000x750)
MIN_PHOTO = 32            # photos smaller than this (either side) hold no face worth keeping
MODEL_FILES = {"landmarks": "shape_predictor_5_face_landmarks.dat",
               "descriptor": "dlib_face_recognition_resnet_model_v1.dat",
               "cnn": "mmod_human_face_detector.dat"}


class FacesUnavailableError(RuntimeError):
    """dlib or the face model files are missing (``pip install -r requirements.txt``)."""


@dataclass
class Face:
    box: tuple[float, float, float, float]      # x0, y0, x1, y1 as fractions of the upright photo
    score: float                                # HOG detection score (higher: surer)
    side: int                                   # face size in px of the photo at full size (box's longer side)
    sharpness: float                            # Laplacian variance of the 150 px grey chip
    quality: float                              # 0..1: size and sharpness together (covers, clustering order)
    vec: np.ndarray = field(repr=False, default_factory=lambda: np.zeros(128, np.float32))   # (128,) float32
    verified: bool = False                      # checked by the CNN detector

    def pixels(self, width: int, height: int) -> list[int]:
        x0, y0, x1, y1 = self.box
        return [round(x0 * width), round(y0 * height), round(x1 * width), round(y1 * height)]


@dataclass
class FaceReading:
    state: str                                  # "none" | "faces" | "capped" | "error"
    faces: list[Face] = field(default_factory=list)
    seconds: float = 0.0
    found: int = 0                              # detections before the size / sharpness / CNN filters
    dropped: dict = field(default_factory=dict)  # {"small": n, "blurred": n, "unverified": n, "crowd": n}
    note: str = ""                              # why the state is what it is (errors, caps)


def model_dir() -> Path:
    """Folder of the face model files (package ``face_recognition_models``; located without importing it, since
    its ``__init__`` needs setuptools' pkg_resources)."""
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        raise FacesUnavailableError("the face models are not installed: pip install -r requirements.txt "
                                    "(face-recognition-models)")
    return Path(list(spec.submodule_search_locations)[0]) / "models"


def _model_files() -> dict[str, Path]:
    d = model_dir()
    files = {k: d / v for k, v in MODEL_FILES.items()}
    missing = [str(p) for p in files.values() if not p.is_file()]
    if missing:
        raise FacesUnavailableError(f"face model files missing: {', '.join(missing)} "
                                    "(pip install --force-reinstall face-recognition-models)")
    return files


def available() -> bool:
    try:
        import dlib  # noqa: F401
        _model_files()
        return True
    except Exception:
        return False


def finder_version() -> str:
    """Changes when a photo's faces would come out differently (the face pass then finds them again)."""
    try:
        import dlib
        v = dlib.__version__
    except Exception:                            # pragma: no cover
        v = "?"
    return (f"dlib-{v}/hog{DETECT_SIDE}{'e' if ENLARGE else ''}u{UPSAMPLE}f{HOG_FLOOR}/cnn<{VERIFY_BELOW}/min{MIN_SIDE}"
            f"/sharp{MIN_SHARPNESS}/max{MAX_FACES}/resnet-v1")


def distance(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Euclidean distance between descriptors: (128,) x (128,) -> float, (n, 128) x (128,) -> (n,)."""
    return np.linalg.norm(np.asarray(a, np.float32) - np.asarray(b, np.float32), axis=-1)


def box_iou(a, b) -> float:
    """Intersection over union of two (x0, y0, x1, y1) boxes (any one unit)."""
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def sharpness(chip: np.ndarray) -> float:
    """Variance of the 4-neighbour Laplacian of a (h, w, 3) uint8 chip's grey values."""
    g = np.asarray(chip, np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)        # (h, w)
    lap = g[1:-1, :-2] + g[1:-1, 2:] + g[:-2, 1:-1] + g[2:, 1:-1] - 4 * g[1:-1, 1:-1]
    return float(lap.var())


def quality(side: int, sharp: float) -> float:
    """0..1: faces of 160 px and more, with a chip at least 5x the sharpness floor, score 1."""
    return round(float(min(1.0, side / 160.0) ** 0.5 * min(1.0, sharp / (5 * MIN_SHARPNESS)) ** 0.5), 4)


class FaceFinder:
    """Finds and describes the faces in photos (see module doc). Thread-safe: one photo at a time per finder
    (dlib's descriptor network already uses both cores)."""

    def __init__(self, detect_side: int = DETECT_SIDE, upsample: int = UPSAMPLE, hog_floor: float = HOG_FLOOR,
                 verify_below: float | None = VERIFY_BELOW, min_side: int = MIN_SIDE,
                 min_sharpness: float = MIN_SHARPNESS, max_faces: int = MAX_FACES, enlarge: bool = ENLARGE):
        try:
            import dlib
        except Exception as e:                   # pragma: no cover - an install problem
            raise FacesUnavailableError(f"dlib is not installed ({e}): pip install -r requirements.txt") from e
        files = _model_files()
        self._dlib = dlib
        self.detect_side, self.upsample, self.hog_floor = int(detect_side), int(upsample), float(hog_floor)
        self.enlarge = bool(enlarge)
        self.verify_below = None if verify_below is None else float(verify_below)
        self.min_side, self.min_sharpness, self.max_faces = int(min_side), float(min_sharpness), int(max_faces)
        self.version = finder_version()
        self._lock = threading.Lock()
        self._hog = dlib.get_frontal_face_detector()
        self._landmarks = dlib.shape_predictor(str(files["landmarks"]))
        self._describe = dlib.face_recognition_model_v1(str(files["descriptor"]))
        self._cnn_file = str(files["cnn"])
        self._cnn = None                         # loaded on the first weak detection

    # ---- steps ------------------------------------------------------------------------------------------
    @staticmethod
    def _fit(im: Image.Image, side: int, enlarge: bool = False) -> Image.Image:
        w, h = im.size
        s = side / max(w, h)
        if s == 1 or (s > 1 and not enlarge):
            return im
        return im.resize((max(1, round(w * s)), max(1, round(h * s))), Image.BILINEAR, reducing_gap=2.0)

    def detect(self, arr: np.ndarray) -> list[tuple[object, float]]:
        """HOG detections in an (h, w, 3) uint8 RGB array: [(dlib.rectangle, score)], best first."""
        rects, scores, _ = self._hog.run(arr, self.upsample, self.hog_floor)
        out = sorted(zip(rects, scores), key=lambda t: -t[1])
        return [(r, float(s)) for r, s in out if float(s) >= self.hog_floor]

    def verify(self, arr: np.ndarray, rect) -> bool:
        """Whether the CNN detector finds a face overlapping ``rect`` in a crop of 2x its size around it."""
        dlib = self._dlib
        if self._cnn is None:
            self._cnn = dlib.cnn_face_detection_model_v1(self._cnn_file)
        h, w = arr.shape[:2]
        cx, cy = (rect.left() + rect.right()) / 2, (rect.top() + rect.bottom()) / 2
        half = max(rect.width(), rect.height())
        x0, y0 = max(0, int(cx - half)), max(0, int(cy - half))
        x1, y1 = min(w, int(cx + half)), min(h, int(cy + half))
        crop = np.ascontiguousarray(arr[y0:y1, x0:x1])
        # the CNN's window is 80 px: bring the face to ~100 px so it is found without upsampling
        s = 100.0 / max(1, half)
        if abs(s - 1) > 0.1:
            crop = np.asarray(Image.fromarray(crop).resize((max(1, round(crop.shape[1] * s)),
                                                            max(1, round(crop.shape[0] * s))), Image.BILINEAR))
        for d in self._cnn(crop, 0):
            r = d.rect
            if d.confidence < CNN_FLOOR:
                continue
            found = (x0 + r.left() / s, y0 + r.top() / s, x0 + r.right() / s, y0 + r.bottom() / s)
            if box_iou(found, (rect.left(), rect.top(), rect.right(), rect.bottom())) >= 0.3:
                return True
        return False

    # ---- the whole photo --------------------------------------------------------------------------------
    def find(self, image: ImageInput | Image.Image) -> FaceReading:
        """The faces of one photo (path, bytes or PIL image). Raises ``dcclip_core.ImageLoadError`` for a file that
        is no image; anything dlib raises propagates (the face pass records it per file)."""
        t0 = time.perf_counter()
        im = load_image(image, target_size=DECODE_SHORT)
        full_w, full_h = _full_size(image, im)
        if min(im.size) < MIN_PHOTO:
            return FaceReading("none", seconds=time.perf_counter() - t0, note="too small to hold a face")
        small = self._fit(im, self.detect_side, self.enlarge)
        arr = np.ascontiguousarray(np.asarray(small))                            # (h, w, 3) uint8 RGB
        H, W = arr.shape[:2]
        to_full = full_w / W                                                      # px of ``arr`` -> full size
        dropped = {"small": 0, "blurred": 0, "unverified": 0, "crowd": 0}
        with self._lock:
            dets = self.detect(arr)
            kept = []
            for rect, score in dets:
                side = round(max(rect.width(), rect.height()) * to_full)
                if side < self.min_side:
                    dropped["small"] += 1
                    continue
                verified = False
                if self.verify_below is not None and score < self.verify_below:
                    if not self.verify(arr, rect):
                        dropped["unverified"] += 1
                        continue
                    verified = True
                kept.append((rect, score, side, verified))
            if len(kept) > self.max_faces:                                        # a crowd: the largest faces
                dropped["crowd"] = len(kept) - self.max_faces
                kept = sorted(kept, key=lambda t: -t[2])[:self.max_faces]
            shapes = self._dlib.full_object_detections([self._landmarks(arr, r) for r, *_ in kept])
            chips = self._dlib.get_face_chips(arr, shapes, size=CHIP, padding=PADDING) if kept else []
            sharp = [sharpness(c) for c in chips]
            good = [i for i, s in enumerate(sharp) if s >= self.min_sharpness]
            dropped["blurred"] = len(kept) - len(good)
            vecs = self._describe.compute_face_descriptor([chips[i] for i in good]) if good else []
        faces = []
        for i, v in zip(good, vecs):
            rect, score, side, verified = kept[i]
            box = (max(0.0, rect.left() / W), max(0.0, rect.top() / H),
                   min(1.0, (rect.right() + 1) / W), min(1.0, (rect.bottom() + 1) / H))
            faces.append(Face(tuple(round(b, 4) for b in box), round(score, 4), side, round(sharp[i], 2),
                              quality(side, sharp[i]), np.asarray(v, np.float32), verified))
        state = "capped" if dropped["crowd"] else ("faces" if faces else "none")
        note = f"{dropped['crowd']} more faces than the {self.max_faces} kept" if dropped["crowd"] else ""
        return FaceReading(state, faces, time.perf_counter() - t0, len(dets), dropped, note)


def face_thumbnail(im: Image.Image, box, size: int = 160, margin: float = 0.35) -> Image.Image:
    """The square around ``box`` (fractions of ``im``), grown by ``margin`` on each side, at ``size`` px."""
    W, H = im.size
    x0, y0, x1, y1 = box[0] * W, box[1] * H, box[2] * W, box[3] * H
    half = max(x1 - x0, y1 - y0) * (0.5 + margin)
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    crop = im.crop((round(cx - half), round(cy - half), round(cx + half), round(cy + half)))
    return crop.resize((size, size), Image.BILINEAR)


def _full_size(image, decoded: Image.Image) -> tuple[int, int]:
    """The upright photo's size before DCT scaling (the decoded image when the size cannot be read cheaply)."""
    if isinstance(image, (str, Path)):
        try:
            from .preprocess import image_info
            info = image_info(image)
            w, h = int(info["width"]), int(info["height"])
            if (w >= h) == (decoded.size[0] >= decoded.size[1]) or w == h:
                return w, h
            return h, w
        except Exception:
            pass
    return decoded.size
