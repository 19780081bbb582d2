"""Does bootstrapping from the classical peer (``--bootstrap classical``) hurt where the
peer is weak? The demo's synthetic Ki-67 tiles hold lymphocytes and stromal nuclei that
must not be detected, which colour deconvolution cannot tell from tumour nuclei.

The demo's setting (``sparsecell.demo.demo_config``: ``vig_cpu``, 36 epochs, 24 training
and 8 validation tiles, scored on the 8 test tiles) with ``pu_sar`` alone and with the
peer's labels, under the demo's clicks (25% at random) and conspicuous ones (10%,
``salient``), on paired seeds (the clicks' and the training's). Also the peer itself,
fitted on the validation tiles.

    .venv/bin/python benchmarks/bootstrap_synthetic.py --seeds 0 1    # about 10 min on 2 CPU cores

Writes ``benchmarks/results/bootstrap_synthetic.json`` and prints the paired differences.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]

from sparsecell.config import load_config  # noqa: E402
from sparsecell.demo import demo_config, demo_overrides  # noqa: E402
from sparsecell.evidence import environment  # noqa: E402

#: The clicks: (name, overrides).
SETTINGS = {"random 25%": ["data.keep=0.25"],
            "salient 10%": ["data.keep=0.1", "data.sparsity=salient", "data.per_class=true"]}  # fmt: skip


def main() -> None:
    from sparsecell.classical import classical_detector, fit_classical
    from sparsecell.datasets import dataset_options, load_samples, open_dataset
    from sparsecell.formats.fileio import atomic_write_text
    from sparsecell.inference.detector import Detector, evaluate
    from sparsecell.training.loop import train

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1])
    ap.add_argument("--work", type=Path, default=ROOT / "runs" / "bootstrap_synthetic")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "bootstrap_synthetic.json")
    args = ap.parse_args()
    started = time.time()
    base = demo_config("pu_sar", args.work)
    test = list(open_dataset("synthetic", None, "test", **dataset_options(base.data, "test")))
    _, val, classes = load_samples(base)
    settings, report = fit_classical(val, classes, base.eval.radius, mpp=base.eval.mpp)
    peer = classical_detector(settings)
    peer_ev = evaluate(peer, test)
    rows = [{"method": "classical", "setting": "-", "seed": None, "f1": peer_ev.all.f1, "precision": peer_ev.all.precision,
             "recall": peer_ev.all.recall, "val_f1": report["validation_f1"],
             "ki67_mae": peer_ev.ki67.mae if peer_ev.ki67 is not None else None}]  # fmt: skip
    print(f"classical peer: test F1 {peer_ev.all.f1:.3f} (P {peer_ev.all.precision:.3f}, R {peer_ev.all.recall:.3f}), "
          f"validation F1 {report['validation_f1']:.3f}", flush=True)  # fmt: skip
    for name, ov in SETTINGS.items():
        for seed in args.seeds:
            for method, extra in (("pu_sar", []), ("pu_sar_peer", ["data.bootstrap=classical"])):
                out = args.work / f"{name.replace(' ', '_').replace('%', '')}_s{seed}_{method}"
                shutil.rmtree(out, ignore_errors=True)
                cfg = load_config(None, demo_overrides("pu_sar", args.work) + ov + extra
                                  + [f"train.out_dir={out}", f"data.sparse_seed={seed}", f"train.seed={seed}"])  # fmt: skip
                t0 = time.time()
                r = train(cfg, quiet=True)
                ev = evaluate(Detector.from_checkpoint(r.best_checkpoint, device="cpu"), test)
                row = {"method": method, "setting": name, "seed": seed, "f1": ev.all.f1, "precision": ev.all.precision,
                       "recall": ev.all.recall, "val_f1": r.val_f1, "ki67_mae": ev.ki67.mae if ev.ki67 is not None else None,
                       "train_seconds": round(time.time() - t0, 1)}  # fmt: skip
                rows.append(row)
                print(f"[{time.time() - started:5.0f} s] {name} seed {seed} {method:12s} F1 {row['f1']:.3f} "
                      f"(P {row['precision']:.3f} R {row['recall']:.3f}) val {row['val_f1']:.3f}", flush=True)  # fmt: skip
                shutil.rmtree(out, ignore_errors=True)
    lines = []
    for name in SETTINGS:
        d = [b["f1"] - a["f1"] for a in rows for b in rows
             if a["setting"] == b["setting"] == name and a["seed"] == b["seed"] and a["method"] == "pu_sar" and b["method"] == "pu_sar_peer"]  # fmt: skip
        lines.append(f"{name}: pu_sar_peer - pu_sar = {np.mean(d):+.3f} over {len(d)} seeds ({', '.join(f'{v:+.3f}' for v in d)})")
    print("\n".join(lines))
    doc = {"config": {"seeds": args.seeds, **environment()}, "seconds": round(time.time() - started), "rows": rows,
           "summary": lines}  # fmt: skip
    atomic_write_text(args.out, json.dumps(doc, indent=1) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    sys.exit(main())
