"""Few-shot prompt learning on the real default model, on tiny ImageFolder tasks made from sklearn digits:
splits, CoOp internals, every method end-to-end (few steps), MVLPT source/target/groups, API, CLI contract."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from dcclip_core.config import MODELS_DIR, REPO_DIR

DEFAULT = MODELS_DIR / "default"
pytestmark = pytest.mark.skipif(not (DEFAULT / "config.json").is_file(), reason="default model not built")
torch = pytest.importorskip("torch")

from training.datasets import DatasetError  # noqa: E402
from training.prompts.data import fewshot_split, load_task, val_per_class  # noqa: E402
from training.prompts.methods import (FewShotConfig, LearningEnv, evaluate, fit_group, learn,  # noqa: E402
                                      prepare, train_source)

NAMES = ["zero", "one", "two", "three", "four"]
ZH = ["零", "一", "二", "三", "四"]


def make_digits_task(root, classes=(0, 1, 2), n_train=10, n_test=4, offset=0, name=None):
    """A tiny real ImageFolder task: sklearn digits upscaled to 32x32 PNGs."""
    from PIL import Image
    from sklearn.datasets import load_digits
    d = load_digits()
    for c in classes:
        ims = d.images[d.target == c][offset:offset + n_train + n_test]
        for i, a in enumerate(ims):
            part = "train" if i < n_train else "test"
            (root / part / str(c)).mkdir(parents=True, exist_ok=True)
            im = Image.fromarray((a * 15.9).astype(np.uint8)).resize((32, 32), Image.Resampling.BICUBIC)
            im.save(root / part / str(c) / f"{i:03d}.png")
    (root / "classnames.json").write_text(json.dumps({str(c): {"en": NAMES[c], "zh": ZH[c]} for c in classes},
                                                     ensure_ascii=False))
    if name:
        (root / "task.json").write_text(json.dumps({"name": name, "role": "source"}))
    return root


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    import dcclip_core
    from training.prompts.features import EmbeddingCache
    m = dcclip_core.load()
    return LearningEnv(model=m, cache=EmbeddingCache(m, root=tmp_path_factory.mktemp("featcache")))


@pytest.fixture(scope="module")
def task_dir(tmp_path_factory):
    return make_digits_task(tmp_path_factory.mktemp("digits3"))


@pytest.fixture(scope="module")
def data(env, task_dir):
    return prepare(load_task(task_dir), env, shots=4, seed=0)


FAST = FewShotConfig(steps=6, eval_every=3, tip_steps=5, vpt_steps=1, vpt_batch=2)


# ---- data --------------------------------------------------------------------------------------------------

def test_fewshot_split_is_balanced_disjoint_and_deterministic():
    y = np.repeat(np.arange(4), [10, 12, 9, 30])
    tr, va = fewshot_split(y, 5, seed=3)
    assert np.bincount(y[tr]).tolist() == [5, 5, 5, 5]
    assert np.bincount(y[va]).tolist() == [val_per_class(5)] * 4 and not set(tr) & set(va)
    tr2, va2 = fewshot_split(y, 5, seed=3)
    assert np.array_equal(tr, tr2) and np.array_equal(va, va2)
    assert not np.array_equal(fewshot_split(y, 5, seed=4)[0], tr)
    assert [val_per_class(k) for k in (1, 5, 16)] == [1, 1, 4]
    tr, va = fewshot_split(np.repeat(np.arange(2), [3, 20]), 16, seed=0)   # a small class: all to the shots
    assert np.bincount(np.repeat(np.arange(2), [3, 20])[tr]).tolist() == [3, 16] and len(va) == 0


def test_load_task_reads_names_and_rejects_bad_dirs(task_dir, tmp_path):
    t = load_task(task_dir)
    assert t.classes == ["0", "1", "2"] and t.class_names("zh") == ["零", "一", "二"]
    assert len(t.train_paths) == 30 and len(t.test_paths) == 12 and t.test_labels.tolist().count(2) == 4
    with pytest.raises(DatasetError, match="ImageFolder"):
        load_task(tmp_path)
    with pytest.raises(DatasetError, match="not found"):
        load_task(tmp_path / "nope")


def test_task_builder_makes_imagefolders_and_keeps_heldout_out_of_sources(tmp_path):
    from training.prompts import tasks
    from training.prompts.data import load_collection
    infos = tasks.build(tmp_path, n_train=3, n_test=2, only=["sk-digits", "faces"], log=lambda *a: None)
    assert {i["name"] for i in infos} == {"sk-digits", "faces"}
    ts = load_collection(tmp_path)
    sk = [t for t in ts if t.name == "sk-digits"][0]
    assert sk.num_classes == 10 and len(sk.train_paths) == 30 and sk.class_names("zh")[7] == "七"
    fake = type("T", (), {"name": "cv-digits", "role": "heldout"})
    assert [t.name for t in tasks.source_tasks(ts + [fake])] == [t.name for t in ts]


def make_elevater(root, digits_dir, fmt="iris", zipped=True):
    """The ImageFolder digits task re-packed as ELEVATER: labels.txt, a dataset-info JSON, train/test indexes
    (iris ``train.zip@train/x.png 2`` lines or coco JSON), images in stored zips or extracted beside them."""
    import zipfile
    root.mkdir(parents=True, exist_ok=True)
    classes = sorted(d.name for d in (digits_dir / "test").iterdir())
    (root / "labels.txt").write_text("\n".join(f"digit {c}" for c in classes) + "\n")
    info = {"name": "toy-digits", "version": 1, "type": "classification_multiclass", "format": fmt,
            "labelmap": "labels.txt", "num_classes": len(classes)}
    for split in ("train", "test"):
        files = [(k, p) for k, c in enumerate(classes) for p in sorted((digits_dir / split / c).iterdir())]
        members = [f"{split}/{k}_{p.name}" for k, p in files]
        if zipped:
            with zipfile.ZipFile(root / f"{split}.zip", "w", compression=zipfile.ZIP_STORED) as z:
                for (k, p), m in zip(files, members):
                    z.write(p, m)
        else:
            for (k, p), m in zip(files, members):
                (root / m).parent.mkdir(parents=True, exist_ok=True)
                (root / m).write_bytes(p.read_bytes())
        if fmt == "iris":
            (root / f"{split}.txt").write_text("".join(f"{split}.zip@{m} {k}\n" for (k, _), m in zip(files, members)))
            info[split] = {"index_path": f"{split}.txt", "files_for_local_usage": [f"{split}.zip"]}
        else:
            coco = {"images": [{"id": i + 1, "file_name": m, "zip_file": f"{split}.zip"}
                               for i, m in enumerate(members)],
                    "annotations": [{"id": i + 1, "image_id": i + 1, "category_id": k + 1}
                                    for i, (k, _) in enumerate(files)],
                    "categories": [{"id": k + 1, "name": f"digit {c}"} for k, c in enumerate(classes)]}
            (root / f"{split}.json").write_text(json.dumps(coco))
            info[split] = {"index_path": f"{split}.json"}
    (root / "dataset_info.json").write_text(json.dumps(info))
    (root / "classnames.json").write_text(json.dumps({f"digit {c}": {"en": NAMES[int(c)], "zh": ZH[int(c)]}
                                                      for c in classes}, ensure_ascii=False))
    return root


def test_elevater_layouts_read_as_tasks_and_extract_only_what_a_split_needs(task_dir, tmp_path, monkeypatch):
    from training.prompts.data import materialise
    monkeypatch.setenv("DCCLIP_CACHE", str(tmp_path / "cache"))
    ref = load_task(task_dir)
    for fmt, zipped in (("iris", True), ("coco", True), ("iris", False), ("coco", False)):
        t = load_task(make_elevater(tmp_path / f"{fmt}-{zipped}", task_dir, fmt, zipped))
        assert t.name == "toy-digits" and t.classes == ["digit 0", "digit 1", "digit 2"], (fmt, zipped)
        assert t.class_names("zh") == ["零", "一", "二"] and t.class_names("en") == ["zero", "one", "two"]
        assert t.train_labels.tolist() == ref.train_labels.tolist()
        assert t.test_labels.tolist() == ref.test_labels.tolist()
        assert isinstance(t.train_paths[0], tuple) == zipped
        got = materialise(t.train_paths[:2])
        assert [p.read_bytes() for p in got] == [p.read_bytes() for p in ref.train_paths[:2]]
    extracted = list((tmp_path / "cache" / "elevater").rglob("*.png"))
    assert len(extracted) == 4                         # 2 members per zipped layout, nothing else unpacked
    (tmp_path / "multi").mkdir()
    (tmp_path / "multi" / "test.txt").write_text(f"{ref.test_paths[0]} 0,1\n")
    with pytest.raises(DatasetError, match="multilabel"):
        load_task(tmp_path / "multi")


@pytest.mark.parametrize("fmt", ["iris", "coco"])
def test_cli_contract_on_an_elevater_dataset(task_dir, tmp_path, fmt):
    root = make_elevater(tmp_path / "elevater", task_dir, fmt, zipped=(fmt == "iris"))
    env = dict(os.environ, DCCLIP_CACHE=str(tmp_path / "cache"))

    def run(dataset, method):
        r = subprocess.run([sys.executable, "-m", "training", "fewshot", "--dataset", str(dataset), "--method", method,
                            "--shots", "3", "--seed", "0", "--json"], capture_output=True, text=True, cwd=REPO_DIR,
                           env=env, timeout=300)
        assert r.returncode == 0, r.stderr
        return json.loads(r.stdout.strip().splitlines()[-1])

    for method in ("linear-probe", "zeroshot"):
        res = run(root, method)
        assert res["method"] == method and res["shots"] == 3 and res["dataset"] == "toy-digits"
        assert isinstance(res["accuracy"], float) and 0 <= res["accuracy"] <= 1 and isinstance(res["train_s"], float)
        assert res["test_images"] == 12 and res["classes"] == 3
        # the same images, labels and split as the ImageFolder it was packed from: the same accuracy
        assert res["accuracy"] == pytest.approx(run(task_dir, method)["accuracy"], abs=1e-6)


# ---- CoOp internals ----------------------------------------------------------------------------------------

def test_coop_with_template_context_reproduces_the_text_encoder(env):
    from training.prompts.text import CoOp, PromptSequences, context_from_text
    enc = env.text_encoder()
    tok = env.model.tokenizer
    names = {"en": ["seven", "brick wall"], "zh": ["七", "砖墙"]}
    ctx = context_from_text(tok, enc.token_embedding, "a photo of a")
    seqs = PromptSequences(tok, enc.token_embedding, names, len(ctx), "end", ("en",))
    coop = CoOp(init=ctx)
    with torch.no_grad():
        W = coop(enc, seqs)
        ids, mask = tok([f"a photo of a {n}." for n in names["en"]])
        ref = enc.student(torch.as_tensor(ids), torch.as_tensor(mask))
    assert torch.allclose(W, ref, atol=1e-5)
    onnx = env.model.encode_text([f"a photo of a {n}." for n in names["en"]])
    assert (np.sum(W.numpy() * onnx, 1) > 0.97).all()
    # only the context is a parameter / saved; frozen token embeddings are non-persistent buffers
    assert list(coop.state_dict()) == ["ctx"] and list(seqs.state_dict()) == []
    assert [n for n, p in coop.named_parameters()] == ["ctx"]


def test_class_token_positions(env):
    from training.prompts.text import PromptSequences
    enc = env.text_encoder()
    tok = env.model.tokenizer
    names = {"en": ["seven"], "zh": ["七"]}
    for pos, expect in (("end", [-1, 0, 1, 2, 3, -1, -1, -1]), ("middle", [-1, 0, 1, -1, 2, 3, -1, -1]),
                        ("front", [-1, -1, 0, 1, 2, 3, -1, -1])):
        s = PromptSequences(tok, enc.token_embedding, names, 4, pos, ("en",))
        assert s.ctx_index[0].tolist() == expect, pos
    both = PromptSequences(tok, enc.token_embedding, names, 4, "end", ("en", "zh"))
    assert both.base.shape[0] == 2 and both.seq_class.tolist() == [0, 0]


def test_random_init_is_n002_and_nonstrict_load_reinitialises_other_shapes():
    from training.prompts.text import CoOp, load_nonstrict
    c = CoOp(n_ctx=16, width=384, seed=0)
    assert c.ctx.shape == (16, 384) and abs(float(c.ctx.detach().std()) - 0.02) < 0.002
    before = c.ctx.detach().clone()
    info = load_nonstrict(c, {"ctx": torch.ones(8, 384), "other": torch.ones(2)})
    assert info == {"loaded": [], "reinitialised": ["ctx"], "ignored": ["other"]}
    assert torch.equal(c.ctx, before)
    load_nonstrict(c, {"ctx": torch.ones(16, 384)})
    assert torch.equal(c.ctx, torch.ones(16, 384))


# ---- methods end-to-end ------------------------------------------------------------------------------------

@pytest.mark.parametrize("method", ["zeroshot", "tip-adapter", "tip-adapter-f", "linear-probe", "coop", "upt"])
def test_every_method_learns_a_usable_prompt(method, env, data):
    steps = []
    prompt, info = learn(method, data, env, FAST, progress=lambda s, n, loss: steps.append((s, loss)))
    acc = evaluate(prompt, data.test, env)
    assert 0.0 <= acc <= 1.0 and info["train_s"] >= 0
    assert prompt.meta["method"] == method and prompt.classes == ["0", "1", "2"]
    if method in ("coop", "upt", "tip-adapter-f"):
        assert steps and all(np.isfinite(loss) for _, loss in steps)
    if method in ("tip-adapter", "tip-adapter-f", "linear-probe"):
        assert acc >= 0.75, f"{method} on three easy digit classes: {acc}"
    if method == "coop":
        assert "ctx" in prompt.tensors and prompt.tensors["class_embeds"].shape == (3, env.model.dim)


def test_saved_prompt_scores_like_training_evaluation(env, data, tmp_path):
    from dcclip_core import prompts
    prompt, _ = learn("upt", data, env, FAST)
    path = prompt.save(tmp_path / "upt")
    loaded = prompts.load_prompt(path, model=env.model)
    clf = prompts.PromptClassifier(env.model, loaded)
    S = clf.scores(data.test.paths)
    assert S.shape == (len(data.test), 3) and np.allclose(S.sum(1), 1, atol=1e-5)
    assert abs(float((S.argmax(1) == data.test.y).mean()) - evaluate(prompt, data.test, env)) < 1e-9


def test_deep_vpt_on_the_cnn_model_is_refused_clearly(env, data):
    with pytest.raises(TypeError, match="needs a ViT image tower"):
        learn("vpt", data, env, FAST.replace(visual="deep"))


def test_cli_deep_vpt_on_the_cnn_model_exits_2(task_dir, tmp_path, capsys, monkeypatch):
    from training.__main__ import main
    monkeypatch.setenv("DCCLIP_CACHE", str(tmp_path / "cache"))
    rc = main(["fewshot", "--dataset", str(task_dir), "--method", "vpt", "--visual", "deep", "--shots", "2",
               "--json", "--quiet"])
    assert rc == 2 and "use --visual pixel or --visual feature" in capsys.readouterr().err


def test_vpt_feature_and_pixel(env, data):
    p, _ = learn("vpt", data, env, FAST.replace(visual="feature"))
    assert p.visual == "feature" and p.tensors["feature_tokens"].shape == (4, 1280)
    p, info = learn("vpt", data, env, FAST.replace(visual="pixel", pad=8))
    assert p.visual == "pixel" and p.tensors["pixel_frame"].shape == (3, 224 * 224 - 208 * 208)
    assert np.abs(p.tensors["pixel_frame"]).max() > 0                      # one step moved the frame
    assert 0 <= evaluate(p, data.test, env) <= 1                           # re-encoded through ONNX


def test_pixel_vpt_cheaper_options_keep_the_full_size_frame(env, data):
    p, info = learn("vpt", data, env, FAST.replace(visual="pixel", pad=8, vpt_train_size=112, vpt_steps=2))
    assert p.tensors["pixel_frame"].shape == (3, 224 * 224 - 208 * 208) and p.meta["visual"]["size"] == 224
    assert np.abs(p.tensors["pixel_frame"]).max() > 0 and info["steps_run"] == 2


def test_train_loop_stops_early_when_the_loss_stalls():
    from training.prompts.methods import train_loop
    w = torch.nn.Parameter(torch.tensor([3.0]))
    seen = []
    res = train_loop([w], lambda idx: (w - 1.0).abs().sum().clamp(min=0.5), 4, 200, 0.5, FAST, None,
                     lambda: {"w": w.detach().clone()}, lambda s, n, loss: seen.append(s), patience=3)
    assert res["history"][-1]["stopped_early"] and res["history"][-1]["step"] < 200
    assert seen[-1] == 200                                  # progress reports the end
    full = train_loop([torch.nn.Parameter(torch.tensor([3.0]))], lambda idx: torch.tensor(1.0, requires_grad=True),
                      4, 5, 0.1, FAST, None, dict)
    assert full["history"] == []                             # patience 0: every step runs


def test_mvlpt_source_target_and_group(env, tmp_path, data):
    a = prepare(load_task(make_digits_task(tmp_path / "a", (0, 1, 2), 6, 2, offset=20, name="src-a")), env, 4, 0)
    b = prepare(load_task(make_digits_task(tmp_path / "b", (2, 3, 4), 6, 2, offset=40, name="src-b")), env, 4, 0)
    src, info = train_source([a, b], env, FAST, seeds=(0, 1))
    assert src.meta["method"] == "mvlpt-source" and src.meta["tasks"] == ["src-a", "src-b"]
    assert src.classes == ["zero", "one", "two", "three", "four"]          # union, deduplicated by name
    assert src.tensors["ctx"].shape[0] == 16 and len(info["per_seed"]) == 2
    with pytest.raises(ValueError, match="held-out"):
        train_source([type(a)(**{**a.__dict__, "name": "cv-digits"})], env, FAST, seeds=(0,))
    # target init from the source: starts exactly at the averaged source context
    p0, _ = learn("mvlpt", data, env, FAST.replace(steps=0), source=src)
    assert np.allclose(p0.tensors["ctx"], src.tensors["ctx"], atol=1e-6)
    p, _ = learn("mvlpt", data, env, FAST, source=src)
    assert p.meta["source"]["tasks"] == ["src-a", "src-b"] and 0 <= evaluate(p, data.test, env) <= 1
    # a template-init target (4 vectors) cannot take the 16-vector source: re-initialised, still works
    p, _ = learn("mvlpt", data, env, FAST.replace(ctx_init="a photo of a"), source=src)
    assert p.tensors["ctx"].shape == (4, 384)
    # multitask group: one shared context, class embeddings sliced per task
    prompts, _ = fit_group([data, b], env, FAST)
    assert [q.classes for q in prompts] == [["0", "1", "2"], ["2", "3", "4"]]
    assert np.allclose(prompts[0].tensors["ctx"], prompts[1].tensors["ctx"])
    assert np.allclose(prompts[0].tensors["class_embeds"][2], prompts[1].tensors["class_embeds"][0])


# ---- API and CLI -------------------------------------------------------------------------------------------

def test_api_learn_and_classify(env, data):
    from training.prompts import api
    ex = {"zero": data.train.paths[:4], "one": data.train.paths[4:8]}
    calls = []
    p = api.learn_prompt(ex, "coop", names={"zero": {"en": "zero", "zh": "零"}}, model=env.model,
                         config=FAST, progress=lambda s, n, loss: calls.append((s, n, loss)))
    assert calls and calls[-1][0] == calls[-1][1] == FAST.steps
    assert p.labels("zh") == ["零", "one"] and p.meta["examples"] == {"zero": 4, "one": 4}
    res = api.classify(data.test.paths[:2], prompt=p, model=env.model, lang="zh")
    assert len(res) == 2 and {r["label"] for r in res[0]} == {"零", "one"}
    assert abs(sum(r["score"] for r in res[0]) - 1) < 1e-5
    S, labels = api.scores(data.test.paths[:3], labels=["zero", "one", "two"], model=env.model)
    assert S.shape == (3, 3) and labels == ["zero", "one", "two"]
    from PIL import Image
    p2 = api.learn_prompt({"a": [Image.open(x) for x in ex["zero"]], "b": [Image.open(x) for x in ex["one"]]},
                          "tip-adapter", model=env.model)
    assert api.classify([ex["zero"][0]], prompt=p2, model=env.model)[0][0]["label"] == "a"


def test_cli_contract(task_dir, tmp_path):
    out = tmp_path / "p.safetensors"
    env = dict(os.environ, DCCLIP_CACHE=str(tmp_path / "cache"))
    r = subprocess.run([sys.executable, "-m", "training", "fewshot", "--dataset", str(task_dir), "--method",
                        "tip-adapter", "--shots", "2", "--seed", "1", "--json", "--out", str(out)],
                       capture_output=True, text=True, cwd=REPO_DIR, env=env, timeout=300)
    assert r.returncode == 0, r.stderr
    res = json.loads(r.stdout.strip().splitlines()[-1])
    assert res["method"] == "tip-adapter" and res["shots"] == 2
    assert isinstance(res["accuracy"], float) and 0 <= res["accuracy"] <= 1 and isinstance(res["train_s"], float)
    assert out.is_file()
    r = subprocess.run([sys.executable, "-m", "training", "fewshot", "--dataset", str(tmp_path / "missing"),
                        "--method", "coop", "--json"], capture_output=True, text=True, cwd=REPO_DIR, env=env,
                       timeout=120)
    assert r.returncode == 2 and "not found" in r.stderr


def test_cli_mvlpt_with_the_shipped_source_and_a_group(task_dir, tmp_path, capsys, monkeypatch):
    from training.__main__ import main
    monkeypatch.setenv("DCCLIP_CACHE", str(tmp_path / "cache"))
    other = make_digits_task(tmp_path / "other", (1, 2, 3), 6, 2, offset=60, name="other")
    rc = main(["fewshot", "--dataset", str(task_dir), "--method", "mvlpt", "--shots", "2", "--steps", "3",
               "--json", "--quiet", "--group", str(other)])
    assert rc == 0
    res = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert res["method"] == "mvlpt" and set(res["group"]) == {"other", res["dataset"]} and 0 <= res["accuracy"] <= 1


def test_protocol_table_and_plot(tmp_path):
    from training.prompts.protocol import plot, summarise, table
    rs = [{"variant": v, "shots": k, "seed": s, "accuracy": a, "learn_s": 1.0}
          for v, base in (("coop", 0.5), ("mvlpt", 0.6)) for k in (1, 5) for s, a in ((0, base), (1, base + 0.1))]
    summ = summarise(rs)
    assert summ["coop"][1]["mean"] == pytest.approx(0.55) and summ["coop"][1]["std"] == pytest.approx(0.05)
    t = table(summ, [1, 5], ["coop", "mvlpt", "absent"])
    assert "| mvlpt | 65.0 ± 5.0 | 65.0 ± 5.0 | 1.0 |" in t and "absent" not in t
    assert plot(summ, [1, 5], ["coop", "mvlpt"], tmp_path / "p.png", "t").stat().st_size > 1000
