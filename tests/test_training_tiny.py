"""One real training step of each DC-CLIP stage on a tiny random config (seconds on CPU)."""
import numpy as np
import pytest

torch = pytest.importorskip("torch")

from dcclip_core.config import architecture
from dcclip_core.models import DualEncoder
from training.align import AlignConfig, build_targets, choose_gamma, joint_protos, joint_text, train_alignment
from training.data import FeatureCache
from training.distill import DistillSettings, distill_text, init_text_student_from_teacher
from training.students import encode_pooled


def fake_tokenize(texts, vocab=300, max_len=16):
    """Deterministic char-hash ids (tests only): [<s>, chars..., </s>] padded with 1."""
    rows = [[0] + [4 + (ord(c) % (vocab - 4)) for c in t[: max_len - 2]] + [2] for t in texts]
    L = max(len(r) for r in rows)
    ids = np.ones((len(rows), L), np.int64)
    mask = np.zeros((len(rows), L), np.int64)
    for i, r in enumerate(rows):
        ids[i, : len(r)] = r
        mask[i, : len(r)] = 1
    return ids, mask


def tiny_teacher_weights(vocab=500, W=32, mlp=64, layers=3):
    g = torch.Generator().manual_seed(0)
    r = lambda *s: torch.randn(*s, generator=g) * 0.05
    tw = {"word_embeddings": r(vocab, W), "token_type_embeddings": r(1, W), "position_embeddings": r(40, W),
          "embeddings_layernorm.weight": torch.ones(W), "embeddings_layernorm.bias": torch.zeros(W)}
    shapes = {"query": (W, W), "key": (W, W), "value": (W, W), "attention_output": (W, W),
              "intermediate": (mlp, W), "output": (W, mlp)}
    for t in range(layers):
        for name, (o, i) in shapes.items():
            tw[f"layers.{t}.{name}.weight"], tw[f"layers.{t}.{name}.bias"] = r(o, i), r(o)
        for name in ("attention_layernorm", "output_layernorm"):
            tw[f"layers.{t}.{name}.weight"], tw[f"layers.{t}.{name}.bias"] = torch.ones(W), torch.zeros(W)
    return tw


def test_distill_stage1_one_step_and_resume(tmp_path):
    cfg = architecture("tiny-test")
    model = DualEncoder(cfg)
    tw = tiny_teacher_weights()
    kept = np.arange(cfg.text.vocab_size) + 100
    init_text_student_from_teacher(model.text, tw, kept, cfg.text.teacher_layers)
    assert torch.allclose(model.text.layers[1].q.weight, tw["layers.1.query.weight"])
    assert torch.allclose(model.text.tok.weight[5], tw["word_embeddings"][105] + tw["token_type_embeddings"][0])

    texts = [f"一只猫 cat {i}" for i in range(40)] + [f"a photo of a dog {i}" for i in range(40)]
    rng = np.random.default_rng(0)

    def teacher_features(idx):                       # final (b, d), hidden layers 1 and 2 (b, d) of texts[idx]
        f = rng.standard_normal((len(idx), 32)).astype(np.float32)
        h = rng.standard_normal((len(idx), 3, 32)).astype(np.float32)
        return {"final": f / np.linalg.norm(f, axis=1, keepdims=True), "layer1": h[:, 1], "layer2": h[:, 2]}

    cache = FeatureCache.build(tmp_path / "cache", len(texts), teacher_features, key="e5", chunk=32, progress=False)
    assert cache.fields["final"].shape == (80, 32) and cache.fields["layer2"].dtype == np.float16
    again = FeatureCache.build(tmp_path / "cache", len(texts), teacher_features, key="e5", progress=False)
    assert all(np.array_equal(again.fields[k], cache.fields[k]) for k in cache.fields)   # complete cache is reused

    before = {k: v.clone() for k, v in model.text.state_dict().items()}
    s = DistillSettings(modality="text", layers=[[1, 1], [2, 2]], final_loss="cosine", rms_norm=False,
                        hidden_weight=0.1, adapter_init="identity", adapter_lr_mult=1.0, grad_clip=1.0,
                        precision="fp32", epochs=1, batch_size=16, max_steps=2, warmup_steps=1, log_every=1)
    res = distill_text(model.text, fake_tokenize, texts, cache, s, out_dir=tmp_path / "s1",
                       val_idx=np.arange(8), progress=False)
    assert res["steps"] == 2 and -1 <= res["val_cos"] <= 1
    assert any(not torch.equal(before[k], v) for k, v in model.text.state_dict().items())
    assert (tmp_path / "s1" / "last.safetensors").is_file()
    assert (tmp_path / "s1" / "metrics.jsonl").read_text().count("\n") >= 2
    # resume: a finished run restarts at its last step and trains no further
    res2 = distill_text(model.text, fake_tokenize, texts, cache, s, out_dir=tmp_path / "s1", progress=False)
    assert res2["steps"] == 2


def test_align_stage2_steps_and_calibration():
    cfg = architecture("tiny-test")
    model = DualEncoder(cfg).eval()
    model.image.set_prototypes()
    protos = model.image.protos                                          # [10, 15]
    assert torch.allclose(protos.norm(dim=-1), torch.ones(10), atol=1e-5)
    items = [{"text": f"class {c} photo {j}", "classes": [c]} for c in range(8) for j in range(3)]
    items += [{"text": "a group", "classes": [0, 1, 2]}]
    item_target, targets, keys = build_targets(items, protos)
    assert len(keys) == 9 and targets.shape == (9, 15)
    feats = encode_pooled(model.text, fake_tokenize, [it["text"] for it in items])     # [25, 32]
    head = torch.nn.Linear(32, 15)
    w0 = head.weight.clone()
    res = train_alignment(head, lambda idx: feats[torch.as_tensor(idx)], item_target, targets,
                          AlignConfig(steps=3, batch_size=8))
    assert res["steps"] == 3 and np.isfinite(res["final_loss"]) and not torch.equal(w0, head.weight)

    seen_classes = np.arange(8)
    q_class = np.array([it["classes"][0] for it in items[:-1]])
    cal = choose_gamma(lambda: torch.nn.Linear(32, 15), lambda sub: (lambda idx: feats[torch.as_tensor(sub)][torch.as_tensor(idx)]),
                       [tuple(it["classes"]) for it in items], item_target, targets, seen_classes,
                       feats[:-1], q_class, protos, eps=0.25, cfg=AlignConfig(steps=2, batch_size=4), n_val=2,
                       grid=np.array([0.0, 0.1]))
    assert cal["gamma"] in (0.0, 0.1) and len(cal["grid"]) == 2

    # the calibration coordinate implements "cosine minus gamma x seen-mass" as an inner product
    seen = torch.zeros(10)
    seen[:8] = 1
    P = joint_protos(protos, seen, 0.25)
    g = torch.randn(4, 15)
    s0, s1 = joint_text(g, 0.0, 0.25) @ P.T, joint_text(g, 0.2, 0.25) @ P.T
    assert torch.allclose(P.norm(dim=-1), torch.ones(10), atol=1e-5)
    assert (s1[:, :8] < s0[:, :8] + 1e-6).all()          # seen prototypes are penalised relative to unseen
    model.set_gamma(0.2)
    e = model.text(*map(torch.from_numpy, fake_tokenize(["x", "一只猫"])))
    assert e.shape == (2, 16) and torch.allclose(e.norm(dim=-1), torch.ones(2), atol=1e-5)


def test_build_default_caches_teacher_alignment_features(tmp_path):
    """Stage 2 of build-default encodes ~30k texts with the e5 teacher; a resumed build reuses them."""
    from training.build_default import encode_cached

    class FakeTeacher:
        calls = 0

        def encode(self, texts):
            FakeTeacher.calls += 1
            return np.array([[len(t), 1.0] for t in texts], np.float32)

    t = FakeTeacher()
    a = encode_cached(t, ["猫", "a cat"], tmp_path / "items")
    b = encode_cached(t, ["猫", "a cat"], tmp_path / "items")
    assert FakeTeacher.calls == 1 and np.array_equal(a, b) and a.shape == (2, 2)
    encode_cached(t, ["狗"], tmp_path / "items")                               # different texts: recomputed
    assert FakeTeacher.calls == 2
