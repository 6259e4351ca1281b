"""Data-parallel training on CPU (torch.distributed, gloo) and the run plumbing both training stages share:
precision (bf16 autocast where the CPU has bf16 instructions), threads, seeds, gradient accumulation,
checkpoints with resume, and a JSONL metrics log.

    python -m training distill --config lite2-to-lite0 ...                        # one process
    torchrun --nproc_per_node=2 -m training distill --config lite2-to-lite0 ...   # two processes, gloo

``--batch-size`` is per process: with W processes and A accumulation steps one optimizer step sees
``batch_size * W * A`` samples, taken from the same global order whatever W is, so 2 processes x batch 4 make
the same update as 1 process x batch 8 (up to float summation order; BatchNorm statistics are frozen during
distillation, so they do not depend on the per-process batch).
"""
from __future__ import annotations

import contextlib
import json
import os
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
import torch.distributed as tdist
from torch import nn


@dataclass
class Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world > 1

    @property
    def main(self) -> bool:
        return self.rank == 0


def setup(backend: str = "gloo") -> Dist:
    """Join the process group torchrun describes (RANK / WORLD_SIZE / MASTER_ADDR env), else run alone."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Dist()
    if not tdist.is_initialized():
        import atexit
        tdist.init_process_group(backend=backend)
        atexit.register(lambda: tdist.is_initialized() and tdist.destroy_process_group())
    return Dist(tdist.get_rank(), tdist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))


def cleanup(d: Dist) -> None:
    """End of a training run: wait for every process. The group itself lives until the interpreter exits
    (``setup`` registers that), so one process can run several stages, e.g. distill then align."""
    barrier(d)


def barrier(d: Dist) -> None:
    if d.enabled:
        tdist.barrier()


def all_reduce_mean(x: float | torch.Tensor, d: Dist) -> float:
    if not d.enabled:
        return float(x)
    t = torch.tensor(float(x), dtype=torch.float64)
    tdist.all_reduce(t)
    return float(t) / d.world


def wrap(module: nn.Module, d: Dist, find_unused: bool = False) -> nn.Module:
    """DistributedDataParallel on CPU when running under torchrun, else the module itself."""
    if not d.enabled:
        return module
    import inspect
    DDP = nn.parallel.DistributedDataParallel
    # buffers (frozen BatchNorm statistics) are identical on every process: no per-forward sync
    sync = ({"forward_sync_buffers": False} if "forward_sync_buffers" in inspect.signature(DDP.__init__).parameters
            else {"broadcast_buffers": False})
    return DDP(module, find_unused_parameters=find_unused, **sync)


def rank_slice(idx: np.ndarray, d: Dist) -> np.ndarray:
    """This process's contiguous share of a global batch (the global batch must divide by the world size)."""
    n = len(idx) // d.world
    return idx[d.rank * n:(d.rank + 1) * n]


def start_run(settings) -> tuple[Dist, int, str, Path]:
    """The prologue every training command shares: join the process group, set threads, resolve precision,
    seed, create the run directory. ``settings`` has .threads, .precision, .seed and .out.
    Returns (dist, threads, precision, out_dir)."""
    d = setup()
    threads = set_threads(settings.threads, d)
    precision = resolve_precision(settings.precision)
    seed_everything(settings.seed)
    out = Path(settings.out)
    out.mkdir(parents=True, exist_ok=True)
    return d, threads, precision, out


def finish_run(d: Dist, out: Path, result: dict, log: "JsonlLog") -> dict:
    """The epilogue every training command shares: <out>/result.json (main process), close the metrics log,
    wait for every process. Returns ``result``."""
    if d.main:
        (out / "result.json").write_text(json.dumps(result, indent=1, default=str))
    log.close()
    cleanup(d)
    return result


def set_threads(threads: int | None, d: Dist) -> int:
    """intra-op threads: ``threads`` or the usable cores divided among the local processes."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:
        cores = os.cpu_count() or 1
    local = int(os.environ.get("LOCAL_WORLD_SIZE", d.world))
    n = int(threads or max(1, cores // max(1, local)))
    torch.set_num_threads(n)
    return n


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % (2 ** 32))
    torch.manual_seed(seed)


# ---- precision --------------------------------------------------------------------------------------------
def bf16_supported() -> bool:
    """True when the CPU has native bf16 arithmetic (AVX512-BF16 or AMX-BF16)."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return " avx512_bf16" in flags or " amx_bf16" in flags


def resolve_precision(precision: str) -> str:
    """'auto' -> 'bf16' where supported, else 'fp32'; 'bf16' on a CPU without it falls back to fp32."""
    if precision not in ("auto", "fp32", "bf16"):
        raise ValueError(f"precision must be auto, fp32 or bf16, not {precision!r}")
    if precision == "fp32":
        return "fp32"
    return "bf16" if bf16_supported() else "fp32"


def autocast(precision: str):
    """Autocast context for a resolved precision (bf16 matmuls/convs, fp32 master weights)."""
    if precision == "bf16":
        return torch.autocast("cpu", dtype=torch.bfloat16)
    return contextlib.nullcontext()


# ---- one optimizer step over accumulated micro-batches ------------------------------------------------------
def accumulate(model: nn.Module, micro_batches: Sequence, forward: Callable, precision: str, d: Dist) -> dict:
    """Run forward(model, mb) -> (loss, stats) on each micro-batch and backprop loss / len(micro_batches).

    Under DDP, gradients are all-reduced only on the last micro-batch (``no_sync`` before). Returns the mean
    of the numeric stats over micro-batches (this process only).
    """
    A = len(micro_batches)
    sums: dict[str, float] = {}
    for a, mb in enumerate(micro_batches):
        sync = contextlib.nullcontext() if (not d.enabled or a == A - 1) else model.no_sync()
        with sync:
            with autocast(precision):
                loss, stats = forward(model, mb)
            (loss.float() / A).backward()
        for k, v in stats.items():
            sums[k] = sums.get(k, 0.0) + float(v) / A
    return sums


def cosine_lr(step: int, total: int, warmup: int, base: float) -> float:
    import math
    if step < warmup:
        return base * (step + 1) / warmup
    return base * 0.5 * (1 + math.cos(math.pi * min(1.0, (step - warmup) / max(1, total - warmup))))


# ---- checkpoints --------------------------------------------------------------------------------------------
def _atomic(path: Path, write: Callable[[Path], None]) -> None:
    from dcclip_core.atomic import atomic_path
    with atomic_path(path) as tmp:
        write(tmp)


def save_checkpoint(out: str | Path, modules: dict[str, nn.Module], optimizer, step: int, extra: dict | None = None,
                    prefix: str = "last") -> None:
    """<prefix>.safetensors (weights, "<module>.<key>"), <prefix>.pt (optimizer + RNG), <prefix>.json (step)."""
    from safetensors.torch import save_file
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    state = {f"{name}.{k}": v.detach().contiguous() for name, m in modules.items() for k, v in m.state_dict().items()}
    _atomic(out / f"{prefix}.safetensors", lambda p: save_file(state, str(p)))
    # only tensors, numbers, strings and lists, so resuming can load it with torch.load(weights_only=True)
    np_name, np_keys, np_pos, np_has_gauss, np_cached = np.random.get_state()
    py_version, py_internal, py_gauss = random.getstate()
    rng = {"torch": torch.get_rng_state(),
           "numpy": {"name": np_name, "keys": torch.from_numpy(np_keys.astype(np.int64)), "pos": int(np_pos),
                     "has_gauss": int(np_has_gauss), "cached": float(np_cached)},
           "python": {"version": py_version, "internal": list(py_internal), "gauss": py_gauss}}
    _atomic(out / f"{prefix}.pt", lambda p: torch.save({"optimizer": optimizer.state_dict(), "rng": rng}, p))
    meta = {"step": int(step), "time": time.strftime("%Y-%m-%d %H:%M:%S"), **(extra or {})}
    _atomic(out / f"{prefix}.json", lambda p: p.write_text(json.dumps(meta, indent=1, default=str)))


def load_checkpoint(out: str | Path, modules: dict[str, nn.Module], optimizer=None, prefix: str = "last") -> int | None:
    """Restore a ``save_checkpoint``; returns its step, or None when there is none."""
    from safetensors.torch import load_file
    out = Path(out)
    if not ((out / f"{prefix}.safetensors").is_file() and (out / f"{prefix}.json").is_file()):
        return None
    state = load_file(str(out / f"{prefix}.safetensors"))
    for name, m in modules.items():
        sub = {k[len(name) + 1:]: v for k, v in state.items() if k.startswith(name + ".")}
        m.load_state_dict(sub)
    if optimizer is not None and (out / f"{prefix}.pt").is_file():
        blob = torch.load(out / f"{prefix}.pt", map_location="cpu", weights_only=True)   # never unpickle code
        optimizer.load_state_dict(blob["optimizer"])
        torch.set_rng_state(blob["rng"]["torch"])
        n = blob["rng"]["numpy"]
        np.random.set_state((n["name"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached"]))
        py = blob["rng"]["python"]
        random.setstate((py["version"], tuple(py["internal"]), py["gauss"]))
    return int(json.loads((out / f"{prefix}.json").read_text())["step"])


class JsonlLog:
    """Append-only JSONL metrics log, written by the main process only."""

    def __init__(self, path: str | Path | None, d: Dist | None = None):
        self.f = open(path, "a", encoding="utf-8") if path and (d is None or d.main) else None

    def write(self, row: dict) -> None:
        if self.f:
            self.f.write(json.dumps(row, default=float) + "\n")
            self.f.flush()

    def close(self) -> None:
        if self.f:
            self.f.close()
            self.f = None


def global_order(n: int, seed: int, epochs: int) -> np.ndarray:
    """Sample order for ``epochs`` epochs: one fresh permutation of range(n) per epoch, from ``seed``."""
    return np.concatenate([np.random.default_rng([seed, e]).permutation(n) for e in range(max(1, epochs))])


def batches_of(order: np.ndarray, step: int, global_batch: int) -> np.ndarray:
    """The global batch of optimizer step ``step`` (wrapping around the order)."""
    s = (step * global_batch) % len(order)
    idx = order[s:s + global_batch]
    if len(idx) < global_batch:
        idx = np.concatenate([idx, order[:global_batch - len(idx)]])
    return idx


def micro_batches(idx: np.ndarray, d: Dist, accum: int) -> list[np.ndarray]:
    """This process's share of a global batch, cut into ``accum`` micro-batches."""
    mine = rank_slice(idx, d)
    return [m for m in np.array_split(mine, accum) if len(m)]
