"""The README's picture: a synthetic Ki-67 slide (tissue on glass) predicted by a model
through the command line, as a user runs it, and its report.

    .venv/bin/python benchmarks/readme_figure.py runs/demo/pu_sar/checkpoints/best.ckpt

Writes ``docs/slide_example.png`` (the overview ``predict`` writes, a crop with the
cells, the slide's Ki-67 report) and prints the command it ran.
"""

from __future__ import annotations

import argparse
import gzip
import csv
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))  # the slide writer the tests use


def tissue_slide(path: Path, width: int = 3072, height: int = 2048, mpp: float = 0.5) -> None:
    """Synthetic Ki-67 tissue inside a smooth irregular outline, white glass around it."""
    from scipy.ndimage import gaussian_filter
    from slide_fixtures import write_svs

    from sparsecell.datasets.synthetic_tiles import SyntheticConfig, synthetic_tile

    img = np.full((height, width, 3), (242, 240, 244), np.uint8)
    tiles = [synthetic_tile(700 + k, SyntheticConfig(size=512))[0] for k in range(6)]
    tissue = np.empty_like(img)
    for y in range(0, height, 512):
        for x in range(0, width, 512):
            t = tiles[(x // 512 + 2 * (y // 512)) % len(tiles)]
            tissue[y:y + 512, x:x + 512] = t[: height - y, : width - x]
    rng = np.random.default_rng(3)
    field = gaussian_filter(rng.standard_normal((height // 16, width // 16)), 8)
    yy, xx = np.mgrid[: height // 16, : width // 16]
    r = np.hypot((yy - height / 32) / (height / 32), (xx - width / 32) / (width / 32))
    mask = np.kron((r + 6 * field) < 0.8, np.ones((16, 16), bool))[:height, :width]
    img[mask] = tissue[mask]
    write_svs(path, img, mpp=mpp, downsamples=(1, 4, 16))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("checkpoint")
    ap.add_argument("--out", type=Path, default=ROOT / "docs" / "slide_example.png")
    a = ap.parse_args()
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from PIL import Image

    with tempfile.TemporaryDirectory() as d:
        slide, res = Path(d) / "ki67_slide.svs", Path(d) / "results"
        tissue_slide(slide)
        cmd = [sys.executable, "-m", "sparsecell.cli", "predict", a.checkpoint, str(slide), "--out", str(res), "--quiet"]
        print("ran: sparsecell predict", a.checkpoint, "ki67_slide.svs --out results/")
        subprocess.run(cmd, check=True)
        folder = res / "ki67_slide"
        summary = json.loads((folder / "summary.json").read_text())
        overview = np.asarray(Image.open(folder / "overview.png").convert("RGB"))
        with gzip.open(folder / "cells.csv.gz", "rt", newline="") as f:
            cells = [row for row in csv.DictReader(ln for ln in f if not ln.startswith("#"))]
        from sparsecell.slides.reader import open_slide

        with open_slide(slide) as s:
            x0, y0, side = 1280, 768, 512
            crop = s.read((x0, y0, x0 + side, y0 + side), (side, side))
    fig, ax = plt.subplots(1, 2, figsize=(11, 4.6), gridspec_kw={"width_ratios": [1.5, 1]})
    ax[0].imshow(overview)
    ax[0].set_title("overview.png: tissue outline and cell density", fontsize=10)
    ax[1].imshow(crop)
    colours = {"positive": "#d62728", "negative": "#1f77b4"}
    for name, col in colours.items():
        xy = np.array([(float(c["x"]) - x0, float(c["y"]) - y0) for c in cells if c["class"] == name
                       and x0 <= float(c["x"]) < x0 + side and y0 <= float(c["y"]) < y0 + side]).reshape(-1, 2)  # fmt: skip
        ax[1].scatter(xy[:, 0], xy[:, 1], s=14, facecolors="none", edgecolors=col, linewidths=1.2, label=name)
    ax[1].legend(loc="lower right", fontsize=8)
    ax[1].set_title("cells on a 256 um crop", fontsize=10)
    for x in ax:
        x.set_axis_off()
    counts = summary.get("counts", {})
    idx = summary.get("ki67_index")
    area = summary.get("tissue_mm2")
    text = (f"ki67_slide.svs: {sum(counts.values()) if counts else '?'} cells ({', '.join(f'{k} {v}' for k, v in counts.items())}); "
            f"Ki-67 index {idx:.1%}" if idx is not None else "Ki-67 index -") + (f"; tissue {area:.2f} mm^2" if area else "")  # fmt: skip
    fig.suptitle(text, fontsize=10)
    fig.tight_layout()
    a.out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(a.out, dpi=80)
    print(f"wrote {a.out}")
    print(json.dumps({k: summary[k] for k in ("counts", "ki67_index") if k in summary}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
