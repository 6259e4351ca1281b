"""Learned prompts at inference time: numpy + ONNX Runtime only (no torch).

A prompt is one ``.safetensors`` file whose header carries JSON metadata (``__metadata__["dcclip_prompt"]``):
method, model id and hash, class labels in EN/ZH, shots, seed, validation accuracy, date, ... Its tensors are
what inference needs, precomputed by the trainer:

    class_embeds   [C, d]   text side: class embeddings in the joint space (CoOp/UPT/MVLPT context applied)
    pixel_frame    [3, B]   pixel prompt (VPT): values added to the B border pixels of width ``pad`` (numpy
                            preprocessing, then the ONNX image model)
    feature_tokens [T, F]   feature-map prompt tokens appended to the CNN's last map before mean pooling
                            (applied to the ONNX ``features`` output, then the numpy image head)
    vpt_tokens  [L, T, W]   deep (L = depth) or shallow (L = 1) VPT tokens of a ViT image tower; run by the
                            prompted-tower ONNX graph (tokens as an input) cached per model: ``vpt_graph_path``
    cache_keys     [N, F]   Tip-Adapter cache (L2-normalised backbone features) with cache_values [N, C]
    weight, bias   [C, F]   linear probe on L2-normalised backbone features
    ctx / upt.*             the trainable state itself (to fine-tune it or to initialise another prompt)

    from dcclip_core import prompts
    p = prompts.load_prompt("cv-digits-coop", model)       # refuses a prompt learned for another model
    clf = prompts.PromptClassifier(model, p)
    clf.scores(["a.png", pil_image])                        # (n, C) probabilities, columns = p.labels("en")

User prompts live in ``$DCCLIP_PROMPTS`` (default ``~/.cache/dcclip/prompts``); prompts shipped with the
package in ``assets/prompts``. ``list_prompts`` / ``import_prompt`` / ``export_prompt`` manage them.
"""
from __future__ import annotations

import datetime as _dt
import json
import shutil
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from .atomic import atomic_path, atomic_write_text
from .config import ASSETS_DIR, cache_dir, prompts_dir
from .numeric import l2_normalize, softmax

FORMAT = "dcclip-prompt/1"
META_KEY = "dcclip_prompt"
SHIPPED_DIR = ASSETS_DIR / "prompts"
SUFFIX = ".safetensors"


class PromptError(Exception):
    """A prompt file that cannot be used (not a prompt, unreadable, malformed)."""


class PromptMismatchError(PromptError):
    """A prompt learned for a different model than the one loaded."""


def user_dir() -> Path:
    """The user's prompt library: ``$DCCLIP_PROMPTS`` or ``~/.cache/dcclip/prompts`` (``config.prompts_dir``)."""
    return prompts_dir()


def library_dirs() -> list[Path]:
    return [user_dir(), SHIPPED_DIR]


def now_iso() -> str:
    return _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat()


def model_ref(model) -> dict:
    """What a prompt file records about the model it was learned for (its ``dim`` is the model's ``dims``)."""
    info = model.info
    return {"id": info["id"], "hash": info["hash"], "dim": info["dims"], "feature_dim": info["feature_dim"],
            "image_size": info["image_size"]}


# ---------------------------------------------------------------------------------------------------------
# The prompt object and its file
# ---------------------------------------------------------------------------------------------------------


@dataclass
class Prompt:
    meta: dict
    tensors: dict[str, np.ndarray] = field(default_factory=dict)
    path: Path | None = None

    @property
    def name(self) -> str:
        return self.meta.get("name") or (self.path.stem if self.path else "prompt")

    @property
    def method(self) -> str:
        return self.meta.get("method", "?")

    @property
    def classes(self) -> list[str]:
        return list(self.meta.get("classes", []))

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def labels(self, lang: str = "en") -> list[str]:
        lab = self.meta.get("labels", {})
        return list(lab.get(lang) or lab.get("en") or self.classes)

    @property
    def visual(self) -> str | None:
        """None, "pixel", "feature", "deep" or "shallow" (VPT for ViT towers)."""
        return (self.meta.get("visual") or {}).get("type")

    def check_model(self, model) -> None:
        """Raise PromptMismatchError unless this prompt was learned for ``model`` (same id and hash)."""
        want = self.meta.get("model", {})
        have = model_ref(model)
        if want.get("hash") != have["hash"] or want.get("id") != have["id"]:
            raise PromptMismatchError(
                f"prompt {self.name!r} was learned for model {want.get('id')!r} (hash {want.get('hash')}), but the "
                f"loaded model is {have['id']!r} (hash {have['hash']}): its embeddings live in another space. "
                f"Learn the prompt again with this model, e.g. `python -m training fewshot --dataset DIR "
                f"--method {self.method} --out NEW.safetensors`.")

    def summary(self) -> dict:
        keep = ("name", "method", "shots", "seed", "val_accuracy", "test_accuracy", "created", "description")
        s = {k: self.meta[k] for k in keep if k in self.meta}
        s.update({"classes": self.num_classes, "labels_en": self.labels("en"), "labels_zh": self.labels("zh"),
                  "model": self.meta.get("model", {}), "path": str(self.path) if self.path else None,
                  "visual": self.visual, "bytes": self.path.stat().st_size if self.path and self.path.is_file()
                  else None})
        return s

    def save(self, path: str | Path) -> Path:
        from safetensors.numpy import save_file
        path = Path(path)
        if path.suffix != SUFFIX:
            path = path.with_name(path.name + SUFFIX)
        path.parent.mkdir(parents=True, exist_ok=True)
        meta = {"format": FORMAT, "created": now_iso(), **self.meta}
        meta.setdefault("name", path.stem)
        tensors = {k: np.ascontiguousarray(v) for k, v in self.tensors.items()}
        with atomic_path(path) as tmp:                # .<name>.*.tmp: never listed as a prompt
            save_file(tensors, str(tmp), metadata={META_KEY: json.dumps(meta, ensure_ascii=False)})
        self.meta, self.path = meta, path
        return path


def read_meta(path: str | Path) -> dict:
    """The JSON metadata of a prompt file (reads the header only)."""
    from safetensors import safe_open
    path = Path(path)
    try:
        with safe_open(str(path), framework="np") as f:
            raw = (f.metadata() or {}).get(META_KEY)
    except FileNotFoundError:
        raise PromptError(f"prompt file not found: {path}") from None
    except Exception as e:
        raise PromptError(f"{path}: not a safetensors prompt file ({e})") from None
    if not raw:
        raise PromptError(f"{path}: a safetensors file without dcclip prompt metadata (not a prompt)")
    try:
        meta = json.loads(raw)
    except json.JSONDecodeError as e:
        raise PromptError(f"{path}: prompt metadata is not valid JSON ({e})") from None
    if meta.get("format") != FORMAT:
        raise PromptError(f"{path}: unsupported prompt format {meta.get('format')!r} (this version reads {FORMAT})")
    return meta


def resolve(name_or_path: str | Path) -> Path:
    """A path to an existing prompt file, or a name looked up in the user library, then assets/prompts."""
    p = Path(name_or_path)
    if p.is_file():
        return p
    for d in library_dirs():
        for cand in (d / str(name_or_path), d / f"{name_or_path}{SUFFIX}"):
            if cand.is_file():
                return cand
    have = [m["name"] for m in list_prompts()]
    raise PromptError(f"prompt {str(name_or_path)!r} not found (a file path, or one of: {have or 'none'})")


def load_prompt(name_or_path: str | Path, model=None) -> Prompt:
    """Read a prompt; with ``model``, refuse it unless it was learned for that model (PromptMismatchError)."""
    from safetensors.numpy import load_file
    path = resolve(name_or_path)
    meta = read_meta(path)
    tensors = {k: v for k, v in load_file(str(path)).items()}
    p = Prompt(meta, tensors, path)
    _validate(p)
    if model is not None:
        p.check_model(model)
    return p


def _validate(p: Prompt) -> None:
    C = p.num_classes
    if C < 1:
        raise PromptError(f"{p.path}: prompt lists no classes")
    for k in ("class_embeds", "cache_values", "weight"):
        if k in p.tensors and p.tensors[k].shape[-1 if k == "cache_values" else 0] != C:
            raise PromptError(f"{p.path}: tensor {k} {p.tensors[k].shape} does not match {C} classes")
    if not any(k in p.tensors for k in ("class_embeds", "weight")):
        raise PromptError(f"{p.path}: prompt has neither class_embeds nor a linear head")


def list_prompts(dirs: Iterable[str | Path] | None = None, model=None) -> list[dict]:
    """Summaries of the prompts in the library directories (user first); ``compatible`` when a model is given."""
    out, seen = [], set()
    for d in (dirs if dirs is not None else library_dirs()):
        d = Path(d)
        if not d.is_dir():
            continue
        for path in sorted(d.glob(f"*{SUFFIX}")):
            try:
                meta = read_meta(path)
            except PromptError:
                continue
            if path.stem in seen:                     # a user prompt shadows a shipped one of the same name
                continue
            seen.add(path.stem)
            s = Prompt(meta, {}, path).summary()
            s["name"] = path.stem
            s["shipped"] = SHIPPED_DIR.resolve() in path.resolve().parents
            if model is not None:
                want = meta.get("model", {})
                have = model_ref(model)
                s["compatible"] = want.get("hash") == have["hash"] and want.get("id") == have["id"]
            out.append(s)
    return out


def import_prompt(src: str | Path, name: str | None = None, model=None, overwrite: bool = False,
                  library: str | Path | None = None) -> Path:
    """Copy a prompt file into the user library (validated; with ``model``, must be compatible)."""
    p = load_prompt(Path(src), model=model)
    dst_dir = Path(library) if library else user_dir()
    dst_dir.mkdir(parents=True, exist_ok=True)
    dst = dst_dir / f"{name or Path(src).stem}{SUFFIX}"
    if dst.exists() and not overwrite:
        raise PromptError(f"a prompt named {dst.stem!r} already exists in {dst_dir} (pass overwrite=True)")
    with atomic_path(dst) as tmp:                    # the app lists the library while this runs
        shutil.copyfile(p.path, tmp)
    return dst


def export_prompt(name_or_path: str | Path, dst: str | Path) -> Path:
    """Copy a library prompt to ``dst`` (a file or a directory) and write its metadata beside it as JSON."""
    src = resolve(name_or_path)
    meta = read_meta(src)
    dst = Path(dst)
    if dst.is_dir():
        dst = dst / src.name
    if dst.suffix != SUFFIX:
        dst = dst.with_name(dst.name + SUFFIX)
    with atomic_path(dst) as tmp:
        shutil.copyfile(src, tmp)
    atomic_write_text(dst.with_suffix(".json"), json.dumps(meta, ensure_ascii=False, indent=1) + "\n")
    return dst


def delete_prompt(name: str) -> None:
    """Remove a prompt from the user library (shipped prompts cannot be deleted)."""
    path = resolve(name)
    if SHIPPED_DIR.resolve() in path.resolve().parents:
        raise PromptError(f"{name!r} ships with the package and cannot be deleted")
    path.unlink()


# ---------------------------------------------------------------------------------------------------------
# Applying a prompt (numpy)
# ---------------------------------------------------------------------------------------------------------


def border_mask(size: int, pad: int) -> np.ndarray:
    """bool (S, S): the frame of width ``pad`` (row-major order defines the layout of ``pixel_frame``)."""
    m = np.zeros((size, size), bool)
    m[:pad], m[-pad:], m[:, :pad], m[:, -pad:] = True, True, True, True
    return m


def pixel_prompt_image(frame: np.ndarray, size: int, pad: int) -> np.ndarray:
    """pixel_frame [3, B] -> float32 (3, S, S) additive prompt (zeros inside the frame)."""
    out = np.zeros((3, size, size), np.float32)
    out[:, border_mask(size, pad)] = frame.astype(np.float32)
    return out


_heads: dict[str, "ImageHead"] = {}
_heads_lock = threading.Lock()


class ImageHead:
    """Numpy twin of the image tower's head: pooled features (n, F) -> joint embeddings (n, D+1), or for a
    text-space model the concept mix (n, D) (``dcclip_core.concepts``; the pixel-based concepts need the pixels
    and are left out here, as they are of every shipped bank).

    Needed only for feature-map prompts (they act before the head); reads the head from model.safetensors.
    """

    def __init__(self, model):
        from safetensors import safe_open
        cfg = model.config
        self.bank = getattr(model, "concept_bank", None)          # text-space models: the concept mix
        if self.bank is not None:
            return
        path = Path(model.path) / cfg.files.get("weights", "model.safetensors")
        with safe_open(str(path), framework="np") as f:
            self.W = f.get_tensor("image.classifier.weight").astype(np.float32)      # (K, F)
            self.b = f.get_tensor("image.classifier.bias").astype(np.float32)        # (K,)
            self.P = f.get_tensor("image.protos").astype(np.float32)                 # (K, D)
            self.seen = f.get_tensor("image.seen").astype(np.float32)                # (K,)
        self.T = float(cfg.image.softmax_temperature)
        self.eps = float(cfg.joint.seen_eps)

    @classmethod
    def of(cls, model) -> "ImageHead":
        key = str(Path(model.path).resolve())
        with _heads_lock:
            if key not in _heads:
                _heads[key] = cls(model)
            return _heads[key]

    def __call__(self, feat: np.ndarray) -> np.ndarray:
        if self.bank is not None:                                                     # (n, D) text space
            return self.bank.embed(self.bank.weights(np.asarray(feat, np.float32)))
        p = softmax((feat @ self.W.T + self.b) / self.T)                              # (n, K)
        u = l2_normalize(p @ self.P)                                                  # (n, D)
        s = (p @ self.seen)[:, None] * self.eps                                       # (n, 1)
        return l2_normalize(np.concatenate([u, s], 1)).astype(np.float32)             # (n, D+1)


def vpt_graph_path(model, mode: str) -> Path:
    """Where the prompted ViT tower (``pixels``, ``tokens`` -> ``embedding``, ``features``) of ``model`` is
    cached for deep / shallow VPT prompts: ``$DCCLIP_CACHE/vpt/<model hash>/<mode>.onnx``."""
    return cache_dir() / "vpt" / model.hash / f"{mode}.onnx"


_vpt_sessions: dict[str, object] = {}


def _vpt_session(model, mode: str):
    path = vpt_graph_path(model, mode)
    key = str(path)
    with _heads_lock:
        if key not in _vpt_sessions:
            if not path.is_file():
                raise PromptError(
                    f"this {mode} VPT prompt runs through the prompted ViT tower of model {model.info['id']!r}, "
                    f"not built on this machine yet ({path}); build it once with `python -m training.prompts.vit "
                    f"export --model {model.path}` (needs torch; inference afterwards does not)")
            from .runtime import make_session
            _vpt_sessions[key] = make_session(path, getattr(model, "threads", 2) or 2)
        return _vpt_sessions[key]


def apply_feature_tokens(feat: np.ndarray, tokens: np.ndarray, hw: int) -> np.ndarray:
    """Pooled features of a map with T prompt tokens appended: (hw * f + sum(tokens)) / (hw + T)."""
    return (hw * feat + tokens.astype(np.float32).sum(0)) / (hw + len(tokens))


class PromptClassifier:
    """Scores images with a prompt on the ONNX model: pixel prompt in preprocessing, class embeddings in numpy."""

    def __init__(self, model, prompt: Prompt, check: bool = True):
        if check:
            prompt.check_model(model)
        self.model, self.prompt = model, prompt
        t, m = prompt.tensors, prompt.meta
        self.scale = float(m.get("logit_scale", 100.0))
        self._pixel = self._vpt = None
        if prompt.visual == "pixel":
            v = m["visual"]
            self._pixel = pixel_prompt_image(t["pixel_frame"], int(v["size"]), int(v["pad"]))
        elif prompt.visual in ("deep", "shallow"):
            self._vpt = (_vpt_session(model, prompt.visual), np.ascontiguousarray(t["vpt_tokens"], np.float32))

    def preprocess(self, image) -> np.ndarray:
        px = self.model.preprocess(image)                                             # (3, S, S)
        return px + self._pixel if self._pixel is not None else px

    def encode(self, images: Sequence, batch_size: int = 16) -> tuple[np.ndarray, np.ndarray]:
        """images -> (emb (n, d), feat (n, F)) with the pixel prompt applied (if any)."""
        images = list(images)
        es, fs = [], []
        for i in range(0, len(images), batch_size):
            px = np.stack([self.preprocess(im) for im in images[i:i + batch_size]])
            if self._vpt is not None:                                                 # ViT with VPT tokens
                sess, tokens = self._vpt
                e, f = sess.run(["embedding", "features"], {"pixels": px.astype(np.float32), "tokens": tokens})
                e = l2_normalize(e)
            else:
                e, f = self.model.encode_pixels(px, return_features=True)
            es.append(e)
            fs.append(f)
        if not es:
            return np.zeros((0, self.model.dim), np.float32), np.zeros((0, self.model.config.image.feature_dim),
                                                                         np.float32)
        return np.concatenate(es), np.concatenate(fs)

    def logits(self, emb: np.ndarray, feat: np.ndarray | None = None) -> np.ndarray:
        """(n, C) logits from image embeddings / backbone features (pixel prompt already applied)."""
        t, m = self.prompt.tensors, self.prompt.meta
        if "weight" in t:                                                             # linear probe
            return l2_normalize(feat) @ t["weight"].astype(np.float32).T + t["bias"].astype(np.float32)
        if self.prompt.visual == "feature":
            v = m["visual"]
            emb = ImageHead.of(self.model)(apply_feature_tokens(feat, t["feature_tokens"], int(v["hw"])))
        bank = getattr(self.model, "concept_bank", None)
        if bank is not None and self.prompt.method == "zeroshot":   # label-space rows meet decorrelated photos
            emb = bank.decorrelate(emb)
        z = self.scale * emb @ t["class_embeds"].astype(np.float32).T                 # (n, C)
        if "cache_keys" in t:                                                         # Tip-Adapter(-F)
            tip = m["tip"]
            A = l2_normalize(feat) @ l2_normalize(t["cache_keys"].astype(np.float32)).T   # (n, N) cosine
            z = z + float(tip["alpha"]) * np.exp(-float(tip["beta"]) * (1.0 - A)) @ t["cache_values"].astype(
                np.float32)
        return z

    def scores(self, images: Sequence) -> np.ndarray:
        """images -> (n, C) class probabilities (columns follow ``prompt.labels(lang)``)."""
        emb, feat = self.encode(images)
        return softmax(self.logits(emb, feat))

    def classify(self, images: Sequence, lang: str = "en", top: int | None = None) -> list[list[dict]]:
        """Per image, [{"label", "class", "score"}, ...] best first."""
        S = self.scores(images)
        labels, classes = self.prompt.labels(lang), self.prompt.classes
        out = []
        for row in S:
            order = np.argsort(-row)[: top or len(row)]
            out.append([{"label": labels[j], "class": classes[j], "score": float(row[j])} for j in order])
        return out
