"""The "faces" evaluation set: photos of real people that installed packages ship, with face boxes and identities
checked by eye (``benchmarks/data/faces_truth.json``), and photos without faces.

    photos = detection_photos()           # [Photo(id, path, rotate, faces=[Truth(who, box, ignore)])]
    extras = identity_photos()            # KPhotoAlbum's person thumbnails: more faces of the same people
    negatives = negative_photos()         # held-out photos without people (assets/data/heldout_photos.json)
    python -m benchmarks.faceset review OUT_DIR    # redraw the detections the truth was checked against

EVALUATION ONLY: nothing here is ever used to train or tune a model; nothing is downloaded.

How the truth was made: every candidate photo was run through a generous detector set (dlib HOG upsampled 2x
at full size, adjust threshold -0.5, plus the CNN detector at full size upsampled once; both on the photo as
stored and, for KPhotoAlbum's rotated scans, turned upright), the union drawn into a PNG (``review``) and
looked at. A truth face is one a person recognises as a face; its box is the detector's box when one found it,
else drawn by eye in the same style (brows to chin, ear to ear). Faces smaller than ``MIN_COUNTED`` of the
photo's longer side, and faces a person sees only as a back of a head, are ``ignore``: a detection there is
neither a hit nor a false positive, missing it costs nothing. Identities come from KPhotoAlbum's People tags
(and their ``area`` regions), the packages' own descriptions (astronaut: Eileen Collins; Grace Hopper; Messi)
or are ``unknown-N`` (a person seen in one photo only). Candidate photos were every KPhotoAlbum demo photo,
the held-out photos of category "people", and every photo among ~5000 images of the installed packages
(opencv-doc, gimp-help-en, wallpapers, hugin, scribus, scikit-image, matplotlib) where HOG upsampled once
found anything; images with drawn overlays (detection boxes, landmarks), collages and face swaps were left out.
So the set can miss photos whose only faces HOG never fires on (profiles, tiny faces) outside those sources.

Boxes are ``[x0, y0, x1, y1]`` fractions of the photo as an indexer sees it (file pixels, EXIF applied).
``rotate`` is KPhotoAlbum's ``angle``: degrees clockwise the album turns the scan for display (the file is
not turned); ``upright_box`` maps a box into the turned photo.
"""
from __future__ import annotations

import argparse
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from dcclip_core.faces import box_iou

REPO_DIR = Path(__file__).resolve().parent.parent
TRUTH_JSON = REPO_DIR / "benchmarks" / "data" / "faces_truth.json"
HELDOUT_JSON = REPO_DIR / "assets" / "data" / "heldout_photos.json"
MIN_COUNTED = 0.02          # truth faces smaller than this share of the longer side are "ignore"
BIG_DIR = "faces-big"       # under the benchmark cache dir: 12 MP versions of the photos


@dataclass(frozen=True)
class Truth:
    who: str                                   # "Jesper", "Eileen Collins", "unknown-3", ...
    box: tuple[float, float, float, float]     # fractions of the photo as stored
    ignore: bool = False                       # too small / in a poster: neither hit nor false positive
    hard: bool = False                         # counted, but a frontal detector is not expected to find it
    region: bool = False                       # an ignore region (a crowd): absorbs every detection centred in it


@dataclass
class Photo:
    id: str
    path: Path
    rotate: int = 0                            # degrees clockwise KPhotoAlbum turns it for display
    faces: list[Truth] = field(default_factory=list)
    source: str = ""                           # key of the truth file's "sources"
    role: str = "detect"                       # "detect" | "identity" (face thumbnails) | "negative"
    crop_of: str | None = None                 # identity thumbnails cut from a photo of the set (its id)

    @property
    def counted(self) -> list[Truth]:
        return [f for f in self.faces if not f.ignore]


# ---- the truth file --------------------------------------------------------------------------------------
def load_truth(path: Path = TRUTH_JSON) -> dict:
    return json.loads(Path(path).read_text(encoding="utf-8"))


def _root(src: dict) -> Path:
    root = src["root"]
    if root.startswith("repo:"):
        return REPO_DIR / root[len("repo:"):]
    return Path(root)


def _photos(truth: dict, role: str) -> list[Photo]:
    out = []
    for p in truth["photos"]:
        if p.get("role", "detect") != role:
            continue
        path = _root(truth["sources"][p["src"]]) / p["file"]
        if not path.is_file():
            continue
        faces = [Truth(f[0], tuple(float(v) for v in f[1]), "ignore" in f[2:], "hard" in f[2:], "region" in f[2:])
                 for f in p["faces"]]
        out.append(Photo(p["id"], path, int(p.get("rotate", 0)), faces, p["src"], role, p.get("crop_of")))
    return out


def detection_photos(truth: dict | None = None) -> list[Photo]:
    """Photos checked face by face, in the truth file's order (KPhotoAlbum's album order first)."""
    return _photos(truth or load_truth(), "detect")


def identity_photos(truth: dict | None = None) -> list[Photo]:
    """Small face thumbnails of known people (KPhotoAlbum's category images): descriptors only."""
    return _photos(truth or load_truth(), "identity")


def negative_photos(truth: dict | None = None) -> list[Photo]:
    """Photos without a face to count: the truth's photos of role "negative", then the held-out photos that
    are not in the truth's list (checked by eye: people in them, if any, are smaller than ``MIN_COUNTED``)."""
    truth = truth or load_truth()
    taken = {str(_root(truth["sources"][p["src"]]) / p["file"]) for p in truth["photos"]}
    items = json.loads(HELDOUT_JSON.read_text(encoding="utf-8"))
    return _photos(truth, "negative") + [Photo(it["id"], Path(it["path"]), role="negative", source=it["package"])
                                         for it in items if it["path"] not in taken and Path(it["path"]).is_file()]


def missing(truth: dict | None = None) -> list[str]:
    """Truth photos whose file is not installed (the set is smaller without them)."""
    truth = truth or load_truth()
    return [p["id"] for p in truth["photos"] if not (_root(truth["sources"][p["src"]]) / p["file"]).is_file()]


# ---- rotation ----------------------------------------------------------------------------------------------
def upright(im: Image.Image, rotate: int) -> Image.Image:
    """The photo as KPhotoAlbum shows it: turned ``rotate`` degrees clockwise."""
    return im.rotate(-rotate, expand=True) if rotate % 360 else im


def upright_box(box, rotate: int) -> tuple[float, float, float, float]:
    """A box (fractions of the stored photo) in the photo turned ``rotate`` degrees clockwise."""
    x0, y0, x1, y1 = box
    r = rotate % 360
    if r == 90:                      # (x, y) -> (1 - y, x)
        return (1 - y1, x0, 1 - y0, x1)
    if r == 180:
        return (1 - x1, 1 - y1, 1 - x0, 1 - y0)
    if r == 270:                     # (x, y) -> (y, 1 - x)
        return (y0, 1 - x1, y1, 1 - x0)
    return tuple(box)


def stored_box(box, rotate: int) -> tuple[float, float, float, float]:
    """Inverse of ``upright_box``."""
    return upright_box(box, (360 - rotate % 360) % 360)


def open_photo(photo: Photo, turned: bool = False) -> Image.Image:
    im = ImageOps.exif_transpose(Image.open(photo.path)).convert("RGB")
    return upright(im, photo.rotate) if turned else im


# ---- matching ----------------------------------------------------------------------------------------------
def match(boxes: list, faces: list[Truth], min_iou: float = 0.3) -> tuple[list[int | None], list[bool]]:
    """Greedy matching of detected ``boxes`` (best first) to truth ``faces``: (for each box the index of its
    truth face or None, for each truth face whether it was found). Boxes on ``ignore`` faces match them too;
    boxes left over whose centre is inside a ``region`` go to it (any number)."""
    taken = [False] * len(faces)
    out: list[int | None] = []
    for b in boxes:
        best, best_iou = None, min_iou
        for j, f in enumerate(faces):
            if taken[j] or f.region:
                continue
            v = box_iou(b, f.box)
            if v >= best_iou:
                best, best_iou = j, v
        if best is not None:
            taken[best] = True
        out.append(best)
    for i, b in enumerate(boxes):
        if out[i] is None:
            cx, cy = (b[0] + b[2]) / 2, (b[1] + b[3]) / 2
            out[i] = next((j for j, f in enumerate(faces) if f.region and f.box[0] <= cx <= f.box[2]
                           and f.box[1] <= cy <= f.box[3]), None)
    return out, taken


# ---- 12 MP versions ------------------------------------------------------------------------------------------
def big_crop(w: int, h: int) -> tuple[int, int, int, int]:
    """The 4:3 centre crop ``benchmarks.textset.canvas(big=True)`` takes of a w x h photo (x0, y0, x1, y1)."""
    from .textset import BIG_SIZE
    tw, th = BIG_SIZE
    if w * th > h * tw:
        cw = h * tw // th
        return ((w - cw) // 2, 0, (w - cw) // 2 + cw, h)
    ch = w * th // tw
    return (0, (h - ch) // 2, w, (h - ch) // 2 + ch)


def big_faces(photo: Photo, w: int, h: int) -> list[Truth]:
    """Truth faces of ``photo`` (w x h) in its 12 MP version; faces whose centre the crop cuts off are dropped,
    the others clipped to it."""
    x0, y0, x1, y1 = big_crop(w, h)
    cw, ch = x1 - x0, y1 - y0
    out = []
    for f in photo.faces:
        b = ((f.box[0] * w - x0) / cw, (f.box[1] * h - y0) / ch, (f.box[2] * w - x0) / cw, (f.box[3] * h - y0) / ch)
        cx, cy = (b[0] + b[2]) / 2, (b[1] + b[3]) / 2
        if 0 <= cx <= 1 and 0 <= cy <= 1:
            out.append(Truth(f.who, tuple(min(1.0, max(0.0, v)) for v in b), f.ignore, f.hard, f.region))
    return out


def ensure_big(photos: list[Photo], out_dir: Path, progress=None) -> list[tuple[Photo, Path]]:
    """12 MP versions (4000x3000 JPEG q90, light grain: ``benchmarks.textset.canvas`` and ``_grain``) of
    ``photos`` as stored (not turned), written once into ``out_dir``: [(photo with its faces mapped, path)]."""
    from dcclip_core.atomic import atomic_path

    from .textset import JPEG_QUALITY, _grain, canvas
    out_dir.mkdir(parents=True, exist_ok=True)
    out = []
    for i, ph in enumerate(photos):
        dst = out_dir / f"{ph.id}.jpg"
        with Image.open(ph.path) as im0:
            w, h = ImageOps.exif_transpose(im0).size
        if not dst.is_file():
            if progress:
                progress(f"writing 12 MP photo {i + 1}/{len(photos)}: {ph.id}")
            im = _grain(canvas(ph.path, big=True), sum(map(ord, ph.id)))
            with atomic_path(dst) as tmp:
                im.save(tmp, "JPEG", quality=JPEG_QUALITY)
        out.append((Photo(ph.id, dst, 0, big_faces(ph, w, h), ph.source, ph.role, ph.crop_of), dst))
    return out


# ---- review: what the truth was checked against ----------------------------------------------------------
def generous_detections(im: Image.Image, small: bool = False) -> list[tuple[str, float, tuple]]:
    """[(detector, score, box fractions)]: HOG upsampled 2x (3x for thumbnails) at adjust threshold -0.5 and
    the CNN detector upsampled once (twice for thumbnails, not at all above 1000 px) on ``im`` as it is."""
    import dlib

    from dcclip_core.faces import _model_files
    hog = dlib.get_frontal_face_detector()
    cnn = dlib.cnn_face_detection_model_v1(str(_model_files()["cnn"]))
    arr = np.asarray(im)
    w, h = im.size
    frac = lambda r: (r.left() / w, r.top() / h, (r.right() + 1) / w, (r.bottom() + 1) / h)
    rects, scores, _ = hog.run(arr, 3 if small else 2, -0.5)
    out = [("hog", float(s), frac(r)) for r, s in zip(rects, scores)]
    up = 2 if small else (1 if max(w, h) <= 1000 else 0)
    out += [("cnn", float(d.confidence), frac(d.rect)) for d in cnn(arr, up)]
    return out


def review(out_dir: Path, truth: dict | None = None) -> None:
    """Draw, for every truth photo, the generous detections (green HOG, red CNN, yellow both; on the stored and
    the turned photo) and the truth boxes (blue; dashed-looking thin for ``ignore``) into ``out_dir``."""
    from PIL import ImageDraw
    truth = truth or load_truth()
    out_dir.mkdir(parents=True, exist_ok=True)
    for ph in detection_photos(truth) + identity_photos(truth):
        stored = open_photo(ph)
        dets = []
        for r in sorted({0, ph.rotate}):
            for k, s, b in generous_detections(upright(stored, r), ph.role == "identity"):
                dets.append((k, r, s, stored_box(b, r)))
        s = 900 / max(stored.size)
        im = stored.resize((round(stored.width * s), round(stored.height * s)))
        d = ImageDraw.Draw(im)
        W, H = im.size
        px = lambda b: (b[0] * W, b[1] * H, b[2] * W, b[3] * H)
        for f in ph.faces:
            d.rectangle(px(f.box), outline="blue", width=1 if f.ignore else 3)
            d.text((f.box[0] * W + 2, f.box[3] * H + 2), f.who, fill="blue")
        for k, r, sc, b in dets:
            d.rectangle(px(b), outline="lime" if k == "hog" else "red", width=1)
            d.text((b[0] * W + 2, b[1] * H + 2), f"{k[0]}{r or ''}{sc:+.2f}", fill="lime" if k == "hog" else "red")
        im.save(out_dir / f"{ph.id}.png")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.faceset", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("review", help="draw the truth and the generous detections into PNGs")
    r.add_argument("out_dir", type=Path)
    sub.add_parser("summary", help="what the set holds")
    args = p.parse_args(argv)
    if args.cmd == "review":
        review(args.out_dir)
        print(f"wrote {args.out_dir}")
        return 0
    t = load_truth()
    det, ids, neg = detection_photos(t), identity_photos(t), negative_photos(t)
    faces = [f for ph in det for f in ph.counted]
    people = sorted({f.who for f in faces if not f.who.startswith("unknown")})
    print(f"{len(det)} photos with truth ({sum(bool(ph.counted) for ph in det)} with counted faces, "
          f"{len(faces)} counted faces, {sum(ph.rotate != 0 for ph in det)} rotated scans), {len(ids)} identity "
          f"thumbnails, {len(neg)} negatives; named people: {', '.join(people)}; missing: {missing(t) or 'none'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
