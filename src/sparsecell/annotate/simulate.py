"""A simulated annotation loop: the evidence for ``sparsecell suggest`` and ``--init``.

The training images are cut into candidate squares (:func:`~.acquire.grid_boxes`).
Round 0 annotates a few squares drawn at random *completely* (every cell in them is
clicked, and the loss is told where they are, as a QuPath region is) and trains from
scratch. Each later round lets a strategy (:data:`~.acquire.STRATEGIES`) choose more
squares from the last model and the images alone, clicks every cell in them (read from
the full annotation: the simulated pathologist), and fine-tunes the last model on all
clicks so far (``train.init``). Validation images stay fully annotated and choose the
threshold and checkpoint as in every run; the test images score each round and choose
nothing.

``setting``: how the simulated pathologist clicks inside a chosen square.
``exhaustive``: every cell (the region is declared complete to the loss, as a QuPath
region is). ``salient``: ``salient_keep`` of each square's cells, the conspicuous ones
first (:func:`~sparsecell.training.targets.clicks_in_boxes`): a pathologist who skips the
faint cells and knows it; the squares are not declared complete. ``salient_complete``:
the same clicks, the squares still declared complete (a suggested square clicked only
in part and left in the export, which the slide reader takes as complete).

``peer``: round 0 has no click at all: the classical peer's detections (fitted on the
validation images) are the first labels (``data.bootstrap=classical``), and they stay
as labels outside the clicked squares in every later round.

``once``: the same budget in one go: all the squares a strategy would have after the
last round, chosen from the round-0 model at once (``random``: at random), trained from
scratch with the round-0 schedule. Is the loop better than one big round?
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from ..config import load_config
from .acquire import choose, describe_regions, grid_boxes

__all__ = ["SETTINGS", "LoopSetup", "Round0", "candidate_boxes", "round0", "run_strategy", "run_once"]


#: How the simulated pathologist clicks inside a chosen square (see the module).
SETTINGS = ("exhaustive", "salient", "salient_complete")


@dataclass
class LoopSetup:
    overrides: list[str]  # the data set, model and training settings every round shares
    train_samples: Sequence  # the training images (ids as training reads them) and their full points
    test_samples: Sequence  # scored after every round, never used for a choice
    work: Path
    region: int = 128  # candidate square side, px
    start: int = 10  # squares annotated in round 0 (at random)
    per_round: int = 15  # squares added each later round
    rounds: int = 3  # rounds after round 0
    epochs: int = 20  # round 0 (and ``once``) from scratch
    init_epochs: int = 8  # each fine-tuning round
    device: str = "cpu"
    tta: bool = False  # describe regions with the augmented passes (needed by ``disagree``)
    keep_checkpoints: bool = False
    setting: str = "exhaustive"  # one of SETTINGS: how the cells inside a chosen square are clicked
    salient_keep: float = 0.5  # salient: the share of each square's cells clicked
    peer: bool = False  # round 0 from the classical peer's labels, no click
    boxes: list = field(default_factory=list)  # per training image, its candidate squares (filled in)

    def __post_init__(self) -> None:
        if self.setting not in SETTINGS:
            raise ValueError(f"setting must be one of {', '.join(SETTINGS)}, got {self.setting!r}")
        self.work = Path(self.work)
        if not self.boxes:
            self.boxes = candidate_boxes(self.train_samples, self.region)


@dataclass
class Round0:
    chosen: list[tuple[int, int]]  # (image, box index)
    checkpoint: Path
    row: dict


def candidate_boxes(samples: Sequence, side: int) -> list[np.ndarray]:
    return [grid_boxes(s.image.shape[0], s.image.shape[1], side) for s in samples]


def _regions_doc(setup: LoopSetup, chosen) -> dict:
    doc: dict[str, list] = {}
    for i, k in chosen:
        doc.setdefault(setup.train_samples[i].image_id, []).append([int(v) for v in setup.boxes[i][k]])
    return doc


def _setting_overrides(setup: LoopSetup) -> list[str]:
    if setup.setting == "exhaustive":
        ov = ["data.sparsity=region", "data.regions_known=true"]
    else:
        ov = ["data.sparsity=salient", f"data.keep={setup.salient_keep}",
              f"data.regions_known={str(setup.setting == 'salient_complete').lower()}"]  # fmt: skip
    return ov + (["data.bootstrap=classical"] if setup.peer else [])


def _clicks(setup: LoopSetup, chosen) -> np.ndarray:
    """Clicked cells per class inside the chosen squares, as training clicks them
    (:func:`~sparsecell.training.crops.region_clicks`)."""
    from ..training.crops import region_clicks

    data = load_config(None, list(setup.overrides) + _setting_overrides(setup)).data
    by_image: dict[int, list] = {}
    for i, k in chosen:
        by_image.setdefault(i, []).append(tuple(int(v) for v in setup.boxes[i][k]))
    out = np.zeros(setup.train_samples[0].points.num_classes, int)
    for i, boxes in by_image.items():
        p = region_clicks(setup.train_samples[i], boxes, data, i)
        out += np.bincount(p.labels, minlength=len(out))
    return out


def _train(setup: LoopSetup, name: str, chosen, seed: int, init: Path | None) -> tuple[Path, dict]:
    from ..inference.detector import Detector, evaluate
    from ..training.loop import train

    out = setup.work / name
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    regions = out / "regions.json"
    regions.write_text(json.dumps(_regions_doc(setup, chosen)))
    ov = list(setup.overrides) + _setting_overrides(setup) + [
        f"data.regions_json={regions}", f"train.out_dir={out}", f"train.seed={seed}", "train.progress_bar=false",
        f"train.epochs={setup.epochs}", f"train.init_epochs={setup.init_epochs}"]  # fmt: skip
    if init is not None:
        ov.append(f"train.init={init}")
    t0 = time.time()
    r = train(load_config(None, ov), quiet=True)
    det = Detector.from_checkpoint(r.best_checkpoint, device=setup.device)
    ev = evaluate(det, setup.test_samples).as_dict()
    clicks = _clicks(setup, chosen)
    row = {"regions": len(chosen), "clicks": int(clicks.sum()), "clicks_per_class": clicks.tolist(),
           "f1": ev["all"]["f1"], "precision": ev["all"]["precision"], "recall": ev["all"]["recall"],
           "threshold": det.threshold, "val_f1": r.val_f1, "ki67_mae": (ev.get("ki67") or {}).get("mae"),
           "seconds": round(time.time() - t0, 1)}  # fmt: skip
    if len(det.classes) > 1:
        row["per_class_f1"] = {c: ev[c]["f1"] for c in det.classes}
    return r.best_checkpoint, row


def round0(setup: LoopSetup, seed: int, reuse: dict | None = None) -> Round0:
    """``start`` squares at random, trained from scratch. ``reuse``: the round-0 row of an
    earlier run of the same loop whose checkpoint is still in ``setup.work``: that model
    is taken instead of training it again (to add strategies to a run)."""
    pool = [(i, k) for i, b in enumerate(setup.boxes) for k in range(len(b))]
    rng = np.random.default_rng(seed)
    chosen = [pool[j] for j in rng.permutation(len(pool))[: setup.start]]
    kept = sorted((setup.work / f"s{seed}_r0").glob("**/best.ckpt")) if reuse is not None else []
    if kept and reuse.get("regions") == len(chosen):
        return Round0(chosen, kept[0], reuse)
    ckpt, row = _train(setup, f"s{seed}_r0", chosen, seed, None)
    return Round0(chosen, ckpt, {**row, "round": 0, "strategy": "start", "seed": seed})


def _describe(setup: LoopSetup, ckpt: Path, chosen):
    """Every free candidate square and the annotated squares' embeddings, from ``ckpt``."""
    from ..inference.detector import Detector

    det = Detector.from_checkpoint(ckpt, device=setup.device)
    taken = set(chosen)
    cands, keys, known = [], [], []
    for i, s in enumerate(setup.train_samples):
        boxes = setup.boxes[i]
        if not len(boxes):
            continue
        for k, c in enumerate(describe_regions(det, s.image, boxes, i, tta=setup.tta)):
            if (i, k) in taken:
                known.append(c.embedding)
            else:
                cands.append(c)
                keys.append((i, k))
    return cands, keys, (np.stack(known) if known else None)


def _pick(setup: LoopSetup, strategy: str, ckpt: Path, chosen, n: int, seed: int) -> list[tuple[int, int]]:
    if strategy == "random":  # needs no model
        taken = set(chosen)
        pool = [(i, k) for i, b in enumerate(setup.boxes) for k in range(len(b)) if (i, k) not in taken]
        return [pool[j] for j in np.random.default_rng(seed).permutation(len(pool))[:n]]
    cands, keys, known = _describe(setup, ckpt, chosen)
    picks = choose(cands, n, strategy, annotated=known, clicks_per_class=_clicks(setup, chosen), seed=seed)
    return [keys[c.index] for c in picks]


def run_strategy(setup: LoopSetup, strategy: str, seed: int, start: Round0, log=None) -> list[dict]:
    """Rounds 1..``rounds`` of one strategy from round 0; a row per round."""
    chosen, ckpt, rows = list(start.chosen), start.checkpoint, []
    for r in range(1, setup.rounds + 1):
        t0 = time.time()
        chosen += _pick(setup, strategy, ckpt, chosen, setup.per_round, seed * 1000 + r)
        pick_s = time.time() - t0
        prev = ckpt
        ckpt, row = _train(setup, f"s{seed}_{strategy}_r{r}", chosen, seed, ckpt)
        rows.append({**row, "round": r, "strategy": strategy, "seed": seed, "suggest_seconds": round(pick_s, 1)})
        if log:
            log(rows[-1])
        if not setup.keep_checkpoints and r > 1:
            shutil.rmtree(prev.parent.parent, ignore_errors=True)
    if not setup.keep_checkpoints:
        shutil.rmtree(ckpt.parent.parent, ignore_errors=True)
    return rows


def run_once(setup: LoopSetup, strategy: str, seed: int, start: Round0) -> dict:
    """The final budget of a strategy's loop in one round from scratch (see the module)."""
    n = setup.per_round * setup.rounds
    chosen = list(start.chosen) + _pick(setup, strategy, start.checkpoint, start.chosen, n, seed * 1000 + 999)
    ckpt, row = _train(setup, f"s{seed}_{strategy}_once", chosen, seed, None)
    if not setup.keep_checkpoints:
        shutil.rmtree(ckpt.parent.parent, ignore_errors=True)
    return {**row, "round": setup.rounds, "strategy": f"{strategy}_once", "seed": seed}
