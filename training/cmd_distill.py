"""`python -m training distill`: stage 1 — distil an image or text student from a teacher on unlabelled data.

    python -m training distill --config lite2-to-lite0 --images ~/Photos --heldout ~/Photos-test --out runs/l2l0
    python -m training distill --config e5-text --texts corpus.txt --out runs/text
    torchrun --nproc_per_node=2 -m training distill --config lite2-to-lite0 ...      # data-parallel (gloo, CPU)

Image side: every photo becomes ``views`` deterministic augmented views (random resized crop, flip, colour
jitter); the teacher runs once over all views and its features go to a float16 memmap cache
(``<out>/cache``), so later epochs, resumed runs and other students read them from disk. Text side: lines of
.txt / .jsonl / .csv files, cached the same way.

The student reproduces the teacher's final features (through a linear adapter), the teacher's class logits
when both have the same classifier (EfficientNet-Lite teachers), and intermediate features at the layer pairs
of ``layers`` ([[student_layer, teacher_layer], ...], 1x1 conv adapters on pooled feature grids, linear
adapters on vectors). Loss: SmoothL1 (or MSE) on features divided by each teacher field's RMS.

Layer numbers: EfficientNet-Lite = stage 1..7 (8 = head); ViT / text transformers = hidden state k (0 =
embeddings, k = after block k); tiny-cnn = 1..2. Recipes live in training/configs/*.json (``--config``);
flags and ``--set key=value`` override them. Checkpoints (<out>/last.*) resume automatically; metrics go to
<out>/metrics.jsonl; ``--export DIR`` writes a model directory (config.json, model.safetensors,
tokenizer.json) that ``python -m training export DIR`` and ``python -m training eval --model DIR`` take.
"""
from __future__ import annotations

import argparse

from training.cli import RUN_FLAGS, Flags, add_settings_args, run_stage, settings_from_args as _settings

FLAGS: Flags = {
    "--modality": ("modality", str, "image | text"),
    "--teacher": ("teacher", str, "e5 | efficientnet-lite0/2 | hf:<dir> (AltCLIP / Chinese-CLIP / CLIP saved locally)"),
    "--teacher-image-size": ("teacher_image_size", int, "teacher input size (default: the student's)"),
    "--teacher-device": ("teacher_device", str, "device for the teacher's one pass over the data (cpu, cuda)"),
    "--student": ("student", str, "model name / model dir to start from, or arch:<template>"),
    "--student-init": ("student_init", str, "model | package | random"),
    "--images": ("images", str, "unlabelled photo folder (image modality)"),
    "--views": ("views", int, "augmented views per photo (teacher features cached for each)"),
    "--heldout": ("heldout", str, "held-out photo folder: student-teacher cosine before/after"),
    "--texts": ("texts", list, "text files / folders (text modality)"),
    "--heldout-texts": ("heldout_texts", list, "held-out text files"),
    "--layers": ("layers", "pairs", "layer pairs student:teacher, e.g. 3:3,5:5,7:7"),
    "--loss": ("loss", str, "smoothl1 | mse"),
    "--epochs": ("epochs", float, "epochs over the cached views / texts"),
    "--batch-size": ("batch_size", int, "per-process batch"),
    "--grad-accum": ("grad_accum", int, "gradient accumulation steps"),
    "--lr": ("lr", float, "peak learning rate (AdamW, cosine schedule)"),
    "--max-steps": ("max_steps", int, "stop after this many optimizer steps"),
    "--seed": ("seed", int, "seed for views, order and initialisation"),
    **RUN_FLAGS,
    "--out": ("out", str, "run directory (checkpoints, metrics.jsonl, cache, result.json)"),
    "--cache": ("cache", str, "teacher feature cache directory (default <out>/cache)"),
    "--export": ("export", str, "write a model directory here at the end"),
}


def add_args(p: argparse.ArgumentParser) -> None:
    add_settings_args(p, FLAGS, __doc__,
                      "recipe name in training/configs (e.g. lite2-to-lite0, e5-text) or a JSON file",
                      "override any setting (JSON values), e.g. --set augment.scale_min=0.5")


def settings_from_args(args: argparse.Namespace):
    from training.distill import DistillSettings
    return _settings(args, DistillSettings, FLAGS, "distill settings")


def run(args: argparse.Namespace) -> int:
    from training.distill import run_distill
    return run_stage("distill", args, settings_from_args, run_distill,
                     ("train_rows", "steps", "global_batch", "precision", "teacher_cache_s", "train_s", "samples_per_s",
                      "heldout_before", "heldout_after", "exported"), width=16, hide=("unreadable",))
