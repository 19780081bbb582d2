"""Vision GNN (ViG) blocks, written from Han et al., "Vision GNN: An Image is Worth
Graph of Nodes", NeurIPS 2022, in plain PyTorch.

A block treats each position of a feature map as a graph node, links every node to
its k nearest neighbours in feature space (recomputed in every block: a dynamic
graph), aggregates with max-relative graph convolution and then applies a
per-node feed-forward network; both parts are residual.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["knn_graph", "MaxRelativeConv", "Grapher", "FFN", "ViGBlock"]


def knn_graph(x: torch.Tensor, k: int, dilation: int = 1) -> torch.Tensor:
    """Indices of the k (dilated) nearest neighbours of every node.

    Parameters
    ----------
    x : (B, C, N)
        Node features. Distances are between L2-normalised features, as in ViG.
    k, dilation : int
        Take the ``k * dilation`` nearest nodes (self included), then every
        ``dilation``-th of them.

    Returns
    -------
    (B, N, k) long
    """
    B, C, N = x.shape
    with torch.no_grad():
        xn = F.normalize(x.float(), dim=1)
        sim = torch.bmm(xn.transpose(1, 2), xn)  # (B, N, N); nearest = most similar
        idx = sim.topk(k * dilation, dim=-1).indices  # (B, N, k*d)
    return idx[:, :, ::dilation]


def _gather_neighbours(x: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """x (B, C, N), idx (B, N, k) -> neighbour features (B, C, N, k)."""
    B, C, N = x.shape
    k = idx.shape[-1]
    flat = idx.reshape(B, 1, N * k).expand(B, C, N * k)
    return torch.gather(x, 2, flat).view(B, C, N, k)


class MaxRelativeConv(nn.Module):
    """Max-relative graph convolution: concat(x_i, max_j (x_j - x_i)), then a 1x1 conv."""

    def __init__(self, dim: int, out_dim: int):
        super().__init__()
        self.proj = nn.Sequential(nn.Conv1d(2 * dim, out_dim, 1), nn.BatchNorm1d(out_dim), nn.GELU())

    def forward(self, x: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:  # x (B, C, N)
        rel = (_gather_neighbours(x, idx) - x.unsqueeze(-1)).amax(dim=-1)  # (B, C, N)
        return self.proj(torch.cat([x, rel], dim=1))  # (B, out_dim, N)


class Grapher(nn.Module):
    """1x1 conv, dynamic kNN graph + max-relative conv, 1x1 conv, residual."""

    def __init__(self, dim: int, k: int, dilation: int):
        super().__init__()
        self.k, self.dilation = k, dilation
        self.fc1 = nn.Sequential(nn.Conv1d(dim, dim, 1), nn.BatchNorm1d(dim))
        self.graph_conv = MaxRelativeConv(dim, 2 * dim)
        self.fc2 = nn.Sequential(nn.Conv1d(2 * dim, dim, 1), nn.BatchNorm1d(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x (B, C, N)
        N = x.shape[-1]
        k = min(self.k, N)
        d = max(1, min(self.dilation, N // k))
        h = self.fc1(x)
        h = self.graph_conv(h, knn_graph(h, k, d))
        return x + self.fc2(h)


class FFN(nn.Module):
    """Per-node feed-forward network with a 4x hidden expansion, residual."""

    def __init__(self, dim: int, expansion: int = 4):
        super().__init__()
        hidden = dim * expansion
        self.net = nn.Sequential(
            nn.Conv1d(dim, hidden, 1), nn.BatchNorm1d(hidden), nn.GELU(), nn.Conv1d(hidden, dim, 1), nn.BatchNorm1d(dim)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.net(x)


class ViGBlock(nn.Module):
    """Grapher then FFN, on nodes (B, C, N)."""

    def __init__(self, dim: int, k: int, dilation: int):
        super().__init__()
        self.grapher = Grapher(dim, k, dilation)
        self.ffn = FFN(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.ffn(self.grapher(x))
