"""Measured results as JSON: written atomically, stamped with when and on what machine they were measured.

    write_json("benchmarks/results/fewshot.json", {"protocol": {...}})   # + "created" (UTC) and "machine"

Standard library only at import time (no numpy, no dcclip_core), so any command can afford it.
"""
from __future__ import annotations

import datetime as _dt
import json
import os
import platform
from importlib import metadata
from pathlib import Path

VERSIONS = ("onnxruntime", "onnx", "numpy", "pillow", "torch", "transformers")   # what the numbers depend on


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def machine_info() -> dict:
    """CPU model, core counts and the versions that matter for the numbers (no heavy imports)."""
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count()
    info = {"cpu": _cpu_model(), "cores": os.cpu_count(), "cores_usable": usable, "platform": platform.platform(),
            "python": platform.python_version(), "versions": {d: _version(d) for d in VERSIONS}}
    try:
        from PIL import features
        info["libjpeg"] = features.version("jpg")
        info["libjpeg_turbo"] = bool(features.check_feature("libjpeg_turbo"))
    except Exception:  # pragma: no cover - informational only
        pass
    return info


def write_json(path: str | Path, data: dict) -> Path:
    """Write ``data`` with a ``machine`` block and a UTC ``created`` timestamp, atomically."""
    from dcclip_core.atomic import atomic_write_text
    doc = {"created": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
           "machine": machine_info(), **data}
    return atomic_write_text(path, json.dumps(doc, indent=2, ensure_ascii=False, default=str) + "\n")
