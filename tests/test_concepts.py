"""The concept bank (dcclip_core.concepts) on the shipped model and on generated pictures: photos in the text
tower's own space, exact explanations, class activation maps, colours, re-embedding, and the CLI's "why"."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import dcclip_core
from dcclip_core.concepts import ConceptBank, Mix, colour_shares, sparse
from dcclip_core.config import ASSETS_DIR

DEFAULT = ASSETS_DIR / "models" / "default"
DEMO = ASSETS_DIR / "demo"


@pytest.fixture(scope="module")
def model():
    return dcclip_core.Model(DEFAULT)


def test_shipped_model_lives_in_the_text_towers_space(model):
    assert model.info["space"] == "text" and model.dim == model.config.text.width == 384
    bank = model.concept_bank
    assert len(bank) == len(bank.concepts) == bank.text.shape[0] and bank.dim == 384
    assert np.allclose(np.linalg.norm(bank.text, axis=1), 1.0, atol=1e-5)
    first = bank.concepts[0]
    assert first["detector"] == {"kind": "class", "index": 0} and first["en"] and first["zh"]


def test_photo_vector_is_the_normalised_concept_mix(model):
    px = np.stack([model.preprocess(DEMO / "cat_chelsea.jpg"), model.preprocess(DEMO / "coffee.jpg")])
    emb, feats, w = model.encode_pixels(px, return_features=True, return_concepts=True)   # (2, d) (2, F) (2, C)
    bank = model.concept_bank
    mix = w @ bank.text
    assert np.allclose(emb, mix / np.linalg.norm(mix, axis=1, keepdims=True), atol=1e-6)
    assert ((w > 0).sum(1) == bank.mix.top_k).all()                   # the top-k classes, nothing else
    p = bank.class_probs(feats)
    assert np.allclose(w.sum(1), np.sort(p, 1)[:, -bank.mix.top_k:].sum(1), atol=1e-5)


def test_a_photo_gets_the_same_vector_alone_or_in_a_batch(model):
    paths = sorted(DEMO.glob("*.jpg"))[:6]
    together = model.encode_image(paths)
    alone = np.stack([model.encode_image([p])[0] for p in paths])
    assert np.abs(together - alone).max() < 1e-5


def test_explanation_shares_add_up_to_the_score_exactly(model):
    bank = model.concept_bank
    px = model.preprocess(DEMO / "cat_chelsea.jpg")[None]
    v, w = model.encode_pixels(px, return_concepts=True)
    ids, weights = sparse(w[0])
    for text in ("猫", "a cat", "一杯咖啡"):
        q = model.encode_text([text])[0]
        why = bank.explain(ids, weights, q, top=len(ids))
        assert abs(sum(x["share"] for x in why) - float(v[0] @ q)) < 1e-3
        assert [x["share"] for x in why] == sorted((x["share"] for x in why), reverse=True)
    top = bank.explain(ids, weights, model.encode_text(["猫"])[0])
    assert len(top) == 3 and all(set(x) == {"concept", "en", "zh", "share"} for x in top)
    assert any("猫" in x["zh"] for x in top) and any("cat" in x["en"].lower() for x in top)


def test_heatmap_is_one_map_per_concept_in_0_1(model):
    px = model.preprocess(DEMO / "cat_chelsea.jpg")[None]
    _, w = model.encode_pixels(px, return_concepts=True)
    ids, _ = sparse(w[0])
    maps = model.heatmap(DEMO / "cat_chelsea.jpg", ids[:2])
    assert maps.shape == (2, 7, 7) and maps.min() >= 0 and np.isclose(maps.max(), 1.0)


def test_colour_shares_name_generated_colours():
    def solid(rgb):
        return np.broadcast_to(np.asarray(rgb, np.float32)[None, :, None, None], (1, 3, 32, 32))
    for rgb, name in (((0.9, 0.1, 0.1), "red"), ((0.1, 0.2, 0.9), "blue"), ((0.2, 0.8, 0.2), "green"),
                      ((0.95, 0.95, 0.95), "white"), ((0.05, 0.05, 0.05), "black"), ((0.5, 0.5, 0.5), "grey"),
                      ((0.95, 0.85, 0.1), "yellow"), ((0.45, 0.25, 0.1), "brown")):
        shares, attrs = colour_shares(solid(rgb))
        assert shares[name][0] == 1.0, (rgb, name, {k: float(v[0]) for k, v in shares.items() if v[0]})
    _, attrs = colour_shares(solid((0.05, 0.05, 0.05)))
    assert attrs["night"][0] == 1.0 and attrs["monochrome"][0] == 1.0


def _bank_with_all_parts(model) -> ConceptBank:
    """The shipped bank plus one group, one learned head, the colours and the attributes (weights on)."""
    from training.concept_bank import bank_entries
    from training.corpus import load_imagenet_table
    table = load_imagenet_table()
    groups = [{"id": "cat", "en": ["cat"], "zh": ["猫"], "hypernyms": ["domestic cat"]}]
    heads = [{"id": "t", "en": ["thing"], "zh": ["东西"], "source": "test"}]
    concepts, G = bank_entries(table, groups, heads)
    b = model.concept_bank
    F = b.classifier_w.shape[1]
    text = np.concatenate([b.text[:1000], np.eye(len(concepts) - 1000, b.dim, dtype=np.float32)])
    bank = ConceptBank(concepts, text, b.classifier_w, b.classifier_b, G, np.ones((1, F), np.float32),
                       np.zeros(1, np.float32), np.full(1, 0.5, np.float32),
                       Mix(group_weight=0.5, group_min=0.1, head_weight=0.3, colour_weight=0.2,
                           attribute_weight=0.1))
    bank._index()
    return bank


def test_groups_heads_colours_and_attributes_fill_their_columns(model):
    bank = _bank_with_all_parts(model)
    px = model.preprocess(DEMO / "cat_chelsea.jpg")[None]
    _, feats = model.encode_pixels(px, return_features=True)
    w = bank.weights(feats, px, model.config.image.mean, model.config.image.std)
    kinds = np.array([c["detector"]["kind"] for c in bank.concepts])
    p = bank.class_probs(feats)
    cat = np.flatnonzero(bank.group[0])
    assert np.isclose(w[0, kinds == "group"][0], 0.5 * p[0, cat].sum(), atol=1e-6)     # a cat photo: mass >= 0.1
    assert w[0, kinds == "head"][0] > 0                                                  # all-ones head fires
    assert (w[0, kinds == "colour"] >= 0).all() and w[0, kinds == "colour"].max() > 0
    with pytest.raises(ValueError, match="ordered"):
        ConceptBank(bank.concepts[::-1], bank.text, bank.classifier_w, bank.classifier_b, bank.group,
                    bank.head_w, bank.head_b, bank.head_threshold)._index()


def test_reembedding_the_bank_reproduces_it(model, tmp_path):
    from training.concept_bank import reembed
    d = tmp_path / "m"
    shutil.copytree(DEFAULT, d)
    (d / "concepts.safetensors").unlink()
    shutil.copy(DEFAULT / "concepts.safetensors", d / "concepts.safetensors")
    assert reembed(d) == len(model.concept_bank)
    again = ConceptBank.load(d)
    assert np.abs(again.text - model.concept_bank.text).max() < 2e-3           # float16 storage


def test_cli_search_json_explains_every_result(tmp_path):
    import subprocess
    import sys

    def run_cli(*args):
        return subprocess.run([sys.executable, "-m", "index", *args], capture_output=True, text=True, timeout=300,
                              cwd=Path(__file__).resolve().parents[1])
    db = tmp_path / "d.db"
    assert run_cli("build", str(DEMO), "--db", str(db)).returncode == 0
    r = run_cli("search", "--db", str(db), "--json", "-k", "3", "猫", "a cat")
    assert r.returncode == 0, r.stderr
    for line in r.stdout.splitlines():
        out = json.loads(line)
        assert Path(out["results"][0]["path"]).name == "cat_chelsea.jpg"
        for res in out["results"]:
            why = res["why"]
            assert 1 <= len(why) <= 3 and all(set(x) == {"concept", "en", "zh", "share"} for x in why)
            assert sum(x["share"] for x in why) <= res["score"] + 1e-4


def test_colour_term_only_for_queries_that_name_a_colour(model):
    bank = model.concept_bank
    assert bank.has_colour_boost
    red = np.zeros((1, len(bank._colour_names)), np.float32)
    red[0, bank._colour_names.index("red")] = 1.0
    blue = np.zeros_like(red)
    blue[0, bank._colour_names.index("blue")] = 1.0
    shares = np.concatenate([red, blue])                                         # (2 photos, c)
    q = model.encode_text(["红色的花", "a red car", "blue sky", "一只猫", "a cup of coffee"])
    T = bank.colour_terms(q, shares).sum(-1)                                     # (5, 2)
    assert T[0, 0] > 0 and T[0, 1] == 0 and T[1, 0] > 0 and T[1, 1] == 0
    assert T[2, 1] > 0 and T[2, 0] == 0
    assert (T[3:] == 0).all()                                                    # no colour named, nothing added


def test_search_adds_the_colour_term_and_explains_it(tmp_path):
    """Generated red and blue pictures of the same shape: "red" ranks the red one first and says so."""
    from index.indexer import build_index
    from index.search import Searcher
    from PIL import ImageDraw
    root = tmp_path / "photos"
    root.mkdir()
    for name, colour in (("red.png", (200, 30, 30)), ("blue.png", (30, 60, 200))):
        im = Image.new("RGB", (224, 224), colour)
        ImageDraw.Draw(im).ellipse((60, 60, 160, 160), fill=(240, 240, 240))
        im.save(root / name)
    db = tmp_path / "d.db"
    build_index(root, db)
    with Searcher(db) as s:
        for q, first in (("红色", "red.png"), ("something blue", "blue.png")):
            res = s.search(q, k=2)
            assert Path(res[0]["path"]).name == first, (q, [(Path(r["path"]).name, r["score"]) for r in res])
            assert res[0]["score"] > res[1]["score"] and len(res[0]["why"]) == 3
            assert all(0 < w["share"] <= res[0]["score"] for w in res[0]["why"])
