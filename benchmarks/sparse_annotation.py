"""Evidence on real data: does SEL beat ordinary training on sparse labels?

For each data set, keep ratio, seed (and fold), and method, trains the same detector
on the sparsified training points with the same budget, picks the threshold and the
checkpoint on validation (full annotations), and scores the test images' full
annotations. Writes ``benchmarks/results/sparse_annotation.json`` (one row per
trained model), a markdown table and a plot of F1 against the keep ratio.

    .venv/bin/python benchmarks/sparse_annotation.py --quick      # < 30 min on 2 CPU cores
    .venv/bin/python benchmarks/sparse_annotation.py              # the full grid (about 3.5 h)

Data: ``--data ../shared/data`` (``crchisto/`` and ``bcdata/``); a missing data set
is skipped with a message.

- CRCHisto: one class (every marked nucleus), train split to train, validation split
  for threshold and checkpoint, test split for the numbers; radius 6 px (also 12).
- BCData (26 images): Ki-67 positive / negative; k folds by image; within a fold, a
  few of its training images are its validation; radius 15 px.
"""

from __future__ import annotations

import argparse
import csv
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]

from sparsecell import __version__  # noqa: E402
from sparsecell.config import load_config  # noqa: E402
from sparsecell.data import bcdata, crchisto  # noqa: E402
from sparsecell.inference import Detector, evaluate, node_energy  # noqa: E402
from sparsecell.losses import LOSSES, DetectionLoss  # noqa: E402
from sparsecell.train import load_samples, sparse_points, train  # noqa: E402

#: Named variants: a method name -> loss overrides (``role`` from sparsecell.losses.LOSSES
#: unless given here).
METHODS = {
    "ce": ["loss.name=ce"],
    "pu": ["loss.name=pu"],
    "const": ["loss.name=const", "loss.const_weight=0.4"],
    "const_0.2": ["loss.name=const", "loss.const_weight=0.2"],
    "sel": ["loss.name=sel"],
    "sel_sfl": ["loss.name=sel_sfl"],
    "sel_sfl_detach": ["loss.name=sel_sfl", "loss.detach_energy=true"],
    "teacher": ["loss.name=teacher"],
    "sel_pu": ["loss.name=sel_pu"],
}
ROLES = {"const_0.2": "baseline", "sel_sfl_detach": "ours"}

DATASETS = {
    "crchisto": dict(radius=6.0, extra_radius=12.0, sigma=3.0, crops_per_image=2),
    "bcdata": dict(radius=15.0, extra_radius=None, sigma=5.0, crops_per_image=8),
    # CRCHisto's four classes (epithelial, fibroblast, inflammatory, others): the classified subset
    "crchisto4": dict(radius=6.0, extra_radius=None, sigma=3.0, crops_per_image=2, folder="crchisto", mode="classes"),
}


def folder(ds: str) -> str:
    return DATASETS[ds].get("folder", ds)


def role(method: str) -> str:
    return ROLES.get(method) or LOSSES[METHODS[method][0].split("=", 1)[1]]


def bcdata_folds(ids: list[str], k: int) -> list[tuple[list[str], list[str], list[str]]]:
    """(train, validation, test) ids per fold; validation = 3 of the fold's training ids."""
    order = sorted(ids, key=int)
    folds = []
    for f in range(k):
        test = order[f::k]
        rest = [i for i in order if i not in test]
        val = rest[f::max(len(rest) // 3, 1)][:3]
        folds.append(([i for i in rest if i not in val], val, test))
    return folds


def energy_separation(det: Detector, train_samples, sparse) -> dict:
    """Energy at missed (unannotated) cells vs background on training images: AUC of
    'background energy > missed-cell energy' and the gap of the means."""
    miss_e, bg_e = [], []
    rng = np.random.default_rng(0)
    for s, sp in zip(train_samples, sparse):
        E = node_energy(det, s.image, sp)
        H, W = E.shape
        kept = {tuple(p) for p in sp.xy.tolist()}
        missed = np.array([p for p in s.points.xy.tolist() if tuple(p) not in kept]).reshape(-1, 2)
        if len(missed):
            ix = np.clip(missed.round().astype(int), 0, [W - 1, H - 1])
            miss_e.append(E[ix[:, 1], ix[:, 0]])
        # background: random pixels at least 10 px from any annotated-or-not cell
        yy, xx = rng.integers(0, H, 400), rng.integers(0, W, 400)
        if len(s.points):
            d = np.min(np.hypot(xx[:, None] - s.points.xy[None, :, 0], yy[:, None] - s.points.xy[None, :, 1]), axis=1)
            keep = d > 10
            yy, xx = yy[keep], xx[keep]
        bg_e.append(E[yy, xx])
    m, b = np.concatenate(miss_e or [np.zeros(0)]), np.concatenate(bg_e or [np.zeros(0)])
    if not len(m) or not len(b):
        return {"energy_auc": None, "energy_missed_mean": None, "energy_background_mean": None}
    # AUC = P(bg > missed) + 0.5 P(equal), via ranks
    allv = np.concatenate([m, b])
    ranks = allv.argsort().argsort() + 1.0
    auc = (ranks[len(m):].sum() - len(b) * (len(b) + 1) / 2) / (len(m) * len(b))
    return {"energy_auc": float(auc), "energy_missed_mean": float(m.mean()), "energy_background_mean": float(b.mean())}


def energy_figure_for(det: Detector, test, keep: float, path: Path, title: str) -> None:
    """Image, sparse labels, energy and prediction for a few test images; the energy is
    computed from the test image's own annotations thinned to ``keep``."""
    from sparsecell.report import energy_figure
    from sparsecell.targets import sparsify

    rows = []
    for i, s in enumerate(test):
        sp = sparsify(s.points, keep, seed=i)
        rows.append({"image": s.image, "truth": s.points, "sparse": sp, "energy": node_energy(det, s.image, sp),
                     "pred": det.predict(s.image)})  # fmt: skip
    energy_figure(rows, path, title=title)


def val_curve(out_dir: Path, key: str = "val_f1") -> list[list[float]]:
    """[(epoch, value), ...] of one logged metric (validation F1 by default) from the CSV logs."""
    pts = []
    for f in sorted((out_dir / "logs").glob("version_*/metrics.csv")):
        with open(f) as fh:
            for row in csv.DictReader(fh):
                if row.get(key):
                    pts.append([int(row["epoch"]), round(float(row[key]), 4)])
    return pts


def run_one(args, ds: str, method: str, keep: float, seed: int, fold: int | None, split_ids, work: Path) -> dict:
    spec = DATASETS[ds]
    name = f"{ds}_k{keep}_s{seed}" + (f"_f{fold}" if fold is not None else "") + f"_{method}"
    out = work / name
    if out.exists():
        shutil.rmtree(out)
    ov = [
        f"data.root={args.data / folder(ds)}", f"data.keep={keep}", f"data.sparse_seed={seed}", f"data.sigma={spec['sigma']}",
        f"data.crop={args.crop}", f"data.crops_per_image={args.crops_per_image or spec['crops_per_image']}", f"model.size={args.model}",
        f"train.epochs={args.epochs}", f"train.batch_size={args.batch_size}", f"train.lr={args.lr}",
        f"train.val_every={args.val_every}", f"train.radius={spec['radius']}", f"train.seed={seed}",
        f"train.out_dir={out}", "train.progress_bar=false", f"train.num_workers={args.num_workers}",
        f"train.precision={args.precision}", f"train.accelerator={'gpu' if args.device.startswith('cuda') else 'cpu'}",
    ] + METHODS[method]  # fmt: skip
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
        dset = crchisto(args.data / folder(ds), "test", mode=spec.get("mode", "detection"))
        test = [dset[i] for i in range(len(dset))]
    else:
        dset = bcdata(args.data / ds, "test")
        test = [dset[dset.index(i)] for i in split_ids[2]]
    ev = evaluate(det, test)
    a = ev["all"]
    row = {
        "dataset": ds, "method": method, "role": role(method), "keep": keep, "seed": seed,
        "f1": a["f1"], "f1_per_image": a["f1_per_image"], "precision": a["precision"], "recall": a["recall"],
        "threshold": det.threshold, "f1_at_0.7": ev["f1_at"]["0.7"], "f1_at_0.5": ev["f1_at"]["0.5"], "ap": ev["ap"],
        "radius_px": spec["radius"], "val_f1": r.val_f1, "val_curve": val_curve(out),
        "train_seconds": round(time.time() - t0, 1),
    }  # fmt: skip
    if fold is not None:
        row["fold"] = fold
    if len(det.classes) > 1:
        row["per_class_f1"] = {c: ev[c]["f1"] for c in det.classes}
    if spec["extra_radius"]:
        row[f"f1_at_radius_{spec['extra_radius']:g}"] = evaluate(det, test, radius=spec["extra_radius"])["all"]["f1"]
    if method.startswith("sel"):
        # the loss parts over training (per-epoch means): SFL's share, the mean energy
        for key in ("train_loss_epoch", "train_pixel", "train_sfl", "train_energy_mean"):
            row[f"curve_{key.removeprefix('train_').removesuffix('_epoch')}"] = val_curve(out, key)
        tr, _, _ = load_samples(cfg)
        row.update(energy_separation(det, tr[: args.energy_images], sparse_points(tr, cfg)[: args.energy_images]))
        if args.figures and seed == args.seeds[0]:
            energy_figure_for(det, test[:3], keep, args.figures / f"energy_{ds}_k{keep}_{method}.png",
                              f"{ds}: {method}, {keep:.0%} of the labels (test images, sparsified for the energy)")
    if not args.keep_checkpoints:
        shutil.rmtree(out, ignore_errors=True)
    return row


def summarise(rows: list[dict]) -> str:
    """Markdown: mean ± std of micro F1 over seeds/folds, per data set, keep, method."""
    from collections import defaultdict

    cells = defaultdict(list)
    for r in rows:
        cells[(r["dataset"], r["method"], r["keep"])].append(r)
    lines = []
    for ds in sorted({r["dataset"] for r in rows}):
        keeps = sorted({r["keep"] for r in rows if r["dataset"] == ds})
        methods = [m for m in METHODS if any(r["dataset"] == ds and r["method"] == m for r in rows)]
        lines += [f"\n**{ds}** (micro F1 at the validation-chosen threshold, mean ± std over seeds/folds; n per cell)\n",
                  "| method | role | " + " | ".join(f"keep {k}" for k in keeps) + " |",
                  "|---|---|" + "---|" * len(keeps)]  # fmt: skip
        for m in methods:
            vals = []
            for k in keeps:
                c = cells.get((ds, m, k), [])
                f = [r["f1"] for r in c]
                vals.append(f"{np.mean(f):.3f} ± {np.std(f):.3f} (n={len(f)})" if f else "-")
            lines.append(f"| {m} | {role(m)} | " + " | ".join(vals) + " |")
        per_class = [r for r in rows if r["dataset"] == ds and r.get("per_class_f1")]
        if per_class:
            names = list(per_class[0]["per_class_f1"])
            lines += [f"\nPer-class micro F1 on {ds} (mean ± std over seeds/folds):\n",
                      "| method | keep | " + " | ".join(names) + " |", "|---|---|" + "---|" * len(names)]  # fmt: skip
            for m in methods:
                for k in keeps:
                    c = [r["per_class_f1"] for r in per_class if r["method"] == m and r["keep"] == k]
                    if c:
                        lines.append(f"| {m} | {k} | " + " | ".join(
                            f"{np.mean([x[n] for x in c]):.3f} ± {np.std([x[n] for x in c]):.3f}" for n in names) + " |")
    return "\n".join(lines)


def analysis(rows: list[dict]) -> str:
    """Markdown: each method's test F1 as a share of cross-entropy's with every label, its
    mean validation F1 (what the default is chosen on), and the energy statistics and
    SFL's share of the loss of the SEL-based methods."""
    from collections import defaultdict

    lines = []
    for ds in sorted({r["dataset"] for r in rows}):
        full = [r["f1"] for r in rows if r["dataset"] == ds and r["method"] == "ce" and r["keep"] >= 1.0]
        keeps = sorted({r["keep"] for r in rows if r["dataset"] == ds and r["keep"] < 1.0})
        if not keeps:
            continue
        lines.append(f"\n**{ds}**: test F1 / ce's at keep 1.0 ({np.mean(full):.3f}); mean validation F1; energy "
                     "(SEL methods: AUC of background above missed cells, mean at missed cells / background); "
                     "SFL's share of the loss (first / last epoch)\n" if full else f"\n**{ds}**\n")  # fmt: skip
        lines += ["| method | keep | F1 / full | val F1 | energy AUC | energy missed / bg | SFL share |",
                  "|---|---|---|---|---|---|---|"]  # fmt: skip
        cells = defaultdict(list)
        for r in rows:
            if r["dataset"] == ds and r["keep"] < 1.0:
                cells[(r["method"], r["keep"])].append(r)
        for m in METHODS:
            for k in keeps:
                c = cells.get((m, k))
                if not c:
                    continue
                ratio = f"{np.mean([r['f1'] for r in c]) / np.mean(full):.2f}" if full else "-"
                val = f"{np.mean([r['val_f1'] for r in c if r.get('val_f1') is not None]):.3f}"
                en, gap, share = "-", "-", "-"
                er = [r for r in c if r.get("energy_auc") is not None]
                if er:
                    en = f"{np.mean([r['energy_auc'] for r in er]):.2f}"
                    gap = f"{np.mean([r['energy_missed_mean'] for r in er]):.2f} / {np.mean([r['energy_background_mean'] for r in er]):.2f}"
                sh = [(r["curve_sfl"], r["curve_loss"]) for r in c if r.get("curve_sfl") and r.get("curve_loss")]
                if sh:  # the benchmark trains with the default lambda2
                    lam2 = DetectionLoss().lambda2
                    first = np.mean([lam2 * s[0][1] / l[0][1] for s, l in sh if l[0][1]])
                    last = np.mean([lam2 * s[-1][1] / l[-1][1] for s, l in sh if l[-1][1]])
                    share = f"{first:.2f} / {last:.2f}"
                lines.append(f"| {m} | {k} | {ratio} | {val} | {en} | {gap} | {share} |")
    return "\n".join(lines)


def paired(rows: list[dict], a: str, b: str) -> list[dict]:
    """Paired differences a - b (same data set, keep, seed, fold), with a 95% t interval."""
    from scipy import stats

    idx = {(r["dataset"], r["keep"], r["seed"], r.get("fold"), r["method"]): r["f1"] for r in rows}
    out = []
    for ds, k in sorted({(r["dataset"], r["keep"]) for r in rows}):
        d = [idx[(ds, k, s, f, a)] - idx[(ds, k, s, f, b)] for (dd, kk, s, f, m) in idx
             if dd == ds and kk == k and m == a and (ds, k, s, f, b) in idx]  # fmt: skip
        if len(d) >= 2:
            half = stats.t.ppf(0.975, len(d) - 1) * np.std(d, ddof=1) / np.sqrt(len(d))
            out.append({"dataset": ds, "keep": k, "a": a, "b": b, "mean_diff": float(np.mean(d)), "ci95": float(half), "n": len(d)})
        elif len(d) == 1:
            out.append({"dataset": ds, "keep": k, "a": a, "b": b, "mean_diff": float(d[0]), "ci95": None, "n": 1})
    return out


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    dss = sorted({r["dataset"] for r in rows})
    fig, axes = plt.subplots(1, len(dss), figsize=(5.5 * len(dss), 4), squeeze=False)
    for ax, ds in zip(axes[0], dss):
        for m in METHODS:
            rr = [r for r in rows if r["dataset"] == ds and r["method"] == m]
            if not rr:
                continue
            keeps = sorted({r["keep"] for r in rr})
            mu = [np.mean([r["f1"] for r in rr if r["keep"] == k]) for k in keeps]
            sd = [np.std([r["f1"] for r in rr if r["keep"] == k]) for k in keeps]
            ax.errorbar(keeps, mu, yerr=sd, marker="o", capsize=3, label=m, linestyle="--" if role(m) == "baseline" else "-")
        ax.set_xscale("log")
        ax.set_xlabel("fraction of training points kept")
        ax.set_ylabel("test micro F1")
        ax.set_title(f"{ds} (radius {DATASETS[ds]['radius']:g} px)")
        ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)


def plot_curves(rows: list[dict], path: Path) -> None:
    """Validation F1 against the epoch (mean over seeds/folds), one panel per data set and
    keep ratio below 1: whether the training budget was enough."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = sorted({(r["dataset"], r["keep"]) for r in rows if r.get("val_curve")})
    if not panels:
        return
    dss = sorted({ds for ds, _ in panels})
    ncol = max(sum(1 for d, _ in panels if d == ds) for ds in dss)
    fig, axes = plt.subplots(len(dss), ncol, figsize=(4.2 * ncol, 3.4 * len(dss)), squeeze=False)
    for a in axes.flat:
        a.set_visible(False)
    where = {}
    for ds, keep in panels:
        i = dss.index(ds)
        where[(ds, keep)] = axes[i][sum(1 for d, _ in where if d == ds)]
    for (ds, keep), ax in where.items():
        ax.set_visible(True)
        for m in METHODS:
            curves = [dict(map(tuple, r["val_curve"])) for r in rows
                      if r["dataset"] == ds and r["keep"] == keep and r["method"] == m and r.get("val_curve")]  # fmt: skip
            if not curves:
                continue
            epochs = sorted(set.intersection(*(set(c) for c in curves)))
            ax.plot([e + 1 for e in epochs], [np.mean([c[e] for c in curves]) for e in epochs], marker=".",
                    label=m, linestyle="--" if role(m) == "baseline" else "-")  # fmt: skip
        ax.set_title(f"{ds}, keep {keep:g}", fontsize=9)
        ax.set_xlabel("epoch")
        ax.set_ylabel("validation F1")
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


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
    ap.add_argument("--fold-per-seed", action="store_true", default=True,
                    help="BCData: the i-th seed uses fold i only (k = max(number of seeds, --folds)); the default")
    ap.add_argument("--all-folds", dest="fold_per_seed", action="store_false",
                    help="BCData: run every fold for every seed instead (k times the trainings)")
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
    ap.add_argument("--figures", type=Path, default=None,
                    help="write an energy figure (image, sparse labels, energy, prediction) of 3 test images "
                         "for every SEL-based model of the first seed into this folder")
    ap.add_argument("--append", action="store_true", help="add the new rows to those already in --out")
    ap.add_argument("--device", default="cpu", help="cpu or cuda (training and evaluation)")
    ap.add_argument("--precision", default="32-true", help="Lightning precision, e.g. bf16-mixed on a GPU")
    ap.add_argument("--num-workers", type=int, default=0, help="data-loading worker processes")
    ap.add_argument("--budget-minutes", type=float, default=None,
                    help="start no new training once this much time has passed (rows so far are kept)")
    args = ap.parse_args()
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
            ids = bcdata(args.data / ds, "test").ids()
            folds = bcdata_folds(ids, args.folds)
            plan = [(f, folds[f]) for f in folds_used]
            if args.fold_per_seed:
                folds = bcdata_folds(ids, max(len(args.seeds), args.folds))
        for keep in args.keeps:
            for seed in args.seeds:
                seed_plan = [(args.seeds.index(seed), folds[args.seeds.index(seed)])] if (ds == "bcdata" and args.fold_per_seed) else plan
                for fold, split in seed_plan:
                    # at keep 1.0 only cross-entropy differs from nothing: the others reduce to it or need labels missing
                    methods = ["ce"] if keep >= 1.0 else args.methods
                    for m in methods:
                        if args.budget_minutes is not None and time.time() - started > 60 * args.budget_minutes:
                            print(f"budget of {args.budget_minutes:g} min spent: stopping before {ds} keep {keep} seed {seed} {m}")
                            _write(args, rows, started)
                            print(summarise(rows))
                            return
                        row = run_one(args, ds, m, keep, seed, fold, split, args.work)
                        rows.append(row)
                        print(f"[{time.time() - started:6.0f} s] {ds} keep {keep} seed {seed}"
                              f"{'' if fold is None else f' fold {fold}'} {m:15s} F1 {row['f1']:.3f} "
                              f"(P {row['precision']:.3f} R {row['recall']:.3f} thr {row['threshold']:g}) "
                              f"AP {row['ap']:.3f} F1@0.7 {row['f1_at_0.7']:.3f}", flush=True)  # fmt: skip
                        _write(args, rows, started)
    _write(args, rows, started)
    print(summarise(rows))
    print(f"wrote {args.out}, {args.out.with_suffix('.md')}, {args.out.with_suffix('.png')}")


def _write(args, rows, started) -> None:
    from sparsecell.fileio import atomic_write_text

    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    except OSError:
        commit = ""
    cfg = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}
    if args.device.startswith("cuda"):
        import torch

        cfg["gpu"] = torch.cuda.get_device_name(0)
        cfg["torch"] = torch.__version__
    methods = [m for m in METHODS if any(r["method"] == m for r in rows)]
    pairs = [p for m in methods if m != "ce" for p in paired(rows, m, "ce")]
    if "const" in methods:
        pairs += [p for m in methods if m.startswith("sel") for p in paired(rows, m, "const")]
    if "pu" in methods:  # ours against the peer, the strongest baseline
        pairs += [p for m in methods if role(m) == "ours" for p in paired(rows, m, "pu")]
    doc = {"config": cfg, "version": __version__, "git_commit": commit, "seconds": round(time.time() - started),
           "rows": rows, "paired": pairs}  # fmt: skip
    atomic_write_text(args.out, json.dumps(doc, indent=1) + "\n")
    md = summarise(rows) + "\n\nPaired differences of micro F1 (a - b; 95% t interval over seeds/folds):\n\n"
    md += "\n".join(f"- {p['dataset']} keep {p['keep']}: {p['a']} - {p['b']} = {p['mean_diff']:+.3f}"
                    + (f" ± {p['ci95']:.3f}" if p["ci95"] is not None else "") + f" (n={p['n']})" for p in pairs)  # fmt: skip
    md += "\n" + analysis(rows)
    atomic_write_text(args.out.with_suffix(".md"), md + "\n")
    if rows:
        plot(rows, args.out.with_suffix(".png"))
        plot_curves(rows, args.out.with_name(args.out.stem + "_curves.png"))


if __name__ == "__main__":
    main()
