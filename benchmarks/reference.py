"""Reference encoders a user would otherwise run: CLIP ViT-B/32 image tower and the 12-layer CLIP text tower.

Built from transformers configs with random weights (nothing is downloaded: cost does not depend on the
weights), exported to ONNX fp32 and int8, and cached under ``~/.cache/dcclip/bench/reference/`` keyed by
the architecture and the torch / transformers / onnxruntime versions. torch is imported only to export.

Int8: dynamic MatMul quantisation (the usual choice for transformers on CPU) and, for the image tower,
static QDQ (per-channel weights, activations calibrated on real photos); the faster of the two is kept.
"""
from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from .common import cache_dir, image_decoder, make_session, machine_info

CLIP_MEAN = [0.48145466, 0.4578275, 0.40821073]
CLIP_STD = [0.26862954, 0.26130258, 0.27577711]

VIT_B32 = dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12,
               patch_size=32, image_size=224, projection_dim=512, hidden_act="quick_gelu")
CLIP_TEXT = dict(hidden_size=512, intermediate_size=2048, num_hidden_layers=12, num_attention_heads=8,
                 vocab_size=49408, max_position_embeddings=77, projection_dim=512, hidden_act="quick_gelu",
                 bos_token_id=49406, eos_token_id=49407, pad_token_id=0)
TEXT_LEN = 77                     # CLIP's tokenizer always pads to the full context
BOS, EOS = 49406, 49407


@dataclass
class Reference:
    """One exported reference tower: ONNX paths per precision and how each was made."""
    name: str
    image_size: int | None
    files: dict[str, str] = field(default_factory=dict)          # "fp32" / "int8" -> path
    notes: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)


# ---- stand-in tokenisation for the reference text tower --------------------------------------------------
def clip_standin_tokenize(texts: list[str], length: int = TEXT_LEN) -> tuple[np.ndarray, np.ndarray]:
    """Texts -> (input_ids, attention_mask) int64 (n, 77): BOS, one id per UTF-8 byte, EOS, zero padding.

    The reference weights are random, so which ids go in does not matter; only the shape does (CLIP always
    runs the full 77 positions). Real CLIP BPE costs ~0.1 ms a query more, negligible beside the encoder.
    """
    ids = np.zeros((len(texts), length), np.int64)
    mask = np.zeros((len(texts), length), np.int64)
    for i, t in enumerate(texts):
        toks = [BOS] + [256 + b for b in t.encode("utf-8")][: length - 2] + [EOS]
        ids[i, :len(toks)] = toks
        mask[i, :len(toks)] = 1
    return ids, mask


# ---- build + export ------------------------------------------------------------------------------------
def _key(kind: str, arch: dict) -> str:
    v = machine_info()["versions"]
    blob = json.dumps({"kind": kind, "arch": arch, "torch": v["torch"], "transformers": v["transformers"],
                       "onnxruntime": v["onnxruntime"], "format": 1}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:10]


def _export(module, args: tuple, path: Path, input_names, output_names, dynamic_axes) -> None:
    import torch
    with torch.no_grad():
        torch.onnx.export(module, args, str(path), input_names=input_names, output_names=output_names,
                          dynamic_axes=dynamic_axes, opset_version=17, dynamo=False)


def _quantize_dynamic(src: Path, dst: Path) -> None:
    from onnxruntime.quantization import QuantType, quantize_dynamic
    quantize_dynamic(str(src), str(dst), op_types_to_quantize=["MatMul"], weight_type=QuantType.QInt8,
                     per_channel=False)


def _quantize_static(src: Path, dst: Path, feeds: list[dict]) -> None:
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    class _Reader(CalibrationDataReader):
        def __init__(self):
            self._it = iter(feeds)

        def get_next(self):
            return next(self._it, None)

    quantize_static(str(src), str(dst), _Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                    op_types_to_quantize=["MatMul", "Conv"], weight_type=QuantType.QInt8,
                    activation_type=QuantType.QUInt8)


def _ms_per_item(path: Path, feed: dict, threads: int, repeats: int = 3) -> float:
    sess = make_session(path, threads)
    sess.run(None, feed)
    n = len(next(iter(feed.values())))
    t0 = time.perf_counter()
    for _ in range(repeats):
        sess.run(None, feed)
    return (time.perf_counter() - t0) / repeats / n * 1000


def _cached(out: Path) -> Reference | None:
    meta = out / "reference.json"
    if not meta.is_file():
        return None
    ref = Reference(**json.loads(meta.read_text()))
    return ref if all(Path(p).is_file() for p in ref.files.values()) else None


def vit_b32(calib_photos: list[Path], threads: int = 2, log: Callable[[str], None] = print) -> Reference:
    """CLIP ViT-B/32 image tower (``CLIPVisionModelWithProjection``): ``pixels`` (n,3,224,224) -> (n,512)."""
    out = cache_dir() / "reference" / f"clip-vit-b32-image-{_key('vit', VIT_B32)}"
    if (ref := _cached(out)) is not None:
        return ref
    import torch
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    log("building the ViT-B/32 reference (random weights) and exporting it to ONNX (first run only) ...")
    tmp = Path(tempfile.mkdtemp(dir=cache_dir()))
    torch.manual_seed(0)
    cfg = CLIPVisionConfig(**VIT_B32)
    cfg._attn_implementation = "eager"
    model = CLIPVisionModelWithProjection(cfg).eval()

    class _Image(torch.nn.Module):
        def __init__(self, m):
            super().__init__()
            self.m = m

        def forward(self, pixels):                                          # (n, 3, 224, 224)
            return self.m(pixel_values=pixels).image_embeds                 # (n, 512)

    fp32 = tmp / "image.fp32.onnx"
    _export(_Image(model), (torch.zeros(2, 3, 224, 224),), fp32, ["pixels"], ["embedding"],
            {"pixels": {0: "batch"}, "embedding": {0: "batch"}})

    load_image, to_pixels, _ = image_decoder()
    px = np.stack([to_pixels(load_image(p, target_size=224), 224, CLIP_MEAN, CLIP_STD) for p in calib_photos])
    dyn, qdq = tmp / "image.int8-dynamic.onnx", tmp / "image.int8-qdq.onnx"
    log("  quantising: dynamic int8 (MatMul) ...")
    _quantize_dynamic(fp32, dyn)
    log(f"  quantising: static QDQ int8 (per-channel, calibrated on {len(px)} real photos) ...")
    _quantize_static(fp32, qdq, [{"pixels": px[i:i + 1]} for i in range(len(px))])
    feed = {"pixels": px[:16]}
    ms = {k: round(_ms_per_item(p, feed, threads), 2) for k, p in
          (("fp32", fp32), ("int8-dynamic", dyn), ("int8-qdq", qdq))}
    best = min(("int8-dynamic", "int8-qdq"), key=ms.get)
    log(f"  ms/img at batch 16, {threads} threads: {ms} -> keeping {best}")
    ref = _install(out, tmp, {"fp32": fp32, "int8": dyn if best == "int8-dynamic" else qdq},
                   Reference("clip-vit-b32-image", 224, notes={
                       "architecture": VIT_B32, "int8_method": best, "int8_candidates_ms_per_img": ms,
                       "calibration_photos": len(px), "weights": "random (transformers config)"}))
    return ref


def clip_text(threads: int = 2, log: Callable[[str], None] = print) -> Reference:
    """12-layer CLIP text tower (``CLIPTextModelWithProjection``): ``input_ids``, ``attention_mask`` -> (n,512)."""
    out = cache_dir() / "reference" / f"clip-text-12l-{_key('text', CLIP_TEXT)}"
    if (ref := _cached(out)) is not None:
        return ref
    import torch
    from transformers import CLIPTextConfig, CLIPTextModelWithProjection

    log("building the 12-layer CLIP text reference (random weights) and exporting it to ONNX (first run only) ...")
    tmp = Path(tempfile.mkdtemp(dir=cache_dir()))
    torch.manual_seed(0)
    cfg = CLIPTextConfig(**CLIP_TEXT)
    cfg._attn_implementation = "eager"
    model = CLIPTextModelWithProjection(cfg).eval()

    class _Text(torch.nn.Module):
        def __init__(self, m):
            super().__init__()
            self.m = m

        def forward(self, input_ids, attention_mask):                       # (n, 77) int64 each
            return self.m(input_ids=input_ids, attention_mask=attention_mask).text_embeds   # (n, 512)

    ids, mask = clip_standin_tokenize(["a photo of a cat", "一只猫的照片"])
    fp32, dyn = tmp / "text.fp32.onnx", tmp / "text.int8-dynamic.onnx"
    _export(_Text(model), (torch.from_numpy(ids), torch.from_numpy(mask)), fp32,
            ["input_ids", "attention_mask"], ["embedding"],
            {"input_ids": {0: "batch"}, "attention_mask": {0: "batch"}, "embedding": {0: "batch"}})
    log("  quantising: dynamic int8 (MatMul) ...")
    _quantize_dynamic(fp32, dyn)
    feed = {"input_ids": ids[:1], "attention_mask": mask[:1]}
    ms = {k: round(_ms_per_item(p, feed, threads, repeats=10), 2) for k, p in (("fp32", fp32), ("int8-dynamic", dyn))}
    log(f"  ms/query at batch 1, {threads} threads: {ms}")
    return _install(out, tmp, {"fp32": fp32, "int8": dyn},
                    Reference("clip-text-12l", None, notes={
                        "architecture": CLIP_TEXT, "int8_method": "int8-dynamic", "ms_per_query": ms,
                        "tokenisation": "stand-in: BOS + UTF-8 bytes + EOS, padded to 77",
                        "weights": "random (transformers config)"}))


def _install(out: Path, tmp: Path, picks: dict[str, Path], ref: Reference) -> Reference:
    """Move the chosen files from the temp build dir into the cache dir and write reference.json."""
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    for prec, src in picks.items():
        dst = out / src.name
        shutil.move(str(src), dst)
        data = src.with_name(src.name + ".data")                # external weights, if the exporter wrote any
        if data.is_file():
            shutil.move(str(data), out / data.name)
        ref.files[prec] = str(dst)
    from dcclip_core.atomic import atomic_write_text
    atomic_write_text(out / "reference.json", json.dumps(ref.to_dict(), indent=2) + "\n")
    shutil.rmtree(tmp, ignore_errors=True)
    return ref
