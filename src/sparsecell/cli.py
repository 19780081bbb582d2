"""The ``sparsecell`` command: train, evaluate, predict, export, demo.

Each subcommand is a thin wrapper of the Python API (:func:`sparsecell.training.loop.train`,
:class:`sparsecell.inference.detector.Detector`, :func:`sparsecell.inference.detector.evaluate`).
Errors in the user's input print one line and exit with status 2.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from .config import RULES, in_range, range_text
from .errors import SparsecellError
from .formats.fileio import write_json

def _methods_text() -> str:
    from .catalogue import CHOICES, DEFAULT_LOSS, RESEARCH

    rows = [f"  {n:8s} {t}" for n, t in CHOICES.items()]
    return ("methods (--method NAME, or loss.name=NAME in a config):\n" + "\n".join(rows)
            + f"\n  research variants, for the benchmark (not recommended): {', '.join(RESEARCH)}"
            + f"\n  default: {DEFAULT_LOSS}")  # fmt: skip


EXAMPLES = {
    "train": "examples:\n  sparsecell train                      # the defaults: synthetic Ki-67 tiles, method pu_sar\n"
             "  sparsecell train configs/crchisto.yaml data.root=../shared/data/crchisto --method ce --out runs/ce",
    "evaluate": "example:\n  sparsecell evaluate runs/train/checkpoints/best.ckpt ../shared/data/crchisto --split test --radius 6",
    "predict": "examples:\n  sparsecell predict runs/demo/pu_sar/checkpoints/best.ckpt tile1.png tile2.png --out predictions/\n"
               "  sparsecell predict runs/demo/pu_sar/checkpoints/best.ckpt slides/ --out results/   # whole slides",
    "fit-classical": "example:\n  sparsecell fit-classical ../shared/data/crchisto --split validation --out classical.json\n"
                     "  sparsecell predict classical.json slides/ --out results/\n"
                     "  sparsecell predict --classical slide.svs --out results/   # its default settings, no fit",
    "export": "example:\n  sparsecell export runs/demo/pu_sar/checkpoints/best.ckpt model.onnx\n  sparsecell predict model.onnx slides/ --out results/",
    "suggest": "examples (the annotate-next loop):\n"
               "  sparsecell suggest runs/r0/checkpoints/best.ckpt my_slides/ --out next/ --regions 10\n"
               "  # in QuPath: import next/S1.geojson, click every tumour cell in each square, export S1.geojson\n"
               "  sparsecell train my_slides.yaml --init runs/r0/checkpoints/best.ckpt --out runs/r1",
    "demo": "example:\n  sparsecell demo            # synthetic IHC tiles, 25% of the labels: pu_sar (the default) vs ce, const, sel_sfl, pu\n"
            "  sparsecell demo --quick    # the same in about a minute, for a first look",
}


def _number(kind: str, rule: tuple):
    """An argparse type: a finite number within a range rule of :mod:`sparsecell.config`."""
    import math

    def parse(text: str) -> float:
        try:
            v = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
        if not (math.isfinite(v) and in_range(v, rule)):
            raise argparse.ArgumentTypeError(f"{text} is not a {kind} ({range_text(rule)})")
        return v

    return parse


def _count(low: int):
    """An argparse type: a whole number >= ``low``."""

    def parse(text: str) -> int:
        try:
            v = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        if v < low:
            raise argparse.ArgumentTypeError(f"{text} is below {low}")
        return v

    return parse


POSITIVE = _number("positive number", ("(", 0, float("inf"), ")"))
POINTS = _number("number of percentage points", ("[", 0, 100, "]"))
THRESHOLD = _number("threshold", RULES["eval.threshold"])  # the range eval.threshold has in a config


# ---------------------------------------------------------------------------------------
def cmd_train(args) -> int:
    from .config import load_config
    from .training.loop import train

    config, overrides = args.config, list(args.overrides)
    if config is not None and "=" in config and not Path(config).is_file():
        config, overrides = None, [config] + overrides  # no config file: only overrides
    if args.method:
        overrides.append(f"loss.name={args.method}")
    if args.out:
        overrides.append(f"train.out_dir={args.out}")
    if args.init:
        overrides.append(f"train.init={args.init}")
    if args.bootstrap:
        overrides.append(f"data.bootstrap={args.bootstrap}")
    cfg = load_config(config, overrides)
    r = train(cfg, resume=args.resume)
    print(f"best validation F1 {r.val_f1:.3f} at threshold {r.threshold:g}")
    print(f"wrote {r.best_checkpoint} (best), {r.last_checkpoint} (last), {r.out_dir / 'config.yaml'}; logs in {r.out_dir / 'logs'}")
    return 0


def cmd_suggest(args) -> int:
    from .annotate.suggest import SuggestRun, suggest
    from .errors import CheckpointError
    from .inference.detector import Detector
    from .slides.pipeline import slide_inputs

    if Path(args.checkpoint).suffix.lower() == ".onnx":
        raise CheckpointError(f"{args.checkpoint}: an ONNX export; suggest needs the .ckpt it was exported from (its node embeddings)")
    det = Detector.from_checkpoint(args.checkpoint, device=args.device)
    slides = slide_inputs(args.inputs)
    run = SuggestRun(regions=args.regions, size_um=args.size_um, strategy=args.strategy, cells=args.cells,
                     tta=args.tta or args.strategy == "disagree",
                     mpp=args.mpp, overwrite=args.overwrite)  # fmt: skip
    rows = suggest(det, slides, Path(args.out), run, log=lambda m: print(f"sparsecell suggest: {m}", flush=True))
    print(f"wrote {len(rows)} suggestions for {len(slides)} slide(s) to {args.out} (one GeoJSON and overview per slide, "
          "suggestions.csv): import each GeoJSON into QuPath, click every tumour cell in each square, export, and train "
          f"with --init {args.checkpoint}")  # fmt: skip
    return 0


def cmd_evaluate(args) -> int:
    from .datasets import detect_source, open_dataset
    from .inference.detector import evaluate
    from .inference.load import load_detector
    from .report import results_table

    det = _open_model(args, args.device, lambda m: None)
    root = Path(args.data)
    if not root.exists():
        raise SparsecellError(f"{root}: data folder not found")
    source = args.source or detect_source(root)
    ds = open_dataset(source, root, args.split, mode=args.mode)
    if ds.classes != det.classes and not set(ds.classes) <= set(det.classes):
        raise SparsecellError(f"{root}: the data's classes {list(ds.classes)} are not the model's {list(det.classes)}; "
                              "evaluate on data of the classes it was trained on")  # fmt: skip
    samples = [ds[i] for i in _progress(range(len(ds)), "loading")]
    radius, mpp = args.radius, args.mpp if args.mpp is not None else det.eval.mpp
    if args.radius_um is not None:
        from .metrics import radius_px

        try:
            radius = radius_px(args.radius_um, "um", mpp)
        except ValueError as e:
            raise SparsecellError(f"--radius-um: {e}") from None
    ev = evaluate(det, samples, radius=radius, threshold=args.threshold)
    if ev.ki67 is not None:
        k = ev.ki67
        lo, hi = k.loa
        print(f"Ki-67 index over {k.n_images} images (percentage points, predicted - true): mean absolute error "
              f"{k.mae:.1f} (RMS {k.rmse:.1f}: predict's --ki67-error), within 5: {k.within(5):.0%}, within 10: {k.within(10):.0%}, bias {k.bias:+.1f}, "
              f"95% limits of agreement {lo:+.1f} to {hi:+.1f}; pooled index {k.pooled_pred:.1f}% (true {k.pooled_true:.1f}%)")  # fmt: skip
    res = ev.as_dict()
    res.update({"checkpoint": str(args.checkpoint), "data": str(root), "source": source, "split": args.split})
    rows = {k: dict(ev.scores[k].as_dict(), threshold=ev.threshold, ap=ev.ap if k == "all" else float("nan"))
            for k in list(det.classes) + (["all"] if len(det.classes) > 1 else [])}  # fmt: skip
    print(results_table(rows))
    um = f" = {ev.radius * mpp:g} um" if mpp else ""
    print(f"micro = TP/FP/FN summed over {ev.n_images} images; per image = P and R averaged over images; "
          f"radius {ev.radius:g} px{um}; " + ", ".join(f"F1 at {t:g}: {f:.3f}" for t, f in sorted(ev.f1_at.items(), reverse=True)))  # fmt: skip
    base = Path(args.checkpoint).parent.parent if Path(args.checkpoint).suffix.lower() != ".json" else Path(args.checkpoint).parent
    out = Path(args.out) if args.out else base / f"evaluate_{source}_{args.split or 'all'}.json"
    if out.exists() and not args.overwrite:
        raise SparsecellError(f"{out}: exists; choose another --out or add --overwrite")
    write_json(res, out)
    print(f"wrote {out}")
    return 0


def cmd_predict(args) -> int:
    """Outputs are written to a hidden staging folder inside ``--out`` and moved into
    place at the end, the summary last: a run that fails leaves nothing behind, and an
    existing file is replaced only with ``--overwrite``."""
    import shutil
    import tempfile

    from .formats.images import image_size, read_image
    from .formats.points import write_csv, write_geojson
    from .metrics import ki67_classes, ki67_index
    from .report import overlay, save_png
    from .slides.ki67 import index_interval, interval_basis

    if args.classical:  # no model file: every positional argument is an input
        args.images, args.checkpoint = [args.checkpoint] + list(args.images), None
    elif not args.images:
        raise SparsecellError("predict: give the model and at least one image or slide (or --classical and the inputs)")
    if _slide_mode(args):
        return _predict_slides(args)
    # every input checked before anything is written
    det = _open_model(args, args.device, print)
    paths = [Path(p) for p in args.images]
    seen: dict[str, Path] = {}
    for path in paths:
        if path.stem in seen:
            raise SparsecellError(f"{path}: two input images share the name {path.stem!r} ({seen[path.stem]}); "
                                  "their outputs would overwrite each other")  # fmt: skip
        seen[path.stem] = path
        image_size(path)  # exists and is an image
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise SparsecellError(f"{out}: --out is a file, not a folder")
    suffixes = [".csv", ".geojson"] + ([] if args.no_overlay else ["_overlay.png"])
    planned = [out / f"{p.stem}{sfx}" for p in paths for sfx in suffixes] + [out / "summary.json"]
    existing = [p for p in planned if p.exists()]
    if existing and not args.overwrite:
        raise SparsecellError(f"{existing[0]}: exists ({len(existing)} of the {len(planned)} output files do); "
                              "choose another --out or add --overwrite")  # fmt: skip
    out.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(prefix=".sparsecell-predict-", dir=out))
    try:
        thr = det.threshold if args.threshold is None else args.threshold
        summary = {"checkpoint": _model_name(args), "threshold": thr, "classes": list(det.classes), "images": {}}
        masks, err = ki67_classes(det.classes), _index_error(args, det)
        if masks is not None:
            summary["ki67_index_ci_basis"] = interval_basis(err)
        for path in _progress(paths, "predicting"):
            stem = path.stem
            img = read_image(path)
            pts = det.predict(img, args.threshold)
            write_csv(pts, stage / f"{stem}.csv")
            write_geojson(pts, stage / f"{stem}.geojson")
            if not args.no_overlay:
                save_png(overlay(img, pts), stage / f"{stem}_overlay.png")
            counts = pts.counts()
            entry = {"image": str(path), "cells": len(pts), "counts": counts}
            ki = ""
            if masks is not None:
                P = sum(counts[c] for c, m in zip(det.classes, masks[0]) if m)
                N = sum(counts[c] for c, m in zip(det.classes, masks[1]) if m)
                ci, crossed = index_interval(P, N, err)
                entry.update(ki67_index=ki67_index(P, N), ki67_index_ci=ci, ki67_crosses_cutoff=crossed)
                if ci is not None:
                    ki = f", Ki-67 index {entry['ki67_index']:.1%} ({ci[0]:.1%}-{ci[1]:.1%})"
            summary["images"][stem] = entry
            print(f"{path}: {len(pts)} cells {counts}{ki}")
        write_json(summary, stage / "summary.json")
        for p in planned:  # into place, the summary last
            os.replace(stage / p.name, p)
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    print(f"wrote points (CSV, QuPath GeoJSON){'' if args.no_overlay else ', overlays'} and summary.json for {len(paths)} images to {out}")
    return 0


def _open_model(args, device, log):
    """The checkpoint (or ONNX export) with the engine asked for, or the classical peer
    (``--classical``: its default settings; a ``.json`` settings file from
    ``fit-classical``); says which runs it."""
    from dataclasses import replace

    from .classical import ClassicalSettings, classical_detector, describe, is_classical_file, read_classical, read_index_error

    if getattr(args, "classical", False) or (args.checkpoint and is_classical_file(args.checkpoint)):
        settings = read_classical(args.checkpoint) if args.checkpoint else ClassicalSettings()
        if getattr(args, "model_mpp", None) is not None:  # the resolution the nucleus size is read at
            settings = replace(settings, mpp=float(args.model_mpp))
        det = classical_detector(settings, read_index_error(args.checkpoint) if args.checkpoint else None)
        log(f"classical peer ({'settings ' + str(args.checkpoint) if args.checkpoint else 'default settings'}): "
            f"{describe(det.model.settings)}")  # fmt: skip
        return det
    from .inference.load import load_detector

    det = load_detector(args.checkpoint, device, args.engine, log=log)
    log(f"model {args.checkpoint}: {'onnxruntime' if det.engine == 'onnx' else 'PyTorch'} on {det.device}")
    return det


def _index_error(args, det) -> float | None:
    """The index error that widens the Ki-67 intervals: --ki67-error, else the model's own."""
    return args.ki67_error if args.ki67_error is not None else det.index_error


def _model_name(args) -> str:
    """What ran, for the outputs' records: the checkpoint's path, or ``classical``."""
    return str(args.checkpoint) if args.checkpoint else "classical (default settings)"


def _model_sha(args, det) -> str:
    """The SHA-256 of the checkpoint or settings file, or of the default settings."""
    from .slides.pipeline import file_sha256

    if args.checkpoint:
        return file_sha256(Path(args.checkpoint))
    import hashlib

    from .classical import settings_json

    return hashlib.sha256(settings_json(det.model.settings).encode()).hexdigest()


#: Suffixes that only whole slides have (a .tif is a slide when it looks like one: tiled, pyramidal or large).
_SLIDE_ONLY = (".svs", ".ndpi", ".mrxs", ".scn", ".vms", ".vmu", ".bif", ".svslide")


def _slide_mode(args) -> bool:
    """Slides when asked (``--slides``; ``--images`` asks for images), or when an input is
    a folder, a list (@file), a glob, a slide-only file or a TIFF that is a slide (tiled,
    pyramidal or larger than one model tile: :func:`sparsecell.slides.pipeline.tiff_is_slide`)."""
    if args.slides or args.as_images:
        return bool(args.slides)
    from .slides.pipeline import tiff_is_slide

    def is_slide(i: str) -> bool:
        p = Path(i)
        if i.startswith("@") or any(ch in i for ch in "*?[") or p.is_dir() or p.suffix.lower() in _SLIDE_ONLY:
            return True
        return p.suffix.lower() in (".tif", ".tiff") and p.is_file() and tiff_is_slide(p)

    return any(is_slide(i) for i in args.images)


def _predict_slides(args) -> int:
    """Whole slides (:mod:`sparsecell.slides.pipeline`): a folder per slide, a cohort table.
    A slide that fails is recorded (``status`` in cohort.csv) and the others still run;
    then a line per failure and exit status 1."""
    from .slides.pipeline import SlideRun, SlidesFailed, predict_slides, shard, slide_inputs, write_cohort

    rank, world, local = _distributed()
    device = args.device
    if device is None and world > 1:
        import torch

        device = f"cuda:{local % torch.cuda.device_count()}" if torch.cuda.is_available() else "cpu"
    det = _open_model(args, device, (lambda m: None) if args.quiet else print)
    model_mpp = args.model_mpp if args.model_mpp is not None else det.eval.mpp
    if model_mpp is None:
        raise SparsecellError(f"{args.checkpoint}: the checkpoint does not record the resolution it was trained at "
                              "(eval.mpp); give it with --model-mpp (um per px)")  # fmt: skip
    paths = slide_inputs(args.images)
    index, count = _shard_of(args.shard)
    paths = shard(paths, index, count)
    rois = None
    if args.roi:
        from .formats.qupath import read_regions

        rois = read_regions(args.roi)
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise SparsecellError(f"{out}: --out is a file, not a folder")
    class_map = None
    if args.class_map:
        bad = [kv for kv in args.class_map if "=" not in kv]
        if bad:
            raise SparsecellError(f"--class-map {bad[0]!r}: expected NAME=QUPATH, e.g. positive='Tumor: Positive'")
        class_map = dict(kv.split("=", 1) for kv in args.class_map)
    run = SlideRun(threshold=det.threshold if args.threshold is None else args.threshold, model_mpp=float(model_mpp),
                   model_sha=_model_sha(args, det), checkpoint=_model_name(args), tissue=not args.no_tissue,
                   rois=rois, batch_size=args.batch_size, mpp=args.mpp, backend=args.backend, class_map=class_map,
                   progress=not args.quiet, index_error=_index_error(args, det),
                   **({} if args.num_workers is None else {"num_workers": args.num_workers}))  # fmt: skip
    log = (lambda m: None) if args.quiet else print
    if count > 1:
        log(f"shard {index}/{count}: {len(paths)} slides")
    failures: list = []
    try:
        predict_slides(det, paths, out, run, overwrite=args.overwrite, log=log)
    except SlidesFailed as e:  # the other slides are done: the cohort still gets written
        failures = e.failures
    _barrier()
    if _distributed()[0] == 0:
        cohort = write_cohort(out)
        log(f"wrote a folder per slide (cells.geojson.gz for QuPath, cells.csv.gz, summary.json, overview.png) and {cohort}")
    if failures and len(paths) == 1:  # one slide: one line
        print(f"sparsecell predict: {failures[0][1]} (status in {out / 'cohort.csv'})", file=sys.stderr)
        return 1
    for _, reason in failures:
        print(f"sparsecell predict: failed: {reason}", file=sys.stderr)
    if failures:
        print(f"sparsecell predict: {len(failures)} of {len(paths)} slides failed (status in {out / 'cohort.csv'}); "
              "the others are done", file=sys.stderr)  # fmt: skip
        return 1
    return 0


def _distributed() -> tuple[int, int, int]:
    """(rank, world size, local rank) of this process: torchrun's variables (RANK,
    WORLD_SIZE, LOCAL_RANK), else a SLURM job step's (through Lightning's SLURM
    environment, which also names the main node for the final barrier), else (0, 1, 0)."""
    if "RANK" in os.environ and "WORLD_SIZE" in os.environ:
        return int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]), int(os.environ.get("LOCAL_RANK", "0"))
    if int(os.environ.get("SLURM_NTASKS", "1")) > 1 and "SLURM_PROCID" in os.environ:
        from lightning.fabric.plugins.environments import SLURMEnvironment

        if SLURMEnvironment.detect():
            env = SLURMEnvironment()
            os.environ.setdefault("MASTER_ADDR", env.main_address)
            os.environ.setdefault("MASTER_PORT", str(env.main_port))
            return env.global_rank(), env.world_size(), env.local_rank()
    return 0, 1, 0


def _shard_of(text: str | None) -> tuple[int, int]:
    """``--shard i/N``; under torch.distributed (torchrun, or SLURM) each rank takes the
    shard of its rank, within the ``--shard`` if both are given."""
    if text:
        try:
            i, n = (int(v) for v in text.split("/"))
        except ValueError:
            raise SparsecellError(f"--shard {text!r}: expected i/N, e.g. 0/4") from None
        if n < 1 or not 0 <= i < n:
            raise SparsecellError(f"--shard {text}: need 0 <= i < N")
    else:
        i, n = 0, 1
    rank, world, _ = _distributed()
    return i * world + rank, n * world


def _barrier() -> None:
    """Wait for every rank (under torch.distributed), so rank 0 writes the cohort table
    once all slides are done. The wait may be long: one rank's slides can take hours."""
    from datetime import timedelta

    rank, world, _ = _distributed()
    if world <= 1:
        return
    import torch.distributed as dist

    if not dist.is_initialized():
        dist.init_process_group("gloo", rank=rank, world_size=world, timeout=timedelta(days=7))
    dist.barrier()
    dist.destroy_process_group()


def cmd_export(args) -> int:
    from .inference.onnx import export_onnx

    out = export_onnx(args.checkpoint, args.out, overwrite=args.overwrite)
    print(f"wrote {out} (ONNX; predict runs it with onnxruntime: sparsecell predict {out} ...)")
    return 0


def cmd_fit_classical(args) -> int:
    from .classical import describe, fit_classical, write_classical
    from .datasets import detect_source, open_dataset

    out = Path(args.out)
    if out.suffix.lower() != ".json":
        raise SparsecellError(f"{out}: the settings file must end in .json")
    if out.exists() and not args.overwrite:
        raise SparsecellError(f"{out}: exists; choose another --out or add --overwrite")
    root = Path(args.data)
    if not root.exists():
        raise SparsecellError(f"{root}: data folder not found")
    source = args.source or detect_source(root)
    ds = open_dataset(source, root, args.split, mode=args.mode)
    samples = [ds[i] for i in _progress(range(len(ds)), "loading")]
    settings, report = fit_classical(samples, ds.classes, args.radius, mpp=args.mpp, stains=args.stains, log=print)
    report.update({"data": str(root), "source": source, "split": args.split})
    write_classical(out, settings, report, overwrite=args.overwrite)
    ki = report.get("validation_ki67")
    ki = f", Ki-67 index error {ki['mae']:.1f} points (RMS {ki['rmse']:.1f}, widens predict's intervals)" if ki else ""
    print(f"validation micro F1 {report['validation_f1']:.3f}{ki} on {len(samples)} images; {describe(settings)}")
    print(f"wrote {out}; use it as the model: sparsecell predict {out} IMAGES --out DIR")
    return 0


def cmd_demo(args) -> int:
    from .demo import run_demo

    run_demo(Path(args.out), quick=args.quick, methods=args.methods)
    return 0


# ---------------------------------------------------------------------------------------
def _progress(it, desc: str):
    try:
        from tqdm import tqdm

        return tqdm(it, desc=desc, disable=not sys.stderr.isatty(), leave=False)
    except ImportError:
        return it


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="sparsecell",
        description="Tumour-cell detection from sparse point clicks: train on the cells a pathologist clicked, find "
                    "every cell in images and whole slides, read them back in QuPath.",
        epilog="Run 'sparsecell COMMAND --help' for each command's options and an example.",
    )
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    fmt = argparse.RawDescriptionHelpFormatter

    t = sub.add_parser("train", help="train a detector from clicks (a YAML config, or the defaults)",
                       epilog=_methods_text() + "\n\n" + EXAMPLES["train"], formatter_class=fmt)  # fmt: skip
    t.add_argument("config", nargs="?", help="YAML config (omit for the defaults: synthetic data)")
    t.add_argument("overrides", nargs="*", help="section.key=value overrides, e.g. data.keep=0.1 train.epochs=20")
    t.add_argument("--method", metavar="NAME", help="training method (default pu_sar; see below): the same as loss.name=NAME")
    t.add_argument("--out", help="output folder (train.out_dir)")
    t.add_argument("--resume", nargs="?", const="last", help="continue from a checkpoint (default: OUT/checkpoints/last.ckpt)")
    t.add_argument("--bootstrap", choices=RULES["data.bootstrap"], help="classical: the training-free peer's detections "
                   "(fitted on validation) join the clicks as labels; with few clicks it lifts pu_sar to the peer (data.bootstrap)")
    t.add_argument("--init", metavar="CKPT", help="start from this checkpoint's weights (fine-tuning after a round of "
                   "annotation: same classes and resolution; train.init_epochs epochs, default 8; train.init)")
    t.set_defaults(func=cmd_train)

    from .annotate.acquire import DEFAULT_STRATEGY, STRATEGIES
    from .annotate.suggest import DEFAULT_SIZE_UM

    g = sub.add_parser("suggest", help="the regions of each slide to annotate next (QuPath GeoJSON, CSV, overview)",
                       epilog=EXAMPLES["suggest"], formatter_class=fmt)  # fmt: skip
    g.add_argument("checkpoint", help="the last round's checkpoint (.ckpt)")
    g.add_argument("inputs", nargs="+", help="slides or images, folders of them, globs or @list.txt; a QuPath GeoJSON "
                   "beside a slide gives the regions already annotated (never suggested again) and the clicks")
    g.add_argument("--out", required=True, help="output folder")
    g.add_argument("--regions", type=_count(1), default=10, help="regions to suggest per slide (default 10)")
    g.add_argument("--size-um", type=POSITIVE, default=DEFAULT_SIZE_UM, help=f"side of a suggested square, um (default {DEFAULT_SIZE_UM:g})")
    g.add_argument("--strategy", choices=STRATEGIES, default=DEFAULT_STRATEGY,
                   help=f"how to choose (default {DEFAULT_STRATEGY}; what each saved in simulated loops: docs/evidence.md, Annotate next)")
    g.add_argument("--cells", action="store_true", help="also the model's undecided cells inside each square, as points to confirm")
    g.add_argument("--tta", action="store_true", help="describe squares under flips and a transpose too (4 passes; needed by --strategy disagree)")
    g.add_argument("--mpp", type=POSITIVE, help="the slides' resolution in um/px where the files record none")
    g.add_argument("--device", help="cpu or cuda (default: cuda when available)")
    g.add_argument("--overwrite", action="store_true", help="replace output files that exist")
    g.set_defaults(func=cmd_suggest)

    e = sub.add_parser("evaluate", help="P/R/F1 of a checkpoint on annotated data", epilog=EXAMPLES["evaluate"], formatter_class=fmt)
    e.add_argument("checkpoint")
    e.add_argument("data", help="dataset folder (CRCHisto, BCData, SHIDC, or images with same-stem CSV/GeoJSON)")
    e.add_argument("--source", choices=["crchisto", "bcdata", "shidc", "folder"], help="dataset kind (default: guessed)")
    e.add_argument("--split", help="split folder, e.g. test")
    e.add_argument("--mode", choices=["detection", "classes"], help="CRCHisto: detection (every nucleus, the default) or classes")
    e.add_argument("--radius", type=POSITIVE, help="matching radius in px (default: the checkpoint's)")
    e.add_argument("--radius-um", type=POSITIVE, help="matching radius in um (needs --mpp)")
    e.add_argument("--mpp", type=POSITIVE, help="resolution in um per px, for --radius-um (default: the checkpoint's eval.mpp; CRCHisto: about 0.55)")
    e.add_argument("--threshold", type=THRESHOLD, help="detection threshold in [0, 1) (default: chosen on validation, in the checkpoint)")
    e.add_argument("--device", help="cpu or cuda (default: cuda when available)")
    e.add_argument("--engine", choices=["auto", "torch", "onnx"], default="torch",
                   help="what runs the model (default torch: the scores training measured; onnx: onnxruntime on the CPU)")
    e.add_argument("--out", help="JSON file to write (default: evaluate_<source>_<split>.json beside the run's checkpoints folder)")
    e.add_argument("--overwrite", action="store_true", help="replace the JSON file if it exists")
    e.set_defaults(func=cmd_evaluate)

    pr = sub.add_parser("predict", help="find cells in images or whole slides; write CSV, QuPath GeoJSON, overlays, Ki-67 reports", epilog=EXAMPLES["predict"], formatter_class=fmt)
    pr.add_argument("checkpoint", help="the model: a checkpoint (.ckpt), an ONNX export (.onnx) or the classical "
                                       "peer's settings (.json from fit-classical); with --classical, the first input")
    pr.add_argument("images", nargs="*", help="images, slides, folders, globs or @list.txt")
    pr.add_argument("--classical", action="store_true",
                    help="no model: the training-free classical peer (colour deconvolution and a DAB threshold) "
                         "with its default settings; every positional argument is an input")
    pr.add_argument("--out", required=True, help="output folder")
    pr.add_argument("--threshold", type=THRESHOLD, help="detection threshold in [0, 1) (default: the checkpoint's)")
    pr.add_argument("--device", help="cpu or cuda (default: cuda when available)")
    pr.add_argument("--engine", choices=["auto", "torch", "onnx"], default="auto",
                    help="what runs the model: auto (default) is onnxruntime on the CPU when it is installed "
                         "(exported once, cached beside the checkpoint), PyTorch otherwise and on a GPU")
    pr.add_argument("--ki67-error", type=POINTS, metavar="POINTS",
                    help="the model's Ki-67 index error (RMS, percentage points) that widens each index's 95%% interval, "
                         "e.g. as evaluate measures it on your fully annotated regions (default: the error the "
                         "checkpoint measured on its validation images; none recorded: the cell count alone)")
    pr.add_argument("--no-overlay", action="store_true", help="skip the overlay PNGs")
    pr.add_argument("--overwrite", action="store_true", help="replace output files that exist already")
    sl = pr.add_argument_group("whole slides (inputs: slide files, folders, globs or @list.txt)")
    kind = sl.add_mutually_exclusive_group()
    kind.add_argument("--slides", action="store_true", help="treat the inputs as slides (implied by .svs/.ndpi/..., folders, globs, "
                                                            "@lists, and a .tif that is tiled, pyramidal or over 1024 px a side)")
    kind.add_argument("--images", dest="as_images", action="store_true",
                      help="treat the inputs as plain images (native pixels, no tissue mask), even a large or tiled .tif")
    sl.add_argument("--mpp", type=POSITIVE, help="the slides' resolution in um per px, for slides without one (or a wrong one)")
    sl.add_argument("--model-mpp", type=POSITIVE, help="the model's resolution, for a checkpoint that does not record it")
    sl.add_argument("--roi", help="QuPath GeoJSON with polygon annotations: score only inside them (level-0 px)")
    sl.add_argument("--no-tissue", action="store_true", help="run every tile, glass included (default: a tissue mask)")
    sl.add_argument("--shard", help="i/N: run every N-th slide starting at i (job arrays); ranks of torchrun split further")
    sl.add_argument("--batch-size", type=_count(1), default=4, help="tiles per model batch (default 4)")
    sl.add_argument("--num-workers", type=_count(0), help="tile-reading worker processes (default: from the CPU count, "
                                                          "0 on 2 cores or fewer)")
    sl.add_argument("--backend", default="auto", choices=["auto", "tiffslide", "openslide", "image"], help="slide reader")
    sl.add_argument("--class-map", nargs="+", metavar="NAME=QUPATH", help="class names for QuPath, e.g. positive='Tumor: Positive'")
    sl.add_argument("--quiet", action="store_true", help="no progress bars or per-slide lines")
    pr.set_defaults(func=cmd_predict)

    c = sub.add_parser("fit-classical", help="fit the training-free classical peer's settings on fully annotated images",
                       epilog=EXAMPLES["fit-classical"], formatter_class=fmt)  # fmt: skip
    c.add_argument("data", help="dataset folder with every cell annotated (as evaluate takes): validation images, never test")
    c.add_argument("--source", choices=["crchisto", "bcdata", "shidc", "folder"], help="dataset kind (default: guessed)")
    c.add_argument("--split", help="split folder, e.g. validation")
    c.add_argument("--mode", choices=["detection", "classes"], help="CRCHisto: detection (the default) or classes")
    c.add_argument("--radius", type=POSITIVE, default=6.0, help="matching radius in px for the fit (default 6)")
    c.add_argument("--mpp", type=POSITIVE, help="the images' resolution in um per px (default: 0.5, 20x)")
    c.add_argument("--stains", choices=["hdab", "he"], help="nuclear stain: hdab (IHC, default with positive/negative "
                                                            "classes) or he (haematoxylin alone)")
    c.add_argument("--out", required=True, help="the settings file to write (.json; predict and evaluate take it)")
    c.add_argument("--overwrite", action="store_true", help="replace the file if it exists")
    c.set_defaults(func=cmd_fit_classical)

    x = sub.add_parser("export", help="export a checkpoint to ONNX (for onnxruntime)", epilog=EXAMPLES["export"], formatter_class=fmt)
    x.add_argument("checkpoint")
    x.add_argument("out", help="the .onnx file to write")
    x.add_argument("--overwrite", action="store_true", help="replace the file if it exists")
    x.set_defaults(func=cmd_export)

    d = sub.add_parser("demo", help="the main job: pu_sar (the default) vs ce, const, sel_sfl and pu on synthetic IHC tiles "
                                    "with 25%% of the labels",
                       epilog=EXAMPLES["demo"], formatter_class=fmt)  # fmt: skip
    d.add_argument("--out", default="runs/demo", help="output folder (default runs/demo)")
    d.add_argument("--quick", action="store_true", help="a much shorter run (about a minute; its scores mean little)")
    d.add_argument("--methods", nargs="+", help="methods to train (default: ce const sel_sfl pu and the default, pu_sar)")
    d.set_defaults(func=cmd_demo)
    return p


class _Terminated(BaseException):
    """Raised in the main thread on SIGTERM, so that ``finally`` blocks clean up."""


def _stop_on_sigterm() -> None:
    import signal
    import threading

    if threading.current_thread() is threading.main_thread():
        def handler(signum, frame):
            raise _Terminated()

        signal.signal(signal.SIGTERM, handler)


def _one_line_warnings(command: str):
    """Our warnings as one line each (``sparsecell CMD: warning: ...``), not Python's
    file-and-source-line form; other libraries' warnings (deprecations, tips) stay off
    the user's terminal. Returns the previous ``warnings.showwarning``."""
    import warnings

    here = str(Path(__file__).resolve().parent)
    previous = warnings.showwarning

    def show(message, category, filename, lineno, file=None, line=None):
        if str(Path(filename).resolve()).startswith(here):
            print(f"sparsecell {command}: warning: {' '.join(str(message).split())}", file=file or sys.stderr)

    warnings.showwarning = show
    return previous


def main(argv: list[str] | None = None) -> int:
    """Run a command. Expected failures (bad input, a missing or unreadable file, a
    device that is not there, an interruption) print one line and exit non-zero (2 for
    bad input; 130 / 143 for Ctrl-C / SIGTERM); anything else is a bug and keeps its
    traceback."""
    from .errors import TrainingError

    import warnings

    args = build_parser().parse_args(argv)
    os.environ.setdefault("PYTHONWARNINGS", "ignore::UserWarning")
    if args.command != "train":  # training has its own: Lightning's, which saves a checkpoint first
        _stop_on_sigterm()
    previous = _one_line_warnings(args.command)
    try:
        return args.func(args)
    except _Terminated:
        print(f"sparsecell {args.command}: stopped by SIGTERM; nothing was left half-written", file=sys.stderr)
        return 143
    except TrainingError as e:
        print(f"sparsecell {args.command}: {e}", file=sys.stderr)
        return e.exit_code
    except SparsecellError as e:
        print(f"sparsecell {args.command}: error: {e}", file=sys.stderr)
        return 2
    except OSError as e:  # a user's path: unreadable, unwritable, a folder where a file was meant, a full disk
        where = f"{e.filename}: " if e.filename else ""
        print(f"sparsecell {args.command}: error: {where}{e.strerror or e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"sparsecell {args.command}: interrupted", file=sys.stderr)
        return 130
    finally:
        warnings.showwarning = previous


if __name__ == "__main__":
    sys.exit(main())
