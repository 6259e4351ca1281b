"""Export an installed model directory's torch weights to the ONNX files the runtime uses.

text : input_ids, attention_mask int64 [n, L] -> embedding float32 [n, D+1]
image: pixels float32 [n, 3, S, S]            -> embedding float32 [n, D+1], features float32 [n, F]

fp32 and int8 (dynamic for the transformer, static QDQ for the CNN) are both exported and parity-checked
against torch on real inputs; the faster one ships (int8 only where it is faster), the other stays in --work.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import torch

from dcclip_core.config import ModelConfig
from dcclip_core.runtime import sha256_file

MIN_INT8_COS = 0.98
PARITY_TEXTS = [
    "猫", "a cat", "一只猫的照片", "a photo of a cat", "貓", "一杯咖啡", "a cup of coffee", "宇航员", "astronaut",
    "红色的苹果", "a red apple on a table", "日落时的海滩", "sunset at the beach", "", "🐱🐶", "猫 and dog 狗",
    "火箭发射", "rocket launch", "一辆摩托车", "motorcycle", "寺庙", "a temple in China", "蝴蝶", "a butterfly",
    "the quick brown fox jumps over the lazy dog " * 10, "中华人民共和国" * 20,
]


class _TextWrap(torch.nn.Module):
    def __init__(self, text):
        super().__init__()
        self.text = text

    def forward(self, input_ids, attention_mask):
        return self.text(input_ids, attention_mask)


class _ImageWrap(torch.nn.Module):
    def __init__(self, image):
        super().__init__()
        self.image = image

    def forward(self, pixels):
        return self.image(pixels)


class _FeatureWrap(torch.nn.Module):
    """Text-space models: pixels -> (pooled features [n, F], feature map [n, F, h, w], ImageNet logits [n, K]); the
    concept mix after the logits runs in numpy (dcclip_core.concepts), so the bank stays data."""

    def __init__(self, image):
        super().__init__()
        self.image = image

    def forward(self, pixels):
        return self.image.features_and_map(pixels)


def add_args(p) -> None:
    p.add_argument("model_dir", help="directory with config.json + model.safetensors")
    p.add_argument("--work", default="build/export", help="where the fp32/int8 candidates are kept")
    p.add_argument("--threads", type=int, default=2, help="threads for the fp32-vs-int8 speed comparison")


def run(args) -> int:
    report = export_model(args.model_dir, args.work, threads=args.threads)
    for k, v in report.items():
        if k != "calibration_images":
            print(f"{k:28s} {v}")
    return 0


def parity_images() -> list:
    """Real photos for parity checks (evaluation use only): the bundled demo photos + tests/data."""
    from dcclip_core.config import ASSETS_DIR, REPO_DIR
    from dcclip_core.preprocess import ImageLoadError, load_image
    exts = {".jpg", ".jpeg", ".png"}
    paths = sorted(p for d in (ASSETS_DIR / "demo", REPO_DIR / "tests" / "data") if d.is_dir()
                   for p in d.iterdir() if p.suffix.lower() in exts)
    good = []
    for p in paths:                       # tests/data also holds deliberately broken files
        try:
            load_image(p)
            good.append(p)
        except ImageLoadError:
            pass
    return good


def export_model(model_dir: str | Path, work: str | Path, threads: int = 2) -> dict:
    from dcclip_core.models import load_torch_model
    from dcclip_core.preprocess import load_image, to_pixels
    from dcclip_core.tokenizer import Tokenizer
    from training import export as ex

    model_dir, work = Path(model_dir), Path(work)
    work.mkdir(parents=True, exist_ok=True)
    cfg = ModelConfig.load(model_dir / "config.json")
    model = load_torch_model(model_dir)
    tok = Tokenizer.from_file(model_dir / cfg.files["tokenizer"], max_len=cfg.text.max_len,
                              normalize=cfg.text.normalize)
    report: dict = {}

    # ---- text tower: fp32 + dynamic int8 -------------------------------------------------------------
    ids, mask = tok(PARITY_TEXTS)
    with torch.no_grad():
        ref_t = model.text(torch.from_numpy(ids), torch.from_numpy(mask)).numpy()
    t32, t8 = work / "text.fp32.onnx", work / "text.int8.onnx"
    ex.export_onnx(_TextWrap(model.text), (torch.from_numpy(ids[:2]), torch.from_numpy(mask[:2])), t32,
                   input_names=["input_ids", "attention_mask"], output_names=["embedding"],
                   dynamic_axes={"input_ids": {0: "batch", 1: "seq"}, "attention_mask": {0: "batch", 1: "seq"},
                                 "embedding": {0: "batch"}})
    ex.quantize_dynamic_int8(t32, t8)
    feeds_t = {"input_ids": ids, "attention_mask": mask}
    report["text_parity_fp32"] = ex.check_parity(ref_t, t32, feeds_t, "embedding", min_cos=0.99)
    report["text_parity_int8"] = ex.parity(ref_t, t8, feeds_t, "embedding")
    q_ids, q_mask = tok(["一只猫的照片"])
    text_pick, report["text_timing"] = ex.pick_faster(t32, t8, {"input_ids": q_ids, "attention_mask": q_mask},
                                                      threads=threads)

    # ---- image tower: fp32 + static QDQ int8 ---------------------------------------------------------
    S, mean, std = cfg.image.image_size, cfg.image.mean, cfg.image.std
    px = np.stack([to_pixels(load_image(p, target_size=S), S, mean, std) for p in parity_images()])
    text_space = cfg.joint.space == "text"
    with torch.no_grad():
        if text_space:                  # the "embedding" checked here is the pooled features the mix starts from
            ref_e, ref_f, ref_l = (t.numpy() for t in model.image.features_and_map(torch.from_numpy(px)))
        else:
            ref_e, ref_f = (t.numpy() for t in model.image(torch.from_numpy(px)))
    i32, i8 = work / "image.fp32.onnx", work / "image.int8.onnx"
    if text_space:
        ex.export_onnx(_FeatureWrap(model.image), (torch.from_numpy(px[:2]),), i32, input_names=["pixels"],
                       output_names=["features", "feature_map", "logits"],
                       dynamic_axes={"pixels": {0: "batch"}, "features": {0: "batch"}, "feature_map": {0: "batch"},
                                     "logits": {0: "batch"}})
    else:
        ex.export_onnx(_ImageWrap(model.image), (torch.from_numpy(px[:2]),), i32, input_names=["pixels"],
                       output_names=["embedding", "features"],
                       dynamic_axes={"pixels": {0: "batch"}, "embedding": {0: "batch"}, "features": {0: "batch"}})
    calib_paths = ex.calibration_images(n=32, size=S)
    calib = [{"pixels": to_pixels(load_image(p, target_size=S), S, mean, std)[None]} for p in calib_paths]
    # percentile calibration: on the real photos it kept min cosine 0.90 where MinMax gave 0.84
    ex.quantize_static_int8(i32, i8, calib, method="percentile", keep_fp32_outputs=("logits",) if text_space else ())
    feeds_i = {"pixels": px}
    out_e, out_f = ("features", "feature_map") if text_space else ("embedding", "features")
    report["image_parity_fp32"] = ex.check_parity(ref_e, i32, feeds_i, out_e, min_cos=0.99)
    report["image_parity_fp32_features"] = ex.check_parity(ref_f, i32, feeds_i, out_f, min_cos=0.99)
    report["image_parity_int8"] = ex.parity(ref_e, i8, feeds_i, out_e)
    report["image_parity_int8_features"] = ex.parity(ref_f, i8, feeds_i, out_f)
    if text_space:
        report["image_parity_int8_logits"] = ex.parity(ref_l, i8, feeds_i, "logits")
    report["calibration_images"] = [str(p) for p in calib_paths]
    image_pick, report["image_timing"] = ex.pick_faster(i32, i8, {"pixels": px[:16]}, threads=threads)
    # int8 ships only where it is faster AND close to fp32 (mean cosine >= MIN_INT8_COS on the parity inputs)
    for role, pick, fp32, key in (("text", text_pick, t32, "text_parity_int8"),
                                  ("image", image_pick, i32, "image_parity_int8")):
        if Path(pick).name.endswith("int8.onnx") and report[key]["cos_mean"] < MIN_INT8_COS:
            report[f"{role}_timing"].update(picked="fp32", reason=f"int8 cos_mean < {MIN_INT8_COS}")
            if role == "text":
                text_pick = fp32
            else:
                image_pick = fp32

    # ---- install the picked files --------------------------------------------------------------------
    for old in model_dir.glob("*.onnx"):
        old.unlink()
    for role, src in (("text_onnx", Path(text_pick)), ("image_onnx", Path(image_pick))):
        shutil.copy2(src, model_dir / src.name)
        cfg.files[role] = src.name
    cfg.sha256 = {f: sha256_file(model_dir / f) for f in sorted(set(cfg.files.values()))}
    cfg.extra["export"] = {k: v for k, v in report.items() if k != "calibration_images"}
    cfg.extra["export"]["calibration_images"] = len(report["calibration_images"])
    cfg.save(model_dir / "config.json")
    (work / "export_report.json").write_text(json.dumps(report, indent=2, default=str))
    return report
