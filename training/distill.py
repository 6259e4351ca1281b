"""DC-CLIP stage 1: feature distillation of an image or text student from a teacher on unlabelled data.

    result = run_distill(DistillSettings(modality="image", teacher="efficientnet-lite2", images="~/Photos"))
    result = distill_text(model.text, tokenizer, texts, cache, settings)    # build-default: a student in memory

The teacher runs once over the data and its features go to a float16 ``training.data.FeatureCache`` (one field
per teacher output: ``final``, ``logits``, ``layer<k>``); the student then reproduces them through adapters
(``DistillNet``): its final features through a linear adapter (or, ``final_loss="cosine"``, its own final
embedding by cosine), the teacher's class logits when both share a classifier (KL at a temperature), and
intermediate features at the layer pairs of ``layers`` ([[student_layer, teacher_layer], ...]; 1x1 conv adapters
on pooled feature grids, linear adapters on vectors). Feature loss: SmoothL1 (or MSE), each field divided by the
teacher field's RMS unless ``rms_norm`` is off.

Layer numbers: EfficientNet-Lite = stage 1..7 (8 = head); ViT / text transformers = hidden state k (0 =
embeddings, k = after block k); tiny-cnn = 1..2.

One training loop (``train_steps``: AdamW, warm-up + cosine LR, gradient accumulation, data parallel under
torchrun, bf16 autocast where the CPU has it, checkpoints with resume, JSONL metrics) serves both entry points:
``run_distill`` (the ``python -m training distill`` command: data from folders / text files, teacher by name,
held-out agreement, export) and ``distill_text`` (a text student and corpus already in memory, length-bucketed
batches: stage 1 of ``python -m training build-default``).
"""
from __future__ import annotations

import json
import math
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from dcclip_core.models import TextStudent
from training import ddp
from training.data import FeatureCache
from training.students import build_student, export_model_dir, freeze_batchnorm, student_tokenizer


@dataclass
class DistillSettings:
    modality: str = "image"                  # image | text
    teacher: str = "efficientnet-lite2"      # see training.teachers.load_teacher
    teacher_image_size: int | None = None    # default: the student's image size (one view serves both)
    teacher_device: str = "cpu"              # e.g. cuda: where the teacher fills the feature cache
    student: str = "default"                 # installed model name / model dir, or arch:<template>
    student_init: str = "model"              # model (its weights) | package (pip ImageNet weights) | random
    image: dict = field(default_factory=dict)   # ImageConfig overrides, e.g. {"tower": "vit-tiny", "feature_dim": 192}
    text: dict = field(default_factory=dict)    # TextConfig overrides
    tokenizer: str | None = None             # text students without a model dir: tokenizer.json path
    layers: list = field(default_factory=list)  # [[student_layer, teacher_layer], ...]
    pool: str = "grid"                       # intermediate image features: grid | mean
    grid: int = 2                            # grid x grid average pooling of feature maps / patch tokens
    loss: str = "smoothl1"                   # smoothl1 | mse (features)
    final_loss: str = "feature"              # feature (adapter + loss, like every field) | cosine (own embedding)
    rms_norm: bool = True                    # divide each feature field by the teacher field's RMS in the loss
    logits_loss: str = "kl"                  # kl (softmax KD at kd_temperature) | same (= loss)
    kd_temperature: float = 1.0
    final_weight: float = 1.0
    logits_weight: float = 1.0               # only when teacher and student share a classifier (same classes)
    hidden_weight: float = 0.5
    adapter_init: str = "ridge"              # ridge (least squares on the first training rows) | identity
    adapter_lr_mult: float = 10.0            # adapters learn faster than the pretrained student
    # data
    images: str | None = None                # unlabelled photo folder (image modality)
    views: int = 8                           # augmented views per photo (view 0 = plain centre crop)
    augment: dict = field(default_factory=dict)  # training.data.AugmentConfig overrides
    heldout: str | None = None               # held-out photo folder: student-teacher agreement before/after
    heldout_views: int = 1                   # views per held-out photo (1 = the plain centre crop)
    texts: list = field(default_factory=list)    # text files / folders (text modality)
    heldout_texts: list = field(default_factory=list)
    max_texts: int | None = None
    # optimisation
    epochs: float = 3.0
    batch_size: int = 16                     # per process
    grad_accum: int = 1
    lr: float = 2e-4
    weight_decay: float = 0.01
    warmup_steps: int = 10
    max_steps: int | None = None
    grad_clip: float = 5.0                   # max global gradient norm
    seed: int = 0
    precision: str = "auto"                  # auto (bf16 where the CPU has it) | fp32 | bf16
    freeze_bn: bool = True                   # BatchNorm uses its running statistics (small CPU batches)
    drop_connect: float = 0.0                # EfficientNet stochastic depth while distilling
    train_classifier: bool = True
    # io
    out: str = "runs/distill"
    cache: str | None = None                 # teacher feature cache dir (default <out>/cache)
    log_every: int = 10
    ckpt_every: int = 50
    threads: int | None = None
    export: str | None = None                # write a model directory here at the end
    chunk: int = 32                          # teacher batch when filling the cache


# ---------------------------------------------------------------------------------------------------------
# Student features, adapters, loss
# ---------------------------------------------------------------------------------------------------------
def tower_features(tower, px, layers, pool: str, grid: int, drop_connect: float):
    """Image tower -> {"final": pooled [n, F], "logits": [n, K], "layer<k>": ...} (student side)."""
    from dcclip_core.models import EfficientNetLite, SmallViT, TinyCNN
    from training.teachers.efficientnet import efficientnet_features, pool_map
    bb = tower.backbone
    if isinstance(bb, EfficientNetLite):
        head, out = efficientnet_features(bb.net, px, layers, pool, grid, drop_connect)
        feats = head.mean((2, 3))
    elif isinstance(bb, SmallViT):
        feats, out = bb.features(px, layers, pool, grid)
    elif isinstance(bb, TinyCNN):
        out, x = {}, px
        for i, m in enumerate(bb.net):
            x = m(x)
            if i in (2, 5) and (i // 3 + 1) in layers:
                out[f"layer{i // 3 + 1}"] = pool_map(x, pool, grid)
        feats = x.mean((2, 3))
    else:
        raise ValueError(f"no feature extraction for {type(bb).__name__}")
    out["final"] = feats
    out["logits"] = tower.classifier(feats)
    return out


def text_features(tower: TextStudent, ids: torch.Tensor, mask: torch.Tensor, layers: Sequence[int]) -> dict:
    """Text student -> {"final": pooled [n, W], "layer<k>": masked mean of hidden state k [n, W]}."""
    pooled, hidden = tower.encode_hidden(ids, mask)                     # [n, W], list of [n, L, W]
    m = mask.to(pooled.dtype)[..., None]
    out = {"final": pooled}
    for k in layers:
        out[f"layer{k}"] = (hidden[k] * m).sum(1) / m.sum(1).clamp(min=1.0)
    return out


@torch.no_grad()
def probe_features(modality: str, tower, probe_input, s: DistillSettings) -> dict:
    """The student's features of one input (every layer for a text student): their shapes size the adapters."""
    tower.eval()
    if modality == "image":
        return tower_features(tower, probe_input, [a for a, _ in s.layers], s.pool, s.grid, 0.0)
    pooled, hidden = tower.encode_hidden(*probe_input)
    return {"final": pooled, **{f"layer{k}": hidden[k][:, 0] for k in range(len(hidden))}}


def make_adapter(src_shape, dst_shape) -> nn.Module:
    """1x1 conv (grids) or linear (vectors) from student to teacher width; identity when widths match."""
    cs, ct = src_shape[0], dst_shape[0]
    if len(dst_shape) == 3:
        m = nn.Conv2d(cs, ct, 1)
        if cs == ct:
            with torch.no_grad():
                m.weight.copy_(torch.eye(cs)[:, :, None, None])
                m.bias.zero_()
    else:
        m = nn.Linear(cs, ct)
        if cs == ct:
            nn.init.eye_(m.weight)
            nn.init.zeros_(m.bias)
    return m


class DistillNet(nn.Module):
    """Student tower + adapters: inputs -> predicted teacher fields {"final", "logits"?, "layer<t>"...}."""

    def __init__(self, modality: str, tower, layer_map, teacher_fields: dict, settings: DistillSettings, probe: dict):
        super().__init__()
        self.modality, self.tower, self.s = modality, tower, settings
        self.layer_map = [(int(a), int(b)) for a, b in layer_map]
        self.adapters = nn.ModuleDict()
        self.use_logits = ("logits" in teacher_fields and "logits" in probe and settings.logits_weight > 0
                           and teacher_fields["logits"] == list(probe["logits"].shape[1:]))
        if settings.final_loss == "cosine":                  # the student's own final embedding, no adapter
            if list(probe["final"].shape[1:]) != list(teacher_fields["final"]):
                raise ValueError(f"final_loss cosine compares the student's final features "
                                 f"{tuple(probe['final'].shape[1:])} with the teacher's "
                                 f"{tuple(teacher_fields['final'])}: use final_loss feature (an adapter)")
        elif settings.final_loss == "feature":
            self.adapters["final"] = make_adapter(probe["final"].shape[1:], teacher_fields["final"])
        else:
            raise ValueError(f"final_loss must be feature or cosine, not {settings.final_loss!r}")
        for a, b in self.layer_map:
            key = f"layer{b}"
            if f"layer{a}" not in probe:
                raise ValueError(f"student has no layer {a} (it has {sorted(probe)})")
            if key not in teacher_fields:
                raise ValueError(f"teacher cache has no layer {b}")
            if len(probe[f"layer{a}"].shape[1:]) != len(teacher_fields[key]):
                raise ValueError(f"layer {a} -> {b}: student {tuple(probe[f'layer{a}'].shape[1:])} vs teacher "
                                 f"{tuple(teacher_fields[key])}: use the same pool/grid on both sides")
            self.adapters[key] = make_adapter(probe[f"layer{a}"].shape[1:], teacher_fields[key])

    def student_features(self, batch):
        s = self.s
        if self.modality == "image":
            return tower_features(self.tower, batch, [a for a, _ in self.layer_map], s.pool, s.grid,
                                  s.drop_connect)
        ids, mask = batch
        return text_features(self.tower, ids, mask, [a for a, _ in self.layer_map])

    def forward(self, batch):
        f = self.student_features(batch)
        pred = {"final": self.adapters["final"](f["final"]) if "final" in self.adapters else f["final"]}
        if self.use_logits:
            pred["logits"] = f["logits"]
        for a, b in self.layer_map:
            pred[f"layer{b}"] = self.adapters[f"layer{b}"](f[f"layer{a}"])
        return pred


def distill_loss(pred: dict, target: dict, rms: dict, s: DistillSettings):
    """Weighted SmoothL1 / MSE over fields (each divided by the teacher field's RMS when ``s.rms_norm``), KL on
    logits, 1 - cosine on the final embedding when ``s.final_loss`` is cosine -> (loss, stats)."""
    crit = F.smooth_l1_loss if s.loss == "smoothl1" else F.mse_loss
    if s.loss not in ("smoothl1", "mse"):
        raise ValueError(f"loss must be smoothl1 or mse, not {s.loss!r}")
    terms = {}
    for k, p in pred.items():
        if k == "logits" and s.logits_loss == "kl":
            T = s.kd_temperature
            terms[k] = F.kl_div(F.log_softmax(p.float() / T, -1), F.log_softmax(target[k] / T, -1),
                                reduction="batchmean", log_target=True) * T * T
        elif k == "final" and s.final_loss == "cosine":
            terms[k] = (1.0 - (F.normalize(p.float(), dim=-1) * F.normalize(target[k], dim=-1)).sum(-1)).mean()
        elif s.rms_norm:
            r = max(rms.get(k, 1.0), 1e-6)
            terms[k] = crit(p.float() / r, target[k] / r)
        else:
            terms[k] = crit(p.float(), target[k])
    hidden = [v for k, v in terms.items() if k.startswith("layer")]
    loss = s.final_weight * terms["final"]
    if "logits" in terms:
        loss = loss + s.logits_weight * terms["logits"]
    if hidden:
        loss = loss + s.hidden_weight * sum(hidden) / len(hidden)
    stats = {f"l_{k}": float(v.detach()) for k, v in terms.items()}
    stats["cos_final"] = float(F.cosine_similarity(pred["final"].detach().float(), target["final"], dim=-1).mean())
    stats["loss"] = float(loss.detach())
    return loss, stats


# ---------------------------------------------------------------------------------------------------------
# Adapter initialisation and held-out agreement
# ---------------------------------------------------------------------------------------------------------
def _ridge_lambda(x, y, per_row: int, grid=(1e-3, 1e-2, 1e-1, 1.0, 10.0)) -> float:
    """Ridge strength (a multiple of the mean feature variance) with the best R^2 on a held-out fifth of the
    rows (whole rows: the grid cells of one image stay together). Fewer rows than features overfit otherwise."""
    rows = len(x) // max(1, per_row)
    cut = max(1, rows // 5) * per_row
    xt, yt, xv, yv = x[cut:], y[cut:], x[:cut], y[:cut]
    A, b = xt.T @ xt, xt.T @ yt
    scale = float(A.diagonal().mean()) + 1e-12
    eye = torch.eye(A.shape[0], dtype=A.dtype)
    best, best_r2 = grid[0], -float("inf")
    for g in grid:
        W = torch.linalg.solve(A + g * scale * eye, b)
        r2 = 1 - float((yv - xv @ W).pow(2).sum() / (yv - yt.mean(0)).pow(2).sum().clamp(min=1e-12))
        if r2 > best_r2:
            best, best_r2 = g, r2
    return best * float((x.T @ x).diagonal().mean())


def ridge_init_adapters(net: DistillNet, inputs_fn, cache: FeatureCache, rows: int = 256, chunk: int = 16) -> dict:
    """Least-squares initialisation of every adapter from one no-grad pass of the student over the first
    ``rows`` training rows: the adapted student features start as close to the teacher's as a linear map
    allows, so early gradients do not drag the pretrained student towards an arbitrary projection.
    Returns the R^2 of each fit (on those rows)."""
    was = net.training
    net.eval()
    n = min(rows, len(cache))
    pairs = [("final", "final")] if "final" in net.adapters else []
    pairs += [(f"layer{a}", f"layer{b}") for a, b in net.layer_map]
    X = {k: [] for _, k in pairs}
    with torch.no_grad():
        for st in range(0, n, chunk):
            idx = np.arange(st, min(n, st + chunk))
            f = net.student_features(inputs_fn(idx))
            for src, dst in pairs:
                X[dst].append(f[src].float())
    r2 = {}
    with torch.no_grad():
        for src, dst in pairs:
            x = torch.cat(X[dst])                                             # [n, Cs] or [n, Cs, g, g]
            y = torch.from_numpy(cache.get(np.arange(n))[dst])                # [n, Ct] or [n, Ct, g, g]
            if x.dim() == 4:
                x = x.permute(0, 2, 3, 1).reshape(-1, x.shape[1])
                y = y.permute(0, 2, 3, 1).reshape(-1, y.shape[1])
            xm, ym = x.mean(0), y.mean(0)
            xc, yc = (x - xm).double(), (y - ym).double()
            lam = _ridge_lambda(xc, yc, len(x) // max(1, n))
            A = xc.T @ xc
            W = torch.linalg.solve(A + lam * torch.eye(A.shape[0], dtype=A.dtype), xc.T @ yc)   # [Cs, Ct]
            resid = yc - xc @ W
            r2[dst] = float(1 - resid.pow(2).sum() / yc.pow(2).sum().clamp(min=1e-12))
            m = net.adapters[dst]
            w = W.T.float()
            m.weight.copy_(w.reshape(m.weight.shape))
            m.bias.copy_(ym - xm @ W.float())
    net.train(was)
    return r2


def agreement(net: DistillNet, inputs_fn, cache: FeatureCache, n: int, batch: int = 32) -> dict:
    """Mean student-teacher cosine per field on held-out rows; for logits also top-1 agreement and the cosine
    of the joint-space image embeddings (softmax(logits) @ prototypes) the app actually indexes."""
    was = net.training
    net.eval()
    sums: dict[str, float] = {}
    with torch.no_grad():
        for s in range(0, n, batch):
            idx = np.arange(s, min(n, s + batch))
            pred = net(inputs_fn(idx))
            tgt = {k: torch.from_numpy(v) for k, v in cache.get(idx).items()}
            for k, p in pred.items():
                c = F.cosine_similarity(p.float().flatten(1), tgt[k].flatten(1), dim=-1)
                sums[f"cos_{k}"] = sums.get(f"cos_{k}", 0.0) + float(c.sum())
            if "logits" in pred:
                tower = net.tower
                e_s = tower.embed_probs((pred["logits"].float() / tower.cfg.softmax_temperature).softmax(-1))
                e_t = tower.embed_probs((tgt["logits"] / tower.cfg.softmax_temperature).softmax(-1))
                sums["cos_embedding"] = sums.get("cos_embedding", 0.0) + float((e_s * e_t).sum(-1).sum())
                sums["top1_agree"] = sums.get("top1_agree", 0.0) + float(
                    (pred["logits"].argmax(-1) == tgt["logits"].argmax(-1)).float().sum())
    net.train(was)
    return {k: v / max(n, 1) for k, v in sums.items()}


# ---------------------------------------------------------------------------------------------------------
# The training loop
# ---------------------------------------------------------------------------------------------------------
def cache_targets(cache: FeatureCache) -> Callable[[np.ndarray], dict]:
    """Row indices -> {field: float32 tensor} of the cached teacher features."""
    return lambda idx: {k: torch.from_numpy(v) for k, v in cache.get(idx).items()}


def text_inputs(tokenize: Callable, texts: Sequence[str]) -> Callable[[np.ndarray], tuple]:
    """Row indices -> (ids, mask) int64 tensors of those texts."""
    return lambda idx: tuple(torch.from_numpy(a) for a in tokenize([texts[i] for i in idx]))


def make_optimizer(net: DistillNet, s: DistillSettings) -> tuple[torch.optim.Optimizer, list]:
    """AdamW over the trainable student (lr) and adapters (lr x adapter_lr_mult) -> (optimizer, params)."""
    adapter_params = [p for p in net.adapters.parameters() if p.requires_grad]
    body_params = [p for n, p in net.named_parameters() if p.requires_grad and not n.startswith("adapters.")]
    opt = torch.optim.AdamW([{"params": body_params, "base": s.lr},
                             {"params": adapter_params, "base": s.lr * s.adapter_lr_mult}],
                            lr=s.lr, weight_decay=s.weight_decay)
    return opt, body_params + adapter_params


def train_steps(net: DistillNet, opt, params: list, s: DistillSettings, d: ddp.Dist, out: Path | None, *,
                start: int, total: int, batch_rows: Callable[[int], np.ndarray], inputs: Callable,
                targets: Callable, rms: dict, precision: str, log: ddp.JsonlLog, progress: bool = True,
                desc: str = "stage 1 distill") -> dict:
    """Optimizer steps ``start``..``total``: step k trains on the global batch ``batch_rows(k)`` (this process's
    share, in ``s.grad_accum`` micro-batches), LR warm-up + cosine, gradient clipping, metrics every
    ``log_every`` steps, a checkpoint in ``out`` every ``ckpt_every`` (and at the end)."""
    from tqdm import tqdm
    dnet = ddp.wrap(net, d)
    net.train()
    if s.freeze_bn:
        freeze_batchnorm(net)

    def prepare(step):
        rows = batch_rows(step)
        return len(rows), [(inputs(mb), targets(mb)) for mb in ddp.micro_batches(rows, d, s.grad_accum)]

    def forward(m, mb):
        x, tgt = mb
        return distill_loss(m(x), tgt, rms, s)

    bar = tqdm(total=total, initial=start, desc=desc, disable=not (progress and d.main), mininterval=5)
    t_train, seen, last = time.time(), 0, {}
    with ThreadPoolExecutor(1) as pool:                   # the next batch is read while this one trains
        fut = pool.submit(prepare, start) if start < total else None
        for step in range(start, total):
            n_rows, mbs = fut.result()
            fut = pool.submit(prepare, step + 1) if step + 1 < total else None
            for g in opt.param_groups:
                g["lr"] = ddp.cosine_lr(step, total, s.warmup_steps, g["base"])
            opt.zero_grad(set_to_none=True)
            stats = ddp.accumulate(dnet, mbs, forward, precision, d)
            torch.nn.utils.clip_grad_norm_(params, s.grad_clip)
            opt.step()
            seen += n_rows
            bar.update(1)
            if (step + 1) % s.log_every == 0 or step + 1 == total:
                stats = {k: ddp.all_reduce_mean(v, d) for k, v in sorted(stats.items())}
                last = {"step": step + 1, "lr": opt.param_groups[0]["lr"], "elapsed_s": time.time() - t_train,
                        "samples_per_s": seen / max(time.time() - t_train, 1e-9), **stats}
                log.write(last)
                bar.set_postfix(loss=f"{stats['loss']:.4f}", cos=f"{stats['cos_final']:.3f}")
            if out is not None and d.main and ((step + 1) % s.ckpt_every == 0 or step + 1 == total):
                ddp.save_checkpoint(out, {"net": net}, opt, step + 1, {"settings": asdict(s)})
    bar.close()
    train_s = time.time() - t_train
    return {"train_s": train_s, "last": last, "samples_per_s": seen / max(train_s, 1e-9) if seen else None}


# ---------------------------------------------------------------------------------------------------------
# The command: data from folders / files, teacher by name
# ---------------------------------------------------------------------------------------------------------
def run_distill(s: DistillSettings, progress: bool = True) -> dict:
    """Stage 1 end to end (caches, training, held-out agreement, checkpoints); returns the result dict."""
    from training.data import AugmentConfig, ImageViews, cache_key, list_images, read_texts
    from training.teachers import teacher_fingerprint

    d, threads, precision, out = ddp.start_run(s)
    cache_root = Path(s.cache) if s.cache else out / "cache"
    model, cfg, src, notes = build_student(s.student, s.student_init, s.image, s.text, s.seed)
    t_layers = sorted({int(b) for _, b in s.layers})
    teacher = None

    def get_teacher():
        nonlocal teacher
        if teacher is None:
            from training.teachers import load_teacher
            teacher = load_teacher(s.teacher, image_size=s.teacher_image_size or cfg.image.image_size,
                                   device=s.teacher_device)
        return teacher

    # ---- data + teacher caches (built once, by the main process) ------------------------------------------
    if s.modality == "image":
        if not s.images:
            raise ValueError("image distillation needs --images DIR (an unlabelled photo folder)")
        aug = AugmentConfig(**{"size": cfg.image.image_size, **s.augment})
        train = ImageViews(list_images(s.images), s.views, aug, s.seed).check()
        held = ImageViews(list_images(s.heldout), s.heldout_views, aug, s.seed + 1).check() if s.heldout else None
        if not len(train):
            raise ValueError(f"{s.images}: no readable images")
        t_size = s.teacher_image_size or cfg.image.image_size

        def image_compute(views):
            def compute(idx):
                t = get_teacher()
                px = torch.from_numpy(views.pixels(idx, t.image_size, t.mean, t.std))
                return {k: v.numpy() for k, v in t.image_features(px, t_layers, s.pool, s.grid).items()}
            return compute
        sets = {"train": (train, image_compute(train))}
        if held:
            sets["heldout"] = (held, image_compute(held))
        fingerprints = {k: v.fingerprint() for k, (v, _) in sets.items()}
        key_base = (teacher_fingerprint(s.teacher), t_size, t_layers, s.pool, s.grid)
    elif s.modality == "text":
        texts = read_texts(s.texts, s.max_texts)
        held_texts = read_texts(s.heldout_texts) if s.heldout_texts else []
        if not texts:
            raise ValueError("text distillation needs --texts FILE ... (one text per line, or .jsonl/.csv)")

        def text_compute(rows):
            def compute(idx):
                return {k: v.numpy() for k, v in get_teacher().text_features([rows[i] for i in idx], t_layers).items()}
            return compute
        sets = {"train": (texts, text_compute(texts))}
        if held_texts:
            sets["heldout"] = (held_texts, text_compute(held_texts))
        fingerprints = {k: cache_key(v) for k, (v, _) in sets.items()}
        key_base = (teacher_fingerprint(s.teacher), t_layers)
    else:
        raise ValueError(f"modality must be image or text, not {s.modality!r}")

    t0 = time.time()
    caches_built = {}
    if d.main:
        for name, (rows, compute) in sets.items():
            key = cache_key(*key_base, fingerprints[name])
            t_c = time.time()
            FeatureCache.build(cache_root / name, len(rows), compute, key, chunk=s.chunk, progress=progress,
                               desc=f"teacher features ({name})")
            caches_built[name] = round(time.time() - t_c, 2)
    ddp.barrier(d)
    caches = {name: FeatureCache(cache_root / name) for name in sets}
    teacher_s = time.time() - t0
    teacher = None                                            # free the teacher before training

    # ---- the trainable module -------------------------------------------------------------------------------
    if s.modality == "image":
        tower = model.image
        probe_in = torch.zeros(1, 3, cfg.image.image_size, cfg.image.image_size)
        S, mean, std = cfg.image.image_size, cfg.image.mean, cfg.image.std

        def inputs(views):
            return lambda idx: torch.from_numpy(views.pixels(idx, S, mean, std))
        train_inputs = inputs(train)
        held_inputs = inputs(held) if held else None
        if not s.train_classifier:
            tower.classifier.requires_grad_(False)
    else:
        tokenizer = student_tokenizer(cfg, src, s.tokenizer)
        tower = model.text
        tower.align.requires_grad_(False)                     # the stage-2 head is not part of stage 1
        probe_in = tuple(torch.from_numpy(a) for a in tokenizer(["probe"]))
        train_inputs = text_inputs(tokenizer, texts)
        held_inputs = text_inputs(tokenizer, held_texts) if held_texts else None
    probe = probe_features(s.modality, tower, probe_in, s)
    net = DistillNet(s.modality, tower, s.layers, caches["train"].meta["fields"], s, probe)
    if s.modality == "image" and not net.use_logits:
        tower.classifier.requires_grad_(False)                # unused: DDP needs every trainable param used
    opt, params = make_optimizer(net, s)
    start = ddp.load_checkpoint(out, {"net": net}, opt) or 0
    if start == 0 and s.adapter_init == "ridge" and d.main:
        result_ridge = ridge_init_adapters(net, train_inputs, caches["train"])
    else:
        result_ridge = None
    N = len(caches["train"])
    G = s.batch_size * d.world * s.grad_accum
    total = int(s.max_steps or max(1, math.ceil(s.epochs * N / G)))
    order = ddp.global_order(N, s.seed, int(math.ceil(total * G / N)) + 1)
    log = ddp.JsonlLog(out / "metrics.jsonl", d)
    result: dict = {"rank": d.rank, "modality": s.modality, "teacher": s.teacher, "student": s.student, "notes": notes,
                    "world": d.world, "precision": precision, "threads": threads, "train_rows": N,
                    "teacher_cache_s": caches_built, "steps": total, "global_batch": G}
    if result_ridge:
        result["adapter_ridge_r2"] = result_ridge
    if s.modality == "image":
        result["train_images"] = len(train.paths)
        result["unreadable"] = train.errors + (held.errors if held else [])
    if d.main and "heldout" in caches:
        before = out / "heldout_before.json"
        if start == 0 or not before.is_file():
            result["heldout_before"] = agreement(net, held_inputs, caches["heldout"], len(caches["heldout"]))
            before.write_text(json.dumps(result["heldout_before"]))
            log.write({"step": start, "split": "heldout", **result["heldout_before"]})
        else:                                                 # resumed: "before" is the untrained student's
            result["heldout_before"] = json.loads(before.read_text())

    # ---- train ---------------------------------------------------------------------------------------------
    trained = train_steps(net, opt, params, s, d, out, start=start, total=total,
                          batch_rows=lambda step: ddp.batches_of(order, step, G), inputs=train_inputs,
                          targets=cache_targets(caches["train"]), rms=caches["train"].rms, precision=precision,
                          log=log, progress=progress, desc=f"stage 1 distill ({s.modality})")
    result.update(train_s=round(trained["train_s"], 2), teacher_s=round(teacher_s, 2), last=trained["last"],
                  samples_per_s=trained["samples_per_s"])
    if d.main:
        if "heldout" in caches:
            result["heldout_after"] = agreement(net, held_inputs, caches["heldout"], len(caches["heldout"]))
            log.write({"step": total, "split": "heldout", **result["heldout_after"]})
        from safetensors.torch import save_file
        save_file({k: v.detach().contiguous() for k, v in tower.state_dict().items()},
                  str(out / f"student_{s.modality}.safetensors"))
        if s.export:
            tag = f"distill-{Path(s.teacher).name}"
            export_model_dir(model, cfg, src, s.export, {"tag": tag, "teacher": s.teacher, "steps": total,
                                                         **{k: result.get(k) for k in ("heldout_before",
                                                                                      "heldout_after")}},
                             tokenizer=s.tokenizer)
            result["exported"] = str(s.export)
    return ddp.finish_run(d, out, result, log)


# ---------------------------------------------------------------------------------------------------------
# A text student and corpus in memory (build-default)
# ---------------------------------------------------------------------------------------------------------
def init_text_student_from_teacher(student: TextStudent, tw: dict[str, torch.Tensor], kept_ids: np.ndarray,
                                   teacher_layers: Sequence[int], position_offset: int = 0) -> None:
    """Copy e5 weights into the student: pruned vocabulary rows, positions, and the chosen teacher layers.

    ``tw`` uses the names of ``training.teachers.e5.E5Teacher.weights()``.
    """
    sd = student.state_dict()
    kept = torch.as_tensor(np.asarray(kept_ids), dtype=torch.long)
    with torch.no_grad():
        tok = tw["word_embeddings"][kept] + tw["token_type_embeddings"][0]
        student.tok.weight.copy_(tok)
        L = student.pos.weight.shape[0]
        student.pos.weight.copy_(tw["position_embeddings"][position_offset:position_offset + L])
        student.ln_emb.weight.copy_(tw["embeddings_layernorm.weight"])
        student.ln_emb.bias.copy_(tw["embeddings_layernorm.bias"])
        names = {"q": "query", "k": "key", "v": "value", "o": "attention_output", "ln1": "attention_layernorm",
                 "fc1": "intermediate", "fc2": "output", "ln2": "output_layernorm"}
        for i, t in enumerate(teacher_layers):
            blk = student.layers[i]
            for ours, theirs in names.items():
                mod = getattr(blk, ours)
                mod.weight.copy_(tw[f"layers.{t}.{theirs}.weight"])
                mod.bias.copy_(tw[f"layers.{t}.{theirs}.bias"])
    assert set(sd) == set(student.state_dict())


def token_lengths(tokenize: Callable, texts: Sequence[str], chunk: int = 4096) -> np.ndarray:
    """Token count of every text (int32 [n]), for length-bucketed batching."""
    out = np.zeros(len(texts), np.int32)
    for i in range(0, len(texts), chunk):
        _, mask = tokenize(list(texts[i:i + chunk]))
        out[i:i + chunk] = mask.sum(1)
    return out


def length_bucketed_batches(order: np.ndarray, lengths: np.ndarray, batch_size: int, rng: np.random.Generator,
                            window: int = 64) -> list[np.ndarray]:
    """Cut ``order`` into batches of similar token length: within each window of ``window`` batches the
    indices are sorted by length, then the batches are shuffled. Random as a whole, but a batch of short
    names is no longer padded to the longest gloss (2-3x less compute on this corpus)."""
    span = batch_size * window
    batches: list[np.ndarray] = []
    for w in range(0, len(order), span):
        chunk = order[w:w + span]
        chunk = chunk[np.argsort(lengths[chunk], kind="stable")]
        part = [np.sort(chunk[i:i + batch_size]) for i in range(0, len(chunk), batch_size)]
        batches += [part[j] for j in rng.permutation(len(part))]
    return batches


def distill_text(student: TextStudent, tokenize: Callable, texts: Sequence[str], cache: FeatureCache,
                 s: DistillSettings, out_dir: str | Path | None = None, val_idx: np.ndarray | None = None,
                 progress: bool = True) -> dict:
    """Stage 1 of a text student held in memory on cached teacher features of ``texts`` (one process).

    ``cache`` has a row per text (fields ``final`` and the ``layer<t>`` of ``s.layers``); ``val_idx`` rows are
    kept out of training and measured at the end (``val_cos``: mean cosine of the final embeddings). Steps:
    ``epochs`` x (training texts // batch_size), at most ``max_steps``; batches are length-bucketed. Checkpoints
    (resumed automatically) and metrics.jsonl go to ``out_dir``.
    tokenize(list[str]) -> (ids int64 (b, L), mask int64 (b, L)) numpy.
    """
    torch.manual_seed(s.seed)
    rng = np.random.default_rng(s.seed)
    val_idx = np.asarray(val_idx if val_idx is not None else [], dtype=np.int64)
    train_idx = np.setdiff1d(np.arange(len(texts)), val_idx)
    student.align.requires_grad_(False)                       # the stage-2 head is not part of stage 1
    probe = probe_features("text", student, tuple(torch.from_numpy(a) for a in tokenize(["probe"])), s)
    net = DistillNet("text", student, s.layers, cache.meta["fields"], s, probe)
    opt, params = make_optimizer(net, s)
    out = Path(out_dir) if out_dir else None
    if out:
        out.mkdir(parents=True, exist_ok=True)
    start = (ddp.load_checkpoint(out, {"net": net}, opt) or 0) if out else 0
    total = int(s.epochs * max(1, len(train_idx) // s.batch_size))
    if s.max_steps:
        total = min(total, s.max_steps)
    order = np.concatenate([rng.permutation(train_idx) for _ in range(int(math.ceil(s.epochs)) + 1)])
    batches = length_bucketed_batches(order, token_lengths(tokenize, texts), s.batch_size, rng)
    log = ddp.JsonlLog(out / "metrics.jsonl" if out else None)
    trained = train_steps(net, opt, params, s, ddp.Dist(), out, start=start, total=total,
                          batch_rows=lambda step: batches[step], inputs=text_inputs(tokenize, texts),
                          targets=cache_targets(cache), rms=cache.rms, precision=ddp.resolve_precision(s.precision),
                          log=log, progress=progress)
    log.close()
    student.eval()
    result = {"steps": total, "train_s": trained["train_s"], "samples_per_s": trained["samples_per_s"]}
    if len(val_idx):
        result["val_cos"] = evaluate_distill(student, tokenize, [texts[i] for i in val_idx],
                                             cache.get(val_idx)["final"])
    return result


@torch.no_grad()
def evaluate_distill(student: TextStudent, tokenize: Callable, texts: Sequence[str], teacher_final: np.ndarray,
                     batch_size: int = 256) -> float:
    """Mean cosine between the student's and the teacher's final embeddings."""
    was = student.training
    student.eval()
    cos = []
    for i in range(0, len(texts), batch_size):
        ids, mask = tokenize(list(texts[i:i + batch_size]))
        s = student.distill_embedding(torch.from_numpy(ids), torch.from_numpy(mask))
        t = F.normalize(torch.from_numpy(teacher_final[i:i + batch_size]), dim=-1)
        cos.append((s * t).sum(-1))
    student.train(was)
    return float(torch.cat(cos).mean())
