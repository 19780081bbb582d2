"""Reading a checkpoint written by ``sparsecell train``: the one reader, used by
training (for its result) and by :class:`~sparsecell.inference.detector.Detector`.

Checkpoints are read with ``torch.load(weights_only=True)``: no code in a file can run.
What a sparsecell checkpoint holds besides the weights: the run's config, the class
names, and the detection threshold (chosen on validation, or fixed by ``eval.threshold``).
"""

from __future__ import annotations

import math

import pickle
import warnings
from dataclasses import dataclass
from pathlib import Path

from ..config import Config
from ..errors import CheckpointError, SparsecellError

__all__ = ["Checkpoint", "read_checkpoint", "THRESHOLD_DECIMALS"]

#: The stored threshold is a float32 buffer; it is read back rounded to this many decimals.
THRESHOLD_DECIMALS = 4


@dataclass(frozen=True)
class Checkpoint:
    path: Path
    config: Config
    classes: tuple[str, ...]
    state_dict: dict  # the LightningModule's, all of it
    threshold: float
    epoch: int
    global_step: int
    keep_estimate: float | None = None  # the share of annotated cells training estimated (PU-based losses)
    index_error: float | None = None  # RMS per-image Ki-67 index error on validation, points (None: not measured)
    index_mae: float | None = None  # the same error's mean absolute value, points
    val_f1: float | None = None  # validation F1 at the threshold when it was saved (None: not recorded)
    lineage: tuple = ()  # the checkpoints it was fine-tuned from (train.init), oldest first

    def model_state(self) -> dict:
        """The detector's weights (the ``model.`` entries, prefix removed)."""
        return {k[len("model."):]: v for k, v in self.state_dict.items() if k.startswith("model.")}


def _why(e: Exception) -> str:
    """Why torch.load refused a file, in a few words."""
    import re

    text = str(e)
    m = re.search(r"Unsupported global: GLOBAL ([\w.]+)", text)
    if m:
        return f"it would run {m.group(1)}, which is refused"
    if isinstance(e, pickle.UnpicklingError) or "Weights only load failed" in text:
        return "not a PyTorch checkpoint file"
    first = (text.strip().splitlines() or [""])[0][:120]
    return f"{type(e).__name__}: {first}" if first and first != type(e).__name__ else type(e).__name__


def read_checkpoint(path: str | Path) -> Checkpoint:
    """Read and check a sparsecell checkpoint; a missing, unreadable or foreign file is a
    :class:`~sparsecell.errors.CheckpointError` naming it."""
    import torch

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint not found")
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*pickle protocol.*")  # torch's note on foreign files
            ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except MemoryError:
        raise CheckpointError(f"{path}: not a readable checkpoint (it asks for more memory than there is)") from None
    except Exception as e:  # torch.load raises a dozen types on a file that is not its own (KeyError, IndexError, ...)
        raise CheckpointError(f"{path}: not a readable checkpoint ({_why(e)})") from None
    hp = ckpt.get("hyper_parameters") if isinstance(ckpt, dict) else None
    if not isinstance(hp, dict) or "config" not in hp or "state_dict" not in ckpt:
        raise CheckpointError(f"{path}: not a sparsecell checkpoint (no config or weights inside)")
    try:
        cfg = Config.from_dict(hp["config"], source=str(path))
    except SparsecellError as e:
        raise CheckpointError(f"{path}: its config is not valid ({e})") from None
    state = ckpt["state_dict"]
    from ..metrics import UNSET_THRESHOLD

    thr = state.get("threshold")
    thr = float(thr) if thr is not None else (cfg.eval.threshold if cfg.eval.threshold is not None else UNSET_THRESHOLD)
    return Checkpoint(path, cfg, tuple(hp["classes"]), state, round(thr, THRESHOLD_DECIMALS),
                      int(ckpt.get("epoch", -1)), int(ckpt.get("global_step", -1)),
                      hp.get("keep_estimate") if isinstance(hp.get("keep_estimate"), float) else None,
                      _index_error(ckpt.get("val_ki67")), _index_error(ckpt.get("val_ki67"), "mae"),
                      _finite(ckpt.get("val_f1")), _lineage(ckpt.get("lineage")))  # fmt: skip


def _finite(v) -> float | None:
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and v >= 0 else None


def _index_error(val_ki67, key: str = "rmse") -> float | None:
    """The validation index error a checkpoint records (None where absent or not a number)."""
    return _finite(val_ki67.get(key)) if isinstance(val_ki67, dict) else None


def _lineage(raw) -> tuple:
    """The recorded lineage: a list of small dicts (anything else: none)."""
    if not isinstance(raw, list):
        return ()
    return tuple(dict(e) for e in raw[:1000] if isinstance(e, dict))
