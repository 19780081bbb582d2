"""The one typed configuration of a training run, read from YAML and overridable
on the command line with ``section.key=value`` (e.g. ``loss.name=ce data.keep=0.1``).

The config used is saved next to every checkpoint (``config.yaml``) and inside it,
so a checkpoint alone is enough to predict.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path
from types import UnionType
from typing import Any, Union, get_args, get_origin, get_type_hints

import yaml

from .errors import ConfigError
from .catalogue import CHOICES, DEFAULT_LOSS, RESEARCH, ROLES

__all__ = ["DataConfig", "ModelConfig", "LossConfig", "EvalConfig", "TrainConfig", "Config", "load_config", "apply_overrides"]


#: The resolution the synthetic tiles stand for (their nuclei are sized for 20x): the
#: ``eval.mpp`` a model trained on them records unless told otherwise.
SYNTHETIC_MPP = 0.5


@dataclass
class DataConfig:
    """Where the images and points come from and how training crops are made."""

    source: str = "synthetic"  # synthetic | crchisto | bcdata | shidc | folder | slides (QuPath-annotated; needs eval.mpp)
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
    sparsity: str = "random"  # simulated clicking: random | salient | region (see targets.sparsify)
    salient_beta: float = 2.0  # salient: click chance proportional to exp(beta * z), z the standardised darkness
    region: int | None = None  # region: the side of the square regions, px (None: 128); setting it alone means region
    regions_known: bool = True  # region (or regions_json): the loss is told where the annotated regions are and that they are complete (as a QuPath region is)
    already_sparse: bool = False  # the labels are sparse already: keep them all
    regions_json: str | None = None  # a JSON file {image_id: [[x0, y0, x1, y1], ...]}: the regions clicked per training image (annotate next); sparsity region: every cell in them, salient: data.keep of each region's cells, conspicuous first
    bootstrap: str = "none"  # none | classical: add the classical peer's detections (fitted on validation) to the clicks
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

    def __post_init__(self) -> None:
        if self.regions_json is not None and self.sparsity not in ("region", "salient"):
            raise ValueError(f"regions_json = {self.regions_json!r} is set but sparsity is {self.sparsity!r}; set "
                             "data.sparsity=region (every cell in the regions clicked) or salient (data.keep of each "
                             "region's cells, conspicuous first)")  # fmt: skip
        if self.region is not None and self.region >= 1 and self.sparsity != "region":  # (an out-of-range side: the range check)
            raise ValueError(f"region = {self.region} is set but sparsity is {self.sparsity!r}; "
                             "set data.sparsity=region, or leave data.region empty")  # fmt: skip


@dataclass
class ModelConfig:
    size: str = "vig_cpu"  # vig_cpu | vig_ti | vig_s | unet_cpu
    dim: int | None = None
    depth: int | None = None
    stride: int | None = None
    skips: bool | None = None
    stain_input: bool | None = None  # also feed the stains' optical densities (a fixed colour deconvolution) beside RGB

    def overrides(self) -> dict:
        return {k: v for k, v in dataclasses.asdict(self).items() if k != "size" and v is not None}


@dataclass
class LossConfig:
    """Which loss trains the detector, and its settings (each loss reads the ones it
    uses; :mod:`sparsecell.losses` describes the family).

    Parameters
    ----------
    name : one of :data:`sparsecell.catalogue.ROLES` (default: sparsecell's default method, ``pu_sar``);
        the few to choose from are :data:`sparsecell.catalogue.CHOICES`
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
    pu_keep : float or "auto"
        The share of cells that were annotated. ``"auto"`` (the default; None reads the
        same): estimated from the data, the density of clicks on the training images
        against the density of cells on the fully annotated validation images
        (:func:`sparsecell.losses.prior.estimate_keep`); printed and stored in the
        checkpoint. A number given here wins over the estimate.
    pseudo_precision, pseudo_start, pseudo_stable, pseudo_reestimate, pseudo_censoring : for
        ``pu_pseudo``: the validation precision the pseudo-label threshold must reach, the
        share of the epochs before the first round, whether a pseudo-label must be found
        in two rounds in a row, whether each round re-estimates the annotated share from
        the model's calibrated count of cells (when ``pu_keep`` is auto), and whether the
        risk takes the censoring form; see :mod:`sparsecell.training.pseudo`.
    sar_reference : {"absolute", "image"}
        For ``pu_sar``: how a cell's conspicuity is measured. ``absolute`` (the default):
        the optical density around it; ``image``: its quantile among the tissue pixels
        of its own image, so that a darker scan or stain batch does not look like
        conspicuous clicking (``pu_sar_shrunk`` in the benchmark; not better on
        validation, README "Clicks as users make them").
    sar_shrink : bool
        For ``pu_sar``: shrink each class's weights towards 1 by the evidence that its
        clicks are biased at all (a positive-part James-Stein factor from a chi-square
        test of the clicks against the validation cells). Default False: the raw weights.
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
    pu_keep: float | str | None = "auto"
    pseudo_precision: float = 0.7
    pseudo_start: float = 0.25
    pseudo_stable: bool = False
    pseudo_reestimate: bool = False
    pseudo_censoring: bool = False
    sar_reference: str = "absolute"
    sar_shrink: bool = False
    teacher_decay: float = 0.99
    teacher_warmup_steps: int = 100
    teacher_floor: float = 0.0

    def __post_init__(self) -> None:
        if self.name not in ROLES:
            raise ValueError(f"unknown method {self.name!r}; choose one of {', '.join(CHOICES)} "
                             f"(research variants: {', '.join(RESEARCH)})")
        if isinstance(self.pu_keep, str) and self.pu_keep != "auto":
            raise ValueError(f"pu_keep must be a share in (0, 1] or 'auto', got {self.pu_keep!r}")
        if self.sar_reference not in ("image", "absolute"):
            raise ValueError(f"sar_reference must be 'image' or 'absolute', got {self.sar_reference!r}")
        if self.energy_upsample not in ("bilinear", "nearest"):
            raise ValueError(f"energy_upsample must be 'bilinear' or 'nearest', got {self.energy_upsample!r}")


@dataclass
class EvalConfig:
    """How heatmaps become cells and cells are scored: read alike by training's
    validation, :class:`~sparsecell.inference.detector.Detector` and ``evaluate``; saved in every
    checkpoint.

    Parameters
    ----------
    radius : float
        Matching radius in px: a detection within it of a true point can match it.
    min_distance : int
        Peaks at least this many px apart (the paper: 6).
    peak_mode : {"per_class", "foreground"}
        See :func:`sparsecell.inference.peaks.find_peaks`.
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
    init: str | None = None  # a checkpoint whose weights start this run (fine-tuning after a round of annotation; same classes and eval.mpp)
    init_epochs: int = 8  # the epochs of a run that starts from train.init (train.epochs is a run from scratch's)


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
            _check_section(name, parts[name], source)
        cfg = cls(**parts)
        if cfg.data.source == "synthetic" and cfg.eval.mpp is None:  # its model then predicts slides with no flag
            cfg.eval.mpp = SYNTHETIC_MPP
        if cfg.data.source == "slides":  # QuPath clicks are sparse as they are; slides are read at the model's resolution
            if cfg.eval.mpp is None:
                raise ConfigError(f"{source}: data.source slides needs eval.mpp, the resolution to train at (um per px), e.g. 0.5")
            cfg.data.already_sparse = True
        return cfg

    def save(self, path: str | Path) -> Path:
        from .formats.fileio import atomic_write_text

        path = Path(path)
        atomic_write_text(path, yaml.safe_dump(self.to_dict(), sort_keys=False))
        return path


_SECTIONS = {"data": DataConfig, "model": ModelConfig, "loss": LossConfig, "eval": EvalConfig, "train": TrainConfig}

#: The model sizes (= sparsecell.models.MODEL_SIZES, which imports torch; a test checks they agree).
MODEL_NAMES = ("vig_cpu", "vig_ti", "vig_s", "unet_cpu")
#: Lightning precisions sparsecell accepts.
PRECISIONS = ("32-true", "32", "64-true", "16-mixed", "bf16-mixed", "16-true", "bf16-true")

INF = math.inf
#: The ranges several settings share (see :data:`RULES`).
NONNEG = ("[", 0, INF, ")")
UNIT = ("[", 0, 1, "]")
FRACTION = ("[", 0, 1, ")")
OPEN_UNIT = ("(", 0, 1, ")")
COUNT = ("[", 1, 100_000, "]")
STEPS = ("[", 1, 1_000_000, "]")
SHARE = ("(", 0, 1, "]")
#: Allowed values of every setting that has a limit: (low, high) with "[" / "(" for a
#: closed / open end, or a tuple of choices. Checked whenever a config is read.
RULES: dict[str, tuple] = {
    "data.source": ("synthetic", "crchisto", "bcdata", "shidc", "folder", "slides"),
    "data.mode": ("detection", "classes"),
    "data.keep": SHARE,
    "data.sparse_seed": NONNEG,
    "data.sparsity": ("random", "salient", "region"),
    "data.bootstrap": ("none", "classical"),
    "data.salient_beta": ("[", 0, 100, "]"),
    "data.region": ("[", 1, INF, ")"),
    "data.sigma": ("(", 0, 100, "]"),
    "data.crop": ("[", 16, 8192, "]"),
    "data.crops_per_image": ("[", 1, 10_000, "]"),
    "data.colour_jitter": UNIT,
    "data.synthetic_train": COUNT,
    "data.synthetic_val": COUNT,
    "data.synthetic_test": COUNT,
    "data.synthetic_size": ("[", 32, 4096, "]"),
    "data.synthetic_seed": NONNEG,
    "model.size": MODEL_NAMES,
    "model.dim": ("[", 4, 4096, "]"),
    "model.depth": ("[", 1, 256, "]"),
    "model.stride": (2, 4, 8, 16, 32, 64),
    "loss.lambda1": NONNEG,
    "loss.lambda2": NONNEG,
    "loss.margin": NONNEG,
    "loss.sfl_warmup_steps": NONNEG,
    "loss.const_weight": UNIT,
    "loss.pu_prior": OPEN_UNIT,
    "loss.pu_keep": SHARE,
    "loss.pseudo_precision": OPEN_UNIT,
    "loss.pseudo_start": FRACTION,
    "loss.sar_reference": ("image", "absolute"),
    "loss.teacher_decay": FRACTION,
    "loss.teacher_warmup_steps": NONNEG,
    "loss.teacher_floor": UNIT,
    "eval.radius": ("(", 0, 10_000, "]"),
    "eval.min_distance": ("[", 1, 10_000, "]"),
    "eval.threshold": FRACTION,
    "eval.mpp": ("(", 0, 1000, "]"),
    "train.epochs": STEPS,
    "train.init_epochs": STEPS,
    "train.batch_size": COUNT,
    "train.lr": ("(", 0, 10, "]"),
    "train.weight_decay": NONNEG,
    "train.milestones": SHARE,
    "train.gamma": SHARE,
    "train.seed": ("[", 0, 2**32 - 1, "]"),
    "train.accelerator": ("auto", "cpu", "gpu", "cuda", "mps"),
    "train.num_nodes": COUNT,
    "train.precision": PRECISIONS,
    "train.num_workers": ("[", 0, 1024, "]"),
    "train.val_every": STEPS,
    "train.patience": STEPS,
}
#: The longest list a setting may hold (ids of a large cohort fit; a hostile file does not).
MAX_LIST = 1_000_000


def _num(x) -> str:
    return "inf" if x == INF else (str(int(x)) if float(x).is_integer() else f"{x:g}")


def in_range(value, rule: tuple) -> bool:
    """Whether a number lies in a range rule such as ``("[", 0, 1, ")")``."""
    lo_b, lo, hi, hi_b = rule
    return (lo <= value if lo_b == "[" else lo < value) and (value <= hi if hi_b == "]" else value < hi)


def range_text(rule: tuple) -> str:
    """``("[", 0, 1, ")")`` -> ``"[0, 1)"``."""
    lo_b, lo, hi, hi_b = rule
    return f"{lo_b}{_num(lo)}, {_num(hi)}{hi_b}"


def _check_value(key: str, value, source: str) -> None:
    """A ConfigError naming the key, the value and what is allowed, if ``value`` breaks its rule."""
    if value is None:
        return
    if isinstance(value, list):
        if len(value) > MAX_LIST:
            raise ConfigError(f"{source}: {key} holds {len(value)} items; at most {MAX_LIST}")
        for v in value:
            _check_value(key, v, source)
        return
    if isinstance(value, float) and not math.isfinite(value):
        raise ConfigError(f"{source}: {key} = {value!r} is not a finite number")
    rule = RULES.get(key)
    if rule is None:
        return
    if rule[0] in ("[", "(") and len(rule) == 4:
        if isinstance(value, str):  # a number setting that also takes a word (loss.pu_keep: auto): its class checks it
            return
        if not in_range(value, rule):
            raise ConfigError(f"{source}: {key} = {value!r} is out of range; allowed: {range_text(rule)}")
    elif value not in rule:
        raise ConfigError(f"{source}: {key} = {value!r} is not allowed; choose one of {', '.join(map(str, rule))}")


def _check_section(name: str, sec, source: str) -> None:
    for f in dataclasses.fields(sec):
        _check_value(f"{name}.{f.name}", getattr(sec, f.name), source)
    if name == "train" and sec.max_steps != -1 and sec.max_steps < 1:
        raise ConfigError(f"{source}: train.max_steps = {sec.max_steps} is out of range; allowed: -1 (no limit) or >= 1")
    if name == "train" and not (sec.devices == "auto" or (isinstance(sec.devices, int) and not isinstance(sec.devices, bool)
                                                          and 1 <= sec.devices <= 4096)
                                or (isinstance(sec.devices, list) and all(isinstance(d, int) and d >= 0 for d in sec.devices))):
        raise ConfigError(f"{source}: train.devices = {sec.devices!r} is not allowed; a count >= 1, 'auto' or a list of device indices")

#: Keys that moved to another section: old name -> new name (configs and checkpoints
#: written before the ``eval`` section existed are read with them moved).
MOVED = {"train.radius": "eval.radius", "train.min_distance": "eval.min_distance", "train.peak_mode": "eval.peak_mode"}
#: Keys that no longer exist (``train.threshold`` was only the value used before the first validation).
DROPPED = ("train.threshold",)


def _upgrade(d: dict) -> dict:
    """A config dict of an earlier version, with moved keys in their new sections (and
    ``data.region`` without ``data.sparsity``, from before it existed, read as region clicking)."""
    data = d.get("data")
    if isinstance(data, dict) and data.get("region") is not None and "sparsity" not in data:
        d = {**d, "data": {**data, "sparsity": "region"}}
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
                    value = _yaml(value) if value.strip().startswith("[") else [v for v in value.split(",") if v]
                if not isinstance(value, list):
                    continue
                return [item(v) for v in value]
        except (TypeError, ValueError):
            continue
    sec = {v: k for k, v in _SECTIONS.items()}[klass]
    kinds = {int: "whole number", float: "number", str: "text", bool: "true or false"}
    want = " or ".join(kinds.get(t, getattr(t, "__name__", str(t))) if get_origin(t) is not list else "list" for t in options)
    raise ConfigError(f"{source}: {sec}.{key} = {value!r} is not a valid value (expected a {want})")


#: The largest config file read (a config is a few hundred bytes).
MAX_CONFIG_BYTES = 1 << 20


class _NoAliasLoader(yaml.SafeLoader):
    """YAML without anchors and aliases: a config never needs them, and a few hundred
    bytes of nested aliases can expand to gigabytes ("billion laughs")."""

    def compose_node(self, parent, index):
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            raise yaml.YAMLError(f"aliases (*{event.anchor}) are not allowed, line {event.start_mark.line + 1}")
        return super().compose_node(parent, index)


def _yaml(text: str):
    return yaml.load(text, Loader=_NoAliasLoader)  # noqa: S506 - a SafeLoader subclass


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
        try:
            v = _yaml(value) if value.strip() else None
        except yaml.YAMLError as e:
            raise ConfigError(f"override {ov!r}: not a valid value ({_first_line(e)})") from None
        d[sec][k] = v
    return Config.from_dict(d, source="overrides")


def _first_line(e: Exception) -> str:
    return (str(e).strip().splitlines() or [type(e).__name__])[0]


def load_config(path: str | Path | None, overrides: list[str] = ()) -> Config:
    """Read a YAML config (None: the defaults) and apply overrides."""
    if path is None:
        cfg = Config()
    else:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"{path}: config file not found")
        try:
            if path.stat().st_size > MAX_CONFIG_BYTES:
                raise ConfigError(f"{path}: {path.stat().st_size} bytes is too large for a config (at most {MAX_CONFIG_BYTES})")
            d = _yaml(path.read_text(encoding="utf-8"))
        except yaml.YAMLError as e:
            raise ConfigError(f"{path}: not valid YAML ({_first_line(e)})") from None
        except UnicodeDecodeError:
            raise ConfigError(f"{path}: not a text (UTF-8) file") from None
        except OSError as e:
            raise ConfigError(f"{path}: cannot read the config ({e.strerror or e})") from None
        cfg = Config.from_dict(d, source=str(path))
    return apply_overrides(cfg, list(overrides)) if overrides else cfg
