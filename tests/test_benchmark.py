"""The evidence benchmark's bookkeeping: folds, paired differences, the summary table."""

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
sa = pytest.importorskip("sparse_annotation")


def test_bcdata_folds_partition_the_images():
    ids = [str(i) for i in range(26)]
    folds = sa.bcdata_folds(ids, 3)
    tests = [set(t) for _, _, t in folds]
    assert set().union(*tests) == set(ids) and sum(map(len, tests)) == 26  # every image tested once
    for tr, val, te in folds:
        assert len(val) == 3
        assert not (set(tr) & set(val)) and not (set(tr) & set(te)) and not (set(val) & set(te))
        assert set(tr) | set(val) | set(te) == set(ids)


def _row(ds, method, keep, seed, f1, **kw):
    return {"dataset": ds, "method": method, "keep": keep, "seed": seed, "f1": f1, **kw}


def test_paired_differences_match_by_seed():
    rows = [_row("bcdata", "ce", 0.25, s, f, fold=s) for s, f in enumerate([0.5, 0.6, 0.7])]
    rows += [_row("bcdata", "pu", 0.25, s, f, fold=s) for s, f in enumerate([0.7, 0.7, 0.9])]
    (p,) = sa.paired(rows, "pu", "ce")
    assert p["n"] == 3 and p["mean_diff"] == pytest.approx((0.2 + 0.1 + 0.2) / 3)
    assert p["ci95"] > 0
    # a lone pair has no interval
    (q,) = sa.paired(rows[:1] + rows[3:4], "pu", "ce")
    assert q["n"] == 1 and q["ci95"] is None


def test_summary_has_mean_std_and_per_class_table():
    rows = [_row("crchisto4", "ce", 0.25, s, 0.6 + 0.1 * s, per_class_f1={"epithelial": 0.7, "others": 0.1 * s})
            for s in range(2)]  # fmt: skip
    md = sa.summarise(rows)
    assert "| ce | baseline | 0.650 ± 0.050 (n=2) |" in md
    assert "| ce | 0.25 | 0.700 ± 0.000 | 0.050 ± 0.050 |" in md


def test_roles():
    assert sa.role("ce") == "baseline" and sa.role("const_0.2") == "baseline"
    assert sa.role("sel_sfl") == "ours" and sa.role("sel_pu") == "ours" and sa.role("sel_sfl_detach") == "ours"
