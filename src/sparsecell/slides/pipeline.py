"""Whole slides: every cell on a slide, its Ki-67 report and QuPath detections.

One slide goes through :func:`predict_slide`:

1. **Resolution.** The model runs at its training resolution (``eval.mpp`` in the
   checkpoint, um per px). The slide is read at the pyramid level nearest above it and
   resampled (:meth:`sparsecell.slides.reader.Slide.read`); a slide without a resolution needs
   ``mpp=``. Every output coordinate is in level-0 px: model px ``x`` is level-0
   ``(x + 0.5) * s - 0.5`` with ``s`` = model mpp / slide mpp.
2. **Tissue.** A mask on a low-resolution view (:mod:`sparsecell.slides.tissue`); tiles with no
   tissue (or outside the ROI) are never read or run.
3. **Tiles.** The model-resolution slide is cut by :class:`sparsecell.inference.tiling.TileGrid`
   (the same tiles as :meth:`Detector.heatmap` on an image). DataLoader workers read and
   resample tiles; the main process runs them in batches; a thread finds peaks and
   writes cells while the next batch runs.
4. **Seams.** :class:`sparsecell.inference.tiling.SeamPeaks` finds the peaks of the stitched
   heatmap as cores arrive, holding only tile frames: each cell once, the whole heatmap
   never in memory.
5. **Output**, streamed as cells are found (never all cells as Python objects): per
   slide a folder with ``cells.geojson.gz`` (QuPath detections), ``cells.csv.gz``,
   ``summary.json`` (counts, Ki-67 index globally, per ROI and in the hot spot; tissue
   area; model, threshold, resolution) and ``overview.png``. The folder is written under
   a hidden name and renamed when complete, the summary last: a slide either has its
   whole output or none, and a rerun skips the slides that have it.
"""

from __future__ import annotations

import csv
import gzip
import hashlib
import io
import json
import math
import os
import queue
import shutil
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from ..errors import SlideError, SparsecellError
from ..formats.fileio import write_json
from ..inference.tiling import SeamPeaks, TileGrid

__all__ = ["SlideRun", "predict_slide", "predict_slides", "slide_inputs", "shard", "tiff_is_slide", "HOTSPOT_UM", "SlidesFailed", "write_cohort"]

#: The hot-spot field: a square of this side, in um (0.25 mm^2, about one high-power field).
HOTSPOT_UM = 500.0
#: Output files of one slide; ``summary.json`` is written last and marks the slide done.
OUTPUTS = ("cells.geojson.gz", "cells.csv.gz", "overview.png", "summary.json")


def _one_line(e: BaseException) -> str:
    return " ".join(str(e).split()) or type(e).__name__


# ---------------------------------------------------------------------------------------
# Which slides
# ---------------------------------------------------------------------------------------
def slide_inputs(items: Sequence[str]) -> list[Path]:
    """Slides from paths, folders (their slide files), globs, and ``@list.txt`` files (a
    path per line, ``#`` comments): sorted, each once."""
    import glob

    from ..formats.images import IMAGE_EXTENSIONS
    from .reader import SLIDE_EXTENSIONS

    exts = tuple(sorted(set(SLIDE_EXTENSIONS) | set(IMAGE_EXTENSIONS)))
    out: list[Path] = []
    for item in items:
        if item.startswith("@"):
            lst = Path(item[1:])
            if not lst.is_file():
                raise SlideError(f"{lst}: slide list not found")
            lines = [ln.strip() for ln in lst.read_text(errors="replace").splitlines()]
            out += slide_inputs([ln for ln in lines if ln and not ln.startswith("#")])
        elif any(ch in item for ch in "*?["):
            hits = sorted(glob.glob(item))
            if not hits:
                raise SlideError(f"{item}: no file matches this pattern")
            out += [Path(h) for h in hits]
        elif Path(item).is_dir():
            hits = sorted(p for p in Path(item).iterdir() if p.is_file() and p.suffix.lower() in exts)
            if not hits:
                raise SlideError(f"{item}: this folder holds no slide or image ({', '.join(exts)})")
            out += hits
        else:
            p = Path(item)
            if not p.exists():
                raise SlideError(f"{p}: slide not found")
            out.append(p)
    seen, uniq = set(), []
    for p in out:
        key = p.resolve()
        if key not in seen:
            seen.add(key)
            uniq.append(p)
    return uniq


def tiff_is_slide(path: str | os.PathLike) -> bool:
    """Whether a TIFF is a slide: it is tiled, holds several pages (a pyramid's levels,
    an SVS-like thumbnail) or is larger than one model tile (:data:`~sparsecell.inference.tiling.TILE`
    px) on a side. A small plain TIFF is an image. Only the file's directory is read, never
    its pixels; a file tifffile cannot parse is not one (the image reader then says why)."""
    import tifffile

    from ..inference.tiling import TILE

    try:
        with tifffile.TiffFile(path) as tf:
            page = tf.pages[0]
            if page.is_tiled or page.subifds or len(tf.pages) > 1:
                return True
            return max(int(page.imagewidth), int(page.imagelength)) > TILE
    except (OSError, ValueError, IndexError, tifffile.TiffFileError):
        return False


def shard(paths: Sequence[Path], index: int, count: int) -> list[Path]:
    """The slides of shard ``index`` of ``count`` (0-based): every ``count``-th of the
    sorted list, so shards are disjoint, cover all, and agree across machines."""
    if count < 1 or not 0 <= index < count:
        raise SparsecellError(f"--shard {index}/{count}: need 0 <= i < N")
    ordered = sorted(paths, key=lambda p: str(p))
    return [p for k, p in enumerate(ordered) if k % count == index]


def slide_name(path: Path) -> str:
    """The output folder name of a slide: its file name without the extension(s)."""
    name = path.name
    for ext in (".ome.tiff", ".ome.tif"):
        if name.lower().endswith(ext):
            return name[: -len(ext)]
    return path.stem


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


# ---------------------------------------------------------------------------------------
# One slide
# ---------------------------------------------------------------------------------------

def default_workers(cores: int | None = None) -> int:
    """Tile-reading worker processes for this machine: none on 2 cores or fewer (the
    model keeps them busy, and a reader beside it only competes: measured slower here,
    ``benchmarks/slide_speed.py``), else a quarter of the cores, at most 4 (decoding a
    tile is cheaper than running the model on it)."""
    if cores is None:
        try:
            cores = len(os.sched_getaffinity(0))  # the cores this process may use (cgroups, taskset)
        except AttributeError:  # not Linux
            cores = os.cpu_count() or 1
    return 0 if cores <= 2 else min(4, max(1, cores // 4))

@dataclass
class SlideRun:
    """Settings shared by every slide of a run."""

    threshold: float
    model_mpp: float
    model_sha: str
    checkpoint: str = ""
    tissue: bool = True
    rois: list | None = None  # sparsecell.formats.qupath.Region list, level-0 px
    batch_size: int = 4
    num_workers: int = field(default_factory=lambda: default_workers())  # tile-reading processes
    mpp: float | None = None  # the slides' resolution when they carry none (or a wrong one)
    backend: str = "auto"
    class_map: dict | None = None
    hotspot_um: float = HOTSPOT_UM
    progress: bool = True
    index_error: float | None = None  # the model's RMS per-image Ki-67 index error on validation, points


class _TileReader:
    """The tiles' pixels at model resolution, as a map-style dataset (picklable: the
    slide reopens in each worker)."""

    def __init__(self, slide, grid: TileGrid, tiles: list[tuple[int, int]], scale: float):
        self.slide, self.grid, self.tiles, self.scale = slide, grid, tiles, scale

    def __len__(self) -> int:
        return len(self.tiles)

    def __getitem__(self, i: int):
        from ..models.inputs import to_tensor

        r, c = self.tiles[i]
        y0, y1, x0, x1 = self.grid.input_box(r, c)
        s = self.scale
        img = self.slide.read((x0 * s, y0 * s, x1 * s, y1 * s), (x1 - x0, y1 - y0))
        return r, c, to_tensor(img)


def _worker_init(_):
    from .reader import configure_worker

    configure_worker()


def _tissue(slide, run: SlideRun):
    """The tissue mask on a low-resolution view, its level-0 px per mask px, and the view."""
    from .tissue import TISSUE_MPP, tissue_mask

    W0, H0 = slide.dimensions
    side = max(W0, H0)
    want = side * slide.mpp / TISSUE_MPP
    thumb, ds = slide.thumbnail(int(min(max(want, 512), 4096, side)))
    if not run.tissue:
        return np.ones(thumb.shape[:2], bool), ds, thumb
    mask, _ = tissue_mask(thumb)
    return mask, ds, thumb


def _tile_plan(grid: TileGrid, scale: float, mask: np.ndarray, mask_ds: float, rois) -> list[tuple[int, int]]:
    """The tiles to run: those whose core holds tissue and meets an ROI's bounds."""
    keep = []
    mh, mw = mask.shape
    for r, c in grid:
        y0, y1, x0, x1 = grid.core_box(r, c)
        X0, Y0, X1, Y1 = x0 * scale, y0 * scale, x1 * scale, y1 * scale  # level-0 box
        if rois is not None and not any(_box_meets(reg.bounds, (X0, Y0, X1, Y1)) for reg in rois):
            continue
        a0, a1 = int(Y0 // mask_ds), min(int(math.ceil(Y1 / mask_ds)), mh)
        b0, b1 = int(X0 // mask_ds), min(int(math.ceil(X1 / mask_ds)), mw)
        if mask[a0:max(a1, a0 + 1), b0:max(b1, b0 + 1)].any():
            keep.append((r, c))
    return keep


def _tissue_share(reg, mask: np.ndarray, mask_ds: float) -> float:
    """The share of an ROI that is tissue: of the mask px whose centres lie in it, the
    tissue ones (an ROI smaller than a mask px: the mask at its centre)."""
    x0, y0, x1, y1 = reg.bounds
    mh, mw = mask.shape
    a0, a1 = max(int(y0 // mask_ds), 0), min(int(math.ceil(y1 / mask_ds)), mh)
    b0, b1 = max(int(x0 // mask_ds), 0), min(int(math.ceil(x1 / mask_ds)), mw)
    if a1 <= a0 or b1 <= b0:
        return 0.0
    yy, xx = np.mgrid[a0:a1, b0:b1]
    inside = reg.contains(np.column_stack([(xx.ravel() + 0.5) * mask_ds, (yy.ravel() + 0.5) * mask_ds]))
    if not inside.any():
        cy = min(max(int((y0 + y1) / 2 // mask_ds), 0), mh - 1)
        cx = min(max(int((x0 + x1) / 2 // mask_ds), 0), mw - 1)
        return float(mask[cy, cx])
    return float(mask[a0:a1, b0:b1].ravel()[inside].mean())


def _box_meets(a, b) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


_ARENAS_SET = False


def limit_malloc_arenas(arenas: int = 2) -> None:
    """Cap glibc's malloc arenas (Linux; a no-op elsewhere): each thread that allocates
    may otherwise get its own heap arena, so the heatmap cores the peak-finding thread
    frees are not reused by the main thread. Measured on this 2-core machine, peak RSS
    still wanders between runs of the same slide with the cap (1.2-2.6 GB, set by the
    model's batch); the cap bounds the thread arenas, not that."""
    global _ARENAS_SET
    if _ARENAS_SET:
        return
    _ARENAS_SET = True
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(-8, int(arenas))  # M_ARENA_MAX
    except (OSError, AttributeError):
        pass


def predict_slide(detector, path: Path, out_dir: Path, run: SlideRun, label: str | None = None) -> dict:
    """Run one slide and write its folder ``out_dir`` (which must not exist); return
    its summary. See the module docstring for the steps. ``label`` heads the progress
    bar (e.g. "[3/120] S3")."""
    from .reader import open_slide

    path = Path(path)
    limit_malloc_arenas()
    slide = open_slide(path, backend=run.backend, mpp=run.mpp)
    try:
        return _predict_open_slide(detector, slide, path, Path(out_dir), run, label or slide_name(path))
    finally:
        slide.close()


def _predict_open_slide(detector, slide, path: Path, out_dir: Path, run: SlideRun, label: str) -> dict:
    import torch

    from ..inference.detector import predict_heatmap
    from .ki67 import MIN_CELLS, CountGrid, cutoff_warning, index_interval, interval_basis, is_negative, is_positive, ki67_index
    from ..formats.qupath import DetectionWriter

    t_start = time.time()
    if slide.mpp is None:
        raw = getattr(slide, "mpp_raw", None)
        why = f"its resolution {raw:g} um/px is not plausible" if raw else "the file records no resolution (um per pixel)"
        raise SlideError(f"{path}: {why}; give it with --mpp")
    rois = run.rois
    W0, H0 = slide.dimensions
    if rois is not None:
        inside = [reg for reg in rois if _box_meets(reg.bounds, (0, 0, W0, H0))]
        if not inside:
            raise SlideError(f"{path}: no ROI lies on this slide ({W0} x {H0} px); check the ROI file")
        rois = inside
    scale = run.model_mpp / slide.mpp  # level-0 px per model px
    if abs(scale - 1.0) < 0.02:
        scale = 1.0  # within 2 %: read the pixels as they are
    Wm, Hm = int(W0 / scale), int(H0 / scale)
    if Wm < 1 or Hm < 1:
        raise SlideError(f"{path}: {W0} x {H0} px at {slide.mpp:g} um/px is smaller than one pixel at the model's {run.model_mpp:g} um/px")
    grid = TileGrid(Hm, Wm, detector.tile, detector.halo)
    mask, mask_ds, thumb = _tissue(slide, run)
    plan = _tile_plan(grid, scale, mask, mask_ds, rois)
    classes = detector.classes
    seams = SeamPeaks(grid, classes, run.threshold, detector.eval.min_distance, detector.eval.peak_mode)
    pos = np.array([is_positive(c) for c in classes])
    neg = np.array([is_negative(c) for c in classes])
    field_px = run.hotspot_um / slide.mpp
    counts_grid = CountGrid(W0, H0, field_px / 4)
    density = np.zeros(mask.shape, np.int32)  # cells per mask px, for the overview
    per_class = np.zeros(len(classes), np.int64)
    per_roi = np.zeros((len(rois) if rois else 0, len(classes)), np.int64)

    out_dir.mkdir(parents=True)
    id_key = f"{slide_name(path)}:{os.path.getsize(path)}:{run.model_sha[:16]}"
    writer = DetectionWriter(out_dir / "cells.geojson.gz", classes, id_key, mapping=run.class_map).open()
    for k, reg in enumerate(rois or []):  # the ROIs as annotations: select one in QuPath to see its Positive %
        writer.add_annotation(reg.polygons[0][0], reg.name or f"ROI {k + 1}", reg.classification or "Region*")
    csv_f = io.TextIOWrapper(gzip.open(out_dir / "cells.csv.gz", "wb", compresslevel=6), encoding="utf-8", newline="")
    table = csv.writer(csv_f)
    table.writerow(["x", "y", "class", "score"])

    def handle(pts) -> None:  # model-px peaks -> level-0 cells, counted and written
        if not len(pts):
            return
        xy = (pts.xy + 0.5) * scale - 0.5
        lab, sc = pts.labels, pts.scores
        my = np.clip((xy[:, 1] / mask_ds).astype(int), 0, mask.shape[0] - 1)
        mx = np.clip((xy[:, 0] / mask_ds).astype(int), 0, mask.shape[1] - 1)
        if run.tissue:  # a tile holds glass too: only the cells on tissue (the mask, with its margin) count
            keep = mask[my, mx]
            if not keep.all():
                xy, lab, sc, my, mx = xy[keep], lab[keep], sc[keep], my[keep], mx[keep]
                if not len(xy):
                    return
        if rois is not None:
            ins = np.zeros((len(rois), len(xy)), bool)
            for k, reg in enumerate(rois):
                ins[k] = reg.contains(xy)
            keep = ins.any(0)
            for k in range(len(rois)):
                per_roi[k] += np.bincount(lab[ins[k]], minlength=len(classes))
            xy, lab, sc, my, mx = xy[keep], lab[keep], sc[keep], my[keep], mx[keep]
            if not len(xy):
                return
        per_class[:] += np.bincount(lab, minlength=len(classes))
        writer.write(xy, lab, sc)
        table.writerows([f"{x:.2f}", f"{y:.2f}", classes[k], f"{p:.4f}"] for (x, y), k, p in zip(xy.tolist(), lab.tolist(), sc.tolist()))
        tumour = pos[lab] | neg[lab]
        counts_grid.add(xy[tumour], pos[lab][tumour])
        np.add.at(density, (my, mx), 1)

    planned = set(plan)
    for r, c in grid:
        if (r, c) not in planned:
            handle(seams.skip(r, c))

    # the post-processing thread: peaks and writing, while the model runs the next batch
    work: queue.Queue = queue.Queue(maxsize=2)
    failure: list[BaseException] = []

    def post():
        while True:
            item = work.get()
            if item is None:
                return
            if failure:
                continue
            try:
                for r, c, core in item:
                    handle(seams.add(r, c, core))
            except BaseException as e:  # noqa: BLE001 - handed to the main thread
                failure.append(e)

    thread = threading.Thread(target=post, name="sparsecell-peaks", daemon=True)
    thread.start()
    reader = _TileReader(slide, grid, plan, scale)
    loader = torch.utils.data.DataLoader(reader, batch_size=None, shuffle=False, num_workers=run.num_workers,
                                         worker_init_fn=_worker_init if run.num_workers else None,
                                         persistent_workers=False, prefetch_factor=4 if run.num_workers else None)  # fmt: skip
    bar = _bar(len(plan), label, run.progress)
    t_model = 0.0
    try:
        batch: list = []

        def flush():
            nonlocal t_model
            if not batch:
                return
            t0 = time.time()
            x = torch.stack([b[2] for b in batch]).to(detector.device)
            with torch.inference_mode():
                heat, _ = predict_heatmap(detector.model, x)
                heat = heat.cpu().numpy()
            t_model += time.time() - t0
            cores = []
            for k, (r, c, _) in enumerate(batch):
                y0, y1, x0, x1 = grid.core_box(r, c)
                ys, _, xs, _ = grid.input_box(r, c)
                cores.append((r, c, heat[k][:, y0 - ys:y1 - ys, x0 - xs:x1 - xs].copy()))
            work.put(cores)
            bar.update(len(batch))
            batch.clear()
            if failure:
                raise failure[0]

        try:
            for r, c, x in loader:
                if batch and (len(batch) >= run.batch_size or batch[0][2].shape != x.shape):
                    flush()
                batch.append((r, c, x))
            flush()
        except SparsecellError:
            raise
        except (RuntimeError, OSError, ValueError) as e:
            if failure:
                raise failure[0] from None
            raise SlideError(f"{path}: {_one_line(e)}") from None
    finally:
        work.put(None)
        thread.join()
        bar.close()
        try:
            writer.close(complete=not failure)
        finally:
            csv_f.close()
    if failure:
        raise failure[0]
    if seams.pending:  # every tile was given: nothing may wait
        raise RuntimeError(f"{path}: {seams.pending} tiles were never decided (a bug)")

    # the report
    n_tumour = int(per_class[pos | neg].sum())
    P, N = int(per_class[pos].sum()), int(per_class[neg].sum())
    mask_px_mm2 = (mask_ds * slide.mpp) ** 2 / 1e6
    tissue_mm2 = float(mask.sum()) * mask_px_mm2 if run.tissue else None
    roi_mm2 = [reg.area * slide.mpp**2 / 1e6 for reg in rois or []]
    if run.tissue:  # cells were counted on tissue only: so is the area
        roi_mm2 = [a * _tissue_share(reg, mask, mask_ds) for a, reg in zip(roi_mm2, rois or [])]
    if rois is not None:  # cells were counted inside the ROIs only
        area_mm2 = sum(roi_mm2)
    else:
        area_mm2 = tissue_mm2 if tissue_mm2 is not None else W0 * H0 * slide.mpp**2 / 1e6
    summary = {
        "slide": str(path),
        "name": slide_name(path),
        "cells": int(per_class.sum()),
        "counts": {c: int(n) for c, n in zip(classes, per_class)},
        "positive": P if pos.any() else None,
        "negative": N if neg.any() else None,
        "ki67_index": ki67_index(P, N) if (pos.any() and neg.any()) else None,
        "ki67_index_ci": None,
        "ki67_crosses_cutoff": [],
        "ki67_index_ci_basis": None,
        "tissue_mm2": tissue_mm2,
        "cells_per_mm2": (int(per_class.sum()) / area_mm2) if area_mm2 else None,
        "hotspot": None,
        "rois": [],
        "warnings": [],
        "slide_mpp": slide.mpp,
        "slide_mpp_source": getattr(slide, "mpp_source", None),
        "slide_size": [W0, H0],
        "model_mpp": run.model_mpp,
        "checkpoint": run.checkpoint,
        "model_sha256": run.model_sha,
        "threshold": run.threshold,
        "method": {"peaks": detector.eval.peak_mode, "min_distance_px": detector.eval.min_distance,
                   "tissue_mask": run.tissue, "hotspot_field_um": run.hotspot_um},  # fmt: skip
        "tiles": {"run": len(plan), "total": len(grid), "tile_px": detector.tile, "halo_px": detector.halo},
        "seconds": None,
        "model_seconds": round(t_model, 2),
        "peak_frames_mib": round(seams.peak_bytes / 2**20, 3),  # the seam frames held at once: grows with the slide's width only
    }
    if pos.any() and neg.any():
        ci, crossed = index_interval(P, N, run.index_error)
        summary.update(ki67_index_ci=ci, ki67_crosses_cutoff=crossed, ki67_index_ci_basis=interval_basis(run.index_error))
        if ci is not None and cutoff_warning(summary["ki67_index"], ci, crossed):
            summary["warnings"].append(cutoff_warning(summary["ki67_index"], ci, crossed))
        hot = counts_grid.hotspot(field_px, min_cells=MIN_CELLS)
        if hot is not None:  # its interval, and its density over its tissue (the mask's area in the field)
            hot["index_ci"] = index_interval(hot["positive"], hot["total"] - hot["positive"], run.index_error)[0]
            a0, a1 = int(hot["y0"] // mask_ds), int(math.ceil(hot["y1"] / mask_ds))
            b0, b1 = int(hot["x0"] // mask_ds), int(math.ceil(hot["x1"] / mask_ds))
            hot["tissue_mm2"] = float(mask[a0:a1, b0:b1].sum()) * mask_px_mm2
            hot["cells_per_mm2"] = hot["total"] / hot["tissue_mm2"] if hot["tissue_mm2"] else None
        summary["hotspot"] = hot
        if n_tumour < MIN_CELLS:
            summary["warnings"].append(f"only {n_tumour} tumour cells were counted (fewer than {MIN_CELLS}): "
                                       "the Ki-67 index is not reliable")  # fmt: skip
    if rois is not None:
        for k, reg in enumerate(rois):
            cnt = per_roi[k]
            p_, n_ = int(cnt[pos].sum()), int(cnt[neg].sum())
            summary["rois"].append({"name": reg.name, "class": reg.classification, "area_mm2": reg.area * slide.mpp**2 / 1e6,
                                    "tissue_mm2": roi_mm2[k] if run.tissue else None,
                                    "cells_per_mm2": int(cnt.sum()) / roi_mm2[k] if roi_mm2[k] else None,
                                    "cells": int(cnt.sum()), "counts": {c: int(n) for c, n in zip(classes, cnt)},
                                    "ki67_index": ki67_index(p_, n_) if (pos.any() and neg.any()) else None,
                                    "ki67_index_ci": index_interval(p_, n_, run.index_error)[0] if (pos.any() and neg.any()) else None})  # fmt: skip
    _overview(thumb, mask, density, out_dir / "overview.png")
    summary["seconds"] = round(time.time() - t_start, 2)
    write_json(summary, out_dir / "summary.json")
    return summary


def _overview(thumb: np.ndarray, mask: np.ndarray, density: np.ndarray, path: Path) -> None:
    """The slide's thumbnail, the tissue outline in green, and cell density in red."""
    from scipy import ndimage

    from ..report import save_png

    img = thumb[: mask.shape[0], : mask.shape[1]].astype(np.float32)
    if density.max() > 0:
        d = ndimage.gaussian_filter(density.astype(np.float32), 1.0)
        a = (d / d.max())[..., None] * 0.6
        img = img * (1 - a) + np.array([230.0, 30.0, 30.0]) * a
    edge = mask & ~ndimage.binary_erosion(mask)
    img[edge] = (40, 200, 40)
    save_png(np.clip(img, 0, 255).astype(np.uint8), path)


class _NoBar:
    def update(self, n):
        pass

    def close(self):
        pass


def _bar(total: int, desc: str, show: bool):
    if not show:
        return _NoBar()
    try:
        from tqdm import tqdm
    except ImportError:
        return _NoBar()
    import sys

    return tqdm(total=total, desc=desc, unit="tile", leave=False, disable=not sys.stderr.isatty())


# ---------------------------------------------------------------------------------------
# Many slides
# ---------------------------------------------------------------------------------------
def _done(folder: Path, run: SlideRun) -> bool | None:
    """True: the slide's folder holds a finished run of this model and threshold; False:
    of another; None: no finished run."""
    s = folder / "summary.json"
    if not s.is_file():
        return None
    try:
        prev = json.loads(s.read_text())
    except (OSError, ValueError):
        return False
    return prev.get("model_sha256") == run.model_sha and prev.get("threshold") == run.threshold


class SlidesFailed(SlideError):
    """Some slides of a run failed (unreadable, corrupt, no resolution, ...); every other
    slide was run. ``failures``: (slide, one-line reason) each; ``results``: the
    summaries of the slides run or skipped."""

    def __init__(self, failures: list[tuple[Path, str]], results: list[dict], total: int):
        self.failures, self.results = failures, results
        first = failures[0][1]
        super().__init__(f"{len(failures)} of {total} slides failed; the first: {first}" if total > 1 else first)


#: OSErrors of the output's disk, not of a slide: they stop the run.
_DISK_ERRNOS = {28, 30, 122}  # ENOSPC, EROFS, EDQUOT


def _failure_file(out: Path, name: str) -> Path:
    """The record of a slide that failed (hidden; read by :func:`write_cohort`)."""
    return out / f".failed-{name}.json"


def predict_slides(detector, paths: Sequence[Path], out: Path, run: SlideRun, overwrite: bool = False,
                   log: Callable[[str], None] = print) -> list[dict]:  # fmt: skip
    """Run each slide into ``out/<name>/``; a slide already done with this model and
    threshold is skipped (a rerun resumes), one done with another is refused unless
    ``overwrite``. Returns the summaries of the slides run or skipped.

    A slide that fails (unreadable, corrupt, no resolution, no ROI on it) leaves no
    folder, is recorded in ``out/.failed-<name>.json`` (its row in ``cohort.csv``; removed
    when a rerun finishes it) and the others still run; at the end :class:`SlidesFailed`
    is raised. Problems of the whole run (names that collide, folders in the way, a
    full or read-only disk) raise at once."""
    out = Path(out)
    names: dict[str, Path] = {}
    for p in paths:
        n = slide_name(p)
        if n in names:
            raise SparsecellError(f"{p}: two slides share the name {n!r} ({names[n]}); their outputs would collide")
        names[n] = p
    for p in paths:
        final = out / slide_name(p)
        d = _done(final, run)
        if d is False and not overwrite:
            raise SparsecellError(f"{final}: holds the output of another model or threshold; "
                                  "choose another --out or add --overwrite")  # fmt: skip
        if d is None and final.exists() and not overwrite:
            raise SparsecellError(f"{final}: exists and is not a finished sparsecell slide folder; "
                                  "choose another --out or add --overwrite to replace it")  # fmt: skip
    out.mkdir(parents=True, exist_ok=True)
    results: list[dict] = []
    failures: list[tuple[Path, str]] = []
    for k, p in enumerate(paths, 1):
        final = out / slide_name(p)
        failed = _failure_file(out, slide_name(p))
        if _done(final, run):
            log(f"[{k}/{len(paths)}] {p}: done already, skipped")
            results.append(json.loads((final / "summary.json").read_text()))
            failed.unlink(missing_ok=True)
            continue
        stage = out / f".tmp-{slide_name(p)}-{os.getpid()}"
        shutil.rmtree(stage, ignore_errors=True)
        try:
            summary = predict_slide(detector, p, stage, run, label=f"[{k}/{len(paths)}] {slide_name(p)}")
            if final.exists():  # checked above: --overwrite was given
                shutil.rmtree(final)
            os.replace(stage, final)
        except (SparsecellError, OSError) as e:
            if isinstance(e, OSError) and e.errno in _DISK_ERRNOS:
                raise
            reason = _one_line(e)
            if isinstance(e, OSError) and e.filename and str(e.filename) not in reason:
                reason = f"{e.filename}: {reason}"
            if not reason.startswith(str(p)):
                reason = f"{p}: {reason}"
            failures.append((p, reason))
            write_json({"slide": str(p), "name": slide_name(p), "status": f"failed: {reason}",
                        "model_sha256": run.model_sha, "threshold": run.threshold}, failed)  # fmt: skip
            log(f"[{k}/{len(paths)}] {p}: failed: {reason}")
            continue
        finally:
            shutil.rmtree(stage, ignore_errors=True)
        failed.unlink(missing_ok=True)
        ki = ""
        if summary.get("ki67_index") is not None:
            ci = summary.get("ki67_index_ci")
            ki = f", Ki-67 index {summary['ki67_index']:.1%}" + (f" ({ci[0]:.1%}-{ci[1]:.1%})" if ci else "")
        log(f"[{k}/{len(paths)}] {p}: {summary['cells']} cells {summary['counts']}{ki} "
            f"({summary['tiles']['run']}/{summary['tiles']['total']} tiles, {summary['seconds']:.1f} s)")  # fmt: skip
        for w in summary["warnings"]:
            log(f"    warning: {w}")
        results.append(summary)
    if failures:
        raise SlidesFailed(failures, results, len(paths))
    return results


COHORT_COLUMNS = ("name", "slide", "status", "cells", "positive", "negative", "ki67_index", "ki67_index_ci_low",
                  "ki67_index_ci_high", "ki67_crosses_cutoff", "hotspot_index", "tissue_mm2", "cells_per_mm2", "slide_mpp",
                  "model_mpp", "threshold", "model_sha256", "warnings")  # fmt: skip


def write_cohort(out: Path) -> Path:
    """``out/cohort.csv``: a row per finished slide folder in ``out`` (from its
    ``summary.json``; status ``ok``) and per slide that failed and has none (status
    ``failed: <reason>``), sorted by name; rebuilt from the folders, so shards and ranks
    merge by rerunning it."""
    from ..formats.fileio import atomic_write_text

    out = Path(out)
    rows: dict[str, list] = {}
    for s in sorted(out.glob("*/summary.json")):
        if s.parent.name.startswith("."):
            continue
        try:
            d = json.loads(s.read_text())
        except (OSError, ValueError):
            continue
        hs = d.get("hotspot") or {}
        ci = d.get("ki67_index_ci") or [None, None]
        d = {**d, "status": "ok", "hotspot_index": hs.get("index"), "warnings": " | ".join(d.get("warnings") or []),
             "ki67_index_ci_low": ci[0], "ki67_index_ci_high": ci[1],
             "ki67_crosses_cutoff": " ".join(f"{c:.0%}" for c in d.get("ki67_crosses_cutoff") or [])}  # fmt: skip
        rows[s.parent.name] = ["" if d.get(k) is None else d.get(k) for k in COHORT_COLUMNS]
    for f in sorted(out.glob(".failed-*.json")):
        try:
            d = json.loads(f.read_text())
        except (OSError, ValueError):
            continue
        name = f.name[len(".failed-"):-len(".json")]
        if name not in rows:  # a finished folder wins over an old failure
            rows[name] = ["" if d.get(k) is None else d.get(k) for k in COHORT_COLUMNS]
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(COHORT_COLUMNS)
    w.writerows(rows[n] for n in sorted(rows))
    return atomic_write_text(out / "cohort.csv", buf.getvalue())
