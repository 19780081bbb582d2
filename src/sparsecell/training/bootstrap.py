"""Bootstrapping from the classical peer: its detections as extra training labels.

With ``data.bootstrap=classical`` the training-free peer (:mod:`sparsecell.classical`)
is fitted on the validation images (fully annotated, as for every other choice), run on
every training image, and each of its detections that lies farther than the matching
radius from every click (and outside the regions the user annotated completely) joins
the clicks as a label of the peer's class. The clicks stay as they are: where the user
clicked, the user's class wins. The loss then sees dense, noisy labels that the clicks
correct, instead of a few hundred clicks alone.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from ..errors import ConfigError
from ..formats.points import Points
from .targets import in_boxes

__all__ = ["bootstrap_points"]


def bootstrap_points(train: Sequence, clicks: Sequence[Points], val: Sequence, classes: Sequence[str], radius: float,
                     mpp: float | None, regions: Sequence | None = None, log=None) -> tuple[list[Points], dict]:  # fmt: skip
    """The clicks of each training sample plus the peer's detections away from them.

    Returns the points per training image and a record (the peer's settings, its
    validation F1, and how many labels it added).
    """
    from ..classical import classical_detector, describe, fit_classical

    classes = tuple(classes)
    if len(classes) not in (1, 2):
        raise ConfigError(f"data.bootstrap=classical: the peer finds one class or two (positive, negative), "
                          f"not {list(classes)}")  # fmt: skip
    if not val:
        raise ConfigError("data.bootstrap=classical: the peer is fitted on the validation images, and there are none")
    settings, report = fit_classical(val, classes, radius, mpp=mpp)
    det = classical_detector(settings)
    out, added = [], 0
    for k, (s, c) in enumerate(zip(train, clicks, strict=True)):
        found = det.predict(s.image)
        found = Points(found.xy, found.labels, classes)
        keep = np.ones(len(found), bool)
        if len(c) and len(found):
            d2 = ((found.xy[:, None, :] - c.xy[None, :, :]) ** 2).sum(-1).min(1)
            keep &= d2 > radius**2
        if regions is not None and len(found):
            keep &= ~in_boxes(found, regions[k])
        extra = found.subset(keep)
        added += len(extra)
        out.append(Points.concat([Points(c.xy, c.labels, classes), extra]))
    record = {"settings": describe(settings), "validation_f1": report["validation_f1"], "added": added,
              "clicks": int(sum(len(c) for c in clicks))}  # fmt: skip
    if log:
        log(f"bootstrap: the classical peer (validation F1 {report['validation_f1']:.3f}; {describe(settings)}) "
            f"added {added} labels to the {record['clicks']} clicks")
    return out, record
