"""`python -m training.calibrate_relevance`: calibrate readable relevance and the "no good match" gate.

Writes ``<model dir>/relevance.json`` (atomically) for ``dcclip_core.relevance`` and prints what it measured.
Everything is computed from the model itself and from text, never from photos that packages or the demo
folder ship:

* real texts: the 1000 ImageNet class names (EN + ZH, bare and in the short prompt templates), their English
  WordNet glosses and hypernym names (``assets/data``);
* generated nonsense: random letters, keyboard mashes, letter/digit ids, emoji, digits, punctuation,
  200-2000-character strings, mixed scripts, random CJK characters (plus "vocabulary salad", random pieces
  of the model's own vocabulary, which is reported but not fitted: it is half meaningful);
* the model's image side: the image vector of a photo its classifier is sure is class k (the one-hot mix of
  the class prototypes in ``model.safetensors``), or, for a model without prototypes, synthetic images
  (noise, gradients, stripes, checkers, shapes, lines) through the real image tower.

Steps: (1) the score knots are quantiles (50 / 95 / 99 / 99.9 / 99.99 %) of the null distribution: class-name
queries against other classes' image vectors; (2) the query gate is an L2-regularised logistic regression on
the query vector (real texts vs nonsense, classes balanced), its L2 strength chosen by leave-one-family-out
on the same calibration data (one nonsense family or one real text family left out at a time; error = share of
left-out nonsense passed + share of left-out real texts refused), its bias set so that 5 % of the real texts
are refused.

``--eval`` then *reports* (never tunes) how the decision does on the demo photos with their captions and
nonsense queries, and on the real-photo queries (``assets/data/real_photo_queries.json``) against the photos
packages ship, and stores those numbers under ``evaluation`` in the JSON. About a minute on 2 CPU cores.
"""
from __future__ import annotations

import argparse
import json
import random
import time
from pathlib import Path

import numpy as np

from dcclip_core.config import ASSETS_DIR, MODELS_DIR
from dcclip_core.relevance import FILENAME, FORMAT, PERCENT_AT_KNOTS, Relevance, load_prototypes
from training.corpus import load_imagenet_table, load_templates

DEMO_DIR = ASSETS_DIR / "demo"
NULL_QUANTILES = (0.5, 0.95, 0.99, 0.999, 0.9999)    # -> knots s0..s4 (percent 0, 25, 50, 75, 100)
GATE_ALPHA = 0.05                                      # share of real calibration texts the text score refuses
VISIBILITY_QUANTILE = 0.995                            # share of nonsense the visibility route may let through
L2_GRID = (0.1, 0.3, 1.0, 3.0, 10.0, 100.0)
NONSENSE_FIT_FAMILIES = ("letters", "mash", "ids", "emoji", "digits", "punct", "long", "mixed", "cjk")
REPORT_ONLY_FAMILIES = ("vocab_salad",)


def add_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default=str(MODELS_DIR / "default"), help="model directory or installed name")
    p.add_argument("--out", default=None, help=f"where to write (default <model dir>/{FILENAME})")
    p.add_argument("--seed", type=int, default=0, help="seed of the generated nonsense and templates")
    p.add_argument("--per-family", type=int, default=200, help="generated nonsense strings per family")
    p.add_argument("--eval", action="store_true",
                   help="also report (not tune) the decision on demo / package photos")
    p.add_argument("--json", action="store_true", help="print the written JSON as the last line")


# ---- calibration text ---------------------------------------------------------------------------------
def class_queries(seed: int = 0) -> dict[str, tuple[list[str], np.ndarray]]:
    """{"<form>/<lang>/<seen|held>": (texts, class index of each)}: bare names and one random short template
    per class, EN and ZH."""
    table, tmpl = load_imagenet_table(), load_templates()
    rng = random.Random(seed)
    out = {}
    for lang in ("en", "zh"):
        for split in ("seen", "held"):
            rows = [c for c in table if bool(c.get("held_out")) == (split == "held")]
            if not rows:
                continue
            cls = np.array([c["index"] for c in rows])
            out[f"name/{lang}/{split}"] = ([c[lang][0] for c in rows], cls)
            out[f"template/{lang}/{split}"] = ([rng.choice(tmpl[f"{lang}_short"]).format(c[lang][0])
                                                for c in rows], cls)
    return out


def extra_real_texts() -> dict[str, list[str]]:
    """Other real texts for the gate: English glosses of the classes and the names of their hypernyms."""
    table = load_imagenet_table()
    hyper = sorted({h for c in table for h in c.get("hypernyms", [])})
    return {"gloss/en": [c["gloss"] for c in table if c.get("gloss")], "hypernym/en": hyper}


_KEY_ROWS = ("qwertyuiop", "asdfghjkl", "zxcvbnm")
_LETTERS = "abcdefghijklmnopqrstuvwxyz"
_PUNCT = "!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~。，、？！…—·《》【】「」；："
_EMOJI = [*range(0x1F300, 0x1F5FF), *range(0x1F600, 0x1F64F), *range(0x1F680, 0x1F6FF), *range(0x1F900, 0x1F9FF),
          *range(0x2600, 0x26FF)]
_SCRIPTS = [(0x0400, 0x04FF), (0x0370, 0x03FF), (0x0600, 0x06FF), (0x0E00, 0x0E7F), (0x3040, 0x30FF),
            (0xAC00, 0xD7A3), (0x0900, 0x097F), (0x4E00, 0x9FA5), (0x61, 0x7A), (0x30, 0x39)]


def nonsense_queries(seed: int = 0, n: int = 200, vocab=None) -> dict[str, list[str]]:
    """Generated strings that mean nothing, by family (deterministic for a seed)."""
    rng = random.Random(seed)

    def mash() -> str:
        row, i, s = rng.choice(_KEY_ROWS), 0, ""
        i = rng.randrange(len(row))
        for _ in range(rng.randint(4, 14)):
            s += row[i]
            i = max(0, min(len(row) - 1, i + rng.choice((-1, 1, 1, 2))))
            if rng.random() < 0.15:
                row = rng.choice(_KEY_ROWS)
                i = min(i, len(row) - 1)
        return s

    def ident() -> str:
        a = _LETTERS + _LETTERS.upper() + "0123456789" + ("_-" if rng.random() < 0.3 else "")
        return "".join(rng.choice(a) for _ in range(rng.randint(4, 16)))

    def long() -> str:
        k, L = rng.random(), rng.randint(200, 2000)
        if k < 0.25:
            return rng.choice(_LETTERS + "0123456789!?.哈啊") * L
        if k < 0.65:
            return "".join(rng.choice(_LETTERS + "   ") for _ in range(L))
        return "".join(rng.choice(_LETTERS + _LETTERS.upper() + "0123456789 !?.,;:的一是了") for _ in range(L))

    def mixed() -> str:
        s = ""
        for _ in range(rng.randint(2, 5)):
            a, b = rng.choice(_SCRIPTS)
            s += "".join(chr(rng.randint(a, b)) for _ in range(rng.randint(1, 4)))
        return s

    out = {
        "letters": ["".join(rng.choice(_LETTERS) for _ in range(rng.randint(3, 12))) for _ in range(n)],
        "mash": [mash() for _ in range(n)],
        "ids": [ident() for _ in range(n)],
        "emoji": ["".join(chr(rng.choice(_EMOJI)) for _ in range(rng.randint(1, 6))) for _ in range(n)],
        "digits": [("".join(rng.choice("0123456789 .,-:/") for _ in range(rng.randint(1, 16))).strip() or "0")
                   for _ in range(n)],
        "punct": ["".join(rng.choice(_PUNCT) for _ in range(rng.randint(1, 10))) for _ in range(n)],
        "long": [long() for _ in range(n)],
        "mixed": [mixed() for _ in range(n)],
        "cjk": ["".join(chr(rng.randint(0x4E00, 0x9FA5)) for _ in range(rng.randint(3, 6))) for _ in range(n)],
    }
    if vocab is not None:                      # random pieces of the model's own vocabulary (report only)
        V = vocab.get_vocab_size()
        out["vocab_salad"] = [vocab.decode([rng.randrange(5, V) for _ in range(rng.randint(2, 6))])
                              for _ in range(n)]
    return out


# ---- the image side -----------------------------------------------------------------------------------
def class_image_vectors(model) -> np.ndarray | None:
    """(K, d) image embeddings of photos the classifier is sure about (class k one-hot), exactly as the image
    head forms them: normalise([normalise(P_k) ; eps * seen_k]). None when the model has no prototypes."""
    from safetensors import safe_open
    bank = getattr(model, "concept_bank", None)
    if bank is not None:          # text space: a photo sure of class k is exactly class k's concept row
        return bank.text[: len(bank.classifier_b)].astype(np.float32)
    path = Path(model.path) / model.config.files.get("weights", "model.safetensors")
    if not path.is_file():
        return None
    with safe_open(str(path), framework="np") as f:
        keys = set(f.keys())
        if "image.protos" not in keys:
            return None
        P = f.get_tensor("image.protos").astype(np.float64)                        # (K, D)
        seen = f.get_tensor("image.seen").astype(np.float64) if "image.seen" in keys else np.zeros(len(P))
    if P.shape[1] + 1 != model.dim:
        return None
    u = P / np.maximum(np.linalg.norm(P, axis=1, keepdims=True), 1e-12)
    e = np.concatenate([u, float(model.config.joint.seen_eps) * seen[:, None]], 1)   # (K, D+1)
    return (e / np.linalg.norm(e, axis=1, keepdims=True)).astype(np.float32)


def level_space(model):
    """The map from vectors to what relevance levels compare: a text-space model's decorrelated vectors
    (ConceptBank.decorrelate, as index.search's ``level_score``), else the vectors themselves."""
    bank = getattr(model, "concept_bank", None)
    return bank.decorrelate if bank is not None else (lambda x: x)


def synthetic_images(n: int = 96, size: int = 224, seed: int = 0) -> list:
    """Generated pictures of nothing in particular (PIL RGB): noise, blurred noise, gradients, flat colours,
    stripes, checkers, random shapes, random lines."""
    from PIL import Image, ImageDraw, ImageFilter
    rng = np.random.default_rng(seed)

    def colour():
        return tuple(int(x) for x in rng.integers(0, 256, 3))
    out = []
    for i in range(n):
        kind = i % 8
        if kind == 0:
            im = Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8))
        elif kind == 1:
            small = Image.fromarray(rng.integers(0, 256, (size // 8, size // 8, 3), dtype=np.uint8))
            im = small.resize((size, size), Image.BICUBIC).filter(ImageFilter.GaussianBlur(rng.uniform(1, 6)))
        elif kind == 2:
            a = rng.uniform(0, 1)
            t = (np.linspace(0, 1, size)[:, None] * a + np.linspace(0, 1, size)[None, :] * (1 - a))[..., None]
            im = Image.fromarray((np.array(colour()) * (1 - t) + np.array(colour()) * t).astype(np.uint8))
        elif kind == 3:
            im = Image.new("RGB", (size, size), colour())
        elif kind in (4, 5):
            p = int(rng.integers(4, 48))
            idx = np.arange(size) // p
            m = (idx[None, :] + idx[:, None]) % 2 if kind == 5 else np.broadcast_to(idx[None, :] % 2, (size, size))
            im = Image.fromarray(np.where(m[..., None] > 0, colour(), colour()).astype(np.uint8))
        else:
            im = Image.new("RGB", (size, size), colour())
            d = ImageDraw.Draw(im)
            for _ in range(int(rng.integers(2, 20))):
                x0, y0 = (int(v) for v in rng.integers(0, size, 2))
                w, h = (int(v) for v in rng.integers(8, size // 2, 2))
                if kind == 6:
                    (d.ellipse if rng.random() < 0.5 else d.rectangle)([x0, y0, x0 + w, y0 + h], fill=colour())
                else:
                    d.line([(x0, y0), (x0 + w, y0 + h)], fill=colour(), width=int(rng.integers(1, 8)))
        out.append(im)
    return out


# ---- statistics ---------------------------------------------------------------------------------------
def auc(pos: np.ndarray, neg: np.ndarray) -> float:
    """P(a random pos scores above a random neg) (ties count half)."""
    x = np.concatenate([pos, neg])
    order = x.argsort(kind="mergesort")
    ranks = np.empty(len(x))
    ranks[order] = np.arange(1, len(x) + 1)
    _, inv, cnt = np.unique(x, return_inverse=True, return_counts=True)     # average ranks of ties
    sums = np.zeros(len(cnt))
    np.add.at(sums, inv, ranks)
    ranks = (sums / cnt)[inv]
    return float((ranks[:len(pos)].sum() - len(pos) * (len(pos) + 1) / 2) / (len(pos) * len(neg)))


def fit_logistic(X: np.ndarray, y: np.ndarray, l2: float, iters: int = 25) -> tuple[np.ndarray, float]:
    """Class-balanced L2 logistic regression by Newton's method -> (w (d,), b). The bias is not penalised."""
    X = X.astype(np.float64)
    n, d = X.shape
    npos = max(1, int(y.sum()))
    sw = np.where(y > 0, 0.5 * n / npos, 0.5 * n / max(1, n - npos))           # balanced sample weights
    Xb = np.concatenate([X, np.ones((n, 1))], 1)
    R = np.eye(d + 1) * l2
    R[-1, -1] = 0.0
    beta = np.zeros(d + 1)
    for _ in range(iters):
        z = np.clip(Xb @ beta, -30, 30)
        p = 1.0 / (1.0 + np.exp(-z))
        g = Xb.T @ (sw * (p - y)) + R @ beta
        H = (Xb * (sw * p * (1 - p))[:, None]).T @ Xb + R
        step = np.linalg.solve(H, g)
        beta -= step
        if np.abs(step).max() < 1e-7:
            break
    return beta[:-1], float(beta[-1])


def gate_from(X_real: np.ndarray, X_non: np.ndarray, l2: float, alpha: float) -> tuple[np.ndarray, float]:
    """Fit the gate and move its bias so that a share ``alpha`` of the real texts scores below 0."""
    X = np.concatenate([X_real, X_non])
    y = np.r_[np.ones(len(X_real)), np.zeros(len(X_non))]
    w, b = fit_logistic(X, y, l2)
    thr = float(np.quantile(X_real @ w + b, alpha))
    return w, b - thr


def _q(a: np.ndarray, qs=(0.05, 0.25, 0.5, 0.75, 0.95)) -> list[float]:
    return [round(float(v), 4) for v in np.quantile(a, qs)]


# ---- calibration --------------------------------------------------------------------------------------
def calibrate(model, seed: int = 0, per_family: int = 200, log=print) -> dict:
    t0 = time.time()
    enc = model.encode_text
    cq = class_queries(seed)
    real_extra = extra_real_texts()
    non = nonsense_queries(seed, per_family, vocab=model.tokenizer.hf)
    E = {k: enc(t) for k, (t, _) in cq.items()}                                       # (n, d) each
    E.update({k: enc(t) for k, t in real_extra.items()})
    N = {k: enc(t) for k, t in non.items()}
    log(f"encoded {sum(len(v) for v in E.values())} real and {sum(len(v) for v in N.values())} nonsense "
        f"texts in {time.time() - t0:.1f}s")

    # 1. score knots from the null: class-name queries vs other classes' image vectors --------------------
    V = class_image_vectors(model)                                                      # (K, d) or None
    t1 = time.time()
    synth = model.encode_image(synthetic_images(96, model.config.image.image_size, seed))   # (96, d)
    Q_cls = np.concatenate([E[k] for k in cq])                                          # (n, d)
    c_cls = np.concatenate([c for _, c in cq.values()])                                 # (n,)
    bank = getattr(model, "concept_bank", None)
    dec = level_space(model)
    Qk, Vk = dec(Q_cls), (dec(V) if V is not None else None)
    null_synth = (Qk @ dec(synth).T).ravel()
    measured: dict = {"null_synthetic": _q(null_synth, NULL_QUANTILES),
                      "score_space": "decorrelated" if bank is not None else "cosine"}
    if V is not None:
        S = Qk @ Vk.T                                                                   # (n, K)
        rows = np.arange(len(c_cls))
        pos = S[rows, c_cls]
        other = np.ones_like(S, bool)
        other[rows, c_cls] = False
        null = S[other]
        null_name = "other-class image vectors (one-hot class prototypes)"
        measured["null_other_class"] = _q(null, NULL_QUANTILES)
        measured["true_match"] = {}
        for k in cq:
            sel = np.concatenate([np.full(len(E[j]), j == k) for j in cq])
            measured["true_match"][k] = {"quantiles_5_25_50_75_95": _q(pos[sel]),
                                         "top1": round(float((S[sel].argmax(1) == c_cls[sel]).mean()), 4)}
        del S, other
    else:
        pos, null = None, null_synth
        null_name = "synthetic images through the image tower"
    knots = [float(v) for v in np.quantile(null, NULL_QUANTILES)]
    for i in range(1, len(knots)):                                                      # strictly increasing
        knots[i] = max(knots[i], knots[i - 1] + 1e-4)
    log(f"null ({null_name}): {len(null)} pairs, knots {[round(k, 4) for k in knots]} "
        f"({time.time() - t1:.1f}s)")

    # 2. the query gate -------------------------------------------------------------------------------------
    t2 = time.time()
    X_real = np.concatenate(list(E.values()))
    fit_fams = [f for f in NONSENSE_FIT_FAMILIES if f in N]
    real_groups: dict[str, list[str]] = {}                  # name/en, template/zh, gloss/en, ... (both splits)
    for k in E:
        real_groups.setdefault(k.rsplit("/", 1)[0] if k.count("/") == 2 else k, []).append(k)
    lofo: dict = {}
    for l2 in L2_GRID:                                      # leave one family out (nonsense or real), pick L2
        passed, refused = {}, {}
        for fam in fit_fams:
            w, b = gate_from(X_real, np.concatenate([N[f] for f in fit_fams if f != fam]), l2, GATE_ALPHA)
            passed[fam] = float((N[fam] @ w + b >= 0).mean())
        for g, keys in real_groups.items():
            w, b = gate_from(np.concatenate([E[k] for k in E if k not in keys]),
                             np.concatenate([N[f] for f in fit_fams]), l2, GATE_ALPHA)
            refused[g] = float((np.concatenate([E[k] for k in keys]) @ w + b < 0).mean())
        lofo[l2] = {"nonsense_passed": passed, "real_refused": refused,
                    "error": float(np.mean(list(passed.values())) + np.mean(list(refused.values())))}
    best_l2 = min(L2_GRID, key=lambda l2: (lofo[l2]["error"], -l2))
    nonsense_all = np.concatenate([N[f] for f in fit_fams])
    w, b = gate_from(X_real, nonsense_all, best_l2, GATE_ALPHA)
    text_space = getattr(model, "concept_bank", None) is not None
    vis = _visibility_fn(V, whole=text_space)   # max cosine of the query's prototype part to the prototypes
    vis_spec = None
    if vis is not None:
        vis_spec = {"file": model.config.files.get("concept_arrays" if text_space else "weights", "model.safetensors"),
                    "tensor": "text" if text_space else "image.protos",
                    "query_dims": [0, int(model.dim) - (0 if text_space else 1)], "quantile": VISIBILITY_QUANTILE,
                    "threshold": round(float(np.quantile(vis(nonsense_all), VISIBILITY_QUANTILE)), 6)}

    def rates(X: np.ndarray) -> dict:
        text = X @ w + b >= 0
        seen = vis(X) >= vis_spec["threshold"] if vis_spec else None
        return {"text": round(float(text.mean()), 4),
                "visibility": round(float(seen.mean()), 4) if seen is not None else None,
                "gate": round(float((text | seen).mean() if seen is not None else text.mean()), 4)}
    gate_pass = {k: rates(v) for k, v in {**E, **N}.items()}
    log(f"gate: L2 {best_l2} by leave-one-family-out ({time.time() - t2:.1f}s)")

    # query-only statistics, for the record (what separates real from nonsense without photos) ------------
    stats = {}
    cands = {"text score (w.q + b, in-sample)": lambda X: X @ w + b,
             "cos to nonsense centroid (neg.)": lambda X: -(X @ _unit(nonsense_all.mean(0)))}
    if vis is not None:
        cands["visibility: max cos to prototypes"] = vis
        cands["max cos to image vectors (full d)"] = lambda X: (X @ V.T).max(1)
    for name, f in cands.items():
        nn = f(nonsense_all)
        stats[name] = {k: round(auc(f(v), nn), 4) for k, v in E.items()}

    doc = {
        "format": FORMAT,
        "model": {"id": model.info["id"], "name": model.config.name, "hash": model.hash, "dim": int(model.dim)},
        "score": {"knots": [round(k, 6) for k in knots], "percent_at_knots": list(PERCENT_AT_KNOTS),
                  "null_quantiles": list(NULL_QUANTILES), "null": null_name,
                  "levels": {"weak": round(knots[1], 6), "good": round(knots[2], 6), "strong": round(knots[3], 6)}},
        "gate": {"w": [round(float(x), 6) for x in w], "b": round(float(b), 6), "alpha": GATE_ALPHA, "l2": best_l2,
                 "visibility": vis_spec,
                 "positives": {k: len(v) for k, v in E.items()},
                 "negatives": {f: len(N[f]) for f in fit_fams}},
        "calibrated_on": ("text only: ImageNet-1k class names EN/ZH bare + short templates, EN glosses and "
                          "hypernym names (assets/data); generated nonsense (seeded); the model's own class "
                          "prototypes and synthetic images. No package or demo photos."),
        "seed": seed,
        "measured": {**measured, "gate_pass_rate": gate_pass,
                     "gate_leave_one_family_out": {str(k): _rounded(d) for k, d in lofo.items()},
                     "auc_real_vs_nonsense": stats,
                     "true_match_levels": _level_shares(pos, knots) if pos is not None else None},
        "calibrate_s": round(time.time() - t0, 1),
    }
    return doc


def _visibility_fn(V: np.ndarray | None, whole: bool = False):
    """(K, d) class image vectors -> X (n, d) -> (n,) max cosine of X's prototype part (all but the last, seen
    coordinate; ``whole``: every coordinate, text-space models) to the class prototypes; None without them."""
    if V is None:
        return None
    cut = slice(None) if whole else slice(None, -1)
    Vp = _unit(V[:, cut])                                                             # (K, D)
    return lambda X: (_unit(X[:, cut]) @ Vp.T).max(1)


def _rounded(x):
    if isinstance(x, dict):
        return {k: _rounded(v) for k, v in x.items()}
    return round(float(x), 4)


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


def _level_shares(scores: np.ndarray, knots: list[float]) -> list[float]:
    lv = np.searchsorted(np.asarray(knots[1:4]), scores, side="right")
    return [round(float((lv == i).mean()), 4) for i in range(4)]


# ---- evaluation (report only) -------------------------------------------------------------------------
def evaluate(model, rel: Relevance, seed: int = 1) -> dict:
    """How the decision does on photos it never saw: the demo folder (captions.json + nonsense) and the
    package photos with real_photo_queries.json. Nothing here feeds back into the calibration."""
    out: dict = {"note": "evaluation only: computed after calibration, never used to choose anything"}
    dec = level_space(model)
    non = nonsense_queries(seed + 1000, 40)                # a fresh seed: not the calibration strings
    wall = "".join(random.Random(seed).choice(_LETTERS + " ") for _ in range(2000))
    non_texts = [t for f in NONSENSE_FIT_FAMILIES for t in non[f]] + [
        "qwxzv", "🐱🐱🐱", "😀", "asdfghjkl", "12345", "!!!???", wall]
    sets = []
    caps_path = DEMO_DIR / "captions.json"
    if caps_path.is_file():
        caps = json.loads(caps_path.read_text(encoding="utf-8"))
        names = [n for n in caps if (DEMO_DIR / n).is_file()]
        sets.append(("demo", [str(DEMO_DIR / n) for n in names], {n: caps[n] for n in names}))
    try:
        from training import corpus
        paths = corpus.photo_paths()
        qs = {q["photo"]: {"en": q["en"], "zh": q["zh"]} for q in corpus.real_photo_queries() if q["photo"] in paths}
        if qs:
            sets.append(("package", [str(paths[k]) for k in qs], qs))
    except Exception as e:                                  # optional: packages may be missing
        out["package_error"] = str(e)
    Nq = model.encode_text(non_texts)
    for name, files, queries in sets:
        I = model.encode_image(files)                                                     # (m, d)
        keys = list(queries)
        res = {"photos": len(files)}
        for lang in ("en", "zh"):
            texts = [t for k in keys for t in queries[k][lang]]
            tgt = np.array([i for i, k in enumerate(keys) for _ in queries[k][lang]])
            Q = model.encode_text(texts)
            S = Q @ I.T                                              # ranking: raw cosines
            L = dec(Q) @ dec(I).T                                    # levels: what index.search's level_score is
            ok = rel.query_has_match(Q)
            top = L[np.arange(len(tgt)), S.argmax(1)]
            has = ok & (rel.levels(top) >= 1)
            right = S.argmax(1) == tgt
            res[lang] = {"queries": len(texts), "gate_refused": round(float(1 - ok.mean()), 4),
                         "no_good_match": round(float(1 - has.mean()), 4),
                         "top1_correct": round(float(right.mean()), 4),
                         "top1_correct_and_matched": round(float((right & has).mean()), 4),
                         "level_of_correct_photo": _counts(rel.levels(L[np.arange(len(tgt)), tgt]))}
        S, L = Nq @ I.T, dec(Nq) @ dec(I).T
        ok = rel.query_has_match(Nq)
        has = ok & (rel.levels(L[np.arange(len(Nq)), S.argmax(1)]) >= 1)
        res["nonsense"] = {"queries": len(non_texts), "gate_refused": round(float(1 - ok.mean()), 4),
                           "no_good_match": round(float(1 - has.mean()), 4)}
        out[name] = res
    return out


def _counts(levels: np.ndarray) -> list[int]:
    return [int((levels == i).sum()) for i in range(4)]


# ---- output -------------------------------------------------------------------------------------------
def print_table(doc: dict) -> None:
    m, s = doc["measured"], doc["score"]
    print(f"\nRelevance calibration for {doc['model']['id']} ({doc['model']['dim']}-d, hash {doc['model']['hash']})")
    print(f"\nnull = {s['null']}")
    print(f"{'quantile':>12s} " + " ".join(f"{q:>8}" for q in s["null_quantiles"]))
    if "null_other_class" in m:
        print(f"{'other class':>12s} " + " ".join(f"{v:8.4f}" for v in m["null_other_class"]))
    print(f"{'synthetic':>12s} " + " ".join(f"{v:8.4f}" for v in m["null_synthetic"]))
    print(f"knots s0..s4 {s['knots']} -> percent {s['percent_at_knots']}; "
          f"levels weak >= {s['levels']['weak']:.4f}, good >= {s['levels']['good']:.4f}, "
          f"strong >= {s['levels']['strong']:.4f}")
    if m.get("true_match"):
        print("\ntrue class-name match (query vs its own class's image vector)")
        print(f"{'set':22s} {'q05':>7s} {'q25':>7s} {'q50':>7s} {'q75':>7s} {'q95':>7s} {'top1':>6s}")
        for k, v in m["true_match"].items():
            print(f"{k:22s} " + " ".join(f"{x:7.3f}" for x in v["quantiles_5_25_50_75_95"]) + f" {v['top1']:6.3f}")
        print("share of true matches at level none/weak/good/strong:", m["true_match_levels"])
    print("\nquery-only statistics: AUC real set vs pooled nonsense")
    stats = m["auc_real_vs_nonsense"]
    sets = list(next(iter(stats.values())))
    print(f"{'statistic':34s} " + " ".join(f"{k[-13:]:>13s}" for k in sets))
    for name, v in stats.items():
        print(f"{name:34s} " + " ".join(f"{v[k]:13.3f}" for k in sets))
    g = doc["gate"]
    vs = g.get("visibility")
    print(f"\nquery gate pass rate: text score (L2 {g['l2']}, bias at {g['alpha']:.0%} of real texts refused)"
          + (f" OR visibility >= {vs['threshold']:.4f} (nonsense q{vs['quantile'] * 100:g})" if vs else ""))
    print(f"  {'set':22s} {'text':>6s} {'visib.':>6s} {'gate':>6s}")
    for k, v in m["gate_pass_rate"].items():
        tag = "  (not fitted)" if k in REPORT_ONLY_FAMILIES else ""
        vis = f"{v['visibility']:6.3f}" if v["visibility"] is not None else f"{'-':>6s}"
        print(f"  {k:22s} {v['text']:6.3f} {vis} {v['gate']:6.3f}{tag}")
    print("leave one family out (fit without it, threshold re-set): nonsense passed / real refused, per L2")
    for l2, d in m["gate_leave_one_family_out"].items():
        print(f"  L2 {l2:>5s} error {d['error']:.3f} | "
              + " ".join(f"{f}={v:.3f}" for f, v in d["nonsense_passed"].items()) + " | "
              + " ".join(f"{g}={v:.3f}" for g, v in d["real_refused"].items()))
    ev = doc.get("evaluation")
    if ev:
        print("\nevaluation (report only; never used to choose anything)")
        for name in ("demo", "package"):
            if name not in ev:
                continue
            r = ev[name]
            print(f"  {name} photos ({r['photos']}):")
            for lang in ("en", "zh"):
                x = r[lang]
                print(f"    {lang} real queries {x['queries']:3d}: gate refused {x['gate_refused']:.3f}, "
                      f"no good match {x['no_good_match']:.3f}, top-1 right {x['top1_correct']:.3f}, right & "
                      f"matched {x['top1_correct_and_matched']:.3f}, level of the right photo "
                      f"none/weak/good/strong {x['level_of_correct_photo']}")
            x = r["nonsense"]
            print(f"    nonsense {x['queries']:3d}: gate refused {x['gate_refused']:.3f}, "
                  f"no good match {x['no_good_match']:.3f}")


def run(args: argparse.Namespace) -> dict:
    import dcclip_core
    from dcclip_core.atomic import atomic_write_text
    model = dcclip_core.load(args.model)
    doc = calibrate(model, seed=args.seed, per_family=args.per_family)
    rel = Relevance.from_dict(doc, anchors=load_prototypes(model.path, doc))   # the file must load back
    if args.eval:
        doc["evaluation"] = evaluate(model, rel)
    out = Path(args.out) if args.out else Path(model.path) / FILENAME
    atomic_write_text(out, json.dumps(doc, ensure_ascii=False, indent=1) + "\n")
    out.chmod(0o644)                                       # a model file like the others (mkstemp made it 0600)
    print_table(doc)
    print(f"\nwrote {out} ({out.stat().st_size / 1024:.1f} KB) in {doc['calibrate_s']:.1f}s")
    if args.json:
        print(json.dumps(doc, ensure_ascii=False))
    return doc


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m training.calibrate_relevance", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    add_args(p)
    run(p.parse_args(argv))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
