"""How well do pu_sar's click weights undo biased clicking? A diagnosis, no training.

For each simulated clicking (random, salient), keep and BCData fold / seed, the clicks are
drawn as the evidence benchmark draws them, weighted as ``pu_sar`` weighs them (default,
and the ``pu_sar_shrunk`` variant), and scored against the truth the simulation knows: the
total variation distance between the weighted clicks' conspicuity histogram and that of
*all* training cells, per class (10 quantile bins of the training cells; 0 is a perfect
correction). The truth is used only to score, never by a method. Conspicuity for the score
is taken relative to each cell's own image, as the simulated annotator chooses.

    .venv/bin/python benchmarks/click_weights.py --data ../shared/data   # about 5 min on 2 cores
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from sparsecell.config import load_config  # noqa: E402
from sparsecell.training.crops import sparse_points  # noqa: E402
from sparsecell.datasets import load_samples, open_dataset  # noqa: E402
from sparsecell.datasets.bcdata import folds as bcdata_folds  # noqa: E402
from sparsecell.training.targets import conspicuity  # noqa: E402
from sparsecell.training.loop import _click_weights  # noqa: E402

VARIANTS = {"pu_sar": [], "pu_sar_shrunk": ["loss.sar_reference=image", "loss.sar_shrink=true"]}


def config(data: Path, ds: str, keep: float, seed: int, sparsity: str, extra: list[str]):
    ov = [f"data.keep={keep}", f"data.sparse_seed={seed}", f"data.sparsity={sparsity}",
          f"data.per_class={sparsity == 'salient'}", "loss.name=pu_sar", *extra]  # fmt: skip
    if ds == "crchisto":
        ov += [f"data.root={data / 'crchisto'}", "data.source=crchisto", "data.mode=detection", "data.train_split=train",
               "data.val_split=validation", "data.sigma=3.0"]  # fmt: skip
    else:
        tr, va, _ = bcdata_folds(open_dataset("bcdata", data / "bcdata", "test").ids(), 3)[seed]
        ov += [f"data.root={data / 'bcdata'}", "data.source=bcdata", "data.train_split=test", "data.val_split=null",
               f"data.train_ids={json.dumps(tr + va)}", f"data.val_ids={json.dumps(va)}", "data.sigma=5.0"]  # fmt: skip
    return load_config(None, ov)


def distance(w, cz, cl, tz, tl, n_classes: int, bins: int = 10) -> float:
    """Mean over classes of the total variation between the weighted clicks' histogram
    and all training cells' (quantile bins of the latter)."""
    out = []
    for c in range(n_classes):
        ci, ti = cl == c, tl == c
        if not ci.any():
            continue
        edges = np.quantile(tz[ti], np.linspace(0, 1, bins + 1)[1:-1])
        h_true = np.bincount(np.searchsorted(edges, tz[ti]), minlength=bins) / ti.sum()
        h_click = np.bincount(np.searchsorted(edges, cz[ci]), weights=w[ci], minlength=bins) / w[ci].sum()
        out.append(0.5 * np.abs(h_true - h_click).sum())
    return float(np.mean(out))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "click_weights.json")
    args = ap.parse_args()
    rows = []
    for ds in ("bcdata", "crchisto"):
        if not (args.data / ds).is_dir():
            print(f"skipping {ds}: {args.data / ds} not found")
            continue
        for sparsity in ("random", "salient"):
            for keep in (0.1, 0.25):
                for seed in (0, 1, 2):
                    row = {"dataset": ds, "sparsity": sparsity, "keep": keep, "seed": seed}
                    for name, extra in VARIANTS.items():
                        cfg = config(args.data, ds, keep, seed, sparsity, extra)
                        tr, va, classes = load_samples(cfg)
                        pts = sparse_points(tr, cfg.data)
                        w, bias = _click_weights(tr, pts, va, cfg)
                        w = np.concatenate(w)
                        r = cfg.data.sigma
                        cz = np.concatenate([conspicuity(s.image, p, r, relative=True) for s, p in zip(tr, pts)])
                        tz = np.concatenate([conspicuity(s.image, s.points, r, relative=True) for s in tr])
                        cl = np.concatenate([p.labels for p in pts])
                        tl = np.concatenate([s.points.labels for s in tr])
                        row["unweighted"] = distance(np.ones(len(w)), cz, cl, tz, tl, len(classes))
                        row[name] = distance(w, cz, cl, tz, tl, len(classes))
                        row[f"{name}_weight_sd"] = float(w.std())
                    rows.append(row)
                    print(f"{ds} {sparsity} keep {keep} seed {seed}: distance unweighted {row['unweighted']:.3f}, "
                          + ", ".join(f"{n} {row[n]:.3f} (weights sd {row[n + '_weight_sd']:.2f})" for n in VARIANTS), flush=True)
    print("\nmean distance to all training cells (0: a perfect correction):")
    for ds in sorted({r["dataset"] for r in rows}):
        for sp in ("random", "salient"):
            c = [r for r in rows if r["dataset"] == ds and r["sparsity"] == sp]
            print(f"  {ds} {sp}: " + ", ".join(f"{n} {np.mean([r[n] for r in c]):.3f}" for n in ["unweighted", *VARIANTS]))
    args.out.write_text(json.dumps({"rows": rows}, indent=1) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
