"""Training configs as data: one JSON file per recipe in this folder, plus command-line overrides.

    load_config("lite2-to-lite0")              # training/configs/lite2-to-lite0.json
    load_config("my_run.json")                 # or any JSON file
    apply_overrides(cfg, ["epochs=2", "augment.scale_min=0.5", "layers=[[3,3],[5,5]]"])

Keys starting with "_" are comments. Values of ``--set key=value`` are parsed as JSON when they parse
(numbers, lists, true/false/null), else kept as strings.
"""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any, Sequence

CONFIG_DIR = Path(__file__).resolve().parent


def list_configs(stage: str | None = None) -> list[str]:
    out = []
    for p in sorted(CONFIG_DIR.glob("*.json")):
        if stage is None or json.loads(p.read_text(encoding="utf-8")).get("stage") == stage:
            out.append(p.stem)
    return out


def load_config(name_or_path: str | Path) -> dict:
    """A recipe by name (this folder) or path; comment keys ("_...") dropped."""
    p = Path(name_or_path)
    if not p.is_file():
        p = CONFIG_DIR / f"{name_or_path}.json"
    if not p.is_file():
        raise FileNotFoundError(f"config {name_or_path!r} not found (have: {', '.join(list_configs())})")
    data = json.loads(p.read_text(encoding="utf-8"))
    return {k: v for k, v in data.items() if not k.startswith("_")}


def parse_value(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return text


def apply_overrides(cfg: dict, sets: Sequence[str]) -> dict:
    """``a.b=value`` assignments into a (nested) dict; returns a new dict."""
    out = json.loads(json.dumps(cfg))
    for s in sets:
        if "=" not in s:
            raise ValueError(f"override {s!r} is not key=value")
        key, value = s.split("=", 1)
        parts = key.strip().split(".")
        node = out
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ValueError(f"override {s!r}: {part!r} is not a section")
        node[parts[-1]] = parse_value(value)
    return out


def to_dataclass(cls, data: dict, where: str = "config"):
    """Build dataclass ``cls`` from a dict, refusing unknown keys (typos should fail loudly)."""
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names - {"stage"})
    if unknown:
        raise ValueError(f"{where}: unknown keys {unknown} (known: {sorted(names)})")
    return cls(**{k: v for k, v in data.items() if k in names})
