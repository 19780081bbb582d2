"""``sparsecell suggest``: the regions of each slide to annotate next, for QuPath.

Per slide (or image): the tissue is cut into squares of ``size_um`` a side (level-0
px from the slide's resolution), the squares that overlap a region the user already
drew (read from the slide's QuPath GeoJSON beside it, any class) are left out, the
model describes every other square from one pass over it at its resolution (four with
``tta``; :func:`~.acquire.describe_regions`), and a strategy picks ``regions`` of them
(:func:`~.acquire.choose`; the annotated regions count as known for the diversity
strategies, the clicks per class for ``balance``).

Written to ``out`` (every path checked before anything is written; an existing file is
replaced only with ``overwrite``; each file whole or not at all):

- ``<slide>.geojson``: the suggested squares as QuPath region annotations classified
  ``Annotate next``, named ``Annotate next N: <reason>``, with the rank, score and
  predicted cells as measurements; with ``cells``, the model's undecided cells inside
  them as one points annotation per square, classified ``Annotate next: check``;
- ``<slide>_suggestions.png``: the slide's overview with the squares and their ranks;
- ``suggestions.csv``: every suggestion of the run, best score first.
"""

from __future__ import annotations

import csv
import io
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from ..errors import ConfigError, SlideError
from .acquire import DEFAULT_STRATEGY, Candidate, choose, describe_regions

__all__ = ["SuggestRun", "suggest", "NEXT_CLASS", "CHECK_CLASS", "DEFAULT_SIZE_UM"]

NEXT_CLASS = "Annotate next"
CHECK_CLASS = "Annotate next: check"
#: The default side of a suggested square, um (about 200 cells' worth of tumour field).
DEFAULT_SIZE_UM = 100.0
#: The largest annotated region read to place it among the candidates (model px a side).
KNOWN_SIDE = 1024
#: No more candidate squares than this per slide are described (the rest: a note).
MAX_CANDIDATES = 200_000
CSV_FIELDS = ("rank", "slide", "slide_rank", "reason", "score", "x0", "y0", "x1", "y1", "centre_x_um", "centre_y_um",
              "predicted_cells", "uncertain_cells")  # fmt: skip


@dataclass
class SuggestRun:
    regions: int = 10  # per slide
    size_um: float = DEFAULT_SIZE_UM
    strategy: str = DEFAULT_STRATEGY
    cells: bool = False
    tta: bool = False
    mpp: float | None = None  # the slides' resolution where they record none
    min_tissue: float = 0.5  # a square needs this share of tissue
    seed: int = 0
    overwrite: bool = False
    progress: bool = True


def _stem(path: Path) -> str:
    from ..slides.pipeline import slide_name

    return slide_name(path)


def _targets(out: Path, slides: Sequence[Path]) -> list[Path]:
    paths = [out / "suggestions.csv"]
    for s in slides:
        paths += [out / f"{_stem(s)}.geojson", out / f"{_stem(s)}_suggestions.png"]
    return paths


def _known(slide_path: Path, classes: Sequence[str]):
    """The regions the user drew (level-0 boxes) and the clicks per class, from the
    QuPath export beside the slide (none: no file)."""
    from ..datasets.slides import annotation_file
    from ..formats.qupath import read_annotations

    ann_path = annotation_file(slide_path)
    if ann_path is None:
        return np.zeros((0, 4)), None, None
    ann = read_annotations(ann_path)
    boxes = np.array([r.bounds for r in ann.regions], float).reshape(-1, 4)
    low = [c.lower() for c in classes]
    counts = np.zeros(len(classes), int)
    for name in ann.names:
        if (name or "").strip().lower().startswith(NEXT_CLASS.lower()):
            continue  # a proposed cell not confirmed yet
        last = (name or "").split(":")[-1].strip().lower()
        if last in low:
            counts[low.index(last)] += 1
        elif len(classes) == 1:
            counts[0] += 1
    return boxes, counts, ann_path


def _grid0(W0: int, H0: int, side0: float, mask: np.ndarray, ds: float, exclude: np.ndarray, min_tissue: float) -> np.ndarray:
    """Level-0 candidate squares (x0, y0, x1, y1) of ``side0`` px on the slide's tissue."""
    nx, ny = int(W0 // side0), int(H0 // side0)
    if nx == 0 or ny == 0:
        return np.zeros((0, 4))
    ox, oy = (W0 - nx * side0) / 2, (H0 - ny * side0) / 2
    xs, ys = np.meshgrid(ox + side0 * np.arange(nx), oy + side0 * np.arange(ny))
    boxes = np.stack([xs.ravel(), ys.ravel(), xs.ravel() + side0, ys.ravel() + side0], 1)
    # tissue share of each square from the mask (its px at ``ds`` level-0 px each)
    from scipy.ndimage import uniform_filter

    k = max(1, int(round(side0 / ds)))
    share = uniform_filter(mask.astype(np.float32), size=k, mode="constant")
    cy = np.clip(((boxes[:, 1] + boxes[:, 3]) / 2 / ds).astype(int), 0, mask.shape[0] - 1)
    cx = np.clip(((boxes[:, 0] + boxes[:, 2]) / 2 / ds).astype(int), 0, mask.shape[1] - 1)
    ok = share[cy, cx] >= min_tissue
    for ex in exclude:
        ok &= ~((boxes[:, 0] < ex[2]) & (boxes[:, 2] > ex[0]) & (boxes[:, 1] < ex[3]) & (boxes[:, 3] > ex[1]))
    return boxes[ok]


def _feature(ring, cls: str, colour, name: str, measurements: dict, geometry: str = "Polygon") -> dict:
    from ..formats.qupath import _uuid5, classification

    coords = [ring] if geometry == "Polygon" else ring
    return {"type": "Feature", "id": _uuid5(f"{name}:{json.dumps(coords)[:200]}"),
            "geometry": {"type": geometry, "coordinates": coords},
            "properties": {"objectType": "annotation", "name": name,
                           "classification": classification([p.strip() for p in cls.split(":")], colour),
                           "measurements": measurements}}  # fmt: skip


def _geojson(picks, scale: float) -> str:
    feats = []
    for p in picks:
        x0, y0, x1, y1 = p["box0"]
        ring = [[x0, y0], [x1, y0], [x1, y1], [x0, y1], [x0, y0]]
        meas = {"Annotate next rank": p["slide_rank"], "Annotate next score": round(p["score"], 6),
                "Predicted cells": int(p["predicted_cells"]), "Uncertain cells": int(p["uncertain_cells"])}  # fmt: skip
        feats.append(_feature(ring, NEXT_CLASS, (230, 160, 0), f"{NEXT_CLASS} {p['slide_rank']}: {p['reason']}", meas))
        if p.get("cells_xy") is not None and len(p["cells_xy"]):
            pts = [[float(x), float(y)] for x, y in p["cells_xy"]]
            feats.append(_feature(pts, CHECK_CLASS, (255, 220, 0), f"{NEXT_CLASS} {p['slide_rank']}: check these cells",
                                  {"Annotate next rank": p["slide_rank"]}, geometry="MultiPoint"))  # fmt: skip
    return json.dumps({"type": "FeatureCollection", "features": feats}, allow_nan=False) + "\n"


def _overview_png(thumb: np.ndarray, ds: float, picks, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    from ..formats.fileio import atomic_path

    h, w = thumb.shape[:2]
    fig = plt.figure(figsize=(8, 8 * h / max(w, 1)))
    ax = fig.add_axes([0, 0, 1, 1])
    ax.imshow(thumb)
    for p in picks:
        x0, y0, x1, y1 = (v / ds for v in p["box0"])
        ax.add_patch(Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, ec="orange", lw=1.5))
        ax.text(x0, y0, str(p["slide_rank"]), color="orange", fontsize=8, va="bottom")
    ax.set_axis_off()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=100, format="png")
    plt.close(fig)


#: Squares are described in tiles of about this many model px a side: one model pass each.
TILE_PX = 1024


def _describe_tiled(detector, slide, boxes0: np.ndarray, side0: float, side_m: int, scale: float, tta: bool) -> list[Candidate]:
    """Every candidate square described, the squares grouped in tiles of whole squares
    (about :data:`TILE_PX` model px a side) read and run once each: one pass of the
    model over the candidate tissue (four with ``tta``). ``Candidate.image`` is the
    square's index in ``boxes0``."""
    per = max(1, TILE_PX // side_m)  # squares per tile side
    gx = np.floor((boxes0[:, 0] - boxes0[:, 0].min()) / side0 + 0.5).astype(int)
    gy = np.floor((boxes0[:, 1] - boxes0[:, 1].min()) / side0 + 0.5).astype(int)
    ox, oy = boxes0[:, 0].min(), boxes0[:, 1].min()
    out: list[Candidate | None] = [None] * len(boxes0)
    tiles: dict[tuple[int, int], list[int]] = {}
    for k, key in enumerate(zip(gx // per, gy // per)):
        tiles.setdefault(key, []).append(k)
    for (tx, ty), ks in tiles.items():
        cx0, cy0 = min(gx[k] for k in ks), min(gy[k] for k in ks)
        cx1, cy1 = max(gx[k] for k in ks) + 1, max(gy[k] for k in ks) + 1
        box = (ox + cx0 * side0, oy + cy0 * side0, ox + cx1 * side0, oy + cy1 * side0)
        img = slide.read(box, ((cx1 - cx0) * side_m, (cy1 - cy0) * side_m))
        local = [((gx[k] - cx0) * side_m, (gy[k] - cy0) * side_m, (gx[k] - cx0 + 1) * side_m, (gy[k] - cy0 + 1) * side_m) for k in ks]
        for k, c in zip(ks, describe_regions(detector, img, local, 0, tta=tta)):
            x0, y0 = local[ks.index(k)][:2]
            c.image = k
            c.uncertain_xy = c.uncertain_xy - np.array([x0, y0], float)  # in the square's own model px
            out[k] = c
    return [c for c in out if c is not None]


def _suggest_one(detector, path: Path, run: SuggestRun, log) -> tuple[list[dict], np.ndarray, float]:
    from ..slides.pipeline import _one_line
    from ..slides.reader import open_slide
    from ..slides.tissue import tissue_mask

    try:
        slide = open_slide(path, mpp=run.mpp)
    except SlideError:
        raise
    except Exception as e:  # noqa: BLE001 - any reader failure names the file
        raise SlideError(f"{path}: cannot be opened ({_one_line(e)})") from None
    with slide:
        if slide.mpp is None:
            raise SlideError(f"{path}: the file records no resolution (um per pixel); give it with --mpp")
        model_mpp = detector.eval.mpp or slide.mpp
        scale = model_mpp / slide.mpp  # level-0 px per model px
        if abs(scale - 1.0) < 0.02:
            scale = 1.0
        W0, H0 = slide.dimensions
        side0 = run.size_um / slide.mpp
        if side0 > min(W0, H0):
            raise SlideError(f"{path}: a {run.size_um:g} um square ({side0:.0f} px) is larger than the slide "
                             f"({W0} x {H0} px at {slide.mpp:g} um/px); choose a smaller --size-um")  # fmt: skip
        side_m = max(1, int(round(side0 / scale)))
        thumb, ds = slide.thumbnail(int(min(max(max(W0, H0) * slide.mpp / 8.0, 512), 4096, max(W0, H0))))
        mask, _ = tissue_mask(thumb)
        if not mask.any():
            raise SlideError(f"{path}: no tissue found; nothing to suggest")
        known, clicks, ann = _known(path, detector.classes)
        boxes0 = _grid0(W0, H0, side0, mask, ds, known, run.min_tissue)
        if len(boxes0) < run.regions:
            where = " outside the regions already annotated" if len(known) else ""
            raise SlideError(f"{path}: {run.regions} regions asked for, but only {len(boxes0)} squares of "
                             f"{run.size_um:g} um fit in its tissue{where}; ask for fewer (--regions) or smaller (--size-um)")  # fmt: skip
        if len(boxes0) > MAX_CANDIDATES:
            keep = np.random.default_rng(run.seed).choice(len(boxes0), MAX_CANDIDATES, replace=False)
            boxes0 = boxes0[np.sort(keep)]
            log(f"{path.name}: {MAX_CANDIDATES} of the candidate squares described (a random subset)")
        cands = _describe_tiled(detector, slide, boxes0, side0, side_m, scale, run.tta)
        emb_known = []
        for b in known:
            w, h = (b[2] - b[0]) / scale, (b[3] - b[1]) / scale
            if w < 1 or h < 1:
                continue
            cw, ch = min(w, KNOWN_SIDE), min(h, KNOWN_SIDE)  # the centre of a large region
            cx, cy = (b[0] + b[2]) / 2, (b[1] + b[3]) / 2
            box = (cx - cw * scale / 2, cy - ch * scale / 2, cx + cw * scale / 2, cy + ch * scale / 2)
            img = slide.read(box, (max(1, int(cw)), max(1, int(ch))))
            emb_known.append(describe_regions(detector, img, [(0, 0, img.shape[1], img.shape[0])], tta=False)[0].embedding)
        picks = choose(cands, run.regions, run.strategy, annotated=np.stack(emb_known) if emb_known else None,
                       clicks_per_class=clicks, seed=run.seed)  # fmt: skip
        out = []
        for p in picks:
            c = cands[p.index]
            b = boxes0[c.image]
            xy0 = b[:2] + c.uncertain_xy * scale if run.cells else None
            out.append({"slide": _stem(path), "slide_rank": p.rank, "reason": p.reason, "score": p.score,
                        "box0": [round(float(v), 1) for v in b], "centre_um": ((b[0] + b[2]) / 2 * slide.mpp, (b[1] + b[3]) / 2 * slide.mpp),
                        "predicted_cells": float(c.cells.sum()), "uncertain_cells": len(c.uncertain_xy), "cells_xy": xy0})  # fmt: skip
        log(f"{path.name}: {len(out)} regions suggested ({run.strategy}) among {len(cands)} squares of "
            f"{run.size_um:g} um" + (f"; {len(known)} annotated regions left out ({ann.name})" if len(known) else ""))  # fmt: skip
        step = max(1, -(-max(thumb.shape[:2]) // 1024))  # the overview at most 1024 px a side
        return out, thumb[::step, ::step].copy(), ds * step


def suggest(detector, slides: Sequence[Path], out: Path, run: SuggestRun, log=print) -> list[dict]:
    """Suggestions for every slide, written as the module says; returns them."""
    from ..formats.fileio import atomic_write_text

    if run.regions < 1:
        raise ConfigError(f"--regions {run.regions}: ask for at least one region")
    if not (run.size_um > 0 and math.isfinite(run.size_um)):
        raise ConfigError(f"--size-um {run.size_um}: must be a positive number of um")
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"{out}: is a file; --out must be a folder")
    taken = [p for p in _targets(out, slides) if p.exists()]
    if taken and not run.overwrite:
        raise ConfigError(f"{taken[0]}: already exists ({len(taken)} output file(s) would be replaced); "
                          "choose another --out or add --overwrite")  # fmt: skip
    results = [(s, *_suggest_one(detector, Path(s), run, log)) for s in slides]  # every slide first: nothing half-written
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for s, picks, thumb, ds in results:
        atomic_write_text(out / f"{_stem(Path(s))}.geojson", _geojson(picks, 1.0))
        _overview_png(thumb, ds, picks, out / f"{_stem(Path(s))}_suggestions.png")
        rows += picks
    rows.sort(key=lambda p: -p["score"])
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(CSV_FIELDS)
    for k, p in enumerate(rows, 1):
        x0, y0, x1, y1 = p["box0"]
        w.writerow([k, p["slide"], p["slide_rank"], p["reason"], f"{p['score']:.6g}", x0, y0, x1, y1,
                    f"{p['centre_um'][0]:.1f}", f"{p['centre_um'][1]:.1f}", f"{p['predicted_cells']:.0f}", p["uncertain_cells"]])  # fmt: skip
    atomic_write_text(out / "suggestions.csv", buf.getvalue())
    return rows
