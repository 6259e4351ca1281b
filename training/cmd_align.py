"""`python -m training align`: stage 2 — multilingual vision-language alignment with symmetric InfoNCE.

    python -m training align --student runs/l2l0/model --pairs captions.jsonl --out runs/align --export runs/align/model
    torchrun --nproc_per_node=2 -m training align ...                      # data-parallel (gloo, CPU)

Data (any mix; every step draws one batch from each source given):
  --pairs FILE ...       JSONL / CSV rows: ``image`` + captions (``en`` / ``zh`` / ``captions``), and rows without an
                         image that pair texts (EN<->ZH translations). See training.data.read_pairs.
  --prototypes FILE ...  class items aligned to the image tower's class prototypes: JSONL ``{"text", "classes": [k]}``,
                         or JSON ``{"<class index>": {"en": name(s), "zh": name(s)}}`` (expanded with the bundled
                         short templates).

Losses, each ½(CE(text->image) + CE(image->text)) with one learnable temperature: image<->caption (the caption's
language drawn per sample, so batches mix EN and ZH), EN<->ZH text pairs (and the EN/ZH captions of one image),
text<->class prototype (distinct classes per batch). Embeddings: text = normalise(G(student text features)), image
= normalise(softmax(classifier(f)) @ prototypes) — the D-dimensional part of the runtime's joint space.

By default the image tower is frozen (its embeddings are computed once) and the whole text student + G train;
``--train-text head`` trains only G on cached text features, ``--train-image classifier|all`` opens the image side.
Under torchrun, embeddings are all-gathered before the loss, so 2 processes x batch B = 1 process x batch 2B.
"""
from __future__ import annotations

import argparse

from training.cli import RUN_FLAGS, Flags, add_settings_args, run_stage, settings_from_args as _settings

FLAGS: Flags = {
    "--student": ("student", str, "model name / dir to align (e.g. a stage-1 export), or arch:<template>"),
    "--pairs": ("pairs", list, "JSONL/CSV files of image + captions (EN/ZH) and EN<->ZH text pairs"),
    "--prototypes": ("prototypes", list, "class items for the image tower's prototypes (JSONL or class-name JSON)"),
    "--heldout-pairs": ("heldout_pairs", list, "held-out image-caption pairs: recall@1 before/after"),
    "--languages": ("languages", list, "caption languages to use (default: en zh)"),
    "--train-text": ("train_text", str, "all | head | none"),
    "--train-image": ("train_image", str, "none | classifier | all"),
    "--steps": ("steps", int, "optimizer steps"),
    "--batch-size": ("batch_size", int, "per process and per data source"),
    "--grad-accum": ("grad_accum", int, "micro-batches per step (negatives stay within a micro-batch)"),
    "--lr": ("lr", float, "learning rate of the towers"),
    "--head-lr": ("head_lr", float, "learning rate of G / classifier / temperature"),
    "--seed": ("seed", int, "seed"),
    **RUN_FLAGS,
    "--out": ("out", str, "run directory (checkpoints, metrics.jsonl, result.json)"),
    "--export": ("export", str, "write the aligned model directory here"),
}



def add_args(p: argparse.ArgumentParser) -> None:
    add_settings_args(p, FLAGS, __doc__, "recipe in training/configs (stage: align) or a JSON file")


def settings_from_args(args: argparse.Namespace):
    from training.align import AlignSettings
    return _settings(args, AlignSettings, FLAGS, "align settings")


def run(args: argparse.Namespace) -> int:
    from training.align import run_align
    return run_stage("align", args, settings_from_args, run_align,
                     ("image_text_pairs", "text_pairs", "prototype_classes", "steps", "global_batch", "precision",
                      "train_s", "samples_per_s", "temperature", "heldout_before", "heldout_after", "exported"),
                     width=18)
