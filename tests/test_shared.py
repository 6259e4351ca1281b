"""The runtime pieces every part shares (one place each): paths and environment variables (dcclip_core.config),
the ONNX session factory (dcclip_core.runtime.make_session), numpy helpers (dcclip_core.numeric) and atomic
writes (dcclip_core.atomic)."""
import os
import stat

import numpy as np
import pytest

from dcclip_core import config
from dcclip_core.atomic import atomic_path, atomic_write_text
from dcclip_core.numeric import l2_normalize, softmax


# ---- paths and environment variables ----------------------------------------------------------------------
def test_every_user_path_follows_the_cache_and_its_own_variable(tmp_path, monkeypatch):
    from dcclip_core import prompts
    from ui import backend
    from benchmarks import common
    for var in ("DCCLIP_CACHE", "DCCLIP_PROMPTS", "DCCLIP_MODELS"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("DCCLIP_CACHE", str(tmp_path / "c"))
    assert config.cache_dir() == tmp_path / "c" and (tmp_path / "c").is_dir()
    assert prompts.user_dir() == config.prompts_dir() == tmp_path / "c" / "prompts"
    assert backend.user_models_dir() == config.user_models_dir() == tmp_path / "c" / "models"
    assert backend.default_cache() == tmp_path / "c" and common.cache_dir() == tmp_path / "c" / "bench"
    monkeypatch.setenv("DCCLIP_PROMPTS", str(tmp_path / "p"))
    monkeypatch.setenv("DCCLIP_MODELS", str(tmp_path / "m"))
    assert prompts.user_dir() == tmp_path / "p" and (tmp_path / "p").is_dir()
    assert backend.user_models_dir() == tmp_path / "m" and not (tmp_path / "m").exists()   # only read, not made


def test_numeric_settings_from_the_environment(monkeypatch):
    monkeypatch.setenv("DCCLIP_MAX_PIXELS", "1234")
    monkeypatch.setenv("DCCLIP_THREADS", "3")
    monkeypatch.setenv("DCCLIP_FAST_JPEG", "0")
    assert (config.max_pixels(), config.default_threads(), config.fast_jpeg()) == (1234, 3, False)
    for var in ("DCCLIP_MAX_PIXELS", "DCCLIP_THREADS", "DCCLIP_FAST_JPEG"):
        monkeypatch.delenv(var)
    assert config.max_pixels() == 120_000_000 and config.default_threads() >= 1 and config.fast_jpeg()


# ---- numpy helpers --------------------------------------------------------------------------------------
def test_l2_normalize_rows_zeros_and_dtypes():
    x = np.random.default_rng(0).standard_normal((5, 7)).astype(np.float32)
    x[2] = 0
    y = l2_normalize(x)
    assert y.dtype == np.float32 and np.allclose(np.linalg.norm(y[[0, 1, 3, 4]], axis=1), 1, atol=1e-6)
    assert not y[2].any()                                                       # a zero row stays zero
    assert np.array_equal(y, x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12))   # bit for bit
    assert l2_normalize(x.astype(np.float64)).dtype == np.float64
    assert l2_normalize([3, 4]).dtype == np.float32 and np.allclose(l2_normalize([3, 4]), [0.6, 0.8])
    assert np.allclose(np.linalg.norm(l2_normalize(x[:, :3], axis=0), axis=0), 1, atol=1e-6)


def test_softmax_is_stable_and_sums_to_one():
    z = np.array([[1000.0, 1000.0, -1000.0], [0.0, np.log(3.0), -np.inf]])
    p = softmax(z)
    assert np.all(np.isfinite(p)) and np.allclose(p.sum(-1), 1)
    assert np.allclose(p[0], [0.5, 0.5, 0]) and np.allclose(p[1], [0.25, 0.75, 0])
    assert np.allclose(softmax(z.T, axis=0), p.T)


# ---- the ONNX session factory -----------------------------------------------------------------------------
def test_make_session_defaults(tmp_path):
    onnx = pytest.importorskip("onnx")
    import onnxruntime as ort
    from onnx import TensorProto, helper
    from dcclip_core.runtime import make_session
    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 2])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 2])])
    path = tmp_path / "relu.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), str(path))
    sess = make_session(path, threads=2, log_severity=3)
    opts = sess.get_session_options()
    assert (opts.intra_op_num_threads, opts.inter_op_num_threads, opts.log_severity_level) == (2, 1, 3)
    assert opts.graph_optimization_level == ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    assert sess.get_providers() == ["CPUExecutionProvider"]
    assert np.array_equal(sess.run(None, {"x": np.array([[-1.0, 2.0]], np.float32)})[0], [[0.0, 2.0]])


# ---- atomic writes --------------------------------------------------------------------------------------
def test_atomic_write_gives_plain_permissions_and_keeps_existing_ones(tmp_path):
    umask = os.umask(0o022)
    os.umask(umask)
    new = atomic_write_text(tmp_path / "sub" / "a.json", "{}\n")
    assert stat.S_IMODE(new.stat().st_mode) == 0o666 & ~umask                # not the temp file's 0600
    os.chmod(new, 0o640)
    with atomic_path(new) as tmp:
        tmp.write_text("[]\n")
    assert new.read_text() == "[]\n" and stat.S_IMODE(new.stat().st_mode) == 0o640
    assert sorted(p.name for p in new.parent.iterdir()) == ["a.json"]        # no temp file left behind


def test_prompt_save_writes_atomically(tmp_path):
    from dcclip_core.prompts import Prompt, read_meta
    p = Prompt({"method": "zeroshot", "classes": ["a", "b"]}, {"class_embeds": np.eye(2, 3, dtype=np.float32)})
    path = p.save(tmp_path / "lib" / "two")
    assert path.name == "two.safetensors" and read_meta(path)["classes"] == ["a", "b"]
    assert sorted(x.name for x in path.parent.iterdir()) == ["two.safetensors"]
