import math

import pytest
import torch

from sparsecell.losses.reference import sel_loop, sfl_loop
from sparsecell.config import DataConfig, LossConfig
from sparsecell.catalogue import ROLES
from sparsecell.losses import LossBatch, build_loss
from sparsecell.losses.functional import semantic_energy, stretched_feature_loss, weighted_cross_entropy


def make_loss(name, **settings):
    return build_loss(LossConfig(name=name, **settings), DataConfig(), keep_estimate=0.25)


def _batch(logits, emb, target, lab, **extras):
    """The loss's input record: logits, embedding, target, labelled nodes and any extras (step, known, ...)."""
    return LossBatch(logits, emb, target, lab, **extras)


def _inputs(B, C, h, w, D=6, s=4, pattern="random", seed=0):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(B, C + 1, h * s, w * s, generator=g, requires_grad=True)
    emb = torch.randn(B, D, h, w, generator=g, requires_grad=True)
    target = torch.rand(B, C + 1, h * s, w * s, generator=g)
    if pattern == "random":
        lab = torch.rand(B, C, h, w, generator=g) < 0.2
        lab[0] = False  # one image without labels
    elif pattern == "none":
        lab = torch.zeros(B, C, h, w, dtype=torch.bool)
    elif pattern == "one":
        lab = torch.zeros(B, C, h, w, dtype=torch.bool)
        lab[:, 0, 1, 1] = True
    elif pattern == "all":
        lab = torch.ones(B, C, h, w, dtype=torch.bool)
    return logits, emb, target, lab


def _sel(logits, emb, target, lab):
    """SEL with an energy per class: what the loop transcription computes for C > 1 (equal to ``sel`` for C = 1)."""
    return make_loss("sel_pc", lambda1=1.0)(_batch(logits, emb, target, lab))["loss"]


@pytest.mark.parametrize("B,C,h,w", [(1, 1, 3, 3), (2, 1, 4, 5), (3, 2, 3, 4)])
@pytest.mark.parametrize("pattern", ["random", "none", "one", "all"])
def test_sel_equals_loop_transcription_values_and_gradients(B, C, h, w, pattern):
    logits, emb, target, lab = _inputs(B, C, h, w, pattern=pattern)
    ours = _sel(logits, emb, target, lab)
    g_ours = torch.autograd.grad(ours, [logits, emb], allow_unused=True)
    ref = sel_loop(logits, emb, target, lab)
    g_ref = torch.autograd.grad(ref, [logits, emb], allow_unused=True)
    assert ours.item() == pytest.approx(ref.item(), rel=1e-5, abs=1e-6)
    for a, b in zip(g_ours, g_ref):
        if b is None:  # the reference has no path into the embedding when no energy varies
            assert a is None or torch.allclose(a, torch.zeros_like(a))
        else:
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("B,h,w", [(1, 3, 3), (2, 4, 5), (4, 2, 6)])
@pytest.mark.parametrize("pattern", ["random", "none", "one", "all"])
@pytest.mark.parametrize("margin", [10.0, 2.0])
def test_sfl_equals_loop_transcription_values_and_gradients(B, h, w, pattern, margin):
    _, emb, _, lab = _inputs(B, 2, h, w, pattern=pattern)
    ours = stretched_feature_loss(emb, lab, margin)
    ref = sfl_loop(emb, lab, margin)
    assert ours.item() == pytest.approx(float(ref.detach()), rel=1e-5, abs=1e-6)
    if ref.requires_grad:
        (g1,) = torch.autograd.grad(ours, emb)
        (g2,) = torch.autograd.grad(ref, emb)
        torch.testing.assert_close(g1, g2, rtol=1e-4, atol=1e-5)
    else:
        assert ours.item() == 0.0


def test_single_class_energy_is_papers_formula():
    emb = torch.randn(1, 5, 2, 3)
    lab = torch.zeros(1, 1, 2, 3, dtype=torch.bool)
    lab[0, 0, 0, 0] = lab[0, 0, 1, 2] = True
    e = semantic_energy(emb, lab)[0, 0]
    f = emb[0].flatten(1).T
    A = [0, 5]
    for i in range(6):
        want = 1.0 if i in A else 1 - sum((1 + torch.cosine_similarity(f[i], f[j], 0)) / 2 for j in A) / 2
        assert e.flatten()[i].item() == pytest.approx(float(want), abs=1e-6)


def test_gradients_flow_into_embedding_through_energy():
    logits, emb, target, lab = _inputs(2, 1, 4, 4, pattern="one")
    loss = _sel(logits, emb, target, lab)
    (g,) = torch.autograd.grad(loss, emb)
    assert g.abs().sum() > 0
    # detached energy: no gradient into the embedding from SEL
    loss = make_loss("sel", detach_energy=True)(_batch(logits, emb, target, lab))["loss"]
    (g,) = torch.autograd.grad(loss, emb, allow_unused=True)
    assert g is None or g.abs().sum() == 0


@pytest.mark.parametrize("pattern", ["none", "one", "all"])
@pytest.mark.parametrize("name", ["ce", "const", "pu", "sel", "sel_sfl", "sel_pu"])
def test_no_nan_for_edge_label_patterns_and_zero_embeddings(name, pattern):
    logits, emb, target, lab = _inputs(2, 2, 3, 3, pattern=pattern)
    zero = torch.zeros_like(emb, requires_grad=True)
    for e in (emb, zero):
        out = make_loss(name)(_batch(logits, e, target, lab))
        loss = out["loss"]
        assert torch.isfinite(loss)
        grads = torch.autograd.grad(loss, [logits, e], allow_unused=True)
        for g in grads:
            assert g is None or torch.isfinite(g).all()


def test_collapsed_embeddings_give_finite_sfl_gradient():
    emb = torch.ones(1, 4, 3, 3, requires_grad=True)
    lab = torch.zeros(1, 1, 3, 3, dtype=torch.bool)
    lab[0, 0, 0, 0] = True
    loss = stretched_feature_loss(emb, lab)
    (g,) = torch.autograd.grad(loss, emb)
    assert torch.isfinite(loss) and torch.isfinite(g).all()
    assert loss.item() == pytest.approx(1 / 9 * math.exp(10), rel=1e-4)


@pytest.mark.parametrize("name", ["ce", "const", "sel", "sel_sfl", "pu", "sel_pu"])
def test_bf16_autocast_is_finite(name):
    logits, emb, target, lab = _inputs(2, 1, 4, 4)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = make_loss(name)(_batch(logits.bfloat16(), emb.bfloat16(), target, lab))["loss"]
    assert loss.dtype == torch.float32 and torch.isfinite(loss)


def test_ce_and_const_weights():
    logits, emb, target, lab = _inputs(2, 1, 4, 4, pattern="one")
    ce = make_loss("ce", lambda1=1.0)(_batch(logits, emb, target, lab))["loss"]
    assert ce.item() == pytest.approx(weighted_cross_entropy(logits, target).item())
    # const weight 1.0 is plain CE; a smaller weight lowers the loss
    c1 = make_loss("const", lambda1=1.0, const_weight=1.0)(_batch(logits, emb, target, lab))["loss"]
    c4 = make_loss("const", lambda1=1.0, const_weight=0.4)(_batch(logits, emb, target, lab))["loss"]
    assert c1.item() == pytest.approx(ce.item(), rel=1e-6)
    assert c4.item() < ce.item()


def test_sel_sfl_total_is_lambda_combination_and_warmup():
    logits, emb, target, lab = _inputs(2, 1, 4, 4)
    out = make_loss("sel_sfl", lambda1=2.0, lambda2=0.05)(_batch(logits, emb, target, lab))
    assert out["loss"].item() == pytest.approx(2.0 * out["pixel"].item() + 0.05 * out["sfl"].item(), rel=1e-6)
    warm = make_loss("sel_sfl", sfl_warmup_steps=100)(_batch(logits, emb, target, lab, step=25))
    assert warm["loss"].item() == pytest.approx(2.0 * out["pixel"].item() + 0.05 * 0.25 * out["sfl"].item(), rel=1e-6)


def test_unknown_loss_name_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown method 'foo'"):
        LossConfig(name="foo")


def test_per_image_matrix_transcription_agrees_too():
    from sparsecell.losses.reference import sel_sfl_per_image

    logits, emb, target, lab = _inputs(3, 1, 4, 4)
    ours = make_loss("sel_sfl")(_batch(logits, emb, target, lab))["loss"]
    ref = sel_sfl_per_image(logits, emb, target, lab)
    assert ours.item() == pytest.approx(ref.item(), rel=1e-5)


@pytest.mark.parametrize("mode", ["bilinear", "nearest"])
@pytest.mark.parametrize("hw,size", [((3, 4), (12, 16)), ((5, 5), (160, 160)), ((2, 3), (7, 11))])
def test_energy_map_equals_interpolate(mode, hw, size):
    from sparsecell.losses.functional import energy_map

    e = torch.rand(2, 2, *hw)
    full = torch.cat([e.amin(1, keepdim=True), e], 1)
    kw = {"align_corners": False} if mode == "bilinear" else {}
    want = torch.nn.functional.interpolate(full, size=size, mode=mode, **kw)
    torch.testing.assert_close(energy_map(e, size, mode), want, rtol=1e-5, atol=1e-6)


def test_teacher_weight_spares_cells_the_teacher_finds():
    logits, emb, target, lab = _inputs(1, 1, 2, 2, s=4, pattern="one")  # node (1, 1) labelled
    q = torch.zeros(1, 8, 8)
    q[0, :4, :4] = 1.0  # teacher sure of a cell in node (0, 0), unlabelled
    q[0, 4:, 4:] = 1.0  # and in node (1, 1), which is labelled
    loss = make_loss("teacher", teacher_floor=0.0, teacher_warmup_steps=0)
    E = loss.weight_from(q, lab, (8, 8))
    assert torch.all(E[0, 0, :4, :4] == 0.0)  # background ignored where the teacher finds a cell
    assert torch.all(E[0, 0, 4:, 4:] == 1.0)  # labelled node: full weight
    assert torch.all(E[0, 0, :4, 4:] == 1.0)  # teacher finds nothing: full weight
    assert torch.all(E[0, 1:] == 1.0)  # class channels untouched
    # during warm-up the loss is plain cross-entropy
    teacher = make_loss("teacher", lambda1=1.0, teacher_warmup_steps=10)
    teacher.bind(_ConstantModel(q))
    images = torch.zeros(1, 3, 8, 8)
    warm = teacher(_batch(logits, emb, target, lab, step=3, images=images))
    assert warm["loss"].item() == pytest.approx(weighted_cross_entropy(logits, target).item())
    # after it, the teacher's foreground (from its own forward pass) sets the weights
    after = teacher(_batch(logits, emb, target, lab, step=10, images=images))
    E = loss.weight_from(teacher.foreground(images), lab, (8, 8))
    assert after["loss"].item() == pytest.approx(weighted_cross_entropy(logits, target, E).item(), rel=1e-6)
    assert after["loss"].item() != pytest.approx(warm["loss"].item())


class _ConstantModel(torch.nn.Module):
    """A 'model' whose foreground probability is ``q`` (B, H, W) whatever the input."""

    def __init__(self, q):
        super().__init__()
        self.register_buffer("q", q)
        self.w = torch.nn.Parameter(torch.zeros(()))

    def forward(self, x):
        from types import SimpleNamespace

        fg = self.q.clamp(1e-4, 1 - 1e-4)
        logits = torch.stack([torch.log1p(-fg), torch.log(fg)], 1) + self.w
        return SimpleNamespace(logits=logits)


def test_teacher_is_an_ema_of_the_model():
    student = torch.nn.Linear(2, 2)
    loss = make_loss("teacher", teacher_decay=0.75)
    loss.bind(student)
    before = loss.teacher.weight.detach().clone()
    with torch.no_grad():
        student.weight.add_(1.0)
    loss.after_step(student)
    torch.testing.assert_close(loss.teacher.weight, 0.75 * before + 0.25 * student.weight.detach())
    assert not loss.teacher.weight.requires_grad


def test_every_named_loss_has_a_class_and_a_role():
    from sparsecell.losses.methods import LOSS_CLASSES

    assert set(LOSS_CLASSES) == set(ROLES)
    assert all(ROLES[n] in ("baseline", "ours") for n in ROLES)


def test_pu_keep_is_the_users_then_the_estimate_then_the_fallback_never_the_simulated_share():
    from sparsecell.losses import FALLBACK_KEEP, annotated_share, needs_share

    assert annotated_share(LossConfig(name="pu", pu_keep=0.3), DataConfig(keep=0.1), estimate=0.2) == 0.3
    assert annotated_share(LossConfig(name="pu"), DataConfig(keep=0.1), estimate=0.2) == 0.2
    assert annotated_share(LossConfig(name="pu", pu_keep="auto"), DataConfig(keep=0.1), estimate=0.2) == 0.2
    with pytest.warns(UserWarning, match="assuming 25%"):  # nothing to estimate from: the fallback, not data.keep
        assert annotated_share(LossConfig(name="pu"), DataConfig(keep=0.1)) == FALLBACK_KEEP
    assert build_loss(LossConfig(name="pu"), DataConfig(keep=0.1), keep_estimate=0.15).keep == 0.15
    assert needs_share(LossConfig(name="pu")) and needs_share(LossConfig(name="pu_pseudo"))
    assert not needs_share(LossConfig(name="pu", pu_keep=0.3)) and not needs_share(LossConfig(name="pu", pu_prior=0.1))
    assert not needs_share(LossConfig(name="ce"))


def test_pu_risk_unlabelled_weights():
    from sparsecell.losses.functional import pu_risk

    logits, emb, target, lab = _inputs(2, 1, 4, 4, pattern="one")
    base = pu_risk(logits, target, prior=0.1)
    ones = pu_risk(logits, target, prior=0.1, unl_weight=torch.ones(2, 16, 16))
    assert ones.item() == pytest.approx(base.item(), rel=1e-6)
    # a constant weight is a weighted mean: no change either
    half = pu_risk(logits, target, prior=0.1, unl_weight=torch.full((2, 16, 16), 0.5))
    assert half.item() == pytest.approx(base.item(), rel=1e-6)
    # zero weight on image 1 = dropping its unlabelled pixels from R_u (by hand)
    w = torch.ones(2, 16, 16)
    w[1] = 0.0
    got = pu_risk(logits, target, prior=0.1, unl_weight=w)
    logp = torch.log_softmax(logits.float(), 1).clamp_min(math.log(1e-10))
    wpos = 1.0 - target[:, 0]
    r_pos = (wpos * -logp[:, 1]).sum() / wpos.sum()
    r_pos_neg = (wpos * -logp[:, 0]).sum() / wpos.sum()
    wunl0 = 1.0 - wpos[0]
    r_unl = (wunl0 * -logp[0, 0]).sum() / wunl0.sum()
    want = 0.1 * r_pos + torch.clamp(r_unl - 0.1 * r_pos_neg, min=0.0)
    assert got.item() == pytest.approx(want.item(), rel=1e-5)


def test_sel_pu_is_energy_weighted_pu_plus_sfl():
    from sparsecell.losses.functional import energy_map, pu_risk, semantic_energy

    logits, emb, target, lab = _inputs(2, 1, 4, 4)
    out = make_loss("sel_pu", lambda1=2.0, lambda2=0.05, pu_prior=0.1)(_batch(logits, emb, target, lab))
    E = energy_map(semantic_energy(emb, lab), (16, 16))[:, 0]
    pixel = pu_risk(logits, target, prior=0.1, unl_weight=E)
    sfl = stretched_feature_loss(emb, lab)
    assert out["loss"].item() == pytest.approx(2.0 * pixel.item() + 0.05 * sfl.item(), rel=1e-5)
    # the energy is learned: the weighted PU term alone sends a gradient into the embedding
    (g,) = torch.autograd.grad(pixel, emb)
    assert g.abs().sum() > 0


def test_sel_is_the_papers_single_energy_and_sel_pc_the_per_class_one():
    """With several classes, ``sel`` weights every channel by one energy against all
    labelled nodes (= the one-class loss on merged labels, the paper's code); ``sel_pc``
    has an energy per class. With one class the two are the same."""
    logits, emb, target, lab = _inputs(2, 2, 4, 4, pattern="random", seed=3)
    merged_lab = lab.any(1, keepdim=True)
    ours = make_loss("sel", lambda1=1.0)(_batch(logits, emb, target, lab))["loss"]
    from sparsecell.losses.functional import pixel_energy

    E = pixel_energy(emb, lab, tuple(logits.shape[-2:]), per_class=False)
    E1 = pixel_energy(emb, merged_lab, tuple(logits.shape[-2:]), per_class=True)  # one class: the paper's E
    torch.testing.assert_close(E, E1[:, :1].expand_as(E))
    assert ours.item() == pytest.approx(weighted_cross_entropy(logits, target, E).item(), rel=1e-6)
    per_class = make_loss("sel_pc", lambda1=1.0)(_batch(logits, emb, target, lab))["loss"]
    assert per_class.item() == pytest.approx(sel_loop(logits, emb, target, lab).item(), rel=1e-5)
    assert abs(per_class.item() - ours.item()) > 1e-4  # they differ with several classes
    one = _inputs(2, 1, 4, 4)
    assert make_loss("sel")(_batch(*one))["loss"].item() == make_loss("sel_pc")(_batch(*one))["loss"].item()


# --- regions known to the loss, pseudo-labels, the censoring form -------------------------
def _pu_inputs(seed=0, B=2, C=1, H=16, W=16):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(B, C + 1, H, W, generator=g, requires_grad=True)
    target = torch.zeros(B, C + 1, H, W)
    target[:, 0] = 1.0
    target[:, 0, 4:7, 4:7] = 0.0  # one clicked cell per image
    target[:, 1, 4:7, 4:7] = 1.0
    return logits, target


def test_pu_risk_inside_a_known_region_is_plain_cross_entropy():
    from sparsecell.losses.functional import pu_risk

    logits, target = _pu_inputs()
    everywhere = torch.ones(2, 16, 16)
    ce = -(target * torch.log_softmax(logits, 1).clamp_min(math.log(1e-10))).sum(1).mean()
    assert torch.allclose(pu_risk(logits, target, keep=0.25, known=everywhere), ce)
    # half the image known: the mix a * CE(known) + (1 - a) * PU(rest), the prior from inside the region
    half = torch.zeros(2, 16, 16)
    half[:, :, :8] = 1.0
    mixed = pu_risk(logits, target, keep=0.25, known=half)
    prior = float((1 - target[:, 0])[:, :, :8].mean())
    rest = pu_risk(logits, target, prior=prior, unl_weight=1 - half)
    ce_in = (-(target * torch.log_softmax(logits, 1).clamp_min(math.log(1e-10))).sum(1) * half).sum() / half.sum()
    assert torch.allclose(mixed, 0.5 * ce_in + 0.5 * rest)


def test_pu_risk_extra_positives_leave_the_unlabelled_set_but_not_the_prior():
    from sparsecell.losses.functional import pu_risk

    logits, target = _pu_inputs(1)
    none = torch.zeros_like(target)
    none[:, 0] = 1.0
    # no pseudo-labels: the same risk as without them
    assert torch.allclose(pu_risk(logits, target, keep=0.25, positive=none), pu_risk(logits, target, keep=0.25))
    extra = none.clone()
    extra[:, 0, 10:13, 10:13] = 0.0
    extra[:, 1, 10:13, 10:13] = 1.0
    merged = target.clone()
    merged[:, :, 10:13, 10:13] = extra[:, :, 10:13, 10:13]
    prior = float((1 - target[:, 0]).mean() / 0.25)  # from the clicks alone
    assert torch.allclose(pu_risk(logits, target, keep=0.25, positive=extra), pu_risk(logits, merged, prior=prior))


def test_pu_risk_censoring_form():
    from sparsecell.losses.functional import _log_probs, pu_risk

    logits, target = _pu_inputs(2)
    logp = _log_probs(logits)
    wpos = 1 - target[:, 0]
    pi, pi_l = 0.2, float(wpos.mean())
    r_p = (wpos * -logp[:, 1]).sum() / wpos.sum()
    r_pn = (wpos * -logp[:, 0]).sum() / wpos.sum()
    r_u = ((1 - wpos) * -logp[:, 0]).sum() / (1 - wpos).sum()
    want = pi * r_p + torch.clamp((1 - pi_l) * r_u - (pi - pi_l) * r_pn, min=0.0)
    assert torch.allclose(pu_risk(logits, target, prior=pi, censoring=True), want)


def test_ce_with_known_regions_trains_no_background_outside_them():
    logits, emb, target, lab = _inputs(2, 1, 4, 4, s=4)
    known = torch.zeros(2, 16, 16)
    known[:, :8] = 1.0
    got = make_loss("ce", lambda1=1.0)(_batch(logits, emb, target, lab, known=known))["loss"]
    w = torch.ones_like(target)
    w[:, 0] = known
    assert torch.allclose(got, weighted_cross_entropy(logits, target, w))
    # const: 1 inside, its own weights outside
    c = make_loss("const", lambda1=1.0)
    E = c.weights(_batch(logits, emb, target, lab))
    k = known.unsqueeze(1)
    assert torch.allclose(c(_batch(logits, emb, target, lab, known=known))["loss"], weighted_cross_entropy(logits, target, k + (1 - k) * E))


def test_pu_pseudo_is_pu_without_labels_and_uses_the_pseudo_target():
    from sparsecell.losses.functional import pu_risk

    logits, target = _pu_inputs(3)
    pseudo = torch.zeros_like(target)
    pseudo[:, 0] = 1.0
    pseudo[:, 0, 10:13, 10:13], pseudo[:, 1, 10:13, 10:13] = 0.0, 1.0
    loss = make_loss("pu_pseudo", lambda1=1.0)
    assert torch.equal(loss(_batch(logits, None, target, None))["loss"], make_loss("pu", lambda1=1.0)(_batch(logits, None, target, None))["loss"])
    out = loss(_batch(logits, None, target, None, pseudo=pseudo))
    assert torch.allclose(out["loss"], pu_risk(logits, target, keep=0.25, positive=pseudo))
    assert out["pseudo_share"] > 0
    v1 = make_loss("pu_pseudo", lambda1=1.0, pseudo_censoring=True)
    assert torch.allclose(v1(_batch(logits, None, target, None, pseudo=pseudo))["loss"],
                          pu_risk(logits, target, keep=0.25, positive=pseudo, censoring=True))
