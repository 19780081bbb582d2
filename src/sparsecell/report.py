"""Figures: point overlays, the energy-map figure, result tables."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from .formats.points import CLASS_COLOURS, Points

__all__ = ["overlay", "save_png", "energy_figure", "results_table"]


def save_png(image: np.ndarray, path: str | Path) -> Path:
    """Write a uint8 RGB array as PNG, atomically."""
    from PIL import Image

    from .formats.fileio import atomic_path

    with atomic_path(path) as tmp:
        Image.fromarray(image).save(tmp, format="PNG")
    return Path(path)


def overlay(image: np.ndarray, points: Points, truth: Points | None = None, radius: int = 4) -> np.ndarray:
    """The image with detections as class-coloured rings (and true points as small
    white dots when given)."""
    from PIL import Image, ImageDraw

    im = Image.fromarray(np.ascontiguousarray(image))
    draw = ImageDraw.Draw(im)
    if truth is not None:
        for x, y in truth.xy:
            draw.ellipse([x - 1.5, y - 1.5, x + 1.5, y + 1.5], fill=(255, 255, 255))
    for (x, y), c in zip(points.xy, points.labels):
        col = CLASS_COLOURS[int(c) % len(CLASS_COLOURS)]
        draw.ellipse([x - radius, y - radius, x + radius, y + radius], outline=col, width=2)
    return np.asarray(im)


def energy_figure(rows: Sequence[dict], path: str | Path, title: str = "") -> Path:
    """One row per image: image, sparse labels, semantic energy, prediction.

    Each row is a dict with ``image`` (H, W, 3), ``sparse`` (Points), ``energy``
    (H, W), ``pred`` (Points) and optionally ``truth`` (Points).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = len(rows)
    fig, axes = plt.subplots(n, 4, figsize=(12, 3.1 * n), squeeze=False)
    for r, row in enumerate(rows):
        img = row["image"]
        ax = axes[r]
        ax[0].imshow(img)
        ax[0].set_title("image")
        ax[1].imshow(img)
        if row.get("truth") is not None:
            t = row["truth"]
            ax[1].scatter(t.xy[:, 0], t.xy[:, 1], s=10, facecolors="none", edgecolors="white", linewidths=0.7)
        s = row["sparse"]
        ax[1].scatter(s.xy[:, 0], s.xy[:, 1], s=14, c="yellow", marker="x", linewidths=1.2)
        ax[1].set_title(f"sparse labels ({len(s)} of {len(row['truth']) if row.get('truth') is not None else '?'})")
        im = ax[2].imshow(row["energy"], cmap="magma", vmin=0, vmax=1)
        ax[2].set_title("semantic energy E")
        fig.colorbar(im, ax=ax[2], fraction=0.046, pad=0.02)
        ax[3].imshow(overlay(img, row["pred"], row.get("truth")))
        ax[3].set_title(f"prediction ({len(row['pred'])} cells)")
        for a in ax:
            a.set_axis_off()
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    from .formats.fileio import atomic_path

    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=80, format="png")
    plt.close(fig)
    return Path(path)


def results_table(methods: dict[str, dict], default: str | None = None) -> str:
    """A markdown table of precision/recall/F1 per method (and the Ki-67 index error,
    mean absolute per image in percentage points, where the methods have one)."""
    ki = any("ki67_mae" in m for m in methods.values())
    lines = [
        "| method | precision | recall | F1 (micro) | F1 (per image) | AP | threshold |" + (" Ki-67 index error (pp) |" if ki else ""),
        "|---|---|---|---|---|---|---|" + ("---|" if ki else ""),
    ]
    for name, m in methods.items():
        mark = " (default)" if name == default else ""
        lines.append(
            f"| {name}{mark} | {m['precision']:.3f} | {m['recall']:.3f} | {m['f1']:.3f} | "
            f"{m.get('f1_per_image', float('nan')):.3f} | {m.get('ap', float('nan')):.3f} | {m['threshold']:.2f} |"
            + ((f" {m['ki67_mae']:.1f} |" if "ki67_mae" in m else " - |") if ki else "")
        )
    return "\n".join(lines)
