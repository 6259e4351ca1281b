"""training/export.py on tiny models with the real onnxruntime: export, parity, int8, timing, calibration."""
import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

from training import export as ex  # noqa: E402


class TinyConvNet(torch.nn.Module):
    """pixels [n, 3, 32, 32] -> (embedding [n, 16], features [n, 24])."""

    def __init__(self):
        super().__init__()
        self.body = torch.nn.Sequential(
            torch.nn.Conv2d(3, 16, 3, stride=2, padding=1), torch.nn.BatchNorm2d(16), torch.nn.ReLU6(),
            torch.nn.Conv2d(16, 16, 3, padding=1, groups=16), torch.nn.BatchNorm2d(16), torch.nn.ReLU6(),
            torch.nn.Conv2d(16, 24, 1), torch.nn.BatchNorm2d(24), torch.nn.ReLU6(),
            torch.nn.Conv2d(24, 24, 3, stride=2, padding=1), torch.nn.ReLU6())
        self.head = torch.nn.Linear(24, 16)

    def forward(self, pixels):
        f = self.body(pixels).mean(dim=(2, 3))  # [n, 24]
        return self.head(f), f


class TinyText(torch.nn.Module):
    """input_ids, attention_mask int64 [n, L] -> embedding [n, 16]: the real text tower's Block, 2 layers."""

    def __init__(self, vocab=100, d=32):
        super().__init__()
        from dcclip_core.models import Block

        self.emb = torch.nn.Embedding(vocab, d)
        self.pos = torch.nn.Embedding(64, d)
        self.layers = torch.nn.ModuleList(Block(d, 4, 64, 1e-12) for _ in range(2))
        self.proj = torch.nn.Linear(d, 16)

    def forward(self, input_ids, attention_mask):
        x = self.emb(input_ids) + self.pos.weight[: input_ids.shape[1]][None]  # [n, L, d]
        m = attention_mask.to(x.dtype)  # [n, L]
        bias = ((1.0 - m) * torch.finfo(x.dtype).min)[:, None, None, :]  # [n, 1, 1, L]
        for blk in self.layers:
            x = blk(x, bias)  # [n, L, d]
        return self.proj((x * m[..., None]).sum(1) / m.sum(1, keepdim=True).clamp(min=1.0))  # [n, 16]


class TinyTorchEncoder(torch.nn.Module):
    """Same interface with nn.TransformerEncoder (fast path + MultiheadAttention export quirks)."""

    def __init__(self, vocab=100, d=32):
        super().__init__()
        self.emb = torch.nn.Embedding(vocab, d)
        self.pos = torch.nn.Parameter(torch.randn(64, d) * 0.02)
        layer = torch.nn.TransformerEncoderLayer(d, 4, 64, dropout=0.0, batch_first=True)
        self.enc = torch.nn.TransformerEncoder(layer, 1, enable_nested_tensor=False)
        self.proj = torch.nn.Linear(d, 16)

    def forward(self, input_ids, attention_mask):
        x = self.emb(input_ids) + self.pos[: input_ids.shape[1]]  # [n, L, d]
        x = self.enc(x, src_key_padding_mask=attention_mask == 0)  # [n, L, d]
        m = attention_mask.unsqueeze(-1).to(x.dtype)  # [n, L, 1]
        return self.proj((x * m).sum(1) / m.sum(1).clamp(min=1.0))  # [n, 16]


TEXT_AXES = {"input_ids": {0: "batch", 1: "seq"}, "attention_mask": {0: "batch", 1: "seq"},
             "embedding": {0: "batch"}}


def _ids(n, L, seed):
    rng = np.random.default_rng(seed)
    ids = rng.integers(3, 100, (n, L)).astype(np.int64)
    mask = np.ones((n, L), np.int64)
    for i in range(n):  # ragged lengths, padding id 1
        k = int(rng.integers(1, L + 1))
        mask[i, k:] = 0
        ids[i, k:] = 1
    return ids, mask


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    torch.manual_seed(0)
    d = tmp_path_factory.mktemp("export")
    conv, text = TinyConvNet().eval(), TinyText().eval()
    with torch.no_grad():  # non-trivial BatchNorm statistics
        for m in conv.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 1.5)
    img = ex.export_onnx(conv, (torch.randn(2, 3, 32, 32),), str(d / "image.fp32.onnx"), input_names=["pixels"],
                         output_names=["embedding", "features"],
                         dynamic_axes={"pixels": {0: "batch"}, "embedding": {0: "batch"},
                                       "features": {0: "batch"}})
    ids, mask = _ids(2, 12, 0)
    txt = ex.export_onnx(text, (torch.from_numpy(ids), torch.from_numpy(mask)), d / "text.fp32.onnx",
                         input_names=["input_ids", "attention_mask"], output_names=["embedding"],
                         dynamic_axes=TEXT_AXES)
    return {"dir": d, "conv": conv, "text": text, "image_onnx": img, "text_onnx": txt}


def _conv_ref(conv, px):
    with torch.no_grad():
        return [t.numpy() for t in conv(torch.from_numpy(px))]


def _text_ref(text, ids, mask):
    with torch.no_grad():
        return text(torch.from_numpy(ids), torch.from_numpy(mask)).numpy()


def test_export_single_file_and_checker(models):
    import onnx

    for key in ("image_onnx", "text_onnx"):
        p = models[key]
        assert p.is_file() and p.suffix == ".onnx"
        onnx.checker.check_model(str(p))
        assert not any(e.data_location == onnx.TensorProto.EXTERNAL
                       for e in onnx.load(str(p), load_external_data=False).graph.initializer)
    # nothing but the two exports left behind (no temp files, no external .data)
    assert sorted(f.name for f in models["dir"].iterdir()) == ["image.fp32.onnx", "text.fp32.onnx"]


@pytest.mark.parametrize("n", [1, 5])
def test_export_fp32_parity_dynamic_batch(models, n):
    rng = np.random.default_rng(n)
    px = rng.standard_normal((n, 3, 32, 32)).astype(np.float32)
    emb, feat = _conv_ref(models["conv"], px)
    rep = ex.check_parity(emb, models["image_onnx"], {"pixels": px}, "embedding", min_cos=0.999)
    assert rep["n"] == n and rep["cos_min"] >= 0.999 and rep["max_abs"] < 1e-3
    ex.check_parity(feat, models["image_onnx"], {"pixels": px}, "features", min_cos=0.999)

    L = 7 if n == 1 else 19  # dynamic sequence length too (export used L=12)
    ids, mask = _ids(n, L, n)
    ref = _text_ref(models["text"], ids, mask)
    rep = ex.check_parity(ref, models["text_onnx"], {"input_ids": ids, "attention_mask": mask}, "embedding",
                          min_cos=0.999)
    assert rep["n"] == n and set(rep) == {"cos_mean", "cos_min", "max_abs", "n"}


def test_export_torch_transformer_encoder_dynamic_seq(tmp_path):
    """TorchScript bakes nn.MultiheadAttention's traced sequence length in; export_onnx must notice that
    and fall back to the dynamo exporter (whose output-name clash with aten.embedding it also repairs)."""
    import onnx

    torch.manual_seed(1)
    model = TinyTorchEncoder().eval()
    ids, mask = _ids(2, 12, 0)
    p = ex.export_onnx(model, (torch.from_numpy(ids), torch.from_numpy(mask)), tmp_path / "enc.onnx",
                       ["input_ids", "attention_mask"], ["embedding"], TEXT_AXES)
    g = onnx.load(str(p)).graph
    assert [i.name for i in g.input] == ["input_ids", "attention_mask"]
    assert [o.name for o in g.output] == ["embedding"]
    assert [d.dim_param for d in g.input[0].type.tensor_type.shape.dim] == ["batch", "seq"]
    assert torch.backends.mha.get_fastpath_enabled()  # restored after export
    for n, L in ((1, 5), (4, 20)):
        ids, mask = _ids(n, L, n + L)
        ref = _text_ref(model, ids, mask)
        ex.check_parity(ref, p, {"input_ids": ids, "attention_mask": mask}, "embedding", min_cos=0.999)
    assert sorted(f.name for f in tmp_path.iterdir()) == ["enc.onnx"]


def test_export_check_parity_raises_on_wrong_reference(models):
    px = np.random.default_rng(3).standard_normal((4, 3, 32, 32)).astype(np.float32)
    emb, _ = _conv_ref(models["conv"], px)
    with pytest.raises(ex.ParityError, match="cos_min"):
        ex.check_parity(-emb, models["image_onnx"], {"pixels": px}, "embedding")
    assert issubclass(ex.ParityError, RuntimeError)


def test_export_quantize_dynamic_int8(models):
    dst = ex.quantize_dynamic_int8(models["text_onnx"], models["dir"] / "q" / "text.int8.onnx")
    assert dst.is_file()
    ids, mask = _ids(6, 12, 11)
    ref = _text_ref(models["text"], ids, mask)
    rep = ex.parity(ref, dst, {"input_ids": ids, "attention_mask": mask}, "embedding")
    assert rep["cos_mean"] >= 0.9, rep
    import onnx

    ops = {n.op_type for n in onnx.load(str(dst)).graph.node}
    assert ops & {"DynamicQuantizeLinear", "MatMulInteger", "DynamicQuantizeMatMul"}, ops
    assert "ConvInteger" not in ops


def test_export_quantize_static_int8(models, tmp_path, monkeypatch):
    monkeypatch.setenv("DCCLIP_CALIB_DIR", str(tmp_path / "calib"))
    from PIL import Image

    calib = []
    for p in ex.calibration_images(n=8, size=32):
        x = np.asarray(Image.open(p).convert("RGB"), np.float32) / 255.0  # [32, 32, 3]
        calib.append({"pixels": ((x - 0.5) / 0.25).transpose(2, 0, 1)[None].copy()})  # [1, 3, 32, 32]
    with pytest.raises(ValueError, match="calib"):
        ex.quantize_static_int8(models["image_onnx"], tmp_path / "never.onnx", [])
    dst = ex.quantize_static_int8(models["image_onnx"], tmp_path / "image.int8.onnx", calib)
    assert dst.is_file() and not (tmp_path / "never.onnx").exists()
    import onnx

    ops = {n.op_type for n in onnx.load(str(dst)).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops, ops
    px = np.concatenate([c["pixels"] for c in calib[:4]])  # [4, 3, 32, 32]
    emb, feat = _conv_ref(models["conv"], px)
    rep_e = ex.parity(emb, dst, {"pixels": px}, "embedding")
    rep_f = ex.parity(feat, dst, {"pixels": px}, "features")
    assert rep_e["cos_mean"] >= 0.9 and rep_f["cos_mean"] >= 0.9, (rep_e, rep_f)

    path, rep = ex.pick_faster(models["image_onnx"], dst, {"pixels": px}, threads=2, repeats=5)
    assert path in (str(models["image_onnx"]), str(dst))
    assert set(rep) == {"fp32_ms", "int8_ms", "picked", "threads"}
    assert rep["picked"] in ("fp32", "int8") and rep["threads"] == 2
    assert path == str(dst if rep["picked"] == "int8" else models["image_onnx"])
    assert rep["picked"] == "fp32" or rep["int8_ms"] <= 0.95 * rep["fp32_ms"]


def test_export_calibration_images_deterministic(tmp_path, monkeypatch):
    from PIL import Image

    monkeypatch.setenv("DCCLIP_CALIB_DIR", str(tmp_path / "a"))
    first = ex.calibration_images(n=5, size=64)
    assert len(first) == 5 and first == sorted(first) and all(p.parent == tmp_path / "a" for p in first)
    blobs = [p.read_bytes() for p in first]
    mtimes = [p.stat().st_mtime_ns for p in first]
    assert len(set(blobs)) == 5  # all different images
    for p in first:
        with Image.open(p) as im:
            assert im.format == "JPEG" and im.mode == "RGB" and im.size == (64, 64)
            assert np.asarray(im).std() > 5  # not a flat colour
    again = ex.calibration_images(n=5, size=64)
    assert again == first and [p.read_bytes() for p in again] == blobs
    assert [p.stat().st_mtime_ns for p in again] == mtimes  # reused, not rewritten
    # regenerated from scratch elsewhere: identical bytes (seeded per image)
    monkeypatch.setenv("DCCLIP_CALIB_DIR", str(tmp_path / "b"))
    assert [p.read_bytes() for p in ex.calibration_images(n=5, size=64)] == blobs
    # without DCCLIP_CALIB_DIR: $DCCLIP_CACHE/calib_<size>
    monkeypatch.delenv("DCCLIP_CALIB_DIR")
    monkeypatch.setenv("DCCLIP_CACHE", str(tmp_path / "cache"))
    assert ex.calibration_images(n=2, size=48)[0].parent == tmp_path / "cache" / "calib_48"
