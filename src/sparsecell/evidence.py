"""The sparse-annotation evidence: what the benchmark's numbers say.

``benchmarks/sparse_annotation.py`` trains one detector per data set, keep ratio, seed
(and fold) and method, and writes one row (a dict) per trained model. This module holds
everything that turns those rows into the results: the named methods and their roles,
the energy statistics of a trained model, the markdown tables (summary, paired
differences, analysis) and the figures. It needs only NumPy to import; torch, SciPy and
Matplotlib are imported by the functions that use them.

A row has at least ``dataset``, ``method``, ``keep``, ``seed`` and ``f1``; the benchmark
adds ``fold`` (BCData), ``val_f1`` and ``val_curve``, ``per_class_f1`` (several classes),
the energy statistics of :func:`energy_separation` and the ``curve_*`` loss parts of the
SEL-based methods (see ``run_one`` in the script).
"""

from __future__ import annotations

import csv
from collections import defaultdict
from pathlib import Path
from typing import TYPE_CHECKING, Mapping, Sequence

import numpy as np

from .catalogue import DEFAULT_LOSS

if TYPE_CHECKING:
    from .inference.detector import Detector

__all__ = [
    "METHODS",
    "ROLES",
    "overrides",
    "role",
    "auc_above",
    "energy_separation",
    "energy_figure_for",
    "val_curve",
    "by_setting",
    "summarise",
    "analysis",
    "paired",
    "versus_table",
    "setting_table",
    "default_pairs",
    "validation_ranking",
    "format_pair",
    "markdown_report",
    "plot",
    "plot_curves",
    "environment",
]

#: The named variants: a method name -> its loss overrides (``key=value`` strings for
#: :func:`sparsecell.config.load_config`). The first override names the loss.
def _named_as_loss(*losses: str) -> dict[str, list[str]]:
    """Methods named as their loss, with the loss's defaults."""
    return {loss: [f"loss.name={loss}"] for loss in losses}


METHODS: dict[str, list[str]] = {
    **_named_as_loss("ce", "pu"),
    "const": ["loss.name=const", "loss.const_weight=0.4"],
    "const_0.2": ["loss.name=const", "loss.const_weight=0.2"],
    **_named_as_loss("sel", "sel_sfl"),
    "sel_sfl_detach": ["loss.name=sel_sfl", "loss.detach_energy=true"],
    **_named_as_loss("sel_pc", "sel_sfl_pc", "teacher", "sel_pu"),
    # the PU prior: estimated from the data (pu), or told the simulated keep (an oracle, for reference)
    "pu_oracle": ["loss.name=pu", "loss.pu_keep={keep}"],
    "sel_pu_oracle": ["loss.name=sel_pu", "loss.pu_keep={keep}"],
    **_named_as_loss("pu_pseudo", "pu_sar"),
    # rows of its first version (before clicks in known complete regions weighed 1; region rows differ, the rest
    # are pu_sar's computation exactly, and were renamed back)
    "pu_sar_v1": ["loss.name=pu_sar"],
    # its variant: conspicuity relative to the cell's own image, weights shrunk by the evidence of bias
    "pu_sar_shrunk": ["loss.name=pu_sar", "loss.sar_reference=image", "loss.sar_shrink=true"],
    # the first version: a stricter threshold, two rounds in a row, the censoring form of the risk
    "pu_pseudo_v1": ["loss.name=pu_pseudo", "loss.pseudo_precision=0.8", "loss.pseudo_stable=true",
                     "loss.pseudo_censoring=true"],
    # region clicking with the annotated regions hidden from the loss (the default tells it)
    "pu_noregions": ["loss.name=pu", "data.regions_known=false"],
    "ce_noregions": ["loss.name=ce", "data.regions_known=false"],
    # the training-free peer (sparsecell.classical): no loss, no clicks; fitted on the validation images
    "classical": [],
    # a trained model's cells, positive or negative by their measured DAB density (a threshold fitted on
    # validation) instead of its class channels: rows the benchmark derives from the same training
    **{f"{m}_dab": ["loss.name=" + m] for m in ("ce", "pu", "pu_sar")},
    # bootstrapped from the peer: its detections (fitted on validation) join the clicks as labels
    **{f"{m}_peer": ["loss.name=" + m, "data.bootstrap=classical"] for m in ("ce", "pu", "pu_sar")},
    # stain-aware input: the optical densities of a fixed colour deconvolution beside RGB (model.stain_input)
    "pu_sar_od": ["loss.name=pu_sar", "model.stain_input=true"],
    "pu_sar_peer_od": ["loss.name=pu_sar", "data.bootstrap=classical", "model.stain_input=true"],
}

#: Roles of the methods whose role is not their loss's (see :func:`role`).
ROLES: dict[str, str] = {"const_0.2": "baseline", "sel_sfl_detach": "ours", "pu_oracle": "baseline",
                         "classical": "baseline"}  # fmt: skip


#: Methods that are never the default: told the truth (an oracle), blind twins of the
#: region-aware ones, or superseded versions.
#: The classical peer is not a training method, so never the default either.
NOT_CANDIDATES = ("pu_oracle", "sel_pu_oracle", "pu_noregions", "ce_noregions", "pu_pseudo_v1", "pu_sar_v1",
                  "pu_sar_shrunk", "classical")


def overrides(method: str, keep: float) -> list[str]:
    """The config overrides of a named method at a keep ratio (``{keep}`` filled in)."""
    return [o.replace("{keep}", repr(float(keep))) for o in METHODS[method]]


def role(method: str) -> str:
    """``"baseline"`` or ``"ours"``: from :data:`ROLES` if named there, else the role of
    the method's loss (``sparsecell.losses.ROLES``)."""
    if method in ROLES:
        return ROLES[method]
    from .catalogue import ROLES as LOSS_ROLES

    key, loss = METHODS[method][0].split("=", 1)
    assert key == "loss.name", f"{method}: the first override must name the loss, not {key}"
    return LOSS_ROLES[loss]


# --- one trained model -------------------------------------------------------------------


def auc_above(higher: np.ndarray, lower: np.ndarray) -> float:
    """P(h > l) + 0.5 P(h == l) for h drawn from ``higher`` and l from ``lower``, over all
    pairs (the Mann-Whitney AUC, ties counted half). Both must be non-empty."""
    h = np.sort(np.asarray(higher, dtype=float).ravel())
    lo = np.asarray(lower, dtype=float).ravel()
    if not len(h) or not len(lo):
        raise ValueError("auc_above needs two non-empty samples")
    left = np.searchsorted(h, lo, side="left")
    right = np.searchsorted(h, lo, side="right")
    above = int((len(h) - right).sum())  # pairs with h > l
    equal = int((right - left).sum())  # pairs with h == l
    return (above + 0.5 * equal) / (len(h) * len(lo))


def energy_separation(det: "Detector", train_samples, sparse) -> dict:
    """How well the semantic energy tells the cells missing from the sparse labels from
    background, on training images.

    ``train_samples`` are the training samples with their full annotations and ``sparse``
    the sparse points the model was trained on (one per sample). The energy is sampled at
    the missed cells (annotated, not kept) and at up to 400 random background pixels per
    image, at least 10 px from any cell (seeded, so repeatable).

    Returns ``energy_auc`` (:func:`auc_above` of background over missed-cell energy: 1 =
    every background pixel has more energy than every missed cell), and the means
    ``energy_missed_mean`` and ``energy_background_mean``; all None when there are no
    missed cells or no background pixels.
    """
    from .training.energy import node_energy

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
        # background: random pixels more than 10 px from every cell, annotated or not
        yy, xx = rng.integers(0, H, 400), rng.integers(0, W, 400)
        if len(s.points):
            d = np.min(np.hypot(xx[:, None] - s.points.xy[None, :, 0], yy[:, None] - s.points.xy[None, :, 1]), axis=1)
            far = d > 10
            yy, xx = yy[far], xx[far]
        bg_e.append(E[yy, xx])
    m, b = np.concatenate(miss_e or [np.zeros(0)]), np.concatenate(bg_e or [np.zeros(0)])
    if not len(m) or not len(b):
        return {"energy_auc": None, "energy_missed_mean": None, "energy_background_mean": None}
    return {"energy_auc": auc_above(b, m), "energy_missed_mean": float(m.mean()), "energy_background_mean": float(b.mean())}


def energy_figure_for(det: "Detector", test, keep: float, path: Path, title: str) -> None:
    """Image, sparse labels, energy and prediction for a few test images
    (:func:`sparsecell.report.energy_figure`); the energy is computed from the test
    image's own annotations thinned to ``keep`` (seeded by the image's index)."""
    from .training.energy import node_energy
    from .report import energy_figure
    from .training.targets import sparsify

    rows = []
    for i, s in enumerate(test):
        sp = sparsify(s.points, keep, seed=i)
        rows.append({"image": s.image, "truth": s.points, "sparse": sp, "energy": node_energy(det, s.image, sp),
                     "pred": det.predict(s.image)})  # fmt: skip
    energy_figure(rows, path, title=title)


def val_curve(out_dir: Path, key: str = "val_f1") -> list[list[float]]:
    """``[[epoch, value], ...]`` of one logged metric (validation F1 by default) from the
    Lightning CSV logs under ``out_dir/logs``; values rounded to 4 decimals."""
    pts = []
    for f in sorted((Path(out_dir) / "logs").glob("version_*/metrics.csv")):
        with open(f) as fh:
            for row in csv.DictReader(fh):
                if row.get(key):
                    pts.append([int(row["epoch"]), round(float(row[key]), 4)])
    return pts


# --- the rows of many trained models: tables -----------------------------------------


def by_setting(rows: Sequence[dict]) -> list[dict]:
    """The rows with ``dataset`` naming the setting the tables and pairs group by: the
    data set, plus the simulated clicking when not uniform random (``"bcdata, salient"``;
    a row without ``sparsity`` is random). Full-label rows (keep 1.0, where the clicking
    does not matter) appear in every setting of their data set."""
    out = []
    for r in rows:
        sp = r.get("sparsity") or "random"
        if r["keep"] >= 1.0:
            settings = sorted({x.get("sparsity") or "random" for x in rows if x["dataset"] == r["dataset"]})
        else:
            settings = [sp]
        for s in settings:
            out.append({**r, "dataset": r["dataset"] if s == "random" else f"{r['dataset']}, {s}"})
    return out


def summarise(rows: Sequence[dict]) -> str:
    """Markdown: mean ± std of micro F1 over seeds/folds, per data set, keep and method
    (and a per-class table for the data sets whose rows have ``per_class_f1``); one
    table per setting (:func:`by_setting`)."""
    rows = by_setting(rows)
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
                f = [r["f1"] for r in cells.get((ds, m, k), [])]
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
                            f"{np.mean([x[n] for x in c]):.3f} ± {np.std([x[n] for x in c]):.3f}" for n in names) + " |")  # fmt: skip
        if any(r.get("ki67_mae") is not None for r in rows if r["dataset"] == ds):
            lines += _ki67_table([r for r in rows if r["dataset"] == ds], methods, keeps, ds)
    return "\n".join(lines)


def _ki67_table(rows: Sequence[dict], methods: Sequence[str], keeps: Sequence[float], ds: str) -> list[str]:
    """Markdown lines: the per-image Ki-67 index error (mean absolute, percentage points)
    and its bias, mean ± std over seeds/folds, per method and keep."""
    lines = [f"\nKi-67 index error on {ds} (percentage points, per test image: mean absolute error, then the bias, "
             "mean ± std over seeds/folds):\n", "| method | " + " | ".join(f"keep {k}" for k in keeps) + " |",
             "|---|" + "---|" * len(keeps)]  # fmt: skip
    for m in methods:
        vals = []
        for k in keeps:
            c = [r for r in rows if r["method"] == m and r["keep"] == k and r.get("ki67_mae") is not None]
            mae, bias = [r["ki67_mae"] for r in c], [r["ki67_bias"] for r in c if r.get("ki67_bias") is not None]
            vals.append(f"{np.mean(mae):.1f} ± {np.std(mae):.1f} (bias {np.mean(bias):+.1f})" if c else "-")
        lines.append(f"| {m} | " + " | ".join(vals) + " |")
    return lines


def _sfl_share(c: Sequence[dict]) -> str:
    """SFL's mean share of the loss at the first / last epoch (``-`` without curves).

    The curves hold SFL unweighted and the total loss; the benchmark trains with the
    default SFL weight (``LossConfig().lambda2``)."""
    sh = [(r["curve_sfl"], r["curve_loss"]) for r in c if r.get("curve_sfl") and r.get("curve_loss")]
    if not sh:
        return "-"
    from .config import LossConfig

    lam2 = LossConfig().lambda2
    first = np.mean([lam2 * s[0][1] / l[0][1] for s, l in sh if l[0][1]])
    last = np.mean([lam2 * s[-1][1] / l[-1][1] for s, l in sh if l[-1][1]])
    return f"{first:.2f} / {last:.2f}"


def analysis(rows: Sequence[dict]) -> str:
    """Markdown, per data set with keep ratios below 1: each method's test F1 as a share
    of cross-entropy's with every label, its mean validation F1 (what the default is
    chosen on), and for the SEL-based methods the energy statistics of
    :func:`energy_separation` and SFL's share of the loss (first / last epoch); for the
    methods that estimate it, the estimated share of annotated cells (mean over seeds)
    and its error against the true share (``clicked_share``, else ``keep``), and ``-> `` the model's re-estimate at the end of training
    where a method makes one."""
    rows = by_setting(rows)
    lines = []
    for ds in sorted({r["dataset"] for r in rows}):
        full = [r["f1"] for r in rows if r["dataset"] == ds and r["method"] == "ce" and r["keep"] >= 1.0]
        keeps = sorted({r["keep"] for r in rows if r["dataset"] == ds and r["keep"] < 1.0})
        if not keeps:
            continue
        lines.append(f"\n**{ds}**: test F1 / ce's at keep 1.0 ({np.mean(full):.3f}); mean validation F1; energy "
                     "(SEL methods: AUC of background above missed cells, mean at missed cells / background); "
                     "SFL's share of the loss (first / last epoch)\n" if full else f"\n**{ds}**\n")  # fmt: skip
        lines += ["| method | keep | F1 / full | val F1 | keep estimate | energy AUC | energy missed / bg | SFL share |",
                  "|---|---|---|---|---|---|---|---|"]  # fmt: skip
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
                en, gap = "-", "-"
                er = [r for r in c if r.get("energy_auc") is not None]
                if er:
                    en = f"{np.mean([r['energy_auc'] for r in er]):.2f}"
                    gap = (f"{np.mean([r['energy_missed_mean'] for r in er]):.2f} / "
                           f"{np.mean([r['energy_background_mean'] for r in er]):.2f}")  # fmt: skip
                truth = float(np.mean([r.get("clicked_share", r["keep"]) for r in c]))
                est = [r["keep_estimate"] for r in c if r.get("keep_estimate") is not None]
                est = f"{np.mean(est):.3f} ({np.mean(est) / truth - 1:+.0%})" if est else "-"
                again = [r["keep_estimate_model"] for r in c if r.get("keep_estimate_model") is not None]
                if again:  # re-estimated by the model during training (pu_pseudo): the last round's
                    est += f" -> {np.mean(again):.3f} ({np.mean(again) / truth - 1:+.0%})"
                lines.append(f"| {m} | {k} | {ratio} | {val} | {est} | {en} | {gap} | {_sfl_share(c)} |")
    return "\n".join(lines)


# --- paired differences ------------------------------------------------------------------


def paired(rows: Sequence[dict], a: str, b: str, metric: str = "f1") -> list[dict]:
    """Paired differences of ``metric`` (micro F1 unless told, e.g. ``ki67_mae``), method
    ``a`` - method ``b``, matched by data set, keep, seed and fold: one dict per (data
    set, keep) with ``mean_diff``, ``ci95`` (the half-width of a 95% t interval; None for
    a single pair) and ``n`` (and ``metric`` when not F1); rows without the metric take
    no part; the settings of :func:`by_setting` pair separately."""
    from scipy import stats

    rows = [r for r in by_setting(rows) if r.get(metric) is not None]
    idx = {(r["dataset"], r["keep"], r["seed"], r.get("fold"), r["method"]): r[metric] for r in rows}
    tag = {} if metric == "f1" else {"metric": metric}
    out = []
    for ds, k in sorted({(r["dataset"], r["keep"]) for r in rows}):
        d = [idx[(ds, k, s, f, a)] - idx[(ds, k, s, f, b)] for (dd, kk, s, f, m) in idx
             if dd == ds and kk == k and m == a and (ds, k, s, f, b) in idx]  # fmt: skip
        if len(d) >= 2:
            half = stats.t.ppf(0.975, len(d) - 1) * np.std(d, ddof=1) / np.sqrt(len(d))
            out.append({"dataset": ds, "keep": k, "a": a, "b": b, "mean_diff": float(np.mean(d)), "ci95": float(half),
                        "n": len(d), **tag})  # fmt: skip
        elif len(d) == 1:
            out.append({"dataset": ds, "keep": k, "a": a, "b": b, "mean_diff": float(d[0]), "ci95": None, "n": 1, **tag})
    return out


def default_pairs(rows: Sequence[dict]) -> list[dict]:
    """The comparisons the benchmark reports (:func:`paired` of each): every method
    against ``ce``; the SEL-based ones against ``const`` (the constant-weight control);
    ours against ``pu`` (the peer, the strongest baseline; ``pu_oracle`` in runs without
    ``pu``); ``pu`` (estimated prior)
    against ``pu_oracle`` (told the truth), and the region-aware methods against their
    blind twins (``*_noregions``); where the classical peer ran, every method against
    it, in F1 and in the Ki-67 index error (``ki67_mae``), and the default's variants
    (``pu_sar_*``) against it. Only methods present in
    ``rows`` take part, in :data:`METHODS` order."""
    methods = [m for m in METHODS if any(r["method"] == m for r in rows)]
    pairs = [p for m in methods if m != "ce" for p in paired(rows, m, "ce")]
    if "const" in methods:
        pairs += [p for m in methods if m.startswith("sel") for p in paired(rows, m, "const")]
    peer = "pu" if "pu" in methods else "pu_oracle" if "pu_oracle" in methods else None
    if peer:
        pairs += [p for m in methods if role(m) == "ours" for p in paired(rows, m, peer)]
    if "pu" in methods:
        pairs += [p for m in ("pu_oracle", "pu_noregions") if m in methods for p in paired(rows, "pu", m)]
    if "ce_noregions" in methods:
        pairs += paired(rows, "ce", "ce_noregions")
    if "classical" in methods:
        pairs += [p for metric in ("f1", "ki67_mae") for m in methods if m not in ("ce", "classical")
                  for p in paired(rows, m, "classical", metric)]  # fmt: skip
        pairs += [p for p in paired(rows, "ce", "classical") + paired(rows, "ce", "classical", "ki67_mae")]
        # the candidates for a default that beats the peer, each against the default it would replace
        pairs += [p for metric in ("f1", "ki67_mae") for m in methods if m.startswith(f"{DEFAULT_LOSS}_")
                  for p in paired(rows, m, DEFAULT_LOSS, metric)]  # fmt: skip
    return pairs


def format_pair(p: dict) -> str:
    """One paired difference as a markdown list item, e.g.
    ``- bcdata keep 0.25: pu - ce = +0.200 ± 0.124 (n=3)`` (the metric named after the
    methods when it is not F1)."""
    ci = f" ± {p['ci95']:.3f}" if p["ci95"] is not None else ""
    what = f" ({p['metric']})" if p.get("metric") else ""
    return f"- {p['dataset']} keep {p['keep']}: {p['a']} - {p['b']}{what} = {p['mean_diff']:+.3f}{ci} (n={p['n']})"


def validation_ranking(rows: Sequence[dict], candidates: Sequence[str]) -> list[tuple[str, float, int]]:
    """How the default is chosen: each candidate's mean validation F1 over the cells
    (setting, keep < 1, seed, fold) where every candidate has a row, best first:
    ``[(method, mean val F1, cells), ...]``. Uses no test score and no oracle."""
    rows = by_setting(rows)
    key = lambda r: (r["dataset"], r["keep"], r["seed"], r.get("fold"))  # noqa: E731
    have = defaultdict(dict)
    for r in rows:
        if r["keep"] < 1.0 and r["method"] in candidates and r.get("val_f1") is not None:
            have[key(r)][r["method"]] = r["val_f1"]
    full = [v for v in have.values() if all(m in v for m in candidates)]
    out = [(m, float(np.mean([v[m] for v in full])) if full else float("nan"), len(full)) for m in candidates]
    return sorted(out, key=lambda t: -t[1] if t[1] == t[1] else 0.0)


def setting_table(rows: Sequence[dict], keep: float, methods: Sequence[str]) -> str:
    """Markdown: test F1 (mean ± std over seeds) at one keep, a row per setting
    (:func:`by_setting`) and a column per method, the best mean of each row in bold,
    ``-`` where a method did not run, plus ``ce`` with every label."""
    cells = defaultdict(list)
    for r in by_setting(rows):
        cells[(r["dataset"], r["keep"], r["method"])].append(r["f1"])
    settings = sorted({d for d, k, m in cells if k == keep and m in methods})
    lines = ["| setting | " + " | ".join(f"`{m}`" for m in methods) + " | `ce`, every label |",
             "|---|" + "---|" * (len(methods) + 1)]  # fmt: skip
    for ds in settings:
        means = {m: np.mean(cells[(ds, keep, m)]) for m in methods if cells.get((ds, keep, m))}
        best = max(means.values()) if means else None
        vals = []
        for m in methods:
            f = cells.get((ds, keep, m))
            txt = f"{np.mean(f):.3f} ± {np.std(f):.3f}" if f else "-"
            vals.append(f"**{txt}**" if f and means[m] == best else txt)
        full = cells.get((ds, 1.0, "ce"))
        vals.append(f"{np.mean(full):.3f} ± {np.std(full):.3f}" if full else "-")
        lines.append(f"| {ds} | " + " | ".join(vals) + " |")
    return "\n".join(lines)


def versus_table(rows: Sequence[dict], ours: str, peer: str = "pu") -> str:
    """Markdown: ``ours`` against ``peer`` in every setting and keep < 1 both ran in:
    their test F1 (mean ± std), the paired difference with its 95% interval (bold when
    the interval excludes 0), how many paired runs ``ours`` led, and each one's share of
    ``ce`` with every label (keep 1.0) on the same data set (the issue's targets)."""
    full = defaultdict(list)
    for r in rows:
        if r["method"] == "ce" and r["keep"] >= 1.0:
            full[r["dataset"]].append(r["f1"])
    cells = defaultdict(list)
    for r in by_setting(rows):
        cells[(r["dataset"], r["keep"], r["method"])].append(r)
    idx = {(r["dataset"], r["keep"], r["seed"], r.get("fold"), r["method"]): r["f1"] for r in by_setting(rows)}
    lines = [f"| setting | keep | `{peer}` | `{ours}` | `{ours} - {peer}` (paired, 95%) | runs ahead | "
             f"share of full-label `ce`: `{peer}` / `{ours}` |", "|---|---|---|---|---|---|---|"]  # fmt: skip
    for ds, k in sorted({(d, kk) for d, kk, m in cells if m == ours and kk < 1.0}):
        if (ds, k, peer) not in cells:
            continue
        p = paired([r for r in rows if r["method"] in (ours, peer)], ours, peer)
        p = next((x for x in p if x["dataset"] == ds and x["keep"] == k), None)
        d = [idx[key[:4] + (ours,)] - idx[key] for key in idx if key[0] == ds and key[1] == k and key[4] == peer
             and key[:4] + (ours,) in idx]  # fmt: skip
        f = {m: [r["f1"] for r in cells[(ds, k, m)]] for m in (peer, ours)}
        base = full.get(ds.split(",")[0])
        share = " / ".join(f"{np.mean(f[m]) / np.mean(base):.2f}" for m in (peer, ours)) if base else "-"
        diff = "-"
        if p is not None:
            diff = f"{p['mean_diff']:+.3f}" + (f" ± {p['ci95']:.3f}" if p["ci95"] is not None else "")
            if p["ci95"] is not None and abs(p["mean_diff"]) > p["ci95"]:
                diff = f"**{diff}**"
        lines.append(f"| {ds} | {k} | {np.mean(f[peer]):.3f} ± {np.std(f[peer]):.3f} (n={len(f[peer])}) | "
                     f"{np.mean(f[ours]):.3f} ± {np.std(f[ours]):.3f} (n={len(f[ours])}) | {diff} | "
                     f"{sum(x > 0 for x in d)} of {len(d)} | {share} |")  # fmt: skip
    return "\n".join(lines)


def markdown_report(rows: Sequence[dict], pairs: Sequence[dict]) -> str:
    """The benchmark's whole markdown file: :func:`summarise`, the paired differences
    (``pairs``, e.g. :func:`default_pairs`), the :func:`validation_ranking` of the methods
    that need no oracle, and :func:`analysis`; ends with a newline."""
    md = summarise(rows) + "\n\nPaired differences of micro F1 (a - b; 95% t interval over seeds/folds):\n\n"
    md += "\n".join(format_pair(p) for p in pairs if not p.get("metric"))
    by_index = [p for p in pairs if p.get("metric") == "ki67_mae"]
    if by_index:
        md += ("\n\nPaired differences of the Ki-67 index error (mean absolute, percentage points; a - b, "
               "negative: a is closer to the true index):\n\n" + "\n".join(format_pair(p) for p in by_index))
    candidates = [m for m in METHODS if m not in NOT_CANDIDATES and any(r["method"] == m and r["keep"] < 1.0 for r in rows)]
    rank = validation_ranking(rows, candidates) if len(candidates) > 1 else []
    if rank and rank[0][2]:
        md += (f"\n\nMean validation F1 over the {rank[0][2]} cells every sparse-label method without an oracle ran in "
               "(how the default is chosen): " + ", ".join(f"{m} {v:.3f}" for m, v, _ in rank))
    ours = [m for m in METHODS if role(m) == "ours" and m not in NOT_CANDIDATES and any(r["method"] == m for r in rows)]
    for m in ours:
        if any(r["method"] == "pu" for r in rows):
            md += f"\n\n`{m}` against `pu`, setting by setting:\n\n" + versus_table(rows, m, "pu")
            rank = validation_ranking(rows, [m, "pu"])
            if rank[0][2]:
                md += (f"\n\nMean validation F1 over the {rank[0][2]} cells both ran in: "
                       + ", ".join(f"{mm} {v:.3f}" for mm, v, _ in rank))
    md += "\n" + analysis(rows)
    return md + "\n"


# --- figures -----------------------------------------------------------------------------


def plot(rows: Sequence[dict], path: Path, radii: Mapping[str, float]) -> None:
    """Test micro F1 (mean ± std over seeds/folds) against the keep ratio, one panel per
    data set, one line per method (baselines dashed). ``radii``: data set -> the matching
    radius in px, for the panel titles. One panel per setting (:func:`by_setting`)."""
    import matplotlib

    rows = by_setting(rows)
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
        ax.set_title(f"{ds} (radius {radii[ds.split(',')[0]]:g} px)")
        ax.legend(fontsize=8)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)


def plot_curves(rows: Sequence[dict], path: Path) -> None:
    """Validation F1 against the epoch (mean over seeds/folds, over the epochs all of them
    logged), one panel per data set and keep ratio with curves: whether the training
    budget was enough. Writes nothing when no row has a ``val_curve``."""
    import matplotlib

    rows = by_setting(rows)
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
        where[(ds, keep)] = axes[dss.index(ds)][sum(1 for d, _ in where if d == ds)]
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


# --- where it ran ------------------------------------------------------------------------


def _cpu_name() -> str:
    """The CPU's model name from /proc/cpuinfo (Linux), else ``platform.processor()``."""
    import platform

    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def environment() -> dict:
    """Where a benchmark ran: ``torch_threads`` (torch's intra-op threads), ``cpu``,
    ``platform``, ``python`` and the versions of torch, numpy, lightning, scipy and
    scikit-image (None for a package that is not installed)."""
    import platform
    from importlib import metadata

    import torch

    def version(dist: str) -> str | None:
        try:
            return metadata.version(dist)
        except metadata.PackageNotFoundError:
            return None

    return {
        "torch_threads": int(torch.get_num_threads()),
        "cpu": _cpu_name(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        **{name: version(name) for name in ("numpy", "lightning", "scipy", "scikit-image")},
    }
