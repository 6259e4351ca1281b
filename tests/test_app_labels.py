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
                          label_index_with_prompt, set_label)


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
    assert [(r["label"], r["rank"]) for r in rows] == [("狗", 1)]
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
    res2 = copy_to_folders(db, "t2", out)                         # again: every file gets a new name
    assert res2["copied"] == n
    assert len(list(out.rglob("*.jpg"))) == 2 * n + 1
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
    label_index_with_prompt(db, p, "t3", model=model, lang="en")        # another prompt: starts over
    assert {Path(r["path"]).name: r["label"] for r in labels_of(db, "t3", top_only=True)}["cat_chelsea.jpg"] == "cat"
