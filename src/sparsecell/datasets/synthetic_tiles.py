"""Procedural Ki-67 (haematoxylin + DAB) histology tiles with exact point ground truth.

This is sparsecell's embedded default data: it needs no download and lets a small
detector be trained and tested in minutes on a CPU. Each tile is drawn from a seed,
deterministically, with numpy and scipy only.

What a tile holds
-----------------
* **Tumour nuclei** (annotated), packed in nests: round-to-oval with irregular
  outlines (low-order harmonics of the radius), a vesicular chromatin texture, a
  slightly darker rim and the odd nucleolus. *Positive* (Ki-67+) nuclei are brown
  (DAB over a little haematoxylin), *negative* ones blue-violet (haematoxylin). Stain
  intensity varies from nucleus to nucleus; some positives are only weakly brown.
* **Distractors** (never annotated): lymphocytes (small, round, dense, very dark
  haematoxylin), stromal fibroblast nuclei (curved spindles, aspect ratio 3 to 4,
  aligned with the fibres) and a few faint brown DAB smudges of background staining.
* **Background**: pale stroma with a faint lilac-pink counterstain, wavy collagen
  strands (the level lines of a smooth anisotropic random field, like wood grain),
  large-scale stain unevenness, the odd pale gap in the section, and the nests sitting
  on a slightly darker cytoplasm.

The image is formed with the Beer-Lambert law from per-pixel optical densities of
three stains, ``I = 255 * exp(-(OD_H * h + OD_DAB * d + OD_E * e))``, with stain
vectors near Ruifrok & Johnston's (2001) H-DAB ones (jittered per tile), then
blurred (optics) and given additive Gaussian noise (sensor).

Points are the nucleus centres (float, (x, y) = (column, row), 0-based), every one
inside the image; nuclei may be cut by the border.

Examples
--------
>>> img, pts = synthetic_tile(0)
>>> img.shape, img.dtype, pts.classes
((256, 256, 3), dtype('uint8'), ('positive', 'negative'))
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from scipy import fft as sfft
from scipy import ndimage as ndi

from ..formats.points import Points

__all__ = [
    "TUMOUR_CLASSES",
    "SyntheticConfig",
    "synthetic_tile",
    "synthetic_dataset",
    "tile_seed",
    "STAIN_VECTORS",
]

TUMOUR_CLASSES = ("positive", "negative")

# Ruifrok & Johnston (2001), "Quantification of histochemical staining by color
# deconvolution": optical-density vectors (R, G, B) of haematoxylin and DAB as
# measured for H-DAB, and eosin's from their H&E set. Eosin here plays the faint
# pink counterstain / background of the section.
STAIN_VECTORS = {
    "hematoxylin": (0.650, 0.704, 0.286),
    "dab": (0.268, 0.570, 0.776),
    "eosin": (0.072, 0.990, 0.105),
}

_AREA_REF = 256.0 * 256.0  # counts in SyntheticConfig are per 256 x 256 px


@dataclass(frozen=True)
class SyntheticConfig:
    """Parameters of :func:`synthetic_tile`.

    Parameters
    ----------
    size : int
        Tile side in pixels (tiles are square).
    nucleus_radius : float
        Mean tumour nucleus radius in pixels (about 4.5 px at 20x).
    n_clusters : (int, int)
        Range (inclusive) of tumour nests per 256 x 256 px; scaled with the tile area.
    cells_per_cluster : (int, int)
        Range (inclusive) of tumour cells tried per nest (a crowded nest or one cut by
        the border may hold fewer).
    positive_fraction : (float, float)
        Range of the tile's Ki-67 index (fraction of positive tumour nuclei); each
        nest varies a little around the tile's value.
    lymphocytes : (int, int)
        Range of lymphocytes per 256 x 256 px (scaled with area).
    stromal : (int, int)
        Range of stromal spindle nuclei per 256 x 256 px (scaled with area).
    stain_jitter : float
        Per-tile perturbation of the stain vectors and stain strengths (0 = none).
    blur_sigma : float
        Gaussian blur of the RGB image, in pixels (0 = none).
    noise_std : float
        Standard deviation of the additive noise, in 0..255 units.
    """

    size: int = 256
    nucleus_radius: float = 4.5
    n_clusters: tuple[int, int] = (2, 4)
    cells_per_cluster: tuple[int, int] = (15, 35)
    positive_fraction: tuple[float, float] = (0.2, 0.6)
    lymphocytes: tuple[int, int] = (10, 30)
    stromal: tuple[int, int] = (10, 25)
    stain_jitter: float = 0.1
    blur_sigma: float = 0.8
    noise_std: float = 3.0

    def __post_init__(self) -> None:
        if int(self.size) != self.size or self.size < 16:
            raise ValueError(f"SyntheticConfig: size must be an integer >= 16, got {self.size!r}")
        if not 1.0 <= self.nucleus_radius <= self.size / 4:
            raise ValueError(f"SyntheticConfig: nucleus_radius must lie in [1, size/4], got {self.nucleus_radius}")
        for name in ("n_clusters", "cells_per_cluster", "positive_fraction", "lymphocytes", "stromal"):
            lo, hi = getattr(self, name)
            if lo < 0 or hi < lo:
                raise ValueError(f"SyntheticConfig: {name} must be a range (lo, hi) with 0 <= lo <= hi, got {(lo, hi)}")
        if self.positive_fraction[1] > 1:
            raise ValueError(f"SyntheticConfig: positive_fraction must lie in [0, 1], got {self.positive_fraction}")
        for name in ("stain_jitter", "blur_sigma", "noise_std"):
            if getattr(self, name) < 0:
                raise ValueError(f"SyntheticConfig: {name} must be >= 0, got {getattr(self, name)}")


# ---------------------------------------------------------------------------------------
# Random fields (spectral synthesis: white noise shaped in the Fourier domain)
# ---------------------------------------------------------------------------------------
@lru_cache(maxsize=16)
def _freqs(shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Frequencies (cycles / px) of an ``rfft2`` of ``shape``: fy (H, 1), fx (1, W//2+1)."""
    h, w = shape
    fy = np.fft.fftfreq(h).astype(np.float32)[:, None]
    fx = np.fft.rfftfreq(w).astype(np.float32)[None, :]
    fy.setflags(write=False)
    fx.setflags(write=False)
    return fy, fx


@lru_cache(maxsize=64)
def _gauss_kernel(shape: tuple[int, int], s_along: float, s_across: float = -1.0, angle: float = 0.0) -> np.ndarray:
    """Fourier transform (H, W//2+1) float32 of a unit-mass Gaussian of standard deviation
    ``s_along`` px along the direction ``angle`` (radians from the x axis) and
    ``s_across`` px across it (isotropic when ``s_across < 0``). Cached per shape."""
    fy, fx = _freqs(shape)
    if s_across < 0:
        k = np.exp(-2.0 * math.pi**2 * s_along**2 * (fy * fy + fx * fx))
    else:
        c, s = math.cos(angle), math.sin(angle)
        f_along = fx * c + fy * s
        f_across = fy * c - fx * s
        k = np.exp(-2.0 * math.pi**2 * (s_along**2 * f_along * f_along + s_across**2 * f_across * f_across))
    k = k.astype(np.float32)
    k.setflags(write=False)
    return k


def _white_spectrum(rng: np.random.Generator, shape: tuple[int, int], fmax: float = 0.5) -> np.ndarray:
    """Complex white noise (H, W//2+1) complex64, zero above ``fmax`` cycles/px.

    Only the frequencies below ``fmax`` are drawn: a smooth field needs just those,
    which keeps large-scale fields nearly free.
    """
    h, w = shape
    ky = min(h // 2, int(math.ceil(fmax * h)))
    kx = min(w // 2, int(math.ceil(fmax * w)))
    z = rng.standard_normal((2, 2 * ky + 1 if ky < h // 2 else h, kx + 1), dtype=np.float32)
    if ky >= h // 2:
        spec = np.zeros((h, w // 2 + 1), np.complex64)
        spec[:, : kx + 1] = z[0] + 1j * z[1]
        return spec
    spec = np.zeros((h, w // 2 + 1), np.complex64)
    spec[: ky + 1, : kx + 1] = z[0, : ky + 1] + 1j * z[1, : ky + 1]
    spec[h - ky :, : kx + 1] = z[0, ky + 1 :] + 1j * z[1, ky + 1 :]
    return spec


def _normalise(field: np.ndarray) -> np.ndarray:
    """Zero mean, unit standard deviation (in place)."""
    field -= field.mean()
    field *= 1.0 / (field.std() + 1e-12)
    return field


def _smooth_noise(rng: np.random.Generator, shape: tuple[int, int], sigma: float) -> np.ndarray:
    """Zero-mean, unit-std periodic Gaussian random field (H, W) float32: white noise
    convolved with a Gaussian of ``sigma`` px."""
    fmax = min(0.5, 0.6 / sigma)  # the kernel is below 1e-3 beyond
    spec = _white_spectrum(rng, shape, fmax)
    spec *= _gauss_kernel(shape, float(sigma))
    return _normalise(sfft.irfft2(spec, s=shape))


def _fibre_texture(rng: np.random.Generator, shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Stromal collagen: bundles of thin wavy strands, like wood grain.

    The strands are the level lines ``flow = k * period`` of a smooth random field
    ``flow`` (H, W), drawn as the sharpened peaks of ``cos(2 pi flow / period)``.
    ``flow`` blends two anisotropic fields (long along two per-tile directions) with a
    smooth mask, so the strands run roughly parallel in each region and curve between
    regions. Returns (fibres (H, W) float32 in [0, 1], flow (H, W)); the fibres run
    perpendicular to the gradient of ``flow``.
    """
    ang = rng.uniform(0.0, math.pi) + np.array([0.0, rng.uniform(math.pi / 4, 3 * math.pi / 4)])
    flow = np.zeros(shape, np.float32)
    mix = _smoothstep(_smooth_noise(rng, shape, 35.0), -0.6, 0.6)  # (H, W) which direction where
    for k in range(2):
        spec = _white_spectrum(rng, shape, 0.6 / 4.0)
        spec *= _gauss_kernel(shape, 16.0, 4.0, float(ang[k]))
        part = _normalise(sfft.irfft2(spec, s=shape))
        flow += part * (mix if k == 0 else 1.0 - mix)
    c = np.cos(flow * np.float32(2 * math.pi / 0.9))
    c += 1.0
    c *= 0.5
    c *= c
    c *= c
    c *= c  # ((1 + cos) / 2) ** 8: thin strands
    # fade the strands where flow is flat (its extrema), where level lines would close
    # into small rings and thicken
    gy, gx = np.gradient(flow)
    g = gx * gx + gy * gy
    c *= _smoothstep(g, 0.1 * float(g.mean()), 0.6 * float(g.mean()))
    return c, flow


def _gaussian_blur_periodic(img: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian blur (H, W) via FFT, periodic (the caller keeps content away from the
    edges by more than 3 sigma so nothing wraps around visibly)."""
    shape = img.shape
    return sfft.irfft2(sfft.rfft2(img) * _gauss_kernel(shape, float(sigma)), s=shape)


# ---------------------------------------------------------------------------------------
# Small helpers
# ---------------------------------------------------------------------------------------
def _unit(v) -> np.ndarray:
    v = np.asarray(v, np.float64)
    return v / np.linalg.norm(v)


def _smoothstep(x: np.ndarray, lo: float, hi: float) -> np.ndarray:
    t = np.minimum(np.maximum((x - lo) * (1.0 / (hi - lo)), 0.0), 1.0)
    return t * t * (3.0 - 2.0 * t)


def _scaled_count(rng: np.random.Generator, lo_hi: tuple[int, int], area_factor: float) -> int:
    """A count drawn from ``lo_hi`` (per 256 x 256 px), scaled to the tile area with
    stochastic rounding so small tiles keep the right density on average."""
    k = rng.integers(lo_hi[0], lo_hi[1] + 1) * area_factor
    return int(math.floor(k + rng.random()))


def _jitter_stains(rng: np.random.Generator, jitter: float) -> np.ndarray:
    """The three stain vectors as rows (3, 3), each perturbed and re-normalised."""
    rows = []
    for name in ("hematoxylin", "dab", "eosin"):
        v = np.asarray(STAIN_VECTORS[name]) + rng.normal(0.0, 0.3 * jitter, 3)
        rows.append(_unit(np.clip(v, 0.02, None)))
    return np.stack(rows)  # (3 stains, 3 channels)


# ---------------------------------------------------------------------------------------
# Placement (rejection of centres too close to the ones already placed)
# ---------------------------------------------------------------------------------------
class _Placer:
    """Centres and exclusion radii of every nucleus placed so far."""

    def __init__(self) -> None:
        self.xy = np.empty((64, 2))  # (cap, 2)
        self.r = np.empty(64)  # (cap,)
        self.n = 0

    def free(self, x: float, y: float, r: float, factor: float = 0.8) -> bool:
        """True when (x, y) is at least ``factor * (r + r_i)`` from every placed centre."""
        n = self.n
        if n == 0:
            return True
        d2 = (self.xy[:n, 0] - x) ** 2 + (self.xy[:n, 1] - y) ** 2
        lim = factor * (self.r[:n] + r)
        return bool((d2 >= lim * lim).all())

    def add(self, x: float, y: float, r: float) -> None:
        if self.n == len(self.r):
            self.xy = np.concatenate([self.xy, np.empty_like(self.xy)])
            self.r = np.concatenate([self.r, np.empty_like(self.r)])
        self.xy[self.n] = (x, y)
        self.r[self.n] = r
        self.n += 1


# ---------------------------------------------------------------------------------------
# Drawing nuclei into the optical-density maps, all of one kind at once
# ---------------------------------------------------------------------------------------
def _window_half(a_max: float, harmonics: float, bend_max: float) -> int:
    return int(math.ceil(a_max * (1.0 + 3.0 * harmonics + bend_max) + 2.5))


def _draw_nuclei(
    od: np.ndarray,
    tex: np.ndarray,
    pad: int,
    xy: np.ndarray,
    a: np.ndarray,
    b: np.ndarray,
    phi: np.ndarray,
    h_amp: np.ndarray,
    d_amp: np.ndarray,
    rng: np.random.Generator,
    *,
    harmonics: float,
    bend: np.ndarray | None = None,
    rim: float = 0.3,
    texture: float = 0.3,
    nucleoli: int = 0,
    dab_rim: float = 0.1,
    dab_texture: float = 0.0,
) -> None:
    """Add N nuclei to ``od`` (3, Hp, Wp) = (haematoxylin, DAB, eosin), a canvas padded
    by ``pad`` px on every side, each in its own (w, w) window.

    Nucleus i is an ellipse centred on ``xy[i]`` (image coordinates) with semi-axes
    ``a[i]`` (along ``phi[i]``) and ``b[i]``, its radius modulated by harmonics 2..4 of
    random phase and relative amplitude ~``harmonics`` and, for spindles, bent by
    ``bend[i]``. Inside, the haematoxylin density is
    ``h_amp * (0.75 + rim * edge + texture * tex + nucleoli)`` and the DAB density
    ``d_amp * (0.8 + dab_rim * edge + dab_texture * tex)``, ``edge`` peaking just inside
    the outline (nuclear membrane) and ``tex`` (Hp, Wp) being the chromatin field.
    """
    n = len(xy)
    if n == 0:
        return
    bend_max = 0.0 if bend is None else float(np.abs(bend).max())
    half = _window_half(float(a.max()), harmonics, bend_max)
    if half + 1 > pad:
        raise AssertionError("canvas padding too small for the nucleus window")
    w = 2 * half + 2
    f32 = np.float32
    ix = np.floor(xy[:, 0]).astype(np.int64) + pad - half  # (N,) window origins on the canvas
    iy = np.floor(xy[:, 1]).astype(np.int64) + pad - half
    ar = np.arange(w, dtype=f32)
    dx = (ar[None, None, :] + (ix - pad - xy[:, 0]).astype(f32)[:, None, None])  # (N, 1, w)
    dy = (ar[None, :, None] + (iy - pad - xy[:, 1]).astype(f32)[:, None, None])  # (N, w, 1)
    c = np.cos(phi).astype(f32)[:, None, None]
    s = np.sin(phi).astype(f32)[:, None, None]
    a3 = a.astype(f32)[:, None, None]
    b3 = b.astype(f32)[:, None, None]
    u = dx * c + dy * s  # (N, w, w) along the long axis
    v = dy * c - dx * s
    if bend is not None:
        v = v - bend.astype(f32)[:, None, None] * u * u / a3
    un, vn = u / a3, v / b3
    rho = np.sqrt(un * un + vn * vn) + f32(1e-6)  # normalised radius, 1 on the ellipse
    z = (un + 1j * vn) / rho  # (N, w, w) complex64, exp(i theta)
    coef = (rng.normal(0.0, harmonics, (n, 3)) * np.exp(2j * math.pi * rng.random((n, 3)))).astype(np.complex64)
    z2 = z * z
    # 1 + Re(c2 z^2 + c3 z^3 + c4 z^4), Horner
    R = 1.0 + (z2 * (coef[:, 0, None, None] + z * (coef[:, 1, None, None] + z * coef[:, 2, None, None]))).real
    dist = (R - rho) * np.minimum(a3, b3)  # ~ signed distance to the outline in px, > 0 inside
    mask = _smoothstep(dist, -0.6, 0.6)  # (N, w, w) anti-aliased silhouette
    edge = np.exp(-0.5 * ((dist - 0.7) * f32(1 / 0.9)) ** 2)  # membrane / marginated chromatin
    win = np.lib.stride_tricks.sliding_window_view(tex, (w, w))
    t = win[iy, ix]  # (N, w, w) chromatin texture under each window
    prof = mask * np.maximum(0.75 + rim * edge + texture * t, 0.2)  # (N, w, w)
    if nucleoli:
        k = rng.integers(0, nucleoli + 1, n)  # (N,) nucleoli per nucleus
        for j in range(nucleoli):
            rr = rng.uniform(0.0, 0.45, n)
            aa = rng.uniform(0.0, 2 * math.pi, n)
            pu, pv = rr * np.cos(aa) * a, rr * np.sin(aa) * b  # in the nucleus frame
            ox = (pu * np.cos(phi) - pv * np.sin(phi)).astype(f32)[:, None, None]
            oy = (pu * np.sin(phi) + pv * np.cos(phi)).astype(f32)[:, None, None]
            on = (j < k).astype(f32)[:, None, None]
            prof += 0.45 * on * mask * np.exp(-((dx - ox) ** 2 + (dy - oy) ** 2) * f32(1 / (2 * 0.7**2)))
    hp = h_amp.astype(f32)[:, None, None] * prof
    dp = None
    if np.any(d_amp):
        dp = d_amp.astype(f32)[:, None, None] * mask * np.maximum(0.8 + dab_rim * edge + dab_texture * t, 0.15)
    for i in range(n):
        sl = (slice(iy[i], iy[i] + w), slice(ix[i], ix[i] + w))
        od[0][sl] += hp[i]
        if dp is not None and d_amp[i]:
            od[1][sl] += dp[i]


# ---------------------------------------------------------------------------------------
# The tile
# ---------------------------------------------------------------------------------------
def synthetic_tile(seed: int, config: SyntheticConfig = SyntheticConfig()) -> tuple[np.ndarray, Points]:
    """One synthetic Ki-67 tile and its tumour-nucleus centres.

    Parameters
    ----------
    seed : int
        Seed of ``np.random.default_rng``; the same seed and config give the same tile.
    config : SyntheticConfig
        Tile size, densities and appearance.

    Returns
    -------
    image : array (H, W, 3) of uint8
        RGB image, H = W = ``config.size``.
    points : Points
        Centres of the tumour nuclei (x = column, y = row, 0-based, all inside the
        image), classes :data:`TUMOUR_CLASSES` (0 = positive, 1 = negative).
        Lymphocytes and stromal nuclei are not annotated.
    """
    cfg = config
    rng = np.random.default_rng(seed)
    H = W = int(cfg.size)
    area = H * W / _AREA_REF
    r0 = float(cfg.nucleus_radius)
    # Everything is drawn on a canvas padded by P px (so nucleus windows never need
    # clipping and the blur sees what lies beyond the border), cropped at the end.
    P = _window_half(2.0 * r0 * 1.2, 0.07, 0.4) + 2
    Hp = Wp = sfft.next_fast_len(H + 2 * P, real=True)  # FFT-friendly; the extra goes right/bottom
    canvas = (Hp, Wp)
    od = np.zeros((3, Hp, Wp), np.float32)  # (stain, Hp, Wp): haematoxylin, DAB, eosin

    # ---- per-tile stain appearance and random fields ---------------------------------------
    stains = _jitter_stains(rng, cfg.stain_jitter)  # (3, 3)
    strength = np.exp(rng.normal(0.0, cfg.stain_jitter, 3))  # (3,) per-stain scale
    chromatin = _smooth_noise(rng, canvas, 0.8)  # (Hp, Wp) fine nuclear texture
    cloud = _smooth_noise(rng, canvas, 30.0)  # (Hp, Wp) large-scale stain unevenness
    mid = _smooth_noise(rng, canvas, 6.0)  # (Hp, Wp) medium scale
    gapfield = _smooth_noise(rng, canvas, 16.0)  # (Hp, Wp) where the section has holes

    def at(field: np.ndarray, x: float, y: float) -> float:
        return float(field[int(y) + P, int(x) + P])

    # ---- tumour nests ----------------------------------------------------------------------------
    placer = _Placer()
    n_nests = _scaled_count(rng, cfg.n_clusters, area)
    if cfg.n_clusters[1] > 0:
        n_nests = max(1, n_nests)  # small tiles keep at least one nest
    k_index = rng.uniform(*cfg.positive_fraction)
    spacing = 2.0 * r0  # typical centre-to-centre distance in a nest
    tum_xy: list[tuple[float, float]] = []
    tum_lab: list[int] = []
    tum_r: list[float] = []
    margin = 0.08 * H
    for _ in range(n_nests):
        ncell = int(rng.integers(cfg.cells_per_cluster[0], cfg.cells_per_cluster[1] + 1))
        ccx, ccy = rng.uniform(margin, W - margin), rng.uniform(margin, H - margin)
        elong = rng.uniform(1.0, 2.0)
        # a cohesive nest: cells fill an ellipse with a lobed outline, of area ~ ncell
        # times what random packing at the exclusion distance needs, plus a few stragglers
        semi = math.sqrt(ncell * 4.6 * r0**2 / math.pi)  # sqrt(A * B)
        A, B = semi * math.sqrt(elong), semi / math.sqrt(elong)
        ang = rng.uniform(0.0, math.pi)
        ca, sa = math.cos(ang), math.sin(ang)
        lobes = rng.normal(0.0, 0.12, 2) * np.exp(2j * math.pi * rng.random(2))  # harmonics 2, 3
        p_nest = float(np.clip(k_index + rng.normal(0.0, 0.08), 0.0, 1.0))
        m = 12 * ncell
        th = rng.uniform(0.0, 2 * math.pi, m)  # (M,)
        zz = np.exp(1j * th)
        rr = np.sqrt(rng.random(m)) * (1.0 + (lobes[0] * zz**2 + lobes[1] * zz**3).real)
        rr = np.where(rng.random(m) < 0.08, 1.0 + np.abs(rng.normal(0.0, 0.35, m)), rr)  # stragglers
        cu, cv = rr * np.cos(th) * A, rr * np.sin(th) * B  # (M,) in the nest frame
        cx = ccx + cu * ca - cv * sa  # (M,)
        cy = ccy + cu * sa + cv * ca
        rad = r0 * np.exp(np.clip(rng.normal(0.0, 0.13, m), -0.35, 0.35))  # (M,)
        pos = rng.random(m) < p_nest  # (M,)
        ok = (cx >= 0) & (cx <= W - 1) & (cy >= 0) & (cy <= H - 1)
        placed = 0
        for j in np.flatnonzero(ok):
            if placed >= ncell:
                break
            x, y, r = float(cx[j]), float(cy[j]), float(rad[j])
            if not placer.free(x, y, r):
                continue
            placer.add(x, y, r)
            placed += 1
            tum_xy.append((x, y))
            tum_lab.append(0 if pos[j] else 1)
            tum_r.append(r)
    txy = np.asarray(tum_xy, np.float64).reshape(-1, 2)  # (N, 2)
    tlab = np.asarray(tum_lab, np.int64)  # (N,)

    # ---- cytoplasm of the nests: a smoothed density of the tumour centres ----------------------
    dens = np.zeros(canvas, np.float32)
    if len(txy):
        np.add.at(dens, ((txy[:, 1] + P).astype(int), (txy[:, 0] + P).astype(int)), 1.0)
    dens = _gaussian_blur_periodic(dens, 1.6 * r0) * (spacing**2)  # ~1 inside a packed nest
    cyto = _smoothstep(dens * (1.0 + 0.2 * mid), 0.22, 0.6)  # (Hp, Wp) in [0, 1]

    # ---- background: stroma fibres, counterstain, gaps, cytoplasm ------------------------------
    fibres, flow = _fibre_texture(rng, canvas)  # (Hp, Wp) each
    fibres *= 0.6 + 0.4 * _smoothstep(cloud, -1.0, 1.0)  # patchy
    gaps = _smoothstep(gapfield, 1.7, 2.4) * (1.0 - cyto)  # (Hp, Wp) pale holes in the section
    tissue = (1.0 - 0.9 * gaps) * (1.0 + 0.2 * cloud)  # (Hp, Wp) section density
    h_bg, e_bg = rng.uniform(0.05, 0.1), rng.uniform(0.015, 0.04)
    f_h, f_e = rng.uniform(0.06, 0.14), rng.uniform(0.04, 0.1)  # fibre densities
    od[0] += tissue * (h_bg * (1.0 + 0.15 * mid) + f_h * fibres)
    od[2] += tissue * (e_bg * (1.0 + 0.15 * mid) + f_e * fibres)
    od[1] += tissue * rng.uniform(0.0, 0.025)  # faint diffuse DAB background
    od[0] += cyto * (rng.uniform(0.12, 0.2) * (1.0 + 0.15 * mid))
    od[2] += cyto * (rng.uniform(0.04, 0.08) * (1.0 + 0.15 * mid))
    od[1] += cyto * rng.uniform(0.0, 0.04)  # weak non-specific DAB in the cytoplasm
    # a few faint DAB smudges (background staining), so brown alone is not the label
    for _ in range(_scaled_count(rng, (2, 5), area)):
        sx, sy = rng.uniform(0, W) + P, rng.uniform(0, H) + P
        sig = rng.uniform(3.0, 9.0)
        hw = int(3 * sig)
        x0, x1 = max(int(sx) - hw, 0), min(int(sx) + hw + 1, Wp)
        y0, y1 = max(int(sy) - hw, 0), min(int(sy) + hw + 1, Hp)
        gx = np.arange(x0, x1, dtype=np.float32)[None, :] - sx
        gy = np.arange(y0, y1, dtype=np.float32)[:, None] - sy
        blob = np.exp(-(gx * gx + gy * gy) / (2 * sig**2))
        od[1, y0:y1, x0:x1] += rng.uniform(0.06, 0.2) * blob * (1.0 + 0.5 * mid[y0:y1, x0:x1])

    # ---- tumour nuclei -----------------------------------------------------------------------------
    n = len(txy)
    if n:
        rad = np.asarray(tum_r)
        ar = rng.uniform(1.0, 1.45, n)
        positive = tlab == 0
        h_amp = np.where(positive, rng.uniform(0.15, 0.4, n), rng.uniform(0.75, 1.4, n))
        d_amp = np.where(positive, rng.uniform(0.5, 2.0, n) ** 1.2, 0.0)
        _draw_nuclei(
            od, chromatin, P, txy, rad * np.sqrt(ar), rad / np.sqrt(ar), rng.uniform(0, math.pi, n),
            h_amp, d_amp, rng, harmonics=0.07, rim=0.25, texture=0.3, nucleoli=2,
            dab_rim=0.1, dab_texture=0.4,
        )  # fmt: skip

    # ---- lymphocytes: mostly in the stroma, a few infiltrating the nests -------------------------
    n_lym = _scaled_count(rng, cfg.lymphocytes, area)
    lym: list[tuple[float, float, float]] = []
    for _ in range(n_lym * 20):
        if len(lym) >= n_lym:
            break
        if lym and rng.random() < 0.35:  # small aggregates
            px, py, _r = lym[int(rng.integers(len(lym)))]
            x, y = px + rng.normal(0, 1.5 * r0), py + rng.normal(0, 1.5 * r0)
        else:
            x, y = rng.uniform(0, W), rng.uniform(0, H)
        if not (0 <= x < W and 0 <= y < H):
            continue
        if rng.random() < 0.85 * at(cyto, x, y) or rng.random() < at(gaps, x, y):
            continue
        r = r0 * rng.uniform(0.52, 0.68)
        if not placer.free(x, y, r, 0.9):
            continue
        placer.add(x, y, r)
        lym.append((x, y, r))
    if lym:
        L = np.asarray(lym)  # (n, 3) x, y, r
        m = len(L)
        ar = rng.uniform(1.0, 1.15, m)
        _draw_nuclei(
            od, chromatin, P, L[:, :2], L[:, 2] * np.sqrt(ar), L[:, 2] / np.sqrt(ar), rng.uniform(0, math.pi, m),
            rng.uniform(1.5, 2.3, m), np.zeros(m), rng, harmonics=0.03, rim=0.1, texture=0.12,
        )  # fmt: skip

    # ---- stromal spindle nuclei: stroma only, along the fibres ------------------------------------
    n_str = _scaled_count(rng, cfg.stromal, area)
    spin: list[tuple[float, float, float, float]] = []
    for _ in range(n_str * 20):
        if len(spin) >= n_str:
            break
        x, y = rng.uniform(0, W), rng.uniform(0, H)
        if at(cyto, x, y) > 0.15 or at(gaps, x, y) > 0.3:
            continue
        a = r0 * rng.uniform(1.45, 2.0)
        if not placer.free(x, y, 0.55 * a, 0.8):
            continue
        placer.add(x, y, 0.55 * a)
        iy, ix = int(y) + P, int(x) + P  # the fibres run perpendicular to grad(flow)
        along = math.atan2(flow[iy + 1, ix] - flow[iy - 1, ix], flow[iy, ix + 1] - flow[iy, ix - 1]) + math.pi / 2
        spin.append((x, y, a, along))
    if spin:
        S = np.asarray(spin)  # (n, 4) x, y, a, orientation
        m = len(S)
        a = S[:, 2]
        _draw_nuclei(
            od, chromatin, P, S[:, :2], a, a / rng.uniform(3.0, 4.0, m), S[:, 3] + rng.normal(0, 0.2, m),
            rng.uniform(0.8, 1.4, m), np.zeros(m), rng, harmonics=0.03,
            bend=np.clip(rng.normal(0, 0.12, m), -0.35, 0.35), rim=0.15, texture=0.2,
        )  # fmt: skip

    # ---- Beer-Lambert, optics, sensor ---------------------------------------------------------------
    m = min(P, int(math.ceil(3 * cfg.blur_sigma)) + 1)  # margin the blur needs
    od = od[:, P - m : P + H + m, P - m : P + W + m] * strength.astype(np.float32)[:, None, None]
    st = stains.astype(np.float32)
    rgb = np.empty((3, H + 2 * m, W + 2 * m), np.float32)  # (channel, H', W')
    for ch in range(3):  # optical density per channel, then transmitted fraction
        np.exp(-(od[0] * st[0, ch] + od[1] * st[1, ch] + od[2] * st[2, ch]), out=rgb[ch])
    if cfg.blur_sigma > 0:
        rgb = ndi.gaussian_filter(rgb, (0, cfg.blur_sigma, cfg.blur_sigma), truncate=3.0)
    rgb = rgb[:, m : m + H, m : m + W] * np.float32(255.0 * rng.uniform(0.95, 1.0))  # (3, H, W), illumination
    if cfg.noise_std > 0:
        rgb += np.float32(cfg.noise_std) * rng.standard_normal(rgb.shape, dtype=np.float32)
    np.rint(rgb, out=rgb)
    np.clip(rgb, 0, 255, out=rgb)
    image = np.ascontiguousarray(rgb.astype(np.uint8).transpose(1, 2, 0))  # (H, W, 3)
    return image, Points(txy, tlab, TUMOUR_CLASSES)


def tile_seed(seed: int, i: int) -> int:
    """The seed of tile ``i`` of ``synthetic_dataset(n, seed)``."""
    return int(np.random.SeedSequence([int(seed), int(i)]).generate_state(1, np.uint64)[0])


def synthetic_dataset(
    n: int, seed: int = 0, config: SyntheticConfig = SyntheticConfig()
) -> list[tuple[np.ndarray, Points, str]]:
    """``n`` synthetic tiles, tile ``i`` drawn from ``tile_seed(seed, i)``.

    Parameters
    ----------
    n : int
        Number of tiles.
    seed : int
        Dataset seed; different seeds give disjoint-looking datasets.
    config : SyntheticConfig
        Passed to :func:`synthetic_tile`.

    Returns
    -------
    list of (image (H, W, 3) uint8, Points, image id)
        Image ids are ``'syn0000'``, ``'syn0001'``, ...
    """
    if n < 0:
        raise ValueError(f"synthetic_dataset: n must be >= 0, got {n}")
    out = []
    for i in range(n):
        img, pts = synthetic_tile(tile_seed(seed, i), config)
        out.append((img, pts, f"syn{i:04d}"))
    return out
