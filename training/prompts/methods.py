"""Few-shot methods on the frozen encoders; each returns a ``dcclip_core.prompts.Prompt`` (not yet saved).

    data = prepare(task, env, shots=16, seed=0)            # cached features of shots / val / test
    prompt, info = learn("coop", data, env, FewShotConfig())
    acc = evaluate(prompt, data, env)                      # exactly the inference path (numpy + ONNX)

| method        | trains                                   | on                     | inference needs      |
|---------------|------------------------------------------|------------------------|----------------------|
| zeroshot      | nothing (EN/ZH template ensembles)       | -                      | class embeddings     |
| tip-adapter   | nothing; alpha/beta searched on val      | cached features        | + cache keys         |
| tip-adapter-f | cache keys (self-match masked)           | cached features        | + cache keys         |
| linear-probe  | logistic regression (C searched on val)  | cached features        | linear head          |
| coop          | M context vectors (text student frozen)  | cached embeddings      | class embeddings     |
| vpt           | pixel frame (or feature-map tokens)      | pixels through the CNN | numpy pre-processing |
| vpt deep/shallow | tokens per ViT layer / first layer    | pixels through the ViT | prompted ViT (ONNX)  |
| upt           | one shared net -> text ctx + feature tokens | cached features     | both                 |
| mvlpt         | coop/upt initialised from a source prompt; or a group of tasks sharing one prompt   |
Validation (balanced, disjoint from the shots) picks the best step and the training-free hyper-parameters.
"""
from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from dcclip_core.prompts import Prompt, PromptClassifier, list_prompts, load_prompt, model_ref
from .data import Task, fewshot_split, materialise
from .features import EmbeddingCache, class_embeddings, l2n

METHODS = ("zeroshot", "tip-adapter", "tip-adapter-f", "linear-probe", "coop", "vpt", "upt", "mvlpt")
Progress = Callable[[int, int, float], None]          # (step, total steps, loss)
# Who hears each validation (step, accuracy) while a prompt learns: set for one learning run by ``listen_evals``
# (the app plots validation accuracy live); the train loop's callers need not pass it down.
_EVAL_LISTENER: "contextvars.ContextVar[Callable[[int, float], None] | None]" = contextvars.ContextVar(
    "dcclip_eval_listener", default=None)


@contextlib.contextmanager
def listen_evals(fn: Callable[[int, float], None] | None):
    """Within the block, every validation of ``train_loop`` (and a learner's final one) calls fn(step, accuracy)."""
    token = _EVAL_LISTENER.set(fn)
    try:
        yield
    finally:
        _EVAL_LISTENER.reset(token)


def _heard(step: int, acc: float) -> None:
    fn = _EVAL_LISTENER.get()
    if fn is not None and acc == acc:                # not NaN
        fn(int(step), float(acc))


@dataclass
class FewShotConfig:
    lang: str = "en"                    # class names / templates: en | zh | both
    logit_scale: float = 100.0          # CLIP's fixed scale for cosine logits
    # CoOp (also the text side of UPT / MVLPT)
    n_ctx: int = 16                     # M context vectors, random N(0, 0.02) (CoOp / MVLPT default)
    ctx_init: str = ""                  # or a template's words, e.g. "a photo of a" (M = its token count)
    position: str = "end"               # class token position: end | middle | front
    steps: int = 200
    lr: float = 5e-3
    weight_decay: float = 0.0
    batch_size: int = 256               # images per step (all shots when fewer)
    eval_every: int = 20                # validation interval; the best step is kept
    # VPT
    visual: str = "pixel"               # CNN: pixel (frame, trained through the CNN) | feature (map tokens);
                                        # ViT towers: deep (tokens per layer) | shallow (first layer only)
    pad: int = 16                       # frame width in pixels
    vpt_steps: int = 20
    vpt_lr: float = 0.02
    vpt_batch: int = 16
    vpt_train_size: int = 0             # pixel VPT: run the CNN at this size while training (0 = full size)
    vpt_patience: int = 0               # pixel / deep VPT: stop when the loss (EMA) has not improved for N steps
    feature_tokens: int = 4
    feature_lr: float = 0.05
    vit_tokens: int = 8                 # deep / shallow VPT: T tokens per layer
    vit_lr: float = 0.05
    # UPT
    upt_dim: int = 128
    upt_text_tokens: int = 4            # text context of UPT when upt_ctx_init is ""
    upt_ctx_init: str = "a photo of a"  # UPT's text context starts at these words (+ the shared net's output)
    # Tip-Adapter-F
    tip_steps: int = 100
    tip_lr: float = 1e-3
    threads: int = 1                    # torch threads (1 is fastest for these small ops on a busy 2-core box)

    def replace(self, **kw) -> "FewShotConfig":
        return dataclasses.replace(self, **kw)


# ---------------------------------------------------------------------------------------------------------
# Data and the environment (model + lazily loaded torch parts)
# ---------------------------------------------------------------------------------------------------------


@dataclass
class FeatureSplit:
    emb: np.ndarray                     # (n, d) joint image embeddings (ONNX)
    feat: np.ndarray                    # (n, F) pooled backbone features (ONNX)
    y: np.ndarray                       # (n,) labels
    paths: list = field(default_factory=list)   # files or in-memory images (for pixel prompts)

    def __len__(self) -> int:
        return len(self.y)


@dataclass
class FewShotData:
    name: str
    classes: list[str]
    names: dict[str, list[str]]         # {"en": [...], "zh": [...]}
    train: FeatureSplit
    val: FeatureSplit | None
    test: FeatureSplit | None
    shots: int = 0
    seed: int = 0

    @property
    def num_classes(self) -> int:
        return len(self.classes)


class LearningEnv:
    """What prompt learning runs on: the ONNX model, its feature cache and (lazily) the frozen torch parts used
    for training. ``image_tower``: a torch image tower to use instead of loading the model's."""

    def __init__(self, model=None, cache: EmbeddingCache | None = None, model_name: str = "default",
                 image_tower=None):
        import dcclip_core
        self.model = model if model is not None else dcclip_core.load(model_name)
        self.cache = cache if cache is not None else EmbeddingCache(self.model)
        self._text = self._head = None
        self._tower = image_tower
        self._zs: dict = {}

    @property
    def model_dir(self) -> Path:
        return Path(self.model.path)

    def text_encoder(self):
        if self._text is None:
            from .text import FrozenTextEncoder, load_text_student
            self._text = FrozenTextEncoder(load_text_student(str(self.model_dir)))
        return self._text

    def image_head(self):
        if self._head is None:
            from .visual import TorchImageHead
            self._head = TorchImageHead(self.model_dir)
        return self._head

    def image_tower(self):
        if self._tower is None:
            from .visual import load_image_tower
            self._tower = load_image_tower(str(self.model_dir))
        return self._tower

    def free_image_tower(self) -> None:
        """Let the torch image tower go (its memory); the next ``image_tower()`` loads it again."""
        self._tower = None

    def zeroshot(self, names: dict[str, list[str]], lang: str) -> np.ndarray:
        key = (tuple(names["en"]), tuple(names["zh"]), lang)
        if key not in self._zs:
            self._zs[key] = class_embeddings(self.model, names, lang)
        return self._zs[key]

    @property
    def hw(self) -> int:
        from .visual import feature_map_hw
        return feature_map_hw(self.model.config.image.image_size)


def _test_rows(n: int, max_test: int | None) -> np.ndarray:
    """All n test rows, or a fixed random sample of ``max_test`` of them (sorted)."""
    idx = np.arange(n)
    if max_test and n > max_test:
        idx = np.sort(np.random.default_rng(1234).permutation(n)[:max_test])
    return idx


def prepare(task: Task, env: LearningEnv, shots: int, seed: int, with_test: bool = True,
            max_test: int | None = None) -> FewShotData:
    """K shots per class + balanced validation from ``train/``, all of ``test/`` (or ``max_test`` of it); features
    from the cache. ``shots=0``: no training images at all (zero-shot on ``test/`` of a task without ``train/``)."""
    if shots:
        tr_idx, va_idx = fewshot_split(task.train_labels, shots, seed, num_classes=task.num_classes)

    def split(paths, labels, idx):
        ps = materialise([paths[i] for i in idx])                  # ELEVATER zip members -> cached files
        e, f = env.cache.encode(ps)
        return FeatureSplit(e, f, np.asarray(labels)[idx], ps)

    test = None
    if with_test and len(task.test_paths):
        test = split(task.test_paths, task.test_labels, _test_rows(len(task.test_paths), max_test))
    names = {k: list(v) for k, v in task.names.items()}
    if not shots:
        F = test.feat.shape[1] if test is not None else env.model.config.image.feature_dim
        empty = FeatureSplit(np.zeros((0, env.model.dim), np.float32), np.zeros((0, F), np.float32),
                             np.zeros(0, np.int64))
        return FewShotData(task.name, list(task.classes), names, empty, None, test, 0, seed)
    return FewShotData(task.name, list(task.classes), names,
                       split(task.train_paths, task.train_labels, tr_idx),
                       split(task.train_paths, task.train_labels, va_idx) if len(va_idx) else None,
                       test, shots, seed)


def data_from_examples(examples: dict, env: LearningEnv, names: dict[str, list[str]] | None = None,
                       val_fraction: float = 0.0, seed: int = 0) -> FewShotData:
    """{label: [path | PIL | bytes, ...]} (the app's labelled examples) -> FewShotData without a test split."""
    from .features import encode_images
    classes = list(examples)
    items = [(im, c) for c, label in enumerate(classes) for im in examples[label]]
    if not items:
        raise ValueError("no example images")
    ims = [im for im, _ in items]
    y = np.array([c for _, c in items], np.int64)
    files = all(isinstance(im, (str, Path)) for im in ims)
    e, f = env.cache.encode(ims) if files else encode_images(env.model, ims)
    rng = np.random.default_rng(seed)
    val_mask = np.zeros(len(y), bool)
    if val_fraction > 0:
        for c in range(len(classes)):
            idx = rng.permutation(np.flatnonzero(y == c))
            k = int(len(idx) * val_fraction)
            if len(idx) - k >= 1 and k >= 1:
                val_mask[idx[:k]] = True
    tr, va = np.flatnonzero(~val_mask), np.flatnonzero(val_mask)
    names = names or {"en": classes, "zh": classes}
    return FewShotData("examples", classes, names, FeatureSplit(e[tr], f[tr], y[tr], [ims[i] for i in tr]),
                       FeatureSplit(e[va], f[va], y[va], [ims[i] for i in va]) if len(va) else None, None,
                       shots=int(np.bincount(y[tr]).min()), seed=seed)


# ---------------------------------------------------------------------------------------------------------
# Prompt construction and evaluation
# ---------------------------------------------------------------------------------------------------------


def make_prompt(method: str, data: FewShotData, env: LearningEnv, cfg: FewShotConfig, tensors: dict,
                extra: dict | None = None) -> Prompt:
    meta = {"method": method, "model": model_ref(env.model), "classes": list(data.classes),
            "labels": {"en": list(data.names["en"]), "zh": list(data.names["zh"])}, "shots": int(data.shots),
            "seed": int(data.seed), "task": data.name, "lang": cfg.lang, "logit_scale": float(cfg.logit_scale)}
    meta.update(extra or {})
    return Prompt(meta, {k: np.ascontiguousarray(v) for k, v in tensors.items()})


def accuracy_from_logits(z: np.ndarray, y: np.ndarray) -> float:
    return float((z.argmax(1) == y).mean()) if len(y) else float("nan")


def evaluate(prompt: Prompt, split: FeatureSplit | None, env: LearningEnv) -> float:
    """Top-1 accuracy on a split through the inference path (pixel prompts re-encode the images with ONNX)."""
    if split is None or not len(split):
        return float("nan")
    clf = PromptClassifier(env.model, prompt, check=False)
    if prompt.visual in ("pixel", "deep", "shallow"):
        emb, feat = clf.encode(split.paths)
    else:
        emb, feat = split.emb, split.feat
    return accuracy_from_logits(clf.logits(emb, feat), split.y)


def blas_threads(n: int):
    """Limit numpy/sklearn BLAS threads (on a busy 2-core box, 2 BLAS threads made sklearn 100x slower)."""
    try:
        from threadpoolctl import threadpool_limits
        return threadpool_limits(int(n))
    except ImportError:                                    # pragma: no cover - sklearn ships threadpoolctl
        import contextlib
        return contextlib.nullcontext()


def _t(x, dtype=None):
    import torch
    return torch.as_tensor(np.asarray(x), dtype=dtype)


# ---------------------------------------------------------------------------------------------------------
# A small training loop with validation-based selection
# ---------------------------------------------------------------------------------------------------------


def train_loop(params: list, loss_fn: Callable, n: int, steps: int, lr: float, cfg: FewShotConfig,
               val_fn: Callable[[], tuple[float, float]] | None, snapshot: Callable[[], dict],
               progress: Progress | None = None, seed: int = 0, batch_size: int | None = None,
               weight_decay: float | None = None, patience: int = 0) -> dict:
    """AdamW + cosine schedule (5 % warm-up); keeps the snapshot with the best validation (accuracy, -loss).

    ``patience`` > 0 (runs without validation only): stop once the EMA of the loss has not improved by 1 % for
    that many steps; progress then jumps to (steps, steps) so callers see the end."""
    import torch
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=cfg.weight_decay if weight_decay is None else weight_decay)
    B = min(batch_size or cfg.batch_size, n)
    warm = max(1, steps // 20)
    best, best_key, history = snapshot(), (-1.0, -math.inf), []
    ema, ema_best, since = None, math.inf, 0
    if val_fn is not None:
        acc, vloss = val_fn()
        best_key = (acc, -vloss)
        history.append({"step": 0, "val_accuracy": acc, "val_loss": vloss})
        _heard(0, acc)
    for step in range(1, steps + 1):
        f = step / warm if step <= warm else 0.5 * (1 + math.cos(math.pi * (step - warm) / max(1, steps - warm)))
        for g in opt.param_groups:
            g["lr"] = lr * f
        idx = rng.choice(n, size=B, replace=False) if B < n else np.arange(n)
        loss = loss_fn(idx)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        lv = float(loss.detach())
        stop = False
        if patience and val_fn is None:
            ema = lv if ema is None else 0.7 * ema + 0.3 * lv
            if ema < 0.99 * ema_best:
                ema_best, since = ema, 0
            else:
                since += 1
            stop = since >= patience and step < steps
        if progress:
            progress(steps if stop else step, steps, lv)
        if stop:
            best = snapshot()
            history.append({"step": step, "loss": lv, "stopped_early": True})
            break
        if val_fn is not None and (step % cfg.eval_every == 0 or step == steps):
            acc, vloss = val_fn()
            history.append({"step": step, "loss": lv, "val_accuracy": acc, "val_loss": vloss})
            _heard(step, acc)
            if (acc, -vloss) > best_key:
                best_key, best = (acc, -vloss), snapshot()
        elif val_fn is None and step == steps:
            best = snapshot()
    return {"state": best, "val_accuracy": best_key[0] if val_fn else float("nan"), "history": history,
            "final_loss": lv if steps else float("nan")}


def _ce_val(logits_fn: Callable, split: FeatureSplit | None, scale: float = 1.0):
    """A val_fn computing (accuracy, CE loss) of logits_fn(split) under no_grad."""
    if split is None or not len(split):
        return None
    import torch
    import torch.nn.functional as F
    y = _t(split.y, torch.long)

    def fn():
        with torch.no_grad():
            z = logits_fn(split)
            return float((z.argmax(1) == y).float().mean()), float(F.cross_entropy(z, y))
    return fn


# ---------------------------------------------------------------------------------------------------------
# Training-free baselines
# ---------------------------------------------------------------------------------------------------------


def fit_zeroshot(data: FewShotData, env: LearningEnv, cfg: FewShotConfig, progress=None, **_):
    W = env.zeroshot(data.names, cfg.lang)
    p = make_prompt("zeroshot", data, env, cfg, {"class_embeds": W}, {"templates": f"{cfg.lang}_short"})
    return p, {}


TIP_ALPHAS = (0.1, 0.3, 0.5, 1, 2, 3, 5, 10, 20, 50)
TIP_BETAS = (1, 2, 3, 5, 7, 10, 15, 20, 30)


def _tip_search(zs, A, V, y, default=(1.0, 5.0)) -> tuple[float, float, float]:
    """Grid search (alpha, beta) on validation logits; returns (alpha, beta, val accuracy)."""
    if y is None or not len(y):
        return default[0], default[1], float("nan")
    best = (-1.0, default[0], default[1])
    for b in TIP_BETAS:
        E = np.exp(-b * (1.0 - A)) @ V
        for a in TIP_ALPHAS:
            acc = accuracy_from_logits(zs + a * E, y)
            if acc > best[0] + 1e-9:
                best = (acc, a, b)
    return best[1], best[2], best[0]


def fit_tip_adapter(data: FewShotData, env: LearningEnv, cfg: FewShotConfig, progress=None, finetune: bool = False,
                    **_):
    """Tip-Adapter (training-free cache model over L2-normalised backbone features) and Tip-Adapter-F."""
    W = env.zeroshot(data.names, cfg.lang)                                     # (C, d)
    C = data.num_classes
    keys = l2n(data.train.feat)                                                # (N, F)
    V = np.eye(C, dtype=np.float32)[data.train.y]                              # (N, C)
    va = data.val
    zs_va = cfg.logit_scale * va.emb @ W.T if va is not None else None
    A_va = l2n(va.feat) @ keys.T if va is not None else None
    alpha, beta, vacc = _tip_search(zs_va, A_va, V, va.y if va is not None else None)
    info = {"alpha": alpha, "beta": beta}
    if finetune:
        import torch
        import torch.nn.functional as F
        torch.set_num_threads(cfg.threads)
        K = torch.nn.Parameter(_t(keys))
        Vt, ft, zs_tr = _t(V), _t(l2n(data.train.feat)), _t(cfg.logit_scale * data.train.emb @ W.T)
        y = _t(data.train.y, torch.long)
        self_mask = torch.eye(len(keys), dtype=torch.bool)                     # leave-one-out: no self match

        def loss_fn(idx):
            i = _t(idx, torch.long)
            A = ft[i] @ F.normalize(K, dim=-1).T                               # [b, N]
            A = A.masked_fill(self_mask[i], -1e4)
            z = zs_tr[i] + alpha * torch.exp(-beta * (1.0 - A)) @ Vt
            return F.cross_entropy(z, y[i])

        def logits_fn(s):
            A = _t(l2n(s.feat)) @ F.normalize(K, dim=-1).T
            return _t(cfg.logit_scale * s.emb @ W.T) + alpha * torch.exp(-beta * (1.0 - A)) @ Vt

        res = train_loop([K], loss_fn, len(keys), cfg.tip_steps, cfg.tip_lr, cfg, _ce_val(logits_fn, va),
                         lambda: {"K": K.detach().clone()}, progress, seed=data.seed)
        keys = l2n(res["state"]["K"].numpy())
        if va is not None:
            alpha, beta, vacc = _tip_search(zs_va, l2n(va.feat) @ keys.T, V, va.y, (alpha, beta))
        info.update(alpha=alpha, beta=beta, history=res["history"])
    method = "tip-adapter-f" if finetune else "tip-adapter"
    p = make_prompt(method, data, env, cfg, {"class_embeds": W, "cache_keys": keys.astype(np.float16),
                                             "cache_values": V}, {"tip": {"alpha": alpha, "beta": beta}})
    info["val_accuracy"] = vacc
    return p, info


LP_CS = (0.01, 0.1, 1.0, 10.0, 100.0)


def fit_linear_probe(data: FewShotData, env: LearningEnv, cfg: FewShotConfig, progress=None, **_):
    """Logistic regression on L2-normalised backbone features; C picked on the validation split."""
    from sklearn.linear_model import LogisticRegression
    s = math.sqrt(data.train.feat.shape[1])                # unit-norm rows -> ~unit-variance dims (fast lbfgs)
    X, y = l2n(data.train.feat) * s, data.train.y
    C = data.num_classes
    best = None
    for c in LP_CS if data.val is not None else (1.0,):
        clf = LogisticRegression(C=c, max_iter=500).fit(X, y)
        acc = clf.score(l2n(data.val.feat) * s, data.val.y) if data.val is not None else float("nan")
        if best is None or acc > best[0] + 1e-9:
            best = (acc, c, clf)
    acc, c, clf = best
    Wt = np.zeros((C, X.shape[1]), np.float32)
    b = np.zeros(C, np.float32)
    if len(clf.classes_) == 2 and clf.coef_.shape[0] == 1:                      # binary: one row of logits
        Wt[clf.classes_[1]], b[clf.classes_[1]] = clf.coef_[0], clf.intercept_[0]
    else:
        Wt[clf.classes_], b[clf.classes_] = clf.coef_, clf.intercept_
    Wt *= s                                                 # inference applies it to plain unit-norm features
    p = make_prompt("linear-probe", data, env, cfg, {"weight": Wt, "bias": b}, {"linear_probe": {"C": c}})
    return p, {"C": c, "val_accuracy": acc}


# ---------------------------------------------------------------------------------------------------------
# CoOp / UPT / MVLPT (text context trained on cached image embeddings)
# ---------------------------------------------------------------------------------------------------------


def _langs(lang: str) -> tuple[str, ...]:
    return ("en", "zh") if lang == "both" else (lang,)


def new_coop(env: LearningEnv, cfg: FewShotConfig, seed: int = 0):
    from .text import CoOp, context_from_text
    enc = env.text_encoder()
    init = context_from_text(env.model.tokenizer, enc.token_embedding, cfg.ctx_init) if cfg.ctx_init else None
    return CoOp(cfg.n_ctx, enc.width, init=init, seed=seed)


def sequences(env: LearningEnv, names: dict[str, list[str]], n_ctx: int, cfg: FewShotConfig):
    from .text import PromptSequences
    enc = env.text_encoder()
    return PromptSequences(env.model.tokenizer, enc.token_embedding, names, n_ctx, cfg.position, _langs(cfg.lang))


class UPT:
    """Namespace for the unified prompt network (built lazily: needs torch)."""

    @staticmethod
    def build(env: LearningEnv, cfg: FewShotConfig, seed: int = 0):
        import torch
        from torch import nn

        from .text import context_from_text

        class UPTNet(nn.Module):
            """Learnable vectors -> one 1-head attention block (d) -> text context [M, W] + feature tokens [T, F]."""

            def __init__(self, d: int, n_text: int, n_vis: int, width: int, feat_dim: int, ctx0):
                super().__init__()
                g = torch.Generator().manual_seed(seed)
                self.n_text = n_text
                self.u = nn.Parameter(torch.randn(n_text + n_vis, d, generator=g) * 0.02)   # [M+T, d]
                self.ln1, self.ln2 = nn.LayerNorm(d), nn.LayerNorm(d)
                self.attn = nn.MultiheadAttention(d, 1, batch_first=True)
                self.mlp = nn.Sequential(nn.Linear(d, 2 * d), nn.GELU(), nn.Linear(2 * d, d))
                self.text_head = nn.Linear(d, width)
                self.vis_head = nn.Linear(d, feat_dim)
                nn.init.normal_(self.text_head.weight, std=0.02)
                nn.init.zeros_(self.text_head.bias)
                nn.init.zeros_(self.vis_head.weight)
                nn.init.zeros_(self.vis_head.bias)
                self.ctx0 = nn.Parameter(ctx0)                                   # [M, W] template init

            def forward(self):
                x = self.u[None]                                                  # [1, M+T, d]
                h = self.ln1(x)
                x = x + self.attn(h, h, h, need_weights=False)[0]
                x = x + self.mlp(self.ln2(x))
                x = x[0]
                ctx = self.ctx0 + self.text_head(x[:self.n_text])                 # [M, W]
                vis = self.vis_head(x[self.n_text:])                              # [T, F]
                return ctx, vis

        enc = env.text_encoder()
        if cfg.upt_ctx_init:
            ctx0 = context_from_text(env.model.tokenizer, enc.token_embedding, cfg.upt_ctx_init)
        else:
            ctx0 = torch.randn(cfg.upt_text_tokens, enc.width, generator=torch.Generator().manual_seed(seed)) * 0.02
        return UPTNet(cfg.upt_dim, ctx0.shape[0], cfg.feature_tokens, enc.width,
                      env.model.config.image.feature_dim, ctx0)


def _text_trainer(method: str, data_list: Sequence[FewShotData], env: LearningEnv, cfg: FewShotConfig,
                  progress: Progress | None, init_state: dict | None = None, seed: int = 0,
                  steps: int | None = None, init_seed: int | None = None):
    """Train one prompt (CoOp or UPT) on the union of the tasks in data_list (softmax over the union of
    their classes, deduplicated by English name). Returns (module, union names, per-task class index, info)."""
    import torch
    import torch.nn.functional as F
    from .text import load_nonstrict
    torch.set_num_threads(cfg.threads)
    union_en, union_zh, index = [], [], []
    for d in data_list:
        idx = []
        for en, zh in zip(d.names["en"], d.names["zh"]):
            key = en.strip().lower()
            if key not in [u.lower() for u in union_en]:
                union_en.append(en)
                union_zh.append(zh)
            idx.append([u.lower() for u in union_en].index(key))
        index.append(np.array(idx))
    names = {"en": union_en, "zh": union_zh}
    upt = method == "upt"
    s0 = seed if init_seed is None else init_seed
    module = UPT.build(env, cfg, s0) if upt else new_coop(env, cfg, s0)
    load_info = load_nonstrict(module, init_state) if init_state else None
    n_ctx = module.ctx0.shape[0] if upt else module.n_ctx
    seqs = sequences(env, names, n_ctx, cfg)
    enc = env.text_encoder()
    head = env.image_head() if upt else None
    hw = env.hw
    # the union training set (labels mapped into the union)
    E = np.concatenate([d.train.emb for d in data_list])
    Fe = np.concatenate([d.train.feat for d in data_list])
    Y = np.concatenate([ix[d.train.y] for d, ix in zip(data_list, index)])
    Et, Ft, Yt = _t(E), _t(Fe), _t(Y, torch.long)
    scale = cfg.logit_scale

    def forward(emb, feat):
        if upt:
            from .visual import apply_tokens
            ctx, vis = module()
            W = seqs.class_embeddings(enc, ctx)
            img = head(apply_tokens(feat, vis, hw))
        else:
            W = module(enc, seqs)
            img = emb
        return scale * img @ W.T                                              # [n, C_union]

    def loss_fn(idx):
        i = _t(idx, torch.long)
        return F.cross_entropy(forward(Et[i], Ft[i]), Yt[i])

    vals = [(d.val, ix) for d, ix in zip(data_list, index) if d.val is not None and len(d.val)]
    val_fn = None
    if vals:
        Ev = _t(np.concatenate([v.emb for v, _ in vals]))
        Fv = _t(np.concatenate([v.feat for v, _ in vals]))
        Yv = _t(np.concatenate([ix[v.y] for v, ix in vals]), torch.long)
        # per-task slices at validation: logits restricted to the task's own classes
        owner = np.concatenate([np.full(len(v), k) for k, (v, _) in enumerate(vals)])
        allowed = torch.zeros(len(owner), len(union_en), dtype=torch.bool)
        for k, (_, ix) in enumerate(vals):
            allowed[np.flatnonzero(owner == k)[:, None], ix[None]] = True

        def val_fn():
            with torch.no_grad():
                z = forward(Ev, Fv).masked_fill(~allowed, -1e4)
                return float((z.argmax(1) == Yv).float().mean()), float(F.cross_entropy(z, Yv))

    res = train_loop(list(module.parameters()), loss_fn, len(Y), steps or cfg.steps, cfg.lr, cfg, val_fn,
                     lambda: {k: v.detach().clone() for k, v in module.state_dict().items()}, progress,
                     seed=seed)
    module.load_state_dict(res["state"])
    info = {"val_accuracy": res["val_accuracy"], "history": res["history"], "final_loss": res["final_loss"],
            "init": load_info}
    return module, names, index, seqs, info


def _export_text(module, seqs, env: LearningEnv, cfg: FewShotConfig, upt: bool) -> tuple[dict, dict]:
    """Precompute what inference needs (class embeddings, visual tokens) + the trainable state itself."""
    import torch
    enc = env.text_encoder()
    with torch.no_grad():
        if upt:
            ctx, vis = module()
            W = seqs.class_embeddings(enc, ctx).numpy()
            tensors = {"class_embeds": W, "feature_tokens": vis.numpy().astype(np.float32), "ctx": ctx.numpy()}
            tensors.update({f"upt.{k}": v.numpy().astype(np.float16) for k, v in module.state_dict().items()})
            extra = {"visual": {"type": "feature", "tokens": int(vis.shape[0]), "hw": env.hw}}
        else:
            W = module(enc, seqs).numpy()
            tensors = {"class_embeds": W, "ctx": module.ctx.detach().numpy()}
            extra = {}
    extra["coop"] = {"n_ctx": int(tensors["ctx"].shape[0]), "ctx_init": cfg.upt_ctx_init if upt else cfg.ctx_init,
                     "position": cfg.position,
                     "langs": list(_langs(cfg.lang))}
    return tensors, extra


def _slice(tensors: dict, cls_index: np.ndarray) -> dict:
    t = dict(tensors)
    t["class_embeds"] = tensors["class_embeds"][cls_index]
    return t


def fit_coop(data: FewShotData, env: LearningEnv, cfg: FewShotConfig, progress=None, method: str = "coop",
             init_state: dict | None = None, extra: dict | None = None, **_):
    upt = method == "upt" or (method == "mvlpt" and (extra or {}).get("base") == "upt")
    module, names, index, seqs, info = _text_trainer("upt" if upt else "coop", [data], env, cfg, progress,
                                                     init_state, seed=data.seed)
    tensors, ex = _export_text(module, seqs, env, cfg, upt)
    p = make_prompt(method, data, env, cfg, _slice(tensors, index[0]), {**ex, **(extra or {})})
    return p, info


def fit_upt(data, env, cfg, progress=None, **kw):
    return fit_coop(data, env, cfg, progress, method="upt", **kw)


def source_state(source: Prompt, base: str) -> dict:
    """The trainable state stored in a source prompt, keyed like the CoOp / UPT module."""
    import torch
    t = source.tensors
    if base == "upt":
        return {k[4:]: torch.as_tensor(v.astype(np.float32)) for k, v in t.items() if k.startswith("upt.")}
    return {"ctx": torch.as_tensor(t["ctx"].astype(np.float32))} if "ctx" in t else {}


def default_source(model) -> Prompt | None:
    """The newest shipped/user prompt with method mvlpt-source compatible with the model, or None."""
    cands = [p for p in list_prompts(model=model) if p.get("method") == "mvlpt-source" and p.get("compatible")]
    if not cands:
        return None
    cands.sort(key=lambda p: (not p["shipped"], p.get("created") or ""), reverse=True)
    return load_prompt(cands[0]["path"], model=model)


def fit_mvlpt(data: FewShotData, env: LearningEnv, cfg: FewShotConfig, progress=None, source: Prompt | None = None,
              **_):
    """MVLPT target: a CoOp (or UPT) prompt initialised from a multitask source prompt (non-strict)."""
    if source is None:
        raise ValueError("mvlpt needs a source prompt (--source, or a shipped mvlpt-source prompt)")
    base = source.meta.get("base", "coop")
    state = source_state(source, base)
    return fit_coop(data, env, cfg, progress, method="mvlpt", init_state=state,
                    extra={"base": base, "source": {"name": source.name, "tasks": source.meta.get("tasks", [])}})


def fit_group(datas: Sequence[FewShotData], env: LearningEnv, cfg: FewShotConfig, base: str = "coop",
              progress=None, source: Prompt | None = None, seed: int = 0) -> tuple[list[Prompt], dict]:
    """MVLPT multitask group: the tasks share one prompt (union softmax); one prompt per task is exported with
    its own classes' embeddings (logits sliced per task)."""
    state = source_state(source, base) if source is not None else None
    module, names, index, seqs, info = _text_trainer(base, list(datas), env, cfg, progress, state, seed=seed)
    tensors, ex = _export_text(module, seqs, env, cfg, base == "upt")
    group = [d.name for d in datas]
    prompts = [make_prompt("mvlpt", d, env, cfg, _slice(tensors, ix),
                           {**ex, "base": base, "group": group,
                            **({"source": {"name": source.name}} if source is not None else {})})
               for d, ix in zip(datas, index)]
    return prompts, info


def train_source(datas: Sequence[FewShotData] | Callable[[int], Sequence[FewShotData]], env: LearningEnv,
                 cfg: FewShotConfig, base: str = "coop", seeds: Sequence[int] = (0, 1, 2),
                 progress=None) -> tuple[Prompt, dict]:
    """MVLPT source prompt: trained on the union of the source tasks (union softmax) once per seed, the
    checkpoints averaged. ``datas`` may be a function seed -> tasks (a different few-shot draw per seed).
    All seeds start from the same initialisation (that of the first seed): averaging prompts trained from
    different random inits mixes unrelated solutions (measured: the average fell to chance on some tasks).
    Refuses held-out tasks."""
    import torch
    from .tasks import HELDOUT
    draw = datas if callable(datas) else (lambda s: datas)
    states, infos = [], []
    for s in seeds:
        ds = list(draw(s))
        bad = [d.name for d in ds if d.name in HELDOUT]
        if bad:
            raise ValueError(f"held-out task(s) {bad} must never be part of a source set")
        module, names, index, seqs, info = _text_trainer(base, ds, env, cfg, progress, seed=s, init_seed=seeds[0])
        states.append({k: v.detach().clone() for k, v in module.state_dict().items()})
        infos.append({"seed": s, "val_accuracy": info["val_accuracy"]})
    datas = ds
    avg = {k: torch.stack([st[k].float() for st in states]).mean(0) for k in states[0]}
    module.load_state_dict(avg)
    tensors, ex = _export_text(module, seqs, env, cfg, base == "upt")
    union = FewShotData("source", [n for n in names["en"]], names, datas[0].train, None, None,
                        shots=int(min(d.shots for d in datas)), seed=int(seeds[0]))
    # validation of the averaged prompt on every task (sliced)
    per_task = {}
    for d, ix in zip(datas, index):
        if d.val is not None:
            per_task[d.name] = evaluate(make_prompt("x", d, env, cfg, _slice(tensors, ix), ex), d.val, env)
    p = make_prompt("mvlpt-source", union, env, cfg, tensors,
                    {**ex, "base": base, "tasks": [d.name for d in datas], "seeds": list(seeds),
                     "val_accuracy": float(np.mean(list(per_task.values()))) if per_task else None,
                     "val_per_task": per_task})
    return p, {"per_seed": infos, "val_per_task": per_task}


# ---------------------------------------------------------------------------------------------------------
# VPT
# ---------------------------------------------------------------------------------------------------------


def fit_vpt(data: FewShotData, env: LearningEnv, cfg: FewShotConfig, progress=None, class_embeds=None, **_):
    """VPT with fixed class embeddings (zero-shot templates unless given): pixel frame or feature tokens
    (CNN tower), deep or shallow prompt tokens (ViT tower)."""
    import torch
    import torch.nn.functional as F
    from .visual import FeaturePrompt, PixelPrompt
    if cfg.visual not in ("pixel", "feature", "deep", "shallow"):
        raise ValueError(f"visual must be pixel | feature (CNN) or deep | shallow (ViT), not {cfg.visual!r}")
    torch.set_num_threads(cfg.threads if cfg.visual == "feature" else max(cfg.threads, 2))
    W = _t(class_embeds if class_embeds is not None else env.zeroshot(data.names, cfg.lang))   # [C, d]
    y = _t(data.train.y, torch.long)
    if cfg.visual in ("deep", "shallow"):
        from .vit import DeepPrompt, ViTTower, ensure_model_graph
        tower = ViTTower.wrap(env.image_tower())                 # TypeError with a clear message for a CNN
        vp = DeepPrompt(tower.depth, cfg.vit_tokens, tower.width, cfg.visual, seed=data.seed)
        px = _t(np.stack([env.model.preprocess(p) for p in data.train.paths]))      # [N, 3, S, S]

        def loss_fn(idx):
            i = _t(idx, torch.long)
            emb = F.normalize(tower.embed(tower(px[i], vp.tokens, vp.mode)), dim=-1)
            return F.cross_entropy(cfg.logit_scale * emb @ W.T, y[i])

        res = train_loop([vp.tokens], loss_fn, len(y), cfg.vpt_steps, cfg.vit_lr, cfg, None,
                         lambda: {"tokens": vp.tokens.detach().clone()}, progress, seed=data.seed,
                         batch_size=cfg.vpt_batch, patience=cfg.vpt_patience)
        ensure_model_graph(env.model, cfg.visual, tower)         # the ONNX graph inference runs (once per model)
        tokens = res["state"]["tokens"]
        tensors = {"class_embeds": W.numpy(), "vpt_tokens": tokens.numpy().astype(np.float32)}
        visual = {"type": cfg.visual, "tokens": int(tokens.shape[1]), "layers": int(tokens.shape[0]),
                  "width": int(tokens.shape[2])}
        info = {"final_loss": res["final_loss"]}
    elif cfg.visual == "feature":
        head, fp = env.image_head(), FeaturePrompt(cfg.feature_tokens, env.model.config.image.feature_dim, env.hw)
        Ft = _t(data.train.feat)

        def logits_fn(s, feat=None):
            return cfg.logit_scale * head(fp(_t(s.feat) if feat is None else feat)) @ W.T

        res = train_loop([fp.tokens], lambda i: F.cross_entropy(logits_fn(None, Ft[_t(i, torch.long)]),
                                                                 y[_t(i, torch.long)]),
                         len(y), cfg.steps, cfg.feature_lr, cfg, _ce_val(logits_fn, data.val),
                         lambda: {"tokens": fp.tokens.detach().clone()}, progress, seed=data.seed)
        tensors = {"class_embeds": W.numpy(), "feature_tokens": res["state"]["tokens"].numpy()}
        visual = {"type": "feature", "tokens": cfg.feature_tokens, "hw": env.hw}
        info = {"val_accuracy": res["val_accuracy"], "history": res["history"]}
    else:
        tower = env.image_tower()
        S = env.model.config.image.image_size
        pp = PixelPrompt(S, cfg.pad)
        px = _t(np.stack([env.model.preprocess(p) for p in data.train.paths]))      # [N, 3, S, S]
        ts = int(cfg.vpt_train_size or S)

        def loss_fn(idx):
            i = _t(idx, torch.long)
            x = pp(px[i])                                                          # frame added at full size
            if ts < S:                                                             # cheaper: a smaller CNN pass
                x = F.interpolate(x, size=(ts, ts), mode="bilinear", antialias=True, align_corners=False)
            emb, _ = tower(x)
            return F.cross_entropy(cfg.logit_scale * emb @ W.T, y[i])

        res = train_loop([pp.frame], loss_fn, len(y), cfg.vpt_steps, cfg.vpt_lr, cfg, None,
                         lambda: {"frame": pp.frame.detach().clone()}, progress, seed=data.seed,
                         batch_size=cfg.vpt_batch, patience=cfg.vpt_patience)
        tensors = {"class_embeds": W.numpy(), "pixel_frame": res["state"]["frame"].numpy().astype(np.float16)}
        visual = {"type": "pixel", "size": S, "pad": cfg.pad}
        info = {"final_loss": res["final_loss"], "steps_run": len(res["history"]) and res["history"][-1]["step"]
                or cfg.vpt_steps}
    p = make_prompt("vpt", data, env, cfg, tensors, {"visual": visual})
    if cfg.visual != "feature" and data.val is not None:
        info["val_accuracy"] = evaluate(p, data.val, env)
    return p, info


# ---------------------------------------------------------------------------------------------------------
# Dispatch
# ---------------------------------------------------------------------------------------------------------

FITTERS = {
    "zeroshot": fit_zeroshot,
    "tip-adapter": fit_tip_adapter,
    "tip-adapter-f": lambda *a, **k: fit_tip_adapter(*a, finetune=True, **k),
    "linear-probe": fit_linear_probe,
    "coop": fit_coop,
    "vpt": fit_vpt,
    "upt": fit_upt,
    "mvlpt": fit_mvlpt,
}


def learn(method: str, data: FewShotData, env: LearningEnv, cfg: FewShotConfig | None = None,
          progress: Progress | None = None, **kw) -> tuple[Prompt, dict]:
    """Learn a prompt; info has train_s and val_accuracy. The prompt's metadata records both."""
    if method not in FITTERS:
        raise ValueError(f"unknown method {method!r} (have: {', '.join(METHODS)})")
    cfg = cfg or FewShotConfig()
    t0 = time.perf_counter()
    outer, heard = _EVAL_LISTENER.get(), []

    def relay(step: int, acc: float) -> None:
        heard.append(step)
        outer(step, acc)

    with blas_threads(cfg.threads), listen_evals(relay if outer is not None else None):
        prompt, info = FITTERS[method](data, env, cfg, progress=progress, **kw)
    info["train_s"] = time.perf_counter() - t0
    if "val_accuracy" not in info or info["val_accuracy"] is None or (
            isinstance(info["val_accuracy"], float) and math.isnan(info["val_accuracy"])):
        info["val_accuracy"] = evaluate(prompt, data.val, env) if data.val is not None else float("nan")
    va = info["val_accuracy"]
    if outer is not None and not heard and va is not None and va == va:
        outer(int(cfg.steps), float(va))              # learners without a train loop: one point at the end
    prompt.meta["val_accuracy"] = None if va is None or (isinstance(va, float) and math.isnan(va)) else float(va)
    prompt.meta["train_s"] = round(info["train_s"], 3)
    prompt.meta["config"] = {k: v for k, v in dataclasses.asdict(cfg).items()}
    return prompt, info
