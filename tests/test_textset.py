"""The OCR benchmark's photo set (benchmarks.textset): a small build has every kind of photo, complete manifest
records, unique queries, and the rendered text is inside the box the manifest gives."""
from __future__ import annotations

import io
import json

import numpy as np
import pytest
from PIL import Image

from benchmarks import textset
from dcclip_core.ocr import normalise

PHOTO_FIELDS = {"file", "kind", "text", "lang", "box", "size_px", "angle", "contrast", "source"}
QUERY_TYPES = {"exact-en", "exact-zh", "trad-to-simp", "simp-to-trad", "cross-en-zh", "cross-zh-en"}

pytestmark = pytest.mark.skipif(not any((textset.FONT_DIR / f).is_file() for f in textset.FONT_FILES),
                                reason="no CJK font (apt-get install fonts-noto-cjk)")


@pytest.fixture(scope="module")
def small_set(tmp_path_factory):
    out = tmp_path_factory.mktemp("textset")
    return out, textset.build_textset(out, n_scale=0.05, seed=0)


def _diff(photo_path, entry) -> np.ndarray:
    """Largest per-channel difference between a written photo and its base canvas written the same way (JPEG
    blocks without text then encode identically), (H, W)."""
    buf = io.BytesIO()
    textset.canvas(entry["source_path"]).save(buf, "JPEG", quality=textset.JPEG_QUALITY)
    a = np.asarray(Image.open(photo_path).convert("RGB"), np.int16)
    b = np.asarray(Image.open(buf).convert("RGB"), np.int16)
    return np.abs(a - b).max(2)


def test_manifest_records(small_set):
    out, m = small_set
    assert m == json.loads((out / textset.MANIFEST).read_text(encoding="utf-8"))
    kinds = [p["kind"] for p in m["photos"]]
    assert kinds.count("rendered") >= 3 and kinds.count("none") >= 1
    assert [p.name for p in textset.photo_paths(m, out)] == [p["file"] for p in m["photos"]]
    for p, path in zip(m["photos"], textset.photo_paths(m, out)):
        assert PHOTO_FIELDS <= set(p) and path.is_file()
        with Image.open(path) as im:
            assert im.size == (p["width"], p["height"]) and max(im.size) <= textset.LONG_SIDE
        if p["kind"] == "rendered":
            assert p["lang"] in ("en", "zh-Hans", "zh-Hant") and p["translation"] and p["contrast"] in ("high", "low")
            x0, y0, x1, y1 = p["box"]
            assert 0 <= x0 < x1 <= 1 and 0 <= y0 < y1 <= 1 and p["size_px"] >= textset.MIN_FONT_PX
        elif p["kind"] == "none":
            assert p["text"] is None and p["box"] is None and p["lang"] is None
    assert "the" in m["common_words"] and "的" in m["common_words"]


def test_queries_point_at_their_photo_only(small_set):
    _, m = small_set
    files = {p["file"]: p for p in m["photos"]}
    by_type = textset.queries_by_type(m)
    assert set(by_type) <= QUERY_TYPES and sum(map(len, by_type.values())) == len(m["queries"])
    for q in m["queries"]:
        assert files[q["target"]]["kind"] in ("rendered", "real")
    textset.check_unique(m["photos"], m["queries"])                      # raises on an ambiguous query
    for q in by_type.get("trad-to-simp", []) + by_type.get("simp-to-trad", []):
        assert q["query"] != files[q["target"]]["text"]
        assert normalise(q["query"]) == normalise(files[q["target"]]["text"])


def test_rendered_text_is_inside_its_box(small_set):
    out, m = small_set
    for p in (p for p in m["photos"] if p["kind"] == "rendered"):
        d = _diff(out / p["file"], p)                                                  # (H, W)
        H, W = d.shape
        drawn = np.zeros_like(d, bool)                      # the text and its sign, + blur and 16 px JPEG blocks
        dx0, dy0, dx1, dy1 = p["drawn_box"]
        drawn[max(0, int(dy0 * H) - 24):int(dy1 * H) + 25, max(0, int(dx0 * W) - 24):int(dx1 * W) + 25] = True
        assert d[~drawn].max(initial=0) == 0, p["file"]                      # nothing drawn elsewhere
        x0, y0, x1, y1 = p["box"]
        assert dx0 <= x0 and dy0 <= y0 and x1 <= dx1 and y1 <= dy1
        if not p["plate"]:                                                   # no sign: drawn = the text (+ blur)
            assert max(x0 - dx0, dx1 - x1) * W <= 8 and max(y0 - dy0, dy1 - y1) * H <= 8, p["file"]
        box = d[int(y0 * H):int(y1 * H) + 1, int(x0 * W):int(x1 * W) + 1]
        assert np.percentile(box, 95) > 20, p["file"]                        # the text is there


def test_builds_without_debian_photos(tmp_path, monkeypatch):
    monkeypatch.setattr(textset, "heldout_items", lambda: [])
    m = textset.build_textset(tmp_path, n_scale=0.04)
    assert {p["source"].split(":")[0] for p in m["photos"]} == {"skimage"}
    assert {p["kind"] for p in m["photos"]} == {"rendered", "none"}
