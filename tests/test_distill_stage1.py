"""Stage-1 distillation (training/distill.py, training/cmd_distill.py, training/data.py): deterministic augmented
views, the float16 teacher-feature cache (built once, resumable), image and text students with adapters,
checkpoints + resume, gradient accumulation, the CLI and its JSON recipes. Tiny models, real photos, seconds on
CPU."""
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from training import cmd_distill as cd  # noqa: E402
from training.data import (AugmentConfig, FeatureCache, ImageViews, list_images, read_pairs,  # noqa: E402
                           read_texts)
from training.distill import DistillSettings, run_distill  # noqa: E402
from training.students import build_student  # noqa: E402
from conftest import make_tiny_hf, photo_folder, tiny_tokenizer  # noqa: E402

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    root = tmp_path_factory.mktemp("distill")
    return {"photos": photo_folder(root / "photos"),
            "held": photo_folder(root / "held", ("motorcycle_left.png", "coffee.png")),
            "clip": make_tiny_hf("clip", root), "cnclip": make_tiny_hf("chinese_clip", root),
            "tok": tiny_tokenizer(root / "tokenizer.json"), "root": root}


def image_settings(env, out, **kw) -> DistillSettings:
    base = dict(modality="image", teacher=f"hf:{env['clip']}", teacher_image_size=32, student="arch:tiny-test",
                student_init="random", layers=[[1, 1], [2, 3]], grid=2, images=str(env["photos"]),
                heldout=str(env["held"]), views=3, batch_size=4, max_steps=3, lr=1e-3, warmup_steps=1,
                log_every=1, ckpt_every=2, out=str(out), threads=1, precision="fp32")
    base.update(kw)
    return DistillSettings(**base)


# ---- data ---------------------------------------------------------------------------------------------------
def test_distill_views_are_deterministic_and_augmented(env):
    paths = list_images(env["photos"])
    assert [p.stem for p in paths] == ["astronaut", "chelsea", "coffee", "rocket"]
    v1 = ImageViews(paths, views=4, aug=AugmentConfig(size=64), seed=3)
    v2 = ImageViews(paths, views=4, aug=AugmentConfig(size=64), seed=3)
    assert len(v1) == 16
    a, b = np.asarray(v1.view(5)), np.asarray(v2.view(5))
    assert a.shape == (64, 64, 3) and np.array_equal(a, b)                     # same (seed, image, view)
    assert not np.array_equal(np.asarray(v1.view(5)), np.asarray(v1.view(6)))   # another view differs
    plain = np.asarray(v1.view(4))                                            # view 0 = centre crop
    from dcclip_core.preprocess import resize_center_crop
    ref = np.asarray(resize_center_crop(v1.image(1), 64))
    assert np.array_equal(plain, ref)
    px = v1.pixels([0, 5], 32, [0.5] * 3, [0.5] * 3)
    assert px.shape == (2, 3, 32, 32) and px.dtype == np.float32 and -1.01 <= px.min() and px.max() <= 1.01
    assert v1.fingerprint() == v2.fingerprint() != ImageViews(paths, 4, AugmentConfig(size=64), seed=4).fingerprint()


def test_distill_unreadable_photos_are_recorded(env, tmp_path):
    (tmp_path / "ok.jpg").write_bytes((env["photos"] / "coffee.jpg").read_bytes())
    (tmp_path / "bad.jpg").write_bytes(b"not a jpeg")
    v = ImageViews(list_images(tmp_path), views=2).check()
    assert len(v) == 2 and len(v.errors) == 1 and v.errors[0]["path"].endswith("bad.jpg")


def test_distill_feature_cache_resumes_and_rebuilds(tmp_path):
    calls = []

    def compute(idx):
        calls.append(idx.tolist())
        if len(calls) == 2 and not (tmp_path / "crashed").exists():
            (tmp_path / "crashed").touch()
            raise KeyboardInterrupt                                            # killed mid-build
        return {"final": np.stack([idx * 1.0, -idx * 1.0], 1), "layer1": np.ones((len(idx), 3, 2, 2)) * idx[:, None, None, None]}

    with pytest.raises(KeyboardInterrupt):
        FeatureCache.build(tmp_path / "c", 10, compute, key="k1", chunk=4, progress=False)
    c = FeatureCache.build(tmp_path / "c", 10, compute, key="k1", chunk=4, progress=False)
    assert calls == [[0, 1, 2, 3], [4, 5, 6, 7], [4, 5, 6, 7], [8, 9]]         # resumed after the first chunk
    assert c.fields["final"].dtype == np.float16 and c.fields["layer1"].shape == (10, 3, 2, 2)
    got = c.get([7, 2, 9])
    assert got["final"][:, 0].tolist() == [7.0, 2.0, 9.0] and got["final"].dtype == np.float32
    assert c.rms["layer1"] == pytest.approx(np.sqrt(np.mean(np.arange(10) ** 2)), rel=1e-3)
    n = len(calls)
    FeatureCache.build(tmp_path / "c", 10, compute, key="k1", chunk=4, progress=False)
    assert len(calls) == n                                                     # complete: not recomputed
    FeatureCache.build(tmp_path / "c", 10, compute, key="k2", chunk=4, progress=False)
    assert len(calls) == n + 3                                                 # another teacher: rebuilt


def test_distill_text_and_pair_readers(tmp_path):
    (tmp_path / "a.txt").write_text("a cat\n\n一只猫\na cat\n", encoding="utf-8")
    (tmp_path / "b.jsonl").write_text(json.dumps({"en": "a dog", "zh": "一只狗"}, ensure_ascii=False) + "\n",
                                      encoding="utf-8")
    assert read_texts([tmp_path / "a.txt", tmp_path / "b.jsonl"]) == ["a cat", "一只猫", "a dog", "一只狗"]
    (tmp_path / "p.csv").write_text("image,en,zh\nimgs/c.jpg,a cat,一只猫\n,hello,你好\n", encoding="utf-8")
    rows = read_pairs(tmp_path / "p.csv")
    assert rows[0]["image"] == str(tmp_path / "imgs" / "c.jpg") and rows[0]["texts"] == [("en", "a cat"), ("zh", "一只猫")]
    assert rows[1]["image"] is None and len(rows[1]["texts"]) == 2
    (tmp_path / "q.jsonl").write_text(json.dumps({"image": "x.jpg", "captions": ["一只猫", "a cat"]}) + "\n")
    assert read_pairs(tmp_path / "q.jsonl")[0]["texts"] == [("zh", "一只猫"), ("en", "a cat")]
    (tmp_path / "bad.jsonl").write_text(json.dumps({"en": "alone"}) + "\n")
    with pytest.raises(ValueError, match="fewer than two texts"):
        read_pairs(tmp_path / "bad.jsonl")


# ---- image student --------------------------------------------------------------------------------------------
def test_distill_image_tiny_runs_caches_and_resumes(env, tmp_path, monkeypatch):
    out = tmp_path / "run"
    res = run_distill(image_settings(env, out), progress=False)
    assert res["train_rows"] == 12 and res["steps"] == 3 and res["global_batch"] == 4
    assert set(res["heldout_before"]) >= {"cos_final", "cos_layer1", "cos_layer3"}
    assert set(res["adapter_ridge_r2"]) == {"final", "layer1", "layer3"}          # least-squares adapter init
    assert res["heldout_before"]["cos_final"] > 0.5
    meta = json.loads((out / "cache" / "train" / "meta.json").read_text())
    assert meta["complete"] and meta["fields"] == {"final": [24], "layer1": [32, 2, 2], "layer3": [32, 2, 2]}
    rows = [json.loads(ln) for ln in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if "loss" in r] == [1, 2, 3] and all(np.isfinite(r["loss"]) for r in rows if "loss" in r)
    assert json.loads((out / "last.json").read_text())["step"] == 3
    # resume to 5 steps: starts at 3, and the teacher never runs again (its features are cached)
    import training.teachers as teachers
    monkeypatch.setattr(teachers, "load_teacher", lambda *a, **k: pytest.fail("teacher loaded despite the cache"))
    res2 = run_distill(image_settings(env, out, max_steps=5), progress=False)
    steps = [json.loads(ln)["step"] for ln in (out / "metrics.jsonl").read_text().splitlines()
             if "loss" in json.loads(ln)]
    assert steps == [1, 2, 3, 4, 5] and res2["heldout_before"] == res["heldout_before"]


def test_distill_image_learns_and_exports(env, tmp_path):
    out = tmp_path / "run"
    s = image_settings(env, out, max_steps=25, views=2, heldout=str(env["photos"]), lr=3e-3, export=str(tmp_path / "model"),
                       augment={"plain_first": True}, adapter_init="identity")
    res = run_distill(s, progress=False)
    assert res["heldout_after"]["cos_final"] > res["heldout_before"]["cos_final"] + 0.05, res
    from dcclip_core.models import load_torch_model
    m = load_torch_model(tmp_path / "model")                                 # the exported directory loads
    trained = build_student(str(tmp_path / "model"))[0]
    assert torch.allclose(m.image.backbone.net[0].weight, trained.image.backbone.net[0].weight)
    cfg = json.loads((tmp_path / "model" / "config.json").read_text())
    assert cfg["extra"]["distill"]["teacher"].startswith("hf:") and cfg["image"]["tower"] == "tiny-cnn"


def test_distill_grad_accum_matches_bigger_batch(env, tmp_path):
    def weights(out, **kw):
        run_distill(image_settings(env, out, heldout=None, max_steps=2, **kw), progress=False)
        from safetensors.torch import load_file
        return load_file(str(out / "student_image.safetensors"))
    a = weights(tmp_path / "a", batch_size=4, grad_accum=1, cache=str(tmp_path / "cache"))
    b = weights(tmp_path / "b", batch_size=2, grad_accum=2, cache=str(tmp_path / "cache"))
    assert max(float((a[k] - b[k]).abs().max()) for k in a if a[k].is_floating_point()) < 1e-5


def test_distill_vit_student_from_clip_teacher(env, tmp_path):
    s = image_settings(env, tmp_path / "vit", image={"tower": "vit-micro", "feature_dim": 32, "image_size": 32},
                       layers=[[1, 1], [2, 3]], max_steps=2, heldout=None)
    res = run_distill(s, progress=False)
    assert res["steps"] == 2 and np.isfinite(res["last"]["loss"])


# ---- text student ---------------------------------------------------------------------------------------------
def test_distill_text_tiny_student_from_chinese_clip(env, tmp_path):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n".join(["a cat", "一只猫", "a dog", "一只狗的照片", "rocket", "火箭", "coffee", "咖啡",
                                 "a photo of a cat", "一张猫的照片"]), encoding="utf-8")
    held = tmp_path / "held.txt"
    held.write_text("cat photo\n猫的照片\n", encoding="utf-8")
    s = DistillSettings(modality="text", teacher=f"hf:{env['cnclip']}", student="arch:tiny-test",
                           student_init="random", tokenizer=str(env["tok"]), layers=[[1, 1], [2, 2]],
                           texts=[str(corpus)], heldout_texts=[str(held)], batch_size=5, max_steps=3, lr=1e-3,
                           warmup_steps=1, log_every=1, out=str(tmp_path / "text"), threads=1, precision="bf16")
    res = run_distill(s, progress=False)
    assert res["train_rows"] == 10 and res["steps"] == 3
    assert set(res["heldout_after"]) == {"cos_final", "cos_layer1", "cos_layer2"}
    meta = json.loads((tmp_path / "text" / "cache" / "train" / "meta.json").read_text())
    assert meta["fields"] == {"final": [24], "layer1": [32], "layer2": [32]}


# ---- CLI + recipes ----------------------------------------------------------------------------------------------
def test_distill_recipes_parse_and_cli_overrides():
    from training.configs import list_configs, load_config, to_dataclass
    names = list_configs("distill")
    assert {"lite2-to-lite0", "e5-text"} <= set(names)
    for n in names:
        s = to_dataclass(DistillSettings, load_config(n), n)
        assert s.layers and all(len(p) == 2 for p in s.layers)
    import argparse
    p = argparse.ArgumentParser()
    cd.add_args(p)
    args = p.parse_args(["--config", "lite2-to-lite0", "--images", "x", "--layers", "3:3,7:7", "--epochs", "1",
                         "--set", "augment.scale_min=0.5", "--set", "views=2"])
    s = cd.settings_from_args(args)
    assert s.layers == [[3, 3], [7, 7]] and s.epochs == 1.0 and s.views == 2 and s.augment["scale_min"] == 0.5
    bad = p.parse_args(["--set", "no_such_key=1"])
    with pytest.raises(ValueError, match="unknown keys"):
        cd.settings_from_args(bad)
    r = subprocess.run([sys.executable, "-m", "training", "distill", "--help"], cwd=REPO, capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 0 and "--teacher" in r.stdout and "torchrun" in r.stdout
