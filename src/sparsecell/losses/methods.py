"""The losses, one class each (see :mod:`sparsecell.losses` for the family and
:data:`LOSS_CLASSES` for the names).

Each is a :class:`torch.nn.Module` built from the ``loss`` and ``data`` config
sections; the training module calls it every step, and calls :meth:`SparseLoss.bind`
once with the model and :meth:`SparseLoss.after_step` after every optimiser step
(the EMA teacher keeps its copy of the model there, so its weights live in the loss
and travel with the checkpoint). Every loss's ``forward`` takes one
:class:`~sparsecell.losses.batch.LossBatch` and reads the fields it needs.
"""

from __future__ import annotations

import copy
from typing import ClassVar

import torch
import torch.nn.functional as F

from .batch import LossBatch
from .functional import energy_map, pixel_energy, pu_risk, stretched_feature_loss, weighted_cross_entropy
from .prior import annotated_share

__all__ = ["LossBatch", "SparseLoss", "CrossEntropy", "ConstantWeight", "SemanticEnergy", "SemanticEnergySFL", "SemanticEnergyPerClass",
           "SemanticEnergySFLPerClass", "EMATeacher", "PositiveUnlabelled", "SemanticEnergyPU", "PseudoLabelPU", "LOSS_CLASSES"]  # fmt: skip


class SparseLoss(torch.nn.Module):
    """What every loss shares: its settings, the SEL energy and SFL pieces, the hooks."""

    name: ClassVar[str] = ""
    uses_embedding: ClassVar[bool] = False  # reads the node embedding (the energy, SFL)
    per_class_energy: ClassVar[bool] = True  # with several classes: an energy per class (False: the paper's one energy)
    pseudo_labels: ClassVar[bool] = False  # trains on pseudo-labels (sparsecell.training.pseudo) as well as the clicks
    click_weights: ClassVar[bool] = False  # weights each click by its inverse click propensity (losses.prior.click_weights)

    def __init__(self, cfg, data, keep_estimate: float | None = None) -> None:
        super().__init__()
        self.cfg = cfg

    def bind(self, model: torch.nn.Module) -> None:
        """Called once with the model being trained."""

    def after_step(self, model: torch.nn.Module) -> None:
        """Called after every optimiser step."""

    def forward(self, batch: LossBatch) -> dict[str, torch.Tensor]:
        """The loss on one training batch.

        Parameters
        ----------
        batch : LossBatch
            The logits, target and whatever else the step has (see its fields).

        Returns
        -------
        dict of str to torch.Tensor
            ``loss``, the total, and its parts (detached, for logging).
        """
        raise NotImplementedError

    def energy(self, embedding: torch.Tensor, labelled: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        """SEL's pixel weights E (B, C+1, H, W) from the node embeddings (detached if asked)."""
        return pixel_energy(embedding, labelled, size, self.per_class_energy, self.cfg.energy_upsample, self.cfg.detach_energy)

    def sfl(self, embedding: torch.Tensor, labelled: torch.Tensor, step: int | None, out: dict) -> torch.Tensor:
        """lambda2 * SFL (with the optional warm-up); records ``sfl`` in ``out``."""
        sfl = stretched_feature_loss(embedding, labelled, self.cfg.margin)
        lam2 = self.cfg.lambda2
        if self.cfg.sfl_warmup_steps > 0 and step is not None:
            lam2 = lam2 * min(1.0, step / self.cfg.sfl_warmup_steps)
        out["sfl"] = sfl.detach()
        return lam2 * sfl


# ---------------------------------------------------------------------------------------
# The weighting family: lambda1 * weighted cross-entropy (+ SFL)
# ---------------------------------------------------------------------------------------
class CrossEntropy(SparseLoss):
    """``ce``: plain soft cross-entropy on the sparse targets (E = 1)."""

    name = "ce"
    with_sfl: ClassVar[bool] = False

    def weights(self, batch: LossBatch) -> torch.Tensor | None:
        """Pixel weights E (B, C+1, H, W) on ``batch``'s pixel grid, or None for plain
        cross-entropy."""
        return None

    def region_weights(self, E: torch.Tensor | None, known: torch.Tensor, channels: int) -> torch.Tensor:
        """Weights with the annotated regions known: 1 inside them (full supervision),
        the method's weights outside; plain ``ce``, which has no sparse-label weighting,
        does not train the background outside them."""
        k = known.float().unsqueeze(1)  # (B, 1, H, W)
        if E is None:
            E = torch.ones(k.shape[0], channels, *k.shape[-2:], device=k.device)
            E[:, 0] = 0.0
        return k + (1.0 - k) * E

    def forward(self, batch: LossBatch) -> dict[str, torch.Tensor]:
        E = self.weights(batch)
        if batch.known is not None:
            E = self.region_weights(E, batch.known, batch.target.shape[1])
        pixel = weighted_cross_entropy(batch.logits, batch.target, E)
        loss = self.cfg.lambda1 * pixel
        out = {"pixel": pixel.detach()}
        if self.with_sfl:
            loss = loss + self.sfl(batch.embedding, batch.labelled, batch.step, out)
        if E is not None and self.uses_embedding:
            out["energy_mean"] = E[:, 0].detach().mean()
        out["loss"] = loss
        return out


class ConstantWeight(CrossEntropy):
    """``const``: weight ``const_weight`` on unlabelled nodes, 1 on labelled ones."""

    name = "const"

    def weights(self, batch):
        B, C, h, w = batch.labelled.shape
        any_lab = batch.labelled.any(1, keepdim=True)  # (B, 1, h, w)
        e = torch.where(any_lab, 1.0, self.cfg.const_weight).to(torch.float32).expand(B, C, h, w)
        return energy_map(e, batch.size, self.cfg.energy_upsample)


class SemanticEnergy(CrossEntropy):
    """``sel``: the semantic energy as the weight (Xu et al., BIBM 2023), the paper's
    formulation: one energy against all labelled nodes, whatever their class."""

    name = "sel"
    uses_embedding = True
    per_class_energy = False

    def weights(self, batch):
        return self.energy(batch.embedding, batch.labelled, batch.size)


class SemanticEnergySFL(SemanticEnergy):
    """``sel_sfl``: SEL plus the stretched feature loss (the paper's method)."""

    name = "sel_sfl"
    with_sfl = True


class SemanticEnergyPerClass(SemanticEnergy):
    """``sel_pc``: SEL with an energy per class (sparsecell's multi-class variant: class
    channel c weighted by the energy against class c's labelled nodes, background by
    the smallest class energy). Equal to ``sel`` with one class."""

    name = "sel_pc"
    per_class_energy = True


class SemanticEnergySFLPerClass(SemanticEnergyPerClass):
    """``sel_sfl_pc``: the per-class SEL plus SFL."""

    name = "sel_sfl_pc"
    with_sfl = True


class EMATeacher(CrossEntropy):
    """``teacher``: background weight ``1 - (1 - teacher_floor) * q`` on unlabelled
    nodes, ``q`` the foreground probability of an EMA copy of the model (decay
    ``teacher_decay``), spread over a cell's extent (max-pooled over
    ``2 round(data.sigma) + 1`` px); plain cross-entropy for the first
    ``teacher_warmup_steps`` steps."""

    name = "teacher"

    def __init__(self, cfg, data, keep_estimate=None) -> None:
        super().__init__(cfg, data, keep_estimate)
        self.pool = 2 * int(round(data.sigma)) + 1
        self.teacher: torch.nn.Module | None = None

    def bind(self, model):
        self.teacher = copy.deepcopy(model).requires_grad_(False)  # never trained directly

    def after_step(self, model):
        d = self.cfg.teacher_decay
        with torch.no_grad():
            for pt, ps in zip(self.teacher.parameters(), model.parameters()):
                pt.lerp_(ps.detach(), 1.0 - d)
            for bt, bs in zip(self.teacher.buffers(), model.buffers()):
                bt.copy_(bs)

    def foreground(self, images: torch.Tensor) -> torch.Tensor:
        """The teacher's foreground probability (B, H, W), spread over a cell's extent."""
        with torch.no_grad():
            self.teacher.eval()
            p = torch.softmax(self.teacher(images).logits.float(), dim=1)
            fg = 1.0 - p[:, :1]
            return F.max_pool2d(fg, self.pool, stride=1, padding=self.pool // 2)[:, 0]

    def weights(self, batch):
        step = batch.step
        if self.teacher is None or batch.images is None or (step is not None and step < self.cfg.teacher_warmup_steps):
            return None
        return self.weight_from(self.foreground(batch.images), batch.labelled, batch.size)

    def weight_from(self, fg: torch.Tensor, labelled: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        """The weights (B, C+1, H, W) given the teacher's foreground probability ``fg`` (B, H, W)."""
        B, C, h, w = labelled.shape
        lab = F.interpolate(labelled.any(1, keepdim=True).float(), size=size, mode="nearest")  # (B, 1, H, W)
        bg = torch.where(lab > 0, 1.0, 1.0 - (1.0 - self.cfg.teacher_floor) * fg.float().unsqueeze(1))
        return torch.cat([bg, torch.ones(B, C, *size, device=bg.device)], dim=1)


# ---------------------------------------------------------------------------------------
# The positive-unlabelled family: lambda1 * nnPU risk (+ SFL)
# ---------------------------------------------------------------------------------------
class PositiveUnlabelled(SparseLoss):
    """``pu``: the non-negative PU risk (:func:`~sparsecell.losses.functional.pu_risk`);
    the prior is ``pu_prior``, or estimated per batch from the annotated share
    (:func:`~sparsecell.losses.prior.annotated_share`: the user's ``pu_keep`` or the share
    estimated from the data)."""

    name = "pu"

    def __init__(self, cfg, data, keep_estimate=None) -> None:
        super().__init__(cfg, data, keep_estimate)
        self.keep = None if cfg.pu_prior is not None else annotated_share(cfg, data, keep_estimate)

    def forward(self, batch: LossBatch) -> dict[str, torch.Tensor]:
        pixel = pu_risk(batch.logits, batch.target, self.cfg.pu_prior, self.keep, known=batch.known)
        return {"loss": self.cfg.lambda1 * pixel, "pixel": pixel.detach()}


class SalienceCorrectedPU(PositiveUnlabelled):
    """``pu_sar`` (sparsecell's method): the PU risk with each click weighted by how
    unlikely the annotator was to click a cell like it.

    Real annotators click the conspicuous (dark) cells first, so the clicks are not a
    random sample of the cells, which the PU risk assumes: it then learns what the
    clicked cells look like and leaves the faint ones as background. The algorithm:

    1. Before training, the conspicuity of every click and of every cell of the
       completely annotated validation images is measured
       (:func:`sparsecell.training.targets.conspicuity`, the optical density around it).
    2. Each click gets the weight ``p(z | cell) / p(z | clicked)`` of its conspicuity
       ``z``, per class (:func:`sparsecell.losses.prior.click_weights`): the inverse of
       the click propensity, up to a constant. A click inside a known completely
       annotated region (``data.regions_known``) weighs 1 and is left out of the
       estimate: every cell there was clicked, none for how it looks.
    3. The PU risk's positive part is the weighted mean over the clicked pixels
       (:func:`~sparsecell.losses.functional.pu_risk`'s ``pos_weight``); the prior and the
       rest are ``pu``'s.

    Under random clicks the weights are about 1 (noisily, with a few hundred clicks)
    and this is ``pu``. Two options were measured and are off by default, since they
    did not raise validation F1 (README, "Clicks as users make them"):
    ``loss.sar_reference: image`` takes ``z`` relative to the cell's own image (its
    quantile among the image's tissue pixels), against scan and stain shifts between
    images; ``loss.sar_shrink`` pulls each class's weights towards 1 by the evidence
    that its clicks are biased at all (a positive-part James-Stein factor from a
    chi-square test). Both together are ``pu_sar_shrunk`` in the benchmark.
    """

    name = "pu_sar"
    click_weights: ClassVar[bool] = True

    def forward(self, batch: LossBatch) -> dict[str, torch.Tensor]:
        pixel = pu_risk(batch.logits, batch.target, self.cfg.pu_prior, self.keep, known=batch.known, pos_weight=batch.weight)
        return {"loss": self.cfg.lambda1 * pixel, "pixel": pixel.detach()}


class SemanticEnergyPU(PositiveUnlabelled):
    """``sel_pu``: the PU risk with each unlabelled pixel weighted by its semantic
    energy (background channel), plus SFL."""

    name = "sel_pu"
    uses_embedding = True

    def forward(self, batch: LossBatch) -> dict[str, torch.Tensor]:
        E = self.energy(batch.embedding, batch.labelled, batch.size)[:, 0]  # background weight (B, H, W)
        pixel = pu_risk(batch.logits, batch.target, self.cfg.pu_prior, self.keep, unl_weight=E, known=batch.known)
        out = {"pixel": pixel.detach(), "energy_mean": E.detach().mean()}
        out["loss"] = self.cfg.lambda1 * pixel + self.sfl(batch.embedding, batch.labelled, batch.step, out)
        return out


class PseudoLabelPU(PositiveUnlabelled):
    """``pu_pseudo`` (sparsecell's method): the PU risk with progressive pseudo-labels.

    The algorithm:

    1. Train with the PU risk on the clicks (prior from the clicks and the annotated
       share, estimated from the data unless given), until ``pseudo_start`` of the
       epochs have passed.
    2. After each validation from then on, a round of :class:`sparsecell.training.pseudo.PseudoLabeller`:
       the threshold whose validation precision reaches ``pseudo_precision`` (easy
       cells first), the model's peaks above it on the whole training images away from
       the clicks, kept when the previous round found them too.
    3. The next epochs' risk counts the pseudo-labelled cells as positives beside the
       clicks and takes them out of the unlabelled set; the prior still comes from the
       clicks alone. The risk keeps ``pu``'s case-control form, so before the first
       round this is ``pu`` exactly; ``pseudo_censoring`` switches to the censoring form
       (:func:`~sparsecell.losses.functional.pu_risk` with ``censoring=True``), which
       lowered validation F1 on BCData at keep 0.1 (two of three seeds, by 0.10 and
       0.13, with no pseudo-label in use yet) and is off by default.

    Defaults (``loss.pseudo_*``): precision 0.7, first round after a quarter of the
    epochs, no two-round stability check, no re-estimated share. A first version
    (precision 0.8, two rounds in a row, censoring form: ``pu_pseudo_v1`` in the
    benchmark) found a precise enough threshold in few validations and so never
    labelled a cell in 20 epochs.
    """

    name = "pu_pseudo"
    pseudo_labels: ClassVar[bool] = True

    def forward(self, batch: LossBatch) -> dict[str, torch.Tensor]:
        pseudo = batch.pseudo
        pixel = pu_risk(batch.logits, batch.target, self.cfg.pu_prior, self.keep, known=batch.known, positive=pseudo,
                        censoring=self.cfg.pseudo_censoring)  # fmt: skip
        out = {"loss": self.cfg.lambda1 * pixel, "pixel": pixel.detach()}
        if pseudo is not None:
            out["pseudo_share"] = (1.0 - pseudo[:, 0].float()).mean().detach()
        return out


#: The losses by name (their roles: :data:`sparsecell.catalogue.ROLES`).
LOSS_CLASSES: dict[str, type[SparseLoss]] = {
    c.name: c
    for c in (CrossEntropy, ConstantWeight, SemanticEnergy, SemanticEnergySFL, SemanticEnergyPerClass, SemanticEnergySFLPerClass,
              EMATeacher, PositiveUnlabelled, SemanticEnergyPU, PseudoLabelPU, SalienceCorrectedPU)
}
