"""Whole-slide speed and memory, measured in one run on the same tiles.

Prints, for a synthetic slide (synthetic Ki-67 tissue everywhere, so every tile runs):

- megapixels per second (model-resolution pixels of tile cores) of the model alone
  (the tiles already decoded in memory, batches through the network) and of the whole
  pipeline (`sparsecell.slides.pipeline.predict_slide`: reading, resampling, the model,
  seams, writing), and their ratio (target: the pipeline at >= 90 % of the model);
- the peak resident memory of predicting the slide and a slide with 4x the pixels, each
  in a fresh process (target: within 10 %);
- the model alone in PyTorch and in onnxruntime (CPU), when onnxruntime is installed.

    .venv/bin/python benchmarks/slide_speed.py                 # about 10 min on 2 CPU cores
    .venv/bin/python benchmarks/slide_speed.py --side 2048     # quicker
    .venv/bin/python benchmarks/slide_speed.py --device cuda --model vig_s   # on a GPU

The model has random weights (speed does not depend on them) unless ``--checkpoint``
is given; its threshold is set so that it finds cells at a realistic density.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))  # the synthetic slide writer the tests use


def make_slide(path: Path, side: int, mpp: float) -> None:
    """A square SVS of synthetic Ki-67 tissue, tiled from 512 px synthetic tiles."""
    from slide_fixtures import write_svs

    from sparsecell.datasets.synthetic_tiles import SyntheticConfig, synthetic_tile

    tiles = [synthetic_tile(900 + k, SyntheticConfig(size=512))[0] for k in range(4)]
    img = np.empty((side, side, 3), np.uint8)
    for y in range(0, side, 512):
        for x in range(0, side, 512):
            t = tiles[(x // 512 + 3 * (y // 512)) % 4]
            img[y:y + 512, x:x + 512] = t[: side - y, : side - x]
    write_svs(path, img, mpp=mpp, downsamples=(1, 4, 16))


def build_detector(args):
    import torch

    from sparsecell.config import EvalConfig
    from sparsecell.inference.detector import Detector
    from sparsecell.models import build_model

    if args.checkpoint:
        return Detector.from_checkpoint(args.checkpoint, device=args.device)
    torch.manual_seed(0)
    model = build_model(args.model, 2)
    det = Detector(model, ("positive", "negative"), 0.5, EvalConfig(mpp=args.mpp), device=args.device)
    if args.threshold is None:  # random weights: the threshold that finds cells at a tumour's density
        from sparsecell.datasets.synthetic_tiles import SyntheticConfig, synthetic_tile

        img = synthetic_tile(900, SyntheticConfig(size=512))[0]
        low = det.peaks(img, 0.0)
        want = CELLS_PER_MP * img.shape[0] * img.shape[1] / 1e6
        det.threshold = float(np.sort(low.scores)[::-1][min(int(want), len(low) - 1)]) if len(low) else 0.0
    else:
        det.threshold = args.threshold
    return det


#: Cells per megapixel at 0.5 um/px: 2000, about 8000 tumour cells per mm^2.
CELLS_PER_MP = 2000


def child(args) -> None:
    """One slide through the pipeline in this process; print the summary's figures and peak RSS."""
    from sparsecell.slides.pipeline import SlideRun, predict_slide

    det = build_detector(args)
    run = SlideRun(threshold=det.threshold, model_mpp=args.mpp, model_sha="0" * 64, tissue=False,
                   batch_size=args.batch_size, num_workers=args.num_workers, progress=False)  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        s = predict_slide(det, Path(args.child), Path(tmp) / "out", run)
        secs = time.perf_counter() - t0
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # MiB (Linux: KiB)
    print(json.dumps({"seconds": secs, "cells": s["cells"], "tiles": s["tiles"]["run"], "peak_rss_mib": rss,
                      "model_seconds": s["model_seconds"], "peak_frames_mib": s["peak_frames_mib"]}))  # fmt: skip


def run_child(args, slide: Path) -> dict:
    cmd = [sys.executable, __file__, "--child", str(slide), "--mpp", str(args.mpp), "--model", args.model,
           "--threshold", str(build_detector(args).threshold), "--batch-size", str(args.batch_size), "--num-workers", str(args.num_workers),
           "--device", args.device] + (["--checkpoint", args.checkpoint] if args.checkpoint else [])  # fmt: skip
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def model_alone(det, slide: Path, mpp: float, batch_size: int, runner=None) -> tuple[float, float]:
    """(seconds, core megapixels) of the network on the slide's tiles, decoded beforehand."""
    import torch

    from sparsecell.models.inputs import to_tensor
    from sparsecell.inference.detector import predict_heatmap
    from sparsecell.slides.reader import open_slide
    from sparsecell.inference.tiling import TileGrid

    with open_slide(slide) as s:
        scale = mpp / s.mpp
        W, H = (int(v / scale) for v in s.dimensions)
        grid = TileGrid(H, W, det.tile, det.halo)
        tiles = []
        for r, c in grid:
            y0, y1, x0, x1 = grid.input_box(r, c)
            tiles.append(to_tensor(s.read((x0 * scale, y0 * scale, x1 * scale, y1 * scale), (x1 - x0, y1 - y0))))
    groups: dict = {}
    for t in tiles:
        groups.setdefault(tuple(t.shape), []).append(t)
    model = runner or det.model
    t0 = time.perf_counter()
    with torch.inference_mode():
        for ts in groups.values():
            for i in range(0, len(ts), batch_size):
                heat, _ = predict_heatmap(model, torch.stack(ts[i:i + batch_size]).to(det.device))
                heat.cpu()
    secs = time.perf_counter() - t0
    return secs, H * W / 1e6


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--side", type=int, default=3072, help="slide side at the model's resolution, px (the 4x slide doubles it)")
    ap.add_argument("--mpp", type=float, default=0.5, help="the model's and the slide's resolution, um per px")
    ap.add_argument("--model", default="vig_cpu")
    ap.add_argument("--checkpoint", default=None)
    ap.add_argument("--threshold", type=float, default=None, help="default: the checkpoint's; random weights: calibrated to 2000 cells/MP")
    ap.add_argument("--batch-size", type=int, default=2)
    ap.add_argument("--num-workers", type=int, default=1)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--no-onnx", action="store_true")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "slide_speed.json")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(args)
        return
    import torch

    from sparsecell.formats.fileio import atomic_write_text

    res: dict = {"machine": {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
                             "torch_threads": torch.get_num_threads(), "torch": torch.__version__, "device": args.device},
                 "config": {k: v for k, v in vars(args).items() if k not in ("out", "child")}}  # fmt: skip
    if args.device.startswith("cuda"):
        res["machine"]["gpu"] = torch.cuda.get_device_name(0)
    with tempfile.TemporaryDirectory() as tmp:
        small, big = Path(tmp) / "slide.svs", Path(tmp) / "slide4x.svs"
        make_slide(small, args.side, args.mpp)
        det = build_detector(args)
        model_alone(det, small, args.mpp, args.batch_size)  # warm-up
        secs, mp = model_alone(det, small, args.mpp, args.batch_size)
        res["model_alone"] = {"seconds": secs, "megapixels": mp, "mp_per_s": mp / secs}
        print(f"model alone: {mp:.1f} MP in {secs:.1f} s = {mp / secs:.2f} MP/s")
        pipe = run_child(args, small)
        res["pipeline"] = {**pipe, "megapixels": mp, "mp_per_s": mp / pipe["seconds"]}
        ratio = (mp / pipe["seconds"]) / (mp / secs)
        res["pipeline_over_model"] = ratio
        print(f"pipeline:    {mp:.1f} MP in {pipe['seconds']:.1f} s = {mp / pipe['seconds']:.2f} MP/s "
              f"({ratio:.0%} of the model alone; target >= 90%), {pipe['cells']} cells, peak RSS {pipe['peak_rss_mib']:.0f} MiB")  # fmt: skip
        make_slide(big, 2 * args.side, args.mpp)
        pipe4 = run_child(args, big)
        res["pipeline_4x"] = {**pipe4, "megapixels": 4 * mp, "mp_per_s": 4 * mp / pipe4["seconds"]}
        again = [run_child(args, p)["peak_rss_mib"] for p in (small, big)]  # peak RSS wanders between runs: measure twice
        res["peak_rss_repeat_mib"] = {"slide": [pipe["peak_rss_mib"], again[0]], "slide_4x": [pipe4["peak_rss_mib"], again[1]]}
        growth = max(pipe4["peak_rss_mib"], again[1]) / max(pipe["peak_rss_mib"], again[0]) - 1
        res["rss_growth_4x"] = growth
        print(f"4x pixels:   {4 * mp:.1f} MP in {pipe4['seconds']:.1f} s ({4 * mp / pipe4['seconds']:.2f} MP/s)")
        print(f"peak RSS:    slide {pipe['peak_rss_mib']:.0f} / {again[0]:.0f} MiB, 4x slide {pipe4['peak_rss_mib']:.0f} / "
              f"{again[1]:.0f} MiB (two runs each): {growth:+.1%} in the larger of each (target within 10%); seam frames "
              f"held at most {pipe['peak_frames_mib']:.1f} / {pipe4['peak_frames_mib']:.1f} MiB")  # fmt: skip
        if not args.no_onnx and args.device == "cpu" and not args.checkpoint:
            try:
                import onnxruntime  # noqa: F401
            except ImportError:
                print("onnxruntime not installed: no ONNX figure")
            else:
                res["onnx"] = onnx_vs_torch(args, det, small, secs, mp, Path(tmp))
    atomic_write_text(args.out, json.dumps(res, indent=2) + "\n")
    print(f"wrote {args.out}")


def onnx_vs_torch(args, det, slide: Path, torch_secs: float, mp: float, tmp: Path) -> dict:
    """The model alone through onnxruntime, on the same tiles (exported from a checkpoint of the same weights)."""
    import torch

    from sparsecell.config import Config, EvalConfig, ModelConfig
    from sparsecell.inference.onnx import OnnxModel, export_onnx

    # a checkpoint-like file of these weights, as `sparsecell export` reads it
    cfg = Config(model=ModelConfig(size=args.model), eval=EvalConfig(mpp=args.mpp))
    ck = tmp / "model.ckpt"
    torch.save({"hyper_parameters": {"config": cfg.to_dict(), "classes": list(det.classes)},
                "state_dict": {f"model.{k}": v for k, v in det.model.state_dict().items()}}, ck)  # fmt: skip
    path = export_onnx(ck, tmp / "model.onnx")
    runner = OnnxModel(path)
    model_alone(det, slide, args.mpp, args.batch_size, runner)  # warm-up
    secs, _ = model_alone(det, slide, args.mpp, args.batch_size, runner)
    print(f"onnxruntime: {mp:.1f} MP in {secs:.1f} s = {mp / secs:.2f} MP/s ({torch_secs / secs:.2f}x PyTorch's speed)")
    return {"seconds": secs, "mp_per_s": mp / secs, "speed_vs_torch": torch_secs / secs}


if __name__ == "__main__":
    main()
