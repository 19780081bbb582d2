"""Training with PyTorch Lightning: the module (model, loss, what a step does,
validation F1 with the threshold chosen on it), the data module (where batches come
from) and :func:`train`, which hands devices, precision, DDP, checkpoints, resume,
early stopping and logging to Lightning's Trainer.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import lightning as L
import numpy as np
import torch

from .config import Config
from .data import CropDataset, Sample, open_dataset
from .errors import ConfigError
from .inference import THRESHOLD_GRID, filter_scores, find_peaks, predict_heatmap, to_tensor
from .metrics import score_points
from .models import build_model
from .points import Points
from .targets import sparsify

__all__ = ["SparseCellModule", "PointDataModule", "load_samples", "sparse_points", "train", "TrainResult"]


# ---------------------------------------------------------------------------------------
# Data
# ---------------------------------------------------------------------------------------
def load_samples(cfg: Config) -> tuple[list[Sample], list[Sample], tuple[str, ...]]:
    """(training samples, validation samples, classes), with full annotations."""
    d = cfg.data
    if d.source == "synthetic":
        from .synthetic import SyntheticConfig, synthetic_dataset

        sc = SyntheticConfig(size=d.synthetic_size)
        tr = [Sample(*s) for s in synthetic_dataset(d.synthetic_train, seed=d.synthetic_seed, config=sc)]
        va = [Sample(*s) for s in synthetic_dataset(d.synthetic_val, seed=d.synthetic_seed + 1, config=sc)]
        return tr, va, tr[0].points.classes
    if d.root is None:
        raise ConfigError(f"data.root is required for data.source = {d.source!r}")
    kw = {"mode": d.mode} if d.source == "crchisto" else {}
    if d.source == "folder" and d.classes:
        kw = {"classes": tuple(d.classes)}
    train_ds = open_dataset(d.source, d.root, d.train_split, **kw)
    train = [train_ds[i] for i in range(len(train_ds))]
    if d.val_ids:
        val_set = set(d.val_ids)
        val = [s for s in train if s.image_id in val_set]
        train = [s for s in train if s.image_id not in val_set]
        if len(val) != len(val_set):
            missing = sorted(val_set - {s.image_id for s in val})
            raise ConfigError(f"data.val_ids: {missing[:3]} not found in {d.root} split {d.train_split!r}")
    elif d.val_split:
        val_ds = open_dataset(d.source, d.root, d.val_split, **kw)
        val = [val_ds[i] for i in range(len(val_ds))]
    else:
        raise ConfigError("set data.val_split or data.val_ids: validation chooses the threshold and the checkpoint")
    if d.train_ids:
        want = set(d.train_ids)
        train = [s for s in train if s.image_id in want]
    if not train or not val:
        raise ConfigError(f"no training ({len(train)}) or validation ({len(val)}) images for {d.source} at {d.root}")
    return train, val, train_ds.classes


def sparse_points(samples: Sequence[Sample], cfg: Config) -> list[Points]:
    """The training annotations: the full ones thinned to ``data.keep`` (per image,
    reproducible from ``data.sparse_seed``), or all of them when already sparse."""
    d = cfg.data
    if d.already_sparse or d.keep >= 1.0:
        return [s.points for s in samples]
    return [
        sparsify(s.points, d.keep, seed=d.sparse_seed * 1_000_003 + i, per_class=d.per_class, region=d.region,
                 shape=s.image.shape[:2])
        for i, s in enumerate(samples)
    ]  # fmt: skip


class _ValImages(torch.utils.data.Dataset):
    def __init__(self, samples: Sequence[Sample]):
        self.samples = samples

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int):
        return to_tensor(self.samples[i].image), i


class PointDataModule(L.LightningDataModule):
    """Training crops of the sparse annotations; full validation images (batch 1)."""

    def __init__(self, cfg: Config, stride: int, train: list[Sample], val: list[Sample], train_points: list[Points]):
        super().__init__()
        self.cfg, self.stride = cfg, stride
        d = cfg.data
        self.crops = CropDataset(
            [s.image for s in train], train_points, d.crop, stride, d.sigma, d.crops_per_image,
            seed=cfg.train.seed, flips=d.flips, rot90=d.rot90, colour_jitter=d.colour_jitter,
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

    The threshold that maximises validation micro F1 is kept in the buffer
    ``threshold`` (saved in every checkpoint) and logged as ``val_threshold``.
    """

    def __init__(self, config: dict, classes: Sequence[str], val_points: Sequence[Points] | None = None):
        super().__init__()
        self.save_hyperparameters({"config": config, "classes": list(classes)})
        self.cfg = Config.from_dict(config)
        self.classes = tuple(classes)
        self.model = build_model(self.cfg.model.size, len(self.classes), **self.cfg.model.overrides())
        self.loss_fn = self.cfg.loss
        if self.loss_fn.uses_pu and self.loss_fn.pu_keep is None and self.loss_fn.pu_prior is None:
            import dataclasses

            d = self.cfg.data
            if d.already_sparse:
                warnings.warn(f"loss {self.loss_fn.name}: assuming 25% of the cells are annotated; set loss.pu_keep to your estimate")
                keep = 0.25
            else:
                keep = d.keep  # the simulated sparsity is known exactly
            self.loss_fn = dataclasses.replace(self.loss_fn, pu_keep=keep)
        self.register_buffer("threshold", torch.tensor(float(self.cfg.train.threshold)))
        self.teacher = None
        if self.loss_fn.needs_teacher:  # an EMA copy of the model, never trained directly
            import copy

            self.teacher = copy.deepcopy(self.model).requires_grad_(False)
        self.val_points = list(val_points) if val_points is not None else []
        self._val_peaks: dict[int, Points] = {}

    def forward(self, x):
        return self.model(x)

    def training_step(self, batch, batch_idx):
        x, target, labelled = batch
        out = self.model(x)
        parts = self.loss_fn(out.logits, out.embedding, target, labelled, step=self.global_step,
                             teacher_fg=self._teacher_foreground(x))  # fmt: skip
        self.log("train_loss", parts["loss"], prog_bar=True, on_step=True, on_epoch=True, batch_size=len(x))
        for k, v in parts.items():
            if k != "loss":
                self.log(f"train_{k}", v, on_step=False, on_epoch=True, batch_size=len(x))
        return parts["loss"]

    def _teacher_foreground(self, x: torch.Tensor) -> torch.Tensor | None:
        """The teacher's foreground probability (B, H, W), spread over a cell's extent."""
        if self.teacher is None:
            return None
        with torch.no_grad():
            self.teacher.eval()
            p = torch.softmax(self.teacher(x).logits.float(), dim=1)
            fg = (1.0 - p[:, :1])
            k = 2 * int(round(self.cfg.data.sigma)) + 1
            return torch.nn.functional.max_pool2d(fg, k, stride=1, padding=k // 2)[:, 0]

    def on_train_batch_end(self, outputs, batch, batch_idx) -> None:
        if self.teacher is None:
            return
        d = self.loss_fn.teacher_decay
        with torch.no_grad():
            for pt, ps in zip(self.teacher.parameters(), self.model.parameters()):
                pt.lerp_(ps.detach(), 1.0 - d)
            for bt, bs in zip(self.teacher.buffers(), self.model.buffers()):
                bt.copy_(bs)

    def on_validation_epoch_start(self) -> None:
        self._val_peaks = {}

    def validation_step(self, batch, batch_idx):
        x, idx = batch
        heat, _ = predict_heatmap(self.model, x)
        heat = heat.cpu().numpy()
        t = self.cfg.train
        for h, i in zip(heat, idx.tolist()):
            self._val_peaks[i] = find_peaks(h, self.classes, THRESHOLD_GRID[0], t.min_distance, t.peak_mode)

    def on_validation_epoch_end(self) -> None:
        if not self.val_points:
            return
        grid = THRESHOLD_GRID
        counts = torch.zeros(len(grid), 3, dtype=torch.float64)  # tp, fp, fn per threshold (this rank's images)
        if self._val_peaks:
            idx = sorted(self._val_peaks)
            truth = [self.val_points[i] for i in idx]
            for k, thr in enumerate(grid):
                a = score_points(truth, [filter_scores(self._val_peaks[i], thr) for i in idx], self.cfg.train.radius)["all"]
                counts[k] = torch.tensor([a.tp, a.fp, a.fn], dtype=torch.float64)
        counts = self.trainer.strategy.reduce(counts.to(self.device), reduce_op="sum").cpu()
        tp, fp, fn = counts.T
        f1 = (2 * tp / (2 * tp + fp + fn).clamp_min(1)).numpy()
        best = int(np.argmax(f1))  # ties: the lowest threshold
        self.threshold.fill_(grid[best])
        self.log("val_f1", float(f1[best]), prog_bar=True, sync_dist=False)
        self.log("val_threshold", float(grid[best]), sync_dist=False)
        fixed = grid.index(0.7) if 0.7 in grid else None
        if fixed is not None:
            self.log("val_f1_at_0.7", float(f1[fixed]), sync_dist=False)

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


class _EpochSeed(L.Callback):
    """Draws new random crops each epoch."""

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        dm = trainer.datamodule
        if dm is not None:
            dm.crops.set_epoch(trainer.current_epoch)


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

    ``resume``: a checkpoint to continue from (``"last"`` for ``out_dir/checkpoints/last.ckpt``).
    ``callbacks``: extra Lightning callbacks.
    A new run refuses an ``out_dir`` that already holds checkpoints, so none is overwritten.
    """
    from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint

    t = cfg.train
    out = Path(t.out_dir)
    ckpt_dir = out / "checkpoints"
    if resume == "last":
        resume = ckpt_dir / "last.ckpt"
    if resume is not None and not Path(resume).is_file():
        raise ConfigError(f"{resume}: checkpoint to resume from not found")
    if resume is None and ckpt_dir.is_dir() and any(ckpt_dir.glob("*.ckpt")):
        raise ConfigError(f"{out}: already holds checkpoints; resume with --resume or choose another train.out_dir")
    L.seed_everything(t.seed, workers=True, verbose=False)
    train_s, val_s, classes = load_samples(cfg)
    module = SparseCellModule(cfg.to_dict(), classes, [s.points for s in val_s])
    dm = PointDataModule(cfg, module.model.stride, train_s, val_s, sparse_points(train_s, cfg))
    out.mkdir(parents=True, exist_ok=True)
    callbacks = [
        ModelCheckpoint(dirpath=ckpt_dir, filename="best", monitor="val_f1", mode="max", save_last=True,
                        auto_insert_metric_name=False),
        _EpochSeed(),
        *callbacks,
    ]  # fmt: skip
    if t.patience:
        callbacks.append(EarlyStopping(monitor="val_f1", mode="max", patience=t.patience))
    trainer = L.Trainer(
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
        enable_model_summary=not quiet,
        log_every_n_steps=max(1, min(50, len(dm.crops) // max(t.batch_size, 1))),
        default_root_dir=out,
        deterministic=False,
    )
    if trainer.is_global_zero:
        cfg.save(out / "config.yaml")
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*does not have many workers.*")
        warnings.filterwarnings("ignore", message=".*sync_dist.*")
        trainer.fit(module, datamodule=dm, ckpt_path=str(resume) if resume else None, weights_only=True)
    best = Path(callbacks[0].best_model_path) if callbacks[0].best_model_path else ckpt_dir / "last.ckpt"
    score = callbacks[0].best_model_score
    thr = round(float(torch.load(best, map_location="cpu", weights_only=True)["state_dict"]["threshold"]), 4) if best.is_file() else float("nan")
    return TrainResult(best, ckpt_dir / "last.ckpt", float(score) if score is not None else float("nan"), thr, out)
