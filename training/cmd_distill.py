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
import json
import math
import shutil
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np


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
# Students
# ---------------------------------------------------------------------------------------------------------
def build_student(s: DistillSettings):
    """-> (DualEncoder, ModelConfig, source model dir or None, notes)."""
    import torch

    from dcclip_core.config import ModelConfig, architecture, model_dir
    from dcclip_core.models import DualEncoder, backbone_package_weights
    notes = []
    if s.student.startswith("arch:"):
        cfg, src = architecture(s.student[5:]), None
    else:
        src = model_dir(s.student)
        cfg = ModelConfig.load(src / "config.json")
    for k, v in s.image.items():
        if not hasattr(cfg.image, k):
            raise ValueError(f"image.{k}: not an ImageConfig field")
        setattr(cfg.image, k, v)
    for k, v in s.text.items():
        if not hasattr(cfg.text, k):
            raise ValueError(f"text.{k}: not a TextConfig field")
        setattr(cfg.text, k, v)
    model = DualEncoder(cfg)
    state: dict = {}
    if s.student_init == "model" and src is not None:
        from safetensors.torch import load_file
        state = {k: v.float() if v.is_floating_point() else v
                 for k, v in load_file(str(src / cfg.files.get("weights", "model.safetensors"))).items()}
        if cfg.image.tower.startswith("efficientnet-lite") and not any(k.startswith("image.backbone.") for k in state):
            state = {**backbone_package_weights(cfg.image.tower), **state}
    elif s.student_init == "package":
        state = backbone_package_weights(cfg.image.tower)
    elif s.student_init not in ("random", "model"):
        raise ValueError(f"student_init must be model, package or random, not {s.student_init!r}")
    if state:
        own = model.state_dict()
        fit = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
        skipped = sorted(set(state) - set(fit))
        model.load_state_dict(fit, strict=False)
        notes.append(f"initialised {len(fit)} tensors from {src or 'package weights'}"
                     + (f", skipped {len(skipped)} that do not fit the config" if skipped else ""))
        if not any(k == "image.protos" for k in fit):
            model.image.set_prototypes()
    else:
        torch.manual_seed(s.seed)
        model.image.set_prototypes()
        notes.append("random initialisation")
    return model, cfg, src, notes


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


def _adapter(src_shape, dst_shape):
    """1x1 conv (grids) or linear (vectors) from student to teacher width; identity when widths match."""
    import torch
    from torch import nn
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


def _distill_net_class():
    from torch import nn

    class DistillNet(nn.Module):
        """Student tower + adapters: inputs -> predicted teacher fields {"final", "logits"?, "layer<t>"...}."""

        def __init__(self, modality: str, tower, layer_map, teacher_fields: dict, settings: DistillSettings,
                     probe):
            super().__init__()
            self.modality, self.tower, self.s = modality, tower, settings
            self.layer_map = [(int(a), int(b)) for a, b in layer_map]
            self.adapters = nn.ModuleDict()
            self.use_logits = ("logits" in teacher_fields and "logits" in probe and settings.logits_weight > 0
                               and teacher_fields["logits"] == list(probe["logits"].shape[1:]))
            self.adapters["final"] = _adapter(probe["final"].shape[1:], teacher_fields["final"])
            for a, b in self.layer_map:
                key = f"layer{b}"
                if f"layer{a}" not in probe:
                    raise ValueError(f"student has no layer {a} (it has {sorted(probe)})")
                if key not in teacher_fields:
                    raise ValueError(f"teacher cache has no layer {b}")
                if len(probe[f"layer{a}"].shape[1:]) != len(teacher_fields[key]):
                    raise ValueError(f"layer {a} -> {b}: student {tuple(probe[f'layer{a}'].shape[1:])} vs teacher "
                                     f"{tuple(teacher_fields[key])}: use the same pool/grid on both sides")
                self.adapters[key] = _adapter(probe[f"layer{a}"].shape[1:], teacher_fields[key])

        def student_features(self, batch):
            s = self.s
            if self.modality == "image":
                return tower_features(self.tower, batch, [a for a, _ in self.layer_map], s.pool, s.grid,
                                      s.drop_connect)
            ids, mask = batch
            pooled, hidden = self.tower.encode_hidden(ids, mask)
            m = mask.to(pooled.dtype)[..., None]
            out = {"final": pooled}
            for a, _ in self.layer_map:
                out[f"layer{a}"] = (hidden[a] * m).sum(1) / m.sum(1).clamp(min=1.0)
            return out

        def forward(self, batch):
            f = self.student_features(batch)
            pred = {"final": self.adapters["final"](f["final"])}
            if self.use_logits:
                pred["logits"] = f["logits"]
            for a, b in self.layer_map:
                pred[f"layer{b}"] = self.adapters[f"layer{b}"](f[f"layer{a}"])
            return pred

    return DistillNet


def distill_loss(pred: dict, target: dict, rms: dict, s: DistillSettings):
    """Weighted SmoothL1 / MSE over fields, each divided by the teacher field's RMS."""
    import torch.nn.functional as F
    crit = F.smooth_l1_loss if s.loss == "smoothl1" else F.mse_loss
    if s.loss not in ("smoothl1", "mse"):
        raise ValueError(f"loss must be smoothl1 or mse, not {s.loss!r}")
    terms, stats = {}, {}
    for k, p in pred.items():
        if k == "logits" and s.logits_loss == "kl":
            T = s.kd_temperature
            terms[k] = F.kl_div(F.log_softmax(p.float() / T, -1), F.log_softmax(target[k] / T, -1),
                                reduction="batchmean", log_target=True) * T * T
            continue
        r = max(rms.get(k, 1.0), 1e-6)
        terms[k] = crit(p.float() / r, target[k] / r)
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


def _ridge_lambda(x, y, per_row: int, grid=(1e-3, 1e-2, 1e-1, 1.0, 10.0)) -> float:
    """Ridge strength (a multiple of the mean feature variance) with the best R^2 on a held-out fifth of the
    rows (whole rows: the grid cells of one image stay together). Fewer rows than features overfit otherwise."""
    import torch
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


def ridge_init_adapters(net, inputs_fn, cache, s: DistillSettings, rows: int = 256, chunk: int = 16) -> dict:
    """Least-squares initialisation of every adapter from one no-grad pass of the student over the first
    ``rows`` training rows: the adapted student features start as close to the teacher's as a linear map
    allows, so early gradients do not drag the pretrained student towards an arbitrary projection.
    Returns the R^2 of each fit (on those rows)."""
    import torch
    was = net.training
    net.eval()
    n = min(rows, len(cache))
    pairs = [("final", "final")] + [(f"layer{a}", f"layer{b}") for a, b in net.layer_map]
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


# ---------------------------------------------------------------------------------------------------------
# Held-out agreement
# ---------------------------------------------------------------------------------------------------------
def agreement(net, inputs_fn, cache, n: int, batch: int = 32) -> dict:
    """Mean student-teacher cosine per field on held-out rows; for logits also top-1 agreement and the cosine
    of the joint-space image embeddings (softmax(logits) @ prototypes) the app actually indexes."""
    import torch
    import torch.nn.functional as F
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
# Run
# ---------------------------------------------------------------------------------------------------------
def _set_bn_eval(module) -> None:
    from torch import nn
    for m in module.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.eval()


def export_model_dir(model, cfg, src, out_dir: str | Path, extra: dict, tokenizer: str | None = None) -> Path:
    """A model directory the export / eval commands take: config.json, model.safetensors (fp16), tokenizer."""
    import torch
    from safetensors.torch import save_file
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    weights = {k: (v.detach().to(torch.float16) if v.is_floating_point() else v.detach()).contiguous()
               for k, v in model.state_dict().items()}
    save_file(weights, str(out_dir / "model.safetensors"), metadata={"format": "pt"})
    tok = Path(tokenizer) if tokenizer else (src / cfg.files.get("tokenizer", "tokenizer.json") if src else None)
    cfg = type(cfg).from_dict(cfg.to_dict())
    cfg.files = {"weights": "model.safetensors"}
    if tok and tok.is_file():
        shutil.copy2(tok, out_dir / "tokenizer.json")
        cfg.files["tokenizer"] = "tokenizer.json"
    cfg.sha256 = {}
    cfg.name = out_dir.name
    cfg.id = f"{cfg.id}+{extra.get('tag', 'distill')}"
    cfg.extra = {**cfg.extra, "distill": extra}
    cfg.extra.pop("export", None)
    cfg.save(out_dir / "config.json")
    return out_dir


def run_distill(s: DistillSettings, progress: bool = True) -> dict:
    """Stage 1 end to end (caches, training, held-out agreement, checkpoints); returns the result dict."""
    import torch

    from training import ddp
    from training.data import AugmentConfig, FeatureCache, ImageViews, cache_key, list_images, read_texts
    from training.teachers import teacher_fingerprint

    d, threads, precision, out = ddp.start_run(s)
    cache_root = Path(s.cache) if s.cache else out / "cache"
    model, cfg, src, notes = build_student(s)
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
        from dcclip_core.tokenizer import Tokenizer
        tok_path = Path(s.tokenizer) if s.tokenizer else (src / cfg.files.get("tokenizer", "tokenizer.json")
                                                          if src else None)
        if tok_path is None or not tok_path.is_file():
            raise ValueError("text students need a tokenizer: a model dir with tokenizer.json, or --set tokenizer=PATH")
        tokenizer = Tokenizer.from_file(tok_path, max_len=cfg.text.max_len, normalize=cfg.text.normalize)
        tower = model.text
        tower.align.requires_grad_(False)                     # the stage-2 head is not part of stage 1
        probe_in = tuple(torch.from_numpy(a) for a in tokenizer(["probe"]))

        def inputs(rows):
            return lambda idx: tuple(torch.from_numpy(a) for a in tokenizer([rows[i] for i in idx]))
        train_inputs = inputs(texts)
        held_inputs = inputs(held_texts) if held_texts else None
    with torch.no_grad():
        tower.eval()
        if s.modality == "image":
            probe = tower_features(tower, probe_in, [a for a, _ in s.layers], s.pool, s.grid, 0.0)
        else:
            pooled, hidden = tower.encode_hidden(*probe_in)
            probe = {"final": pooled, **{f"layer{k}": hidden[k][:, 0] for k in range(len(hidden))}}
    DistillNet = _distill_net_class()
    net = DistillNet(s.modality, tower, s.layers, caches["train"].meta["fields"], s, probe)
    if s.modality == "image" and not net.use_logits:
        tower.classifier.requires_grad_(False)                # unused: DDP needs every trainable param used
    adapter_params = [p for p in net.adapters.parameters() if p.requires_grad]
    body_params = [p for n, p in net.named_parameters() if p.requires_grad and not n.startswith("adapters.")]
    params = body_params + adapter_params
    opt = torch.optim.AdamW([{"params": body_params, "base": s.lr},
                             {"params": adapter_params, "base": s.lr * s.adapter_lr_mult}],
                            lr=s.lr, weight_decay=s.weight_decay)
    start = ddp.load_checkpoint(out, {"net": net}, opt) or 0
    if start == 0 and s.adapter_init == "ridge" and d.main:
        result_ridge = ridge_init_adapters(net, train_inputs, caches["train"], s)
    else:
        result_ridge = None
    rms = caches["train"].rms
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
    dnet = ddp.wrap(net, d)
    net.train()
    if s.freeze_bn:
        _set_bn_eval(net)
    targets_of = lambda idx: {k: torch.from_numpy(v) for k, v in caches["train"].get(idx).items()}

    def prepare(step):
        mbs = ddp.micro_batches(ddp.batches_of(order, step, G), d, s.grad_accum)
        return [(train_inputs(mb), targets_of(mb)) for mb in mbs]

    def forward(m, mb):
        x, tgt = mb
        return distill_loss(m(x), tgt, rms, s)

    from tqdm import tqdm
    bar = tqdm(total=total, initial=start, desc=f"stage 1 distill ({s.modality})", disable=not (progress and d.main),
               mininterval=5)
    t_train, seen, last = time.time(), 0, {}
    with ThreadPoolExecutor(1) as pool:
        fut = pool.submit(prepare, start) if start < total else None
        for step in range(start, total):
            mbs = fut.result()
            fut = pool.submit(prepare, step + 1) if step + 1 < total else None
            for g in opt.param_groups:
                g["lr"] = ddp.cosine_lr(step, total, s.warmup_steps, g["base"])
            opt.zero_grad(set_to_none=True)
            stats = ddp.accumulate(dnet, mbs, forward, precision, d)
            torch.nn.utils.clip_grad_norm_(params, 5.0)
            opt.step()
            seen += G
            bar.update(1)
            if (step + 1) % s.log_every == 0 or step + 1 == total:
                stats = {k: ddp.all_reduce_mean(v, d) for k, v in sorted(stats.items())}
                last = {"step": step + 1, "lr": opt.param_groups[0]["lr"], "elapsed_s": time.time() - t_train,
                        "samples_per_s": seen / max(time.time() - t_train, 1e-9), **stats}
                log.write(last)
                bar.set_postfix(loss=f"{stats['loss']:.4f}", cos=f"{stats['cos_final']:.3f}")
            if d.main and ((step + 1) % s.ckpt_every == 0 or step + 1 == total):
                ddp.save_checkpoint(out, {"net": net}, opt, step + 1, {"settings": asdict(s)})
    bar.close()
    train_s = time.time() - t_train
    result.update(train_s=round(train_s, 2), teacher_s=round(teacher_s, 2), last=last,
                  samples_per_s=seen / max(train_s, 1e-9) if seen else None)
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
        (out / "result.json").write_text(json.dumps(result, indent=1, default=str))
    log.close()
    ddp.barrier(d)
    ddp.cleanup(d)
    return result


# ---------------------------------------------------------------------------------------------------------
# CLI
# ---------------------------------------------------------------------------------------------------------
FLAGS = {  # flag -> (settings field, type, help)
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
    "--precision": ("precision", str, "auto | fp32 | bf16"),
    "--threads": ("threads", int, "torch threads per process"),
    "--out": ("out", str, "run directory (checkpoints, metrics.jsonl, cache, result.json)"),
    "--cache": ("cache", str, "teacher feature cache directory (default <out>/cache)"),
    "--export": ("export", str, "write a model directory here at the end"),
}


def add_args(p: argparse.ArgumentParser) -> None:
    p.formatter_class = argparse.RawDescriptionHelpFormatter
    p.description = __doc__
    p.add_argument("--config", default=None, help="recipe name in training/configs (e.g. lite2-to-lite0, e5-text) "
                   "or a JSON file")
    for flag, (_, typ, help_) in FLAGS.items():
        if typ is list:
            p.add_argument(flag, nargs="+", default=None, help=help_)
        else:
            p.add_argument(flag, type=str if typ == "pairs" else typ, default=None, help=help_)
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override any setting (JSON values), e.g. --set augment.scale_min=0.5")
    p.add_argument("--json", action="store_true", help="print the result as one JSON line")


def settings_from_args(args) -> DistillSettings:
    from training.configs import apply_overrides, load_config, to_dataclass
    data = load_config(args.config) if args.config else {}
    for flag, (name, typ, _) in FLAGS.items():
        v = getattr(args, flag[2:].replace("-", "_"), None)
        if v is None:
            continue
        if typ == "pairs":
            v = [[int(x) for x in pair.split(":")] for pair in v.split(",") if pair]
        data[name] = v
    data = apply_overrides(data, args.set)
    return to_dataclass(DistillSettings, data, "distill settings")


def run(args: argparse.Namespace) -> int:
    try:
        s = settings_from_args(args)
    except (ValueError, FileNotFoundError) as e:
        print(f"python -m training distill: {e}", file=sys.stderr)
        return 2
    res = run_distill(s, progress=not args.json)
    if res.get("rank", 0) != 0:                               # torchrun: only rank 0 reports
        return 0
    if args.json:
        print(json.dumps({k: v for k, v in res.items() if k != "unreadable"}, default=str))
    else:
        for k in ("train_rows", "steps", "global_batch", "precision", "teacher_cache_s", "train_s", "samples_per_s",
                  "heldout_before", "heldout_after", "exported"):
            if k in res:
                print(f"{k:16s} {res[k]}")
    return 0
