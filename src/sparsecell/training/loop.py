"""Training with PyTorch Lightning: the module (model, loss, what a step does,
validation F1 with the threshold chosen on it), the data module (where batches come
from) and :func:`train`, which hands devices, precision, DDP, checkpoints, resume,
early stopping and logging to Lightning's Trainer.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import lightning as L
import numpy as np
import torch

from ..config import Config
from .crops import CropDataset, sparse_annotations
from ..models.inputs import to_tensor
from ..datasets import Sample, load_samples
from ..errors import ConfigError, TrainingError
from ..inference.peaks import find_peaks
from ..inference.detector import predict_heatmap
from ..losses import LossBatch, build_loss, needs_share
from ..losses.prior import KeepEstimate, estimate_keep
from ..metrics import PAPER_THRESHOLD, THRESHOLD_GRID, UNSET_THRESHOLD, ki67_agreement, threshold_sweep
from ..models import build_model
from ..formats.points import Points

__all__ = ["SparseCellModule", "PointDataModule", "train", "TrainResult"]


# ---------------------------------------------------------------------------------------
# Data
# ---------------------------------------------------------------------------------------
class _ValImages(torch.utils.data.Dataset):
    def __init__(self, samples: Sequence[Sample]):
        self.samples = samples

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int):
        return to_tensor(self.samples[i].image), i


class PointDataModule(L.LightningDataModule):
    """Training crops of the sparse annotations; full validation images (batch 1)."""

    def __init__(self, cfg: Config, stride: int, train: list[Sample], val: list[Sample], train_points: list[Points],
                 regions: list | None = None, click_weights: list | None = None):  # fmt: skip
        super().__init__()
        self.cfg, self.stride = cfg, stride
        d = cfg.data
        self.crops = CropDataset(
            [s.image for s in train], train_points, d.crop, stride, d.sigma, d.crops_per_image,
            seed=cfg.train.seed, flips=d.flips, rot90=d.rot90, colour_jitter=d.colour_jitter, regions=regions,
            click_weights=click_weights,
        )  # fmt: skip
        self.val = val

    def train_dataloader(self):  # the epoch of the crops is set by _EpochSeed
        t = self.cfg.train
        return torch.utils.data.DataLoader(
            self.crops, batch_size=t.batch_size, shuffle=True, num_workers=t.num_workers, drop_last=len(self.crops) > t.batch_size,
            persistent_workers=False,
        )

    def val_dataloader(self):
        return torch.utils.data.DataLoader(_ValImages(self.val), batch_size=1, num_workers=0)


# ---------------------------------------------------------------------------------------
# Module
# ---------------------------------------------------------------------------------------
class SparseCellModule(L.LightningModule):
    """The detector, its loss, and validation F1 over a threshold grid.

    The threshold that maximises validation micro F1 over
    :data:`~sparsecell.metrics.THRESHOLD_GRID` (or the fixed ``eval.threshold``) is
    kept in the buffer ``threshold`` (saved in every checkpoint) and logged as
    ``val_threshold``.

    ``keep_estimate``: the share of annotated cells estimated from the data (for
    PU-based losses; stored in the checkpoint). ``n_train``: the number of training
    images, for a loss that pseudo-labels them (:mod:`sparsecell.training.pseudo`).
    """

    def __init__(self, config: dict, classes: Sequence[str], val_points: Sequence[Points] | None = None,
                 keep_estimate: float | None = None, n_train: int = 0):  # fmt: skip
        super().__init__()
        self.save_hyperparameters({"config": config, "classes": list(classes), "keep_estimate": keep_estimate})
        self.cfg = Config.from_dict(config)
        self.classes = tuple(classes)
        self.model = build_model(self.cfg.model.size, len(self.classes), **self.cfg.model.overrides())
        self.loss_fn = build_loss(self.cfg.loss, self.cfg.data, keep_estimate)
        self.pseudo = None
        if self.loss_fn.pseudo_labels:
            from .pseudo import PseudoLabeller

            e, lo = self.cfg.eval, self.cfg.loss
            self.pseudo = PseudoLabeller(n_train, self.classes, lo.pseudo_precision, lo.pseudo_stable, e.min_distance,
                                         e.radius, e.peak_mode)  # fmt: skip
        self.loss_fn.bind(self.model)
        fixed = self.cfg.eval.threshold
        self.register_buffer("threshold", torch.tensor(float(UNSET_THRESHOLD if fixed is None else fixed)))
        #: the thresholds validation scores: the grid, or the fixed one (and the paper's, for the log)
        self.sweep_thresholds = THRESHOLD_GRID if fixed is None else tuple(dict.fromkeys((float(fixed), PAPER_THRESHOLD)))
        self.val_points = list(val_points) if val_points is not None else []
        self._val_peaks: dict[int, Points] = {}
        #: the Ki-67 index error on the validation images at the chosen threshold (percentage
        #: points; None where the classes define no index): saved in the checkpoint
        self.val_ki67: dict | None = None
        #: the validation F1 at the chosen threshold of the last validation (saved with it)
        self.val_f1_now: float | None = None
        #: the checkpoints this run descends from (train.init), oldest first: saved in every checkpoint
        self.lineage: list[dict] = []

    def forward(self, x):
        return self.model(x)

    def training_step(self, batch, batch_idx):
        x, target, labelled, extras = batch
        out = self.model(x)
        parts = self.loss_fn(LossBatch(out.logits, out.embedding, target, labelled, step=self.global_step, images=x,
                                       known=extras.get("known"), pseudo=extras.get("pseudo"),
                                       weight=extras.get("weight")))  # fmt: skip
        bad = (~torch.isfinite(parts["loss"].detach())).float()
        if self.trainer.world_size > 1:  # every rank stops together, none waits for the others forever
            bad = self.trainer.strategy.reduce(bad, reduce_op="sum")
        if bool(bad):  # one host-device sync per step: cheap next to a step
            raise TrainingError(f"the loss became {float(parts['loss'].detach())} at epoch {self.current_epoch + 1}, "
                                f"step {self.global_step + 1}; training stopped before the weights were spoilt")  # fmt: skip
        self.log("train_loss", parts["loss"], prog_bar=True, on_step=True, on_epoch=True, batch_size=len(x))
        for k, v in parts.items():
            if k != "loss":
                self.log(f"train_{k}", v, on_step=False, on_epoch=True, batch_size=len(x))
        return parts["loss"]

    def on_train_batch_end(self, outputs, batch, batch_idx) -> None:
        self.loss_fn.after_step(self.model)

    def on_validation_epoch_start(self) -> None:
        self._val_peaks = {}

    def validation_step(self, batch, batch_idx):
        x, idx = batch
        heat, _ = predict_heatmap(self.model, x)
        heat = heat.cpu().numpy()
        e = self.cfg.eval
        low = min(THRESHOLD_GRID[0], *self.sweep_thresholds)
        for h, i in zip(heat, idx.tolist()):
            self._val_peaks[i] = find_peaks(h, self.classes, low, e.min_distance, e.peak_mode)

    def on_validation_epoch_end(self) -> None:
        if not self.val_points:
            return
        idx = sorted(self._val_peaks)  # this rank's images
        sweep = threshold_sweep([self.val_points[i] for i in idx], [self._val_peaks[i] for i in idx],
                                self.cfg.eval.radius, self.sweep_thresholds)  # fmt: skip
        counts = torch.as_tensor(sweep.counts, dtype=torch.float64)
        counts = self.trainer.strategy.reduce(counts.to(self.device), reduce_op="sum").cpu().numpy()
        sweep = dataclasses.replace(sweep, counts=counts)  # every rank's images
        thr, f1 = sweep.best() if self.cfg.eval.threshold is None else (self.sweep_thresholds[0], sweep.f1_at(self.sweep_thresholds[0]))
        self.threshold.fill_(thr)
        self.log("val_f1", f1, prog_bar=True, sync_dist=False)
        self.val_f1_now = float(f1)
        self.log("val_threshold", thr, sync_dist=False)
        if PAPER_THRESHOLD in sweep.thresholds:
            self.log(f"val_f1_at_{PAPER_THRESHOLD:g}", sweep.f1_at(PAPER_THRESHOLD), sync_dist=False)
        self._val_index_error(idx, thr)
        if self.pseudo is not None:
            self._pseudo_round(sweep)

    def _val_index_error(self, idx: list[int], thr: float) -> None:
        """The per-image Ki-67 index error at ``thr`` over every rank's validation images:
        logged as ``val_ki67_mae`` and kept (mean absolute and root-mean-square, points)
        for the checkpoint, where a slide's index interval reads it."""
        agree = ki67_agreement([self.val_points[i] for i in idx], [self._val_peaks[i].above(thr) for i in idx])
        if agree is None:
            self.val_ki67 = None
            return
        e = np.asarray(agree.errors, np.float64)
        sums = torch.tensor([len(e), np.abs(e).sum(), (e**2).sum()], dtype=torch.float64)
        n, a, q = self.trainer.strategy.reduce(sums.to(self.device), reduce_op="sum").cpu().tolist()
        if n == 0:
            self.val_ki67 = None
            return
        self.val_ki67 = {"mae": a / n, "rmse": math.sqrt(q / n), "images": int(n)}
        self.log("val_ki67_mae", a / n, sync_dist=False)

    def _pseudo_round(self, sweep) -> None:
        """A round of pseudo-labelling once ``loss.pseudo_start`` of the epochs have passed."""
        if self.trainer.sanity_checking or self.current_epoch + 1 < self.cfg.loss.pseudo_start * self.cfg.train.epochs:
            return
        dm = self.trainer.datamodule
        if dm is None:
            return
        with torch.inference_mode(False), torch.no_grad():
            stats = self.pseudo.round(self.model, dm.crops.images, dm.crops.points, sweep, self.current_epoch)
        if stats is not None:
            dm.crops.pseudo = self.pseudo.labels
            self.log("pseudo_threshold", stats.threshold, sync_dist=False)
            self.log("pseudo_labels", float(stats.labels), sync_dist=False)
            if math.isfinite(stats.keep_estimate):
                self.log("keep_model", stats.keep_estimate, sync_dist=False)
                if needs_share(self.cfg.loss) and self.cfg.loss.pseudo_reestimate:
                    self.loss_fn.keep = stats.keep_estimate

    def on_train_start(self) -> None:
        dm = self.trainer.datamodule
        if self.pseudo is not None and self.pseudo.history and dm is not None:  # resumed: the labels so far
            dm.crops.pseudo = self.pseudo.labels
            last = self.pseudo.history[-1].keep_estimate
            if math.isfinite(last) and needs_share(self.cfg.loss) and self.cfg.loss.pseudo_reestimate:
                self.loss_fn.keep = last

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        if self.val_ki67 is not None:
            checkpoint["val_ki67"] = dict(self.val_ki67)
        if self.val_f1_now is not None:
            checkpoint["val_f1"] = self.val_f1_now
        checkpoint["lineage"] = [dict(e) for e in self.lineage]
        if self.pseudo is not None:
            checkpoint["pseudo_labels"] = self.pseudo.state_dict()

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        if self.pseudo is not None and "pseudo_labels" in checkpoint:
            self.pseudo.load_state_dict(checkpoint["pseudo_labels"])

    def configure_optimizers(self):
        t = self.cfg.train
        opt = torch.optim.Adam(self.model.parameters(), lr=t.lr, weight_decay=t.weight_decay)
        milestones = sorted({max(1, int(round(f * t.epochs))) for f in t.milestones})
        sched = torch.optim.lr_scheduler.MultiStepLR(opt, milestones=milestones, gamma=t.gamma)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "epoch"}}


# ---------------------------------------------------------------------------------------
# Entry point
# ---------------------------------------------------------------------------------------
@dataclass
class TrainResult:
    best_checkpoint: Path
    last_checkpoint: Path
    val_f1: float
    threshold: float
    out_dir: Path
    keep_estimate: float | None = None  # the estimated share of annotated cells (None: not estimated)
    click_bias: tuple | None = None  # pu_sar: per class, the evidence factor its click weights were shrunk by
    #: a run from train.init: the validation F1 and Ki-67 index error then and now
    #: ({"from": path, "val_f1": [then, now], "val_ki67_mae": [then, now]}; None otherwise)
    change: dict | None = None


class _EpochSeed(L.Callback):
    """Draws new random crops each epoch."""

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        dm = trainer.datamodule
        if dm is not None:
            dm.crops.set_epoch(trainer.current_epoch)


class _SaveOnInterrupt(L.Callback):
    """On SIGTERM (a scheduler's stop) or Ctrl-C: save ``last.ckpt`` where training stands."""

    def __init__(self, path: Path):
        self.path = path
        self.saved: Path | None = None
        self.where = ""

    def on_exception(self, trainer, pl_module, exception) -> None:
        from lightning.pytorch.utilities.exceptions import SIGTERMException

        if isinstance(exception, (KeyboardInterrupt, SIGTERMException)):
            self.where = f"epoch {trainer.current_epoch + 1}, step {trainer.global_step}"
            if trainer.global_step > 0:
                trainer.save_checkpoint(self.path, weights_only=False)
                self.saved = self.path


def _checkpoint_io():
    """Lightning's torch checkpoint IO, writing through sparsecell's atomic files."""
    from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO

    from ..formats.fileio import atomic_path

    class AtomicCheckpointIO(TorchCheckpointIO):
        def save_checkpoint(self, checkpoint, path, storage_options=None) -> None:
            with atomic_path(path) as tmp:
                torch.save(checkpoint, tmp)

    return AtomicCheckpointIO()


#: Settings a resumed run may change; anything else must equal the checkpoint's.
RESUMABLE = ("train.epochs", "train.max_steps", "train.patience", "train.progress_bar", "train.num_workers",
             "train.devices", "train.accelerator", "train.strategy", "train.num_nodes", "train.out_dir")  # fmt: skip


def _config_changes(old: Config, new: Config) -> list[tuple[str, object, object]]:
    a, b = old.to_dict(), new.to_dict()
    return [(f"{sec}.{k}", a[sec].get(k), b[sec][k]) for sec in b for k in b[sec] if a[sec].get(k) != b[sec][k]]


def _check_device(t) -> None:
    if t.accelerator in ("gpu", "cuda") and not torch.cuda.is_available():
        raise ConfigError(f"train.accelerator = {t.accelerator!r}, but no CUDA GPU is available here; use cpu or auto")
    if t.accelerator == "mps" and not (hasattr(torch.backends, "mps") and torch.backends.mps.is_available()):
        raise ConfigError("train.accelerator = 'mps', but MPS is not available here; use cpu or auto")


@contextlib.contextmanager
def _quiet_lightning():
    """Lightning's info lines (device lists, tips, its summary table) and library
    deprecation notes stay off the user's terminal; warnings and errors still show."""
    import logging

    names = ("lightning.pytorch", "lightning.fabric", "pytorch_lightning")
    old = {n: logging.getLogger(n).level for n in names}
    for n in names:
        logging.getLogger(n).setLevel(logging.WARNING)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*does not have many workers.*")
            warnings.filterwarnings("ignore", message=".*sync_dist.*")
            warnings.filterwarnings("ignore", message=".*treespec.*")  # torch-internal deprecation inside Lightning
            warnings.filterwarnings("ignore", message=".*exists and is not empty.*")  # our own checkpoints on resume
            yield
    finally:
        for n, level in old.items():
            logging.getLogger(n).setLevel(level)


def _loggers(out: Path):
    from lightning.pytorch.loggers import CSVLogger

    loggers = [CSVLogger(out, name="logs")]  # logs/version_N: a resumed run adds a version
    try:
        import tensorboard  # noqa: F401
        from lightning.pytorch.loggers import TensorBoardLogger

        loggers.append(TensorBoardLogger(out, name="tb"))
    except ImportError:
        pass
    return loggers


def train(cfg: Config, resume: str | Path | None = None, quiet: bool = False, callbacks: Sequence[L.Callback] = ()) -> TrainResult:
    """Train a detector as ``cfg`` says; checkpoints and logs go to ``cfg.train.out_dir``.

    ``checkpoints/last.ckpt`` is written at the end of every epoch and
    ``checkpoints/best.ckpt`` whenever validation F1 improves, each atomically (whole or
    not at all), so a run killed at any moment resumes from its last finished epoch.
    SIGTERM and Ctrl-C save ``last.ckpt`` where training stands and raise
    :class:`~sparsecell.errors.TrainingError`; so does a loss that is not finite (then
    without saving: the checkpoints keep the last good weights).

    ``resume``: a checkpoint to continue from (``"last"`` for ``out_dir/checkpoints/last.ckpt``);
    the config must equal the checkpoint's except for :data:`RESUMABLE` settings.
    ``callbacks``: extra Lightning callbacks.
    A new run refuses an ``out_dir`` that already holds checkpoints, so none is overwritten.
    """

    from ..inference.checkpoint import read_checkpoint

    t = cfg.train
    out = Path(t.out_dir)
    ckpt_dir = out / "checkpoints"
    if resume == "last":
        resume = ckpt_dir / "last.ckpt"
    if resume is not None:
        if not Path(resume).is_file():
            raise ConfigError(f"{resume}: checkpoint to resume from not found")
        changes = [c for c in _config_changes(read_checkpoint(resume).config, cfg) if c[0] not in RESUMABLE]
        if changes:
            key, was, now = changes[0]
            raise ConfigError(f"{resume}: was trained with {key} = {was!r}, this run asks for {now!r}; a resumed run "
                              f"keeps its config except {', '.join(RESUMABLE)} ({len(changes)} setting(s) differ)")  # fmt: skip
    if resume is None and ckpt_dir.is_dir() and any(ckpt_dir.glob("*.ckpt")):
        raise ConfigError(f"{out}: already holds checkpoints; resume with --resume or choose another train.out_dir")
    for stale in ckpt_dir.glob(".*.ckpt.*") if ckpt_dir.is_dir() else ():  # a write cut off by a kill
        stale.unlink(missing_ok=True)
    if t.init is not None:  # fine-tuning: its own, shorter schedule
        cfg = dataclasses.replace(cfg, train=dataclasses.replace(t, epochs=t.init_epochs))
        t = cfg.train
    _check_device(t)
    L.seed_everything(t.seed, workers=True, verbose=False)
    train_s, val_s, classes = load_samples(cfg)
    train_points, regions = sparse_annotations(train_s, cfg.data)
    rank0 = os.environ.get("LOCAL_RANK", "0") == "0" and os.environ.get("RANK", "0") == "0"
    talk = not quiet and rank0
    if cfg.data.bootstrap == "classical":
        from .bootstrap import bootstrap_points

        train_points, _ = bootstrap_points(train_s, train_points, val_s, classes, cfg.eval.radius, cfg.eval.mpp, regions,
                                           log=(lambda m: print(f"sparsecell train: {m}", flush=True)) if talk else None)  # fmt: skip
    estimate = _keep_estimate(train_s, train_points, val_s) if needs_share(cfg.loss) else None
    try:
        module = SparseCellModule(cfg.to_dict(), classes, [s.points for s in val_s], estimate.share if estimate else None,
                                  n_train=len(train_s))  # fmt: skip
    except ValueError as e:  # a model setting its size does not take, or out of its range
        raise ConfigError(f"model: {e}") from None
    init = _init_weights(module, cfg, classes) if t.init is not None and resume is None else None
    weights, bias = _click_weights(train_s, train_points, val_s, cfg, regions) if module.loss_fn.click_weights else (None, None)
    dm = PointDataModule(cfg, module.model.stride, train_s, val_s, train_points, regions, weights)
    if talk:
        n_par = sum(p.numel() for p in module.model.parameters())
        print(f"sparsecell train: {len(train_s)} training / {len(val_s)} validation images ({len(classes)} classes), "
              f"model {cfg.model.size} ({n_par / 1e6:.2f} M parameters), loss {cfg.loss.name}, {t.epochs} epochs "
              f"-> {out}", flush=True)  # fmt: skip
        if init is not None:
            print(f"sparsecell train: fine-tuning from {t.init} (validation F1 {_num(init['val_f1'])}), "
                  f"{t.epochs} epochs (train.init_epochs), a fresh optimiser", flush=True)  # fmt: skip
        if estimate is not None:
            print(f"sparsecell train: {estimate.text()}", flush=True)
        if weights is not None:
            w = np.concatenate(weights) if weights else np.ones(1)
            evidence = ", ".join("-" if b is None else f"{b:.2f}" for b in bias)
            evidence = f"; evidence of biased clicks per class, 0 none to 1 strong: {evidence}" if cfg.loss.sar_shrink else ""
            print(f"sparsecell train: click weights for conspicuous clicking: {w.min():.2f}-{w.max():.2f} "
                  f"(median {np.median(w):.2f}; faint clicks weigh more{evidence})", flush=True)  # fmt: skip
    with _quiet_lightning():
        result = _fit(cfg, module, dm, out, ckpt_dir, resume, quiet, callbacks)
    change = _round_change(init, result.best_checkpoint) if init is not None else None
    if change is not None and talk:
        print(f"sparsecell train: since {change['from']}: {_change_text(change)}", flush=True)
    if rank0:
        _write_summary(out, result, change, module.lineage)
    return dataclasses.replace(result, keep_estimate=estimate.share if estimate else None,
                               click_bias=tuple(bias) if bias is not None else None, change=change)


def _write_summary(out: Path, result: TrainResult, change: dict | None, lineage: list[dict]) -> None:
    """``OUT/summary.json``: the best checkpoint's validation scores, and for a fine-tuning
    run their change since the model it started from, with its lineage."""
    from ..formats.fileio import write_json
    from ..inference.checkpoint import read_checkpoint

    ck = read_checkpoint(result.best_checkpoint) if result.best_checkpoint.is_file() else None
    write_json({"best_checkpoint": str(result.best_checkpoint), "val_f1": ck.val_f1 if ck else None,
                "threshold": result.threshold, "val_ki67_mae": ck.index_mae if ck else None,
                "val_ki67_rmse": ck.index_error if ck else None, "change": change, "lineage": lineage}, out / "summary.json")  # fmt: skip


def _num(v, fmt: str = ".3f") -> str:
    return "not measured" if v is None else format(v, fmt)


def _init_weights(module: "SparseCellModule", cfg: Config, classes: Sequence[str]) -> dict:
    """Start ``module`` from ``train.init``'s weights (the optimiser starts fresh).

    The checkpoint must be a ``.ckpt`` of the same classes, resolution (``eval.mpp``) and
    model; anything else is a one-line :class:`~sparsecell.errors.ConfigError`. Returns
    its lineage entry (path, epoch, validation F1 and index error), which joins the
    lineage every checkpoint of this run records.
    """
    from ..inference.checkpoint import read_checkpoint

    path = Path(cfg.train.init)
    if path.suffix.lower() == ".onnx":
        raise ConfigError(f"{path}: an ONNX export cannot be fine-tuned; give train.init (--init) the .ckpt it was exported from")
    ck = read_checkpoint(path)
    if tuple(ck.classes) != tuple(classes):
        raise ConfigError(f"{path}: trained for classes {list(ck.classes)}, this run's data has {list(classes)}; "
                          "--init takes a model of the same classes")  # fmt: skip
    if ck.config.eval.mpp != cfg.eval.mpp:
        raise ConfigError(f"{path}: trained at eval.mpp = {ck.config.eval.mpp}, this run asks for {cfg.eval.mpp}; "
                          "--init takes a model of the same resolution")  # fmt: skip
    was, now = ck.config.model, cfg.model
    if (was.size, was.overrides()) != (now.size, now.overrides()):
        raise ConfigError(f"{path}: a {was.size} model {was.overrides() or ''}, this run builds {now.size} "
                          f"{now.overrides() or ''}; --init takes the same model (model.* settings)".replace("  ", " "))  # fmt: skip
    try:
        module.model.load_state_dict(ck.model_state())
    except RuntimeError as e:
        raise ConfigError(f"{path}: its weights do not fit this model ({str(e).splitlines()[0]})") from None
    entry = {"checkpoint": str(path.resolve()), "epoch": ck.epoch, "val_f1": ck.val_f1,
             "val_ki67_mae": ck.index_mae, "classes": list(ck.classes)}  # fmt: skip
    module.lineage = [dict(e) for e in ck.lineage] + [entry]
    return entry


def _round_change(init: dict, best: Path) -> dict:
    """Validation F1 and Ki-67 index error of the fine-tuned model against its start's."""
    from ..inference.checkpoint import read_checkpoint

    ck = read_checkpoint(best) if Path(best).is_file() else None
    return {"from": init["checkpoint"], "val_f1": [init["val_f1"], ck.val_f1 if ck else None],
            "val_ki67_mae": [init["val_ki67_mae"], ck.index_mae if ck else None]}  # fmt: skip


def _change_text(change: dict) -> str:
    """``validation F1 0.712 (+0.031), Ki-67 index error 4.1 points (-1.2)``."""
    parts = []
    for key, name, fmt, unit in (("val_f1", "validation F1", ".3f", ""), ("val_ki67_mae", "Ki-67 index error", ".1f", " points")):
        then, now = change[key]
        if now is None:
            continue
        delta = f" ({now - then:+{fmt}} since then)" if then is not None else ""
        parts.append(f"{name} {now:{fmt}}{unit}{delta}")
    return ", ".join(parts) or "no validation score to compare"


def _click_weights(train_s: Sequence[Sample], train_points: Sequence[Points], val_s: Sequence[Sample], cfg: Config,
                   regions: list | None = None) -> tuple[list, list]:  # fmt: skip
    """Per training image, each click's weight (:func:`sparsecell.losses.prior.click_weights`):
    conspicuity of the clicks against that of every validation cell; and per class, the
    factor the weights were shrunk by (``loss.sar_shrink``; 1 unshrunk, None where no
    click was weighed). A click inside a known completely annotated region (``regions``)
    was not chosen for how it looks: every cell there was clicked, so it weighs 1 and
    takes no part in the estimate."""
    from ..losses.prior import click_weights
    from .targets import conspicuity, in_boxes

    r, rel = cfg.data.sigma, cfg.loss.sar_reference == "image"
    chosen = [~in_boxes(p, boxes) for p, boxes in zip(train_points, regions)] if regions is not None else \
        [np.ones(len(p), bool) for p in train_points]  # fmt: skip
    picked = [p.subset(m) for p, m in zip(train_points, chosen)]
    cz = [conspicuity(s.image, p, r, relative=rel) for s, p in zip(train_s, picked)]
    vz = np.concatenate([conspicuity(s.image, s.points, r, relative=rel) for s in val_s] or [np.zeros(0)])
    vl = np.concatenate([s.points.labels for s in val_s] or [np.zeros(0, int)])
    n_classes = train_points[0].num_classes if train_points else 1
    factors: list = []
    flat = click_weights(np.concatenate(cz or [np.zeros(0)]), np.concatenate([p.labels for p in picked] or [np.zeros(0, int)]),
                         vz, vl, n_classes, shrink=cfg.loss.sar_shrink, factors=factors)  # fmt: skip
    out, i = [], 0
    for p, m in zip(train_points, chosen):
        w = np.ones(len(p))
        w[m] = flat[i:i + int(m.sum())]
        out.append(w)
        i += int(m.sum())
    return out, factors


def _keep_estimate(train_s: Sequence[Sample], train_points: Sequence[Points], val_s: Sequence[Sample]) -> KeepEstimate | None:
    """The share of annotated cells, from click and cell densities (:func:`estimate_keep`)."""
    return estimate_keep([len(p) for p in train_points], [s.image.shape[0] * s.image.shape[1] for s in train_s],
                         [len(s.points) for s in val_s], [s.image.shape[0] * s.image.shape[1] for s in val_s])  # fmt: skip


def _trainer(t, callbacks, out: Path, dm, quiet: bool) -> L.Trainer:
    return L.Trainer(
        max_epochs=t.epochs,
        max_steps=t.max_steps,
        accelerator=t.accelerator,
        devices=t.devices,
        strategy=t.strategy,
        num_nodes=t.num_nodes,
        precision=t.precision,
        callbacks=callbacks,
        logger=_loggers(out),
        check_val_every_n_epoch=t.val_every,
        num_sanity_val_steps=0,
        enable_progress_bar=t.progress_bar and not quiet,
        enable_model_summary=False,  # train() prints the one line that matters
        log_every_n_steps=max(1, min(50, len(dm.crops) // max(t.batch_size, 1))),
        default_root_dir=out,
        deterministic=False,
        plugins=[_checkpoint_io()],
    )


def _fit(cfg, module, dm, out, ckpt_dir, resume, quiet, extra) -> TrainResult:
    from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint
    from lightning.pytorch.utilities.exceptions import SIGTERMException

    from ..inference.checkpoint import read_checkpoint

    t = cfg.train
    best_cb = ModelCheckpoint(dirpath=ckpt_dir, filename="best", monitor="val_f1", mode="max", save_top_k=1,
                              auto_insert_metric_name=False, enable_version_counter=False)  # fmt: skip
    last_cb = ModelCheckpoint(dirpath=ckpt_dir, filename="last", monitor=None, save_top_k=1, every_n_epochs=1,
                              save_on_train_epoch_end=True, auto_insert_metric_name=False, enable_version_counter=False)  # fmt: skip
    interrupt = _SaveOnInterrupt(ckpt_dir / "last.ckpt")
    callbacks = [best_cb, last_cb, interrupt, _EpochSeed(), *extra]
    if t.patience:
        callbacks.append(EarlyStopping(monitor="val_f1", mode="max", patience=t.patience))
    from lightning.fabric.utilities.exceptions import MisconfigurationException

    try:
        trainer = _trainer(t, callbacks, out, dm, quiet)
    except (ValueError, TypeError, MisconfigurationException) as e:  # Lightning's checks of devices and strategy
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise ConfigError(f"train settings (accelerator {t.accelerator!r}, devices {t.devices!r}, strategy "
                          f"{t.strategy!r}, precision {t.precision!r}): {first}") from None  # fmt: skip
    out.mkdir(parents=True, exist_ok=True)
    if trainer.is_global_zero:
        cfg.save(out / "config.yaml")
    try:
        trainer.fit(module, datamodule=dm, ckpt_path=str(resume) if resume else None, weights_only=True)
    except (KeyboardInterrupt, SystemExit) as e:  # Ctrl-C (Lightning exits 1 after it) or SIGTERM
        if not interrupt.where:
            raise
        by, code = ("SIGTERM", 143) if isinstance(e, SIGTERMException) else ("Ctrl-C", 130)
        kept = f"saved {interrupt.saved}; continue with --resume" if interrupt.saved else "nothing trained yet, nothing saved"
        raise TrainingError(f"stopped by {by} at {interrupt.where}; {kept}", exit_code=code) from None
    except TrainingError as e:
        last = ckpt_dir / "last.ckpt"
        kept = f"the last good checkpoint is {last}" if last.is_file() else "no checkpoint was written yet"
        raise TrainingError(f"{e}; {kept}") from None
    best = Path(best_cb.best_model_path) if best_cb.best_model_path else ckpt_dir / "last.ckpt"
    score = best_cb.best_model_score
    thr = read_checkpoint(best).threshold if best.is_file() else float("nan")
    return TrainResult(best, ckpt_dir / "last.ckpt", float(score) if score is not None else float("nan"), thr, out)
