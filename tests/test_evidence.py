"""The evidence benchmark's analysis (sparsecell.evidence): roles, folds, the energy AUC,
paired differences, the markdown tables and the figures."""

from __future__ import annotations

import sys
import types

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sparsecell import evidence as ev


def _row(ds, method, keep, seed, f1, **kw):
    return {"dataset": ds, "method": method, "keep": keep, "seed": seed, "f1": f1, **kw}


# --- methods and folds ---------------------------------------------------------------------


def test_roles():
    assert ev.role("ce") == "baseline" and ev.role("const_0.2") == "baseline" and ev.role("pu") == "baseline"
    assert ev.role("sel_sfl") == "ours" and ev.role("sel_pu") == "ours" and ev.role("sel_sfl_detach") == "ours"
    assert {ev.role(m) for m in ev.METHODS} == {"baseline", "ours"}
    with pytest.raises(KeyError):
        ev.role("no_such_method")


def test_bcdata_folds_partition_the_images():
    bcdata = pytest.importorskip("sparsecell.datasets.bcdata")
    ids = [str(i) for i in range(26)]
    folds = bcdata.folds(ids, 3)
    tests = [set(t) for _, _, t in folds]
    assert set().union(*tests) == set(ids) and sum(map(len, tests)) == 26  # every image tested once
    for tr, val, te in folds:
        assert len(val) == 3
        assert not (set(tr) & set(val)) and not (set(tr) & set(te)) and not (set(val) & set(te))
        assert set(tr) | set(val) | set(te) == set(ids)


# --- the energy AUC --------------------------------------------------------------------------


def _auc_brute(higher, lower) -> float:
    above = sum(1 for h in higher for lo in lower if h > lo)
    equal = sum(1 for h in higher for lo in lower if h == lo)
    return (above + 0.5 * equal) / (len(higher) * len(lower))


# small integer-valued samples: many ties, within and across the two samples
_tied = st.lists(st.integers(0, 5).map(float), min_size=1, max_size=30)
_spread = st.lists(st.floats(-1e6, 1e6, allow_nan=False), min_size=1, max_size=30)


@settings(max_examples=300, deadline=None)
@given(higher=_tied, lower=_tied)
def test_auc_above_counts_pairs_with_ties_as_half(higher, lower):
    auc = ev.auc_above(np.array(higher), np.array(lower))
    assert auc == pytest.approx(_auc_brute(higher, lower), abs=1e-12)
    assert auc + ev.auc_above(np.array(lower), np.array(higher)) == pytest.approx(1.0, abs=1e-12)


@settings(max_examples=200, deadline=None)
@given(higher=_spread, lower=_spread)
def test_auc_above_matches_pairwise_count(higher, lower):
    assert ev.auc_above(np.array(higher), np.array(lower)) == pytest.approx(_auc_brute(higher, lower), abs=1e-12)


def test_auc_above_fixed_cases():
    assert ev.auc_above([2.0, 3.0], [0.0, 1.0]) == 1.0
    assert ev.auc_above([0.0, 1.0], [2.0, 3.0]) == 0.0
    assert ev.auc_above([1.0, 1.0], [1.0]) == 0.5
    rng = np.random.default_rng(3)
    a, b = rng.integers(0, 20, 500).astype(float), rng.integers(0, 20, 300).astype(float)
    assert ev.auc_above(a, b) == pytest.approx(_auc_brute(a.tolist(), b.tolist()), abs=1e-12)
    with pytest.raises(ValueError):
        ev.auc_above([], [1.0])


class _Pts:
    def __init__(self, xy):
        self.xy = np.asarray(xy, dtype=float).reshape(-1, 2)

    def __len__(self):
        return len(self.xy)


def test_energy_separation_reads_the_energy_at_missed_cells_and_background(monkeypatch):
    # energy 0.2 within 3 px of every cell, 0.9 elsewhere: background is always above
    def node_energy(det, image, points):
        H, W = image.shape[:2]
        yy, xx = np.mgrid[:H, :W]
        E = np.full((H, W), 0.9)
        for x, y in s.points.xy:
            E[np.hypot(xx - x, yy - y) <= 3] = 0.2
        return E

    monkeypatch.setitem(sys.modules, "sparsecell.training.energy", types.SimpleNamespace(node_energy=node_energy))
    s = types.SimpleNamespace(image=np.zeros((64, 64, 3), np.uint8), points=_Pts([[10, 10], [40, 20], [30, 50]]))
    out = ev.energy_separation(None, [s], [_Pts([[10, 10]])])
    assert out == {"energy_auc": 1.0, "energy_missed_mean": pytest.approx(0.2), "energy_background_mean": pytest.approx(0.9)}
    # every cell kept: nothing missed, no statistic
    none = ev.energy_separation(None, [s], [s.points])
    assert none == {"energy_auc": None, "energy_missed_mean": None, "energy_background_mean": None}


# --- tables ----------------------------------------------------------------------------------


def test_paired_differences_match_by_seed():
    rows = [_row("bcdata", "ce", 0.25, s, f, fold=s) for s, f in enumerate([0.5, 0.6, 0.7])]
    rows += [_row("bcdata", "pu", 0.25, s, f, fold=s) for s, f in enumerate([0.7, 0.7, 0.9])]
    (p,) = ev.paired(rows, "pu", "ce")
    assert p["n"] == 3 and p["mean_diff"] == pytest.approx((0.2 + 0.1 + 0.2) / 3)
    assert p["ci95"] > 0
    # a lone pair has no interval
    (q,) = ev.paired(rows[:1] + rows[3:4], "pu", "ce")
    assert q["n"] == 1 and q["ci95"] is None


def test_summary_has_mean_std_and_per_class_table():
    rows = [_row("crchisto4", "ce", 0.25, s, 0.6 + 0.1 * s, per_class_f1={"epithelial": 0.7, "others": 0.1 * s})
            for s in range(2)]  # fmt: skip
    md = ev.summarise(rows)
    assert "| ce | baseline | 0.650 ± 0.050 (n=2) |" in md
    assert "| ce | 0.25 | 0.700 ± 0.000 | 0.050 ± 0.050 |" in md


def test_analysis_ratio_to_full_ce_and_sfl_share():
    from sparsecell.config import LossConfig

    lam2 = LossConfig().lambda2
    rows = [_row("crchisto", "ce", 1.0, s, f, val_f1=0.8) for s, f in enumerate([0.78, 0.82])]  # ce's full: 0.8
    rows += [_row("crchisto", "pu", 0.25, s, f, val_f1=v) for s, (f, v) in enumerate([(0.6, 0.5), (0.7, 0.6)])]
    curves = [dict(curve_sfl=[[0, 2.0], [1, 1.0]], curve_loss=[[0, 0.5], [1, 0.1]]),
              dict(curve_sfl=[[0, 4.0], [1, 3.0]], curve_loss=[[0, 1.0], [1, 0.2]])]  # fmt: skip
    rows += [_row("crchisto", "sel", 0.25, s, 0.4, val_f1=0.3, energy_auc=a, energy_missed_mean=0.1,
                  energy_background_mean=0.8, **c) for s, (a, c) in enumerate(zip([0.9, 0.7], curves))]  # fmt: skip
    md = ev.analysis(rows)
    assert "**crchisto**: test F1 / ce's at keep 1.0 (0.800)" in md
    assert "| pu | 0.25 | 0.81 | 0.550 | - | - | - | - |" in md  # 0.65 / 0.8
    first = np.mean([lam2 * 2.0 / 0.5, lam2 * 4.0 / 1.0])
    last = np.mean([lam2 * 1.0 / 0.1, lam2 * 3.0 / 0.2])
    assert f"| sel | 0.25 | 0.50 | 0.300 | - | 0.80 | 0.10 / 0.80 | {first:.2f} / {last:.2f} |" in md
    assert first != last
    # keep 1.0 rows are the reference, not rows of the table
    assert "| ce | 1.0 |" not in md
    # no full-label ce: no ratio
    assert "| pu | 0.25 | - |" in ev.analysis([r for r in rows if r["method"] != "ce"])


def test_default_pairs_choose_ce_const_and_pu_as_references():
    rows = [_row("bcdata", m, 0.25, s, 0.5 + 0.01 * s, fold=s)
            for m in ["sel_pu", "ce", "sel", "const", "pu"] for s in range(2)]  # fmt: skip
    got = [(p["a"], p["b"]) for p in ev.default_pairs(rows)]
    assert got == [("pu", "ce"), ("const", "ce"), ("sel", "ce"), ("sel_pu", "ce"),
                   ("sel", "const"), ("sel_pu", "const"), ("sel", "pu"), ("sel_pu", "pu")]  # fmt: skip


def test_markdown_report_lists_the_paired_differences():
    rows = [_row("bcdata", "ce", 0.25, s, f, fold=s, val_f1=0.5) for s, f in enumerate([0.5, 0.6, 0.7])]
    rows += [_row("bcdata", "pu", 0.25, s, f, fold=s, val_f1=0.6) for s, f in enumerate([0.6, 0.8, 1.0])]  # +.1 +.2 +.3
    rows += [_row("bcdata", "ce", 0.1, 0, 0.3, fold=0, val_f1=0.2), _row("bcdata", "pu", 0.1, 0, 0.25, fold=0, val_f1=0.2)]
    pairs = ev.default_pairs(rows)
    md = ev.markdown_report(rows, pairs)
    # half-width: t(0.975, 2) * 0.1 / sqrt(3) = 4.303 * 0.0577
    assert "\n- bcdata keep 0.25: pu - ce = +0.200 ± 0.248 (n=3)\n" in md
    assert "\n- bcdata keep 0.1: pu - ce = -0.050 (n=1)\n" in md
    assert md.startswith(ev.summarise(rows) + "\n\nPaired differences of micro F1 (a - b; 95% t interval")
    assert md.endswith("\n" + ev.analysis(rows) + "\n")
    assert ev.format_pair(pairs[0]) == "- bcdata keep 0.1: pu - ce = -0.050 (n=1)"


# --- figures ---------------------------------------------------------------------------------


def _curve_rows():
    rows = []
    for ds in ["crchisto", "bcdata"]:
        for s in range(2):
            rows.append(_row(ds, "ce", 1.0, s, 0.8 + 0.01 * s, val_curve=[[2, 0.5], [5, 0.7]]))
            for k in [0.1, 0.25]:
                for m, base in [("ce", 0.4), ("pu", 0.6), ("sel_pu", 0.65)]:
                    rows.append(_row(ds, m, k, s, base + k / 2 + 0.02 * s,
                                     val_curve=[[2, base - 0.1], [5, base], [8, base + 0.02 * s]]))  # fmt: skip
    return rows


def test_plot_writes_a_png(tmp_path):
    path = tmp_path / "sub" / "f1.png"
    ev.plot(_curve_rows(), path, {"crchisto": 6.0, "bcdata": 15.0})
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000


def test_plot_curves_writes_a_png(tmp_path):
    path = tmp_path / "curves.png"
    ev.plot_curves(_curve_rows(), path)
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000
    # no curves, no figure
    ev.plot_curves([_row("bcdata", "ce", 0.25, 0, 0.5)], tmp_path / "none.png")
    assert not (tmp_path / "none.png").exists()


# --- environment -----------------------------------------------------------------------------


def test_environment_names_the_machine_and_versions():
    env = ev.environment()
    keys = {"torch_threads", "cpu", "platform", "python", "torch", "numpy", "lightning", "scipy", "scikit-image"}
    assert keys <= set(env)
    assert isinstance(env["torch_threads"], int) and env["torch_threads"] > 0
    assert env["numpy"] == np.__version__ and env["python"].count(".") == 2
    assert all(isinstance(env[k], str) and env[k] for k in ("cpu", "platform", "torch", "scipy"))


def test_validation_ranking_uses_only_cells_every_candidate_has():
    import sparsecell.evidence as ev

    rows = [
        dict(dataset="bcdata", method="pu", keep=0.1, seed=0, f1=0.9, val_f1=0.5),
        dict(dataset="bcdata", method="pu_pseudo", keep=0.1, seed=0, f1=0.1, val_f1=0.6),
        dict(dataset="bcdata", method="pu", keep=0.1, seed=1, f1=0.9, val_f1=0.7),
        dict(dataset="bcdata", method="pu_pseudo", keep=0.1, seed=1, f1=0.1, val_f1=0.4),
        dict(dataset="bcdata", method="pu", keep=0.1, seed=2, f1=0.9, val_f1=0.1),  # no partner: left out
        dict(dataset="bcdata", method="pu_pseudo", keep=0.1, seed=0, sparsity="salient", f1=0.1, val_f1=0.9),
        dict(dataset="bcdata", method="pu", keep=0.1, seed=0, sparsity="salient", f1=0.1, val_f1=0.3),
        dict(dataset="bcdata", method="ce", keep=1.0, seed=0, f1=0.9, val_f1=0.99),  # full labels: not a cell
    ]
    rank = ev.validation_ranking(rows, ["pu", "pu_pseudo"])
    assert rank[0][0] == "pu_pseudo" and rank[0][1] == pytest.approx((0.6 + 0.4 + 0.9) / 3) and rank[0][2] == 3
    assert rank[1] == ("pu", pytest.approx((0.5 + 0.7 + 0.3) / 3), 3)


def test_by_setting_groups_by_clicking_and_shares_full_label_rows():
    import sparsecell.evidence as ev

    rows = [
        dict(dataset="bcdata", method="pu", keep=0.1, seed=0, f1=0.5),
        dict(dataset="bcdata", method="pu", keep=0.1, seed=0, sparsity="salient", f1=0.4),
        dict(dataset="bcdata", method="ce", keep=1.0, seed=0, f1=0.7),
        dict(dataset="crchisto", method="ce", keep=1.0, seed=0, f1=0.8),
    ]
    got = sorted((r["dataset"], r["method"], r["keep"]) for r in ev.by_setting(rows))
    assert got == [("bcdata", "ce", 1.0), ("bcdata", "pu", 0.1), ("bcdata, salient", "ce", 1.0),
                   ("bcdata, salient", "pu", 0.1), ("crchisto", "ce", 1.0)]  # fmt: skip
    # pairs never cross settings
    rows.append(dict(dataset="bcdata", method="pu_oracle", keep=0.1, seed=0, sparsity="salient", f1=0.3))
    (p,) = ev.paired(rows, "pu", "pu_oracle")
    assert p["dataset"] == "bcdata, salient" and p["mean_diff"] == pytest.approx(0.1)


def test_versus_table_pairs_by_seed_bolds_intervals_that_exclude_zero_and_gives_shares_of_full_labels():
    from sparsecell.evidence import versus_table

    rows = [_row("crchisto", "ce", 1.0, s, 0.8) for s in range(3)]
    for s, (pu, ours) in enumerate([(0.60, 0.66), (0.62, 0.67), (0.65, 0.70)]):
        rows += [_row("crchisto", "pu", 0.1, s, pu, sparsity="salient"), _row("crchisto", "pu_sar", 0.1, s, ours, sparsity="salient")]
        rows += [_row("crchisto", "pu", 0.1, s, 0.7), _row("crchisto", "pu_sar", 0.1, s, 0.7 + (0.01 if s else -0.02))]
    table = versus_table(rows, "pu_sar", "pu").splitlines()
    assert len(table) == 4
    random_line, salient_line = table[2], table[3]
    assert random_line.startswith("| crchisto | 0.1 |") and "**" not in random_line and "2 of 3" in random_line
    assert salient_line.startswith("| crchisto, salient | 0.1 |") and "**+0.053 ±" in salient_line and "3 of 3" in salient_line
    assert salient_line.endswith("| 0.78 / 0.85 |")  # 0.623 / 0.8 and 0.677 / 0.8


def test_setting_table_has_a_row_per_setting_bolds_the_best_and_adds_full_labels():
    from sparsecell.evidence import setting_table

    rows = [_row("bcdata", "ce", 1.0, s, 0.7) for s in range(2)]
    rows += [_row("bcdata", "pu", 0.1, s, 0.6 + 0.01 * s) for s in range(2)]
    rows += [_row("bcdata", "ce", 0.1, s, 0.2) for s in range(2)]
    rows += [_row("bcdata", "pu", 0.1, s, 0.4, sparsity="salient") for s in range(2)]
    lines = setting_table(rows, 0.1, ["ce", "pu"]).splitlines()
    assert lines[0] == "| setting | `ce` | `pu` | `ce`, every label |"
    assert lines[2] == "| bcdata | 0.200 ± 0.000 | **0.605 ± 0.005** | 0.700 ± 0.000 |"
    assert lines[3] == "| bcdata, salient | - | **0.400 ± 0.000** | 0.700 ± 0.000 |"
