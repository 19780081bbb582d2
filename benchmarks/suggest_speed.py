"""What ``sparsecell suggest`` costs against one prediction pass over the same slide.

A synthetic slide (tissue everywhere, coloured discs) at 0.5 um/px; a ``vig_cpu``
detector at that resolution (untrained: speed does not depend on the weights); the same
process times ``predict`` (the slide pipeline, one worker) and ``suggest`` with and
without the augmented passes, and prints the ratios.

    .venv/bin/python benchmarks/suggest_speed.py            # about 2 minutes on 2 CPU cores
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from slide_fixtures import blob_image, write_svs  # noqa: E402

from sparsecell.annotate.suggest import SuggestRun, suggest  # noqa: E402
from sparsecell.config import EvalConfig  # noqa: E402
from sparsecell.inference.detector import Detector  # noqa: E402
from sparsecell.models import build_model  # noqa: E402
from sparsecell.slides.pipeline import SlideRun, predict_slides  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--side", type=int, default=2048, help="slide side, px at 0.5 um/px")
    ap.add_argument("--size-um", type=float, default=100.0)
    args = ap.parse_args()
    import torch

    torch.manual_seed(0)
    det = Detector(build_model("vig_cpu", 2), ("positive", "negative"), 0.5, EvalConfig(mpp=0.5))
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        slide = tmp / "S.svs"
        write_svs(slide, blob_image(args.side, args.side, n_blobs=args.side * args.side // 2000), mpp=0.5)
        run = SlideRun(threshold=0.5, model_mpp=0.5, model_sha="bench", num_workers=0, progress=False)
        t0 = time.perf_counter()
        predict_slides(det, [slide], tmp / "pred", run)
        t_pred = time.perf_counter() - t0
        times = {}
        for tta in (False, True):
            t0 = time.perf_counter()
            rows = suggest(det, [slide], tmp / f"next{tta}", SuggestRun(regions=10, size_um=args.size_um, tta=tta), log=lambda m: None)
            times[tta] = time.perf_counter() - t0
    mpx = args.side * args.side / 1e6
    print(f"slide {args.side} x {args.side} px at 0.5 um/px ({mpx:.1f} Mpx), vig_cpu, {torch.get_num_threads()} threads")
    print(f"  predict (one pass, cells and report)      {t_pred:6.1f} s")
    print(f"  suggest, {args.size_um:g} um squares                {times[False]:6.1f} s  ({times[False] / t_pred:.2f} x predict)")
    print(f"  suggest --tta (4 passes)                  {times[True]:6.1f} s  ({times[True] / t_pred:.2f} x predict)")
    print(f"  {len(rows)} regions suggested")


if __name__ == "__main__":
    main()
