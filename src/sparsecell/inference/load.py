"""Opening a model for inference: a checkpoint run by PyTorch, or by onnxruntime
through an ONNX export made once and cached beside the checkpoint.

``engine``: ``torch``, ``onnx``, or ``auto`` (onnxruntime on the CPU when it is
installed, PyTorch otherwise and on a GPU). The export for a checkpoint ``best.ckpt``
is ``best.<hash>.onnx`` in the same folder, ``<hash>`` the first 16 hex digits of the
checkpoint's SHA-256: a retrained checkpoint gets a new export, never a stale one.
"""

from __future__ import annotations

import hashlib
import importlib.util
from pathlib import Path

from ..errors import ConfigError, SparsecellError
from .detector import Detector, resolve_device
from .onnx import export_onnx, read_onnx

__all__ = ["ENGINES", "load_detector", "onnx_available", "onnx_cache_path"]

ENGINES = ("auto", "torch", "onnx")


def onnx_available() -> bool:
    """Whether onnxruntime and the exporter (onnx, onnxscript) are installed."""
    return all(importlib.util.find_spec(m) is not None for m in ("onnxruntime", "onnx", "onnxscript"))


def onnx_cache_path(checkpoint: str | Path) -> Path:
    """Where the ONNX export of ``checkpoint`` is cached: beside it, keyed by its hash."""
    checkpoint = Path(checkpoint)
    h = hashlib.sha256()
    with open(checkpoint, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return checkpoint.with_name(f"{checkpoint.stem}.{h.hexdigest()[:16]}.onnx")


def load_detector(path: str | Path, device: str | None = None, engine: str = "auto", threads: int | None = None,
                  log=None) -> Detector:  # fmt: skip
    """A :class:`Detector` for a checkpoint or an ``.onnx`` export, run by ``engine``.

    Its ``engine`` attribute says which ran (``torch`` or ``onnx``). ``log`` (a
    callable taking one line) hears about a first export.
    """
    path = Path(path)
    if engine not in ENGINES:
        raise ConfigError(f"engine {engine!r} is not known; use one of {', '.join(ENGINES)}")
    if path.suffix.lower() == ".onnx":
        if engine == "torch":
            raise ConfigError(f"{path}: an ONNX export runs with onnxruntime; use --engine onnx (or auto) or a checkpoint")
        if device is not None and resolve_device(device) != "cpu":
            raise ConfigError(f"{path}: an ONNX export runs on the CPU here; use --device cpu")
        return read_onnx(path, threads)
    dev = resolve_device(device)
    if engine == "auto":
        engine = "onnx" if dev == "cpu" and onnx_available() else "torch"
    if engine == "torch":
        return Detector.from_checkpoint(path, dev)
    if dev != "cpu":
        raise ConfigError(f"--engine onnx runs on the CPU; use --device cpu, or --engine torch for {dev}")
    if not onnx_available():
        raise SparsecellError("--engine onnx needs onnxruntime, onnx and onnxscript: pip install 'sparsecell[onnx]'")
    if not path.is_file():
        Detector.from_checkpoint(path, "cpu")  # the checkpoint reader's own message for a missing file
    cached = onnx_cache_path(path)
    if not cached.is_file():
        if log is not None:
            log(f"exporting {path.name} to ONNX once for onnxruntime: {cached}")
        try:
            export_onnx(path, cached)
        except PermissionError:
            raise SparsecellError(f"{cached.parent}: not writable, so the ONNX export cannot be cached there; "
                                  f"use --engine torch, or export it with `sparsecell export`") from None  # fmt: skip
    return read_onnx(cached, threads)
