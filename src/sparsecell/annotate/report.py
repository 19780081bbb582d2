"""The annotate-next evidence from its rows (``benchmarks/results/annotate_next.json``):
F1-versus-clicks curves, the area under them over a common range of clicks, the clicks
each strategy needs to reach 0.95 x the full-label F1, paired differences against
``random`` over seeds, and the figure.

A strategy's curve on one seed is round 0 (shared by every strategy of that seed) and
its rounds, as (cumulative clicks, test F1) points joined by straight lines.
"""

from __future__ import annotations

from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

__all__ = ["curves", "mean_f1_over", "clicks_to", "loop_gain", "annotate_report", "plot_annotate", "TARGET_SHARE"]

#: The target: this share of the F1 of cross-entropy on every label.
TARGET_SHARE = 0.95


def _group(r: Mapping) -> tuple[str, str, str]:
    """A row's loop: (data set, clicking setting, round 0 from ``clicks`` or the ``peer``)."""
    return r["dataset"], r.get("setting", "exhaustive"), r.get("round0", "clicks")


def curves(rows: Sequence[dict], dataset: str, metric: str = "f1", setting: str = "exhaustive",
           round0: str = "clicks") -> dict:  # fmt: skip
    """``{strategy: {seed: (clicks array, metric array)}}`` sorted by clicks, round 0 first,
    of the loops of one data set, clicking setting and round 0."""
    rows = [r for r in rows if _group(r) == (dataset, setting, round0)]
    start = {r["seed"]: r for r in rows if r["strategy"] == "start"}
    out: dict = {}
    for r in rows:
        if r["strategy"] == "start" or r["strategy"].endswith("_once") or r["seed"] not in start:
            continue
        out.setdefault(r["strategy"], {}).setdefault(r["seed"], [start[r["seed"]]]).append(r)
    res = {}
    for s, by_seed in out.items():
        res[s] = {}
        for seed, rs in by_seed.items():
            rs = sorted(rs, key=lambda r: r["round"])
            x = np.array([r["clicks"] for r in rs], float)
            y = np.array([np.nan if r.get(metric) is None else r[metric] for r in rs], float)
            res[s][seed] = (x, y)
    return res


def mean_f1_over(x: np.ndarray, y: np.ndarray, lo: float, hi: float) -> float:
    """The area under the piecewise-linear curve between ``lo`` and ``hi`` clicks,
    divided by ``hi - lo``: the curve's mean over that range (flat beyond its ends)."""
    if hi <= lo:
        return float(np.interp(lo, x, y))
    grid = np.linspace(lo, hi, 201)
    v = np.interp(grid, x, y)
    return float(np.sum((v[1:] + v[:-1]) * 0.5 * np.diff(grid)) / (hi - lo))


def clicks_to(x: np.ndarray, y: np.ndarray, target: float) -> float | None:
    """The clicks where the curve first reaches ``target`` (linear between rounds; None:
    never within the loop)."""
    for i in range(len(x)):
        if y[i] >= target:
            if i == 0:
                return float(x[0])
            f = (target - y[i - 1]) / (y[i] - y[i - 1])
            return float(x[i - 1] + f * (x[i] - x[i - 1]))
    return None


def _ci(d: Sequence[float]) -> tuple[float, float | None]:
    from scipy import stats

    d = np.asarray(d, float)
    if len(d) < 2:
        return float(d.mean()) if len(d) else float("nan"), None
    return float(d.mean()), float(stats.t.ppf(0.975, len(d) - 1) * d.std(ddof=1) / np.sqrt(len(d)))


def summary(doc: Mapping, dataset: str, metric: str = "f1", setting: str = "exhaustive", round0: str = "clicks") -> dict:
    """Per strategy: mean final clicks and metric, the area (mean metric over the clicks
    every strategy of a seed reaches), clicks to the target, and the paired area
    difference against ``random`` (mean, 95% half-width, n)."""
    cs = curves(doc["rows"], dataset, metric, setting, round0)
    seeds = sorted(set.intersection(*[set(v) for v in cs.values()])) if cs else []
    full = doc.get("full_f1", {}).get(dataset)
    out = {}
    for s, by_seed in cs.items():
        area, reach, last_x, last_y = {}, [], [], []
        for seed in seeds:
            lo = cs[s][seed][0][0]
            hi = min(cs[t][seed][0][-1] for t in cs)
            x, y = by_seed[seed]
            area[seed] = mean_f1_over(x, y, lo, hi)
            last_x.append(x[-1])
            last_y.append(y[-1])
            if full is not None and metric == "f1":
                reach.append(clicks_to(x, y, TARGET_SHARE * full))
        diff = [area[k] - mean_f1_over(*cs["random"][k], cs[s][k][0][0], min(cs[t][k][0][-1] for t in cs))
                for k in seeds] if "random" in cs and s != "random" else []  # fmt: skip
        out[s] = {"clicks": float(np.mean(last_x)) if last_x else None, "final": float(np.nanmean(last_y)) if last_y else None,
                  "area": float(np.mean(list(area.values()))) if area else None, "reach": reach,
                  "vs_random": _ci(diff) + (len(diff),) if diff else None}  # fmt: skip
    return out


def _once_rows(doc: Mapping, group: tuple) -> dict:
    out: dict = {}
    for r in doc["rows"]:
        if _group(r) == group and r["strategy"].endswith("_once"):
            out.setdefault(r["strategy"], []).append(r)
    return out


def loop_gain(doc: Mapping, dataset: str, a: tuple[str, str], b: tuple[str, str]) -> dict:
    """Loops ``a`` against loops ``b``, each a (clicking setting, round 0), per strategy
    run both ways: the paired difference (a - b; mean, 95% half-width, n) of the mean F1
    over the clicks both loops of a seed cover (from the later round 0 to the smaller
    final budget). E.g. does round 0 from the peer save clicks, or what does clicking
    only the conspicuous cells of a square cost."""
    ca, cb = curves(doc["rows"], dataset, "f1", *a), curves(doc["rows"], dataset, "f1", *b)
    out = {}
    for s in sorted(set(ca) & set(cb)):
        diff = []
        for seed in sorted(set(ca[s]) & set(cb[s])):
            (xa, ya), (xb, yb) = ca[s][seed], cb[s][seed]
            lo, hi = max(xa[0], xb[0]), min(xa[-1], xb[-1])
            diff.append(mean_f1_over(xa, ya, lo, hi) - mean_f1_over(xb, yb, lo, hi))
        if diff:
            out[s] = _ci(diff) + (len(diff),)
    return out


#: The loops compared in the report: (loops, against, what the difference says).
COMPARISONS = ((("exhaustive", "peer"), ("exhaustive", "clicks"), "round 0 from the peer against round 0 from clicks"),
               (("salient", "clicks"), ("exhaustive", "clicks"),
                "the conspicuous cells of more squares against every cell of fewer, per click"),
               (("salient_complete", "clicks"), ("salient", "clicks"),
                "the partly clicked squares declared complete against not declared"))  # fmt: skip


def _pm(v) -> str:
    return f"{v[0]:+.3f}" + (f" ± {v[1]:.3f}" if v[1] is not None else "") + f" (n={v[2]})"


SETTING_TEXT = {"exhaustive": "every cell in a chosen square clicked",
                "salient": "the conspicuous share of each chosen square's cells clicked, the square not declared complete",
                "salient_complete": "the same clicks as salient, the square still declared complete"}
ROUND0_TEXT = {"clicks": "round 0: random squares", "peer": "round 0: the classical peer's labels, no click"}


def annotate_report(doc: Mapping) -> str:
    """The markdown report: one table per data set, clicking setting and round 0."""
    lines = ["# Annotate next: simulated loops", "",
             f"Default strategy: `{doc.get('default_strategy')}`. Test micro F1 against cumulative clicked cells; "
             "area = the mean F1 over the clicks every strategy of a seed reaches (round 0 to the smallest final "
             f"budget); target = {TARGET_SHARE} x the F1 of cross-entropy on every label.", ""]  # fmt: skip
    for group in sorted({_group(r) for r in doc.get("rows", [])}):
        ds, setting, r0 = group
        full = doc.get("full_f1", {}).get(ds)
        sm = summary(doc, ds, "f1", setting, r0)
        va = summary(doc, ds, "val_f1", setting, r0)  # the same area on the validation images: what chooses the default
        has_ki = any(r.get("ki67_mae") is not None for r in doc["rows"] if _group(r) == group)
        ki = summary(doc, ds, "ki67_mae", setting, r0) if has_ki else {}
        n = max((len(v["reach"]) for v in sm.values()), default=0)
        start = [r for r in doc["rows"] if _group(r) == group and r["strategy"] == "start"]
        if not start:
            continue
        lines += [f"## {ds}: {setting} ({SETTING_TEXT.get(setting, setting)}; {ROUND0_TEXT.get(r0, r0)})", "",
                  f"Round 0: {np.mean([r['clicks'] for r in start]):.0f} clicks, F1 {np.mean([r['f1'] for r in start]):.3f} "
                  f"(mean of {len(start)} seeds). Full-label F1: {'not measured' if full is None else f'{full:.3f}'} "
                  f"(target {'-' if full is None else f'{TARGET_SHARE * full:.3f}'}).", "",
                  "| strategy | final clicks | final F1 | area (mean F1) | area - random (95% CI, n) | seeds reaching the target (clicks) |"
                  " validation area |" + (" final Ki-67 MAE (pp) |" if ki else ""),
                  "|---|---|---|---|---|---|---|" + ("---|" if ki else "")]  # fmt: skip
        for s, v in sm.items():
            vr = "-" if v["vs_random"] is None else _pm(v["vs_random"])
            reached = [c for c in v["reach"] if c is not None]
            reach = f"{len(reached)}/{len(v['reach'])}" + (f" ({np.mean(reached):.0f})" if reached else "")
            val = f"{va[s]['area']:.3f}" if s in va and va[s]["area"] is not None else "-"
            row = f"| {s} | {v['clicks']:.0f} | {v['final']:.3f} | {v['area']:.3f} | {vr} | {reach} | {val} |"
            if ki:
                row += f" {ki[s]['final']:.1f} |" if s in ki and ki[s]["final"] is not None else " - |"
            lines.append(row)
        for s, rs in _once_rows(doc, group).items():
            lines.append(f"| {s} (one round from scratch) | {np.mean([r['clicks'] for r in rs]):.0f} | "
                         f"{np.mean([r['f1'] for r in rs]):.3f} | - | - | - | - |" + (
                             f" {np.mean([r['ki67_mae'] for r in rs]):.1f} |" if ki else ""))  # fmt: skip
        lines += ["", f"({n} seeds.)", ""]
        for la, lb, what in COMPARISONS:
            gain = loop_gain(doc, ds, la, lb) if (setting, r0) == la else {}
            if gain:
                lines += [f"{what[0].upper()}{what[1:]}, the same strategy and seed (mean F1 over the clicks both "
                          "loops cover; paired difference, 95% CI):", ""]  # fmt: skip
                lines += [f"- {s}: {_pm(v)}" for s, v in gain.items()] + [""]
    return "\n".join(lines) + "\n"


def plot_annotate(doc: Mapping, path: Path) -> None:
    """F1 against clicks: a row of panels per data set, a panel per clicking setting, a
    line per strategy (mean over seeds at each round; dotted, the same colour: round 0
    from the peer), the target as a dashed line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ..formats.fileio import atomic_path

    dss = sorted({_group(r)[0] for r in doc["rows"]})
    settings = [s for s in SETTING_TEXT if any(_group(r)[1] == s for r in doc["rows"])]
    strategies = sorted({r["strategy"] for r in doc["rows"]})
    colour = {s: f"C{k % 10}" for k, s in enumerate(strategies)}
    fig, axes = plt.subplots(len(dss), len(settings), figsize=(5.0 * len(settings), 3.8 * len(dss)), squeeze=False)
    for row, ds in zip(axes, dss):
        for ax, setting in zip(row, settings):
            drawn = False
            for r0, ls in (("clicks", "-"), ("peer", ":")):
                for s, by_seed in curves(doc["rows"], ds, "f1", setting, r0).items():
                    n = min(len(v[0]) for v in by_seed.values())
                    xs = np.mean([v[0][:n] for v in by_seed.values()], axis=0)
                    ys = np.mean([v[1][:n] for v in by_seed.values()], axis=0)
                    ax.plot(xs, ys, marker="o", ms=3, ls=ls, c=colour[s], lw=2.2 if s == doc.get("default_strategy") else 1.2,
                            label=s if r0 == "clicks" else f"{s}, peer round 0")  # fmt: skip
                    drawn = True
            if not drawn:
                ax.set_visible(False)
                continue
            full = doc.get("full_f1", {}).get(ds)
            if full is not None:
                ax.axhline(TARGET_SHARE * full, ls="--", c="grey", lw=1, label=f"{TARGET_SHARE} x full labels")
            ax.set_title(f"{ds}, {setting} clicking", fontsize=10)
            ax.set_xlabel("clicked cells (cumulative)")
            ax.set_ylabel("test micro F1")
            ax.grid(alpha=0.3)
            ax.legend(fontsize=7)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=100, format="png")
    plt.close(fig)
