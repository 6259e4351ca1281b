"""DC-CLIP stage 1: feature distillation of a small text student from a teacher (multilingual-e5-small).

Teacher features (final embedding + mean-pooled intermediate layers) are computed once and cached to a float16
memmap; the student then matches them: cosine loss on the final sentence embedding plus SmoothL1 on
intermediate layers through linear adapters (student width -> teacher width).
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

from dcclip_core.models import TextStudent


@dataclass
class DistillConfig:
    epochs: float = 2.0
    batch_size: int = 128
    lr: float = 2e-4
    weight_decay: float = 0.01
    warmup_steps: int = 100
    final_weight: float = 1.0          # (1 - cos) on the final embedding
    hidden_weight: float = 0.1         # SmoothL1 on pooled intermediate layers
    layer_map: list[int] = field(default_factory=list)   # student layer i (1-based) <- teacher layer layer_map[i]
    seed: int = 0
    grad_accum: int = 1
    log_every: int = 50
    max_steps: int | None = None


class TeacherCache:
    """float16 memmap (n, 1 + n_layers, d): row 0 = final L2-normalised embedding, then pooled hidden layers."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        meta = json.loads(self.path.with_suffix(".json").read_text())
        self.shape = tuple(meta["shape"])
        self.layers = meta["layers"]
        self.data = np.memmap(self.path, dtype=np.float16, mode="r", shape=self.shape)

    @staticmethod
    def build(encode: Callable, texts: Sequence[str], path: str | Path, layers: Sequence[int],
              chunk: int = 2048, progress: bool = True) -> "TeacherCache":
        """encode(list[str]) -> (final (b, d), hidden (b, n_all_layers, d)); keeps hidden[:, layers]."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        meta_path = path.with_suffix(".json")
        n = len(texts)
        if meta_path.is_file():
            meta = json.loads(meta_path.read_text())
            if meta.get("complete") and meta["n"] == n and meta["layers"] == list(layers):
                return TeacherCache(path)
        done_path = path.with_suffix(".done")
        done = int(done_path.read_text()) if done_path.is_file() and path.is_file() else 0
        arr = None
        from tqdm import tqdm
        bar = tqdm(total=n, initial=done, desc="teacher features", disable=not progress, mininterval=5)
        for i in range(done, n, chunk):
            final, hidden = encode(list(texts[i:i + chunk]))
            block = np.concatenate([final[:, None], hidden[:, list(layers)]], axis=1).astype(np.float16)
            if arr is None:
                shape = (n,) + block.shape[1:]
                mode = "r+" if done else "w+"
                arr = np.memmap(path, dtype=np.float16, mode=mode, shape=shape)
                meta_path.write_text(json.dumps({"n": n, "shape": list(shape), "layers": list(layers),
                                                 "complete": False}))
            arr[i:i + len(block)] = block
            arr.flush()
            done_path.write_text(str(i + len(block)))      # resume point if the build is killed
            bar.update(len(block))
        bar.close()
        meta = json.loads(meta_path.read_text())
        meta["complete"] = True
        meta_path.write_text(json.dumps(meta))
        return TeacherCache(path)


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


class Adapters(nn.Module):
    """1x1 (linear) adapters mapping student widths to teacher widths, identity-initialised when they match."""

    def __init__(self, n: int, w_student: int, w_teacher: int):
        super().__init__()
        self.maps = nn.ModuleList(nn.Linear(w_student, w_teacher) for _ in range(n))
        if w_student == w_teacher:
            for m in self.maps:
                nn.init.eye_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, i: int, x: torch.Tensor) -> torch.Tensor:
        return self.maps[i](x)


def distill_loss(student: TextStudent, adapters: Adapters, ids, mask, target: torch.Tensor,
                 cfg: DistillConfig) -> tuple[torch.Tensor, dict]:
    """target: [b, 1 + n_layers, d_teacher] (row 0 = final normalised embedding)."""
    pooled, hidden = student.encode_hidden(ids, mask)                 # [b, W], list of [b, L, W]
    final = F.normalize(pooled, dim=-1)
    l_final = (1.0 - (final * F.normalize(target[:, 0], dim=-1)).sum(-1)).mean()
    m = mask.to(pooled.dtype)[..., None]
    l_hidden = pooled.new_zeros(())
    n_h = target.shape[1] - 1
    for j in range(n_h):
        h = hidden[j + 1] if n_h == len(hidden) - 1 else hidden[-n_h + j]
        hp = (h * m).sum(1) / m.sum(1).clamp(min=1.0)                   # [b, W] masked mean
        l_hidden = l_hidden + F.smooth_l1_loss(adapters(j, hp), target[:, 1 + j])
    loss = cfg.final_weight * l_final + cfg.hidden_weight * l_hidden / max(n_h, 1)
    return loss, {"loss": loss.item(), "final_cos": 1.0 - l_final.item(), "hidden": l_hidden.item()}


def cosine_lr(step: int, total: int, warmup: int, base: float) -> float:
    if step < warmup:
        return base * (step + 1) / warmup
    return base * 0.5 * (1 + math.cos(math.pi * min(1.0, (step - warmup) / max(1, total - warmup))))


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


def distill_text(student: TextStudent, tokenize: Callable, texts: Sequence[str], cache: TeacherCache,
                 cfg: DistillConfig, out_dir: str | Path | None = None, val_idx: np.ndarray | None = None,
                 progress: bool = True) -> dict:
    """Train ``student`` to match the cached teacher features. Checkpoints (safetensors) + JSONL log in out_dir.

    tokenize(list[str]) -> (ids int64 (b, L), mask int64 (b, L)) numpy.
    """
    from safetensors.torch import load_file, save_file
    from tqdm import tqdm

    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    n = len(texts)
    val_idx = np.asarray(val_idx if val_idx is not None else [], dtype=np.int64)
    train_idx = np.setdiff1d(np.arange(n), val_idx)
    d_t = cache.shape[-1]
    adapters = Adapters(cache.shape[1] - 1, student.cfg.width, d_t)
    params = list(student.parameters()) + list(adapters.parameters())
    params = [p for p in params if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    steps_per_epoch = max(1, len(train_idx) // cfg.batch_size)
    total = int(cfg.epochs * steps_per_epoch)
    if cfg.max_steps:
        total = min(total, cfg.max_steps)
    out = Path(out_dir) if out_dir else None
    step = 0
    if out:
        out.mkdir(parents=True, exist_ok=True)
        ck = out / "distill_last.safetensors"
        if ck.is_file():                              # resume
            state = load_file(str(ck))
            student.load_state_dict({k[8:]: v for k, v in state.items() if k.startswith("student.")})
            adapters.load_state_dict({k[9:]: v for k, v in state.items() if k.startswith("adapters.")})
            step = int(json.loads((out / "distill_last.json").read_text())["step"])
    log = open(out / "distill_metrics.jsonl", "a") if out else None
    student.train()
    t0 = time.time()
    bar = tqdm(total=total, initial=step, desc="stage 1 distill", disable=not progress, mininterval=10)
    order = np.concatenate([rng.permutation(train_idx) for _ in range(int(math.ceil(cfg.epochs)) + 1)])
    batches = length_bucketed_batches(order, token_lengths(tokenize, texts), cfg.batch_size, rng)
    seen_samples = 0
    while step < total:
        idx = batches[step]
        ids, mask = tokenize([texts[i] for i in idx])
        target = torch.from_numpy(np.asarray(cache.data[idx], dtype=np.float32))
        for g in opt.param_groups:
            g["lr"] = cosine_lr(step, total, cfg.warmup_steps, cfg.lr)
        loss, stats = distill_loss(student, adapters, torch.from_numpy(ids), torch.from_numpy(mask), target, cfg)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        step += 1
        seen_samples += len(idx)
        bar.update(1)
        if step % cfg.log_every == 0 or step == total:
            stats.update(step=step, lr=opt.param_groups[0]["lr"], samples_per_s=seen_samples / (time.time() - t0))
            bar.set_postfix(cos=f"{stats['final_cos']:.3f}")
            if log:
                log.write(json.dumps(stats) + "\n")
                log.flush()
        if out and (step % 500 == 0 or step == total):
            state = {f"student.{k}": v.contiguous() for k, v in student.state_dict().items()}
            state.update({f"adapters.{k}": v.contiguous() for k, v in adapters.state_dict().items()})
            save_file(state, str(out / "distill_last.safetensors"))
            (out / "distill_last.json").write_text(json.dumps({"step": step, "config": asdict(cfg)}))
    bar.close()
    student.eval()
    result = {"steps": total, "train_s": time.time() - t0, "samples_per_s": seen_samples / max(1e-9, time.time() - t0)}
    if len(val_idx):
        result["val_cos"] = evaluate_distill(student, tokenize, [texts[i] for i in val_idx],
                                             np.asarray(cache.data[val_idx, 0], np.float32))
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


@torch.no_grad()
def encode_pooled(student: TextStudent, tokenize: Callable, texts: Sequence[str], batch_size: int = 256) -> torch.Tensor:
    """Student features before the alignment head, [n, W] (used to cache stage-2 inputs)."""
    student.eval()
    order = np.argsort([len(t) for t in texts])
    out = torch.zeros(len(texts), student.cfg.width)
    for i in range(0, len(texts), batch_size):
        idx = order[i:i + batch_size]
        ids, mask = tokenize([texts[j] for j in idx])
        out[torch.as_tensor(idx)] = student.encode_hidden(torch.from_numpy(ids), torch.from_numpy(mask))[0]
    return out
