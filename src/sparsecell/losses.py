"""Losses for training from sparse point annotations.

All losses share one interface, :class:`DetectionLoss`: called with the model's
``logits`` (B, C+1, H, W), node ``embedding`` (B, D, h, w), the sparse target
heatmap ``target`` (B, C+1, H, W) and the labelled grid nodes ``labelled``
(B, C, h, w) bool, they return a dict with the total ``loss`` and its parts
(detached, for logging). Every loss is vectorised over the batch with masks: no
Python loop over images and no host-device synchronisation.

The pixel loss of all of them is a weighted soft cross-entropy::

    L = mean_p  sum_c  E_c(p) * ( -G_c(p) * log clip(P_c(p), 1e-10, 1) )

and they differ in the weight E:

- ``ce``: E = 1 (the paper's "full supervision on sparse labels" baseline);
- ``const``: E = w on unlabelled nodes, 1 on labelled ones (the control);
- ``sel``: E = the semantic energy (Xu et al., BIBM 2023);
- ``sel_sfl``: SEL plus the stretched feature loss (the paper's method).

- ``teacher``: background weight ``1 - (1 - floor) * q`` on unlabelled nodes, with ``q``
  the foreground probability that a slowly updated (EMA) copy of the model gives
  the pixel (sparsecell's variant: don't punish cells the model already finds).

``pu`` (a peer for missing annotations) replaces the weighting by a non-negative
positive-unlabelled risk estimate instead.

``sel_pu`` (sparsecell's variant) is ``pu`` whose unlabelled pixels are weighted by the
semantic energy, plus SFL: the prior correction of PU and the semantic down-weighting
of SEL, the energy learned by the same gradients as in the paper.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

__all__ = [
    "semantic_energy",
    "energy_map",
    "weighted_cross_entropy",
    "stretched_feature_loss",
    "pu_risk",
    "DetectionLoss",
    "LOSSES",
    "DEFAULT_LOSS",
]

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
    keep: float = 0.25,
    unl_weight: torch.Tensor | None = None,
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
    as the annotated fraction divided by ``keep`` (the expected share of cells that
    were annotated).

    ``unl_weight`` (B, H, W), if given, weights each unlabelled pixel within
    ``R_u`` (a weighted mean: its normaliser is detached, so gradients reach the
    weights only through the loss values they multiply).
    """
    logp = _log_probs(logits)
    t = target.float()
    wpos = (1.0 - t[:, 0]).clamp(0.0, 1.0)  # (B, H, W)
    wunl = 1.0 - wpos
    cls = t[:, 1:] / t[:, 1:].sum(1, keepdim=True).clamp_min(1e-6)  # class distribution at positives
    l_pos = -(cls * logp[:, 1:]).sum(1)
    l_neg = -logp[:, 0]
    np_ = wpos.sum().clamp_min(1e-6)
    if unl_weight is not None:
        wunl = wunl * unl_weight.float()
    nu = wunl.detach().sum().clamp_min(1e-6)
    if prior is None:
        prior_t = (wpos.mean() / keep).clamp(1e-4, 0.5)
    else:
        prior_t = torch.tensor(float(prior), device=logits.device)
    r_pos = (wpos * l_pos).sum() / np_
    r_pos_neg = (wpos * l_neg).sum() / np_
    r_unl_neg = (wunl * l_neg).sum() / nu
    return prior_t * r_pos + torch.clamp(r_unl_neg - prior_t * r_pos_neg, min=0.0)


#: sparsecell's default sparse method: the one with the best mean validation F1 in
#: the 3-seed evidence run on CRCHisto and BCData (see the README); the paper's
#: SEL+SFL stays available as ``sel_sfl``.
DEFAULT_LOSS = "pu"

#: The losses by name; ``role`` says which are baselines and which are ours.
LOSSES = {
    "ce": "baseline",
    "const": "baseline",
    "pu": "baseline",
    "sel": "ours",
    "sel_sfl": "ours",
    "sel_pu": "ours",
    "teacher": "ours",
}


@dataclass
class DetectionLoss:
    """One loss of the family above, by name, with its settings.

    Parameters
    ----------
    name : {"ce", "const", "pu", "sel", "sel_sfl", "sel_pu", "teacher"}
    lambda1, lambda2 : float
        Weights of SEL (or of the weighted CE) and of SFL (paper: 2.0 and 0.05).
    margin : float
        SFL margin m (paper: 10).
    sfl_warmup_steps : int
        Ramp lambda2 linearly from 0 over this many steps (0 = off, the paper).
    detach_energy : bool
        Stop gradients through the energy (paper: not detached).
    const_weight : float
        The weight of unlabelled nodes for ``const``.
    energy_upsample : {"bilinear", "nearest"}
    pu_prior, pu_keep : see :func:`pu_risk`; ``pu_keep`` None means 0.25 here, and
        in training the simulated keep ratio (``data.keep``).
    teacher_decay, teacher_warmup_steps, teacher_floor : for ``teacher``: the EMA
        decay of the teacher's weights, the steps of plain cross-entropy before its
        weight applies, and the background weight where the teacher is sure of a cell.
    """

    name: str = DEFAULT_LOSS
    lambda1: float = 2.0
    lambda2: float = 0.05
    margin: float = 10.0
    sfl_warmup_steps: int = 0
    detach_energy: bool = False
    const_weight: float = 0.4
    energy_upsample: str = "bilinear"
    pu_prior: float | None = None
    pu_keep: float | None = None
    teacher_decay: float = 0.99
    teacher_warmup_steps: int = 100
    teacher_floor: float = 0.0

    def __post_init__(self) -> None:
        if self.name not in LOSSES:
            raise ValueError(f"unknown loss {self.name!r}; choose one of {sorted(LOSSES)}")
        if self.energy_upsample not in ("bilinear", "nearest"):
            raise ValueError(f"energy_upsample must be 'bilinear' or 'nearest', got {self.energy_upsample!r}")

    @property
    def needs_teacher(self) -> bool:
        return self.name == "teacher"

    @property
    def uses_embedding(self) -> bool:
        return self.name in ("sel", "sel_sfl", "sel_pu")

    @property
    def uses_pu(self) -> bool:
        return self.name in ("pu", "sel_pu")

    def _energy(self, embedding: torch.Tensor, labelled: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        """SEL's pixel weights E (B, C+1, H, W) from the node embeddings (detached if asked)."""
        e = semantic_energy(embedding, labelled)
        if self.detach_energy:
            e = e.detach()
        return energy_map(e, size, self.energy_upsample)

    def _sfl(self, embedding: torch.Tensor, labelled: torch.Tensor, step: int | None, out: dict) -> torch.Tensor:
        """lambda2 * SFL (with the optional warm-up); records ``sfl`` in ``out``."""
        sfl = stretched_feature_loss(embedding, labelled, self.margin)
        lam2 = self.lambda2
        if self.sfl_warmup_steps > 0 and step is not None:
            lam2 = lam2 * min(1.0, step / self.sfl_warmup_steps)
        out["sfl"] = sfl.detach()
        return lam2 * sfl

    def weights(self, embedding: torch.Tensor, labelled: torch.Tensor, size: tuple[int, int],
                teacher_fg: torch.Tensor | None = None) -> torch.Tensor | None:
        """Pixel weights E (B, C+1, H, W), or None for plain cross-entropy."""
        if self.name in ("ce", "pu") or (self.name == "teacher" and teacher_fg is None):
            return None
        if self.name == "teacher":
            B, C, h, w = labelled.shape
            lab = F.interpolate(labelled.any(1, keepdim=True).float(), size=size, mode="nearest")  # (B, 1, H, W)
            bg = torch.where(lab > 0, 1.0, 1.0 - (1.0 - self.teacher_floor) * teacher_fg.float().unsqueeze(1))
            return torch.cat([bg, torch.ones(B, C, *size, device=bg.device)], dim=1)
        if self.name == "const":
            B, C, h, w = labelled.shape
            any_lab = labelled.any(1, keepdim=True)  # (B, 1, h, w)
            e = torch.where(any_lab, 1.0, self.const_weight).to(torch.float32).expand(B, C, h, w)
            return energy_map(e, size, self.energy_upsample)
        return self._energy(embedding, labelled, size)

    def __call__(
        self,
        logits: torch.Tensor,
        embedding: torch.Tensor,
        target: torch.Tensor,
        labelled: torch.Tensor,
        step: int | None = None,
        teacher_fg: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        if self.uses_pu:
            keep = 0.25 if self.pu_keep is None else self.pu_keep
            if self.name == "pu":
                pixel = pu_risk(logits, target, self.pu_prior, keep)
                return {"loss": self.lambda1 * pixel, "pixel": pixel.detach()}
            E = self._energy(embedding, labelled, tuple(logits.shape[-2:]))[:, 0]  # background weight (B, H, W)
            pixel = pu_risk(logits, target, self.pu_prior, keep, unl_weight=E)
            out = {"pixel": pixel.detach(), "energy_mean": E.detach().mean()}
            out["loss"] = self.lambda1 * pixel + self._sfl(embedding, labelled, step, out)
            return out
        if self.needs_teacher and step is not None and step < self.teacher_warmup_steps:
            teacher_fg = None
        E = self.weights(embedding, labelled, tuple(logits.shape[-2:]), teacher_fg)
        pixel = weighted_cross_entropy(logits, target, E)
        loss = self.lambda1 * pixel
        out = {"pixel": pixel.detach()}
        if self.name == "sel_sfl":
            loss = loss + self._sfl(embedding, labelled, step, out)
        if E is not None and self.uses_embedding:
            out["energy_mean"] = E[:, 0].detach().mean()
        out["loss"] = loss
        return out
