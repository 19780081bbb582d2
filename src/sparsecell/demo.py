"""``sparsecell demo``: the main job on the embedded default data.

Synthetic IHC tiles (no download), 25% of the annotations kept, the same small
detector trained with plain cross-entropy, the constant-weight control and SEL+SFL
(and sparsecell's default sparse method, when it is another); each evaluated on the
full annotations of held-out tiles at its validation-chosen threshold.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

from .config import Config, load_config
from .formats.fileio import atomic_write_text
from .catalogue import DEFAULT_LOSS

__all__ = ["demo_overrides", "demo_config", "run_demo", "DEMO_METHODS"]

DEMO_METHODS = ("ce", "const", "sel_sfl", "pu")


def demo_overrides(method: str, out: Path, quick: bool = False) -> list[str]:
    """The demo's training settings for one method (same budget for every method)."""
    ov = [
        f"loss.name={method}",
        "data.keep=0.25",
        "data.crop=128",
        "data.synthetic_train=24",
        "data.synthetic_val=8",
        "data.synthetic_size=256",
        "train.batch_size=8",
        "train.lr=0.002",
        "train.epochs=36",
        "train.val_every=3",
        "eval.radius=6",
        f"train.out_dir={out / method}",
        "train.progress_bar=false",
    ]
    if quick:
        ov += ["train.epochs=2", "train.val_every=1", "data.synthetic_train=4", "data.synthetic_val=2", "data.crops_per_image=2"]
    return ov


def demo_config(method: str, out: Path, quick: bool = False) -> Config:
    """The demo's training config for one method."""
    return load_config(None, demo_overrides(method, out, quick))


def run_demo(out: Path = Path("runs/demo"), quick: bool = False, methods=None) -> dict:
    from .datasets import dataset_options, open_dataset
    from .inference.detector import Detector, evaluate
    from .training.energy import node_energy
    from .report import energy_figure, overlay, results_table, save_png
    from .training.targets import sparsify
    from .metrics import PAPER_THRESHOLD
    from .training.loop import train

    methods = list(methods or DEMO_METHODS)
    if DEFAULT_LOSS not in methods:
        methods.append(DEFAULT_LOSS)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    base = demo_config(methods[0], out, quick)
    opts = dataset_options(base.data, "test")
    n_test = opts["n"] = 2 if quick else opts["n"]
    test = list(open_dataset("synthetic", None, "test", **opts))
    print(f"sparsecell demo: {base.data.synthetic_train} training / {base.data.synthetic_val} validation / {n_test} test "
          f"synthetic IHC tiles ({base.data.synthetic_size} px), {int(base.data.keep * 100)}% of the training points kept; "
          f"model {base.model.size}, {base.train.epochs} epochs per method", flush=True)  # fmt: skip
    results: dict = {"default": DEFAULT_LOSS, "methods": {}, "keep": base.data.keep, "radius_px": base.eval.radius}
    detectors = {}
    for m in methods:
        cfg = demo_config(m, out, quick)
        if Path(cfg.train.out_dir).exists():  # the demo's own earlier output: regenerated
            shutil.rmtree(cfg.train.out_dir)
        t0 = time.time()
        r = train(cfg, quiet=True)
        det = Detector.from_checkpoint(r.best_checkpoint, device="cpu")
        ev = evaluate(det, test)
        a = ev.all
        results["methods"][m] = {
            "precision": a.precision, "recall": a.recall, "f1": a.f1, "threshold": det.threshold,
            "f1_per_image": a.f1_per_image, "ap": ev.ap, "f1_at_0.7": ev.f1_at[PAPER_THRESHOLD], "val_f1": r.val_f1,
            "train_seconds": round(time.time() - t0, 1), "keep_estimate": r.keep_estimate,
        }  # fmt: skip
        if ev.ki67 is not None:  # Ki-67 tiles: the per-image index error, percentage points
            k = ev.ki67.as_dict()
            results["methods"][m].update({"ki67_mae": k["mae"], "ki67_bias": k["bias"], "ki67_within_5": k["within_5"]})
        detectors[m] = det
        est = f", clicked share estimated at {r.keep_estimate:.0%}" if r.keep_estimate is not None else ""
        ki = f", Ki-67 index error {results['methods'][m]['ki67_mae']:.1f} points" if "ki67_mae" in results["methods"][m] else ""
        print(f"  {m:8s} test F1 {a.f1:.3f} (P {a.precision:.3f}, R {a.recall:.3f}) at threshold "
              f"{det.threshold:g}{ki}, {time.time() - t0:.0f} s{est}", flush=True)  # fmt: skip
    # figures: overlays of one test tile per method, and the energy maps of the default method
    s0 = test[0]
    for m, det in detectors.items():
        save_png(overlay(s0.image, det.predict(s0.image), s0.points), out / "overlays" / f"{m}_{s0.image_id}.png")
    energy_det = detectors.get(DEFAULT_LOSS if DEFAULT_LOSS.startswith("sel") else "sel_sfl", next(iter(detectors.values())))
    rows = []
    for s in test[:2]:
        sparse = sparsify(s.points, base.data.keep, seed=1)
        rows.append({"image": s.image, "truth": s.points, "sparse": sparse,
                     "energy": node_energy(energy_det, s.image, sparse), "pred": energy_det.predict(s.image)})  # fmt: skip
    energy_figure(rows, out / "energy_map.png", title="SEL+SFL on synthetic Ki-67 tiles, 25% of the labels")
    table = results_table(results["methods"], DEFAULT_LOSS)
    atomic_write_text(out / "results.md", table + "\n")
    import json

    atomic_write_text(out / "results.json", json.dumps(results, indent=2) + "\n")
    print()
    print(table)
    print()
    print(f"micro F1 on the full annotations of {n_test} held-out tiles, radius {base.eval.radius:g} px; "
          f"threshold chosen on validation per method")  # fmt: skip
    print(f"wrote {out / 'results.json'}, {out / 'results.md'}, {out / 'energy_map.png'}, overlays in {out / 'overlays'}, "
          f"checkpoints in {out}/<method>/checkpoints")  # fmt: skip
    return results
