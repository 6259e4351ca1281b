"""Readable relevance and the "no good match" decision (dcclip_core.relevance) with the shipped default model."""
import json
import random
import shutil
import subprocess
import sys

import numpy as np
import pytest

from dcclip_core.config import ASSETS_DIR, MODELS_DIR, REPO_DIR
from dcclip_core.relevance import FILENAME, LEVEL_NAMES, Relevance, load_relevance

DEFAULT = MODELS_DIR / "default"
DEMO = ASSETS_DIR / "demo"
pytestmark = pytest.mark.skipif(not (DEFAULT / FILENAME).is_file(), reason="default model or relevance.json missing")

NONSENSE = ["qwxzv", "🐱🐱🐱", "😀👍🎉", "asdfghjkl", "!!!???", "12345",
            "".join(random.Random(7).choice("abcdefghijklmnopqrstuvwxyz ") for _ in range(2000)),
            "x" * 2000]


@pytest.fixture(scope="module")
def model():
    import dcclip_core
    return dcclip_core.load()


@pytest.fixture(scope="module")
def rel(model):
    r = load_relevance(model)
    assert r.calibrated, "the shipped relevance.json did not load (stale? run python -m training.calibrate_relevance)"
    return r


@pytest.fixture(scope="module")
def demo(model):
    names = sorted(p.name for p in DEMO.glob("*.jpg"))
    return names, model.encode_image([DEMO / n for n in names])                     # (m, d)


def test_shipped_calibration_belongs_to_the_model(model, rel):
    assert rel.dim == model.dim and rel.model_hash == model.hash
    assert rel.anchors is not None and rel.visibility_threshold is not None       # prototypes read, no torch
    cuts = rel.cut_points
    assert list(cuts) == ["weak", "good", "strong"]
    assert cuts["weak"] < cuts["good"] < cuts["strong"]


def test_nonsense_queries_get_no_good_match(model, rel, demo):
    _, img = demo
    Q = model.encode_text(NONSENSE)
    assert not rel.query_has_match(Q).any()
    for text, q in zip(NONSENSE, Q):
        j = rel.judge(q, img @ q)
        assert j.has_match is False and j.query_ok is False, text[:20]


@pytest.mark.parametrize("text,photo", [("猫", "cat_chelsea.jpg"), ("a cat", "cat_chelsea.jpg"),
                                        ("一杯咖啡", "coffee.jpg"), ("a cup of coffee", "coffee.jpg")])
def test_real_queries_match_the_right_photo(model, rel, demo, text, photo):
    names, img = demo
    q = model.encode_text([text])[0]
    scores = img @ q
    j = rel.judge(q, scores)
    assert j.has_match and j.query_ok
    best = int(np.argmax(scores))
    assert names[best] == photo
    assert j.levels[best] >= 2 and rel.level(float(scores[best])) >= 2
    assert j.percents[best] >= 50
    # the right photo is strictly the most relevant one on the readable scale as well
    assert j.percents[best] == max(j.percents)


def test_level_and_percent_are_monotone_and_consistent(rel):
    s = np.linspace(-1.0, 1.0, 4001)
    lv, pc = rel.levels(s), rel.percents(s)
    assert (np.diff(lv) >= 0).all() and (np.diff(pc) >= 0).all()
    assert lv.min() == 0 and lv.max() == 3 and pc.min() == 0 and pc.max() == 100
    for x in (-1.0, -0.1, 0.0, *rel.knots, 0.15, 0.3, 1.0):
        level, percent = rel.level(x), rel.percent(x)
        assert level == min(3, percent // 25)
        assert 0 <= percent <= 100 and rel.level_name(x) == LEVEL_NAMES[level]
    weak, good, strong = rel.cut_points.values()
    assert rel.level(weak - 1e-6) == 0 and rel.level(weak) == 1
    assert rel.level(good) == 2 and rel.level(strong) == 3
    assert rel.level(float("nan")) == 0                   # a NaN score is never a match


def test_batched_gate_equals_single(model, rel):
    Q = model.encode_text(["猫", "qwxzv", "a photo of a dog", "🐱"])
    batch = rel.query_has_match(Q)
    assert batch.dtype == bool and batch.shape == (4,)
    assert [rel.query_has_match(q) for q in Q] == list(batch)
    with pytest.raises(ValueError):
        rel.query_score(np.zeros(model.dim + 1, np.float32))


def _model_copy(tmp_path):
    d = tmp_path / "m"
    d.mkdir()
    shutil.copy(DEFAULT / "config.json", d / "config.json")
    return d


def test_missing_relevance_json_falls_back(tmp_path, model):
    d = _model_copy(tmp_path)
    r = load_relevance(d)
    assert not r.calibrated and r.cut_points == {}
    q = model.encode_text(["qwxzv"])[0]
    assert r.level(0.3) is None and r.percent(0.3) is None and r.levels([0.1]) is None
    assert r.query_has_match(q) is True and r.query_score(q) is None and r.visibility(q) is None
    assert r.query_has_match(np.stack([q, q])).tolist() == [True, True]
    j = r.judge(q, [0.2, 0.1])
    assert j.has_match is None and j.levels == [None, None] and j.percents == [None, None]
    assert not load_relevance("no-such-model-name").calibrated
    assert Relevance.uncalibrated() == Relevance()


def test_stale_or_broken_relevance_json_falls_back(tmp_path):
    doc = json.loads((DEFAULT / FILENAME).read_text(encoding="utf-8"))
    d = _model_copy(tmp_path)
    cases = {
        "other hash": {**doc, "model": {**doc["model"], "hash": "0" * 16}},
        "other width": {**doc, "model": {**doc["model"], "dim": doc["model"]["dim"] + 1},
                        "gate": {**doc["gate"], "w": [0.0] * (doc["model"]["dim"] + 1)}},
        "bad knots": {**doc, "score": {**doc["score"], "knots": [0.3, 0.2, 0.1, 0.0, -0.1]}},
        "old format": {**doc, "format": 99},
    }
    for why, bad in cases.items():
        (d / FILENAME).write_text(json.dumps(bad), encoding="utf-8")
        assert not load_relevance(d).calibrated, why
    (d / FILENAME).write_text("{not json", encoding="utf-8")
    assert not load_relevance(d).calibrated
    # the same document next to a copy of the model is fine; without the weights the gate keeps its text score
    (d / FILENAME).write_text(json.dumps(doc), encoding="utf-8")
    r = load_relevance(d)
    assert r.calibrated and r.anchors is None and r.visibility_threshold is None


def test_search_path_imports_no_torch():
    code = ("import sys, dcclip_core\nfrom dcclip_core.relevance import load_relevance\n"
            "r = load_relevance(dcclip_core.load())\nq = dcclip_core.load().encode_text(['猫'])[0]\n"
            "assert r.calibrated and r.query_has_match(q)\n"
            "assert 'torch' not in sys.modules, 'relevance imported torch'\n")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO_DIR, timeout=120)


def test_calibration_helpers_are_deterministic_and_fit():
    from training.calibrate_relevance import auc, fit_logistic, gate_from, nonsense_queries
    a, b = nonsense_queries(3, 20), nonsense_queries(3, 20)
    assert a == b and all(len(v) == 20 for v in a.values())
    assert all(200 <= len(s) <= 2000 for s in a["long"])
    rng = np.random.default_rng(0)
    X1, X0 = rng.normal(1.0, 1.0, (300, 4)), rng.normal(-1.0, 1.0, (300, 4))
    w, b0 = fit_logistic(np.concatenate([X1, X0]), np.r_[np.ones(300), np.zeros(300)], l2=1.0)
    assert auc(X1 @ w + b0, X0 @ w + b0) > 0.95
    w, b1 = gate_from(X1, X0, 1.0, 0.05)
    assert abs((X1 @ w + b1 < 0).mean() - 0.05) < 0.01                              # 5 % of real refused
    assert auc(np.array([1.0, 2.0]), np.array([0.0, 1.0])) == pytest.approx(0.875)
