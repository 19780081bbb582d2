"""The losses' building blocks, as functions of tensors (the classes in
:mod:`sparsecell.losses.methods` combine them).

Every function is vectorised over the batch with masks: no Python loop over images and
no host-device synchronisation. Shapes: ``logits`` (B, C+1, H, W), node ``embedding``
(B, D, h, w), target heatmap ``target`` (B, C+1, H, W), labelled grid nodes
``labelled`` (B, C, h, w) bool.
"""

from __future__ import annotations

import functools
import math

import torch
import torch.nn.functional as F

__all__ = ["semantic_energy", "energy_map", "pixel_energy", "weighted_cross_entropy", "stretched_feature_loss", "pu_risk"]

_LOG_EPS = math.log(1e-10)


def _log_probs(logits: torch.Tensor) -> torch.Tensor:
    """log clip(softmax(logits), 1e-10, 1), computed stably in float32."""
    return F.log_softmax(logits.float(), dim=1).clamp_min(_LOG_EPS)


def semantic_energy(embedding: torch.Tensor, labelled: torch.Tensor) -> torch.Tensor:
    """Node energies e, (B, C, h, w), one map per class.

    For class c with labelled nodes A_c in an image, an unlabelled node i has
    ``e_i = 1 - mean_{j in A_c} (1 + cos(f_i, f_j)) / 2``; a node labelled with any
    class has ``e = 1``; every node has ``e = 1`` in a class with no labelled node in
    that image. The mean of cosines to A_c is the dot product of the unit vector of
    f_i with the mean of the unit vectors of A_c, so the cost is O(B * C * N * D).
    Gradients flow into the embedding (not detached).

    Parameters
    ----------
    embedding : (B, D, h, w)
    labelled : (B, C, h, w) bool
    """
    B, D, h, w = embedding.shape
    unit = F.normalize(embedding.float().flatten(2), dim=1, eps=1e-12)  # (B, D, N); zero vector -> 0
    A = labelled.flatten(2).to(unit.dtype)  # (B, C, N)
    count = A.sum(-1, keepdim=True)  # (B, C, 1)
    mean_unit = torch.bmm(A, unit.transpose(1, 2)) / count.clamp_min(1.0)  # (B, C, D)
    mean_cos = torch.bmm(mean_unit, unit)  # (B, C, N)
    e = 1.0 - (1.0 + mean_cos) / 2.0
    fixed = (count == 0) | labelled.flatten(2).any(1, keepdim=True)  # (B, C, N)
    e = torch.where(fixed, torch.ones_like(e), e)
    return e.view(B, -1, h, w)


@functools.lru_cache(maxsize=64)
def _interp_matrix(n_out: int, n_in: int, mode: str, device: torch.device) -> torch.Tensor:
    """(n_out, n_in) matrix M with M @ v = 1-D interpolation of v, matching
    ``F.interpolate`` (bilinear with align_corners=False, or nearest). Cached: the
    training step reuses the same few sizes (never written to, so sharing is safe)."""
    scale = n_in / n_out
    dst = torch.arange(n_out, dtype=torch.float64)
    M = torch.zeros(n_out, n_in, dtype=torch.float64)
    if mode == "nearest":
        M[torch.arange(n_out), (dst * scale).floor().long().clamp_max(n_in - 1)] = 1.0
    else:
        src = ((dst + 0.5) * scale - 0.5).clamp_min(0.0)
        i0 = src.floor().long().clamp_max(n_in - 1)
        i1 = (i0 + 1).clamp_max(n_in - 1)
        lam = src - i0
        M.index_put_((torch.arange(n_out), i0), 1.0 - lam, accumulate=True)
        M.index_put_((torch.arange(n_out), i1), lam, accumulate=True)
    return M.to(device=device, dtype=torch.float32)


def energy_map(node_energy: torch.Tensor, size: tuple[int, int], mode: str = "bilinear") -> torch.Tensor:
    """Pixel weights E, (B, C+1, H, W), from class node energies (B, C, h, w).

    Class channel c + 1 takes the energy of class c. The background channel takes
    the smallest class energy at that node: the background target of an
    unlabelled region that looks like any annotated class is what sparse
    annotation makes unreliable. With one class both channels equal the paper's E.

    The upsampling equals ``F.interpolate`` (bilinear, align_corners=False, or
    nearest) but is done as two small matrix products, separably: its backward pass
    is then a matrix product too, far cheaper on CPU than interpolate's scatter.
    """
    e = torch.cat([node_energy.amin(1, keepdim=True), node_energy], dim=1).float()  # (B, C+1, h, w)
    h, w = e.shape[-2:]
    Mh = _interp_matrix(size[0], h, mode, e.device)  # (H, h)
    Mw = _interp_matrix(size[1], w, mode, e.device)  # (W, w)
    return torch.matmul(torch.matmul(Mh, e), Mw.T)  # (B, C+1, H, W)


def pixel_energy(embedding: torch.Tensor, labelled: torch.Tensor, size: tuple[int, int], per_class: bool,
                 mode: str = "bilinear", detach: bool = False) -> torch.Tensor:  # fmt: skip
    """SEL's pixel weights E, (B, C+1, H, W), from node embeddings and labelled nodes.

    ``per_class=False`` is the paper's formulation (its authors' code detects one cell
    class): one energy against every labelled node whatever its class, weighting every
    channel alike. ``per_class=True`` is sparsecell's variant: an energy per class and
    the smallest of them for the background (:func:`energy_map`). With one class the two
    are the same computation.
    """
    C = labelled.shape[1]
    if per_class or C == 1:
        e = semantic_energy(embedding, labelled)
        return energy_map(e.detach() if detach else e, size, mode)
    e = semantic_energy(embedding, labelled.any(1, keepdim=True))  # (B, 1, h, w)
    E = energy_map(e.detach() if detach else e, size, mode)[:, :1]  # (B, 1, H, W)
    return E.expand(-1, C + 1, -1, -1)


def weighted_cross_entropy(logits: torch.Tensor, target: torch.Tensor, weight: torch.Tensor | None = None) -> torch.Tensor:
    """mean over pixels of sum_c weight_c * (-G_c log clip(P_c, 1e-10, 1))."""
    ce = -target.float() * _log_probs(logits)  # (B, C+1, H, W)
    if weight is not None:
        ce = ce * weight
    return ce.sum(1).mean()


def stretched_feature_loss(embedding: torch.Tensor, labelled: torch.Tensor, margin: float = 10.0) -> torch.Tensor:
    """SFL: keeps unlabelled embeddings away from labelled ones.

    Per image: ``(|A| / N) * mean_{i in A, j not in A} exp(-(||f_i - f_j|| - margin))``
    with A the nodes labelled with any class; 0 for an image with no labelled or no
    unlabelled node; averaged over the batch. Distances are the square root of the
    squared distance clamped above 0, so identical embeddings give no NaN gradient.
    """
    B, D, h, w = embedding.shape
    N = h * w
    f = embedding.float().flatten(2).transpose(1, 2)  # (B, N, D)
    sq = (f * f).sum(-1)  # (B, N)
    d2 = sq.unsqueeze(2) + sq.unsqueeze(1) - 2.0 * torch.bmm(f, f.transpose(1, 2))  # (B, N, N)
    dist = d2.clamp_min(1e-12).sqrt()
    a = labelled.flatten(2).any(1).to(f.dtype)  # (B, N)
    pair = a.unsqueeze(2) * (1.0 - a).unsqueeze(1)  # labelled i x unlabelled j
    n_pairs = pair.sum((1, 2))
    total = (torch.exp(-(dist - margin)) * pair).sum((1, 2))
    per_image = (a.sum(1) / N) * total / n_pairs.clamp_min(1.0)
    return per_image.mean()


def pu_risk(
    logits: torch.Tensor,
    target: torch.Tensor,
    prior: float | None = None,
    keep: float | None = None,
    unl_weight: torch.Tensor | None = None,
    known: torch.Tensor | None = None,
    positive: torch.Tensor | None = None,
    censoring: bool = False,
    pos_weight: torch.Tensor | None = None,
) -> torch.Tensor:
    """Non-negative positive-unlabelled risk on pixels (nnPU, Kiryo et al., NeurIPS
    2017), as used for cell detection with incomplete annotations by Zhao et al.,
    "Positive-unlabeled learning for cell detection in histopathology images with
    incomplete annotations", MICCAI 2021.

    A pixel is positive with weight ``w = 1 - G_0`` (the annotated Gaussians) and
    unlabelled with weight ``1 - w``. With ``l+`` the cross-entropy towards the
    annotated classes and ``l-`` towards background::

        R = pi * R_p(l+) + max(0, R_u(l-) - pi * R_p(l-))

    ``pi`` is the prior of positive pixels. When not given it is estimated per batch
    as the annotated fraction divided by ``keep`` (the share of cells that were
    annotated).

    ``unl_weight`` (B, H, W), if given, weights each unlabelled pixel within
    ``R_u`` (a weighted mean: its normaliser is detached, so gradients reach the
    weights only through the loss values they multiply).

    ``known`` (B, H, W), 1 inside regions annotated completely (0 elsewhere): there an
    unclicked pixel is background, so those pixels get plain cross-entropy and leave
    the unlabelled set (the clicked cells stay the sample of positives); with ``a`` their share of the batch's pixels the risk is
    ``a * CE(known) + (1 - a) * R``, and the prior is the positive share inside them
    (no ``keep`` needed) when they cover at least 1% of the batch.

    ``positive`` (B, C+1, H, W), if given, is a target of further positives (e.g.
    pseudo-labels) that join the annotated ones in ``R_p`` and leave the unlabelled
    set; the prior still comes from the annotated ``target`` alone.

    ``censoring=True``: the unlabelled set is what is left of the image once the
    labelled positives are taken out (not a fresh sample of it), so it holds positives
    at the share ``pi - pi_l`` of all pixels, ``pi_l`` the labelled positives' share::

        R = pi * R_p(l+) + max(0, (1 - pi_l) * R_u(l-) - max(pi - pi_l, 0) * R_p(l-))

    which matters once many positives are labelled (pseudo-labels); the default is
    nnPU's case-control form above.

    ``pos_weight`` (B, H, W), if given, weights each positive pixel within ``R_p`` (a
    weighted mean; e.g. the clicks' importance weights of
    :func:`sparsecell.losses.prior.click_weights`, so that clicks biased towards
    conspicuous cells stand for all cells). The prior is unchanged.
    """
    logp = _log_probs(logits)
    t = target.float()
    wpos = (1.0 - t[:, 0]).clamp(0.0, 1.0)  # (B, H, W), the annotated cells
    wclick = wpos
    if positive is not None:
        p = positive.float()
        wextra = (1.0 - p[:, 0]).clamp(0.0, 1.0)
        t = torch.cat([torch.minimum(t[:, :1], p[:, :1]), torch.maximum(t[:, 1:], p[:, 1:])], dim=1)
        wpos = torch.maximum(wpos, wextra)
    wunl = 1.0 - wpos
    a = None
    if known is not None:
        k = known.float().clamp(0.0, 1.0)
        a = k.mean()
        wunl = wunl * (1.0 - k)  # the clicked cells stay the sample of positives
    cls = t[:, 1:] / t[:, 1:].sum(1, keepdim=True).clamp_min(1e-6)  # class distribution at positives
    l_pos = -(cls * logp[:, 1:]).sum(1)
    l_neg = -logp[:, 0]
    wp = wpos if pos_weight is None else wpos * pos_weight.float()  # the weights of R_p's positives
    np_ = wp.sum().clamp_min(1e-6)
    if unl_weight is not None:
        wunl = wunl * unl_weight.float()
    nu = wunl.detach().sum().clamp_min(1e-6)
    if prior is not None:
        prior_t = torch.tensor(float(prior), device=logits.device)
    elif a is not None and float(a) >= 0.01:  # the density of cells where every cell is clicked
        prior_t = ((wclick * k).sum() / k.sum()).clamp(1e-4, 0.5)
    elif keep is None:
        raise ValueError("pu_risk: give the prior or the share of annotated cells (keep)")
    else:
        prior_t = (wclick.mean() / keep).clamp(1e-4, 0.5)
    r_pos = (wp * l_pos).sum() / np_
    r_pos_neg = (wp * l_neg).sum() / np_
    r_unl_neg = (wunl * l_neg).sum() / nu
    if censoring:
        pi_l = wpos.mean().detach()
        risk = prior_t * r_pos + torch.clamp((1.0 - pi_l) * r_unl_neg - (prior_t - pi_l).clamp_min(0.0) * r_pos_neg, min=0.0)
    else:
        risk = prior_t * r_pos + torch.clamp(r_unl_neg - prior_t * r_pos_neg, min=0.0)
    if a is None:
        return risk
    ce_known = -(t * logp).sum(1)  # (B, H, W): full supervision inside the regions
    ce_known = (ce_known * k).sum() / k.sum().clamp_min(1e-6)
    return a * ce_known + (1.0 - a) * risk
