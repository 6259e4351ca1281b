"""Build, re-embed and describe the concept bank a ``joint.space = "text"`` model embeds photos with.

    python -m training concept-bank MODEL_DIR            # re-embed every concept with MODEL_DIR's own text tower
    python -m training concept-bank MODEL_DIR --list     # print the bank: id, source, detector, EN / ZH names

The bank (see ``dcclip_core.concepts``) holds, in this column order:
  class     one concept per ImageNet-1k class of the image backbone's classifier (names EN + ZH from
            assets/data/imagenet_classes.json)
  group     higher-level concepts (assets/data/concept_groups.json): the sum of their hyponym classes' softmax
  head      concepts learned from labelled images packages ship (training.concept_heads), linear heads on the
            frozen pooled features with a calibrated threshold
  colour    the eleven basic colours, from the pixels
  attribute night / dark and black-and-white, from the pixels
A concept's text row is the L2-normalised mean of its descriptions' embeddings (both languages).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from dcclip_core.concepts import ATTRIBUTES, BANK_ARRAYS, BANK_JSON, COLOURS, Mix
from dcclip_core.config import ASSETS_DIR
from dcclip_core.numeric import l2_normalize

GROUPS_JSON = ASSETS_DIR / "data" / "concept_groups.json"
EncodeText = Callable[[Sequence[str]], np.ndarray]


# measured on the held-out dev split (recall@5 EN / ZH, plain class mix): basic 0.643 / 0.607, names 0.655 / 0.643,
# gloss 0.679 / 0.595, 8 templates per language 0.667 / 0.619, names+basic 0.679 / 0.643 (kept), names+basic+gloss
# 0.679 / 0.619, names+templates+gloss 0.655 / 0.631, two synonyms+basic 0.643 / 0.595
STYLE = "names+basic"


def class_descriptions(c: dict, style: str = STYLE) -> list[str]:
    """Descriptions of one ImageNet class: ``basic`` = one EN + one ZH template with the first names, ``names`` =
    the bare first names, ``names+basic`` both; ``gloss`` = basic + the English WordNet gloss."""
    en, zh = c["en"][0], (c["zh"] or c["en"])[0]
    out = [en, zh] if style.startswith("names") else []
    if style in ("basic", "names+basic", "gloss"):
        out += [f"a photo of a {en}.", f"一张{zh}的照片。"]
    if style == "gloss" and c.get("gloss"):
        out.append(f"{en}: {c['gloss']}")
    return out


def name_descriptions(en: Sequence[str], zh: Sequence[str]) -> list[str]:
    return [f"a photo of {n}." for n in en] + [f"一张{n}的照片。" for n in zh]


def group_members(group: dict, table: list[dict]) -> list[int]:
    """Class indices a group sums over (its hypernyms' hyponyms + named classes - excluded)."""
    hyp = set(group.get("hypernyms", []))
    excl = set(group.get("exclude_hypernyms", []))
    wanted = {n.lower() for n in group.get("classes", [])}
    out = []
    for c in table:
        chain = set(c.get("hypernyms", []))
        names = {n.lower() for n in c["en"]}
        if ((hyp & chain) or (wanted & names)) and not (excl & chain):
            out.append(int(c["index"]))
    return sorted(out)


def bank_entries(table: list[dict], groups: list[dict], heads: list[dict] | None = None, style: str = STYLE,
                 colours: bool = True, attributes: bool = True) -> tuple[list[dict], np.ndarray]:
    """concepts.json entries in column order, and the (G, K) group membership matrix."""
    heads = heads or []
    K = len(table)
    concepts = [{"id": f"imagenet:{c['wnid']}", "en": list(c["en"][:3]), "zh": list((c["zh"] or c["en"])[:3]),
                 "source": "imagenet-1k", "detector": {"kind": "class", "index": int(c["index"])},
                 "descriptions": class_descriptions(c, style)} for c in table]
    G = np.zeros((len(groups), K), np.float32)
    for r, g in enumerate(groups):
        members = group_members(g, table)
        G[r, members] = 1.0
        concepts.append({"id": f"group:{g['id']}", "en": list(g["en"]), "zh": list(g["zh"]), "source": "wordnet",
                         "detector": {"kind": "group", "row": r, "classes": len(members)},
                         "descriptions": name_descriptions(g["en"], g["zh"])})
    for r, h in enumerate(heads):
        concepts.append({"id": f"learned:{h['id']}", "en": list(h["en"]), "zh": list(h["zh"]), "source": h["source"],
                         "detector": {"kind": "head", "row": r, "images": int(h.get("images", 0))},
                         "descriptions": name_descriptions(h["en"][:2], h["zh"][:2])})
    for name, (en, zh) in (COLOURS.items() if colours else ()):
        concepts.append({"id": f"colour:{name}", "en": [en], "zh": [zh], "source": "pixels",
                         "detector": {"kind": "colour", "name": name},
                         "descriptions": [f"something {en}", f"{en} colour", f"{zh}的东西", f"{zh}"]})
    for name, (en, zh) in (ATTRIBUTES.items() if attributes else ()):
        concepts.append({"id": f"attribute:{name}", "en": [en.split(",")[0]], "zh": [zh.split("，")[0]],
                         "source": "pixels", "detector": {"kind": "attribute", "name": name},
                         "descriptions": [f"a {en}", zh]})
    return concepts, G


def embed_concepts(concepts: list[dict], encode_text: EncodeText) -> np.ndarray:
    """(C, D) float32: per concept the L2-normalised mean of its descriptions' embeddings."""
    texts, owner = [], []
    for i, c in enumerate(concepts):
        texts += c["descriptions"]
        owner += [i] * len(c["descriptions"])
    X = np.asarray(encode_text(texts), np.float32)                                   # (sum, D)
    E = np.zeros((len(concepts), X.shape[1]), np.float32)
    np.add.at(E, np.asarray(owner), X)
    return l2_normalize(E)


def save_bank(model_dir: str | Path, concepts: list[dict], arrays: dict[str, np.ndarray], mix: Mix,
              extra: dict | None = None) -> None:
    """Write concepts.json + concepts.safetensors (float16 except thresholds) atomically."""
    from safetensors.numpy import save_file

    from dcclip_core.atomic import atomic_write_text
    d = Path(model_dir)
    tmp = d / (BANK_ARRAYS + ".tmp")
    save_file({k: np.ascontiguousarray(v.astype(np.float32 if k == "head.threshold" else np.float16))
               for k, v in arrays.items()}, str(tmp))
    tmp.replace(d / BANK_ARRAYS)
    meta = {"version": 1, "mix": mix.__dict__, **(extra or {}), "concepts": concepts}
    atomic_write_text(d / BANK_JSON, json.dumps(meta, ensure_ascii=False, indent=0) + "\n")


def reembed(model_dir: str | Path) -> int:
    """Re-embed every concept's descriptions with the model's own (runtime) text tower; returns the count."""
    from safetensors.numpy import load_file

    import dcclip_core
    d = Path(model_dir)
    meta = json.loads((d / BANK_JSON).read_text(encoding="utf-8"))
    arrays = {k: v.astype(np.float32) for k, v in load_file(str(d / BANK_ARRAYS)).items()}
    model = dcclip_core.Model(d)
    arrays["text"] = embed_concepts(meta["concepts"], model.encode_text)
    save_bank(d, meta["concepts"], arrays, Mix.from_dict(meta.get("mix")),
              {k: v for k, v in meta.items() if k not in ("version", "mix", "concepts")})
    return len(meta["concepts"])


def add_args(p) -> None:
    p.add_argument("model_dir", help="a model directory with concepts.json + concepts.safetensors")
    p.add_argument("--list", action="store_true", help="print the bank instead of re-embedding it")


def run(args) -> int:
    if args.list:
        meta = json.loads((Path(args.model_dir) / BANK_JSON).read_text(encoding="utf-8"))
        for c in meta["concepts"]:
            print(f"{c['id']:28s} {c['source']:24s} {c['detector']['kind']:9s} {c['en'][0]} / {c['zh'][0]}")
        print(f"{len(meta['concepts'])} concepts; mix {meta.get('mix')}")
        return 0
    n = reembed(args.model_dir)
    print(f"re-embedded {n} concepts in {args.model_dir}")
    return 0
