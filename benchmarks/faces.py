"""People: faces. How many faces the finder finds and invents, what it costs, and how well its descriptors tell
people apart, for choosing the constants of ``dcclip_core.faces`` and ``index.people``.

    python -m benchmarks faces [--quick] [--focus 1024:0:1 ...] [--out PATH] [--json]

On ``benchmarks.faceset`` (evaluation only): photos of real people that installed packages ship, faces checked
by eye, and held-out photos without people. A detection *finds* a truth face when their boxes overlap with
IoU >= 0.3 (greedy, best score first); a detection on no truth face is a false positive; truth faces marked
``ignore`` (smaller than 2 % of the longer side, faces in posters) are neither. "Clear" faces leave out those
marked ``hard`` (profiles, dim or half-hidden faces) that a frontal detector is not expected to find.

Measured:

1. detection, per (DETECT_SIDE, UPSAMPLE, enlarge small photos): recall (photos as stored, and with
   KPhotoAlbum's rotation applied), false positives per photo with and without people, ms of the detector
   (HOG + CNN checks; decoding and descriptors excluded) for CNN verification off / below 0.3, 0.5, 0.8, and a
   HOG_FLOOR sweep. HOG runs once per setting at the lowest floor; higher floors and VERIFY_BELOW filter its
   detections (HOG's scores do not depend on the floor), each weak detection is checked by the CNN once;
   the ms of a variant add HOG's time and the checks it would make. MIN_SIDE is the shipped one throughout.
   Reference: the CNN detector alone on the photo at 512 and 800 px (longest side). Face size: the clear faces
   pasted, shrunk to 2-10 % of the longer side, into photos without people at 2000x1500 (composites).
2. cost: ``FaceFinder.find`` from the file (decoding, descriptors included) on 12 MP versions (4000x3000 JPEG
   q90, light grain, as ``benchmarks.textset``; written once into the cache dir) of the people photos and the
   negatives, for each ``--focus`` setting: mean / median ms per photo and its recall there; the steps of a
   photo without faces (decode, resize, HOG) at DECODE_SHORT and at DCT scale 1/4.
3. identity: descriptor distances of same-person and different-person pairs among the faces the finder keeps
   that match a truth face, the rotation applied (a turned scan's faces are faces too); ROC-ish table; pairwise
   precision / recall of ``index.people.cluster_labels`` (chinese whispers) and of incremental joining with
   ``index.people.vote`` in album order.
4. quality filters: what MIN_SIDE and MIN_SHARPNESS drop (true faces vs false detections) and the distances
   of the faces they keep.
"""
from __future__ import annotations

import argparse
import itertools
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import faceset
from .common import cache_dir, markdown_table, publish

SIDES = (640, 800, 1024, 1280)
UPSAMPLES = (0, 1)
ENLARGES = (False, True)
VERIFY = (None, 0.3, 0.5, 0.8)                 # None: no CNN check
FLOORS = (-0.3, -0.2, -0.1, 0.0, 0.1, 0.2, 0.3, 0.5)
THRESHOLDS = (0.35, 0.4, 0.45, 0.5, 0.55, 0.6, 0.65)
CLUSTER_THRESHOLDS = (0.4, 0.45, 0.5, 0.55, 0.6)
MIN_SIDES = (0, 20, 30, 40, 50, 60, 80)
MIN_SHARPS = (0.0, 5.0, 10.0, 20.0, 40.0, 80.0)
CNN_SIDES = (512, 800)
FRACTIONS = (0.02, 0.03, 0.04, 0.05, 0.065, 0.08, 0.1)   # pasted face side / the photo's longer side
CANVAS = (2000, 1500)                          # a 12 MP photo as the finder decodes it (DCT scale 1/2)
BREAKDOWN_N = 30                               # 12 MP photos timed step by step
SIZE_BUCKETS = ((0, 40, "< 40 px"), (40, 80, "40-79 px"), (80, 10 ** 9, ">= 80 px"))   # truth box, full size
QUICK = {"sides": (800, 1024), "upsamples": (0,), "verify": (None, 0.5), "negatives": 15, "big_people": 10,
         "big_negatives": 10, "fractions": (0.03, 0.05, 0.08)}
TARGET_MS = 200


@dataclass
class Det:
    score: float
    box: tuple                                 # fractions of the photo seen
    side: int                                  # px at the photo's full size
    verified: bool | None = None               # CNN check (None: not checked)
    verify_s: float = 0.0


def _ms(seconds) -> dict:
    ms = np.asarray(list(seconds), float) * 1000
    if not len(ms):
        return {"ms_mean": None, "ms_p50": None, "ms_p95": None}
    return {"ms_mean": round(float(ms.mean()), 1), "ms_p50": round(float(np.median(ms)), 1),
            "ms_p95": round(float(np.percentile(ms, 95)), 1)}


def _pct(num: int, den: int) -> float | None:
    return round(100.0 * num / den, 1) if den else None


def combo_name(c) -> str:
    side, up, enl = c
    return f"{side}{'e' if enl else ''}u{up}"


def parse_combo(s: str) -> tuple[int, int, bool]:
    side, up, enl = s.split(":")
    return int(side), int(up), enl.lower() in ("1", "yes", "true", "e")


# ---- decoding as the finder does ----------------------------------------------------------------------------
def decoded(photo: faceset.Photo, turned: bool):
    """(image the finder detects on before fitting, full width, full height) for the stored or turned photo."""
    from dcclip_core.faces import DECODE_SHORT, _full_size
    from dcclip_core.preprocess import load_image
    im = load_image(photo.path, target_size=DECODE_SHORT)
    w, h = _full_size(photo.path, im)
    if turned and photo.rotate % 360:
        im = faceset.upright(im, photo.rotate)
        if photo.rotate % 180:
            w, h = h, w
    return im, w, h


def truth_faces(photo: faceset.Photo, turned: bool) -> list[faceset.Truth]:
    if not (turned and photo.rotate % 360):
        return photo.faces
    return [faceset.Truth(f.who, faceset.upright_box(f.box, photo.rotate), f.ignore, f.hard, f.region)
            for f in photo.faces]


# ---- 1. detection sweep ---------------------------------------------------------------------------------------
def run_detectors(photos, views, combos, floor: float, verify_max: float | None, log) -> dict:
    """{(view, photo id): {combo: {"hog_s", "dets": [Det]}}}: HOG at ``floor`` for every (side, upsample,
    enlarge) combo, CNN checks of the detections under ``verify_max`` that MIN_SIDE keeps."""
    from dcclip_core.faces import MIN_SIDE, FaceFinder
    finders = {u: FaceFinder(upsample=u, hog_floor=floor) for u in sorted({c[1] for c in combos})}
    out: dict = {}
    todo = [(ph, v) for ph in photos for v in views if v != "turned" or ph.rotate % 360]
    for i, (ph, view) in enumerate(todo):
        im, full_w, full_h = decoded(ph, view == "turned")
        arrays: dict = {}
        checked: dict = {}
        res = {}
        for side, up, enl in combos:
            if (side, enl) not in arrays:                            # the finder's resize, timed with HOG
                t0 = time.perf_counter()
                arrays[(side, enl)] = (np.ascontiguousarray(np.asarray(FaceFinder._fit(im, side, enl))),
                                       time.perf_counter() - t0)
            arr, fit_s = arrays[(side, enl)]
            H, W = arr.shape[:2]
            f = finders[up]
            if (arr.shape, up) in checked:                       # same pixels as another combo: same result
                res[(side, up, enl)] = checked[(arr.shape, up)]
                continue
            if i == 0:
                f.detect(arr)                                    # warm-up
            t0 = time.perf_counter()
            raw = f.detect(arr)
            hog_s = time.perf_counter() - t0 + fit_s
            dets = []
            for rect, score in raw:
                side_full = round(max(rect.width(), rect.height()) * full_w / W)
                box = (max(0.0, rect.left() / W), max(0.0, rect.top() / H), min(1.0, (rect.right() + 1) / W),
                       min(1.0, (rect.bottom() + 1) / H))
                d = Det(score, box, side_full)
                if verify_max is not None and score < verify_max and side_full >= MIN_SIDE:
                    t0 = time.perf_counter()
                    d.verified = f.verify(arr, rect)
                    d.verify_s = time.perf_counter() - t0
                dets.append(d)
            res[(side, up, enl)] = checked[(arr.shape, up)] = {"hog_s": hog_s, "dets": dets, "size": [W, H]}
        out[(view, ph.id)] = res
        if (i + 1) % 25 == 0 or i + 1 == len(todo):
            log(f"  detectors: {i + 1}/{len(todo)} photo views")
    return out


def kept(dets: list[Det], floor: float, verify_below: float | None, min_side: int) -> tuple[list[Det], float]:
    """Detections a finder with these settings keeps, and the seconds of the CNN checks it makes."""
    out, secs = [], 0.0
    for d in dets:
        if d.score < floor or d.side < min_side:
            continue
        if verify_below is not None and d.score < verify_below:
            secs += d.verify_s
            if not d.verified:
                continue
        out.append(d)
    return out, secs


def score_variant(runs: dict, photos, negatives, combo, floor: float, verify_below, min_side: int,
                  view: str) -> dict:
    """Recall, false positives and detector ms of one variant over the people photos and the negatives."""
    found = {"all": [0, 0], "clear": [0, 0], **{b[2]: [0, 0] for b in SIZE_BUCKETS}}
    fp_people, fp_neg, neg_with_fp, secs = 0, 0, 0, []
    for ph in photos:
        key = (view, ph.id) if (view, ph.id) in runs else ("stored", ph.id)
        r = runs[key][combo]
        ks, vs = kept(r["dets"], floor, verify_below, min_side)
        secs.append(r["hog_s"] + vs)
        faces = truth_faces(ph, key[0] == "turned")
        m, hit = faceset.match([d.box for d in ks], faces)
        fp_people += sum(j is None for j in m)
        w, h = _photo_size(ph)
        for f, ok in zip(faces, hit):
            if f.ignore:
                continue
            px = max((f.box[2] - f.box[0]) * w, (f.box[3] - f.box[1]) * h)
            groups = ["all"] + (["clear"] if not f.hard else []) + [b[2] for b in SIZE_BUCKETS if b[0] <= px < b[1]]
            for g in groups:
                found[g][0] += ok
                found[g][1] += 1
    for ph in negatives:
        r = runs[("stored", ph.id)][combo]
        ks, vs = kept(r["dets"], floor, verify_below, min_side)
        secs.append(r["hog_s"] + vs)
        fp_neg += len(ks)
        neg_with_fp += bool(ks)
    side, up, enl = combo
    return {"side": side, "upsample": up, "enlarge": enl, "floor": floor, "verify_below": verify_below,
            "view": view, "faces": found["all"][1], "recall_pct": _pct(*found["all"]),
            "recall_clear_pct": _pct(*found["clear"]),
            **{f"recall_{b[2]}": _pct(*found[b[2]]) for b in SIZE_BUCKETS},
            **{f"faces_{b[2]}": found[b[2]][1] for b in SIZE_BUCKETS}, "faces_clear": found["clear"][1],
            "fp_per_people_photo": round(fp_people / max(1, len(photos)), 3),
            "fp_per_negative": round(fp_neg / max(1, len(negatives)), 3),
            "negatives_with_fp_pct": _pct(neg_with_fp, len(negatives)), **_ms(secs)}


_SIZES: dict = {}


def _photo_size(ph: faceset.Photo) -> tuple[int, int]:
    """(w, h) of the photo as stored (truth boxes are fractions of it)."""
    if ph.id not in _SIZES:
        from PIL import Image, ImageOps
        with Image.open(ph.path) as im:
            _SIZES[ph.id] = ImageOps.exif_transpose(im).size
    return _SIZES[ph.id]


def cnn_reference(photos, negatives, sides, log) -> list[dict]:
    """The CNN detector alone (upsample 0) on each photo resized to ``sides`` px (longest side)."""
    import dlib
    from PIL import Image

    from dcclip_core.faces import _model_files
    cnn = dlib.cnn_face_detection_model_v1(str(_model_files()["cnn"]))
    rows = []
    for side in sides:
        found, total, fp_p, fp_n, negfp, secs = 0, 0, 0, 0, 0, []
        for ph in photos + negatives:
            im, _, _ = decoded(ph, False)
            s = side / max(im.size)
            arr = np.asarray(im.resize((max(1, round(im.width * s)), max(1, round(im.height * s))), Image.BILINEAR))
            H, W = arr.shape[:2]
            t0 = time.perf_counter()
            dets = cnn(arr, 0)
            secs.append(time.perf_counter() - t0)
            boxes = [(d.rect.left() / W, d.rect.top() / H, (d.rect.right() + 1) / W, (d.rect.bottom() + 1) / H)
                     for d in sorted(dets, key=lambda d: -d.confidence)]
            if ph.role == "negative":
                fp_n += len(boxes)
                negfp += bool(boxes)
                continue
            m, hit = faceset.match(boxes, ph.faces)
            fp_p += sum(j is None for j in m)
            found += sum(ok for f, ok in zip(ph.faces, hit) if not f.ignore)
            total += len(ph.counted)
        rows.append({"detector": f"CNN alone at {side} px", "faces": total, "recall_pct": _pct(found, total),
                     "fp_per_people_photo": round(fp_p / max(1, len(photos)), 3),
                     "fp_per_negative": round(fp_n / max(1, len(negatives)), 3),
                     "negatives_with_fp_pct": _pct(negfp, len(negatives)), **_ms(secs)})
        log(f"  CNN alone at {side}: recall {rows[-1]['recall_pct']} %, {rows[-1]['ms_mean']} ms")
    return rows


def size_sweep(photos, negatives, side_ups, fractions, log) -> list[dict]:
    """Recall by face size: every clear, upright truth face of >= 80 px (and 2.2x its box around it) pasted,
    shrunk, into a photo without people resized to ``CANVAS`` (what the finder decodes of a 12 MP photo), its
    side ``fraction`` x the longer side; the finder's resize, HOG at HOG_FLOOR, MIN_SIDE (px of a 4000 px
    photo) and CNN checks under VERIFY_BELOW as shipped. Composites: they measure scale, not scenes."""
    import random

    from PIL import Image

    from dcclip_core.faces import HOG_FLOOR, MIN_SIDE, VERIFY_BELOW, FaceFinder
    finders = {u: FaceFinder(upsample=u) for u in sorted({u for _, u in side_ups})}
    sources = []
    for ph in photos:
        turned = bool(ph.rotate % 360)
        faces = [f for f in truth_faces(ph, turned) if not (f.ignore or f.hard)]
        if not faces:
            continue
        im = faceset.open_photo(ph, turned)
        W, H = im.size
        for f in faces:
            fw, fh = (f.box[2] - f.box[0]) * W, (f.box[3] - f.box[1]) * H
            if max(fw, fh) < 80:
                continue
            cx, cy, half = (f.box[0] + f.box[2]) / 2 * W, (f.box[1] + f.box[3]) / 2 * H, 1.1 * max(fw, fh)
            x0, y0, x1, y1 = max(0, round(cx - half)), max(0, round(cy - half)), min(W, round(cx + half)), \
                min(H, round(cy + half))
            fb = ((f.box[0] * W - x0), (f.box[1] * H - y0), (f.box[2] * W - x0), (f.box[3] * H - y0))
            sources.append((ph.id, im.crop((x0, y0, x1, y1)), fb, max(fw, fh)))
    backgrounds = []
    for ph in negatives[:12]:
        im, _, _ = decoded(ph, False)
        s = max(CANVAS[0] / im.width, CANVAS[1] / im.height)
        im = im.resize((max(CANVAS[0], round(im.width * s)), max(CANVAS[1], round(im.height * s))), Image.BILINEAR)
        backgrounds.append(im.crop((0, 0) + CANVAS))
    rng = random.Random(0)
    hits = {(sd, u, fr): [] for sd, u in side_ups for fr in fractions}
    secs = {(sd, u): [] for sd, u in side_ups}
    for i, (pid, patch, fb, fside) in enumerate(sources):
        for fr in fractions:
            k = fr * CANVAS[0] / fside
            pt = patch.resize((max(1, round(patch.width * k)), max(1, round(patch.height * k))), Image.BILINEAR)
            canvas = backgrounds[(i + fractions.index(fr)) % len(backgrounds)].copy()
            px, py = rng.randrange(0, CANVAS[0] - pt.width), rng.randrange(0, CANVAS[1] - pt.height)
            canvas.paste(pt, (px, py))
            truth = [faceset.Truth(pid, ((px + fb[0] * k) / CANVAS[0], (py + fb[1] * k) / CANVAS[1],
                                         (px + fb[2] * k) / CANVAS[0], (py + fb[3] * k) / CANVAS[1]))]
            for sd, u in side_ups:
                f = finders[u]
                t0 = time.perf_counter()
                arr = np.ascontiguousarray(np.asarray(FaceFinder._fit(canvas, sd)))
                h, w = arr.shape[:2]
                boxes = []
                for rect, score in f.detect(arr):
                    if score < HOG_FLOOR or max(rect.width(), rect.height()) * 4000 / w < MIN_SIDE:
                        continue
                    if VERIFY_BELOW is not None and score < VERIFY_BELOW and not f.verify(arr, rect):
                        continue
                    boxes.append((rect.left() / w, rect.top() / h, (rect.right() + 1) / w, (rect.bottom() + 1) / h))
                secs[(sd, u)].append(time.perf_counter() - t0)
                hits[(sd, u, fr)].append(faceset.match(boxes, truth)[1][0])
    rows = []
    for sd, u in side_ups:
        rows.append({"side": sd, "upsample": u, "faces": len(sources),
                     **{f"{fr:g}": _pct(sum(hits[(sd, u, fr)]), len(hits[(sd, u, fr)])) for fr in fractions},
                     **_ms(secs[(sd, u)])})
    log(f"  size sweep: {len(sources)} faces x {len(fractions)} sizes")
    return rows


def breakdown(big: list, n: int) -> dict:
    """ms per 12 MP photo without faces, step by step: decoding at DECODE_SHORT and at 750 (DCT scale 1/4
    for 4000x3000), the resize to DETECT_SIDE, HOG."""
    from dcclip_core.faces import DECODE_SHORT, DETECT_SIDE, FaceFinder
    from dcclip_core.preprocess import load_image
    f = FaceFinder()
    paths = [p for ph, p in big if not ph.counted][:n]
    out: dict = {"photos": len(paths)}
    for target in (DECODE_SHORT, 750):
        t_dec, t_fit, t_hog, size = [], [], [], None
        for p in paths:
            t0 = time.perf_counter()
            im = load_image(p, target_size=target)
            t1 = time.perf_counter()
            arr = np.ascontiguousarray(np.asarray(FaceFinder._fit(im, DETECT_SIDE)))
            t2 = time.perf_counter()
            f.detect(arr)
            t3 = time.perf_counter()
            t_dec.append(t1 - t0), t_fit.append(t2 - t1), t_hog.append(t3 - t2)
            size = im.size
        out[f"decode_short_{target}"] = {"decoded": list(size) if size else None,
                                         "decode_ms": round(float(np.mean(t_dec)) * 1000, 1),
                                         "fit_ms": round(float(np.mean(t_fit)) * 1000, 1),
                                         "hog_ms": round(float(np.mean(t_hog)) * 1000, 1)}
    return out


# ---- 2. cost at 12 MP -----------------------------------------------------------------------------------------
def finder_for(combo, **kw):
    from dcclip_core.faces import FaceFinder
    side, up, enl = combo
    return FaceFinder(detect_side=side, upsample=up, enlarge=enl, **kw)


def cost(big: list, combos, repeats: int, log) -> list[dict]:
    """``find`` from the 12 MP file per setting (interleaved, fastest of ``repeats``): ms, recall, FPs."""
    finders = {c: finder_for(c) for c in combos}
    for f in finders.values():
        f.find(big[0][1])                                                     # warm-up (and the CNN's load)
    secs = {c: [] for c in combos}
    readings = {c: [] for c in combos}
    for ph, path in big:
        for c, f in finders.items():
            best = None
            for _ in range(repeats):
                r = f.find(path)
                best = r if best is None or r.seconds < best.seconds else best
            secs[c].append(best.seconds)
            readings[c].append(best)
    rows = []
    with_faces = [bool(ph.counted) for ph, _ in big]
    for c in combos:
        found = total = fp_p = fp_n = 0
        for (ph, _), r in zip(big, readings[c]):
            m, hit = faceset.match([f.box for f in r.faces], ph.faces)
            if ph.role == "negative":
                fp_n += len(r.faces)
                continue
            fp_p += sum(j is None for j in m)
            found += sum(ok for f, ok in zip(ph.faces, hit) if not f.ignore)
            total += len(ph.counted)
        s = np.asarray(secs[c])
        wf = np.asarray(with_faces)
        rows.append({"setting": combo_name(c), "photos": len(big), "photos_with_faces": int(wf.sum()),
                     **_ms(s), "ms_mean_with_faces": round(float(s[wf].mean() * 1000), 1) if wf.any() else None,
                     "ms_mean_without": round(float(s[~wf].mean() * 1000), 1) if (~wf).any() else None,
                     "faces_kept_per_photo": round(float(np.mean([len(r.faces) for r in readings[c]])), 2),
                     "recall_pct": _pct(found, total), "fp_people_photos": fp_p, "fp_negatives": fp_n,
                     "target_ms": TARGET_MS, "meets_target": bool(s.mean() * 1000 <= TARGET_MS)})
        log(f"  12 MP {combo_name(c)}: mean {rows[-1]['ms_mean']} ms, median {rows[-1]['ms_p50']} ms, "
            f"recall {rows[-1]['recall_pct']} %")
    return rows


# ---- 3. identity ----------------------------------------------------------------------------------------------
def collect_faces(photos, extras, negatives, combo, floor, verify_below, log) -> list[dict]:
    """Every face the finder keeps with MIN_SIDE and MIN_SHARPNESS off (filters are applied afterwards):
    {"photo", "who" (truth identity, "ignore:<photo>#i" or "false:<photo>#i"), "side", "sharpness", "vec",
    "crop_of", "order"} — people photos turned upright, the identity thumbnails enlarged to 512 px."""
    f = finder_for(combo, hog_floor=floor, verify_below=verify_below, min_side=0, min_sharpness=0.0)
    thumbs = finder_for((512, 0, True), hog_floor=floor, verify_below=verify_below, min_side=0, min_sharpness=0.0)
    out = []
    for order, ph in enumerate(photos + extras + negatives):
        turned = ph.role == "detect" and bool(ph.rotate % 360)
        im = faceset.open_photo(ph, turned) if turned else ph.path
        r = (thumbs if ph.role == "identity" else f).find(im)
        faces = truth_faces(ph, turned)
        m, _ = faceset.match([x.box for x in r.faces], faces)
        for k, (x, j) in enumerate(zip(r.faces, m)):
            if j is None:
                who, kind = f"false:{ph.id}#{k}", "false"
            elif faces[j].ignore:
                who, kind = f"ignore:{ph.id}#{j}", "ignore"
            else:
                who, kind = faces[j].who, "true"
            out.append({"photo": ph.id, "who": who, "kind": kind, "hard": bool(j is not None and faces[j].hard),
                        "side": x.side, "sharpness": x.sharpness, "vec": x.vec, "crop_of": ph.crop_of,
                        "order": order, "role": ph.role})
    log(f"  {len(out)} faces kept ({sum(x['kind'] == 'true' for x in out)} on truth faces)")
    return out


def _pairs(faces: list[dict]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(distances, same person?, near-duplicate?) of all pairs of true faces from different photos; a pair is a
    near duplicate when one face is a thumbnail cut from the other's photo (same person). Pairs of a thumbnail
    with any other face are left out (it repeats its photo's face)."""
    from dcclip_core.faces import distance
    d, same, dup = [], [], []
    for a, b in itertools.combinations(faces, 2):
        if a["photo"] == b["photo"]:
            continue
        near = a["who"] == b["who"] and (a["crop_of"] == b["photo"] or b["crop_of"] == a["photo"])
        if (a["crop_of"] or b["crop_of"]) and not near:
            continue
        d.append(float(distance(a["vec"], b["vec"])))
        same.append(a["who"] == b["who"])
        dup.append(near)
    return np.asarray(d), np.asarray(same, bool), np.asarray(dup, bool)


def distances(faces: list[dict]) -> dict:
    true = [x for x in faces if x["kind"] == "true"]
    d, same, dup = _pairs(true)
    keep = ~dup
    true = [x for x in true if not x["crop_of"]]
    pct = lambda xs: ({f"p{q}": round(float(np.percentile(xs, q)), 3) for q in (0, 5, 25, 50, 75, 95, 100)}
                      if len(xs) else {})
    people = sorted({x["who"] for x in true})
    per = {p: sum(x["who"] == p for x in true) for p in people}
    roc = []
    for t in THRESHOLDS:
        s, o = d[keep & same], d[keep & ~same]
        roc.append({"threshold": t, "same_pairs_joined_pct": _pct(int((s < t).sum()), len(s)),
                    "different_pairs_joined_pct": _pct(int((o < t).sum()), len(o)),
                    "different_pairs_joined": int((o < t).sum())})
    return {"faces": len(true), "identities": len(people),
            "faces_per_identity": {p: n for p, n in sorted(per.items(), key=lambda kv: -kv[1]) if n > 1},
            "singletons": sum(n == 1 for n in per.values()),
            "same_pairs": int((keep & same).sum()), "different_pairs": int((keep & ~same).sum()),
            "near_duplicate_pairs": {"n": int(dup.sum()), **pct(d[dup])},
            "same": pct(d[keep & same]), "different": pct(d[keep & ~same]), "roc": roc}


def _pair_pr(labels: list, who: list) -> dict:
    tp = fp = fn = 0
    for (la, wa), (lb, wb) in itertools.combinations(zip(labels, who), 2):
        if la == lb and wa == wb:
            tp += 1
        elif la == lb:
            fp += 1
        elif wa == wb:
            fn += 1
    p = tp / (tp + fp) if tp + fp else 1.0
    r = tp / (tp + fn) if tp + fn else 1.0
    return {"precision": round(p, 3), "recall": round(r, 3), "f1": round(2 * p * r / (p + r), 3) if p + r else 0.0,
            "same_pairs": tp + fn, "wrongly_joined_pairs": fp, "clusters": len(set(labels)),
            "identities": len(set(who))}


def clustering(faces: list[dict], min_side: int, min_sharp: float) -> dict:
    """Pairwise precision / recall of a full re-cluster and of incremental joining (album order) over the faces
    the finder keeps with these filters (false detections included, each its own "person"); near-duplicate
    thumbnails left out."""
    from index.people import VOTERS, cluster_labels, vote
    fs = [x for x in faces if x["side"] >= min_side and x["sharpness"] >= min_sharp and not x["crop_of"]]
    fs.sort(key=lambda x: x["order"])
    vecs = np.stack([x["vec"] for x in fs]) if fs else np.zeros((0, 128), np.float32)
    who = [x["who"] for x in fs]
    full, inc = [], []
    for t in CLUSTER_THRESHOLDS:
        full.append({"threshold": t, **_pair_pr(list(cluster_labels(vecs, t)), who)})
        labels: list[int] = []
        for i, v in enumerate(vecs):
            pid = vote(v, vecs[:i], np.asarray(labels, np.int64), threshold=t, voters=VOTERS)
            labels.append(pid if pid is not None else (max(labels) + 1 if labels else 0))
        inc.append({"threshold": t, **_pair_pr(labels, who)})
    return {"faces": len(fs), "true_faces": sum(x["kind"] == "true" for x in fs),
            "false_detections": sum(x["kind"] == "false" for x in fs), "full": full, "incremental": inc}


# ---- 4. quality filters ---------------------------------------------------------------------------------------
def quality(faces: list[dict], join: float) -> list[dict]:
    """For each MIN_SIDE (MIN_SHARPNESS off) and each MIN_SHARPNESS (MIN_SIDE off): faces kept by kind and the
    same / different-person pairs joined at ``join``."""
    rows = []
    for name, values in (("min_side", MIN_SIDES), ("min_sharpness", MIN_SHARPS)):
        for v in values:
            keep = [x for x in faces if (x["side"] if name == "min_side" else x["sharpness"]) >= v]
            drop = [x for x in faces if x not in keep]
            true = [x for x in keep if x["kind"] == "true"]
            d, same, dup = _pairs(true)
            s, o = d[same & ~dup], d[~same & ~dup]
            rows.append({"filter": name, "value": v,
                         "true_kept": sum(x["kind"] == "true" for x in keep),
                         "true_dropped": sum(x["kind"] == "true" for x in drop),
                         "false_kept": sum(x["kind"] == "false" for x in keep),
                         "false_dropped": sum(x["kind"] == "false" for x in drop),
                         "ignore_kept": sum(x["kind"] == "ignore" for x in keep),
                         "same_pairs": len(s), "same_joined_pct": _pct(int((s < join).sum()), len(s)),
                         "different_pairs": len(o), "different_joined": int((o < join).sum()),
                         "different_joined_pct": _pct(int((o < join).sum()), len(o)),
                         "same_p50": round(float(np.median(s)), 3) if len(s) else None,
                         "different_min": round(float(o.min()), 3) if len(o) else None})
    return rows


SIDE_GROUPS = ((0, 60, "side < 60 px"), (60, 100, "side 60-99 px"), (100, 10 ** 9, "side >= 100 px"))
SHARP_GROUPS = ((0, 20, "sharpness < 20"), (20, 60, "sharpness 20-59"), (60, 10 ** 9, "sharpness >= 60"))


def margins(faces: list[dict]) -> list[dict]:
    """Per size / sharpness group of true faces (thumbnails out) with another photo of the same person: mean
    distance to the nearest face of the same person and to the nearest other person (other photos)."""
    from dcclip_core.faces import distance
    true = [x for x in faces if x["kind"] == "true" and not x["crop_of"]]
    per = []
    for a in true:
        others = [b for b in true if b["photo"] != a["photo"]]
        same = [float(distance(a["vec"], b["vec"])) for b in others if b["who"] == a["who"]]
        diff = [float(distance(a["vec"], b["vec"])) for b in others if b["who"] != a["who"]]
        if same and diff:
            per.append((a, min(same), min(diff)))
    rows = []
    for key, groups in (("side", SIDE_GROUPS), ("sharpness", SHARP_GROUPS)):
        for lo, hi, name in groups:
            g = [(s, d) for a, s, d in per if lo <= a[key] < hi]
            rows.append({"group": name, "faces": len(g),
                         "nearest_same": round(float(np.mean([s for s, _ in g])), 3) if g else None,
                         "nearest_other": round(float(np.mean([d for _, d in g])), 3) if g else None,
                         "closer_to_other": sum(d < s for s, d in g)})
    return rows


def confusers(faces: list[dict], below: float) -> list[dict]:
    """Different-person pairs of true faces closer than ``below``: who, distance, size and sharpness of both."""
    from dcclip_core.faces import distance
    true = [x for x in faces if x["kind"] == "true" and not x["crop_of"]]
    out = []
    for a, b in itertools.combinations(true, 2):
        if a["photo"] != b["photo"] and a["who"] != b["who"]:
            dd = float(distance(a["vec"], b["vec"]))
            if dd < below:
                out.append({"distance": round(dd, 3), "a": f"{a['who']} ({a['photo']})",
                            "b": f"{b['who']} ({b['photo']})",
                            "sides": [a["side"], b["side"]], "sharpness": [round(a["sharpness"], 1),
                                                                            round(b["sharpness"], 1)]})
    return sorted(out, key=lambda r: r["distance"])


def face_table(faces: list[dict]) -> dict:
    """Size and sharpness of true faces vs false detections (quartiles)."""
    q = lambda xs: [round(float(np.percentile(xs, p)), 1) for p in (0, 25, 50, 75, 100)] if xs else []
    return {k: {"n": sum(x["kind"] == k for x in faces), "side_q": q([x["side"] for x in faces if x["kind"] == k]),
                "sharpness_q": q([x["sharpness"] for x in faces if x["kind"] == k])}
            for k in ("true", "false", "ignore")}


# ---- report ---------------------------------------------------------------------------------------------------
def _v(v) -> str:
    return "off" if v is None else f"{v:g}"


CONSTANT = ("faces", "faces_clear", *[f"faces_{b[2]}" for b in SIZE_BUCKETS])   # the same in every variant


def compact(variants: list[dict]) -> dict:
    """Variants as a table ({"columns", "rows"}; the truth's face counts once): the JSON stays small."""
    first = variants[0] if variants else {}
    cols = [c for c in first if c not in CONSTANT and c != "ms_p50"]
    return {"faces": {c: first.get(c) for c in CONSTANT}, "columns": cols,
            "rows": [[v.get(c) for c in cols] for v in variants]}


def expand(table: dict) -> list[dict]:
    return [{**table.get("faces", {}), **dict(zip(table["columns"], r))} for r in table["rows"]]


def report(res: dict) -> str:
    s = res["settings"]
    det = {"variants": expand(res["detection"])}
    parts = [f"### Detection ({s['people_photos']} people photos with {s['counted_faces']} counted faces "
             f"({s['clear_faces']} clear), {s['negatives']} photos without people; HOG_FLOOR {s['floor']:g}, "
             f"MIN_SIDE {s['min_side']}; ms: detector only, one photo at a time)", ""]
    rows = []
    for r in det["variants"]:
        if r["floor"] != s["floor"] or r["verify_below"] is not None or r["view"] != "stored":
            continue
        t = next(x for x in det["variants"] if x["view"] == "turned" and x["floor"] == s["floor"]
                 and x["verify_below"] is None and (x["side"], x["upsample"], x["enlarge"]) ==
                 (r["side"], r["upsample"], r["enlarge"]))
        rows.append([r["side"], r["upsample"], "yes" if r["enlarge"] else "no", r["recall_pct"],
                     r["recall_clear_pct"], *[r[f"recall_{b[2]}"] for b in SIZE_BUCKETS], t["recall_pct"],
                     r["fp_per_people_photo"], r["fp_per_negative"], r["ms_mean"], r["ms_p95"]])
    first = det["variants"][0]
    parts += ["Truth faces by size (longer side at full size): " + ", ".join(
        f"{b[2]}: {first[f'faces_{b[2]}']}" for b in SIZE_BUCKETS) + f"; MIN_SIDE drops any detection under "
        f"{s['min_side']} px, so the first bucket is out of reach. 'Turned upright': KPhotoAlbum's rotation applied "
        f"to its {s['rotated']} rotated scans.", ""]
    parts.append(markdown_table(["side", "upsample", "enlarge", "recall %", "clear %",
                                 *[f"{b[2]} %" for b in SIZE_BUCKETS], "turned upright %", "FP / people photo",
                                 "FP / negative", "ms mean", "ms p95"], rows))
    parts += ["", "#### CNN verification (recall % / false positives per photo, people + negatives / ms mean)", ""]
    verifies = s["verify"]
    rows = []
    for c in s["combos"]:
        row = [combo_name(c)]
        for v in verifies:
            r = next(x for x in det["variants"] if x["view"] == "stored" and x["floor"] == s["floor"] and
                     x["verify_below"] == v and [x["side"], x["upsample"], x["enlarge"]] == list(c))
            fp = (r["fp_per_people_photo"] * s["people_photos"] + r["fp_per_negative"] * s["negatives"]) / \
                max(1, s["people_photos"] + s["negatives"])
            row.append(f"{r['recall_pct']} / {fp:.2f} / {r['ms_mean']:.0f}")
        rows.append(row)
    parts.append(markdown_table(["setting", *[f"verify {_v(v)}" for v in verifies]], rows))
    for c in s["focus"]:
        parts += ["", f"#### HOG_FLOOR at {combo_name(c)}", ""]
        rows = [[r["floor"], _v(r["verify_below"]), r["recall_pct"], r["recall_clear_pct"], r["fp_per_people_photo"],
                 r["fp_per_negative"], r["negatives_with_fp_pct"], r["ms_mean"]]
                for r in det["variants"] if r["view"] == "stored" and
                [r["side"], r["upsample"], r["enlarge"]] == list(c)]
        parts.append(markdown_table(["floor", "verify below", "recall %", "clear %", "FP / people photo",
                                     "FP / negative", "negatives with FP %", "ms mean"], rows))
    if res.get("cnn_reference"):
        parts += ["", "#### Reference: the CNN detector alone", ""]
        parts.append(markdown_table(["detector", "recall %", "FP / people photo", "FP / negative", "ms mean"],
                                    [[r["detector"], r["recall_pct"], r["fp_per_people_photo"], r["fp_per_negative"],
                                      r["ms_mean"]] for r in res["cnn_reference"]]))
    ss = res["size_sweep"]
    parts += ["", f"#### Recall by face size ({ss['rows'][0]['faces'] if ss['rows'] else 0} clear faces pasted into "
                  f"photos without people at {CANVAS[0]}x{CANVAS[1]}; face side as % of the longer side)", ""]
    parts.append(markdown_table(["side", "upsample", *[f"{100 * fr:g} %" for fr in ss["fractions"]], "ms mean"],
                                [[r["side"], r["upsample"], *[r[f"{fr:g}"] for fr in ss["fractions"]], r["ms_mean"]]
                                 for r in ss["rows"]]))
    parts += ["", f"### Cost of `FaceFinder.find` at 12 MP (4000x3000 JPEG, decoding and descriptors included; "
                  f"verify below {_v(s['verify_below'])}, floor {s['floor']:g}; {os.cpu_count()} cores)", ""]
    parts.append(markdown_table(["setting", "photos", "with faces", "ms mean", "ms p50", "ms p95", "mean with faces",
                                 "mean without", "recall %", "FP (people / negatives)", "<= 200 ms"],
                                [[r["setting"], r["photos"], r["photos_with_faces"], r["ms_mean"], r["ms_p50"],
                                  r["ms_p95"], r["ms_mean_with_faces"], r["ms_mean_without"], r["recall_pct"],
                                  f"{r['fp_people_photos']} / {r['fp_negatives']}",
                                  "yes" if r["meets_target"] else "no"]
                                 for r in res["cost"]]))
    st = res["cost_steps"]
    parts += ["", f"Steps of a 12 MP photo without faces (mean of {st['photos']}): " + "; ".join(
        f"DECODE_SHORT {k.rsplit('_', 1)[1]} -> {v['decoded']}: decode {v['decode_ms']} ms, resize {v['fit_ms']} ms, "
        f"HOG {v['hog_ms']} ms" for k, v in st.items() if k != "photos")]
    idn = res["identity"]
    dist = idn["distances"]
    parts += ["", f"### Identity (faces kept by {idn['setting']}, rotation applied, MIN_SIDE {s['min_side']}, "
                  f"MIN_SHARPNESS {s['min_sharpness']:g}: {dist['faces']} faces on truth faces, "
                  f"{dist['identities']} identities of which "
                  f"{dist['singletons']} seen once; {dist['same_pairs']} same-person and {dist['different_pairs']} "
                  f"different-person pairs; faces per person: {dist['faces_per_identity']})", ""]
    qs = ("p0", "p5", "p25", "p50", "p75", "p95", "p100")
    parts.append(markdown_table(["pairs", "n", *qs],
                                [["same person", dist["same_pairs"], *[dist["same"].get(q) for q in qs]],
                                 ["different people", dist["different_pairs"], *[dist["different"].get(q) for q in qs]],
                                 ["thumbnail vs its photo", dist["near_duplicate_pairs"]["n"],
                                  *[dist["near_duplicate_pairs"].get(q) for q in qs]]]))
    parts += [""]
    parts.append(markdown_table(["threshold", "same pairs joined %", "different pairs joined %",
                                 "different pairs joined"],
                                [[r["threshold"], r["same_pairs_joined_pct"], r["different_pairs_joined_pct"],
                                  r["different_pairs_joined"]] for r in dist["roc"]]))
    cl = idn["clustering"]
    parts += ["", f"#### Clustering ({cl['faces']} faces: {cl['true_faces']} true, {cl['false_detections']} false "
                  f"detections; pairwise precision / recall / F1, clusters)", ""]
    parts.append(markdown_table(["threshold", "re-cluster P", "R", "F1", "clusters", "incremental P", "R", "F1",
                                 "people"],
                                [[a["threshold"], a["precision"], a["recall"], a["f1"], a["clusters"], b["precision"],
                                  b["recall"], b["f1"], b["clusters"]] for a, b in zip(cl["full"], cl["incremental"])]))
    ft = idn["face_table"]
    parts += ["", "### Quality filters (faces kept with both filters off: " + "; ".join(
        f"{v['n']} {k} (side quartiles {v['side_q']} px, sharpness {v['sharpness_q']})" for k, v in ft.items()
        if v["n"]) + f"; pairs joined at JOIN {s['join']})", ""]
    parts.append(markdown_table(["filter", "value", "true kept", "true dropped", "false kept", "false dropped",
                                 "same pairs", "same joined %", "same p50", "different joined", "different min"],
                                [[r["filter"], r["value"], r["true_kept"], r["true_dropped"], r["false_kept"],
                                  r["false_dropped"], r["same_pairs"], r["same_joined_pct"], r["same_p50"],
                                  f"{r['different_joined']} / {r['different_pairs']}", r["different_min"]]
                                 for r in idn["quality"]]))
    parts += ["", "Nearest face of the same person vs of another person (true faces with a second photo; filters "
                  "off):", ""]
    parts.append(markdown_table(["group", "faces", "nearest same (mean)", "nearest other (mean)",
                                 "closer to another person"],
                                [[r["group"], r["faces"], r["nearest_same"], r["nearest_other"], r["closer_to_other"]]
                                 for r in idn["margins"]]))
    if idn["confusers"]:
        parts += ["", "Different people closer than 0.6: " + "; ".join(
            f"{c['distance']} {c['a']} ~ {c['b']} (sides {c['sides']}, sharpness {c['sharpness']})"
            for c in idn["confusers"][:12])]
    return "\n".join(parts)


# ---- CLI ------------------------------------------------------------------------------------------------------
def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--quick", action="store_true", help="smoke test (< 2 min): sides 800 and 1024, no upsampling, "
                                                        "verify off / 0.5, fewer negatives, no CNN reference")
    p.add_argument("--focus", action="append", type=parse_combo, metavar="SIDE:UP:ENLARGE",
                   help="settings for the floor table, the 12 MP cost and the identity faces (repeatable; "
                        "default: the shipped constants and 1024:0:1)")
    p.add_argument("--repeats", type=int, default=1, help="timed runs per 12 MP photo and setting (fastest kept)")
    p.add_argument("--no-cnn", action="store_true", help="skip the CNN-alone reference (~5 s a photo)")
    p.add_argument("--out", type=Path, help="JSON results (default benchmarks/results/faces.json; --quick: "
                                            "faces-quick.json in the cache dir); '-' to skip writing")
    p.add_argument("--json", action="store_true", help="print the JSON results instead of the tables")


def run(args: argparse.Namespace) -> int:
    import dcclip_core.faces as fc
    from index import people as pp
    t_start = time.perf_counter()
    log = lambda msg: print(msg, file=sys.stderr, flush=True)
    load_before = list(os.getloadavg())
    truth = faceset.load_truth()
    photos = faceset.detection_photos(truth)
    extras = faceset.identity_photos(truth)
    negatives = faceset.negative_photos(truth)
    if args.quick:
        negatives = negatives[::max(1, len(negatives) // QUICK["negatives"])][:QUICK["negatives"]]
    sides = QUICK["sides"] if args.quick else SIDES
    ups = QUICK["upsamples"] if args.quick else UPSAMPLES
    verify = QUICK["verify"] if args.quick else VERIFY
    combos = [(s, u, e) for u in ups for s in sides for e in ENLARGES]
    shipped = (fc.DETECT_SIDE, fc.UPSAMPLE, bool(getattr(fc, "ENLARGE", False)))
    focus = list(dict.fromkeys(args.focus or [shipped, (1024, 0, True)]))
    combos += [c for c in focus if c not in combos]
    floor = fc.HOG_FLOOR
    log(f"faces: {len(photos)} people photos, {len(extras)} thumbnails, {len(negatives)} negatives; "
        f"{len(combos)} detector settings")
    vmax = max((v for v in verify if v is not None), default=None)
    runs = run_detectors(photos + negatives, ("stored", "turned"), combos, min(FLOORS), vmax, log)
    variants = []
    for c in combos:
        for v in verify:
            for view in ("stored", "turned"):
                variants.append(score_variant(runs, photos, negatives, c, floor, v, fc.MIN_SIDE, view))
            if c in focus and v in (None, fc.VERIFY_BELOW):
                variants += [score_variant(runs, photos, negatives, c, fl, v, fc.MIN_SIDE, "stored")
                             for fl in FLOORS if fl != floor]
    ref = [] if args.quick or args.no_cnn else cnn_reference(photos, negatives[:15], CNN_SIDES, log)
    log("face size sweep (pasted faces)")
    fractions = QUICK["fractions"] if args.quick else FRACTIONS
    sizes = size_sweep(photos, negatives, list(dict.fromkeys((c[0], c[1]) for c in combos)), fractions, log)
    log("12 MP cost")
    people_big = [p for p in photos if p.counted]
    if args.quick:
        people_big, neg_big = people_big[:QUICK["big_people"]], negatives[:QUICK["big_negatives"]]
    else:
        neg_big = negatives
    big = faceset.ensure_big(people_big + neg_big, cache_dir() / faceset.BIG_DIR, progress=lambda m: log("  " + m))
    costs = cost(big, focus, args.repeats, log)
    steps = breakdown(big, 10 if args.quick else BREAKDOWN_N)
    log("identity")
    faces = collect_faces(photos, extras, negatives, focus[-1], floor, fc.VERIFY_BELOW, log)
    filtered = [x for x in faces if x["side"] >= fc.MIN_SIDE and x["sharpness"] >= fc.MIN_SHARPNESS]
    identity = {"setting": combo_name(focus[-1]), "distances": distances(filtered),
                "clustering": clustering(faces, fc.MIN_SIDE, fc.MIN_SHARPNESS),
                "quality": quality(faces, pp.JOIN), "margins": margins(faces), "confusers": confusers(faces, 0.6),
                "face_table": face_table(faces),
                "faces": [{k: (round(float(v), 2) if k == "sharpness" else v) for k, v in x.items() if k != "vec"}
                          for x in faces]}
    counted = [f for p in photos for f in p.counted]
    res = {
        "suite": "faces", "quick": bool(args.quick),
        "settings": {"finder": fc.finder_version(), "floor": floor, "min_side": fc.MIN_SIDE,
                     "min_sharpness": fc.MIN_SHARPNESS, "verify_below": fc.VERIFY_BELOW, "join": pp.JOIN,
                     "combos": [list(c) for c in combos], "focus": [list(c) for c in focus],
                     "verify": list(verify), "people_photos": len(photos),
                     "rotated": sum(bool(p.rotate) for p in photos),
                     "counted_faces": len(counted), "clear_faces": sum(not f.hard for f in counted),
                     "thumbnails": len(extras), "negatives": len(negatives), "missing": faceset.missing(truth),
                     "repeats_12mp": args.repeats, "loadavg_before": [round(x, 2) for x in load_before]},
        "detection": compact(variants),
        "cnn_reference": ref, "size_sweep": {"fractions": list(fractions), "rows": sizes}, "cost": costs,
        "cost_steps": steps, "identity": identity, "seconds": None,
    }
    res["settings"]["loadavg_after"] = [round(x, 2) for x in os.getloadavg()]
    res["seconds"] = round(time.perf_counter() - t_start, 1)
    return publish("faces", args, res, report, log)
