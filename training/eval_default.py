"""`python -m training eval-default`: measure the default model (student) against its teacher and a baseline.

1. ImageNet-1k text -> class-prototype zero-shot, EN / ZH (simplified) / ZH (traditional): top-1/top-5 among
   all 1000 prototypes for the 800 seen and the 200 held-out classes (+ top-1 among the 200 alone), with and
   without the seen-class calibration; for the student (shipped ONNX), the teacher (e5 + the same alignment)
   and the ASSETS.md baseline (ridge map from e5 text onto the prototypes).
2. Real photos that packages ship (evaluation only): recall@1/@5 of the photo a query describes, per language.
Prints a table and writes JSON (default: <model dir>/metrics.json).
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from dcclip_core.config import MODELS_DIR, ModelConfig


def add_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default=str(MODELS_DIR / "default"), help="model directory or name")
    p.add_argument("--work", default="build/default", help="build directory (teacher alignment head)")
    p.add_argument("--json-out", default=None, help="where to write metrics JSON (default <model>/metrics.json)")
    p.add_argument("--no-teacher", action="store_true", help="skip the e5 teacher and the baseline")
    p.add_argument("--json", action="store_true", help="print the metrics JSON as the last line")


def _class_texts(table, templates, lang: str) -> tuple[list[str], np.ndarray]:
    """One name per class x short templates -> (texts, class index of each text)."""
    key = "zh" if lang.startswith("zh") else "en"
    texts, cls = [], []
    for c in table:
        name = c[key][0]
        for t in templates[f"{key}_short"]:
            texts.append(t.format(name))
            cls.append(c["index"])
    if lang == "zh_hant":
        import opencc
        conv = opencc.OpenCC("s2t")
        texts = [conv.convert(t) for t in texts]
    return texts, np.array(cls)


def _ensemble(emb: np.ndarray, cls: np.ndarray, K: int) -> np.ndarray:
    out = np.zeros((K, emb.shape[1]), np.float32)
    np.add.at(out, cls, emb)
    return out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)


def _strip_calibration(q: np.ndarray) -> np.ndarray:
    """Joint text embeddings [n, D+1] -> the same without the seen-class penalty (gamma = 0)."""
    g = q[:, :-1]
    return np.concatenate([g / np.maximum(np.linalg.norm(g, axis=1, keepdims=True), 1e-12),
                           np.zeros((len(q), 1), np.float32)], 1)


def proto_scores(q: np.ndarray, P: np.ndarray, held: np.ndarray) -> dict:
    """q [K, D+1] class queries (row c = class c), P [K, D+1] prototypes -> seen/held-out top-k."""
    S = q @ P.T
    top = np.argsort(-S, axis=1)[:, :5]
    c = np.arange(len(q))
    hit1, hit5 = top[:, 0] == c, (top == c[:, None]).any(1)
    Sh = S[np.ix_(held, held)]
    among = (np.argmax(Sh, 1) == np.arange(held.sum())).mean()
    return {"seen_top1": float(hit1[~held].mean()), "seen_top5": float(hit5[~held].mean()),
            "held_top1": float(hit1[held].mean()), "held_top5": float(hit5[held].mean()),
            "held_top1_among_held": float(among)}


def real_photo_recall(img_emb: np.ndarray, keys: list[str], queries: list[dict], encode, lang: str) -> dict:
    qs, target = [], []
    for q in queries:
        if q["photo"] in keys:
            for text in q.get(lang, []):
                qs.append(text)
                target.append(keys.index(q["photo"]))
    if not qs:
        return {"n": 0}
    S = encode(qs) @ img_emb.T
    rank = np.argsort(-S, axis=1)
    t = np.array(target)
    pos = np.array([np.where(rank[i] == t[i])[0][0] for i in range(len(t))])
    return {"n": len(qs), "recall@1": float((pos < 1).mean()), "recall@5": float((pos < 5).mean()),
            "mrr": float((1.0 / (pos + 1)).mean()),
            "misses@5": [qs[i] for i in range(len(qs)) if pos[i] >= 5]}


def _ridge_baseline(X: np.ndarray, X_cls: np.ndarray, protos: np.ndarray, seen_classes: np.ndarray,
                    lam: float = 0.1) -> np.ndarray:
    """ASSETS.md baseline: ridge map text features -> prototypes, fitted on seen classes' texts."""
    sel = np.isin(X_cls, seen_classes)
    A, Y = X[sel], protos[X_cls[sel]]
    return np.linalg.solve(A.T @ A + lam * np.eye(A.shape[1]), A.T @ Y)


def run(args: argparse.Namespace) -> dict:
    import dcclip_core
    from dcclip_core.models import load_torch_model
    from training import corpus
    from training.align import joint_protos, joint_text

    t0 = time.time()
    model = dcclip_core.load(args.model)
    cfg: ModelConfig = model.config
    tm = load_torch_model(model.path)
    protos, seen = tm.image.protos, tm.image.seen
    eps = cfg.joint.seen_eps
    P = joint_protos(protos, seen, eps).numpy()                                  # [K, D+1]
    P_unc = joint_protos(protos, torch.zeros_like(seen), eps).numpy()            # no calibration coordinate
    table = corpus.load_imagenet_table()
    templates = corpus.load_templates()
    K = len(table)
    held = np.array([c["held_out"] for c in table])
    seen_classes = np.where(~held)[0]
    metrics: dict = {"model": model.info["id"], "hash": model.info["hash"], "gamma": cfg.joint.seen_gamma,
                     "imagenet": {}, "real_photos": {}}

    encoders = {"student": model.encode_text}
    if not args.no_teacher:
        from safetensors.torch import load_file
        from training.teachers.e5 import load_e5_teacher
        teacher = load_e5_teacher()
        _raw_encode, _memo = teacher.encode, {}

        def _cached_encode(texts, **kw):          # the teacher runs once per distinct text (slow on CPU)
            todo = [t for t in dict.fromkeys(texts) if t not in _memo]
            if todo:
                _memo.update(zip(todo, _raw_encode(todo, **kw)))
            return np.stack([_memo[t] for t in texts]) if texts else np.zeros((0, 384), np.float32)
        teacher.encode = _cached_encode
        ta_path = Path(args.work) / "teacher_align.safetensors"
        ta = load_file(str(ta_path))
        from safetensors import safe_open
        with safe_open(str(ta_path), "pt") as f:
            t_gamma = float(f.metadata()["seen_gamma"])
        Wt, bt = ta["align.weight"].float(), ta["align.bias"].float()

        def teacher_encode(texts, gamma=t_gamma):
            e = torch.from_numpy(teacher.encode(list(texts)))
            return joint_text(e @ Wt.T + bt, gamma, eps).numpy()
        encoders["teacher"] = teacher_encode
        metrics["teacher_gamma"] = t_gamma

    # 1. ImageNet text -> prototype ------------------------------------------------------------------
    for lang in ("en", "zh", "zh_hant"):
        texts, cls = _class_texts(table, templates, lang)
        for who, enc in encoders.items():
            q = _ensemble(enc(texts), cls, K)
            metrics["imagenet"][f"{who}/{lang}/calibrated"] = proto_scores(q, P, held)
            metrics["imagenet"][f"{who}/{lang}/uncalibrated"] = proto_scores(_strip_calibration(q), P_unc, held)
        if not args.no_teacher:
            X = teacher.encode(texts)
            G = _ridge_baseline(X, cls, protos.numpy(), seen_classes)
            qb = _ensemble(X @ G, cls, K)
            qb = np.concatenate([qb, np.zeros((K, 1), np.float32)], 1)
            metrics["imagenet"][f"baseline-ridge/{lang}/uncalibrated"] = proto_scores(qb, P_unc, held)

    # 2. real photos ---------------------------------------------------------------------------------
    paths = corpus.photo_paths()
    keys = list(paths)
    img_emb = model.encode_image([paths[k] for k in keys])
    queries = corpus.real_photo_queries()
    metrics["real_photos"]["n_photos"] = len(keys)
    for who, enc in encoders.items():
        for lang in ("en", "zh", "zh_hant"):
            metrics["real_photos"][f"{who}/{lang}"] = real_photo_recall(img_emb, keys, queries, enc, lang)
    metrics["eval_s"] = time.time() - t0
    out = Path(args.json_out) if args.json_out else Path(model.path) / "metrics.json"
    out.write_text(json.dumps(metrics, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    print_table(metrics)
    from training.model_card import write_model_card
    rep = Path(args.work) / "build_report.json"
    write_model_card(model.path, metrics, json.loads(rep.read_text()) if rep.is_file() else None)
    if args.json:
        print(json.dumps(metrics, ensure_ascii=False))
    return metrics


def print_table(m: dict) -> None:
    print("\nImageNet-1k text -> class prototype (top-1 / top-5 among all 1000)")
    print(f"{'encoder/lang/mode':38s} {'seen@1':>7s} {'seen@5':>7s} {'held@1':>7s} {'held@5':>7s} {'held@1/200':>10s}")
    for k, v in m["imagenet"].items():
        print(f"{k:38s} {v['seen_top1']:7.3f} {v['seen_top5']:7.3f} {v['held_top1']:7.3f} {v['held_top5']:7.3f} "
              f"{v['held_top1_among_held']:10.3f}")
    print(f"\nReal photos ({m['real_photos'].get('n_photos')} photos from installed packages)")
    print(f"{'encoder/lang':20s} {'n':>4s} {'R@1':>6s} {'R@5':>6s} {'MRR':>6s}")
    for k, v in m["real_photos"].items():
        if isinstance(v, dict) and v.get("n"):
            print(f"{k:20s} {v['n']:4d} {v['recall@1']:6.3f} {v['recall@5']:6.3f} {v['mrr']:6.3f}")
