"""The one typed configuration of a training run, read from YAML and overridable
on the command line with ``section.key=value`` (e.g. ``loss.name=ce data.keep=0.1``).

The config used is saved next to every checkpoint (``config.yaml``) and inside it,
so a checkpoint alone is enough to predict.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from types import UnionType
from typing import Any, Union, get_args, get_origin, get_type_hints

import yaml

from .errors import ConfigError
from .losses import DEFAULT_LOSS, ROLES

__all__ = ["DataConfig", "ModelConfig", "LossConfig", "EvalConfig", "TrainConfig", "Config", "load_config", "apply_overrides"]


@dataclass
class DataConfig:
    """Where the images and points come from and how training crops are made."""

    source: str = "synthetic"  # synthetic | crchisto | bcdata | shidc | folder
    root: str | None = None  # dataset folder (not needed for synthetic)
    train_split: str | None = "train"
    val_split: str | None = "validation"
    train_ids: list[str] | None = None  # restrict training to these image ids (e.g. a fold)
    val_ids: list[str] | None = None  # validation image ids taken from the training split
    mode: str = "detection"  # crchisto: detection (one class) | classes (four)
    classes: list[str] | None = None  # folder data: class names, in order
    keep: float = 0.25  # simulated sparsity: fraction of training points kept
    sparse_seed: int = 0
    per_class: bool = False
    region: int | None = None  # keep whole regions of this side instead of single cells
    already_sparse: bool = False  # the labels are sparse already: keep them all
    sigma: float = 3.0  # Gaussian target width, px
    crop: int = 256  # training crop side, px (a multiple of the model stride)
    crops_per_image: int = 4  # random crops per training image per epoch
    flips: bool = True
    rot90: bool = True
    colour_jitter: float = 0.05  # stain jitter strength (0 = off)
    # synthetic data (the embedded default)
    synthetic_train: int = 24
    synthetic_val: int = 8
    synthetic_test: int = 8
    synthetic_size: int = 256
    synthetic_seed: int = 0


@dataclass
class ModelConfig:
    size: str = "vig_cpu"  # vig_cpu | vig_ti | vig_s | unet_cpu
    dim: int | None = None
    depth: int | None = None
    stride: int | None = None
    skips: bool | None = None

    def overrides(self) -> dict:
        return {k: v for k, v in dataclasses.asdict(self).items() if k != "size" and v is not None}


@dataclass
class LossConfig:
    """Which loss trains the detector, and its settings (each loss reads the ones it
    uses; :mod:`sparsecell.losses` describes the family).

    Parameters
    ----------
    name : one of :data:`sparsecell.losses.ROLES` (default: sparsecell's default method)
    lambda1, lambda2 : float
        Weights of the pixel loss (SEL, weighted CE or PU risk) and of SFL (paper: 2.0 and 0.05).
    margin : float
        SFL margin m (paper: 10).
    sfl_warmup_steps : int
        Ramp lambda2 linearly from 0 over this many steps (0 = off, the paper).
    detach_energy : bool
        Stop gradients through the energy (paper: not detached).
    const_weight : float
        The weight of unlabelled nodes for ``const``.
    energy_upsample : {"bilinear", "nearest"}
    pu_prior : float, optional
        PU's prior of positive pixels; None: estimated per batch from ``pu_keep``.
    pu_keep : float, optional
        The share of cells that were annotated; None: the simulated ``data.keep``, or
        :data:`sparsecell.losses.FALLBACK_KEEP` (with a warning) for data that is sparse already.
    teacher_decay, teacher_warmup_steps, teacher_floor : for ``teacher``: the EMA
        decay of the teacher's weights, the steps of plain cross-entropy before its
        weight applies, and the background weight where the teacher is sure of a cell.
    """

    name: str = DEFAULT_LOSS
    lambda1: float = 2.0
    lambda2: float = 0.05
    margin: float = 10.0
    sfl_warmup_steps: int = 0
    detach_energy: bool = False
    const_weight: float = 0.4
    energy_upsample: str = "bilinear"
    pu_prior: float | None = None
    pu_keep: float | None = None
    teacher_decay: float = 0.99
    teacher_warmup_steps: int = 100
    teacher_floor: float = 0.0

    def __post_init__(self) -> None:
        if self.name not in ROLES:
            raise ValueError(f"unknown loss {self.name!r}; choose one of {sorted(ROLES)}")
        if self.energy_upsample not in ("bilinear", "nearest"):
            raise ValueError(f"energy_upsample must be 'bilinear' or 'nearest', got {self.energy_upsample!r}")


@dataclass
class EvalConfig:
    """How heatmaps become cells and cells are scored: read alike by training's
    validation, :class:`~sparsecell.inference.Detector` and ``evaluate``; saved in every
    checkpoint.

    Parameters
    ----------
    radius : float
        Matching radius in px: a detection within it of a true point can match it.
    min_distance : int
        Peaks at least this many px apart (the paper: 6).
    peak_mode : {"per_class", "foreground"}
        See :func:`sparsecell.inference.find_peaks`.
    threshold : float, optional
        The detection threshold. None (the default): chosen on the validation images
        over :data:`sparsecell.metrics.THRESHOLD_GRID` at every validation and stored in
        the checkpoint; a number: fixed (validation F1 is then reported at it).
    mpp : float, optional
        Resolution of the training images in um per px (e.g. CRCHisto about 0.55);
        None when unknown. Stored with the model; a radius in um needs it.
    """

    radius: float = 6.0
    min_distance: int = 6
    peak_mode: str = "per_class"
    threshold: float | None = None
    mpp: float | None = None

    def __post_init__(self) -> None:
        if self.peak_mode not in ("per_class", "foreground"):
            raise ValueError(f"peak_mode must be 'per_class' or 'foreground', got {self.peak_mode!r}")


@dataclass
class TrainConfig:
    epochs: int = 30
    batch_size: int = 4
    lr: float = 1e-3
    weight_decay: float = 0.0
    milestones: list[float] = field(default_factory=lambda: [0.6, 0.85])  # fractions of the epochs
    gamma: float = 0.1
    seed: int = 0
    accelerator: str = "auto"
    devices: Any = 1
    strategy: str = "auto"
    num_nodes: int = 1
    precision: str = "32-true"
    num_workers: int = 0
    out_dir: str = "runs/train"
    val_every: int = 1  # validate every n epochs
    patience: int | None = None  # early stopping on validation F1 (None = off)
    max_steps: int = -1
    progress_bar: bool = True


@dataclass
class Config:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict | None, source: str = "config") -> "Config":
        d = d or {}
        if not isinstance(d, dict):
            raise ConfigError(f"{source}: the top level must be a mapping of sections {list(_SECTIONS)}")
        d = _upgrade(d)
        unknown = sorted(set(d) - set(_SECTIONS))
        if unknown:
            raise ConfigError(f"{source}: unknown section {unknown[0]!r}; sections are {list(_SECTIONS)}")
        parts = {}
        for name, klass in _SECTIONS.items():
            sec = d.get(name) or {}
            if not isinstance(sec, dict):
                raise ConfigError(f"{source}: section {name!r} must be a mapping")
            fields = {f.name for f in dataclasses.fields(klass)}
            bad = sorted(set(sec) - fields)
            if bad:
                raise ConfigError(f"{source}: unknown key {name}.{bad[0]}; known: {sorted(fields)}")
            try:
                parts[name] = klass(**{k: _coerce(klass, k, v, source) for k, v in sec.items()})
            except ValueError as e:
                if isinstance(e, ConfigError):
                    raise
                raise ConfigError(f"{source}: {name}: {e}") from None
        return cls(**parts)

    def save(self, path: str | Path) -> Path:
        from .fileio import atomic_write_text

        path = Path(path)
        atomic_write_text(path, yaml.safe_dump(self.to_dict(), sort_keys=False))
        return path


_SECTIONS = {"data": DataConfig, "model": ModelConfig, "loss": LossConfig, "eval": EvalConfig, "train": TrainConfig}

#: Keys that moved to another section: old name -> new name (configs and checkpoints
#: written before the ``eval`` section existed are read with them moved).
MOVED = {"train.radius": "eval.radius", "train.min_distance": "eval.min_distance", "train.peak_mode": "eval.peak_mode"}
#: Keys that no longer exist (``train.threshold`` was only the value used before the first validation).
DROPPED = ("train.threshold",)


def _upgrade(d: dict) -> dict:
    """A config dict of an earlier version, with moved keys in their new sections."""
    train = d.get("train")
    if not isinstance(train, dict) or not any(f"train.{k}" in (*MOVED, *DROPPED) for k in train):
        return d
    d = {k: (dict(v) if isinstance(v, dict) else v) for k, v in d.items()}
    for old, new in MOVED.items():
        key = old.split(".", 1)[1]
        if key in d["train"]:
            d.setdefault("eval", {})
            d["eval"] = dict(d["eval"] or {})
            d["eval"].setdefault(new.split(".", 1)[1], d["train"].pop(key))
    for old in DROPPED:
        d["train"].pop(old.split(".", 1)[1], None)
    return d


def _coerce(klass, key: str, value, source: str):
    """Check a value against the field's type, converting YAML/CLI strings."""
    hint = get_type_hints(klass)[key]
    if value is None:
        if type(None) in get_args(hint) or hint is Any:
            return None
        raise ConfigError(f"{source}: {klass.__name__[:-6].lower()}.{key} may not be empty")
    is_union = get_origin(hint) in (Union, UnionType)
    options = [a for a in get_args(hint) if a is not type(None)] if is_union else [hint]
    for t in options:
        origin = get_origin(t)
        try:
            if t is Any:
                return value
            if t is bool:
                if isinstance(value, bool):
                    return value
                if isinstance(value, str) and value.lower() in ("true", "false", "yes", "no", "1", "0"):
                    return value.lower() in ("true", "yes", "1")
                continue
            if t in (int, float):
                if isinstance(value, bool):
                    continue
                if t is int and isinstance(value, float) and not value.is_integer():
                    continue
                return t(value) if not isinstance(value, str) else t(float(value) if t is float else int(value))
            if t is str:
                if isinstance(value, (dict, list)):
                    continue
                return str(value)
            if origin is list:
                (item,) = get_args(t)
                if isinstance(value, str):
                    value = yaml.safe_load(value) if value.strip().startswith("[") else [v for v in value.split(",") if v]
                if not isinstance(value, list):
                    continue
                return [item(v) for v in value]
        except (TypeError, ValueError):
            continue
    sec = {v: k for k, v in _SECTIONS.items()}[klass]
    raise ConfigError(f"{source}: {sec}.{key} = {value!r} is not a valid {hint}")


def apply_overrides(config: Config, overrides: list[str]) -> Config:
    """``["loss.name=ce", "data.keep=0.1"]`` -> a new Config."""
    d = config.to_dict()
    for ov in overrides:
        if "=" not in ov or "." not in ov.split("=", 1)[0]:
            raise ConfigError(f"override {ov!r}: expected section.key=value, e.g. loss.name=ce")
        key, value = ov.split("=", 1)
        sec, k = key.split(".", 1)
        if sec not in d:
            raise ConfigError(f"override {ov!r}: unknown section {sec!r}; sections are {list(_SECTIONS)}")
        if key in MOVED:
            sec, k = MOVED[key].split(".", 1)
        elif k not in d[sec]:
            raise ConfigError(f"override {ov!r}: unknown key {k!r} in {sec}; known: {sorted(d[sec])}")
        v = yaml.safe_load(value) if value.strip() else None
        d[sec][k] = v
    return Config.from_dict(d, source="overrides")


def load_config(path: str | Path | None, overrides: list[str] = ()) -> Config:
    """Read a YAML config (None: the defaults) and apply overrides."""
    if path is None:
        cfg = Config()
    else:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"{path}: config file not found")
        try:
            d = yaml.safe_load(path.read_text(encoding="utf-8"))
        except yaml.YAMLError as e:
            first = str(e).splitlines()[0] if str(e) else type(e).__name__
            raise ConfigError(f"{path}: not valid YAML ({first})") from None
        cfg = Config.from_dict(d, source=str(path))
    return apply_overrides(cfg, list(overrides)) if overrides else cfg
