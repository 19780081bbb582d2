"""Cell detectors: a ViG detector (the paper's) and a small U-Net-style CNN.

Both return a :class:`DetectorOutput`: per-pixel class logits (softmax gives the
(C + 1)-channel heatmap, channel 0 background) and a node embedding on the grid at
the model's stride, which the semantic-energy losses consume. Nothing about the
image size, class count or device is fixed: sizes are constructor arguments and
any input whose sides are multiples of ``stride`` is accepted.
"""

from __future__ import annotations

import inspect
import math
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from .vig import ViGBlock

__all__ = ["DetectorOutput", "ViGDetector", "UNetDetector", "StainChannels", "build_model", "MODEL_SIZES"]


class DetectorOutput(NamedTuple):
    logits: torch.Tensor  # (B, C+1, H, W)
    embedding: torch.Tensor  # (B, D, H/stride, W/stride)


def _conv_bn_act(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.GELU())


class StainChannels(nn.Module):
    """A fixed colour deconvolution in front of the network: the model input (RGB scaled
    to [-1, 1]) with the optical densities of haematoxylin, eosin and DAB appended, so
    that a detector trained from a few hundred clicks need not learn the stains.

    Beer-Lambert: ``OD = -log10((I + 1) / 256)`` per channel (I in 0..255), then the
    densities of the stains ``OD @ hed_from_rgb`` (scikit-image's inverse of Ruifrok and
    Johnston's stain vectors, the matrix ``rgb2hed`` and the classical peer use), negative
    values (noise) set to 0. Nothing is learnt; the module exports to ONNX like the rest.
    """

    def __init__(self) -> None:
        super().__init__()
        from skimage.color import hed_from_rgb

        self.register_buffer("unmix", torch.tensor(hed_from_rgb, dtype=torch.float32), persistent=False)  # (3 RGB, 3 stains)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, 3, H, W) -> (B, 6, H, W)
        intensity = (x + 1.0) * 127.5  # back to 0..255
        od = -torch.log10((intensity.clamp(0.0, 255.0) + 1.0) / 256.0)
        stains = torch.einsum("bchw,cs->bshw", od, self.unmix).clamp_min(0.0)
        return torch.cat([x, stains], dim=1)


def _check_size(x: torch.Tensor, stride: int) -> None:
    if x.ndim != 4 or x.shape[1] != 3:
        raise ValueError(f"detector input must be (B, 3, H, W), got shape {tuple(x.shape)}")
    H, W = x.shape[-2:]
    if H % stride or W % stride:
        raise ValueError(
            f"detector input {H}x{W} is not a multiple of the model stride {stride}: "
            f"pad or crop to e.g. {math.ceil(H / stride) * stride}x{math.ceil(W / stride) * stride}"
        )


class _Decoder(nn.Module):
    """Transposed-conv upsampling from the grid back to full resolution.

    With ``skips`` each 2x step adds the stem feature of that resolution (U-Net
    style), which sharpens localisation; without, it is the paper's plain decoder.
    """

    def __init__(self, in_dim: int, skip_dims: list[int], num_outputs: int, skips: bool):
        super().__init__()
        self.skips = skips
        dims = [in_dim] + [max(d, 16) for d in reversed(skip_dims)]  # coarse -> fine
        self.up = nn.ModuleList()
        self.fuse = nn.ModuleList()
        for i in range(len(skip_dims)):
            cin, cout = dims[i], dims[i + 1]
            self.up.append(nn.Sequential(nn.ConvTranspose2d(cin, cout, 2, 2, bias=False), nn.BatchNorm2d(cout), nn.GELU()))
            skip_c = list(reversed(skip_dims))[i + 1] if i + 1 < len(skip_dims) else 0
            self.fuse.append(_conv_bn_act(cout + (skip_c if skips else 0), cout))
        self.head = nn.Conv2d(dims[-1], num_outputs, 1)

    def forward(self, x: torch.Tensor, feats: list[torch.Tensor]) -> torch.Tensor:
        # feats: stem outputs fine -> coarse; feats[-1] is at the grid resolution
        skips = list(reversed(feats[:-1])) + [None]
        for up, fuse, s in zip(self.up, self.fuse, skips):
            x = up(x)
            if self.skips and s is not None:
                x = torch.cat([x, s], dim=1)
            x = fuse(x)
        return self.head(x)


class ViGDetector(nn.Module):
    """Conv stem to ``stride``, K ViG blocks on the grid nodes, decoder, feature head.

    Parameters
    ----------
    num_classes : int
        Cell classes C; the heatmap has C + 1 channels.
    dim : int
        Channels of the graph nodes.
    depth : int
        Number of ViG blocks K; k grows linearly from ``k_min`` to ``k_max`` over
        the blocks and the dilation of block i is ``min(i // 4 + 1, max_dilation)``.
    stride : int
        Power of two: the stem has log2(stride) stride-2 conv layers (32 in the paper).
    embed_dim : int, optional
        Node-embedding size (default ``dim // 4``).
    grid : int
        Side of the learnable position embedding's grid; it is resized bilinearly to
        the actual grid of each input.
    skips : bool
        Decoder with stem skip connections (default) or the paper's plain one.
    stain_input : bool
        Give the stem the stains' optical densities beside RGB (:class:`StainChannels`).
    """

    def __init__(
        self,
        num_classes: int = 1,
        dim: int = 64,
        depth: int = 4,
        stride: int = 32,
        embed_dim: int | None = None,
        k_min: int = 9,
        k_max: int = 18,
        max_dilation: int = 4,
        grid: int = 16,
        skips: bool = True,
        stain_input: bool = False,
    ):
        super().__init__()
        if stride < 2 or stride & (stride - 1):
            raise ValueError(f"ViGDetector: stride must be a power of two >= 2, got {stride}")
        self.stride, self.num_classes = stride, num_classes
        n_down = int(math.log2(stride))
        stem_dims = [max(dim // 2 ** (n_down - 1 - i), 16) for i in range(n_down)]
        stem_dims[-1] = dim
        self.stains = StainChannels() if stain_input else None
        self.stem = nn.ModuleList()
        cin = 6 if stain_input else 3
        for c in stem_dims:
            self.stem.append(_conv_bn_act(cin, c, stride=2))
            cin = c
        self.pos_embed = nn.Parameter(torch.zeros(1, dim, grid, grid))
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        ks = [round(k_min + (k_max - k_min) * i / max(depth - 1, 1)) for i in range(depth)]
        self.blocks = nn.ModuleList(ViGBlock(dim, ks[i], min(i // 4 + 1, max_dilation)) for i in range(depth))
        self.decoder = _Decoder(dim, stem_dims, num_classes + 1, skips)
        embed_dim = embed_dim or max(dim // 4, 8)
        mid = max(dim, embed_dim)  # concat of K blocks -> dim -> embed_dim
        self.feature_head = nn.Sequential(
            nn.Conv2d(dim * depth, mid, 1, bias=False), nn.BatchNorm2d(mid), nn.GELU(),
            nn.Conv2d(mid, embed_dim, 1, bias=False), nn.BatchNorm2d(embed_dim), nn.GELU(),
        )  # fmt: skip
        self.embed_dim = embed_dim

    def forward(self, x: torch.Tensor) -> DetectorOutput:  # x (B, 3, H, W)
        _check_size(x, self.stride)
        if self.stains is not None:
            x = self.stains(x)
        feats = []
        for layer in self.stem:
            x = layer(x)
            feats.append(x)
        B, C, h, w = x.shape  # (B, dim, H/s, W/s)
        pos = self.pos_embed
        if pos.shape[-2:] != (h, w):
            pos = F.interpolate(pos, size=(h, w), mode="bilinear", align_corners=False)
        nodes = (x + pos).flatten(2)  # (B, dim, N)
        outs = []
        for blk in self.blocks:
            nodes = blk(nodes)
            outs.append(nodes)
        grid = nodes.view(B, C, h, w)
        logits = self.decoder(grid, feats)  # (B, C+1, H, W)
        emb = self.feature_head(torch.cat(outs, dim=1).view(B, -1, h, w))  # (B, D, h, w)
        return DetectorOutput(logits, emb)


class UNetDetector(nn.Module):
    """A small U-Net-style CNN with the same outputs, for comparison: the embedding
    is the bottleneck (at ``stride``) reduced by a 1x1 conv head."""

    def __init__(self, num_classes: int = 1, dim: int = 64, stride: int = 16, embed_dim: int | None = None, width: int = 16,
                 stain_input: bool = False):
        super().__init__()
        if stride < 2 or stride & (stride - 1):
            raise ValueError(f"UNetDetector: stride must be a power of two >= 2, got {stride}")
        self.stride, self.num_classes = stride, num_classes
        n_down = int(math.log2(stride))
        dims = [min(width * 2**i, dim) for i in range(n_down)]
        dims[-1] = dim
        self.stains = StainChannels() if stain_input else None
        self.stem = nn.ModuleList()
        cin = 6 if stain_input else 3
        for c in dims:
            self.stem.append(nn.Sequential(_conv_bn_act(cin, c, stride=2), _conv_bn_act(c, c)))
            cin = c
        self.bottleneck = nn.Sequential(_conv_bn_act(dim, dim), _conv_bn_act(dim, dim))
        self.decoder = _Decoder(dim, dims, num_classes + 1, skips=True)
        embed_dim = embed_dim or max(dim // 4, 8)
        self.feature_head = nn.Sequential(nn.Conv2d(dim, embed_dim, 1, bias=False), nn.BatchNorm2d(embed_dim), nn.GELU())
        self.embed_dim = embed_dim

    def forward(self, x: torch.Tensor) -> DetectorOutput:
        _check_size(x, self.stride)
        if self.stains is not None:
            x = self.stains(x)
        feats = []
        for layer in self.stem:
            x = layer(x)
            feats.append(x)
        x = self.bottleneck(x)
        return DetectorOutput(self.decoder(x, feats), self.feature_head(x))


#: Named sizes. ``vig_s`` is the paper's "small" setting (16 blocks, 320 channels,
#: meant for 1024x1024 inputs: a 32x32 grid); ``vig_cpu`` is for tests and the demo.
MODEL_SIZES: dict[str, dict] = {
    "vig_cpu": dict(arch="vig", dim=64, depth=4, stride=16, grid=16),
    "vig_ti": dict(arch="vig", dim=192, depth=12, stride=32, grid=32),
    "vig_s": dict(arch="vig", dim=320, depth=16, stride=32, grid=32),
    "unet_cpu": dict(arch="unet", dim=64, stride=16),
}


def build_model(size: str = "vig_cpu", num_classes: int = 1, **overrides) -> nn.Module:
    """A detector by name (see ``MODEL_SIZES``), with any constructor argument overridden."""
    if size not in MODEL_SIZES:
        raise ValueError(f"unknown model size {size!r}; choose one of {sorted(MODEL_SIZES)}")
    kw = {**MODEL_SIZES[size], **overrides}
    arch = kw.pop("arch")
    cls = ViGDetector if arch == "vig" else UNetDetector
    takes = set(inspect.signature(cls.__init__).parameters) - {"self", "num_classes"}
    unknown = sorted(set(overrides) - takes)
    if unknown:
        raise ValueError(f"model size {size!r} takes no setting {unknown[0]!r}; it takes {', '.join(sorted(takes))}")
    return cls(num_classes=num_classes, **kw)


def vig_ti(num_classes: int = 1, **kw) -> ViGDetector:
    return build_model("vig_ti", num_classes, **kw)


def vig_s(num_classes: int = 1, **kw) -> ViGDetector:
    return build_model("vig_s", num_classes, **kw)
