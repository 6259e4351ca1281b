"""Prompt library and torch-free inference (dcclip_core.prompts): file format, model checks, list/import/export,
pixel and feature prompts applied in numpy on the ONNX model."""
import json
import subprocess
import sys

import numpy as np
import pytest

from dcclip_core.config import MODELS_DIR, REPO_DIR
from dcclip_core import prompts

DEFAULT = MODELS_DIR / "default"
pytestmark = pytest.mark.skipif(not (DEFAULT / "config.json").is_file(), reason="default model not built")
DATA = REPO_DIR / "tests" / "data"


@pytest.fixture
def model(shipped_model):
    return shipped_model


@pytest.fixture(autouse=True)
def user_lib(tmp_path, monkeypatch):
    monkeypatch.setenv("DCCLIP_PROMPTS", str(tmp_path / "lib"))
    return tmp_path / "lib"


def text_prompt(model, labels=("cat", "coffee"), **meta):
    from training.prompts.api import label_prompt
    p = label_prompt(list(labels), "en", model)
    p.meta.update({"shots": 5, "seed": 0, "val_accuracy": 0.5, **meta})
    return p


def test_save_load_roundtrip_and_metadata(model, tmp_path):
    p = text_prompt(model)
    path = p.save(tmp_path / "pets")
    assert path.suffix == ".safetensors" and path.is_file()
    meta = prompts.read_meta(path)
    for key in ("method", "model", "classes", "labels", "shots", "seed", "val_accuracy", "created", "format"):
        assert key in meta
    assert meta["model"]["hash"] == model.info["hash"] and meta["model"]["id"] == model.info["id"]
    q = prompts.load_prompt(path, model=model)
    assert q.classes == ["cat", "coffee"] and q.labels("zh") == ["cat", "coffee"]
    assert np.array_equal(q.tensors["class_embeds"], p.tensors["class_embeds"])


def test_mismatched_model_is_refused_with_a_clear_message(model, tmp_path):
    p = text_prompt(model)
    p.meta["model"] = {**p.meta["model"], "hash": "0123456789abcdef", "id": "other-model"}
    path = p.save(tmp_path / "foreign")
    with pytest.raises(prompts.PromptMismatchError) as e:
        prompts.load_prompt(path, model=model)
    msg = str(e.value)
    assert "other-model" in msg and model.info["id"] in msg and "Learn the prompt again" in msg
    assert prompts.load_prompt(path).name == "foreign"      # without a model: readable (to inspect / export)
    with pytest.raises(prompts.PromptMismatchError):
        prompts.import_prompt(path, model=model)


def test_not_a_prompt(tmp_path):
    from safetensors.numpy import save_file
    save_file({"x": np.zeros(3, np.float32)}, str(tmp_path / "plain.safetensors"))
    with pytest.raises(prompts.PromptError, match="not a prompt"):
        prompts.load_prompt(tmp_path / "plain.safetensors")
    (tmp_path / "junk.safetensors").write_bytes(b"not safetensors at all")
    with pytest.raises(prompts.PromptError):
        prompts.load_prompt(tmp_path / "junk.safetensors")
    with pytest.raises(prompts.PromptError, match="not found"):
        prompts.load_prompt("no-such-prompt-anywhere")


def test_list_import_export_delete(model, tmp_path, user_lib):
    src = text_prompt(model).save(tmp_path / "made" / "pets")
    dst = prompts.import_prompt(src, model=model)
    assert dst.parent == user_lib
    with pytest.raises(prompts.PromptError, match="already exists"):
        prompts.import_prompt(src, model=model)
    rows = {r["name"]: r for r in prompts.list_prompts(model=model)}
    assert rows["pets"]["compatible"] and not rows["pets"]["shipped"] and rows["pets"]["classes"] == 2
    assert prompts.load_prompt("pets", model=model).path == dst     # by name from the library
    out = prompts.export_prompt("pets", tmp_path / "out" / "shared")
    assert out.is_file() and json.loads(out.with_suffix(".json").read_text())["classes"] == ["cat", "coffee"]
    prompts.delete_prompt("pets")
    assert "pets" not in {r["name"] for r in prompts.list_prompts()}


def test_shipped_prompts_fit_the_default_model(model):
    shipped = [r for r in prompts.list_prompts(model=model) if r["shipped"]]
    assert shipped, "assets/prompts should ship a few prebuilt prompts"
    assert sum(r["bytes"] for r in shipped) < 1_000_000
    for r in shipped:
        assert r["compatible"], (f"{r['name']} was learned for another model ({r['model'].get('hash')}): after a "
                                 "model rebuild run `python -m training.prompts.ship --collection DIR`")
        prompts.load_prompt(r["path"], model=model)


def test_zero_pixel_prompt_and_zero_feature_tokens_change_nothing(model):
    p = text_prompt(model)
    imgs = [DATA / "cat.jpg", DATA / "coffee.jpg"]
    base = prompts.PromptClassifier(model, p).scores(imgs)
    S, pad = model.config.image.image_size, 16
    nb = int(prompts.border_mask(S, pad).sum())
    pix = prompts.Prompt({**p.meta, "visual": {"type": "pixel", "size": S, "pad": pad}},
                   {**p.tensors, "pixel_frame": np.zeros((3, nb), np.float16)})
    assert np.allclose(prompts.PromptClassifier(model, pix).scores(imgs), base, atol=1e-5)
    feat = prompts.Prompt({**p.meta, "visual": {"type": "feature", "tokens": 2, "hw": 49}},
                    {**p.tensors, "feature_tokens": np.zeros((2, model.config.image.feature_dim), np.float32)})
    fs = prompts.PromptClassifier(model, feat).scores(imgs)        # numpy head on ONNX features
    assert np.abs(fs - base).max() < 0.05
    assert base[0].argmax() == 0 and base[1].argmax() == 1          # cat photo -> cat, coffee photo -> coffee


def test_pixel_frame_is_added_on_the_border_only(model):
    S, pad = 224, 16
    m = prompts.border_mask(S, pad)
    frame = np.arange(3 * m.sum(), dtype=np.float32).reshape(3, -1) + 1
    img = prompts.pixel_prompt_image(frame, S, pad)
    assert (img[:, ~m] == 0).all() and (img[:, m] != 0).all()
    assert np.array_equal(img[:, m], frame)


def test_numpy_head_matches_onnx_embeddings(model):
    e, f = model.encode_image([DATA / "cat.jpg", DATA / "rocket.jpg"], return_features=True)
    h = prompts.ImageHead.of(model)(f)
    assert (np.sum(h * e, 1) > 0.99).all()


def test_inference_with_a_prompt_never_imports_torch(model, tmp_path):
    path = text_prompt(model).save(tmp_path / "p")
    code = ("import sys, dcclip_core\nfrom dcclip_core import prompts\nm = dcclip_core.load()\n"
            f"p = prompts.load_prompt({str(path)!r}, model=m)\n"
            f"r = prompts.PromptClassifier(m, p).classify([{str(DATA / 'cat.jpg')!r}])\n"
            "from training.prompts import api\n"
            f"api.classify([{str(DATA / 'cat.jpg')!r}], labels=['cat', 'dog'], model=m)\n"
            "print(r[0][0]['label'], 'torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO_DIR, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["cat", "False"]
