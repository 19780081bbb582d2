"""Whole-slide speed and memory, measured in one run on the same tiles.

Prints, for a synthetic slide (synthetic Ki-67 tissue everywhere, so every tile runs),
for each engine (PyTorch, and onnxruntime on the CPU when it is installed), with the
settings `sparsecell predict` uses by default (batch size, reading workers, tissue mask):

- megapixels per second (model-resolution pixels of tile cores) of the model alone
  (the tiles already decoded in memory, batches through the network) and of the whole
  pipeline (`sparsecell.slides.pipeline.predict_slide`: reading, tissue, resampling, the
  model, seams, writing), and their ratio (target: the pipeline at >= 90 % of the model);
- minutes per gigapixel of tissue at 0.25 um/px (40x), from the pipeline's speed;
- the peak resident memory of predicting the slide and a slide with 4x the pixels, each
  in a fresh process, three runs each (target: the 4x slide within 10 % of the slide).

    .venv/bin/python benchmarks/slide_speed.py                 # about 15 min on 2 CPU cores
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
    """One slide through the pipeline in this process, as `sparsecell predict` runs it
    (the checkpoint opened with the engine asked for, the default settings); print the
    summary's figures and peak RSS."""
    from sparsecell.inference.load import load_detector
    from sparsecell.slides.pipeline import SlideRun, predict_slide

    det = load_detector(args.checkpoint, args.device, args.engine)
    opts = {k: v for k, v in (("batch_size", args.batch_size), ("num_workers", args.num_workers)) if v is not None}
    run = SlideRun(threshold=det.threshold, model_mpp=args.mpp, model_sha="0" * 64, progress=False, **opts)
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        s = predict_slide(det, Path(args.child), Path(tmp) / "out", run)
        secs = time.perf_counter() - t0
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # MiB (Linux: KiB)
    print(json.dumps({"seconds": secs, "cells": s["cells"], "tiles": s["tiles"]["run"], "peak_rss_mib": rss,
                      "model_seconds": s["model_seconds"], "peak_frames_mib": s["peak_frames_mib"]}))  # fmt: skip


def run_child(args, slide: Path, ck: Path, engine: str) -> dict:
    cmd = [sys.executable, __file__, "--child", str(slide), "--mpp", str(args.mpp), "--checkpoint", str(ck),
           "--engine", engine, "--device", args.device]  # fmt: skip
    for flag, v in (("--batch-size", args.batch_size), ("--num-workers", args.num_workers)):
        if v is not None:
            cmd += [flag, str(v)]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def save_checkpoint(det, args, path: Path) -> Path:
    """A checkpoint of the detector's weights and threshold, as `sparsecell train` writes one."""
    import torch

    from sparsecell.config import Config, EvalConfig, ModelConfig

    cfg = Config(model=ModelConfig(size=args.model), eval=EvalConfig(mpp=args.mpp))
    state = {f"model.{k}": v for k, v in det.model.state_dict().items()}
    state["threshold"] = torch.tensor(float(det.threshold))
    torch.save({"hyper_parameters": {"config": cfg.to_dict(), "classes": list(det.classes)}, "state_dict": state}, path)
    return path


def model_alone(det, slide: Path, mpp: float, batch_size: int) -> tuple[float, float]:
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
    model = det.model
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
    ap.add_argument("--batch-size", type=int, default=None, help="default: predict's")
    ap.add_argument("--num-workers", type=int, default=None, help="default: predict's")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--engines", nargs="+", default=None, help="default: torch, and onnx on the CPU when installed")
    ap.add_argument("--repeats", type=int, default=3, help="runs of each slide for peak memory")
    ap.add_argument("--engine", help=argparse.SUPPRESS)
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
    from sparsecell.inference.load import load_detector, onnx_available
    from sparsecell.slides.pipeline import SlideRun

    batch = args.batch_size or SlideRun.batch_size
    engines = args.engines or (["torch", "onnx"] if args.device == "cpu" and onnx_available() else ["torch"])
    from sparsecell.slides.pipeline import default_workers

    res["defaults"] = {"batch_size": batch, "num_workers": args.num_workers if args.num_workers is not None else default_workers()}
    res["engines"] = {}
    with tempfile.TemporaryDirectory() as tmp:
        small, big = Path(tmp) / "slide.svs", Path(tmp) / "slide4x.svs"
        make_slide(small, args.side, args.mpp)
        make_slide(big, 2 * args.side, args.mpp)
        ck = Path(args.checkpoint) if args.checkpoint else save_checkpoint(build_detector(args), args, Path(tmp) / "model.ckpt")
        for engine in engines:
            det = load_detector(ck, args.device, engine)
            model_alone(det, small, args.mpp, batch)  # warm-up
            secs, mp = model_alone(det, small, args.mpp, batch)
            e = res["engines"][engine] = {"model_alone": {"seconds": secs, "megapixels": mp, "mp_per_s": mp / secs}}
            print(f"[{engine}] model alone: {mp:.1f} MP in {secs:.1f} s = {mp / secs:.2f} MP/s")
            runs = [run_child(args, small, ck, engine) for _ in range(args.repeats)]
            runs4 = [run_child(args, big, ck, engine) for _ in range(args.repeats)]
            pipe = min(runs, key=lambda r: r["seconds"])
            mp_s = mp / pipe["seconds"]
            e["pipeline"] = {**pipe, "megapixels": mp, "mp_per_s": mp_s, "seconds_all": [r["seconds"] for r in runs]}
            e["pipeline_over_model"] = mp_s / (mp / secs)
            # a gigapixel of tissue at 0.25 um/px is 1e3 / (model mpp / 0.25)^2 megapixels at the model's resolution
            e["minutes_per_gigapixel_40x"] = 1e3 * (0.25 / args.mpp) ** 2 / mp_s / 60
            pipe4 = min(runs4, key=lambda r: r["seconds"])
            e["pipeline_4x"] = {**pipe4, "megapixels": 4 * mp, "mp_per_s": 4 * mp / pipe4["seconds"]}
            rss, rss4 = [r["peak_rss_mib"] for r in runs], [r["peak_rss_mib"] for r in runs4]
            e["peak_rss_mib"] = {"slide": rss, "slide_4x": rss4}
            e["rss_growth_4x"] = max(rss4) / max(rss) - 1
            e["rss_spread"] = max(rss + rss4) / min(rss + rss4) - 1
            print(f"[{engine}] pipeline: {mp:.1f} MP in {pipe['seconds']:.1f} s = {mp_s:.2f} MP/s "
                  f"({e['pipeline_over_model']:.0%} of the model alone; target >= 90%), {pipe['cells']} cells; "
                  f"{e['minutes_per_gigapixel_40x']:.1f} min per gigapixel of tissue at 0.25 um/px")  # fmt: skip
            print(f"[{engine}] 4x pixels: {4 * mp:.1f} MP in {pipe4['seconds']:.1f} s ({4 * mp / pipe4['seconds']:.2f} MP/s)")
            print(f"[{engine}] peak RSS: slide {', '.join(f'{v:.0f}' for v in rss)} MiB; 4x slide "
                  f"{', '.join(f'{v:.0f}' for v in rss4)} MiB: the 4x slide's largest {e['rss_growth_4x']:+.1%} of the "
                  f"slide's (target within 10%), all runs within {e['rss_spread']:.1%}; seam frames held at most "
                  f"{pipe['peak_frames_mib']:.1f} / {pipe4['peak_frames_mib']:.1f} MiB")  # fmt: skip
        if {"torch", "onnx"} <= set(res["engines"]):
            t, o = (res["engines"][k] for k in ("torch", "onnx"))
            res["onnx_over_torch"] = {"model_alone": t["model_alone"]["seconds"] / o["model_alone"]["seconds"],
                                      "pipeline": t["pipeline"]["seconds"] / o["pipeline"]["seconds"]}  # fmt: skip
            print(f"onnxruntime over PyTorch: model alone {res['onnx_over_torch']['model_alone']:.2f}x, "
                  f"pipeline {res['onnx_over_torch']['pipeline']:.2f}x")  # fmt: skip
    atomic_write_text(args.out, json.dumps(res, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
