"""Plain-data label functions the app's Label and Prompts tabs use (index/labels.py): manual corrections,
copying into class folders, labelling with a learned prompt. Real model, real SQLite, the demo photos."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DEMO = ROOT / "assets" / "demo"
if not (ROOT / "assets" / "models" / "default" / "config.json").exists():
    pytest.skip("default model not built", allow_module_level=True)

from index import build_index, labels_of  # noqa: E402
from index.labels import (LabelError, copy_to_folders, folder_name, label_index,  # noqa: E402
                          label_index_with_prompt, remove_correction, set_label)


@pytest.fixture(scope="module")
def model():
    import dcclip_core
    return dcclip_core.load()


@pytest.fixture(scope="module")
def demo_db(tmp_path_factory, model):
    tmp = tmp_path_factory.mktemp("labels")
    photos = tmp / "photos"
    shutil.copytree(DEMO, photos, ignore=shutil.ignore_patterns("*.py", "*.md", "*.json"))
    db = tmp / "demo.db"
    build_index(str(photos), str(db), model=model)
    return db, photos


def test_manual_correction_survives_relabel(demo_db, model):
    db, photos = demo_db
    label_index(db, "猫, 咖啡, rocket", label_set="t1", model=model)
    cat = str((photos / "cat_chelsea.jpg").resolve())
    assert {r["path"]: r["label"] for r in labels_of(db, "t1", top_only=True)}[cat] == "猫"
    assert set_label(db, "t1", [cat, "/not/indexed.jpg"], "  狗 ") == 1
    rows = [r for r in labels_of(db, "t1") if r["path"] == cat]
    assert [(r["label"], r["rank"], r["source"]) for r in rows] == [("狗", 1, "manual")]
    label_index(db, "猫, 咖啡, rocket", label_set="t1", model=model)   # same set again: the correction stays
    assert {r["path"]: r["label"] for r in labels_of(db, "t1", top_only=True)}[cat] == "狗"
    with pytest.raises(LabelError):
        set_label(db, "t1", [cat], "  ")


def test_copy_to_folders_never_overwrites(demo_db, model, tmp_path):
    db, photos = demo_db
    label_index(db, "猫, 咖啡, rocket, 花", label_set="t2", model=model)
    out = tmp_path / "分类 out"
    (out / "猫").mkdir(parents=True)
    (out / "猫" / "cat_chelsea.jpg").write_bytes(b"mine, keep me")
    res = copy_to_folders(db, "t2", out)
    n = len(list(photos.glob("*.jpg")))
    assert res["copied"] == n and not res["missing"] and sum(res["folders"].values()) == n
    assert (out / "猫" / "cat_chelsea.jpg").read_bytes() == b"mine, keep me"
    assert (out / "猫" / "cat_chelsea (2).jpg").read_bytes() == (photos / "cat_chelsea.jpg").read_bytes()
    assert res["already"] == 0
    res2 = copy_to_folders(db, "t2", out)                         # again: nothing copied twice
    assert (res2["copied"], res2["already"], res2["folders"]) == (0, n, res["folders"])
    assert len(list(out.rglob("*.jpg"))) == n + 1
    assert {p.name for p in out.iterdir()} <= {folder_name(x) for x in ["猫", "咖啡", "rocket", "花"]}


def test_folder_name():
    assert folder_name("猫") == "猫"
    assert "/" not in folder_name("../../etc") and not folder_name("../../etc").startswith(".")
    assert "/" not in folder_name("a/b") and "\\" not in folder_name("a\\b") and folder_name("..") == "_"


def test_label_with_prompt(demo_db, model):
    db, photos = demo_db
    from training.prompts.api import label_prompt
    p = label_prompt({"cat": {"en": "cat", "zh": "猫"}, "coffee": {"en": "coffee", "zh": "咖啡"},
                      "rocket": {"en": "rocket", "zh": "火箭"}}, "en", model)
    p.meta["name"] = "pets-zs"
    res = label_index_with_prompt(db, p, "t3", model=model, lang="zh")
    assert res["images"] == len(list(photos.glob("*.jpg"))) and set(res["labels"]) == {"猫", "咖啡", "火箭"}
    top = {Path(r["path"]).name: r["label"] for r in labels_of(db, "t3", top_only=True)}
    assert top["cat_chelsea.jpg"] == "猫" and top["coffee.jpg"] == "咖啡"
    cat = str((photos / "cat_chelsea.jpg").resolve())
    set_label(db, "t3", [cat], "狗")
    label_index_with_prompt(db, p, "t3", model=model, lang="zh")        # the same prompt: correction kept
    assert {Path(r["path"]).name: r["label"] for r in labels_of(db, "t3", top_only=True)}["cat_chelsea.jpg"] == "狗"
    p.meta["name"] = "another"
    label_index_with_prompt(db, p, "t3", model=model, lang="en")        # another prompt: correction kept too
    top = {Path(r["path"]).name: r for r in labels_of(db, "t3", top_only=True)}
    assert (top["cat_chelsea.jpg"]["label"], top["cat_chelsea.jpg"]["source"]) == ("狗", "manual")
    assert top["coffee.jpg"]["source"] == "prompt:another"
    assert remove_correction(db, "t3", [cat]) == 1                      # undo: the prompt's label shows
    top = {Path(r["path"]).name: r for r in labels_of(db, "t3", top_only=True)}
    assert (top["cat_chelsea.jpg"]["label"], top["cat_chelsea.jpg"]["source"]) == ("cat", "prompt:another")



def test_typed_labels_are_a_zero_shot_prompt(demo_db, model):
    """Typed labels, the same labels as a zero-shot prompt, and the in-memory demo path: one classifier, the same
    probabilities; zero-shot rows keep each label's cosine, prompt rows do not."""
    from index.labels import classify_index, zero_shot_prompt
    db, photos = demo_db
    labels = ["猫", "coffee", "rocket"]
    res = label_index(db, labels, label_set="z1", model=model, top=3)
    typed = labels_of(db, "z1")
    assert res["labeled"] == res["images"] == len(list(photos.glob("*.jpg"))) and len(typed) == 3 * res["images"]
    by_path: dict[str, list[dict]] = {}
    for r in typed:
        by_path.setdefault(r["path"], []).append(r)
    for rows in by_path.values():                                  # the softmax over the set, best first
        assert [r["rank"] for r in rows] == [1, 2, 3] and sum(r["score"] for r in rows) == pytest.approx(1, abs=1e-5)
        assert [r["score"] for r in rows] == sorted((r["score"] for r in rows), reverse=True)
        assert all(-1 <= r["cosine"] <= 1 and r["source"] == f"zero-shot:{model.info['hash']}" for r in rows)

    p = zero_shot_prompt(model, labels)
    assert p.method == "zeroshot" and p.labels("zh") == labels and p.tensors["class_embeds"].shape == (3, model.dim)
    p.meta["name"] = "typed"
    label_index_with_prompt(db, p, "z2", model=model, lang="zh")
    prompt_top = {r["path"]: r for r in labels_of(db, "z2")}
    demo = {r["path"]: r for r in classify_index(db, labels, model=model)["rows"]}
    for path, rows in by_path.items():
        assert (prompt_top[path]["label"], prompt_top[path]["score"]) == (rows[0]["label"], rows[0]["score"])
        assert (prompt_top[path]["cosine"], prompt_top[path]["source"]) == (None, "prompt:typed")
        assert demo[path] == {k: rows[0][k] for k in ("path", "label", "score", "cosine", "rank", "source")}


def test_label_with_a_prompt_that_needs_pixels(model, tmp_path):
    """A linear probe acts on backbone features, which are not stored: every photo is encoded again through the
    prompt's classifier; a photo that can no longer be read is left out, not fatal."""
    import numpy as np
    from dcclip_core.prompts import Prompt, PromptClassifier, model_ref
    photos = tmp_path / "photos"
    photos.mkdir()
    for name in ("cat_chelsea.jpg", "coffee.jpg", "rocket.jpg", "flower.jpg"):
        shutil.copy(DEMO / name, photos / name)
    db = tmp_path / "px.db"
    build_index(str(photos), str(db), model=model)
    (photos / "flower.jpg").write_bytes(b"gone bad since it was indexed")
    F = model.info["feature_dim"]
    names = ["a", "b", "c"]
    p = Prompt({"name": "probe", "method": "linear-probe", "model": model_ref(model), "classes": names,
                "labels": {"en": names, "zh": ["甲", "乙", "丙"]}},
               {"weight": np.random.default_rng(0).standard_normal((3, F)).astype(np.float32),
                "bias": np.zeros(3, np.float32)})
    seen = []
    res = label_index_with_prompt(db, p, "px", model=model, lang="zh", batch=2,
                                  progress=lambda d, t: seen.append((d, t)))
    assert (res["labeled"], res["images"], res["prompt"]) == (3, 3, "probe") and seen[-1] == (4, 4)
    rows = {Path(r["path"]).name: r for r in labels_of(db, "px")}
    assert set(rows) == {"cat_chelsea.jpg", "coffee.jpg", "rocket.jpg"}
    want = PromptClassifier(model, p).classify([str(photos / n) for n in sorted(rows)], lang="zh", top=1)
    for n, w in zip(sorted(rows), want):
        assert (rows[n]["label"], rows[n]["rank"], rows[n]["cosine"], rows[n]["source"]) == \
            (w[0]["label"], 1, None, "prompt:probe")
        assert rows[n]["score"] == pytest.approx(w[0]["score"], abs=1e-5)


QUERIES = ["一只猫", "a cup of coffee", "火箭发射", "flowers", "an astronaut in space", "狗", "a baboon",
           "butterfly on a flower", "apple", "一杯咖啡", "cat", "宇航员"]


def test_search_many_equals_search(demo_db, model):
    from index import Searcher
    db, photos = demo_db
    with Searcher(db, model=model) as s:
        want = [s.search(q) for q in QUERIES]
        assert s.search_many(QUERIES) == want
        assert Path(want[0][0]["path"]).name == "cat_chelsea.jpg" and len(want[0]) == len(list(photos.glob("*.jpg")))
        # k and threshold as search applies them (a threshold between two scores)
        sc = sorted(r["score"] for r in want[1])
        t = (sc[len(sc) // 2] + sc[len(sc) // 2 + 1]) / 2
        for k, th in [(3, None), (20, t), (1, t)]:
            assert s.search_many(QUERIES, k=k, threshold=th) == [s.search(q, k=k, threshold=th) for q in QUERIES]
        assert all(len(r) == 3 for r in s.search_many(QUERIES, k=3))
        assert s.search_many([]) == [] and s.search_many(QUERIES[:2], k=0) == [[], []]
        many = QUERIES * 3                                        # > 20 queries: FAISS's BLAS path
        assert s.search_many(many) == [s.search(q) for q in many]


def test_app_search_batcher_uses_search_many(demo_db, model):
    import app
    from index import Searcher
    db, _ = demo_db
    with Searcher(db, model=model) as s:
        calls = []
        real = s.search_many
        s.search_many = lambda qs, **kw: calls.append(list(qs)) or real(qs, **kw)
        b = app.SearchBatcher(s)
        items = [(q, k, th, None) for q, k, th in [("一只猫", 5, None), ("coffee", 2, None), ("火箭", 20, 0.05)]]
        out = b._run(items)                                         # one batch, one search_many call
        assert calls == [["一只猫", "coffee", "火箭"]]
        assert out == [s.search(q, k=k, threshold=th) for q, k, th, _ in items]
        assert len(out[0]) == 5 and len(out[1]) == 2 and all(r["score"] >= 0.05 for r in out[2])
        futs = [b.submit(q, k=4) for q in QUERIES]                  # through the worker thread
        assert [f.result(timeout=60) for f in futs] == [s.search(q, k=4) for q in QUERIES]
        assert sum(map(len, calls[1:])) == len(QUERIES)            # every query answered by search_many
