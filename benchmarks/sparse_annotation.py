"""Evidence on real data: does SEL beat ordinary training on sparse labels?

For each data set, keep ratio, seed (and fold), and method, trains the same detector
on the sparsified training points with the same budget, picks the threshold and the
checkpoint on validation (full annotations), and scores the test images' full
annotations. Writes ``benchmarks/results/sparse_annotation.json`` (one row per
trained model), a markdown table and a plot of F1 against the keep ratio. This script
trains and writes; the methods, tables and figures are ``sparsecell.evidence``'s.

    .venv/bin/python benchmarks/sparse_annotation.py --quick      # < 30 min on 2 CPU cores
    .venv/bin/python benchmarks/sparse_annotation.py              # the full grid (about 3.5 h)

Method ``classical`` is the training-free peer (``sparsecell.classical``: colour
deconvolution, nuclei at a fitted size, positive by a fitted DAB threshold): fitted on
the same validation images, scored on the same test images; it uses no clicks, so its
row is the same for every keep and sparsity of a fold. ``--dab-positivity`` adds, for
each trained Ki-67 model, a row ``<method>_dab``: the same cells, positive or negative
by their measured DAB density (threshold fitted on validation). On Ki-67 data every row
has the per-image index error (``ki67_mae``, ``ki67_bias``, ``ki67_loa``, percentage
points).

``--sparsity random salient region`` simulates how the annotator clicks
(``sparsecell.training.targets.sparsify``); rows record it (``sparsity``), the share of
annotated cells the method estimated (``keep_estimate``, null where it was told one)
and the true share (``clicked_share``; ``keep`` is the asked-for share).

Data: ``--data ../shared/data`` (``crchisto/`` and ``bcdata/``); a missing data set
is skipped with a message.

- CRCHisto: one class (every marked nucleus), train split to train, validation split
  for threshold and checkpoint, test split for the numbers; radius 6 px (also 12).
- BCData (26 images): Ki-67 positive / negative; k folds by image; within a fold, a
  few of its training images are its validation; radius 15 px.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

from sparsecell import __version__  # noqa: E402
from sparsecell.catalogue import DEFAULT_LOSS  # noqa: E402
from sparsecell.config import load_config  # noqa: E402
from sparsecell.training.crops import sparse_points  # noqa: E402
from sparsecell.datasets import load_samples, open_dataset  # noqa: E402
from sparsecell.datasets.bcdata import folds as bcdata_folds  # noqa: E402
from sparsecell.evidence import (  # noqa: E402
    METHODS,
    default_pairs,
    overrides,
    energy_figure_for,
    energy_separation,
    environment,
    markdown_report,
    plot,
    plot_curves,
    role,
    summarise,
    val_curve,
)
from sparsecell.classical import by_dab, classical_detector, dab_at, fit_classical, fit_dab_threshold  # noqa: E402
from sparsecell.inference.detector import Detector, evaluate  # noqa: E402
from sparsecell.training.loop import train  # noqa: E402

#: Per data set: the matching radius (px) and an extra one to report, the target's sigma, crops
#: per image per epoch, and the folder under --data and the annotation mode where not the default.
DATASETS = {
    "crchisto": dict(radius=6.0, extra_radius=12.0, sigma=3.0, crops_per_image=2),
    "bcdata": dict(radius=15.0, extra_radius=None, sigma=5.0, crops_per_image=8),
    # CRCHisto's four classes (epithelial, fibroblast, inflammatory, others): the classified subset
    "crchisto4": dict(radius=6.0, extra_radius=None, sigma=3.0, crops_per_image=2, folder="crchisto", mode="classes"),
}


def folder(ds: str) -> str:
    return DATASETS[ds].get("folder", ds)


def ki67_fields(ev: dict) -> dict:
    """A row's Ki-67 index figures from an evaluation's dict (none without an index)."""
    k = ev.get("ki67")
    if not k:
        return {}
    return {"ki67_mae": k["mae"], "ki67_bias": k["bias"], "ki67_loa": k["loa"], "ki67_within_5": k["within_5"],
            "ki67_within_10": k["within_10"], "ki67_pooled_true": k["pooled_true"], "ki67_pooled_pred": k["pooled_pred"],
            "ki67_errors": k["errors"]}  # fmt: skip


def _split_samples(args, ds: str, split_ids) -> tuple[list, list]:
    """(validation, test) samples of a data set (a BCData fold's ids)."""
    spec = DATASETS[ds]
    if folder(ds) == "crchisto":
        mode = spec.get("mode", "detection")
        v = open_dataset("crchisto", args.data / folder(ds), "validation", mode=mode)
        t = open_dataset("crchisto", args.data / folder(ds), "test", mode=mode)
        return [v[i] for i in range(len(v))], [t[i] for i in range(len(t))]
    d = open_dataset("bcdata", args.data / ds, "test")
    return [d[d.index(i)] for i in split_ids[1]], [d[d.index(i)] for i in split_ids[2]]


_CLASSICAL: dict = {}


def classical_fit(args, ds: str, fold: int | None, split_ids):
    """The peer's settings fitted on a fold's validation images (once per fold)."""
    key = (ds, fold)
    if key not in _CLASSICAL:
        val, _ = _split_samples(args, ds, split_ids)
        t0 = time.time()
        settings, report = fit_classical(val, val[0].points.classes, DATASETS[ds]["radius"])
        _CLASSICAL[key] = (settings, report, time.time() - t0)
    return _CLASSICAL[key]


def run_classical(args, ds: str, keep: float, seed: int, fold: int | None, split_ids, sparsity: str) -> dict:
    """The peer's row: fitted on the validation images, scored on the test images."""
    spec = DATASETS[ds]
    settings, report, seconds = classical_fit(args, ds, fold, split_ids)
    _, test = _split_samples(args, ds, split_ids)
    det = classical_detector(settings)
    ev = evaluate(det, test).as_dict()
    a = ev["all"]
    row = {"dataset": ds, "method": "classical", "role": role("classical"), "keep": keep, "sparsity": sparsity,
           "seed": seed, "keep_estimate": None, "f1": a["f1"], "f1_per_image": a["f1_per_image"],
           "precision": a["precision"], "recall": a["recall"], "threshold": det.threshold, "f1_at_0.7": ev["f1_at"]["0.7"],
           "f1_at_0.5": ev["f1_at"]["0.5"], "ap": ev["ap"], "radius_px": spec["radius"], "val_f1": report["validation_f1"],
           "val_curve": [], "train_seconds": round(seconds, 1), "git_commit": _commit(), "clicked_share": 0.0,
           "classical_settings": report["settings"], **ki67_fields(ev)}  # fmt: skip
    if fold is not None:
        row["fold"] = fold
    if len(det.classes) > 1:
        row["per_class_f1"] = {c: ev[c]["f1"] for c in det.classes}
    if spec["extra_radius"]:
        row[f"f1_at_radius_{spec['extra_radius']:g}"] = evaluate(det, test, radius=spec["extra_radius"]).as_dict()["all"]["f1"]
    return row


def dab_row(args, row: dict, det, ds: str, fold: int | None, split_ids) -> dict:
    """The same model's cells, positive or negative by their measured DAB density, the
    threshold fitted on the validation images (the nucleus size: the peer's fit there)."""
    from sparsecell.metrics import ki67_agreement, score_points

    settings, _, _ = classical_fit(args, ds, fold, split_ids)
    val, test = _split_samples(args, ds, split_ids)

    def cells(samples):
        pts = [det.peaks(s.image, det.threshold) for s in samples]
        return pts, [dab_at(s.image, p.xy, settings.nucleus_px) for s, p in zip(samples, pts)]

    vp, vd = cells(val)
    t, vf1 = fit_dab_threshold([s.points for s in val], vp, vd, DATASETS[ds]["radius"])
    tp, td = cells(test)
    pred = [by_dab(p, d, t) for p, d in zip(tp, td)]
    truth = [s.points for s in test]
    sc = score_points(truth, pred, DATASETS[ds]["radius"])
    agreement = ki67_agreement(truth, pred)
    out = {k: row[k] for k in ("dataset", "keep", "sparsity", "seed", "keep_estimate", "threshold", "radius_px",
                               "train_seconds", "git_commit", "clicked_share") if k in row}  # fmt: skip
    out.update({"method": row["method"] + "_dab", "role": role(row["method"] + "_dab"), "f1": sc["all"].f1,
                "precision": sc["all"].precision, "recall": sc["all"].recall, "val_f1": vf1, "dab_threshold": t,
                "per_class_f1": {c: sc[c].f1 for c in det.classes}, "val_curve": [],
                **ki67_fields({"ki67": agreement.as_dict() if agreement else None})})  # fmt: skip
    if fold is not None:
        out["fold"] = fold
    return out


def run_one(args, ds: str, method: str, keep: float, seed: int, fold: int | None, split_ids, work: Path,
            sparsity: str = "random") -> dict | list[dict]:  # fmt: skip
    """One trained model's row (and its ``_dab`` row with ``--dab-positivity`` on Ki-67 data)."""
    if method == "classical":
        return run_classical(args, ds, keep, seed, fold, split_ids, sparsity)
    spec = DATASETS[ds]
    name = f"{ds}_{sparsity}_k{keep}_s{seed}" + (f"_f{fold}" if fold is not None else "") + f"_{method}"
    out = work / name
    if out.exists():
        shutil.rmtree(out)
    ov = [
        f"data.root={args.data / folder(ds)}", f"data.keep={keep}", f"data.sparse_seed={seed}", f"data.sigma={spec['sigma']}",
        f"data.crop={args.crop}", f"data.crops_per_image={args.crops_per_image or spec['crops_per_image']}", f"model.size={args.model}",
        f"train.epochs={args.epochs}", f"train.batch_size={args.batch_size}", f"train.lr={args.lr}",
        f"train.val_every={args.val_every}", f"eval.radius={spec['radius']}", f"train.seed={seed}",
        f"train.out_dir={out}", "train.progress_bar=false", f"train.num_workers={args.num_workers}",
        f"train.precision={args.precision}", f"train.accelerator={'gpu' if args.device.startswith('cuda') else 'cpu'}",
        f"data.sparsity={sparsity}", f"data.salient_beta={args.salient_beta}", f"data.per_class={sparsity == 'salient'}",
        f"data.region={args.region if sparsity == 'region' else 'null'}",
    ] + overrides(method, keep)  # fmt: skip
    ov += list(args.set or [])  # the user's own settings win
    if folder(ds) == "crchisto":
        mode = spec.get("mode", "detection")
        ov += ["data.source=crchisto", f"data.mode={mode}", "data.train_split=train", "data.val_split=validation"]
    else:
        train_ids, val_ids, _ = split_ids
        ov += ["data.source=bcdata", "data.train_split=test", "data.val_split=null",
               f"data.train_ids={json.dumps(train_ids + val_ids)}", f"data.val_ids={json.dumps(val_ids)}"]  # fmt: skip
    cfg = load_config(None, ov)
    t0 = time.time()
    r = train(cfg, quiet=True)
    det = Detector.from_checkpoint(r.best_checkpoint, device=args.device)
    if folder(ds) == "crchisto":
        dset = open_dataset("crchisto", args.data / folder(ds), "test", mode=spec.get("mode", "detection"))
        test = [dset[i] for i in range(len(dset))]
    else:
        dset = open_dataset("bcdata", args.data / ds, "test")
        test = [dset[dset.index(i)] for i in split_ids[2]]
    ev = evaluate(det, test).as_dict()
    a = ev["all"]
    row = {
        "dataset": ds, "method": method, "role": role(method), "keep": keep, "sparsity": sparsity, "seed": seed,
        "keep_estimate": r.keep_estimate,
        "f1": a["f1"], "f1_per_image": a["f1_per_image"], "precision": a["precision"], "recall": a["recall"],
        "threshold": det.threshold, "f1_at_0.7": ev["f1_at"]["0.7"], "f1_at_0.5": ev["f1_at"]["0.5"], "ap": ev["ap"],
        "radius_px": spec["radius"], "val_f1": r.val_f1, "val_curve": val_curve(out),
        "train_seconds": round(time.time() - t0, 1), "git_commit": _commit(), **ki67_fields(ev),
    }  # fmt: skip
    if fold is not None:
        row["fold"] = fold
    tr, _, _ = load_samples(cfg)  # the true share of the training cells that were clicked (region clicking overshoots keep)
    row["clicked_share"] = sum(len(p) for p in sparse_points(tr, cfg.data)) / max(1, sum(len(s.points) for s in tr))
    if det.config.loss.name == "pu_pseudo":  # the pseudo-label rounds: (epoch, count) and (epoch, threshold)
        row["pseudo_labels"] = val_curve(out, "pseudo_labels")
        row["pseudo_threshold"] = val_curve(out, "pseudo_threshold")
        row["keep_model"] = val_curve(out, "keep_model")  # the share re-estimated from the model, per round
        row["keep_estimate_model"] = row["keep_model"][-1][1] if row["keep_model"] else None
        row["clicks"] = sum(len(p) for p in sparse_points(tr, cfg.data))
    if r.click_bias is not None:  # pu_sar: per class, how strongly the clicks looked biased (0 none, 1 strong)
        row["click_bias"] = list(r.click_bias)
    if len(det.classes) > 1:
        row["per_class_f1"] = {c: ev[c]["f1"] for c in det.classes}
    if spec["extra_radius"]:
        row[f"f1_at_radius_{spec['extra_radius']:g}"] = evaluate(det, test, radius=spec["extra_radius"]).as_dict()["all"]["f1"]
    if method.startswith("sel"):
        # the loss parts over training (per-epoch means): SFL's share, the mean energy
        for key in ("train_loss_epoch", "train_pixel", "train_sfl", "train_energy_mean"):
            row[f"curve_{key.removeprefix('train_').removesuffix('_epoch')}"] = val_curve(out, key)
        row.update(energy_separation(det, tr[: args.energy_images], sparse_points(tr, cfg.data)[: args.energy_images]))
        if args.figures and seed == args.seeds[0]:
            energy_figure_for(det, test[:3], keep, args.figures / f"energy_{ds}_k{keep}_{method}.png",
                              f"{ds}: {method}, {keep:.0%} of the labels (test images, sparsified for the energy)")
    extra = [dab_row(args, row, det, ds, fold, split_ids)] if args.dab_positivity and len(det.classes) == 2 else []
    if not args.keep_checkpoints:
        shutil.rmtree(out, ignore_errors=True)
    return [row] + extra if extra else row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    ap.add_argument("--quick", action="store_true", help="keep 0.25 and 1.0, one seed, one BCData fold, short training")
    ap.add_argument("--datasets", nargs="+", default=["crchisto", "bcdata"], choices=list(DATASETS),
                    help="crchisto4 (CRCHisto's four classes, per-class F1) on request")
    ap.add_argument("--methods", nargs="+", default=None)
    ap.add_argument("--keeps", nargs="+", type=float, default=None)
    ap.add_argument("--seeds", nargs="+", type=int, default=None)
    ap.add_argument("--folds", type=int, default=3, help="BCData folds (k)")
    ap.add_argument("--fold-per-seed", action=argparse.BooleanOptionalAction, default=True,
                    help="BCData: seed i uses fold i only (k = max(largest seed + 1, --folds))")
    ap.add_argument("--all-folds", dest="fold_per_seed", action="store_false",
                    help="BCData: run every fold for every seed instead (k times the trainings); "
                         "the same as --no-fold-per-seed")
    ap.add_argument("--sparsity", nargs="+", default=["random"], choices=["random", "salient", "region"],
                    help="how the simulated annotator clicks (sparsecell.training.targets.sparsify)")
    ap.add_argument("--salient-beta", type=float, default=2.0,
                    help="salient clicking's beta (drawn within each class: a Ki-67 annotator clicks the obvious "
                         "cells of both classes; drawn over all cells, BCData's darker positive cells take 94-100%% "
                         "of the clicks at keep 0.1)")
    ap.add_argument("--region", type=int, default=128, help="region clicking's square side, px")
    ap.add_argument("--model", default="vig_cpu")
    ap.add_argument("--epochs", type=int, default=None)
    ap.add_argument("--crop", type=int, default=128)
    ap.add_argument("--crops-per-image", type=int, default=None, help="default: 2 (CRCHisto), 8 (BCData)")
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--lr", type=float, default=0.002)
    ap.add_argument("--val-every", type=int, default=3)
    ap.add_argument("--energy-images", type=int, default=10)
    ap.add_argument("--work", type=Path, default=ROOT / "runs" / "bench")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "sparse_annotation.json")
    ap.add_argument("--keep-checkpoints", action="store_true")
    ap.add_argument("--dab-positivity", action="store_true",
                    help="Ki-67: also score each trained model with its cells' classes from their DAB density (<method>_dab rows)")
    ap.add_argument("--figures", type=Path, default=None,
                    help="write an energy figure (image, sparse labels, energy, prediction) of 3 test images "
                         "for every SEL-based model of the first seed into this folder")
    ap.add_argument("--append", action="store_true", help="add the new rows to those already in --out")
    ap.add_argument("--device", default="cpu", help="cpu or cuda (training and evaluation)")
    ap.add_argument("--precision", default="32-true", help="Lightning precision, e.g. bf16-mixed on a GPU")
    ap.add_argument("--num-workers", type=int, default=0, help="data-loading worker processes")
    ap.add_argument("--set", nargs="+", default=None, metavar="KEY=VALUE",
                    help="config settings for every training, after the benchmark's own (e.g. model.dim=96 data.sigma=2)")
    ap.add_argument("--budget-minutes", type=float, default=None,
                    help="start no new training once this much time has passed (rows so far are kept)")
    ap.add_argument("--report", action="store_true",
                    help="train nothing: rewrite --out's markdown report and figures from its rows (after a rename)")
    args = ap.parse_args()
    if args.report:
        from sparsecell.formats.fileio import atomic_write_text

        doc = json.loads(args.out.read_text())
        rows, doc["paired"] = doc["rows"], default_pairs(doc["rows"])
        atomic_write_text(args.out, json.dumps(doc, indent=1) + "\n")
        atomic_write_text(args.out.with_suffix(".md"), markdown_report(rows, doc["paired"]))
        plot(rows, args.out.with_suffix(".png"), {ds: spec["radius"] for ds, spec in DATASETS.items()})
        plot_curves(rows, args.out.with_name(args.out.stem + "_curves.png"))
        print(f"wrote {args.out.with_suffix('.md')} and the figures from {len(rows)} rows")
        return
    if args.quick:
        args.methods = args.methods or ["ce", "pu", "const", "sel", "sel_sfl", "teacher"]
        args.keeps = args.keeps or [0.25, 1.0]
        args.seeds = args.seeds or [0]
        args.epochs = args.epochs or 20
        folds_used = [0]
    else:
        # the README's grid: 7 methods x 3 keeps x 3 seeds x 2 data sets + ce at keep 1.0,
        # 132 trainings of about 1.5 min each on 2 CPU cores: about 3.5 hours
        args.methods = args.methods or ["ce", "pu", "const", "const_0.2", "sel", "sel_sfl", "sel_pu"]
        args.keeps = args.keeps or [0.1, 0.25, 0.5, 1.0]
        args.seeds = args.seeds or [0, 1, 2]
        args.epochs = args.epochs or 20
        folds_used = list(range(args.folds))
    unknown = [m for m in args.methods if m not in METHODS]
    if unknown:
        sys.exit(f"unknown method {unknown[0]!r}; choose from {list(METHODS)}")
    rows: list[dict] = json.loads(args.out.read_text())["rows"] if args.append and args.out.is_file() else []
    started = time.time()
    for ds in args.datasets:
        if not (args.data / folder(ds)).is_dir():
            print(f"skipping {ds}: {args.data / folder(ds)} not found")
            continue
        if folder(ds) == "crchisto":
            plan = [(None, None)]
        else:
            ids = open_dataset("bcdata", args.data / ds, "test").ids()
            folds = bcdata_folds(ids, args.folds)
            plan = [(f, folds[f]) for f in folds_used]
            if args.fold_per_seed:  # seed i uses fold i, whichever seeds this run takes
                folds = bcdata_folds(ids, max(max(args.seeds) + 1, args.folds))
        for sparsity, keep in [(sp, k) for k in args.keeps for sp in (["random"] if k >= 1.0 else args.sparsity)]:
            for seed in args.seeds:
                seed_plan = [(seed, folds[seed])] if (ds == "bcdata" and args.fold_per_seed) else plan
                for fold, split in seed_plan:
                    # at keep 1.0 only cross-entropy differs from nothing: the others reduce to it or need labels missing
                    methods = ["ce"] if keep >= 1.0 else args.methods
                    for m in methods:
                        if args.budget_minutes is not None and time.time() - started > 60 * args.budget_minutes:
                            print(f"budget of {args.budget_minutes:g} min spent: stopping before {ds} keep {keep} seed {seed} {m}")
                            _write(args, rows, started)
                            print(summarise(rows))
                            return
                        got = run_one(args, ds, m, keep, seed, fold, split, args.work, sparsity)
                        for row in got if isinstance(got, list) else [got]:
                            rows.append(row)
                            est = f" keep est {row['keep_estimate']:.3f}" if row.get("keep_estimate") is not None else ""
                            ki = f" Ki-67 MAE {row['ki67_mae']:.1f} pp" if row.get("ki67_mae") is not None else ""
                            print(f"[{time.time() - started:6.0f} s] {ds} {sparsity} keep {keep} seed {seed}{est}"
                                  f"{'' if fold is None else f' fold {fold}'} {row['method']:15s} F1 {row['f1']:.3f} "
                                  f"(P {row['precision']:.3f} R {row['recall']:.3f} thr {row['threshold']:g}){ki}",
                                  flush=True)  # fmt: skip
                        _write(args, rows, started)
    _write(args, rows, started)
    print(summarise(rows))
    print(f"wrote {args.out}, {args.out.with_suffix('.md')}, {args.out.with_suffix('.png')}")


def _commit() -> str:
    """The commit the benchmark runs from ("" outside git)."""
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    except OSError:
        return ""


def _write(args, rows, started) -> None:
    """The results so far: the JSON (config, environment, commit, rows, paired
    differences), the markdown report and the two figures beside it."""
    from sparsecell.formats.fileio import atomic_write_text

    commit = _commit()
    cfg = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}
    cfg.update(environment())
    if args.device.startswith("cuda"):
        import torch

        cfg["gpu"] = torch.cuda.get_device_name(0)
    pairs = default_pairs(rows)
    doc = {"config": cfg, "version": __version__, "git_commit": commit, "seconds": round(time.time() - started),
           "default": DEFAULT_LOSS, "rows": rows, "paired": pairs}  # fmt: skip
    if args.append and args.out.is_file():  # notes on earlier rows (renames) stay with them
        notes = json.loads(args.out.read_text()).get("relabelled")
        if notes:
            doc["relabelled"] = notes
    atomic_write_text(args.out, json.dumps(doc, indent=1) + "\n")
    atomic_write_text(args.out.with_suffix(".md"), markdown_report(rows, pairs))
    if rows:
        plot(rows, args.out.with_suffix(".png"), {ds: spec["radius"] for ds, spec in DATASETS.items()})
        plot_curves(rows, args.out.with_name(args.out.stem + "_curves.png"))


if __name__ == "__main__":
    main()
