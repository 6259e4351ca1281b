"""Deep / shallow VPT for ViT image towers (training/prompts/vit.py): dcclip's SmallViT and a transformers
CLIPVisionModel (tiny random configs built here, no downloads), trained on real photos; only the prompt tokens
change; the prompted tower exported to ONNX (tokens as an input) matches torch; a saved deep prompt is applied
by dcclip_core.prompts.PromptClassifier with ONNX Runtime."""
from types import SimpleNamespace

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from dcclip_core.config import REPO_DIR  # noqa: E402

DEMO = REPO_DIR / "assets" / "demo"
CLASSES = {"cat": ["cat_chelsea.jpg", "squirrel.jpg"], "coffee": ["coffee.jpg", "orange.jpg"],
           "rocket": ["rocket.jpg", "motorcycle.jpg"]}
S = 32


def views(path, n=4):
    """n real views of a photo (full, crops, a flip), 32 x 32, normalised to [-1, 1] -> float32 [n, 3, S, S]."""
    from PIL import Image, ImageOps
    im = Image.open(path).convert("RGB")
    w, h = im.size
    crops = [im, im.crop((0, 0, w * 3 // 4, h * 3 // 4)), im.crop((w // 4, h // 4, w, h)), ImageOps.mirror(im)]
    out = [np.asarray(c.resize((S, S), Image.Resampling.BICUBIC), np.float32) / 127.5 - 1 for c in crops[:n]]
    return np.stack(out).transpose(0, 3, 1, 2)


@pytest.fixture(scope="module")
def photos():
    """Real photos: 3 classes x 2 photos x 4 views -> (pixels [24, 3, 32, 32], labels [24])."""
    px, y = [], []
    for k, files in enumerate(CLASSES.values()):
        for f in files:
            v = views(DEMO / f)
            px.append(v)
            y += [k] * len(v)
    return torch.from_numpy(np.concatenate(px)), torch.tensor(y)


def small_vit():
    from dcclip_core.models import SmallViT
    torch.manual_seed(0)
    return SmallViT(image_size=S, width=32, depth=3, heads=2, patch=8).eval()


def hf_clip(projection=False):
    from transformers import CLIPVisionConfig, CLIPVisionModel, CLIPVisionModelWithProjection
    torch.manual_seed(0)
    cfg = CLIPVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=3, num_attention_heads=2,
                           image_size=S, patch_size=8, projection_dim=16)
    cls = CLIPVisionModelWithProjection if projection else CLIPVisionModel
    return cls(cfg).eval()


def dcclip_vit_tower():
    """dcclip ImageTower with a ViT backbone (random, tiny): head = classifier softmax -> prototypes."""
    from dcclip_core.config import ImageConfig, JointConfig
    from dcclip_core.models import ImageTower
    torch.manual_seed(0)
    t = ImageTower(ImageConfig(tower="vit-L3-H2-P8", image_size=S, feature_dim=32, num_classes=10),
                   JointConfig(proto_dim=15))
    t.set_prototypes()
    t.seen.fill_(1.0)
    return t.eval()


def snapshot(module):
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def bit_identical(a, b):
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


# ---- the wrapper reproduces the towers -------------------------------------------------------------------

def test_wrapped_towers_match_their_own_forward_without_prompts(photos):
    from training.prompts.vit import ViTTower
    px = photos[0][:5]
    vit = small_vit()
    with torch.no_grad():
        assert torch.allclose(ViTTower.wrap(vit)(px), vit(px), atol=1e-5)
        hf = hf_clip()
        assert torch.allclose(ViTTower.wrap(hf)(px), hf(pixel_values=px).pooler_output, atol=1e-5)
        hp = hf_clip(projection=True)
        t = ViTTower.wrap(hp)
        assert torch.allclose(t.embed(t(px)), hp(pixel_values=px).image_embeds, atol=1e-5)
        tower = dcclip_vit_tower()
        emb, feats = tower(px)
        w = ViTTower.wrap(tower)
        assert torch.allclose(w(px), feats, atol=1e-5) and torch.allclose(w.embed(w(px)), emb, atol=1e-5)


def test_deep_replaces_tokens_per_layer_shallow_inserts_once():
    from training.prompts.vit import DeepPrompt, ViTTower
    tower = ViTTower.wrap(small_vit())
    deep, shallow = DeepPrompt(tower.depth, 4, 32, "deep"), DeepPrompt(tower.depth, 4, 32, "shallow")
    assert deep.tokens.shape == (3, 4, 32) and shallow.tokens.shape == (1, 4, 32)
    assert float(deep.tokens.detach().abs().max()) <= 0.0625 and list(deep.state_dict()) == ["tokens"]
    assert list(deep.prompt_tensors()) == ["vpt_tokens"]
    px = torch.randn(2, 3, S, S)
    with torch.no_grad():
        base = tower(px, deep.tokens, "deep")
        t = deep.tokens.clone()
        t[2] += 1.0                                        # the last layer's own tokens matter ...
        assert not torch.allclose(tower(px, t, "deep"), base)
        # ... and deep with the same tokens at every layer is not shallow (each layer's prompt output dropped)
        same = deep.tokens[:1].expand(3, -1, -1)
        assert not torch.allclose(tower(px, same, "deep"), tower(px, deep.tokens[:1], "shallow"))
        with pytest.raises(ValueError, match="each of the 3 layers"):
            tower(px, deep.tokens[:2], "deep")


def test_cnn_tower_is_refused_with_a_clear_message():
    from dcclip_core.config import ImageConfig, JointConfig
    from dcclip_core.models import ImageTower
    from training.prompts.vit import ViTTower
    cnn = ImageTower(ImageConfig(tower="tiny-cnn", image_size=S, feature_dim=16, num_classes=4),
                     JointConfig(proto_dim=3))
    with pytest.raises(TypeError, match="--visual pixel or --visual feature"):
        ViTTower.wrap(cnn)


# ---- training changes only the prompt -------------------------------------------------------------------

@pytest.mark.parametrize("arch,mode", [("smallvit", "deep"), ("smallvit", "shallow"), ("hf-clip", "deep"),
                                       ("hf-clip", "shallow"), ("dcclip", "deep")])
def test_training_reduces_the_loss_and_changes_only_the_tokens(photos, arch, mode):
    from training.prompts.vit import DeepPrompt, ViTTower, train_tokens
    torch.set_num_threads(1)
    module = {"smallvit": small_vit, "hf-clip": hf_clip, "dcclip": dcclip_vit_tower}[arch]()
    tower = ViTTower.wrap(module)
    px, y = photos
    with torch.no_grad():                                 # class embeddings: class means of the frozen tower
        e = torch.nn.functional.normalize(tower.embed(tower(px)), dim=-1)
        W = torch.stack([e[y == k].mean(0) for k in range(3)])
    before = snapshot(module)
    vp = DeepPrompt(tower.depth, 4, tower.width, mode, seed=0)
    t0 = vp.tokens.detach().clone()
    steps = []
    losses = train_tokens(tower, vp, px, y, W, steps=12, lr=0.01, batch_size=len(y), logit_scale=30.0,
                          progress=lambda s, n, loss: steps.append(s))
    assert steps == list(range(1, 13))
    assert np.mean(losses[-3:]) < 0.985 * losses[0], losses          # deterministic: 1 thread, fixed seeds
    assert bit_identical(before, snapshot(module)), "the frozen encoder changed"
    assert not torch.equal(vp.tokens.detach(), t0)
    assert all(not p.requires_grad for p in module.parameters())


# ---- ONNX: the prompted tower with tokens as an input ------------------------------------------------------

@pytest.mark.parametrize("arch", ["dcclip", "hf-clip"])
@pytest.mark.parametrize("mode", ["deep", "shallow"])
def test_onnx_prompted_tower_matches_torch(photos, tmp_path, arch, mode):
    import onnxruntime as ort
    from training.prompts.vit import DeepPrompt, PromptedTower, ViTTower, export_prompted_onnx
    tower = ViTTower.wrap(dcclip_vit_tower() if arch == "dcclip" else hf_clip(projection=True))
    path = export_prompted_onnx(tower, mode, tmp_path / f"{mode}.onnx", n_tokens=4)
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    px = photos[0][:3]
    for T in (4, 7):                                       # dynamic token count (and batch)
        tok = DeepPrompt(tower.depth, T, tower.width, mode, seed=T).tokens.detach()
        with torch.no_grad():
            ref_e, ref_f = PromptedTower(tower, mode)(px, tok)
        e, f = sess.run(["embedding", "features"], {"pixels": px.numpy(), "tokens": tok.numpy()})
        assert e.shape == tuple(ref_e.shape) and f.shape == tuple(ref_f.shape)
        assert np.abs(e - ref_e.numpy()).max() < 1e-4 and np.abs(f - ref_f.numpy()).max() < 1e-3
        cos = (e * ref_e.numpy()).sum(1) / np.linalg.norm(e, axis=1)
        assert (cos > 0.9999).all()


def test_saved_deep_prompt_classifies_with_onnx_runtime(photos, tmp_path, monkeypatch):
    """A deep prompt saved with only its tokens is applied by PromptClassifier through the cached ONNX graph."""
    from dcclip_core import prompts
    from training.prompts.vit import DeepPrompt, PromptedTower, ViTTower, ensure_model_graph, train_tokens
    monkeypatch.setenv("DCCLIP_CACHE", str(tmp_path / "cache"))
    module = dcclip_vit_tower()
    tower = ViTTower.wrap(module)
    px, y = photos
    with torch.no_grad():
        W = torch.stack([tower.embed(tower(px[y == k])).mean(0) for k in range(3)])
        W = torch.nn.functional.normalize(W, dim=-1)
    vp = DeepPrompt(tower.depth, 4, tower.width, "deep")
    train_tokens(tower, vp, px, y, W, steps=3, batch_size=len(y))
    # a stand-in for the runtime model: what PromptClassifier uses (hash, info, preprocess, threads)
    model = SimpleNamespace(hash="tinyvit0000000001", info={"id": "tiny-vit"}, threads=1, path=tmp_path,
                            dim=W.shape[1], preprocess=lambda im: im)
    with pytest.raises(prompts.PromptError, match="python -m training.prompts.vit export"):
        prompts.PromptClassifier(model, prompts.Prompt({"visual": {"type": "deep"}, "classes": ["a"]},
                                           {"vpt_tokens": np.zeros((3, 4, 32), np.float32)}), check=False)
    graph = ensure_model_graph(model, "deep", tower)
    assert graph == prompts.vpt_graph_path(model, "deep") and graph.is_file()
    meta = {"method": "vpt", "classes": list(CLASSES), "labels": {"en": list(CLASSES), "zh": list(CLASSES)},
            "visual": {"type": "deep", "tokens": 4, "layers": 3, "width": 32}, "logit_scale": 100.0,
            "model": {"id": "tiny-vit", "hash": model.hash}}
    path = prompts.Prompt(meta, {"class_embeds": W.numpy(), **vp.prompt_tensors()}).save(tmp_path / "deep")
    loaded = prompts.load_prompt(path)
    assert set(loaded.tensors) == {"class_embeds", "vpt_tokens"} and loaded.visual == "deep"
    clf = prompts.PromptClassifier(model, loaded, check=False)
    images = list(px[:6].numpy())
    emb, feat = clf.encode(images)
    with torch.no_grad():
        ref, _ = PromptedTower(tower, "deep")(px[:6], vp.tokens)
    assert np.abs(emb - ref.numpy()).max() < 1e-4
    S_ = clf.scores(images)
    assert S_.shape == (6, 3) and np.allclose(S_.sum(1), 1, atol=1e-5)


def test_learn_vpt_deep_end_to_end_through_the_fewshot_api(tmp_path, monkeypatch):
    """methods.learn("vpt", visual="deep") on a dcclip model with a ViT tower (tiny, random, stood in for the
    runtime model): tokens only in the prompt, graph exported once, evaluation through ONNX Runtime."""
    from PIL import Image

    from dcclip_core import prompts
    from training.prompts.methods import (FeatureSplit, FewShotConfig, FewShotData, LearningEnv, evaluate,
                                          learn)
    monkeypatch.setenv("DCCLIP_CACHE", str(tmp_path / "cache"))
    tower = dcclip_vit_tower()
    before = snapshot(tower)

    def preprocess(path):
        im = Image.open(path).convert("RGB").resize((S, S), Image.Resampling.BICUBIC)
        return np.asarray(im, np.float32).transpose(2, 0, 1) / 127.5 - 1

    info = {"id": "tiny-vit", "hash": "tinyvit0000000002", "dims": 16, "feature_dim": 32, "image_size": S}
    info["dim"] = 16                                        # the same, under the key older runtimes used
    model = SimpleNamespace(hash="tinyvit0000000002", threads=1, path=tmp_path, dim=16, preprocess=preprocess,
                            config=SimpleNamespace(image=SimpleNamespace(image_size=S, feature_dim=32)), info=info)

    class ViTEnv(LearningEnv):
        def __init__(self):
            super().__init__(model=model, image_tower=tower)

        def zeroshot(self, names, lang):                    # class embeddings: class means of the frozen tower
            with torch.no_grad():
                e = torch.stack([tower(torch.from_numpy(np.stack([preprocess(DEMO / f) for f in files])))[0].mean(0)
                                 for files in CLASSES.values()])
            return torch.nn.functional.normalize(e, dim=-1).numpy()

    paths = [DEMO / f for files in CLASSES.values() for f in files]
    y = np.repeat(np.arange(3), 2)
    split = FeatureSplit(np.zeros((6, 16), np.float32), np.zeros((6, 32), np.float32), y, paths)
    data = FewShotData("photos", list(CLASSES), {"en": list(CLASSES), "zh": ["猫", "咖啡", "火箭"]}, split, split,
                       split, shots=2, seed=0)
    calls = []
    cfg = FewShotConfig(visual="deep", vpt_steps=4, vpt_batch=6, vit_tokens=3, vit_lr=0.01)
    prompt, info = learn("vpt", data, ViTEnv(), cfg, progress=lambda s, n, loss: calls.append(s))
    assert calls == [1, 2, 3, 4] and prompt.visual == "deep" and prompt.meta["visual"]["layers"] == 3
    assert set(prompt.tensors) == {"class_embeds", "vpt_tokens"} and prompt.tensors["vpt_tokens"].shape == (3, 3, 32)
    assert bit_identical(before, snapshot(tower))
    assert prompts.vpt_graph_path(model, "deep").is_file()
    acc = evaluate(prompt, data.test, ViTEnv())
    assert 0 <= acc <= 1 and prompt.meta["val_accuracy"] == pytest.approx(acc)
    shallow, _ = learn("vpt", data, ViTEnv(), cfg.replace(visual="shallow"))
    assert shallow.tensors["vpt_tokens"].shape == (1, 3, 32) and prompts.vpt_graph_path(model, "shallow").is_file()
