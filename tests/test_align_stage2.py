"""Stage-2 alignment (training/align.py): image-caption pairs in EN and ZH, EN<->ZH text pairs and class
prototypes under one symmetric InfoNCE with a learnable temperature; mixed-language batches; held-out recall;
checkpoints, resume and export. Tiny student, real photos."""
import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from conftest import photo_folder, tiny_tokenizer  # noqa: E402
from training import align as stage2  # noqa: E402

CAPTIONS = {"chelsea": ("a cat", "一只猫"), "coffee": ("a cup of coffee", "一杯咖啡"), "rocket": ("a rocket", "火箭"),
            "astronaut": ("an astronaut", "宇航员")}


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    root = tmp_path_factory.mktemp("align")
    photo_folder(root / "photos")
    with open(root / "pairs.jsonl", "w", encoding="utf-8") as f:
        for k, (en, zh) in CAPTIONS.items():
            f.write(json.dumps({"image": f"photos/{k}.jpg", "en": en, "zh": zh}, ensure_ascii=False) + "\n")
        f.write(json.dumps({"en": "a dog", "zh": "一只狗"}, ensure_ascii=False) + "\n")
    with open(root / "protos.jsonl", "w", encoding="utf-8") as f:
        for c, t in enumerate(["cat", "猫", "dog", "狗", "coffee", "咖啡"]):
            f.write(json.dumps({"text": t, "classes": [c // 2]}, ensure_ascii=False) + "\n")
    return {"root": root, "tok": tiny_tokenizer(root / "tokenizer.json")}


def settings(env, out, **kw) -> stage2.AlignSettings:
    r = env["root"]
    base = dict(student="arch:tiny-test", student_init="random", tokenizer=str(env["tok"]),
                pairs=[str(r / "pairs.jsonl")], prototypes=[str(r / "protos.jsonl")],
                heldout_pairs=[str(r / "pairs.jsonl")], steps=3, batch_size=4, log_every=1, ckpt_every=2,
                train_image="classifier", lr=1e-3, head_lr=1e-2, warmup_steps=1, out=str(out), threads=1,
                precision="fp32")
    base.update(kw)
    return stage2.AlignSettings(**base)


def test_align_sources_mix_languages_deterministically(env):
    s = settings(env, "unused", batch_size=4)
    bank, images = stage2.TextBank(), []
    src = stage2.build_sources(s, bank, images, torch.nn.functional.normalize(torch.randn(10, 15), dim=-1))
    assert len(src.it_rows) == 4 and len(images) == 4
    assert len(src.tt_rows) == 5                     # 1 text pair + the EN/ZH captions of each of the 4 photos
    assert len(src.proto_by_target) == 3 and src.targets.shape == (3, 15)
    orders = {"it": np.arange(4), "tt": np.arange(5)}
    langs = set()
    for step in range(6):
        gb = stage2.global_batch(src, s, step, 4, orders)
        again = stage2.global_batch(src, s, step, 4, orders)
        assert all(np.array_equal(a, b) for k in gb for a, b in zip(gb[k], again[k]))    # deterministic
        langs |= {"zh" if any("\u4e00" <= c <= "\u9fff" for c in bank.texts[t]) else "en" for t in gb["it"][1]}
        a, b = gb["tt"]
        assert all(bank.texts[x] != bank.texts[y] for x, y in zip(a, b))
        assert len(set(gb["proto"][1])) == len(gb["proto"][1])                   # distinct classes
    assert langs == {"en", "zh"}                                                  # batches mix EN and ZH captions


def test_align_learns_pairs_and_temperature(env, tmp_path):
    res = stage2.run_align(settings(env, tmp_path / "run", steps=30, export=str(tmp_path / "model")), progress=False)
    assert res["image_text_pairs"] == 4 and res["text_pairs"] == 5 and res["prototype_classes"] == 3
    before, after = res["heldout_before"], res["heldout_after"]
    assert set(after) == {"t2i_r1_en", "i2t_r1_en", "t2i_r1_zh", "i2t_r1_zh"}
    assert after["t2i_r1_en"] + after["t2i_r1_zh"] > before["t2i_r1_en"] + before["t2i_r1_zh"]
    rows = [json.loads(ln) for ln in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in rows if "loss" in r]
    assert losses[-1] < losses[0] and {"l_image_text", "l_text_text", "l_proto"} <= set(rows[-2])
    assert res["temperature"] != pytest.approx(0.07, abs=1e-6)                   # learnable temperature moved
    from dcclip_core.models import load_torch_model
    m = load_torch_model(tmp_path / "model")
    assert json.loads((tmp_path / "model" / "config.json").read_text())["extra"]["distill"]["tag"] == "align"
    assert m.text.align.weight.shape == (15, 32)


def test_align_resume_and_frozen_text_head_only(env, tmp_path):
    out = tmp_path / "run"
    stage2.run_align(settings(env, out, steps=2, train_text="head", train_image="none"), progress=False)
    assert json.loads((out / "last.json").read_text())["step"] == 2
    res = stage2.run_align(settings(env, out, steps=4, train_text="head", train_image="none"), progress=False)
    steps = [json.loads(ln)["step"] for ln in (out / "metrics.jsonl").read_text().splitlines()
             if "loss" in json.loads(ln)]
    assert steps == [1, 2, 3, 4] and res["steps"] == 4


def test_align_prototype_table_and_errors(env, tmp_path):
    (tmp_path / "names.json").write_text(json.dumps({"3": {"en": "cat", "zh": ["猫", "猫咪"]}}, ensure_ascii=False),
                                         encoding="utf-8")
    items = stage2.read_prototype_items([tmp_path / "names.json"])
    assert len(items) == 8 * 3 and items[0] == {"text": "a photo of a cat.", "classes": [3], "lang": "en"}
    assert any(it["text"] == "一张猫咪的照片。" for it in items)
    from training.configs import list_configs, load_config, to_dataclass
    for name in list_configs("align"):
        assert to_dataclass(stage2.AlignSettings, load_config(name), name).steps > 0
    with pytest.raises(ValueError, match="nothing to align"):
        stage2.run_align(settings(env, tmp_path / "x", pairs=[], prototypes=[], heldout_pairs=[]), progress=False)
