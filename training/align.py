"""DC-CLIP stage 2: multilingual vision-language alignment with a symmetric InfoNCE loss.

Two entry points share the loss (``info_nce``):

* ``run_align`` (the ``python -m training align`` command): a student model (its text tower and head G, and
  optionally its image side) trained on any mix of image-caption pairs (EN and ZH), EN<->ZH text pairs and
  class-prototype items, one batch per source per step, data parallel under torchrun; held-out recall, export.
* ``train_alignment`` + ``choose_gamma`` (``python -m training build-default``): only the head G, on cached text
  features, against class prototypes; the seen-class calibration chosen on seen classes alone.

Image side: the image tower's class prototypes (unit rows of ``ImageTower.protos``; a text that names several
classes, e.g. a hypernym, targets the normalised mean of their prototypes), or for photos
normalise(softmax(classifier(f)) @ prototypes). Text side: student (or teacher) features through the alignment
head G. Loss = 1/2 (CE(text->image) + CE(image->text)) with a learnable temperature; every batch holds distinct
targets, with EN and ZH texts mixed.
"""
from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from dcclip_core.zeroshot import templates as bundled_templates
from training import ddp
from training.data import guess_lang, read_pairs
from training.students import build_student, encode_pooled, export_model_dir, freeze_batchnorm, student_tokenizer


@dataclass
class AlignConfig:
    steps: int = 800
    batch_size: int = 256
    lr: float = 3e-3
    weight_decay: float = 1e-4
    init_temperature: float = 0.07
    max_logit_scale: float = 100.0
    seed: int = 0
    log_every: int = 50


def build_targets(items: Sequence[dict], protos: torch.Tensor) -> tuple[np.ndarray, torch.Tensor, list[tuple]]:
    """items[i]["classes"] -> (item_target int64 [N], targets [M, D] unit rows, keys [M] class tuples)."""
    keys: dict[tuple, int] = {}
    item_target = np.zeros(len(items), np.int64)
    for i, it in enumerate(items):
        key = tuple(sorted(int(c) for c in it["classes"]))
        item_target[i] = keys.setdefault(key, len(keys))
    key_list = list(keys)
    targets = torch.stack([F.normalize(protos[list(k)].mean(0), dim=0) for k in key_list])   # [M, D]
    return item_target, targets, key_list


def info_nce(text: torch.Tensor, image: torch.Tensor, logit_scale: torch.Tensor) -> torch.Tensor:
    """Symmetric InfoNCE over matched rows of text [B, D] and image [B, D] (both L2-normalised)."""
    logits = logit_scale * text @ image.T                                  # [B, B]
    labels = torch.arange(len(text))
    return 0.5 * (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels))


def train_alignment(head: nn.Module, text_fn: Callable[[np.ndarray], torch.Tensor], item_target: np.ndarray,
                    targets: torch.Tensor, cfg: AlignConfig, extra_params: Sequence[nn.Parameter] = (),
                    log_path: str | Path | None = None, progress: bool = False) -> dict:
    """Train G (``head``) so that text_fn(item indices) -> [B, W] features land on their targets.

    ``text_fn`` returns cached features for a frozen text tower, or runs a trainable student (then pass its
    parameters as ``extra_params``).
    """
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    by_target: list[np.ndarray] = [np.empty(0, np.int64)] * len(targets)
    order = np.argsort(item_target, kind="stable")
    bounds = np.searchsorted(item_target[order], np.arange(len(targets) + 1))
    for m in range(len(targets)):
        by_target[m] = order[bounds[m]:bounds[m + 1]]
    usable = np.array([m for m in range(len(targets)) if len(by_target[m])])
    logit_scale = nn.Parameter(torch.tensor(math.log(1.0 / cfg.init_temperature)))
    params = [p for p in head.parameters() if p.requires_grad] + list(extra_params) + [logit_scale]
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    log = open(log_path, "a") if log_path else None
    t0 = time.time()
    B = min(cfg.batch_size, len(usable))
    losses = []
    for step in range(cfg.steps):
        lr = cfg.lr * 0.5 * (1 + math.cos(math.pi * step / cfg.steps))
        for g in opt.param_groups:
            g["lr"] = lr
        tgt = rng.choice(usable, size=B, replace=False)                    # distinct targets per batch
        idx = np.array([rng.choice(by_target[m]) for m in tgt])            # one random text per target
        g_txt = F.normalize(head(text_fn(idx)), dim=-1)                     # [B, D]
        loss = info_nce(g_txt, targets[torch.as_tensor(tgt)], logit_scale.exp().clamp(max=cfg.max_logit_scale))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(float(loss))
        if log and (step % cfg.log_every == 0 or step == cfg.steps - 1):
            log.write(json.dumps({"stage": "align", "step": step, "loss": float(loss), "lr": lr,
                                  "temperature": float(1 / logit_scale.exp())}) + "\n")
            log.flush()
    if log:
        log.close()
    dt = time.time() - t0
    return {"steps": cfg.steps, "final_loss": float(np.mean(losses[-20:])), "train_s": dt,
            "samples_per_s": cfg.steps * B / max(dt, 1e-9), "temperature": float(1 / logit_scale.exp())}


# ---------------------------------------------------------------------------------------------------------
# Generalised zero-shot scoring and calibration (choosing seen_gamma on seen classes only)
# ---------------------------------------------------------------------------------------------------------


def joint_text(g: torch.Tensor, gamma: float, eps: float) -> torch.Tensor:
    """[n, D] unit text vectors -> [n, D+1] joint embeddings (see dcclip_core.models)."""
    g = F.normalize(g, dim=-1)
    return F.normalize(torch.cat([g, torch.full_like(g[:, :1], -gamma / eps)], -1), dim=-1)


def joint_protos(protos: torch.Tensor, seen: torch.Tensor, eps: float) -> torch.Tensor:
    """[K, D] prototypes + [K] seen mask -> [K, D+1] image-side joint embeddings of one-hot class inputs."""
    return F.normalize(torch.cat([F.normalize(protos, dim=-1), eps * seen[:, None].float()], -1), dim=-1)


def class_queries(head: nn.Module, feats: torch.Tensor, item_class: np.ndarray, classes: np.ndarray) -> torch.Tensor:
    """Ensemble per class: mean of unit G(text) over that class's query texts -> [len(classes), D] unit rows."""
    with torch.no_grad():
        g = F.normalize(head(feats), dim=-1)
    rows = []
    for c in classes:
        sel = np.where(item_class == c)[0]
        rows.append(F.normalize(g[torch.as_tensor(sel)].mean(0), dim=0) if len(sel) else torch.zeros(g.shape[1]))
    return torch.stack(rows)


def topk_hits(q: torch.Tensor, P: torch.Tensor, classes: np.ndarray, ks=(1, 5)) -> dict[int, np.ndarray]:
    """q [C, D'] against P [K, D'] -> {k: bool [C] true class in top-k}."""
    S = q @ P.T
    top = S.topk(max(ks), dim=1).indices.numpy()
    return {k: (top[:, :k] == classes[:, None]).any(1) for k in ks}


def choose_gamma(head_factory: Callable[[], nn.Module], text_fn_factory, items_class: np.ndarray,
                 item_target: np.ndarray, targets: torch.Tensor, seen_classes: np.ndarray,
                 query_feats: torch.Tensor, query_class: np.ndarray, protos: torch.Tensor, eps: float,
                 cfg: AlignConfig, n_val: int = 100, seed: int = 1,
                 grid=np.round(np.arange(0.0, 0.42, 0.02), 2)) -> dict:
    """Pick seen_gamma by generalised zero-shot validation *inside the seen classes*.

    n_val seen classes play "unseen": G is trained on the rest, then for each gamma the harmonic mean of top-1
    (among all K prototypes) on the remaining-seen and the pseudo-unseen classes is measured.
    """
    rng = np.random.default_rng(seed)
    val = rng.permutation(seen_classes)[:n_val]
    tr_classes = np.setdiff1d(seen_classes, val)
    tr_set = set(tr_classes.tolist())
    keep = np.array([all(c in tr_set for c in cl) for cl in items_class], bool)   # items about tr classes only
    head = head_factory()
    sub = np.where(keep)[0]
    remap = {m: j for j, m in enumerate(np.unique(item_target[sub]))}
    sub_target = np.array([remap[m] for m in item_target[sub]])
    sub_targets = targets[torch.as_tensor(sorted(remap, key=remap.get))]
    text_fn = text_fn_factory(sub)
    train_alignment(head, text_fn, sub_target, sub_targets, cfg)
    seen_mask = torch.zeros(len(protos))
    seen_mask[torch.as_tensor(tr_classes)] = 1
    P = joint_protos(protos, seen_mask, eps)
    rows = []
    for gamma in grid:
        res = {}
        for name, cls in (("seen", tr_classes), ("unseen", val)):
            q = joint_text(class_queries(head, query_feats, query_class, cls), float(gamma), eps)
            res[name] = float(topk_hits(q, P, cls)[1].mean())
        hm = 2 * res["seen"] * res["unseen"] / max(res["seen"] + res["unseen"], 1e-9)
        rows.append({"gamma": float(gamma), **res, "hm": hm})
    best = max(rows, key=lambda r: r["hm"])
    return {"gamma": best["gamma"], "best": best, "grid": rows, "n_val_classes": int(n_val)}


# ---------------------------------------------------------------------------------------------------------
# The command: settings, data sources
# ---------------------------------------------------------------------------------------------------------
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


def read_prototype_items(paths, templates: dict[str, list[str]] | None = None) -> list[dict]:
    """-> [{"text", "classes": [int], "lang"}] from JSONL items ``{"text", "classes": [k], "lang"?}`` or a JSON
    class-name table ``{"<class index>": {"en": name(s), "zh": name(s)}}`` put into ``templates`` (default: the
    bundled short ones)."""
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
            templates = {"en": bundled_templates("en"), "zh": bundled_templates("zh")}
        for k, names in table.items():
            for lang, ns in (names.items() if isinstance(names, dict) else [("en", names)]):
                for n in ([ns] if isinstance(ns, str) else ns):
                    for t in templates.get(lang, ["{}"]):
                        items.append({"text": t.format(n), "classes": [int(k)], "lang": lang})
    return items


class TextBank:
    """Every distinct text of the run, indexed: ``texts[add(t)] == t``."""

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

    def pairs(self, batch):
        """(name, weight, text embeddings, what they should match) per data source of the batch, one at a time."""
        texts = batch["texts"]
        if "it" in batch:
            img_idx, txt_idx = batch["it"]
            yield ("image_text", self.s.image_text_weight, self.embed_text(txt_idx, texts),
                   self.embed_image(img_idx, batch["pixels"]))
        if "tt" in batch:
            ia, ib = batch["tt"]
            yield "text_text", self.s.text_text_weight, self.embed_text(ia, texts), self.embed_text(ib, texts)
        if "proto" in batch:
            ti, ci = batch["proto"]
            yield "proto", self.s.proto_weight, self.embed_text(ti, texts), batch["targets"][torch.as_tensor(ci)]

    def forward(self, batch):
        scale = self.logit_scale.exp().clamp(max=self.s.max_logit_scale)
        loss = self.logit_scale.new_zeros(())
        stats = {}
        for name, weight, a, b in self.pairs(batch):
            a, b = self.gather(a), self.gather(b)                             # [B, D] of every process
            term = info_nce(a, b, scale)
            loss = loss + weight * term
            stats[f"l_{name}"] = float(term.detach())
            if name == "image_text":
                stats["acc_image_text"] = float(((a @ b.T).argmax(1) == torch.arange(len(a))).float().mean())
        stats["loss"] = float(loss.detach())
        stats["temperature"] = float(1.0 / scale.detach())
        return loss, stats


@dataclass
class Sources:
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


def build_sources(s: AlignSettings, bank: TextBank, images: list[str], protos) -> Sources:
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
        items = [it for it in read_prototype_items(s.prototypes) if it["lang"] in s.languages]
        item_target, targets, _ = build_targets(items, protos)
        proto_by_target = [[] for _ in range(len(targets))]
        for it, m in zip(items, item_target):
            proto_by_target[int(m)].append(bank.add(it["text"]))
    return Sources(it_rows, tt_rows, proto_by_target, targets)


def global_batch(src: Sources, s: AlignSettings, step: int, G: int, orders: dict, world: int = 1) -> dict:
    """The global batch of one step (identical on every process; each then takes its rank's slice)."""
    out = {}
    if src.it_rows:
        rows = ddp.batches_of(orders["it"], step, G)
        img, txt = [], []
        for r in rows:
            i, tids = src.it_rows[int(r)]
            rng = np.random.default_rng([s.seed, step, int(r), 1])
            img.append(i)
            txt.append(_pick(rng, tids))                               # caption language drawn per sample
        out["it"] = (np.array(img), np.array(txt))
    if src.tt_rows:
        rows = ddp.batches_of(orders["tt"], step, G)
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
    return {k: tuple(ddp.rank_slice(a, d) for a in v) for k, v in gb.items()}


# ---------------------------------------------------------------------------------------------------------
# Held-out retrieval
# ---------------------------------------------------------------------------------------------------------
def retrieval(net, rows: list, images: list[str], texts: list[str], pixels_fn) -> dict:
    """Recall@1 image->text and text->image per caption language on held-out image-caption rows."""
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
    """Stage 2 end to end (frozen features, training, held-out retrieval, checkpoints); returns the result dict."""
    d, threads, precision, out = ddp.start_run(s)
    model, cfg, src, notes = build_student(s.student, s.student_init, seed=s.seed)
    if cfg.joint.space != "proto":
        raise ValueError(f"stage 2 aligns text with the image tower's class prototypes; {s.student!r} is a text-space "
                         "model (photos are concept mixes in the text tower's own space, nothing to align): use a "
                         "prototype-space architecture such as --student lite0-e5s4 (see MODEL_CARD.md)")
    tokenizer = student_tokenizer(cfg, src, s.tokenizer)

    bank, images = TextBank(), []
    srcs = build_sources(s, bank, images, model.image.protos)
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
    freeze_batchnorm(net)

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
        gb = global_batch(srcs, s, step, G * s.grad_accum, orders, d.world * s.grad_accum)
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
    return ddp.finish_run(d, out, result, log)
