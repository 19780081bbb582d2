"""ONNX: a checkpoint exported for onnxruntime, and a model that runs it.

``export_onnx`` writes the detector's logits for any batch and any input side that is
a multiple of the model's stride (``torch.onnx.export`` with ``dynamo=True``, the
torch.export-based exporter; onnxscript does the translation). What the detector
needs besides the weights travels in the file's metadata: the run's config (peak
settings, resolution), the class names and the threshold. :class:`OnnxModel` runs
such a file with onnxruntime behind the same call as the PyTorch detector, so
:class:`~sparsecell.inference.detector.Detector` (images) and the slide pipeline use either.

Install with ``pip install 'sparsecell[onnx]'``.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import warnings
from pathlib import Path

import numpy as np

from ..config import Config
from ..errors import CheckpointError, SparsecellError
from .detector import Detector

__all__ = ["export_onnx", "OnnxModel", "read_onnx", "ONNX_OPSET", "ONNX_TOLERANCE"]

ONNX_OPSET = 18
#: onnxruntime's heatmap matches PyTorch's to this (max absolute difference of the
#: softmax probabilities; the test measures it).
ONNX_TOLERANCE = 1e-4
_META = "sparsecell"


def _logits_module(model):
    """The detector with its logits as the one output (what the graph returns)."""
    import torch

    class Logits(torch.nn.Module):
        def __init__(self, m):
            super().__init__()
            self.m = m

        def forward(self, x):  # (B, 3, H, W) -> (B, C+1, H, W)
            return self.m(x).logits

    return Logits(model)


@contextlib.contextmanager
def _quiet():
    """The exporter's progress lines, warnings and log records off the user's terminal."""
    loggers = [logging.getLogger(n) for n in ("torch.onnx", "torch.export", "torch._dynamo", "torch.fx", "onnxscript")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    buf = io.StringIO()
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(buf):
            warnings.simplefilter("ignore")
            yield buf
    finally:
        for lg, lv in zip(loggers, levels):
            lg.setLevel(lv)


def export_onnx(checkpoint: str | Path, out: str | Path, overwrite: bool = False, example_side: int = 1024) -> Path:
    """Export a sparsecell checkpoint to ONNX (logits, dynamic batch, height and width).

    The file is written beside ``out`` and renamed into place; an existing ``out`` is
    replaced only with ``overwrite``.
    """
    import torch

    from ..formats.fileio import atomic_path

    out = Path(out)
    if out.exists() and not overwrite:
        raise SparsecellError(f"{out}: exists; choose another name or add --overwrite")
    det = Detector.from_checkpoint(checkpoint, device="cpu")
    model = _logits_module(det.model).eval()
    s = det.model.stride
    side = max(example_side // s, 2) * s
    x = torch.randn(2, 3, side, side)
    B = torch.export.Dim("batch", min=1, max=1024)
    hk, wk = torch.export.Dim("h_nodes", min=1, max=4096), torch.export.Dim("w_nodes", min=1, max=4096)
    try:
        import onnxscript  # noqa: F401 - the exporter needs it
    except ImportError:
        raise SparsecellError("ONNX export needs onnx and onnxscript: pip install 'sparsecell[onnx]'") from None
    meta = {"config": det.config.to_dict(), "classes": list(det.classes), "threshold": det.threshold,
            "checkpoint": str(checkpoint), "stride": s, "index_error": det.index_error}  # fmt: skip
    with _quiet(), torch.no_grad():
        prog = torch.onnx.export(model, (x,), None, dynamo=True, input_names=["image"], output_names=["logits"],
                                 dynamic_shapes=({0: B, 2: s * hk, 3: s * wk},), opset_version=ONNX_OPSET,
                                 verbose=False)  # fmt: skip
        onnx_model = prog.model_proto
    import onnx

    entry = onnx_model.metadata_props.add()
    entry.key, entry.value = _META, json.dumps(meta)
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(out) as tmp:
        onnx.save(onnx_model, str(tmp))
    return out


class OnnxModel:
    """An exported detector run by onnxruntime, called like the PyTorch detector:
    ``model(x)`` on a (B, 3, H, W) float tensor gives ``.logits`` (B, C+1, H, W)."""

    def __init__(self, path: str | Path, threads: int | None = None):
        try:
            import onnxruntime as ort
        except ImportError:
            raise SparsecellError("running an ONNX model needs onnxruntime: pip install 'sparsecell[onnx]'") from None
        self.path = Path(path)
        opts = ort.SessionOptions()
        opts.log_severity_level = 3
        if threads:
            opts.intra_op_num_threads = int(threads)
        try:
            self.session = ort.InferenceSession(str(self.path), opts, providers=["CPUExecutionProvider"])
        except Exception as e:  # onnxruntime raises its own types for a bad file
            raise CheckpointError(f"{self.path}: not a readable ONNX model ({' '.join(str(e).split())[:160]})") from None
        meta = self.session.get_modelmeta().custom_metadata_map.get(_META)
        if meta is None:
            raise CheckpointError(f"{self.path}: not a sparsecell ONNX export (no {_META!r} metadata)")
        self.meta = json.loads(meta)
        self.stride = int(self.meta["stride"])

    def eval(self):
        return self

    def to(self, device):
        if str(device) != "cpu":
            raise SparsecellError(f"{self.path}: the ONNX model runs on the CPU here (onnxruntime's CPU provider)")
        return self

    def __call__(self, x):
        import torch

        from ..models.detector import DetectorOutput

        logits = self.session.run(None, {"image": np.ascontiguousarray(x.detach().cpu().numpy(), dtype=np.float32)})[0]
        return DetectorOutput(torch.from_numpy(logits), None)


def read_onnx(path: str | Path, threads: int | None = None):
    """A :class:`~sparsecell.inference.detector.Detector` running an exported ONNX file."""

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: model not found")
    m = OnnxModel(path, threads)
    cfg = Config.from_dict(m.meta["config"], source=str(path))
    err = m.meta.get("index_error")
    err = float(err) if isinstance(err, (int, float)) and err >= 0 else None
    return Detector(m, m.meta["classes"], float(m.meta["threshold"]), cfg.eval, "cpu", cfg, engine="onnx", index_error=err)

