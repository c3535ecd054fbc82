"""Image-similarity metrics (gradient inversion) and ROC metrics (membership inference).

numpy in, dict out. The heavy lifting is done by scikit-image and scikit-learn.
"""
from __future__ import annotations

import numpy as np

# scikit-image, scikit-learn and scipy are imported inside the functions that use them: an
# inversion job needs only the first, a membership job only the others (about 1 s of start-up).

SSIM_SUCCESS = 0.9  # MedPFL: an image counts as reconstructed when SSIM >= 0.9


def _as_np(x) -> np.ndarray:
    return x.detach().cpu().numpy() if hasattr(x, "detach") else np.asarray(x)


def _to_hwc(img: np.ndarray) -> np.ndarray:
    """(C,H,W) image -> float64 (H,W,C), the layout skimage expects with channel_axis=-1."""
    return np.moveaxis(np.asarray(img, dtype=np.float64), 0, -1)


def _ssim(a: np.ndarray, b: np.ndarray) -> float:
    # skimage's default 7x7 window must fit the image; shrink (odd) for tiny images.
    win = min(7, a.shape[0], a.shape[1])
    win -= 1 - win % 2
    from skimage.metrics import structural_similarity

    return float(structural_similarity(a, b, data_range=1.0, channel_axis=-1, win_size=win))


def image_metrics(original, reconstruction) -> dict:
    """Per-image mse, psnr (data_range 1) and ssim for batches of images in [0,1].

    Accepts (B,C,H,W) or a single (C,H,W) image (torch or numpy). Returns lists (one value per
    image) plus the batch means and the MedPFL success rate (share with SSIM >= 0.9).
    """
    from skimage.metrics import mean_squared_error, peak_signal_noise_ratio

    o, r = _as_np(original), _as_np(reconstruction)
    if o.ndim == 3:
        o, r = o[None], r[None]
    if o.shape != r.shape:
        raise ValueError(f"shape mismatch {o.shape} vs {r.shape}")
    mse, psnr, ssim = [], [], []
    for a, b in zip(o, r):
        a, b = _to_hwc(a), _to_hwc(np.clip(b, 0.0, 1.0))
        mse.append(float(mean_squared_error(a, b)))
        # Identical images: PSNR is +inf (skipping skimage avoids its divide-by-zero warning).
        psnr.append(float(peak_signal_noise_ratio(a, b, data_range=1.0)) if mse[-1] > 0 else float("inf"))
        ssim.append(_ssim(a, b))
    return {
        "mse": mse, "psnr": psnr, "ssim": ssim,
        "mean_mse": float(np.mean(mse)), "mean_psnr": float(np.mean(psnr)),
        "mean_ssim": float(np.mean(ssim)),
        "success_rate": float(np.mean(np.asarray(ssim) >= SSIM_SUCCESS)),
    }


def match_reconstructions(original, reconstruction) -> tuple[np.ndarray, np.ndarray]:
    """Optimal assignment of reconstructions to originals (Hungarian, maximising total SSIM):
    an attack returns a batch in no particular order. Returns (original index, reconstruction
    index) pairs; with unequal counts, each of the smaller side gets a distinct partner."""
    from scipy.optimize import linear_sum_assignment

    o, r = _as_np(original), _as_np(reconstruction)
    o, r = (o[None], r[None]) if o.ndim == 3 else (o, r)
    sim = np.array([[_ssim(_to_hwc(a), _to_hwc(np.clip(b, 0.0, 1.0))) for b in r] for a in o])
    return linear_sum_assignment(sim, maximize=True)


def matched_image_metrics(original, reconstruction) -> dict:
    """`image_metrics` after optimal matching (`match_reconstructions`); adds `original_index`,
    the index of each scored original (per-image worst cases across attacks use it)."""
    o, r = _as_np(original), _as_np(reconstruction)
    o, r = (o[None], r[None]) if o.ndim == 3 else (o, r)
    oi, ri = match_reconstructions(o, r)
    return {**image_metrics(o[oi], r[ri]), "original_index": [int(i) for i in oi],
            "reconstruction_index": [int(i) for i in ri]}


def _clopper_pearson(k: np.ndarray, n: int, alpha: float) -> tuple[np.ndarray, np.ndarray]:
    """One-sided (1 - alpha) exact binomial bounds on a rate observed as k successes of n."""
    from scipy.stats import beta

    with np.errstate(invalid="ignore"):
        lo = np.nan_to_num(beta.ppf(alpha, k, n - k + 1), nan=0.0)  # k = 0 -> 0
        hi = np.nan_to_num(beta.ppf(1 - alpha, k + 1, n - k), nan=1.0)  # k = n -> 1
    return lo, hi


def empirical_epsilon_lower_bound(tpr, fpr, delta: float = 1e-5, n_members: int | None = None,
                                  n_nonmembers: int | None = None, alpha: float = 0.05) -> float:
    """Largest epsilon implied by attack operating points (tpr, fpr) under (eps, delta)-DP.

    Any (eps, delta)-DP mechanism forces tpr <= e^eps * fpr + delta and
    1 - fpr <= e^eps * (1 - tpr) + delta (Kairouz et al. 2015), so every operating point gives
    eps >= max(log((tpr - delta) / fpr), log((1 - delta - fpr) / (1 - tpr))); we take the max
    over all points. Points with a zero denominator or non-positive numerator give no finite
    bound and are skipped. Returns 0.0 when no point gives a positive bound.

    Without counts this is a point estimate, biased upward at extreme thresholds where only a
    handful of samples decide the rates. With n_members / n_nonmembers, tpr is replaced by its
    Clopper-Pearson lower bound and fpr by its upper bound (each one-sided at alpha / 2), which
    makes it a statistical lower bound at confidence 1 - alpha per point (Jagielski et al. 2020).
    """
    tpr, fpr = np.atleast_1d(np.asarray(tpr, float)), np.atleast_1d(np.asarray(fpr, float))
    if n_members is not None and n_nonmembers is not None:
        tpr = _clopper_pearson(np.round(tpr * n_members), n_members, alpha / 2)[0]
        fpr = _clopper_pearson(np.round(fpr * n_nonmembers), n_nonmembers, alpha / 2)[1]
    best = 0.0
    for num, den in (((tpr - delta), fpr), ((1 - delta - fpr), (1 - tpr))):
        ok = (num > 0) & (den > 0)
        if ok.any():
            best = max(best, float(np.max(np.log(num[ok] / den[ok]))))
    return best


def _tpr_at_fpr(fpr: np.ndarray, tpr: np.ndarray, target: float) -> float:
    # Highest TPR reachable without exceeding the FPR budget (standard low-FPR reporting).
    ok = fpr <= target
    return float(tpr[ok].max()) if ok.any() else 0.0


def roc_metrics(member_scores, nonmember_scores, delta: float = 1e-5) -> dict:
    """AUC, TPR at 1% and 0.1% FPR and empirical epsilon bounds; higher score = member."""
    from sklearn.metrics import roc_auc_score, roc_curve

    m, n = np.asarray(member_scores, float).ravel(), np.asarray(nonmember_scores, float).ravel()
    y = np.r_[np.ones(len(m)), np.zeros(len(n))]
    s = np.r_[m, n]
    fpr, tpr, _ = roc_curve(y, s, drop_intermediate=False)  # keep every threshold for the eps max
    return {
        "auc": float(roc_auc_score(y, s)),
        "tpr_at_1pct_fpr": _tpr_at_fpr(fpr, tpr, 0.01),
        "tpr_at_0_1pct_fpr": _tpr_at_fpr(fpr, tpr, 0.001),
        # 95%-confidence bound (Clopper-Pearson) and the raw point estimate, which overstates
        "epsilon_lower_bound": empirical_epsilon_lower_bound(tpr, fpr, delta, len(m), len(n)),
        "epsilon_point_estimate": empirical_epsilon_lower_bound(tpr, fpr, delta),
        "delta": delta,
        "n_members": len(m), "n_nonmembers": len(n),
    }
