"""Where the tissue is: a mask on a low-resolution view of a slide, so blank glass is
never run through the model.

The rule: a pixel is tissue when its HSV saturation is above a threshold (stained
tissue is coloured, glass and background are grey or white). The threshold is Otsu's
on the saturation, held between :data:`MIN_SATURATION` and :data:`MAX_SATURATION`: the
floor keeps glass noise out when Otsu splits glass from glass, the ceiling keeps faint
tissue in when the view holds tissue only (Otsu would then split tissue in two). Small
specks are removed, then the mask is dilated by a margin so cells at the tissue's edge
keep their tile.
"""

from __future__ import annotations

import numpy as np

__all__ = ["tissue_mask", "MIN_SATURATION", "MAX_SATURATION", "TISSUE_MPP"]

#: The saturation threshold never goes below this (glass, dust and JPEG noise stay out)...
MIN_SATURATION = 0.05
#: ...nor above this (faint haematoxylin stays in).
MAX_SATURATION = 0.12
#: The resolution the mask is computed at, um per px (a 1-gigapixel slide at 0.25 um/px
#: gives about 1000 x 1000 px).
TISSUE_MPP = 8.0


def tissue_mask(rgb: np.ndarray, min_area: int = 16, margin: int = 2) -> tuple[np.ndarray, float]:
    """Tissue mask of a low-resolution RGB view.

    Parameters
    ----------
    rgb : array (H, W, 3) uint8
    min_area : int
        Connected specks smaller than this many px are dropped.
    margin : int
        The mask is dilated by this many px.

    Returns
    -------
    mask : array (H, W) bool
    threshold : float
        The saturation threshold used.

    Examples
    --------
    >>> img = np.full((40, 40, 3), 245, np.uint8); img[:, :20] = (150, 90, 160)
    >>> m, t = tissue_mask(img, margin=0)
    >>> bool(m[:, :20].all()), bool(m[:, 20:].any())
    (True, False)
    """
    from scipy import ndimage
    from skimage.color import rgb2hsv
    from skimage.filters import threshold_otsu

    rgb = np.asarray(rgb)
    if rgb.ndim != 3 or rgb.shape[-1] != 3:
        raise ValueError(f"tissue_mask: expected an (H, W, 3) image, got shape {rgb.shape}")
    sat = rgb2hsv(rgb)[..., 1]
    t = threshold_otsu(sat) if float(sat.max() - sat.min()) > 1e-3 else MIN_SATURATION
    t = float(min(max(t, MIN_SATURATION), MAX_SATURATION))
    mask = sat > t
    mask = ndimage.binary_closing(mask, np.ones((3, 3), bool), border_value=0) | mask
    lab, n = ndimage.label(mask)
    if n:
        sizes = np.bincount(lab.ravel())
        keep = sizes >= min_area
        keep[0] = False
        mask = keep[lab]
    if margin > 0:
        mask = ndimage.binary_dilation(mask, np.ones((2 * margin + 1, 2 * margin + 1), bool))
    return mask, t
