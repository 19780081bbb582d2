"""The training-free peer: colour deconvolution and a DAB threshold, as a Ki-67 lab runs it
(QuPath's positive cell detection, in small).

No training and no clicks. Each image is separated into stain optical densities by
colour deconvolution (scikit-image's ``rgb2hed``, Ruifrok and Johnston's matrix);
nuclei are the peaks of a band-pass of the nuclear stain at the nucleus size
(haematoxylin + DAB on IHC, haematoxylin alone on H&E); a nucleus is positive when its
mean DAB optical density passes a threshold. Its few settings are fitted on fully
annotated validation images by :func:`fit_classical` (never on test), scored by the same
matching and micro F1 as a trained model.

It runs behind the same interface as a trained model: :func:`classical_detector` gives
a :class:`~sparsecell.inference.detector.Detector` whose "model" computes probability
heatmaps from the stains, so ``evaluate``, ``predict`` on images and the slide pipeline
take it unchanged.

Heatmap (C + 1 channels, as a model's softmax): with ``r`` the band-pass response
(Gaussian at sigma = d / (2 sqrt 2) minus one 3x wider, d the nucleus diameter in px)
and ``s`` its scale, the foreground is ``r+ / (r+ + s)`` (``r+ = max(r, 0)``: 0.5 at ``r = s``); a two-class
(Ki-67) model splits it into positive and negative by the mean DAB density over the
nucleus (a Gaussian at sigma = d / 4) against ``dab_threshold``.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Sequence

import numpy as np

from .config import EvalConfig
from .errors import CheckpointError
from .formats.points import Points
from .metrics import ki67_agreement

__all__ = ["ClassicalSettings", "ClassicalModel", "classical_detector", "fit_classical", "read_classical",
           "read_index_error", "write_classical", "stain_densities", "dab_at", "by_dab", "fit_dab_threshold", "describe",
           "settings_json", "is_classical_file", "NUCLEUS_UM_GRID", "ASSUMED_MPP"]  # fmt: skip

#: Nucleus diameters tried when fitting, in um (lymphocytes about 5, tumour nuclei 7-12).
NUCLEUS_UM_GRID = (4.0, 5.0, 6.0, 7.0, 8.0, 9.0, 10.0, 12.0, 14.0)
#: The resolution assumed for images that record none (20x), um per px.
ASSUMED_MPP = 0.5
#: DAB thresholds tried: these quantiles of the DAB density at the detected nuclei.
_DAB_QUANTILES = np.linspace(0.02, 0.98, 49)
#: How sharply a nucleus turns positive around the threshold (OD units).
_DAB_SOFTNESS = 1e-3
_FORMAT = "sparsecell-classical"


@dataclass(frozen=True)
class ClassicalSettings:
    """The peer's settings (what :func:`fit_classical` fits and a settings file holds).

    Attributes
    ----------
    classes : tuple of str
        ``("positive", "negative")`` for Ki-67 (positive by DAB), or one class.
    stains : {"hdab", "he"}
        The nuclear stain: haematoxylin + DAB (IHC) or haematoxylin alone (H&E).
    nucleus_um : float
        Nucleus diameter, um.
    mpp : float
        The images' resolution, um per px (turns ``nucleus_um`` into px).
    response_scale : float
        The band-pass response that maps to foreground 0.5 (fitted: the detection
        threshold chosen on the validation images).
    threshold : float
        Detection threshold on the foreground, from the same grid as a model's.
    dab_threshold : float
        Mean DAB optical density above which a nucleus is positive (two classes).
    radius : float
        Matching radius in px (the data's, for scoring).
    """

    # the defaults: fitted by fit_classical on BCData's 9 validation images (Ki-67, 40x: 0.25 um/px), never its
    # test images; a lab's own stain and scanner want their own fit (sparsecell fit-classical)
    classes: tuple[str, ...] = ("positive", "negative")
    stains: str = "hdab"
    nucleus_um: float = 5.0
    mpp: float = 0.25
    response_scale: float = 0.00171
    threshold: float = 0.5
    dab_threshold: float = 0.0806
    radius: float = 15.0

    def __post_init__(self) -> None:
        if self.stains not in ("hdab", "he"):
            raise ValueError(f"stains must be 'hdab' or 'he', got {self.stains!r}")
        if len(self.classes) not in (1, 2):
            raise ValueError(f"the classical detector has one class or two (positive, negative), not {list(self.classes)}")
        for name in ("nucleus_um", "mpp", "response_scale", "radius"):
            v = getattr(self, name)
            if not (isinstance(v, (int, float)) and math.isfinite(v) and v > 0):
                raise ValueError(f"{name} must be a positive number, got {v!r}")
        if not 0 <= self.threshold < 1:
            raise ValueError(f"threshold must lie in [0, 1), got {self.threshold!r}")

    @property
    def positive_index(self) -> int:
        return _positive_index(self.classes)

    @property
    def nucleus_px(self) -> float:
        return self.nucleus_um / self.mpp

    @property
    def min_distance(self) -> int:
        """Peaks closer than half a nucleus are one nucleus."""
        return max(1, int(round(self.nucleus_px / 2)))

    def eval_config(self) -> EvalConfig:
        return EvalConfig(radius=self.radius, min_distance=self.min_distance, peak_mode="foreground",
                          threshold=self.threshold, mpp=self.mpp)  # fmt: skip


def _positive_index(classes: Sequence[str]) -> int:
    """Which of two classes is the positive one (by name; the first otherwise)."""
    from .metrics import is_positive

    return next((i for i, c in enumerate(classes) if is_positive(c)), 0)


def _nucleus_mean(density: np.ndarray, nucleus_px: float) -> np.ndarray:
    """A density's mean over a nucleus around each pixel (a Gaussian at sigma = d / 4)."""
    from scipy.ndimage import gaussian_filter

    return gaussian_filter(density, nucleus_px / 4, mode="reflect")


def stain_densities(rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Haematoxylin and DAB optical densities (H, W) float32 of a uint8 RGB image
    (``skimage.color.rgb2hed``; negative densities, i.e. noise, are 0)."""
    from skimage.color import rgb2hed

    hed = rgb2hed(np.asarray(rgb)[..., :3])
    return np.maximum(hed[..., 0], 0).astype(np.float32), np.maximum(hed[..., 2], 0).astype(np.float32)


def _response(rgb: np.ndarray, s: ClassicalSettings) -> tuple[np.ndarray, np.ndarray]:
    """The band-pass nuclear response and the mean DAB density over a nucleus, (H, W)."""
    from scipy.ndimage import gaussian_filter

    h, d = stain_densities(rgb)
    nuclear = h + d if s.stains == "hdab" else h
    sigma = s.nucleus_px / (2 * math.sqrt(2))
    r = gaussian_filter(nuclear, sigma, mode="reflect") - gaussian_filter(nuclear, 3 * sigma, mode="reflect")
    dab = _nucleus_mean(d, s.nucleus_px) if len(s.classes) == 2 else d
    return r, dab


def _heatmap(rgb: np.ndarray, s: ClassicalSettings) -> np.ndarray:
    """(C + 1, H, W) float32 probabilities: background, then the classes."""
    r, dab = _response(rgb, s)
    r = np.maximum(r, 0)
    fg = r / (r + s.response_scale)  # strictly increasing, no plateau where a nucleus is strong
    if len(s.classes) == 1:
        return np.stack([1 - fg, fg]).astype(np.float32)
    z = np.clip((dab - s.dab_threshold) / _DAB_SOFTNESS, -60, 60)
    pos = 1.0 / (1.0 + np.exp(-z))
    pos_neg = [fg * pos, fg * (1 - pos)] if s.positive_index == 0 else [fg * (1 - pos), fg * pos]
    return np.stack([1 - fg] + pos_neg).astype(np.float32)


class ClassicalModel:
    """The peer called like a model: ``model(x)`` on (B, 3, H, W) images normalised as
    :func:`sparsecell.models.inputs.to_tensor` does gives ``.logits`` whose softmax is
    :func:`_heatmap`'s probabilities (their logarithm)."""

    stride = 1

    def __init__(self, settings: ClassicalSettings):
        self.settings = settings

    def eval(self):
        return self

    def to(self, device):
        return self

    def __call__(self, x):
        import torch

        from .models.detector import DetectorOutput

        rgb = np.clip(np.rint((x.detach().cpu().float().numpy() + 1.0) * 127.5), 0, 255).astype(np.uint8)
        heat = np.stack([_heatmap(im.transpose(1, 2, 0), self.settings) for im in rgb])
        return DetectorOutput(torch.from_numpy(np.log(np.maximum(heat, 1e-12))), None)


def classical_detector(settings: ClassicalSettings | None = None, index_error: float | None = None):
    """A :class:`~sparsecell.inference.detector.Detector` running the peer (engine
    ``"classical"``); ``index_error``: its validation Ki-67 index RMSE in points, where a
    settings file records one (:func:`read_index_error`)."""
    from .inference.detector import Detector

    s = settings if settings is not None else ClassicalSettings()
    return Detector(ClassicalModel(s), s.classes, s.threshold, s.eval_config(), "cpu", None, engine="classical",
                    index_error=index_error)  # fmt: skip


# --------------------------------------------------------------------------- fitting


def _candidates(samples, s: ClassicalSettings) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Per image: the peaks of the positive band-pass response (xy, response, DAB)."""
    from .inference.peaks import find_peaks

    out = []
    for smp in samples:
        r, dab = _response(smp.image, s)
        # the background channel is 1 - r, so the foreground whose peaks are found is r itself
        p = find_peaks(np.stack([1.0 - r, r]), ("cell",), 0.0, s.min_distance, "foreground")
        ij = np.rint(p.xy).astype(int)
        out.append((p.xy, p.scores, dab[ij[:, 1], ij[:, 0]] if len(ij) else np.zeros(0)))
    return out


#: Detection thresholds tried while fitting: these quantiles of the candidates' responses.
_RESPONSE_QUANTILES = np.linspace(0.0, 0.98, 50)


def _as_points(cands, classes, dab_threshold: float | None = None) -> list[Points]:
    """The candidates as scored points: one class, or two split by :func:`by_dab`."""
    pts = [Points(xy, np.zeros(len(xy), np.int64), classes, score) for xy, score, _ in cands]
    return pts if dab_threshold is None else [by_dab(p, c[2], dab_threshold) for p, c in zip(pts, cands)]


def _best(truth, preds, radius: float, thresholds) -> tuple[float, float]:
    """(best validation micro F1, its threshold) over ``thresholds``."""
    from .metrics import threshold_sweep

    thr, f1 = threshold_sweep(truth, preds, radius, sorted(set(float(t) for t in thresholds))).best()
    return f1, thr


def _response_grid(cands) -> np.ndarray:
    scores = np.concatenate([c[1] for c in cands]) if cands else np.zeros(0)
    return np.quantile(scores, _RESPONSE_QUANTILES) if len(scores) else np.zeros(1)


def fit_classical(samples: Sequence, classes: Sequence[str], radius: float, mpp: float | None = None,
                  stains: str | None = None, log=None) -> tuple[ClassicalSettings, dict]:  # fmt: skip
    """Fit the peer's settings on fully annotated validation samples.

    In two stages, each maximising validation micro F1: the nucleus size
    (:data:`NUCLEUS_UM_GRID`) and the detection threshold (50 quantiles of the
    candidates' band-pass responses) with the classes merged (detection alone); then,
    for two classes, the DAB threshold (49 quantiles of the DAB density at the detected
    nuclei), and the detection threshold again. The chosen response becomes foreground
    0.5 (``response_scale``), so the stored ``threshold`` is 0.5. Only ``samples`` are
    read.

    Returns
    -------
    settings : ClassicalSettings
    report : dict
        The validation F1 of every size tried, the chosen values, and the images used.
    """
    classes = tuple(classes)
    if not samples:
        raise ValueError("fit_classical: no validation images")
    stains = stains or ("hdab" if len(classes) == 2 else "he")
    mpp = float(mpp) if mpp else ASSUMED_MPP
    one = ("cell",)
    truth_all = [smp.points.with_classes(classes) if smp.points.classes != classes else smp.points for smp in samples]
    truth_det = [Points(t.xy, np.zeros(len(t), np.int64), one) for t in truth_all]
    base = ClassicalSettings(classes=classes, stains=stains, mpp=mpp, radius=float(radius))
    tried = {}
    best = None
    for um in NUCLEUS_UM_GRID:
        s = replace(base, nucleus_um=um)
        cands = _candidates(samples, s)
        f1, r_star = _best(truth_det, _as_points(cands, one), s.radius, _response_grid(cands))
        tried[f"{um:g}"] = round(f1, 4)
        if log:
            log(f"classical: nucleus {um:g} um ({s.nucleus_px:.1f} px): validation detection F1 {f1:.3f}")
        if best is None or f1 > best[0]:
            best = (f1, s, cands, r_star)
    f1_det, s, cands, r_star = best
    report = {"validation_images": [smp.image_id for smp in samples], "detection_f1_by_nucleus_um": tried,
              "validation_detection_f1": round(f1_det, 4)}  # fmt: skip
    if len(classes) == 2:
        # the DAB threshold on the nuclei detected at the chosen threshold, then the detection threshold again
        above = [c[1] > r_star for c in cands]
        nuclei = _as_points([(c[0][m], c[1][m], c[2][m]) for c, m in zip(cands, above)], classes)
        dabs = [c[2][m] for c, m in zip(cands, above)]
        t_dab = fit_dab_threshold(truth_all, nuclei, dabs, s.radius)[0] if sum(map(len, dabs)) else s.dab_threshold
        f1_all, r_star = _best(truth_all, _as_points(cands, classes, t_dab), s.radius, _response_grid(cands))
        s = replace(s, dab_threshold=round(t_dab, 6))
        report["validation_f1"] = round(f1_all, 4)
        agree = ki67_agreement(truth_all, [p.above(r_star) for p in _as_points(cands, classes, t_dab)])
        if agree is not None and agree.errors:  # what widens a slide's index interval
            report["validation_ki67"] = {"mae": round(agree.mae, 4), "rmse": round(agree.rmse, 4), "images": agree.n_images}
    else:
        report["validation_f1"] = round(f1_det, 4)
    # the chosen response is foreground 0.5, the detection threshold
    s = replace(s, response_scale=max(float(r_star), 1e-9), threshold=0.5)
    report["settings"] = _settings_dict(s)
    return s, report


def dab_at(image: np.ndarray, xy: np.ndarray, nucleus_px: float) -> np.ndarray:
    """The mean DAB optical density over a nucleus (a Gaussian at sigma = d / 4) at each
    of the (N, 2) x, y points of ``image`` (uint8 RGB)."""
    _, d = stain_densities(image)
    dab = _nucleus_mean(d, nucleus_px)
    if not len(xy):
        return np.zeros(0, np.float32)
    ij = np.clip(np.rint(np.asarray(xy)).astype(int), 0, [dab.shape[1] - 1, dab.shape[0] - 1])
    return dab[ij[:, 1], ij[:, 0]]


def by_dab(points: Points, dab: np.ndarray, threshold: float) -> Points:
    """``points`` (two classes) relabelled by their measured DAB density: positive (by
    name) above ``threshold``, negative at or below."""
    p = _positive_index(points.classes)
    labels = np.where(np.asarray(dab) > threshold, p, 1 - p).astype(np.int64)
    return Points(points.xy, labels, points.classes, points.scores)


def fit_dab_threshold(truth: Sequence[Points], detections: Sequence[Points], dabs: Sequence[np.ndarray],
                      radius: float) -> tuple[float, float]:  # fmt: skip
    """The DAB threshold that maximises micro F1 of ``detections`` relabelled by
    :func:`by_dab` against ``truth`` (validation images), over 49 quantiles of the DAB
    densities at the detections: (threshold, its F1)."""
    from .metrics import score_points

    allv = np.concatenate([np.asarray(v, float) for v in dabs]) if dabs else np.zeros(0)
    if not len(allv):
        return 0.0, 0.0
    best = None
    for t in np.unique(np.quantile(allv, _DAB_QUANTILES)):
        f1 = score_points(truth, [by_dab(p, v, float(t)) for p, v in zip(detections, dabs)], radius)["all"].f1
        if best is None or f1 > best[1]:
            best = (float(t), float(f1))
    return best


# --------------------------------------------------------------------------- settings files


def _settings_dict(s: ClassicalSettings) -> dict:
    d = asdict(s)
    d["classes"] = list(s.classes)
    return d


def settings_json(s: ClassicalSettings) -> str:
    """The settings as one canonical JSON string (for a record's hash)."""
    return json.dumps(_settings_dict(s), sort_keys=True)


def describe(s: ClassicalSettings) -> str:
    """One line: the stain, nucleus size and thresholds."""
    nuclear = "haematoxylin + DAB" if s.stains == "hdab" else "haematoxylin"
    pos = f", positive above DAB optical density {s.dab_threshold:.3g}" if len(s.classes) == 2 else ""
    return (f"nuclei from {nuclear} at {s.nucleus_um:g} um ({s.nucleus_px:.1f} px at {s.mpp:g} um/px), "
            f"band-pass response above {s.response_scale:.3g}{pos}")


def write_classical(path: str | Path, settings: ClassicalSettings, report: dict | None = None,
                    overwrite: bool = False) -> Path:  # fmt: skip
    """Write a settings file (JSON) that ``sparsecell predict`` takes in place of a checkpoint."""
    from .errors import SparsecellError
    from .formats.fileio import atomic_write_text

    path = Path(path)
    if path.exists() and not overwrite:
        raise SparsecellError(f"{path}: exists; choose another name or add --overwrite")
    doc = {"format": _FORMAT, "settings": _settings_dict(settings), "fit": report or {}}
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps(doc, indent=1) + "\n")
    return path


def is_classical_file(path: str | Path) -> bool:
    return Path(path).suffix.lower() == ".json"


def read_index_error(path: str | Path) -> float | None:
    """The validation Ki-67 index RMSE (points) a settings file's fit records, or None
    (call after :func:`read_classical` has checked the file)."""
    doc = json.loads(Path(path).read_text(encoding="utf-8"))
    v = (doc.get("fit") or {}).get("validation_ki67") if isinstance(doc.get("fit"), dict) else None
    v = v.get("rmse") if isinstance(v, dict) else None
    return float(v) if isinstance(v, (int, float)) and math.isfinite(v) and v >= 0 else None


def read_classical(path: str | Path) -> ClassicalSettings:
    """The settings in a file :func:`write_classical` wrote (a one-line error otherwise)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: classical settings file not found")
    if path.stat().st_size > 10_000_000:
        raise CheckpointError(f"{path}: too large for a classical settings file")
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError, OSError) as e:
        raise CheckpointError(f"{path}: not a readable JSON file ({e})") from None
    if not isinstance(doc, dict) or doc.get("format") != _FORMAT or not isinstance(doc.get("settings"), dict):
        raise CheckpointError(f"{path}: not a sparsecell classical settings file (format {_FORMAT!r})")
    known = {f.name for f in fields(ClassicalSettings)}
    raw = doc["settings"]
    unknown = sorted(set(raw) - known)
    if unknown:
        raise CheckpointError(f"{path}: unknown settings {unknown}")
    try:
        if "classes" in raw:
            raw = {**raw, "classes": tuple(str(c) for c in raw["classes"])}
        return ClassicalSettings(**raw)
    except (TypeError, ValueError) as e:
        raise CheckpointError(f"{path}: {e}") from None
