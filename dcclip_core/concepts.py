"""The concept bank: how a photo becomes a vector in the text tower's own space, and why it matches (numpy only).

A model whose ``joint.space`` is ``"text"`` embeds a photo as a weighted mix of concept embeddings:

    f  = pooled backbone features                                   (n, F)     from the image ONNX
    w  = detector weights, one column per concept                   (n, C)     ConceptBank.weights
         class     : softmax(logits / T) kept for the top-k classes (the backbone's ImageNet classifier)
         group     : alpha * sum of the full softmax over a group's hyponym classes (animal, flower, vehicle ...)
         head      : beta  * sigmoid(f_hat @ h + b) where it passes its threshold (learned concepts; f_hat = f / |f|)
         colour    : gamma * share of the photo's pixels of that colour, where it passes ``colour_min``
         attribute : delta * strength (night / dark, black-and-white), computed from the pixels
    v  = normalise(w @ Tm)                                          (n, D)     Tm: unit text embeddings (C, D)

So a query q (unit, (D,)) scores  v . q = sum_c w_c (t_c . q) / ||w @ Tm||,  and each concept's share of the
score is exact (``ConceptBank.explain``). The bank is data in the model directory: ``concepts.json`` (one entry
per concept: id, en / zh names, source, detector, descriptions; plus the ``mix`` settings) and
``concepts.safetensors`` (``text`` (C, D), ``classifier.weight`` (K, F) / ``classifier.bias`` (K,), ``group``
(G, K) 0/1, ``head.weight`` (H, F) / ``head.bias`` (H,) / ``head.threshold`` (H,)). Re-embedding the bank for a
new text tower rewrites ``text`` only (``python -m training concept-bank``).
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .numeric import l2_normalize, softmax

BANK_JSON = "concepts.json"
BANK_ARRAYS = "concepts.safetensors"

# colour name -> (en, zh); the pixel classifier below decides which pixels are which
COLOURS = {
    "red": ("red", "红色"), "orange": ("orange", "橙色"), "yellow": ("yellow", "黄色"), "green": ("green", "绿色"),
    "blue": ("blue", "蓝色"), "purple": ("purple", "紫色"), "pink": ("pink", "粉色"), "brown": ("brown", "棕色"),
    "white": ("white", "白色"), "grey": ("grey", "灰色"), "black": ("black", "黑色"),
}
ATTRIBUTES = {"night": ("night, a dark photo", "夜晚，暗的照片"),
              "monochrome": ("black and white photo", "黑白照片")}


@dataclass
class Mix:
    """How detector outputs become concept weights (data: the ``mix`` entry of concepts.json)."""
    temperature: float = 2.0        # T of softmax(logits / T) over the classifier's classes
    top_k: int = 20                 # classes kept per photo
    group_weight: float = 0.0       # alpha (0 = groups off)
    group_min: float = 0.2          # a group's probability mass must reach this
    head_weight: float = 0.0        # beta (0 = learned heads off)
    colour_weight: float = 0.0      # gamma (0 = colours off)
    colour_min: float = 0.15        # share of the photo's pixels a colour needs
    attribute_weight: float = 0.0   # delta (0 = attributes off)
    colour_boost: float = 0.0       # lambda: query-aware colour term added to a result's score (0 = off)
    colour_affinity: float = 0.35   # tau: a query counts as naming a colour above this decorrelated cosine

    @classmethod
    def from_dict(cls, d: dict | None) -> "Mix":
        known = {f for f in cls.__dataclass_fields__}
        return cls(**{k: v for k, v in (d or {}).items() if k in known})


@dataclass
class ConceptBank:
    concepts: list[dict]                       # concepts.json entries, in column order
    text: np.ndarray                           # (C, D) float32, unit rows
    classifier_w: np.ndarray                   # (K, F) float32
    classifier_b: np.ndarray                   # (K,)
    group: np.ndarray                          # (G, K) float32 0/1
    head_w: np.ndarray                         # (H, F)
    head_b: np.ndarray                         # (H,)
    head_threshold: np.ndarray                 # (H,)
    mix: Mix = field(default_factory=Mix)

    # ---- loading ---------------------------------------------------------------------------------------
    @classmethod
    def load(cls, model_path: str | Path) -> "ConceptBank":
        from safetensors.numpy import load_file
        d = Path(model_path)
        meta = json.loads((d / BANK_JSON).read_text(encoding="utf-8"))
        arr = {k: v.astype(np.float32) for k, v in load_file(str(d / BANK_ARRAYS)).items()}
        F = arr["classifier.weight"].shape[1]
        K = arr["classifier.weight"].shape[0]
        bank = cls(concepts=meta["concepts"], text=l2_normalize(arr["text"]),
                   classifier_w=arr["classifier.weight"], classifier_b=arr["classifier.bias"],
                   group=arr.get("group", np.zeros((0, K), np.float32)),
                   head_w=arr.get("head.weight", np.zeros((0, F), np.float32)),
                   head_b=arr.get("head.bias", np.zeros((0,), np.float32)),
                   head_threshold=arr.get("head.threshold", np.zeros((0,), np.float32)),
                   mix=Mix.from_dict(meta.get("mix")))
        bank._index()
        return bank

    @classmethod
    def of_classes(cls, text: np.ndarray, classifier_w: np.ndarray, classifier_b: np.ndarray,
                   mix: Mix | None = None) -> "ConceptBank":
        """A bank of class concepts only: (K, D) class text rows for a (K, F) classifier (e.g. another text
        tower's embeddings of the class names, ``training.baselines_mix``)."""
        K, F = np.shape(classifier_w)
        bank = cls(concepts=[{"id": f"class:{i}", "detector": {"kind": "class", "index": i}} for i in range(K)],
                   text=l2_normalize(np.asarray(text, np.float32)),
                   classifier_w=np.asarray(classifier_w, np.float32),
                   classifier_b=np.asarray(classifier_b, np.float32), group=np.zeros((0, K), np.float32),
                   head_w=np.zeros((0, F), np.float32), head_b=np.zeros(0, np.float32),
                   head_threshold=np.zeros(0, np.float32), mix=mix or Mix())
        bank._index()
        return bank

    def _index(self) -> None:
        """Column ranges of each detector kind (concepts.json keeps them in this order: class, group, head,
        colour, attribute) and the colour / attribute names of their columns."""
        kinds = [c["detector"]["kind"] for c in self.concepts]
        if len(kinds) != len(self.text):
            raise ValueError(f"concept bank: {len(kinds)} concepts but {len(self.text)} text rows")
        order = ["class", "group", "head", "colour", "attribute"]
        if [k for k in order if k in kinds] != sorted(set(kinds), key=order.index) or \
                kinds != sorted(kinds, key=order.index):
            raise ValueError("concept bank: concepts must be ordered class, group, head, colour, attribute")
        self._cols = {k: np.flatnonzero(np.array(kinds) == k) for k in order}
        self._colour_names = [self.concepts[i]["detector"]["name"] for i in self._cols["colour"]]
        self._attr_names = [self.concepts[i]["detector"]["name"] for i in self._cols["attribute"]]
        for k, n in (("class", len(self.classifier_b)), ("group", len(self.group)), ("head", len(self.head_b))):
            if len(self._cols[k]) != n:
                raise ValueError(f"concept bank: {len(self._cols[k])} {k} concepts but {n} {k} detectors")
        self._column = {str(c["id"]): i for i, c in enumerate(self.concepts)}
        self._common = l2_normalize(self.text.mean(0)).astype(np.float32)     # (D,), see common_direction

    @property
    def dim(self) -> int:
        return int(self.text.shape[1])

    def __len__(self) -> int:
        return len(self.concepts)

    def column(self, concept_id: str) -> int | None:
        """The bank column of a concept id ("imagenet:n02123045", "colour:red"), None when it has none."""
        return self._column.get(str(concept_id))

    # ---- photo -> weights -> vector --------------------------------------------------------------------
    def class_probs(self, features: np.ndarray, logits: np.ndarray | None = None) -> np.ndarray:
        """(n, F) pooled features (or the graph's (n, K) logits) -> (n, K) softmax(logits / T)."""
        if logits is None:
            logits = features @ self.classifier_w.T + self.classifier_b                 # (n, K)
        return softmax(np.asarray(logits, np.float32) / self.mix.temperature, axis=-1)

    def weights(self, features: np.ndarray, pixels: np.ndarray | None = None,
                mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5), logits: np.ndarray | None = None) -> np.ndarray:
        """(n, F) features [+ (n, 3, S, S) normalised pixels] [+ the image graph's (n, K) logits] -> (n, C)
        non-negative concept weights."""
        features = np.asarray(features, np.float32)
        n, m = len(features), self.mix
        w = np.zeros((n, len(self.concepts)), np.float32)
        p = self.class_probs(features, logits)                                          # (n, K)
        k = min(m.top_k, p.shape[1])
        top = np.argpartition(-p, k - 1, axis=1)[:, :k]                                 # (n, k)
        rows = np.arange(n)[:, None]
        w[rows, self._cols["class"][top]] = p[rows, top]
        if len(self.group) and m.group_weight > 0:
            g = p @ self.group.T                                                        # (n, G)
            w[:, self._cols["group"]] = m.group_weight * np.where(g >= m.group_min, g, 0.0)
        if len(self.head_b) and m.head_weight > 0:
            z = l2_normalize(features) @ self.head_w.T + self.head_b                     # (n, H)
            s = 1.0 / (1.0 + np.exp(-z))
            w[:, self._cols["head"]] = m.head_weight * np.where(s >= self.head_threshold, s, 0.0)
        if pixels is not None and (m.colour_weight > 0 or m.attribute_weight > 0):
            shares, attrs = colour_shares(sampled_rgb(pixels, mean, std))
            if len(self._colour_names) and m.colour_weight > 0:
                c = np.stack([shares[name] for name in self._colour_names], 1)           # (n, colours)
                w[:, self._cols["colour"]] = m.colour_weight * np.where(c >= m.colour_min, c, 0.0)
            if len(self._attr_names) and m.attribute_weight > 0:
                a = np.stack([attrs[name] for name in self._attr_names], 1)               # (n, attributes)
                w[:, self._cols["attribute"]] = m.attribute_weight * a
        return w

    def embed(self, weights: np.ndarray) -> np.ndarray:
        """(n, C) weights -> (n, D) unit vectors in the text tower's space. Only the non-zero weights (top-k
        classes and the few other concepts) are gathered: no (n, C) x (C, D) product, so no BLAS threads that
        would fight the image graph's own (2 threads: 179 -> 439+ photos/s)."""
        w = np.asarray(weights, np.float32)
        m = max(1, int((w > 0).sum(1).max())) if len(w) else 1
        idx = np.argpartition(-w, m - 1, axis=1)[:, :m] if w.shape[1] > m else np.tile(np.arange(w.shape[1]),
                                                                                          (len(w), 1))
        top = np.take_along_axis(w, idx, 1)                                              # (n, m)
        v = np.einsum("nm,nmd->nd", top, self.text[idx])                                 # (n, D)
        return l2_normalize(v.astype(np.float32))

    @property
    def common_direction(self) -> np.ndarray:
        """(D,) unit mean of the concept rows: the direction every photo vector shares (e5-style text spaces are
        anisotropic: unrelated photos sit at cosine 0.96-0.98). Computed once, when the bank is indexed."""
        return self._common

    def decorrelate(self, x: np.ndarray) -> np.ndarray:
        """Vectors (n, D) or (D,) with the common direction removed, L2-normalised, row by row. Cosines between
        decorrelated vectors are comparable across queries (raw ones are not: every photo scores 0.88-0.95 with
        every query, offset by how generic the query is); relevance levels and label certainty use them, the
        ranking of a query's results keeps the raw cosine (measured better on the held-out dev split)."""
        x = np.asarray(x, np.float32)
        m = self.common_direction
        along = (x * m).sum(-1, keepdims=True)
        return l2_normalize(x - along * m).astype(np.float32)

    def label_space(self, class_embeds: np.ndarray) -> np.ndarray:
        """Zero-shot class embeddings (L, D) with the common direction removed. Every photo has about the same
        component along it, so this subtracts from each label's score its similarity to the average photo:
        a generic label ("人", "thing") no longer wins every photo. Measured on the held-out photos'
        11-category classification (top-1): EN 0.453 -> 0.523, ZH 0.279 -> 0.465 (v1 model: 0.547 / 0.349).
        Rows come back unit length (``decorrelate``)."""
        return self.decorrelate(class_embeds)       # row by row: a label's row never depends on the other labels

    # ---- query-aware colours ---------------------------------------------------------------------------
    @property
    def has_colour_boost(self) -> bool:
        return self.mix.colour_boost > 0 and len(self._colour_names) > 0

    def photo_colours(self, pixels: np.ndarray, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5)) -> np.ndarray | None:
        """(n, 3, S, S) normalised pixels -> (n, c) share of each colour concept's pixels (None without a boost)."""
        if not self.has_colour_boost:
            return None
        shares, _ = colour_shares(sampled_rgb(pixels, mean, std))
        return np.stack([shares[n] for n in self._colour_names], 1).astype(np.float32)

    def colour_terms(self, queries: np.ndarray, colours: np.ndarray) -> np.ndarray:
        """Unit queries (q, D), photos' colour shares (p, c) -> (q, p, c) the colour term of each pair, per colour:
        lambda * max(0, cos_decorrelated(query, colour) - tau) * share. A query that names no colour adds 0;
        "红色的花" adds to red photos. Added to the score (``index.search``); each is also a ``why`` entry."""
        C = self.decorrelate(self.text[self._cols["colour"]])                               # (c, D)
        A = np.maximum(self.decorrelate(np.atleast_2d(queries)) @ C.T - self.mix.colour_affinity, 0.0)   # (q, c)
        return self.mix.colour_boost * A[:, None, :] * np.asarray(colours, np.float32)[None]

    def colour_why(self, terms: np.ndarray) -> list[dict]:
        """One pair's (c,) colour terms -> why entries for the colours that added something."""
        cols = self._cols["colour"]
        return [{"concept": self.concepts[cols[i]]["id"], "en": self.concepts[cols[i]]["en"][0],
                 "zh": self.concepts[cols[i]]["zh"][0], "share": round(float(terms[i]), 4)}
                for i in np.argsort(-terms) if terms[i] > 0]

    # ---- explanations ----------------------------------------------------------------------------------
    def explain(self, ids: np.ndarray, weights: np.ndarray, query: np.ndarray, top: int = 3) -> list[dict]:
        """A photo's sparse weights (concept ids (m,), weights (m,)) and a unit query (D,) -> the ``top``
        concepts by share of the score: [{"concept", "en", "zh", "share"}]. The shares of all m concepts sum to
        the photo's score v . q exactly (up to the float16 storage of the weights)."""
        ids = np.asarray(ids, np.int64)
        w = np.asarray(weights, np.float32)
        if not len(ids):
            return []
        T = self.text[ids]                                                              # (m, D)
        norm = float(np.linalg.norm(w @ T)) or 1.0
        share = w * (T @ np.asarray(query, np.float32)) / norm                          # (m,)
        order = np.argsort(-share)[:top]
        return [{"concept": self.concepts[ids[i]]["id"], "en": self.concepts[ids[i]]["en"][0],
                 "zh": self.concepts[ids[i]]["zh"][0] if self.concepts[ids[i]].get("zh") else
                 self.concepts[ids[i]]["en"][0], "share": round(float(share[i]), 4)} for i in order]

    def cam(self, feature_map: np.ndarray, concept_ids) -> np.ndarray:
        """Class activation maps: (F, h, w) feature map, concept ids -> (len(ids), h, w) in [0, 1].

        A class concept uses its classifier row, a group the probability-weighted sum of its classes' rows, a
        learned head its own row; colour / attribute concepts have no map (zeros: they describe the pixels)."""
        fm = np.asarray(feature_map, np.float32)
        F_, h, w_ = fm.shape
        flat = fm.reshape(F_, -1)                                                       # (F, h*w)
        out = np.zeros((len(concept_ids), h * w_), np.float32)
        for j, c in enumerate(concept_ids):
            det = self.concepts[int(c)]["detector"]
            if det["kind"] == "class":
                row = self.classifier_w[det["index"]]
            elif det["kind"] == "group":
                members = np.flatnonzero(self.group[det["row"]])
                row = self.classifier_w[members].mean(0)
            elif det["kind"] == "head":
                row = self.head_w[det["row"]]
            else:
                continue
            m = row @ flat                                                              # (h*w,)
            m = np.maximum(m - m.min(), 0.0)
            out[j] = m / (m.max() or 1.0)
        return out.reshape(len(concept_ids), h, w_)


def ranking_scores(queries: np.ndarray, photos: np.ndarray, bank: ConceptBank | None = None,
                   colours: np.ndarray | None = None) -> np.ndarray:
    """Unit queries (q, D) x photo vectors (p, D) -> (q, p) the scores ``index.search`` ranks by: the cosine, plus
    the query-aware colour term when ``bank`` has a colour boost and the photos' ``colours`` (p, c) are given.
    Evaluations call this so that they measure the ranking users get."""
    S = np.asarray(queries, np.float32) @ np.asarray(photos, np.float32).T
    if bank is not None and colours is not None and bank.has_colour_boost:
        S = S + bank.colour_terms(queries, colours).sum(-1)
    return S


def sparse(weights_row: np.ndarray, limit: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """One photo's (C,) weights -> (ids int32 (m,), weights float32 (m,)), the non-zero ones, largest first,
    at most ``limit`` (the rest are below the top-k class weights and change no share that is shown)."""
    nz = np.flatnonzero(weights_row > 0)
    order = nz[np.argsort(-weights_row[nz])][:limit]
    return order.astype(np.int32), weights_row[order].astype(np.float32)


def sampled_rgb(pixels: np.ndarray, mean, std, step: int = 4) -> np.ndarray:
    """Normalised pixels (n, 3, S, S) -> RGB in [0, 1] of every ``step``-th pixel in both directions (n, 3, S/step,
    S/step): colour shares only need a sample of the photo's pixels, and a strided view costs ~0.01 ms a photo
    where averaging every pixel costs ~0.25 ms (the whole colour head then stays near a tenth of the image
    graph's time)."""
    x = np.asarray(pixels, np.float32)[:, :, step // 2::step, step // 2::step]
    return np.clip(x * np.asarray(std, np.float32)[:, None, None] + np.asarray(mean, np.float32)[:, None, None],
                   0.0, 1.0)


def colour_shares(rgb: np.ndarray) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """(n, 3, s, s) RGB in [0, 1] (a sample of a photo's pixels: ``sampled_rgb``) -> ({colour: (n,) share of
    pixels}, {attribute: (n,) strength in [0, 1]}). Pixels are named by hue / saturation / value: dark -> black,
    unsaturated -> white / grey, else by hue (dark reds and oranges are brown, light reds pink)."""
    n = len(rgb)
    x = np.asarray(rgb, np.float32)                                                        # (n, 3, s, s)
    r, g, b = x[:, 0], x[:, 1], x[:, 2]
    v = x.max(1)
    c = v - x.min(1)
    sat = np.where(v > 1e-6, c / np.maximum(v, 1e-6), 0.0)
    safe = np.maximum(c, 1e-6)
    hue = np.where(v == r, ((g - b) / safe) % 6, np.where(v == g, (b - r) / safe + 2, (r - g) / safe + 4)) * 60.0
    black = v < 0.2
    grey_ = ~black & (sat < 0.18)
    white = grey_ & (v > 0.8)
    grey = grey_ & ~white
    chrom = ~black & ~grey_
    red_h = (hue < 15) | (hue >= 340)
    orange_h = (hue >= 15) & (hue < 45)
    brown = chrom & (red_h | orange_h) & (v < 0.55)
    pink = chrom & ((hue >= 290) & (hue < 340) | red_h & (sat < 0.5) & (v > 0.7)) & ~brown
    masks = {
        "red": chrom & red_h & ~brown & ~pink, "orange": chrom & orange_h & ~brown,
        "yellow": chrom & (hue >= 45) & (hue < 70), "green": chrom & (hue >= 70) & (hue < 165),
        "blue": chrom & (hue >= 165) & (hue < 255), "purple": chrom & (hue >= 255) & (hue < 290),
        "pink": pink, "brown": brown, "white": white, "grey": grey, "black": black,
    }
    shares = {k: m.reshape(n, -1).mean(1).astype(np.float32) for k, m in masks.items()}
    mean_v = v.reshape(n, -1).mean(1)
    mean_s = sat.reshape(n, -1).mean(1)
    attrs = {"night": np.clip((0.3 - mean_v) / 0.15, 0.0, 1.0).astype(np.float32),
             "monochrome": np.clip((0.08 - mean_s) / 0.05, 0.0, 1.0).astype(np.float32)}
    return shares, attrs
