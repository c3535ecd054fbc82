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


def epsilon_from_rates(tpr, fpr, delta: float = 0.0) -> float:
    """Smallest epsilon consistent with operating points (tpr, fpr) under (eps, delta)-DP.

    Any (eps, delta)-DP mechanism forces tpr <= e^eps * fpr + delta and
    1 - fpr <= e^eps * (1 - tpr) + delta (Kairouz et al. 2015). Points with a zero denominator or
    non-positive numerator give no finite bound; 0.0 when no point gives a positive one.
    """
    tpr, fpr = np.atleast_1d(np.asarray(tpr, float)), np.atleast_1d(np.asarray(fpr, float))
    best = 0.0
    for num, den in (((tpr - delta), fpr), ((1 - delta - fpr), (1 - tpr))):
        ok = (num > 0) & (den > 0)
        if ok.any():
            best = max(best, float(np.max(np.log(num[ok] / den[ok]))))
    return best


def _threshold_bounds(m: np.ndarray, n: np.ndarray, ts: np.ndarray, delta: float,
                      alpha: float) -> np.ndarray:
    """Epsilon bound at each fixed threshold t (score >= t: guess member): Clopper-Pearson lower
    bound on TPR and upper bound on FPR, alpha / 2 each, so both hold with probability 1 - alpha."""
    tp = len(m) - np.searchsorted(np.sort(m), ts, side="left")
    fp = len(n) - np.searchsorted(np.sort(n), ts, side="left")
    tpr_lo = _clopper_pearson(tp, len(m), alpha / 2)[0]
    fpr_hi = _clopper_pearson(fp, len(n), alpha / 2)[1]
    return np.array([epsilon_from_rates(a, b, delta) for a, b in zip(tpr_lo, fpr_hi)])


def split_half_epsilon(member_scores, nonmember_scores, delta: float = 1e-5, alpha: float = 0.05,
                       seed: int = 0) -> float:
    """Heuristic epsilon from a membership attack: the threshold is chosen on a random half of the
    members and non-members (the one with the best Clopper-Pearson bound there) and the bound is
    computed on the other half only, so choosing the threshold costs no confidence.

    Heuristic, not an audit: it treats the members of one trained model as independent trials of
    the DP definition, which they are not (they are trained together, and a member's inclusion
    was not randomised). `fedsafe.attacks.membership.audit` gives the valid lower bound.
    """
    m, n = np.asarray(member_scores, float), np.asarray(nonmember_scores, float)
    rng = np.random.default_rng(seed)
    (m_sel, m_eval), (n_sel, n_eval) = (np.array_split(v[rng.permutation(len(v))], 2) for v in (m, n))
    if min(len(m_sel), len(m_eval), len(n_sel), len(n_eval)) == 0:
        return 0.0
    ts = np.unique(np.r_[m_sel, n_sel])
    sel = _threshold_bounds(m_sel, n_sel, ts, delta, alpha)
    if sel.max() <= 0:
        return 0.0
    return float(_threshold_bounds(m_eval, n_eval, ts[[int(np.argmax(sel))]], delta, alpha)[0])


def _auc_ranks(s: np.ndarray, is_member: np.ndarray) -> np.ndarray:
    """AUC (Mann-Whitney, ties count half) along the last axis, for a batch of resamples."""
    from scipy.stats import rankdata

    r = rankdata(s, axis=-1)
    n_m = is_member.sum(-1)
    n_n = is_member.shape[-1] - n_m
    return ((r * is_member).sum(-1) - n_m * (n_m + 1) / 2) / (n_m * n_n)


def auc_interval(member_scores, nonmember_scores, level: float = 0.95, n_boot: int = 500,
                 seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap interval of the AUC, members and non-members resampled separately."""
    m, n = np.asarray(member_scores, float), np.asarray(nonmember_scores, float)
    rng = np.random.default_rng(seed)
    s = np.concatenate([m[rng.integers(0, len(m), (n_boot, len(m)))],
                        n[rng.integers(0, len(n), (n_boot, len(n)))]], axis=1)
    lab = np.broadcast_to(np.r_[np.ones(len(m)), np.zeros(len(n))], s.shape)
    aucs = _auc_ranks(s, lab)
    return float(np.quantile(aucs, (1 - level) / 2)), float(np.quantile(aucs, (1 + level) / 2))


def tpr_at_fpr(member_scores, nonmember_scores, target: float) -> float:
    """Highest TPR at a threshold whose FPR does not exceed `target`; NaN when the non-members
    cannot resolve that FPR (fewer than 1 / target of them: the only admissible threshold would be
    "no false positive at all", a different and noisier quantity)."""
    from sklearn.metrics import roc_curve

    m, n = np.asarray(member_scores, float), np.asarray(nonmember_scores, float)
    if len(n) * target < 1:
        return float("nan")
    fpr, tpr, _ = roc_curve(np.r_[np.ones(len(m)), np.zeros(len(n))], np.r_[m, n],
                            drop_intermediate=False)
    ok = fpr <= target
    return float(tpr[ok].max()) if ok.any() else 0.0


def roc_metrics(member_scores, nonmember_scores, delta: float = 1e-5, seed: int = 0) -> dict:
    """AUC with a 95% bootstrap interval, TPR at 1% and 0.1% FPR (NaN where unresolved) and the
    split-half heuristic epsilon; higher score = member."""
    from sklearn.metrics import roc_auc_score

    m, n = np.asarray(member_scores, float).ravel(), np.asarray(nonmember_scores, float).ravel()
    lo, hi = auc_interval(m, n, seed=seed)
    return {
        "auc": float(roc_auc_score(np.r_[np.ones(len(m)), np.zeros(len(n))], np.r_[m, n])),
        "auc_ci_low": lo, "auc_ci_high": hi,
        "tpr_at_1pct_fpr": tpr_at_fpr(m, n, 0.01),
        "tpr_at_0_1pct_fpr": tpr_at_fpr(m, n, 0.001),
        "epsilon_heuristic": split_half_epsilon(m, n, delta, seed=seed),
        "delta": delta, "n_members": len(m), "n_nonmembers": len(n),
    }
