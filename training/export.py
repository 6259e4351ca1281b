"""ONNX export + int8 quantisation helpers (used by training/export_default.py).

Which int8 for which tower:

* text tower (small transformer): **dynamic int8** (onnxruntime ``quantize_dynamic``) restricted to
  MatMul/Gemm. Almost all of a transformer's time is in its Linear layers; dynamic quantisation computes
  activation scales per batch at run time, so it needs no calibration data and handles the very different
  activation ranges of different sentences well.
* image tower (EfficientNet-style CNN): **static QDQ int8** (``quantize_static`` with calibration images).
  Dynamic int8 turns every Conv into ``ConvInteger``, which onnxruntime's CPU provider runs through a slow
  generic path: measured ~5x *slower* than fp32 on the image tower. Static QDQ (QuantizeLinear /
  DequantizeLinear pairs with calibrated activation scales) lets onnxruntime fuse Conv into QLinearConv,
  which has fast int8 kernels. Calibration uses synthetic images (``calibration_images``) so that the
  real photos stay reserved for evaluation and parity checks.

Neither int8 file ships automatically: ``pick_faster`` times both on this machine and picks int8 only if
it is at least 5% faster; ``parity`` / ``check_parity`` compare every file against the torch outputs.
"""
from __future__ import annotations

import contextlib
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path
from typing import Sequence

import numpy as np

from dcclip_core.atomic import atomic_path


class ParityError(RuntimeError):
    """An exported ONNX file disagrees with the torch reference (cosine below the threshold)."""


# ---------------------------------------------------------------------------------------------------------
# small helpers
# ---------------------------------------------------------------------------------------------------------
def _clear(d: Path) -> None:
    """Empty directory ``d`` (a failed exporter's leftovers)."""
    for f in d.iterdir():
        shutil.rmtree(f, ignore_errors=True) if f.is_dir() else _unlink(f)


def _unlink(p: Path) -> None:
    try:
        p.unlink()
    except FileNotFoundError:
        pass


def _save_single_file(model, dst: Path) -> None:
    """Save an in-memory onnx.ModelProto as ONE self-contained file (no external .data), atomically."""
    import onnx

    with atomic_path(dst, suffix=".onnx") as tmp:
        onnx.save_model(model, str(tmp), save_as_external_data=False)
        onnx.checker.check_model(str(tmp))


def _session(path, threads: int = 2):
    """onnxruntime CPU session through the runtime's one factory (errors only in the log)."""
    from dcclip_core.runtime import make_session
    return make_session(path, threads, log_severity=3)


# ---------------------------------------------------------------------------------------------------------
# export
# ---------------------------------------------------------------------------------------------------------
def _dynamic_shapes(args: tuple, input_names: Sequence[str], dynamic_axes: dict | None):
    """dynamic_axes ({input: {axis: name}}) -> torch.export dynamic_shapes (one entry per positional arg)."""
    from torch.export import Dim

    dynamic_axes = dynamic_axes or {}
    shapes = []
    for i, a in enumerate(args):
        name = input_names[i] if i < len(input_names) else None
        axes = dynamic_axes.get(name, {}) if name else {}
        if isinstance(axes, (list, tuple)):
            axes = {int(ax): f"{name}_{ax}" for ax in axes}
        shapes.append({int(ax): Dim.DYNAMIC for ax in axes} if hasattr(a, "shape") else None)
    return tuple(shapes)


def export_onnx(module, args: tuple, path, input_names: Sequence[str], output_names: Sequence[str],
                dynamic_axes: dict | None, exporter: str = "auto") -> Path:
    """Export ``module(*args)`` to a single self-contained ONNX file at ``path`` (opset 17), atomically.

    ``args``: example tensors, e.g. (pixels float32 [2, 3, S, S],) or (input_ids, attention_mask int64 [2, L]).
    ``dynamic_axes``: {name: {axis: dim_name}} as for torch.onnx.export, e.g. {"pixels": {0: "batch"}}.

    exporter="auto" (default) uses the TorchScript exporter (``dynamo=False``: reliable for EfficientNet and
    small transformers) and falls back to the dynamo exporter (``dynamic_shapes`` derived from
    ``dynamic_axes``) if TorchScript export fails (or is gone from this torch) or its file fails the
    dynamic-shape check: the export is run at other sizes of every dynamic axis and compared with torch
    (TorchScript bakes the traced sequence length of nn.MultiheadAttention in). The dynamo exporter emits
    opset 18 and keeps it if the down-conversion to 17 fails. "torchscript" / "dynamo" force one exporter.
    The result is written without external data (one .onnx file), via a temp file + os.replace, and
    passes ``onnx.checker.check_model``.
    """
    import onnx
    import torch

    if exporter not in ("auto", "torchscript", "dynamo"):
        raise ValueError(f"exporter must be 'auto', 'torchscript' or 'dynamo', not {exporter!r}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    args = tuple(args)
    module.eval()
    workdir = Path(tempfile.mkdtemp(prefix=f".{path.stem}.export-", dir=path.parent))
    raw = workdir / "model.onnx"  # exporter output (may come with external data files beside it)
    try:
        errors = []
        # nn.TransformerEncoderLayer / MultiheadAttention take a fused "fast path" in eval + no_grad
        # (aten::_transformer_encoder_layer_fwd) that has no ONNX symbolic: turn it off while exporting.
        mha = getattr(torch.backends, "mha", None)
        fastpath = mha.get_fastpath_enabled() if mha is not None else None
        if mha is not None:
            mha.set_fastpath_enabled(False)
        try:
            with torch.no_grad():
                used = _export(module, args, raw, workdir, input_names, output_names, dynamic_axes, errors,
                               exporter)
                problem = _verify_dynamic(module, args, raw, input_names, output_names, dynamic_axes)
                if problem and used == "torchscript" and exporter == "auto":
                    # e.g. nn.MultiheadAttention traced by TorchScript bakes the sequence length in
                    errors.append(f"torchscript export failed the dynamic-shape check: {problem}")
                    _clear(workdir)
                    used = _export(module, args, raw, workdir, input_names, output_names, dynamic_axes, errors,
                                   "dynamo")
                    problem = _verify_dynamic(module, args, raw, input_names, output_names, dynamic_axes)
                if problem:
                    raise RuntimeError(f"ONNX export ({used}) failed the dynamic-shape check: {problem}\n"
                                       + "\n".join(errors))
        finally:
            if mha is not None:
                mha.set_fastpath_enabled(fastpath)
        model = onnx.load(str(raw), load_external_data=True)  # pulls any external .data back in
        _save_single_file(model, path)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return path


def _rename_value(graph, old: str, new: str) -> None:
    """Rename value ``old`` to ``new`` everywhere in ``graph`` (and its subgraphs)."""
    for vi in list(graph.input) + list(graph.output) + list(graph.value_info):
        if vi.name == old:
            vi.name = new
    for init in graph.initializer:
        if init.name == old:
            init.name = new
    for node in graph.node:
        for i, x in enumerate(node.input):
            if x == old:
                node.input[i] = new
        for i, x in enumerate(node.output):
            if x == old:
                node.output[i] = new
        for att in node.attribute:
            for sub in ([att.g] if att.HasField("g") else []) + list(att.graphs):
                _rename_value(sub, old, new)


def _value_names(graph) -> set:
    names = {v.name for v in list(graph.input) + list(graph.output) + list(graph.value_info)}
    names |= {i.name for i in graph.initializer}
    for node in graph.node:
        names |= set(node.input) | set(node.output)
    return names


def _fix_names(model, input_names, output_names, dynamic_axes) -> None:
    """Give the graph's inputs/outputs the requested names (and dynamic axes their dim names), in place."""
    g = model.graph
    real_inputs = [i for i in g.input if i.name not in {t.name for t in g.initializer}]
    wanted = list(zip([i.name for i in real_inputs], input_names)) + \
        list(zip([o.name for o in g.output], output_names))
    for old, new in wanted:
        if old == new:
            continue
        if new in _value_names(g):  # an internal value already uses the name: move it aside first
            k = 0
            while f"{new}__{k}" in _value_names(g):
                k += 1
            _rename_value(g, new, f"{new}__{k}")
        _rename_value(g, old, new)
    for vi in list(g.input) + list(g.output):  # dynamo names dims s0, s81, ...: use the caller's names
        axes = (dynamic_axes or {}).get(vi.name)
        if isinstance(axes, dict):
            dims = vi.type.tensor_type.shape.dim
            for ax, dim_name in axes.items():
                if int(ax) < len(dims):
                    dims[int(ax)].dim_param = str(dim_name)


def _axes(dynamic_axes: dict | None, name: str) -> list[int]:
    ax = (dynamic_axes or {}).get(name) or {}
    return sorted(int(a) for a in (ax.keys() if isinstance(ax, dict) else ax))


def _verify_dynamic(module, args: tuple, onnx_path: Path, input_names, output_names, dynamic_axes,
                    min_cos: float = 0.999) -> str | None:
    """Run the raw export at other sizes of every dynamic axis and compare with torch.

    Catches exports that pass the checker but baked a traced size in (they fail or disagree at other sizes).
    Returns None if fine (or if torch itself cannot run the altered inputs), else a description of the
    problem. Each dynamic axis of size s >= 2 drops its last slice (s - 1: stays within position tables);
    size 1 repeats it (2). Token ids and masks stay valid either way.
    """
    import torch

    if not dynamic_axes or not all(isinstance(a, torch.Tensor) for a in args):
        return None
    grown = []
    for name, a in zip(input_names, args):
        x = a.detach().cpu().numpy()
        for ax in _axes(dynamic_axes, name):
            if ax >= x.ndim:
                continue
            x = x.take(range(x.shape[ax] - 1), axis=ax) if x.shape[ax] >= 2 else np.repeat(x, 2, axis=ax)
        grown.append(np.ascontiguousarray(x))
    try:
        with torch.no_grad():
            ref = module(*[torch.from_numpy(x) for x in grown])
        ref = [ref] if isinstance(ref, torch.Tensor) else list(ref)
    except Exception:  # noqa: BLE001 - the model itself does not take these sizes: nothing to check
        return None
    try:
        sess = _session(onnx_path, threads=1)
        present = {i.name for i in sess.get_inputs()}  # an unused input may have been dropped
        out = sess.run(list(output_names)[: len(ref)],
                       {n: np.ascontiguousarray(x) for n, x in zip(input_names, grown) if n in present})
    except Exception as e:  # noqa: BLE001 - any failure at the new size is the problem we look for
        return f"onnxruntime at altered input sizes: {type(e).__name__}: {str(e)[:500]}"
    for name, r, o in zip(output_names, ref, out):
        r = r.detach().cpu().numpy()
        if r.shape != o.shape:
            return f"output {name!r}: onnx shape {o.shape} != torch shape {r.shape} at altered input sizes"
        if r.dtype.kind == "f" and r.size:
            n = r.shape[0] if r.ndim else 1
            a, b = r.reshape(n, -1).astype(np.float64), o.reshape(n, -1).astype(np.float64)
            den = np.maximum(np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1), 1e-12)
            cos = ((a * b).sum(1) / den)[np.linalg.norm(a, axis=1) > 1e-12]
            if cos.size and not cos.min() >= min_cos:
                return f"output {name!r}: cos_min {cos.min():.6f} vs torch at altered input sizes"
    return None


def _export(module, args, raw: Path, workdir: Path, input_names, output_names, dynamic_axes, errors: list,
            exporter: str = "auto") -> str:
    """Write the raw export to ``raw``; returns the exporter used ("torchscript" or "dynamo")."""
    import torch

    if exporter in ("auto", "torchscript"):
        try:
            torch.onnx.export(module, args, str(raw), input_names=list(input_names),
                              output_names=list(output_names), dynamic_axes=dynamic_axes,
                              opset_version=17, do_constant_folding=True, dynamo=False)
            return "torchscript"
        except Exception as e:  # TorchScript exporter missing (removed) or failed -> dynamo exporter
            errors.append(f"torchscript exporter: {type(e).__name__}: {e}")
            if exporter == "torchscript":
                raise RuntimeError("ONNX export failed:\n" + "\n".join(errors)) from e
            _clear(workdir)
    try:
        # Names are NOT passed to the dynamo exporter: it renames graph outputs without checking for clashes
        # (torch 2.13: an output called "embedding" collides with its aten.embedding value -> invalid SSA).
        # _fix_names() renames inputs/outputs afterwards, moving clashing internal values out of the way.
        torch.onnx.export(module, args, str(raw), opset_version=17, dynamo=True,
                          dynamic_shapes=_dynamic_shapes(args, input_names, dynamic_axes),
                          external_data=False, optimize=True, verbose=False)
        import onnx

        model = onnx.load(str(raw), load_external_data=True)
        _fix_names(model, input_names, output_names, dynamic_axes)
        _clear(workdir)
        onnx.save_model(model, str(raw), save_as_external_data=False)
        return "dynamo"
    except Exception as e:
        errors.append(f"dynamo exporter: {type(e).__name__}: {e}")
        raise RuntimeError("ONNX export failed:\n" + "\n".join(errors)) from e


# ---------------------------------------------------------------------------------------------------------
# quantisation
# ---------------------------------------------------------------------------------------------------------
def _preprocess(src: Path, workdir: Path) -> Path:
    """onnxruntime's quant_pre_process (shape inference + graph optimisation) before quantising.

    Tries symbolic shape inference first, then without it (it gives up on some dynamic-seq transformer
    graphs: "Incomplete symbolic shape inference"); returns ``src`` unchanged if both fail.
    """
    import onnx

    try:
        from onnxruntime.quantization.shape_inference import quant_pre_process
    except Exception:  # noqa: BLE001
        return src
    src, workdir = Path(src).resolve(), Path(workdir).resolve()
    for i, skip_symbolic in enumerate((False, True)):
        out = workdir / f"pre{i}.onnx"
        try:
            # When symbolic shape inference gives up, onnxruntime dumps "sym_shape_infer_temp.onnx" plus a
            # <uuid>.data file into the *current directory*: run it inside the scratch dir (removed later).
            with contextlib.chdir(workdir):
                quant_pre_process(str(src), str(out), skip_symbolic_shape=skip_symbolic)
            onnx.checker.check_model(str(out))
            return out
        except Exception:  # noqa: BLE001 - pre-processing is optional
            continue
    return src


@contextlib.contextmanager
def _quantizing(src, dst):
    """Shared frame of both quantisers: yields (pre-processed fp32 input, temp output); on success the temp
    output is checked and atomically renamed to ``dst``; scratch files never outlive the call."""
    src, dst = Path(src), Path(dst)
    dst.parent.mkdir(parents=True, exist_ok=True)
    workdir = Path(tempfile.mkdtemp(prefix=f".{dst.stem}.q-", dir=dst.parent))
    try:
        with atomic_path(dst, suffix=".onnx") as tmp:
            yield _preprocess(src, workdir), tmp
            import onnx

            onnx.checker.check_model(str(tmp))
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def quantize_dynamic_int8(src, dst) -> Path:
    """fp32 ONNX -> dynamic int8 (weights QInt8 per channel; MatMul/Gemm + the embedding Gather). For the transformer."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    with _quantizing(src, dst) as (pre, tmp):
        # per-channel weights: per-tensor scales cost 0.04 mean cosine on the real text tower (0.959 vs 0.994);
        # Gather = the token-embedding table, 4x smaller on disk (the largest tensor of a small transformer)
        quantize_dynamic(str(pre), str(tmp), weight_type=QuantType.QInt8, per_channel=True,
                         op_types_to_quantize=["MatMul", "Gemm", "Gather"],
                         # activation x activation MatMuls (attention scores) stay fp32: quantising them
                         # costs accuracy and buys little speed
                         extra_options={"MatMulConstBOnly": True})
    return Path(dst)


def _calibration_reader(feeds: list[dict]):
    from onnxruntime.quantization import CalibrationDataReader

    class _Reader(CalibrationDataReader):
        def __init__(self, feeds):
            self.feeds = [{k: np.ascontiguousarray(v) for k, v in f.items()} for f in feeds]
            self.it = iter(self.feeds)

        def get_next(self):
            return next(self.it, None)

        def rewind(self):
            self.it = iter(self.feeds)

    return _Reader(feeds)


def quantize_static_int8(src, dst, calib_feeds: list[dict[str, np.ndarray]], method: str = "minmax",
                         keep_fp32_outputs: tuple[str, ...] = ()) -> Path:
    """fp32 ONNX -> static int8 in QDQ format (per-channel QInt8 weights, QUInt8 activations).

    ``calib_feeds``: input dicts, e.g. [{"pixels": float32 [1, 3, S, S]}, ...] (synthetic images only).
    ``method``: "minmax" (default) or "percentile" / "entropy". ``keep_fp32_outputs``: graph outputs whose
    producing node stays fp32 (a small classifier on top: int8 logits lost 0.14 cosine on some photos).
    """
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    calib_feeds = list(calib_feeds or [])
    if not calib_feeds:
        raise ValueError("quantize_static_int8: calib_feeds is empty; static int8 needs calibration inputs "
                         "(e.g. [{'pixels': float32 [1, 3, S, S]}, ...] from calibration_images())")
    methods = {"minmax": CalibrationMethod.MinMax, "percentile": CalibrationMethod.Percentile,
               "entropy": CalibrationMethod.Entropy}
    if method.lower() not in methods:
        raise ValueError(f"unknown calibration method {method!r}; one of {sorted(methods)}")
    with _quantizing(src, dst) as (pre, tmp):
        extra = {}
        if method.lower() == "percentile":
            extra["CalibPercentile"] = 99.999
        exclude = []
        if keep_fp32_outputs:
            import onnx
            g = onnx.load(str(pre)).graph
            exclude = [n.name for n in g.node if set(n.output) & set(keep_fp32_outputs)]
        quantize_static(str(pre), str(tmp), _calibration_reader(calib_feeds), quant_format=QuantFormat.QDQ,
                        per_channel=True, activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                        calibrate_method=methods[method.lower()], extra_options=extra, nodes_to_exclude=exclude)
    return Path(dst)


# ---------------------------------------------------------------------------------------------------------
# parity + timing
# ---------------------------------------------------------------------------------------------------------
def _feeds(feeds: dict) -> dict:
    return {k: np.ascontiguousarray(v) for k, v in feeds.items()}


def parity(ref: np.ndarray, path, feeds: dict, output: str, threads: int = 2) -> dict:
    """Run ``path`` on ``feeds`` and compare ``output`` row-wise with ``ref`` ([n, ...], rows flattened).

    Returns {"cos_mean", "cos_min", "max_abs", "n"}.
    """
    sess = _session(path, threads)
    names = [o.name for o in sess.get_outputs()]
    if output not in names:
        raise KeyError(f"{path}: no output {output!r} (has {names})")
    out = sess.run([output], _feeds(feeds))[0]
    ref = np.asarray(ref)
    if out.shape != ref.shape:
        raise ValueError(f"{path}: output {output!r} has shape {out.shape}, reference has {ref.shape}")
    n = ref.shape[0]
    a = ref.reshape(n, -1).astype(np.float64)  # [n, D]
    b = out.reshape(n, -1).astype(np.float64)  # [n, D]
    na, nb = np.linalg.norm(a, axis=1), np.linalg.norm(b, axis=1)
    cos = (a * b).sum(axis=1) / np.maximum(na * nb, 1e-12)  # [n]
    cos[(na < 1e-12) & (nb < 1e-12)] = 1.0  # two zero rows agree
    return {"cos_mean": float(cos.mean()) if n else 1.0, "cos_min": float(cos.min()) if n else 1.0,
            "max_abs": float(np.abs(a - b).max()) if a.size else 0.0, "n": int(n)}


def check_parity(ref: np.ndarray, path, feeds: dict, output: str, min_cos: float = 0.99) -> dict:
    """parity(), raising ParityError if the worst row's cosine is below ``min_cos``."""
    rep = parity(ref, path, feeds, output)
    if not rep["cos_min"] >= min_cos:  # also catches NaN
        raise ParityError(f"{Path(path).name} output {output!r}: cos_min {rep['cos_min']:.6f} < {min_cos} "
                          f"(cos_mean {rep['cos_mean']:.6f}, max_abs {rep['max_abs']:.4g}, n {rep['n']})")
    return rep


def pick_faster(fp32_path, int8_path, feeds: dict, threads: int = 2, repeats: int = 20) -> tuple[str, dict]:
    """Time both files (3 warm-up runs each, median of ``repeats``); int8 wins only if >= 5% faster.

    The timed runs alternate fp32 / int8 so that load changes on a shared machine hit both alike.
    Returns (path of the picked file as str, {"fp32_ms", "int8_ms", "picked", "threads"}).
    """
    feeds = _feeds(feeds)
    sessions = {"fp32": _session(fp32_path, threads), "int8": _session(int8_path, threads)}
    for sess in sessions.values():
        for _ in range(3):
            sess.run(None, feeds)
    times: dict[str, list[float]] = {k: [] for k in sessions}
    for _ in range(max(1, int(repeats))):
        for k, sess in sessions.items():
            t0 = time.perf_counter()
            sess.run(None, feeds)
            times[k].append((time.perf_counter() - t0) * 1000.0)
    fp32_ms, int8_ms = (float(statistics.median(times[k])) for k in ("fp32", "int8"))
    picked = "int8" if int8_ms <= 0.95 * fp32_ms else "fp32"
    # unrounded, so the report reproduces the decision exactly (tiny models run in ~0.05 ms)
    report = {"fp32_ms": fp32_ms, "int8_ms": int8_ms, "picked": picked, "threads": int(threads)}
    return str(int8_path if picked == "int8" else fp32_path), report


# ---------------------------------------------------------------------------------------------------------
# synthetic calibration images
# ---------------------------------------------------------------------------------------------------------
def _calib_dir(size: int) -> Path:
    env = os.environ.get("DCCLIP_CALIB_DIR")
    if env:
        return Path(env).expanduser()
    from dcclip_core.config import cache_dir
    return cache_dir() / f"calib_{size}"


def _pink_noise(rng: np.random.Generator, size: int, alpha: float) -> np.ndarray:
    """1/f^alpha noise [size, size] scaled to [-1, 1]: the power spectrum of natural images."""
    white = rng.standard_normal((size, size))
    fy = np.fft.fftfreq(size)[:, None]
    fx = np.fft.fftfreq(size)[None, :]
    f = np.sqrt(fx * fx + fy * fy)
    f[0, 0] = 1.0
    spec = np.fft.fft2(white) / f ** alpha
    spec[0, 0] = 0.0
    img = np.real(np.fft.ifft2(spec))
    return img / (np.abs(img).max() + 1e-8)


def _colour(rng: np.random.Generator) -> np.ndarray:
    """A random RGB colour [3] with photo-like statistics: mostly muted, sometimes saturated."""
    grey = rng.uniform(20, 235)
    sat = rng.beta(1.5, 3.0)  # mean ~0.33
    return np.clip(grey + sat * (rng.uniform(0, 255, 3) - grey), 0, 255)


def _synthetic_image(seed: int, size: int):
    """A deterministic natural-looking RGB image (PIL) of size x size."""
    from PIL import Image, ImageDraw, ImageFilter

    rng = np.random.default_rng(seed)
    S = size
    yy, xx = np.mgrid[0:S, 0:S].astype(np.float32) / max(S - 1, 1)  # [S, S] each

    # 1. smooth background: gradient between two colours along a random direction (sky / wall / ground)
    c0, c1 = _colour(rng), _colour(rng)
    ang = rng.uniform(0, 2 * np.pi)
    t = (np.cos(ang) * xx + np.sin(ang) * yy)
    t = (t - t.min()) / (t.max() - t.min() + 1e-8)
    img = c0[None, None, :] * (1 - t[..., None]) + c1[None, None, :] * t[..., None]  # [S, S, 3]

    # 2. low-frequency colour variation: a coarse random grid upsampled bicubically
    g = int(rng.integers(3, 7))
    coarse = rng.uniform(-50, 50, (g, g, 1)) + rng.uniform(-20, 20, (g, g, 3))  # mostly luminance
    smooth = np.stack([np.asarray(Image.fromarray(coarse[..., k].astype(np.float32), mode="F")
                                  .resize((S, S), Image.BICUBIC)) for k in range(3)], axis=-1)
    img = img + smooth

    # 3. blurred colour blobs
    for _ in range(int(rng.integers(3, 9))):
        cx, cy = rng.uniform(0, 1, 2)
        sx, sy = rng.uniform(0.04, 0.25, 2)
        w = np.exp(-(((xx - cx) / sx) ** 2 + ((yy - cy) / sy) ** 2) / 2)[..., None]  # [S, S, 1]
        img = img * (1 - 0.8 * w) + _colour(rng)[None, None, :] * 0.8 * w

    # 4. 1/f texture (luminance + a little colour)
    img = img + rng.uniform(10, 40) * _pink_noise(rng, S, rng.uniform(1.0, 2.0))[..., None]
    img = img + 8 * np.stack([_pink_noise(rng, S, 1.5) for _ in range(3)], axis=-1)

    # 5. a few textured ellipses / rectangles ("objects") with soft edges
    base = Image.fromarray(np.clip(img, 0, 255).astype(np.uint8), "RGB")
    for _ in range(int(rng.integers(2, 6))):
        x0, y0 = rng.uniform(-0.1, 0.9, 2) * S
        w, h = rng.uniform(0.1, 0.5, 2) * S
        box = [float(x0), float(y0), float(x0 + w), float(y0 + h)]
        mask = Image.new("L", (S, S), 0)
        d = ImageDraw.Draw(mask)
        (d.ellipse if rng.random() < 0.5 else d.rectangle)(box, fill=255)
        mask = mask.filter(ImageFilter.GaussianBlur(rng.uniform(0.5, 2.5)))
        col = _colour(rng)
        # texture: stripes at a random angle/frequency + fine noise + shading across the object
        a2, fr = rng.uniform(0, np.pi), rng.uniform(4, 30)
        stripes = np.sin(2 * np.pi * fr * (np.cos(a2) * xx + np.sin(a2) * yy) + rng.uniform(0, 2 * np.pi))
        shade = 1.0 + 0.35 * ((xx - x0 / S) - (yy - y0 / S))
        tex = col[None, None, :] * shade[..., None] + rng.uniform(5, 35) * stripes[..., None]
        tex = tex + rng.normal(0, rng.uniform(2, 10), (S, S, 1))
        base = Image.composite(Image.fromarray(np.clip(tex, 0, 255).astype(np.uint8), "RGB"), base, mask)

    # 6. mild blur (optics) + sensor noise
    base = base.filter(ImageFilter.GaussianBlur(rng.uniform(0.0, 1.0)))
    arr = np.asarray(base).astype(np.float32) + rng.normal(0, rng.uniform(1, 6), (S, S, 3))
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8), "RGB")


def calibration_images(n: int = 32, size: int = 224) -> list[Path]:
    """``n`` deterministic SYNTHETIC RGB JPEGs (size x size) for static-int8 calibration; cached + reused.

    Never real photos: the real package photos are reserved for evaluation. Directory: $DCCLIP_CALIB_DIR,
    else ($DCCLIP_CACHE or ~/.cache/dcclip)/calib_<size>. Image i is generated from default_rng(i).
    """
    d = _calib_dir(size)
    d.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(int(n)):
        p = d / f"calib_{size}_{i:04d}.jpg"
        if not p.is_file() or p.stat().st_size == 0:
            with atomic_path(p, suffix=".jpg") as tmp:
                _synthetic_image(i, size).save(tmp, format="JPEG", quality=92)
        paths.append(p)
    return sorted(paths)
