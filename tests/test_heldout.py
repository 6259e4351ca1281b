"""Held-out realistic photo set: JSON well-formed; evaluation runs on the shipped model when photos are installed."""
import os

import pytest

from training.heldout import LANGS, evaluate_heldout, load_items

CATEGORIES = {"landscape", "sky", "city", "flower", "plant", "people", "animal", "food", "vehicle", "indoor", "text"}


def test_heldout_json_well_formed():
    items = load_items()
    assert isinstance(items, list) and len(items) >= 60
    ids = [it["id"] for it in items]
    assert len(ids) == len(set(ids)), "duplicate ids"
    assert len({it["path"] for it in items}) == len(items), "duplicate paths"
    for it in items:
        assert set(it) >= {"id", "package", "path", "category", "licence", "queries"}, it["id"]
        assert it["category"] in CATEGORIES, it["id"]
        assert it["path"].startswith("/usr/share/"), it["id"]
        assert it["package"] and it["licence"], it["id"]
        for lang in ("en", "zh"):
            qs = it["queries"][lang]
            assert len(qs) >= 2 and all(isinstance(q, str) and q.strip() for q in qs), (it["id"], lang)
    # all 11 categories, at least 4 photos each, at least 60 photos
    from collections import Counter
    counts = Counter(it["category"] for it in items)
    assert set(counts) == CATEGORIES and min(counts.values()) >= 4 and len(items) >= 60, counts


def test_heldout_eval_on_shipped_model():
    items = load_items()
    installed = [it for it in items if os.path.isfile(it["path"])]
    if not installed:
        pytest.skip("held-out photos not installed (apt-get install plasma-workspace-wallpapers mate-backgrounds "
                    "lomiri-wallpapers-16.04 gimp-help-en hugin-data kphotoalbum opencv-doc scribus-template)")
    pytest.importorskip("opencc")
    import dcclip_core
    m = evaluate_heldout(dcclip_core.load(), items)
    assert m["n_photos"] == len(installed) and m["n_skipped"] == len(items) - len(installed)
    for lang in LANGS:
        v = m["languages"][lang]
        assert v["n"] == 2 * len(installed)
        for k in ("recall@1", "recall@5", "recall@10", "mrr"):
            assert 0.0 <= v[k] <= 1.0
        assert v["recall@1"] <= v["recall@5"] <= v["recall@10"]
    for by_lang in m["categories"].values():
        for v in by_lang.values():
            assert all(0.0 <= v[k] <= 1.0 for k in ("recall@1", "recall@5", "recall@10", "mrr"))


def test_heldout_skips_missing_photos():
    items = load_items()[:3]
    fake = [dict(it, path="/nonexistent/" + it["id"] + ".jpg") for it in items]

    class Boom:
        def encode_image(self, paths):
            raise AssertionError("must not encode when nothing is installed")
    m = evaluate_heldout(Boom(), fake)
    assert m["n_photos"] == 0 and m["n_skipped"] == 3 and m["languages"] == {}
