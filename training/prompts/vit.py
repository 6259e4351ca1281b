"""VPT for ViT image towers: learnable prompt tokens in the transformer, the tower itself frozen (imports torch).

    tower = ViTTower.wrap(model)          # dcclip SmallViT / ImageTower with a ViT backbone, or HF CLIPVisionModel
    vpt = DeepPrompt(tower.depth, n_tokens=8, width=tower.width, mode="deep")
    pooled = tower(pixels, vpt.tokens)    # [n, W]; tokens [L, T, W] (L = depth for deep, 1 for shallow)

Sequence layout (VPT, Jia et al. 2022): ``[CLS] [P_1..P_T] [patch_1..patch_N]``.

* ``shallow``: the T tokens are inserted once, after the embeddings, and travel through every layer.
* ``deep``: before layer i the T positions that layer i-1 produced for the prompts are *replaced* by
  layer i's own tokens (``tokens[i]``), so every layer has its own prompts; their outputs are discarded.

Only ``DeepPrompt.tokens`` is a parameter; the tower's weights keep ``requires_grad=False`` and are never
saved with a prompt (``prompt_tensors`` -> ``{"vpt_tokens": [L, T, W]}``).

Inference without torch: ``export_prompted_onnx`` writes the prompted tower as ONNX with the tokens as a second
*input* (``pixels`` [n, 3, S, S], ``tokens`` [L, T, W] -> ``embedding``, ``features``), once per model and mode,
cached under ``$DCCLIP_CACHE/vpt/<model hash>/<mode>.onnx``; ``dcclip_core.prompts.PromptClassifier`` feeds a
prompt's tokens to it with ONNX Runtime.
"""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

MODES = ("deep", "shallow")
INIT = 0.0625                                  # uniform(-0.0625, 0.0625), as MVLPT's VPT (PAPERS.md)


class ViTTower(nn.Module):
    """A frozen ViT seen as embed -> blocks -> pool, with prompt tokens spliced in after the CLS token.

    ``head`` (optional) maps pooled features [n, W] to the joint embedding [n, D] (dcclip's image head; for HF
    CLIPVisionModelWithProjection its ``visual_projection``). Build with ``ViTTower.wrap(module)``.
    """

    def __init__(self, embed: Callable, blocks: list, pool: Callable, width: int, head: Callable | None,
                 owner: nn.Module, image_size: int):
        super().__init__()
        self.owner = owner.eval()                                 # registered: .eval()/.parameters() reach it
        for p in self.owner.parameters():
            p.requires_grad_(False)
        self._embed, self._blocks, self._pool, self._head = embed, blocks, pool, head
        self.width, self.depth, self.image_size = int(width), len(blocks), int(image_size)

    # ---- construction ----------------------------------------------------------------------------------
    @classmethod
    def wrap(cls, module: nn.Module) -> "ViTTower":
        """dcclip ``ImageTower`` (ViT backbone) / ``SmallViT``, or transformers ``CLIPVisionModel[WithProjection]``."""
        from dcclip_core.models import ImageTower, SmallViT
        if isinstance(module, ImageTower):
            if not isinstance(module.backbone, SmallViT):
                raise TypeError(f"deep/shallow VPT needs a ViT image tower; this model's tower is "
                                f"{module.cfg.tower!r} (a CNN): use --visual pixel or --visual feature")
            vit = module.backbone
            return cls(*_smallvit_parts(vit), head=lambda f: module.embed_probs(module.probs(f)), owner=module,
                       image_size=vit.image_size)
        if isinstance(module, SmallViT):
            return cls(*_smallvit_parts(module), head=None, owner=module, image_size=module.image_size)
        name = type(module).__name__
        if name in ("CLIPVisionModel", "CLIPVisionModelWithProjection"):
            return cls(*_hf_clip_parts(module), owner=module, image_size=module.config.image_size)
        raise TypeError(f"VPT for ViT towers supports dcclip SmallViT / ImageTower and transformers "
                        f"CLIPVisionModel, not {name}")

    # ---- forward ---------------------------------------------------------------------------------------
    def forward(self, pixels: torch.Tensor, tokens: torch.Tensor | None = None, mode: str = "deep") -> torch.Tensor:
        """pixels [n, 3, S, S], tokens [L, T, W] or None -> pooled features [n, W]."""
        x = self._embed(pixels)                                                  # [n, 1+N, W]
        n = x.shape[0]
        if tokens is None or tokens.shape[1] == 0:
            for blk in self._blocks:
                x = blk(x)
            return self._pool(x)
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, not {mode!r}")
        T = tokens.shape[1]
        if mode == "deep" and tokens.shape[0] != self.depth:
            raise ValueError(f"deep VPT needs tokens for each of the {self.depth} layers, got {tokens.shape[0]}")
        x = torch.cat([x[:, :1], tokens[0].expand(n, -1, -1), x[:, 1:]], 1)    # [n, 1+T+N, W]
        for i, blk in enumerate(self._blocks):
            if mode == "deep" and i > 0:                                         # replace the previous prompts
                x = torch.cat([x[:, :1], tokens[i].expand(n, -1, -1), x[:, 1 + T:]], 1)
            x = blk(x)
        return self._pool(x)                                                     # [n, W]

    def embed(self, pooled: torch.Tensor) -> torch.Tensor:
        """Pooled features -> the joint embedding (the tower's head; identity without one)."""
        return pooled if self._head is None else self._head(pooled)


def _smallvit_parts(vit):
    return vit.embed_tokens, list(vit.blocks), (lambda x: vit.ln(x[:, 0])), vit.width      # embed: [n, 1+g*g, W]


def _hf_clip_parts(m):
    vm = getattr(m, "vision_model", m)                   # older transformers nest a CLIPVisionTransformer
    emb, pre, post = vm.embeddings, vm.pre_layrnorm, vm.post_layernorm
    layers = list(vm.encoder.layers)
    if hasattr(m.config, "_attn_implementation"):
        m.config._attn_implementation = "eager"          # plain matmul attention: exports to ONNX everywhere

    import inspect
    extra = (None,) if layers and "causal_attention_mask" in inspect.signature(layers[0].forward).parameters else ()

    def block(layer):
        def run(x):
            out = layer(x, None, *extra)                 # no attention mask (transformers 4.x: no causal mask)
            return out[0] if isinstance(out, tuple) else out
        return run

    proj = getattr(m, "visual_projection", None)
    return (lambda px: pre(emb(px))), [block(layer) for layer in layers], (lambda x: post(x[:, 0])), \
        int(m.config.hidden_size), proj


class DeepPrompt(nn.Module):
    """The trainable part: ``tokens`` [L, T, W], L = depth (deep) or 1 (shallow), init uniform(+-0.0625)."""

    def __init__(self, depth: int, n_tokens: int = 8, width: int = 192, mode: str = "deep", init: float = INIT,
                 seed: int = 0):
        super().__init__()
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, not {mode!r}")
        self.mode = mode
        L = int(depth) if mode == "deep" else 1
        g = torch.Generator().manual_seed(int(seed))
        self.tokens = nn.Parameter((torch.rand(L, int(n_tokens), int(width), generator=g) * 2 - 1) * init)

    def prompt_tensors(self) -> dict:
        """What a saved prompt holds: the tokens only (float32 numpy)."""
        return {"vpt_tokens": self.tokens.detach().float().numpy().copy()}


class PromptedTower(nn.Module):
    """(pixels [n,3,S,S], tokens [L,T,W]) -> (embedding [n, D] L2-normalised, features [n, W]): what ONNX runs."""

    def __init__(self, tower: ViTTower, mode: str):
        super().__init__()
        self.tower, self.mode = tower, mode

    def forward(self, pixels: torch.Tensor, tokens: torch.Tensor):
        f = self.tower(pixels, tokens, self.mode)
        return F.normalize(self.tower.embed(f), dim=-1), f


# ---------------------------------------------------------------------------------------------------------
# Training
# ---------------------------------------------------------------------------------------------------------


def train_tokens(tower: ViTTower, prompt: DeepPrompt, pixels: torch.Tensor, labels: torch.Tensor,
                 class_embeds: torch.Tensor, steps: int = 20, lr: float = 0.05, batch_size: int = 16,
                 logit_scale: float = 100.0, seed: int = 0,
                 progress: Callable[[int, int, float], None] | None = None) -> list[float]:
    """Cross-entropy of ``scale * cos(embed(tower(px, tokens)), class_embeds)``, AdamW on the tokens only.

    pixels [N, 3, S, S] (preprocessed), labels [N], class_embeds [C, D] (unit rows). Returns the loss per step.
    """
    g = torch.Generator().manual_seed(int(seed))
    opt = torch.optim.AdamW([prompt.tokens], lr=lr, weight_decay=0.0)
    W = F.normalize(class_embeds.float(), dim=-1)
    B = min(batch_size, len(labels))
    losses = []
    for step in range(1, steps + 1):
        for grp in opt.param_groups:                                             # cosine decay
            grp["lr"] = lr * 0.5 * (1 + torch.cos(torch.tensor(torch.pi * (step - 1) / max(1, steps))).item())
        idx = torch.randperm(len(labels), generator=g)[:B]
        emb = F.normalize(tower.embed(tower(pixels[idx], prompt.tokens, prompt.mode)), dim=-1)
        loss = F.cross_entropy(logit_scale * emb @ W.T, labels[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
        if progress:
            progress(step, steps, losses[-1])
    return losses


# ---------------------------------------------------------------------------------------------------------
# ONNX: the prompted tower with the tokens as an input
# ---------------------------------------------------------------------------------------------------------


def export_prompted_onnx(tower: ViTTower, mode: str, path: str | Path, n_tokens: int = 4) -> Path:
    """Export ``PromptedTower(tower, mode)`` to ``path`` (inputs ``pixels`` [n,3,S,S] and ``tokens`` [L,T,W],
    batch and T dynamic; outputs ``embedding``, ``features``). Fails loudly when ONNX and torch disagree."""
    from training.export import export_onnx
    S = tower.image_size
    L = tower.depth if mode == "deep" else 1
    g = torch.Generator().manual_seed(0)
    args = (torch.randn(2, 3, S, S, generator=g), torch.randn(L, n_tokens, tower.width, generator=g) * INIT)
    return export_onnx(PromptedTower(tower, mode).eval(), args, path, ["pixels", "tokens"],
                       ["embedding", "features"], {"pixels": {0: "batch"}, "tokens": {1: "n_tokens"},
                                                   "embedding": {0: "batch"}, "features": {0: "batch"}})


def ensure_model_graph(model, mode: str, tower: ViTTower | None = None) -> Path:
    """The cached prompted-tower graph of an installed dcclip model (``dcclip_core.prompts.vpt_graph_path``);
    exported from its torch twin the first time."""
    from dcclip_core.prompts import vpt_graph_path
    path = vpt_graph_path(model, mode)
    if not path.is_file():
        if tower is None:
            from dcclip_core.models import load_torch_model
            tower = ViTTower.wrap(load_torch_model(str(model.path)).image)
        export_prompted_onnx(tower, mode, path)
    return path


def main(argv=None) -> int:
    """``python -m training.prompts.vit export [--model NAME] [--mode deep shallow]``: build the cached graphs."""
    import argparse
    import dcclip_core
    ap = argparse.ArgumentParser(prog="python -m training.prompts.vit",
                                 description="Export the prompted ViT image tower (deep/shallow VPT) to ONNX for "
                                             "torch-free inference of VPT prompts.")
    ap.add_argument("command", choices=["export"])
    ap.add_argument("--model", default="default")
    ap.add_argument("--mode", nargs="+", default=list(MODES), choices=list(MODES))
    args = ap.parse_args(argv)
    m = dcclip_core.load(args.model)
    for mode in args.mode:
        try:
            print(ensure_model_graph(m, mode))
        except TypeError as e:                               # a CNN tower: nothing to export
            print(f"vit: {e}", file=sys.stderr)
            return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
