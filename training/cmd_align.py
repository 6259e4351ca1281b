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
import json
import math
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np


@dataclass
class AlignSettings:
    student: str = "default"                 # model name / dir (e.g. a stage-1 export) or arch:<template>
    student_init: str = "model"
    tokenizer: str | None = None
    pairs: list = field(default_factory=list)
    prototypes: list = field(default_factory=list)
    heldout_pairs: list = field(default_factory=list)
    languages: list = field(default_factory=lambda: ["en", "zh"])
    train_text: str = "all"                  # all | head | none
    train_image: str = "none"                # none | classifier | all
    image_text_weight: float = 1.0
    text_text_weight: float = 1.0
    proto_weight: float = 1.0
    init_temperature: float = 0.07
    max_logit_scale: float = 100.0
    learn_temperature: bool = True
    steps: int = 200
    batch_size: int = 32                     # per process and per source
    grad_accum: int = 1
    lr: float = 5e-5                         # text / image towers
    head_lr: float = 1e-3                    # G, classifier and the temperature
    weight_decay: float = 1e-4
    warmup_steps: int = 10
    seed: int = 0
    precision: str = "auto"
    threads: int | None = None
    out: str = "runs/align"
    log_every: int = 10
    ckpt_every: int = 50
    export: str | None = None


# ---------------------------------------------------------------------------------------------------------
# Data
# ---------------------------------------------------------------------------------------------------------
def read_prototype_items(paths, templates: dict[str, list[str]] | None = None) -> list[dict]:
    """-> [{"text", "classes": [int], "lang"}] from JSONL items or a JSON class-name table (see module doc)."""
    from training.data import guess_lang
    items: list[dict] = []
    for p in map(Path, paths):
        if p.suffix.lower() == ".jsonl":
            for ln in p.read_text(encoding="utf-8").splitlines():
                if ln.strip():
                    r = json.loads(ln)
                    items.append({"text": r["text"], "classes": [int(c) for c in r["classes"]],
                                  "lang": r.get("lang") or guess_lang(r["text"])})
            continue
        table = json.loads(p.read_text(encoding="utf-8"))
        if templates is None:
            from training.evaluate import default_templates
            templates = {"en": default_templates("en"), "zh": default_templates("zh")}
        for k, names in table.items():
            for lang, ns in (names.items() if isinstance(names, dict) else [("en", names)]):
                for n in ([ns] if isinstance(ns, str) else ns):
                    for t in templates.get(lang, ["{}"]):
                        items.append({"text": t.format(n), "classes": [int(k)], "lang": lang})
    return items


class TextBank:
    """Every distinct text of the run, indexed; optionally its (frozen) student features cached."""

    def __init__(self):
        self.texts: list[str] = []
        self.index: dict[str, int] = {}

    def add(self, t: str) -> int:
        if t not in self.index:
            self.index[t] = len(self.texts)
            self.texts.append(t)
        return self.index[t]


def _pick(rng: np.random.Generator, options: list):
    return options[int(rng.integers(len(options)))]


# ---------------------------------------------------------------------------------------------------------
# Model
# ---------------------------------------------------------------------------------------------------------
def _align_net_class():
    import torch
    import torch.nn.functional as F
    from torch import nn

    from training.align import info_nce

    class AlignNet(nn.Module):
        """Text student + G + image tower + learnable temperature; forward(batch) -> (loss, stats)."""

        def __init__(self, model, s: AlignSettings, d, tokenizer, text_feats, image_cache):
            super().__init__()
            self.text, self.image, self.s, self.d = model.text, model.image, s, d
            self.tokenizer = tokenizer
            self.text_feats = text_feats            # [T, W] frozen student features, or None (tower trains)
            self.image_cache = image_cache          # {"feats": [I, F]} frozen backbone features, or None
            self.logit_scale = nn.Parameter(torch.tensor(math.log(1.0 / s.init_temperature)),
                                            requires_grad=s.learn_temperature)

        # ---- embeddings [n, D], unit rows --------------------------------------------------------------
        def embed_text(self, idx, texts):
            if self.text_feats is not None:
                pooled = self.text_feats[torch.as_tensor(idx)]
            else:
                ids, mask = self.tokenizer([texts[i] for i in idx])
                pooled = self.text.encode_hidden(torch.from_numpy(ids), torch.from_numpy(mask))[0]
            return F.normalize(self.text.align(pooled).float(), dim=-1)

        def embed_image(self, idx, pixels_fn):
            if self.image_cache is not None:
                feats = self.image_cache[torch.as_tensor(idx)]
            else:
                feats = self.image.backbone(pixels_fn(idx))
            p = (self.image.classifier(feats).float() / self.image.cfg.softmax_temperature).softmax(-1)
            return F.normalize(p @ self.image.protos, dim=-1)

        def gather(self, x):
            if not self.d.enabled:
                return x
            import torch.distributed.nn.functional as dnf
            return torch.cat(dnf.all_gather(x), 0)

        def forward(self, batch):
            scale = self.logit_scale.exp().clamp(max=self.s.max_logit_scale)
            loss = self.logit_scale.new_zeros(())
            stats = {}
            texts, pixels_fn = batch["texts"], batch["pixels"]
            if "it" in batch:
                img_idx, txt_idx = batch["it"]
                a = self.gather(self.embed_text(txt_idx, texts))
                b = self.gather(self.embed_image(img_idx, pixels_fn))
                l_it = info_nce(a, b, scale)
                loss = loss + self.s.image_text_weight * l_it
                stats["l_image_text"] = float(l_it.detach())
                stats["acc_image_text"] = float(((a @ b.T).argmax(1) == torch.arange(len(a))).float().mean())
            if "tt" in batch:
                ia, ib = batch["tt"]
                a = self.gather(self.embed_text(ia, texts))
                b = self.gather(self.embed_text(ib, texts))
                l_tt = info_nce(a, b, scale)
                loss = loss + self.s.text_text_weight * l_tt
                stats["l_text_text"] = float(l_tt.detach())
            if "proto" in batch:
                ti, ci = batch["proto"]
                a = self.gather(self.embed_text(ti, texts))
                b = self.gather(batch["targets"][torch.as_tensor(ci)])
                l_p = info_nce(a, b, scale)
                loss = loss + self.s.proto_weight * l_p
                stats["l_proto"] = float(l_p.detach())
            stats["loss"] = float(loss.detach())
            stats["temperature"] = float(1.0 / scale.detach())
            return loss, stats

    return AlignNet


@dataclass
class _Sources:
    it_rows: list            # [(image index, [text indices of allowed languages], [(lang, text index)])]
    tt_rows: list            # [[(lang, text index), ...]] rows with >= 2 texts
    proto_by_target: list    # target m -> [text indices]
    targets: object          # torch [M, D] or None


def _image_id(images: list[str], path: str) -> int:
    try:
        return images.index(path)
    except ValueError:
        images.append(path)
        return len(images) - 1


def _build_sources(s: AlignSettings, bank: TextBank, images: list[str], protos) -> _Sources:
    from training.data import read_pairs
    it_rows, tt_rows = [], []
    for f in s.pairs:
        for r in read_pairs(f):
            texts = [(lang, bank.add(t)) for lang, t in r["texts"] if lang in s.languages]
            if r["image"]:
                if not texts:
                    continue
                i = _image_id(images, r["image"])
                it_rows.append((i, [t for _, t in texts]))
                langs = {lang for lang, _ in texts}
                if len(langs) > 1:                     # EN and ZH captions of one image: a translation pair
                    tt_rows.append(texts)
            elif len(texts) >= 2:
                tt_rows.append(texts)
    proto_by_target, targets = [], None
    if s.prototypes:
        from training.align import build_targets
        items = [it for it in read_prototype_items(s.prototypes) if it["lang"] in s.languages]
        item_target, targets, _ = build_targets(items, protos)
        proto_by_target = [[] for _ in range(len(targets))]
        for it, m in zip(items, item_target):
            proto_by_target[int(m)].append(bank.add(it["text"]))
    return _Sources(it_rows, tt_rows, proto_by_target, targets)


def _global_batch(src: _Sources, s: AlignSettings, step: int, G: int, orders: dict, world: int = 1) -> dict:
    """The global batch of one step (identical on every process; each then takes its rank's slice)."""
    from training.ddp import batches_of
    out = {}
    if src.it_rows:
        rows = batches_of(orders["it"], step, G)
        img, txt = [], []
        for r in rows:
            i, tids = src.it_rows[int(r)]
            rng = np.random.default_rng([s.seed, step, int(r), 1])
            img.append(i)
            txt.append(_pick(rng, tids))                               # caption language drawn per sample
        out["it"] = (np.array(img), np.array(txt))
    if src.tt_rows:
        rows = batches_of(orders["tt"], step, G)
        a, b = [], []
        for r in rows:
            texts = src.tt_rows[int(r)]
            rng = np.random.default_rng([s.seed, step, int(r), 2])
            x = _pick(rng, texts)
            others = [t for t in texts if t[0] != x[0]] or [t for t in texts if t != x]
            y = _pick(rng, others)
            a.append(x[1])
            b.append(y[1])
        out["tt"] = (np.array(a), np.array(b))
    if src.proto_by_target:
        usable = [m for m, ts in enumerate(src.proto_by_target) if ts]
        rng = np.random.default_rng([s.seed, step, 3])
        size = min(G, len(usable)) // world * world                         # every process gets a share
        tgt = rng.choice(usable, size=size, replace=False)                  # distinct classes per batch
        out["proto"] = (np.array([_pick(rng, src.proto_by_target[m]) for m in tgt]), tgt)
    return out


def _rank_part(gb: dict, d) -> dict:
    from training.ddp import rank_slice
    return {k: tuple(rank_slice(a, d) for a in v) for k, v in gb.items()}


# ---------------------------------------------------------------------------------------------------------
# Held-out retrieval
# ---------------------------------------------------------------------------------------------------------
def retrieval(net, rows: list, images: list[str], texts: list[str], pixels_fn) -> dict:
    """Recall@1 image->text and text->image per caption language on held-out image-caption rows."""
    import torch
    was = net.training
    net.eval()
    res = {}
    with torch.no_grad():
        img_idx = np.array([r[0] for r in rows])
        E_i = torch.cat([net.embed_image(img_idx[s:s + 32], pixels_fn) for s in range(0, len(img_idx), 32)])
        for lang in sorted({lang for r in rows for lang, _ in r[2]}):
            sel = [(k, next(t for l2, t in r[2] if l2 == lang)) for k, r in enumerate(rows) if any(l2 == lang for l2, _ in r[2])]
            if len(sel) < 2:
                continue
            k_idx = torch.as_tensor([k for k, _ in sel])
            E_t = net.embed_text(np.array([t for _, t in sel]), texts)
            S = E_t @ E_i[k_idx].T                                              # [m, m]
            target = torch.arange(len(sel))
            res[f"t2i_r1_{lang}"] = float((S.argmax(1) == target).float().mean())
            res[f"i2t_r1_{lang}"] = float((S.argmax(0) == target).float().mean())
    net.train(was)
    return res


# ---------------------------------------------------------------------------------------------------------
# Run
# ---------------------------------------------------------------------------------------------------------
def run_align(s: AlignSettings, progress: bool = True) -> dict:
    import torch

    from dcclip_core.tokenizer import Tokenizer
    from training import ddp
    from training.cmd_distill import DistillSettings, _set_bn_eval, build_student, export_model_dir
    from training.data import read_pairs

    d, threads, precision, out = ddp.start_run(s)
    model, cfg, src, notes = build_student(DistillSettings(student=s.student, student_init=s.student_init, seed=s.seed))
    tok_path = Path(s.tokenizer) if s.tokenizer else (src / cfg.files.get("tokenizer", "tokenizer.json") if src else None)
    if tok_path is None or not tok_path.is_file():
        raise ValueError("the text student needs a tokenizer: a model dir with tokenizer.json, or --set tokenizer=PATH")
    tokenizer = Tokenizer.from_file(tok_path, max_len=cfg.text.max_len, normalize=cfg.text.normalize)

    bank, images = TextBank(), []
    srcs = _build_sources(s, bank, images, model.image.protos)
    held_rows = []
    for f in s.heldout_pairs:
        for r in read_pairs(f):
            if r["image"]:
                texts = [(lang, bank.add(t)) for lang, t in r["texts"] if lang in s.languages]
                if texts:
                    held_rows.append((_image_id(images, r["image"]), [t for _, t in texts], texts))
    if not (srcs.it_rows or srcs.tt_rows or srcs.proto_by_target):
        raise ValueError("nothing to align: give --pairs (image captions / EN-ZH pairs) and/or --prototypes")
    S, mean, std = cfg.image.image_size, cfg.image.mean, cfg.image.std

    def pixels_fn(idx):
        from dcclip_core.preprocess import load_image, to_pixels
        return torch.from_numpy(np.stack([to_pixels(load_image(images[i], target_size=S), S, mean, std) for i in idx]))

    # ---- frozen parts: computed once ------------------------------------------------------------------------
    t0 = time.time()
    model.eval()
    text_feats = image_cache = None
    with torch.no_grad():
        if s.train_text in ("head", "none"):
            from training.distill import encode_pooled
            text_feats = encode_pooled(model.text, tokenizer, bank.texts)                  # [T, W]
        if s.train_image in ("none", "classifier") and images:
            image_cache = torch.cat([model.image.backbone(pixels_fn(range(a, min(len(images), a + 16))))
                                     for a in range(0, len(images), 16)])                  # [I, F]
    frozen_s = time.time() - t0
    for p in model.parameters():
        p.requires_grad_(False)
    if s.train_text == "all":
        model.text.requires_grad_(True)
    if s.train_text in ("all", "head"):
        model.text.align.requires_grad_(True)
    if s.train_image == "all":
        model.image.backbone.requires_grad_(True)
    if s.train_image in ("all", "classifier"):
        model.image.classifier.requires_grad_(True)
    AlignNet = _align_net_class()
    net = AlignNet(model, s, d, tokenizer, text_feats, image_cache)
    heads = [p for n, p in net.named_parameters() if p.requires_grad and (n.startswith("text.align") or
             n.startswith("image.classifier") or n == "logit_scale")]
    body = [p for n, p in net.named_parameters() if p.requires_grad and not any(p is h for h in heads)]
    groups = [{"params": heads, "lr": s.head_lr, "base": s.head_lr}]
    if body:
        groups.append({"params": body, "lr": s.lr, "base": s.lr})
    opt = torch.optim.AdamW(groups, weight_decay=s.weight_decay)
    start = ddp.load_checkpoint(out, {"net": net}, opt) or 0
    G = s.batch_size * d.world
    orders = {"it": ddp.global_order(len(srcs.it_rows), s.seed, math.ceil(s.steps * G / max(1, len(srcs.it_rows))) + 1)
              if srcs.it_rows else None,
              "tt": ddp.global_order(len(srcs.tt_rows), s.seed + 1, math.ceil(s.steps * G / max(1, len(srcs.tt_rows))) + 1)
              if srcs.tt_rows else None}
    log = ddp.JsonlLog(out / "metrics.jsonl", d)
    result = {"rank": d.rank, "student": s.student, "notes": notes, "world": d.world, "precision": precision,
              "threads": threads, "texts": len(bank.texts), "images": len(images), "image_text_pairs": len(srcs.it_rows),
              "text_pairs": len(srcs.tt_rows), "prototype_classes": len(srcs.proto_by_target), "steps": s.steps,
              "global_batch": G, "frozen_features_s": round(frozen_s, 2)}
    if d.main and held_rows:
        result["heldout_before"] = retrieval(net, held_rows, images, bank.texts, pixels_fn)
        log.write({"step": start, "split": "heldout", **result["heldout_before"]})

    dnet = ddp.wrap(net, d, find_unused=True)
    net.train()
    _set_bn_eval(net)

    def forward(m, part):
        return m({**part, "texts": bank.texts, "pixels": pixels_fn, "targets": srcs.targets})

    from tqdm import tqdm
    bar = tqdm(total=s.steps, initial=start, desc="stage 2 align", disable=not (progress and d.main), mininterval=5)
    t_train, seen, last = time.time(), 0, {}
    params = [p for g in groups for p in g["params"]]
    for step in range(start, s.steps):
        for g in opt.param_groups:
            g["lr"] = ddp.cosine_lr(step, s.steps, s.warmup_steps, g["base"])
        opt.zero_grad(set_to_none=True)
        gb = _global_batch(srcs, s, step, G * s.grad_accum, orders, d.world * s.grad_accum)
        mine = _rank_part(gb, d)
        parts = [{k: tuple(a[j::s.grad_accum] for a in v) for k, v in mine.items()} for j in range(s.grad_accum)]
        stats = ddp.accumulate(dnet, parts, forward, precision, d)
        torch.nn.utils.clip_grad_norm_(params, 5.0)
        opt.step()
        seen += sum(len(v[0]) for v in gb.values())
        bar.update(1)
        if (step + 1) % s.log_every == 0 or step + 1 == s.steps:
            stats = {k: ddp.all_reduce_mean(v, d) for k, v in sorted(stats.items())}
            last = {"step": step + 1, "elapsed_s": time.time() - t_train, "samples": seen,
                    "samples_per_s": seen / max(time.time() - t_train, 1e-9), **stats}
            log.write(last)
            bar.set_postfix(loss=f"{stats['loss']:.3f}")
        if d.main and ((step + 1) % s.ckpt_every == 0 or step + 1 == s.steps):
            ddp.save_checkpoint(out, {"net": net}, opt, step + 1, {"settings": asdict(s)})
    bar.close()
    train_s = time.time() - t_train
    result.update(train_s=round(train_s, 2), last=last, samples_per_s=seen / max(train_s, 1e-9) if seen else None,
                  temperature=float(1.0 / net.logit_scale.detach().exp().clamp(max=s.max_logit_scale)))
    if d.main:
        if held_rows:
            result["heldout_after"] = retrieval(net, held_rows, images, bank.texts, pixels_fn)
            log.write({"step": s.steps, "split": "heldout", **result["heldout_after"]})
        if s.export:
            export_model_dir(model, cfg, src, s.export, {"tag": "align", "steps": s.steps,
                                                         **{k: result.get(k) for k in ("heldout_before", "heldout_after")}},
                             tokenizer=s.tokenizer)
            result["exported"] = s.export
        (out / "result.json").write_text(json.dumps(result, indent=1, default=str))
    log.close()
    ddp.barrier(d)
    ddp.cleanup(d)
    return result


# ---------------------------------------------------------------------------------------------------------
# CLI
# ---------------------------------------------------------------------------------------------------------
FLAGS = {
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
    "--precision": ("precision", str, "auto | fp32 | bf16"),
    "--threads": ("threads", int, "torch threads per process"),
    "--out": ("out", str, "run directory (checkpoints, metrics.jsonl, result.json)"),
    "--export": ("export", str, "write the aligned model directory here"),
}


def add_args(p: argparse.ArgumentParser) -> None:
    p.formatter_class = argparse.RawDescriptionHelpFormatter
    p.description = __doc__
    p.add_argument("--config", default=None, help="recipe in training/configs (stage: align) or a JSON file")
    for flag, (_, typ, help_) in FLAGS.items():
        if typ is list:
            p.add_argument(flag, nargs="+", default=None, help=help_)
        else:
            p.add_argument(flag, type=typ, default=None, help=help_)
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override any setting (JSON values)")
    p.add_argument("--json", action="store_true", help="print the result as one JSON line")


def settings_from_args(args) -> AlignSettings:
    from training.configs import apply_overrides, load_config, to_dataclass
    data = load_config(args.config) if args.config else {}
    for flag, (name, _, _) in FLAGS.items():
        v = getattr(args, flag[2:].replace("-", "_"), None)
        if v is not None:
            data[name] = v
    return to_dataclass(AlignSettings, apply_overrides(data, args.set), "align settings")


def run(args: argparse.Namespace) -> int:
    try:
        s = settings_from_args(args)
    except (ValueError, FileNotFoundError) as e:
        print(f"python -m training align: {e}", file=sys.stderr)
        return 2
    try:
        res = run_align(s, progress=not args.json)
    except ValueError as e:
        print(f"python -m training align: {e}", file=sys.stderr)
        return 2
    if res.get("rank", 0) != 0:
        return 0
    if args.json:
        print(json.dumps(res, default=str))
    else:
        for k in ("image_text_pairs", "text_pairs", "prototype_classes", "steps", "global_batch", "precision",
                  "train_s", "samples_per_s", "temperature", "heldout_before", "heldout_after", "exported"):
            if k in res:
                print(f"{k:18s} {res[k]}")
    return 0
