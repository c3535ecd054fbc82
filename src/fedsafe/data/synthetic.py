"""Synthetic medical image sets (no download, deterministic from the seed).

Both sets are SYNTHETIC: procedurally drawn with numpy, they contain no patient
data and are not real images. They stand in for the papers' tasks so that the
whole benchmark runs offline in seconds and is exactly reproducible: the same
seed and options always give identical arrays (one `numpy.random.Generator`
seeded with the seed draws everything, in a fixed order).

Each sample first gets an acquisition site (a simulated hospital or scanner,
uniform over `n_sites`) and then a label from that site's class prevalence
(drawn per site from a Dirichlet(20) prior, so sites differ mildly in case mix,
as hospitals do). A random `test_fraction` (default 0.2) of the generated
`n_samples` (default 2000) is the held-out test split. Optional
`label_noise` (default 0) flips that fraction of labels to a random other
class; the tasks are made non-trivial by overlapping appearance, not by noise.

synthetic_pathology (RGB, default 32x32, classes normal, tumour, stroma,
lymphocytes; `n_classes` <= 4 keeps the first ones). A tile is an
optical-density image of two stains rendered with Beer-Lambert colour:
haematoxylin (purple) nuclei on an eosin (pink) background.
  - nuclei are soft ellipses; their number, size, elongation, darkness and
    arrangement depend on the class: normal = moderate numbers of small round
    nuclei on a ring around a pale gland lumen; tumour = many large,
    pleomorphic, irregularly placed dark nuclei; stroma = few spindle-shaped
    nuclei aligned with pink fibre streaks; lymphocytes = dense small round
    very dark nuclei.
  - label-independent variation blurs the classes: every class parameter is
    drawn from a wide range that overlaps the neighbouring classes, 45% of
    tiles mix in nuclei drawn in another class's style (e.g. lymphocytes
    infiltrating a tumour), plus chromatin texture and low-frequency eosin
    variation.
  - site effects (stain and scanner): per-site stain colour vectors (each RGB
    optical density scaled by 0.75-1.25), stain strength, brightness,
    contrast, sensor noise (std 2-10 grey levels) and focus (blur), plus small
    per-tile stain jitter.

synthetic_brain_mri (1 channel, default 32x32, classes glioma, meningioma,
no_tumour). An axial T1-like slice: a randomly sized, placed and rotated
head ellipse with a bright scalp/skull ring, a dark CSF rim, brain tissue with
low-frequency texture and dark ventricles of random size.
  - glioma: an irregular, diffuse (soft-edged) lesion inside the brain, the
    sum of 2-4 Gaussian blobs, sometimes with a dark necrotic core.
  - meningioma: a well-circumscribed, sharp-edged, homogeneous round bright
    lesion attached to the inner skull edge.
  - no_tumour: no lesion.
  - lesion size and contrast vary widely (some are small and faint), and 35%
    of all slices get a faint label-independent "mimic" blob, so some cases
    are genuinely ambiguous.
  - site effects (scanner): per-site intensity scale, gamma (contrast), a
    multiplicative linear bias field of site-specific direction and strength,
    and Rician noise level (std 0.015-0.05 of full scale).

With the defaults a small 3-layer CNN trained for a few epochs on CPU reaches
roughly 80-95% test accuracy on either set, not 100%.
"""
from __future__ import annotations

import numpy as np

from .imageset import ImageSet

PATHOLOGY_CLASSES = ["normal", "tumour", "stroma", "lymphocytes"]
BRAIN_CLASSES = ["glioma", "meningioma", "no_tumour"]

# Optical density of haematoxylin and eosin per RGB channel (Ruifrok & Johnston).
_H_OD = np.array([0.65, 0.70, 0.29])
_E_OD = np.array([0.07, 0.99, 0.11])
_CHUNK = 256  # images rendered at once; bounds memory of the (n, K, H, W) blob tensor


def _check(n_samples: int, image_size: int, n_sites: int, test_fraction: float) -> None:
    if image_size < 8:
        raise ValueError(f"image_size must be >= 8, got {image_size}")
    if n_sites < 1:
        raise ValueError(f"n_sites must be >= 1, got {n_sites}")
    if not 0 < test_fraction < 1:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}")
    if n_samples < 10:
        raise ValueError(f"n_samples must be >= 10, got {n_samples}")


def _sites_and_labels(rng, n, n_sites, n_classes):
    """Uniform sites; labels from mildly different per-site class prevalences."""
    site = rng.integers(0, n_sites, n)
    prev = rng.dirichlet(np.full(n_classes, 20.0), n_sites)
    u = rng.random(n)[:, None]
    y = (u > np.cumsum(prev[site], axis=1)).sum(axis=1).clip(0, n_classes - 1)
    return site, y


def _smooth_noise(rng, n, size, grid=4):
    """Low-frequency noise: a grid x grid Gaussian field upsampled bilinearly."""
    pos = np.linspace(0, grid - 1, size)
    interp = np.maximum(0, 1 - np.abs(pos[:, None] - np.arange(grid)[None, :]))
    g = rng.standard_normal((n, grid, grid))
    return np.einsum("hg,ngk,wk->nhw", interp, g, interp)


def _finish(rng, x, y, site, class_names, test_fraction, label_noise, n_classes):
    """Random train/test split, then optional label noise (drawn last so it changes nothing else)."""
    n = len(y)
    perm = rng.permutation(n)
    n_test = max(1, int(round(test_fraction * n)))
    te, tr = perm[:n_test], perm[n_test:]
    if label_noise > 0:
        flip = rng.random(n) < label_noise
        y = np.where(flip, (y + rng.integers(1, n_classes, n)) % n_classes, y)
    return ImageSet(x[tr], y[tr], site[tr], x[te], y[te], list(class_names), x.shape[1], x.shape[2])


# ----------------------------------------------------------------- pathology
def _nuclei_params(rng, cls, kmax):
    """Per-nucleus (cx, cy, a, b, theta, darkness) for one tile of class `cls`.

    Units are fractions of the tile side, so tiles look alike at any size.
    """
    p = np.zeros((kmax, 6))
    if cls == 0:  # normal: small round nuclei on a ring around a gland lumen
        k = rng.integers(8, 20)
        c = rng.uniform(0.3, 0.7, 2)
        ang = np.sort(rng.uniform(0, 2 * np.pi, k))
        rad = rng.uniform(0.18, 0.34) + rng.normal(0, 0.04, k)
        xy = c + np.stack([np.cos(ang), np.sin(ang)], 1) * rad[:, None]
        a = rng.uniform(0.035, 0.06, k)
        asp, th, dark = rng.uniform(1.0, 1.5, k), ang, rng.uniform(0.55, 0.9, k)
    elif cls == 1:  # tumour: many large, pleomorphic, disordered nuclei
        k = rng.integers(10, 26)
        xy = rng.uniform(0, 1, (k, 2))
        a = rng.uniform(0.04, 0.08, k)
        asp, th, dark = rng.uniform(1.0, 1.9, k), rng.uniform(0, np.pi, k), rng.uniform(0.65, 1.05, k)
    elif cls == 2:  # stroma: few spindle nuclei aligned with the fibres
        k = rng.integers(4, 12)
        xy = rng.uniform(0, 1, (k, 2))
        a = rng.uniform(0.03, 0.045, k)
        asp = rng.uniform(2.0, 4.0, k)
        th = rng.uniform(0, np.pi) + rng.normal(0, 0.25, k)
        dark = rng.uniform(0.5, 0.85, k)
    else:  # lymphocytes: dense, small, round, very dark
        k = rng.integers(18, 40)
        xy = rng.uniform(0, 1, (k, 2))
        a = rng.uniform(0.028, 0.045, k)
        asp, th, dark = rng.uniform(1.0, 1.25, k), rng.uniform(0, np.pi, k), rng.uniform(0.8, 1.15, k)
    p[:k] = np.column_stack([xy, a * asp, a, th, dark])
    return p, k


def synthetic_pathology(
    seed: int,
    n_samples: int = 2000,
    image_size: int = 32,
    n_sites: int = 4,
    n_classes: int = 4,
    test_fraction: float = 0.2,
    label_noise: float = 0.0,
) -> ImageSet:
    """H&E-like RGB tissue tiles; see the module docstring."""
    _check(n_samples, image_size, n_sites, test_fraction)
    if not 2 <= n_classes <= 4:
        raise ValueError(f"n_classes must be 2..4 for synthetic_pathology, got {n_classes}")
    rng = np.random.default_rng(seed)
    n, s, kmax = n_samples, image_size, 48
    site, y = _sites_and_labels(rng, n, n_sites, n_classes)

    # Per-site "hospital" look: stain vectors, strength, brightness, contrast, noise, focus.
    site_h = _H_OD * rng.uniform(0.75, 1.25, (n_sites, 3))
    site_e = _E_OD * rng.uniform(0.75, 1.25, (n_sites, 3))
    site_strength = rng.uniform(0.8, 1.2, n_sites)
    site_bright = rng.uniform(-12, 12, n_sites)
    site_contrast = rng.uniform(0.8, 1.15, n_sites)
    site_noise = rng.uniform(2, 10, n_sites)
    site_blur = rng.uniform(0, 0.6, n_sites)

    # Nuclei parameters per tile; 45% of tiles also get nuclei in another class's style.
    # Unused slots are large, blank blobs (darkness 0) so they render as nothing.
    params = np.tile(np.array([0.5, 0.5, 1.0, 1.0, 0.0, 0.0]), (n, kmax, 1))
    count, own = np.zeros(n, dtype=int), np.zeros(n, dtype=int)
    for i in range(n):
        p, k = _nuclei_params(rng, y[i], kmax)
        own[i] = k  # the tile's own-class nuclei come first
        if rng.random() < 0.45:
            q, m = _nuclei_params(rng, rng.integers(0, 4), kmax)
            m = min(rng.integers(3, 12), m, kmax - k)
            p[k:k + m] = q[:m]
            k += m
        params[i, :k], count[i] = p[:k], k

    # Render all nuclei as soft ellipses, haematoxylin = max over nuclei. Tiles are
    # processed sorted by nucleus count so each chunk only evaluates its used slots.
    coords = ((np.arange(s) + 0.5) / s).astype(np.float32)
    gx, gy = coords[None, None, None, :], coords[None, None, :, None]
    h = np.empty((n, s, s), dtype=np.float32)
    order = np.argsort(count, kind="stable")
    for lo in range(0, n, _CHUNK):
        idx = order[lo:lo + _CHUNK]
        p = params[idx, :count[idx].max()].astype(np.float32)[:, :, :, None, None]
        dx, dy = gx - p[:, :, 0], gy - p[:, :, 1]
        c, sn = np.cos(p[:, :, 4]), np.sin(p[:, :, 4])
        d2 = ((dx * c + dy * sn) / p[:, :, 2]) ** 2 + ((dy * c - dx * sn) / p[:, :, 3]) ** 2
        h[idx] = (p[:, :, 5] * np.exp(-d2 * d2)).max(axis=1)
    h = h * (1 + 0.25 * rng.standard_normal(h.shape))  # chromatin texture

    # Eosin background: low-frequency variation; fibre streaks in stroma; pale lumen in normal.
    e = 0.45 + 0.12 * _smooth_noise(rng, n, s)
    yy, xx = np.meshgrid(coords, coords, indexing="ij")
    for i in np.flatnonzero(y == 2):
        th = np.median(params[i, :own[i], 4])
        along = -xx * np.sin(th) + yy * np.cos(th)
        e[i] += rng.uniform(0.02, 0.2) * np.sin(2 * np.pi * rng.uniform(3, 6) * along + rng.uniform(0, 6.3))
    for i in np.flatnonzero(y == 0):
        cx, cy = params[i, :own[i], :2].mean(axis=0)
        e[i] *= 1 - 0.8 * np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / 0.02)

    # Beer-Lambert colour with per-site stains plus per-tile stain jitter.
    strength = (site_strength[site] * rng.uniform(0.85, 1.15, n))[:, None, None, None]
    od = h.clip(0, 1.6)[:, None] * site_h[site][:, :, None, None] * 1.3
    od = od + e.clip(0, 1.2)[:, None] * site_e[site][:, :, None, None] * 0.9
    img = 255 * np.exp(-od * strength)
    blur = site_blur[site][:, None, None, None]
    nb = (np.roll(img, 1, 2) + np.roll(img, -1, 2) + np.roll(img, 1, 3) + np.roll(img, -1, 3)) / 4
    img = (1 - blur) * img + blur * nb
    mean = img.mean(axis=(1, 2, 3), keepdims=True)
    img = (img - mean) * site_contrast[site][:, None, None, None] + mean + site_bright[site][:, None, None, None]
    img += site_noise[site][:, None, None, None] * rng.standard_normal(img.shape)
    x = img.clip(0, 255).astype(np.uint8)
    return _finish(rng, x, y, site, PATHOLOGY_CLASSES[:n_classes], test_fraction, label_noise, n_classes)


# ------------------------------------------------------------------ brain MRI
def synthetic_brain_mri(
    seed: int,
    n_samples: int = 2000,
    image_size: int = 32,
    n_sites: int = 4,
    test_fraction: float = 0.2,
    label_noise: float = 0.0,
) -> ImageSet:
    """Grey T1-like brain slices; see the module docstring."""
    _check(n_samples, image_size, n_sites, test_fraction)
    rng = np.random.default_rng(seed)
    n, s = n_samples, image_size
    site, y = _sites_and_labels(rng, n, n_sites, 3)

    site_scale = rng.uniform(0.7, 1.1, n_sites)
    site_gamma = rng.uniform(0.8, 1.25, n_sites)
    site_bias_dir = rng.uniform(0, 2 * np.pi, n_sites)
    site_bias = rng.uniform(0.1, 0.3, n_sites)
    site_noise = rng.uniform(0.015, 0.05, n_sites)

    def col(v):  # per-image scalar -> broadcastable over (n, H, W)
        return np.asarray(v, dtype=float)[:, None, None]

    c = (np.arange(s) + 0.5) / s * 2 - 1
    X, Y = c[None, None, :], c[None, :, None]

    # Head: random ellipse; r is the normalised elliptical radius (1 = outer scalp).
    cx, cy = col(rng.uniform(-0.06, 0.06, n)), col(rng.uniform(-0.06, 0.06, n))
    rx, ry = col(rng.uniform(0.72, 0.84, n)), col(rng.uniform(0.82, 0.94, n))
    rot = col(rng.uniform(-0.25, 0.25, n))
    u = ((X - cx) * np.cos(rot) + (Y - cy) * np.sin(rot)) / rx
    v = (-(X - cx) * np.sin(rot) + (Y - cy) * np.cos(rot)) / ry
    r = np.sqrt(u**2 + v**2)
    edge = lambda d, w=0.03: 1 / (1 + np.exp(-d / w))  # soft step, avoids aliasing
    brain = edge(0.86 - r)
    img = 0.85 * edge(1 - r) * edge(r - 0.9)  # scalp/skull ring
    img += 0.12 * edge(0.9 - r) * edge(r - 0.86)  # CSF rim
    img += brain * (0.45 + 0.06 * _smooth_noise(rng, n, s, 5))
    vs = col(rng.uniform(0.05, 0.16, n))  # ventricles: two dark ellipses of random size
    for side in (-1, 1):
        img -= 0.3 * brain * np.exp(-(((u - side * 0.13) / vs) ** 2 + (v / (2.2 * vs)) ** 2) ** 2)

    lesion = np.zeros((n, s, s))
    for i in range(n):
        if y[i] == 0:  # glioma: irregular diffuse blobs inside the brain
            c0 = rng.uniform(0, 0.55) * np.exp(1j * rng.uniform(0, 2 * np.pi))
            contrast = rng.uniform(0.12, 0.5)
            for _ in range(rng.integers(2, 5)):
                b = c0 + rng.normal(0, 0.15) + 1j * rng.normal(0, 0.15)
                sig = rng.uniform(0.07, 0.2)
                lesion[i] += contrast * np.exp(-((u[i] - b.real) ** 2 + (v[i] - b.imag) ** 2) / (2 * sig**2))
            if rng.random() < 0.4:  # necrotic core
                lesion[i] -= 1.2 * contrast * np.exp(-((u[i] - c0.real) ** 2 + (v[i] - c0.imag) ** 2) / 0.01)
            lesion[i] *= brain[i]
        elif y[i] == 1:  # meningioma: sharp round bright lesion on the skull edge
            rad = rng.uniform(0.1, 0.28)
            ang = rng.uniform(0, 2 * np.pi)
            d = np.hypot(u[i] - (0.86 - 0.7 * rad) * np.cos(ang), v[i] - (0.86 - 0.7 * rad) * np.sin(ang))
            lesion[i] = rng.uniform(0.1, 0.4) * edge(rad - d, 0.015) * edge(0.9 - r[i])
        if rng.random() < 0.35:  # label-independent faint mimic blob
            b = rng.uniform(-0.5, 0.5, 2)
            lesion[i] += rng.uniform(-0.1, 0.12) * brain[i] * np.exp(-((u[i] - b[0]) ** 2 + (v[i] - b[1]) ** 2) / rng.uniform(0.003, 0.02))
    img = (img + lesion).clip(0, None)

    # Scanner: bias field, gamma, scale, Rician noise.
    ang = site_bias_dir[site] + rng.normal(0, 0.3, n)
    img *= 1 + col(site_bias[site]) * (X * col(np.cos(ang)) + Y * col(np.sin(ang)))
    img = img.clip(0, None) ** col(site_gamma[site]) * col(site_scale[site] * rng.uniform(0.9, 1.1, n))
    sd = col(site_noise[site])
    img = np.hypot(img + sd * rng.standard_normal(img.shape), sd * rng.standard_normal(img.shape))
    x = (img.clip(0, 1) * 255).astype(np.uint8)[:, None]
    return _finish(rng, x, y, site, BRAIN_CLASSES, test_fraction, label_noise, 3)
