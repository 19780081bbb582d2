"""Speed of the vectorised SEL+SFL, and the loss's share of a training step.

Prints, in one run (ratios measured side by side: this machine is noisy):
1. forward+backward time of the vectorised SEL+SFL against the reference's way
   (a Python loop over the batch with a full N x N similarity matrix per image),
   batch 8, 32x32 grid, 1024x1024 heatmaps;
2. one training step (forward, backward, Adam) of ``vig_s`` at 512x512, batch 2,
   with plain cross-entropy and with SEL+SFL: the loss's extra share;
3. parameter count and one forward time per named model size.

    .venv/bin/python benchmarks/loss_speed.py [--quick]
"""

from __future__ import annotations

import argparse
import time

import torch

from sparsecell.config import DataConfig, LossConfig
from sparsecell.losses import LossBatch, build_loss
from sparsecell.losses.reference import sel_sfl_per_image
from sparsecell.models import MODEL_SIZES, build_model


def _loss(name: str):
    return build_loss(LossConfig(name=name), DataConfig())


def _time(fn, repeat: int) -> float:
    fn()  # warm-up
    best = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def loss_speed(repeat: int, B=8, grid=32, stride=32, D=80) -> None:
    g = torch.Generator().manual_seed(0)
    H = grid * stride
    logits = torch.randn(B, 2, H, H, generator=g, requires_grad=True)
    emb = torch.randn(B, D, grid, grid, generator=g, requires_grad=True)
    target = torch.rand(B, 2, H, H, generator=g)
    lab = torch.rand(B, 1, grid, grid, generator=g) < 0.1
    ours = _loss("sel_sfl")
    batch = LossBatch(logits, emb, target, lab)

    def vec():
        ours(batch)["loss"].backward()

    def loop():
        sel_sfl_per_image(logits, emb, target, lab).backward()

    t_vec = _time(vec, repeat)
    t_loop = _time(loop, repeat)
    ce = _loss("ce")
    t_ce = _time(lambda: ce(batch)["loss"].backward(), repeat)
    print(f"SEL+SFL forward+backward, batch {B}, {grid}x{grid} grid, {H}x{H} heatmaps, D={D}:")
    print(f"  vectorised          {t_vec * 1e3:8.1f} ms")
    print(f"  loop per image      {t_loop * 1e3:8.1f} ms   -> {t_loop / t_vec:.1f}x slower")
    print(f"  plain CE (same px)  {t_ce * 1e3:8.1f} ms   (SEL+SFL extra over CE: {(t_vec - t_ce) * 1e3:.1f} ms)")
    # the energy and SFL alone, where the two implementations really differ
    def vec_energy_only():
        from sparsecell.losses.functional import semantic_energy, stretched_feature_loss

        (semantic_energy(emb, lab).sum() + stretched_feature_loss(emb, lab)).backward()

    t_e = _time(vec_energy_only, repeat)
    print(f"  energy+SFL only (vectorised) {t_e * 1e3:.1f} ms")


def step_share(repeat: int, size="vig_s", hw=512, B=2) -> None:
    torch.manual_seed(0)
    model = build_model(size, num_classes=1)
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    x = torch.randn(B, 3, hw, hw)
    target = torch.rand(B, 2, hw, hw)
    s = model.stride
    lab = torch.rand(B, 1, hw // s, hw // s) < 0.2

    def step(loss_fn):
        out = model(x)
        loss = loss_fn(LossBatch(out.logits, out.embedding, target, lab))["loss"]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    ce, sel = _loss("ce"), _loss("sel_sfl")
    step(ce)
    times = {"ce": [], "sel_sfl": []}
    for _ in range(repeat):  # interleaved, so drift hits both alike
        for name, fn in (("ce", ce), ("sel_sfl", sel)):
            t = time.perf_counter()
            step(fn)
            times[name].append(time.perf_counter() - t)
    t_ce, t_sel = min(times["ce"]), min(times["sel_sfl"])
    print(f"One training step of {size} at {hw}x{hw}, batch {B} (min of {repeat}):")
    print(f"  cross-entropy {t_ce:.3f} s, SEL+SFL {t_sel:.3f} s -> loss overhead {100 * (t_sel - t_ce) / t_ce:+.1f}%")


def model_sizes(hw=512) -> None:
    print(f"Model sizes (1 class), forward of one {hw}x{hw} image, eval mode, {torch.get_num_threads()} threads:")
    for name in MODEL_SIZES:
        m = build_model(name).eval()
        n = sum(p.numel() for p in m.parameters())
        x = torch.randn(1, 3, hw, hw)
        with torch.no_grad():
            t = _time(lambda m=m, x=x: m(x), 2)
        print(f"  {name:9s} {n / 1e6:6.2f} M params  {t * 1e3:8.1f} ms")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="fewer repeats")
    args = ap.parse_args()
    r = 2 if args.quick else 5
    print(f"torch {torch.__version__}, device cpu, {torch.get_num_threads()} threads")
    loss_speed(r)
    step_share(max(2, r - 2))
    model_sizes()


if __name__ == "__main__":
    main()
