"""Model configs as data (one JSON per model directory, a small registry over assets/models/), and every path and
environment variable of the runtime.

A model directory holds ``config.json`` (this schema), ONNX files for the runtime, ``tokenizer.json``,
``model.safetensors`` (torch weights for training / prompt learning) and ``MODEL_CARD.md``.
Architecture templates (no weights) live in ``dcclip_core/model_configs/*.json``.

Environment variables (read here and nowhere else):

=====================  ===========================================================================================
``DCCLIP_CACHE``       per-user cache root (``cache_dir``), default ``~/.cache/dcclip``
``DCCLIP_PROMPTS``     the user's prompt library (``prompts_dir``), default ``<cache>/prompts``
``DCCLIP_MODELS``      models the user installed (``user_models_dir``), default ``<cache>/models``
``DCCLIP_MAX_PIXELS``  largest image (width x height) that is decoded (``max_pixels``), default 120 million
``DCCLIP_FAST_JPEG``   ``0`` turns off JPEG decoding through simplejpeg (``fast_jpeg``)
``DCCLIP_THREADS``     default CPU threads of a runtime model (``default_threads``), default all cores
=====================  ===========================================================================================
"""
from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent
REPO_DIR = PACKAGE_DIR.parent
ASSETS_DIR = REPO_DIR / "assets"
MODELS_DIR = ASSETS_DIR / "models"
ARCH_DIR = PACKAGE_DIR / "model_configs"


def _env_dir(var: str) -> Path | None:
    value = os.environ.get(var)
    return Path(value).expanduser() if value else None


def cache_dir() -> Path:
    """Per-user cache root: ``$DCCLIP_CACHE`` if set, else ``~/.cache/dcclip`` (created on demand)."""
    root = _env_dir("DCCLIP_CACHE") or Path.home() / ".cache" / "dcclip"
    root.mkdir(parents=True, exist_ok=True)
    return root


def prompts_dir() -> Path:
    """The user's prompt library: ``$DCCLIP_PROMPTS`` or ``<cache>/prompts`` (created on demand)."""
    d = _env_dir("DCCLIP_PROMPTS") or cache_dir() / "prompts"
    d.mkdir(parents=True, exist_ok=True)
    return d


def user_models_dir() -> Path:
    """Models the user installed: ``$DCCLIP_MODELS`` or ``<cache>/models`` (one directory with config.json each;
    not created)."""
    return _env_dir("DCCLIP_MODELS") or cache_dir() / "models"


def max_pixels() -> int:
    """The pixel cap above which images are refused before decoding: ``$DCCLIP_MAX_PIXELS``, default 120 million."""
    return int(os.environ.get("DCCLIP_MAX_PIXELS", 120_000_000))


def fast_jpeg() -> bool:
    """Whether JPEGs may be decoded through simplejpeg when it is installed (``DCCLIP_FAST_JPEG=0`` says no)."""
    return os.environ.get("DCCLIP_FAST_JPEG", "1") != "0"


def default_threads() -> int:
    """CPU threads a runtime model uses unless told otherwise: ``$DCCLIP_THREADS``, else every core."""
    env = os.environ.get("DCCLIP_THREADS")
    return int(env) if env else max(1, os.cpu_count() or 1)


class ModelNotFoundError(FileNotFoundError):
    """No model of that name is installed."""


@dataclass
class ImageConfig:
    tower: str = "efficientnet-lite0"       # efficientnet-lite0|1|2, vit-tiny, ...
    image_size: int = 224
    mean: list[float] = field(default_factory=lambda: [0.498, 0.498, 0.498])
    std: list[float] = field(default_factory=lambda: [0.502, 0.502, 0.502])
    feature_dim: int = 1280                 # pooled backbone width
    num_classes: int = 1000                 # backbone classifier rows (class prototypes)
    head: str = "proto-linear"              # how pooled features reach the joint space
    softmax_temperature: float = 1.0        # classifier softmax used by the proto head


@dataclass
class TextConfig:
    vocab_size: int = 1000
    width: int = 384
    layers: int = 4
    heads: int = 12
    mlp_width: int = 1536
    max_len: int = 64
    pooling: str = "mean"
    layer_norm_eps: float = 1e-12
    teacher_layers: list[int] = field(default_factory=list)   # e5 layer each student layer was initialised from
    normalize: str = "t2s"                  # opencc conversion before tokenising


@dataclass
class JointConfig:
    """The joint space: PCA of the image tower's class prototypes, plus one calibration coordinate.

    Image embedding = [normalise(p @ P) ; seen_eps * seen_mass(p)], text embedding = [normalise(G t) ; -seen_gamma /
    seen_eps], both L2-normalised, so that the inner product is the prototype cosine minus seen_gamma times the
    photo's probability mass on classes the alignment was trained on (calibrated stacking for concepts that were
    never aligned). seen_gamma = 0 turns the correction off.
    """
    proto_dim: int = 256
    seen_eps: float = 0.25
    seen_gamma: float = 0.0
    # "proto": the space above (v1 models). "text": the text tower's own space; a photo is a mix of concept
    # embeddings (dcclip_core.concepts), the text embedding is the text tower's normalised output
    space: str = "proto"
    # cosines that mean "same picture, re-saved" (with matching perceptual hashes) and "similar photo" in this
    # space (index.duplicates); text-space photo vectors all sit close together, so they are higher there
    near_floor: float = 0.80
    similar: float = 0.95


@dataclass
class ModelConfig:
    name: str = "default"
    id: str = "untrained"
    embed_dim: int = 384
    languages: list[str] = field(default_factory=lambda: ["zh", "en"])
    image: ImageConfig = field(default_factory=ImageConfig)
    text: TextConfig = field(default_factory=TextConfig)
    joint: JointConfig = field(default_factory=JointConfig)
    files: dict[str, str] = field(default_factory=dict)      # role -> file name in the model dir
    sha256: dict[str, str] = field(default_factory=dict)     # file name -> hex digest
    extra: dict = field(default_factory=dict)

    @classmethod
    def from_dict(cls, d: dict) -> "ModelConfig":
        d = dict(d)
        img = ImageConfig(**d.pop("image", {}))
        txt = TextConfig(**d.pop("text", {}))
        joint = JointConfig(**d.pop("joint", {}))
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown model config keys: {sorted(unknown)}")
        cfg = cls(image=img, text=txt, joint=joint, **d)
        if joint.space not in ("proto", "text"):
            raise ValueError(f"joint.space must be 'proto' or 'text', not {joint.space!r}")
        if joint.space == "proto" and cfg.embed_dim != joint.proto_dim + 1:
            raise ValueError(f"embed_dim {cfg.embed_dim} must be joint.proto_dim + 1 = {joint.proto_dim + 1}")
        if joint.space == "text" and cfg.embed_dim != txt.width:
            raise ValueError(f"embed_dim {cfg.embed_dim} must be the text width {txt.width} in the text space")
        return cfg

    @classmethod
    def load(cls, path: str | Path) -> "ModelConfig":
        return cls.from_dict(json.loads(Path(path).read_text(encoding="utf-8")))

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def save(self, path: str | Path) -> None:
        from .atomic import atomic_write_text
        atomic_write_text(path, json.dumps(self.to_dict(), indent=2, ensure_ascii=False) + "\n")


def list_models(models_dir: str | Path = MODELS_DIR) -> list[str]:
    """Names of installed models (directories with a config.json)."""
    root = Path(models_dir)
    return sorted(p.parent.name for p in root.glob("*/config.json"))


def model_dir(name: str = "default", models_dir: str | Path = MODELS_DIR) -> Path:
    """Directory of an installed model; ``name`` may also be a path to a model directory."""
    p = Path(name)
    if (p / "config.json").is_file():
        return p
    d = Path(models_dir) / name
    if not (d / "config.json").is_file():
        raise ModelNotFoundError(
            f"model {name!r} not found in {models_dir} (installed: {list_models(models_dir) or 'none'})")
    return d


def list_architectures() -> list[str]:
    return sorted(p.stem for p in ARCH_DIR.glob("*.json"))


def architecture(name: str) -> ModelConfig:
    """An architecture template (no weights), e.g. for tiny random test models."""
    path = ARCH_DIR / f"{name}.json"
    if not path.is_file():
        raise ModelNotFoundError(f"architecture {name!r} not found (have: {list_architectures()})")
    return ModelConfig.load(path)
