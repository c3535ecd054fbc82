"""Reference-model membership attacks: RMIA (Zarifzadeh et al., ICML 2024) and LiRA (Carlini et al.,
S&P 2022), each online and offline, on the pool logits of the dataset's reference models
(`reference_models`).
"""
from __future__ import annotations

import time

import numpy as np

from fedsafe.attacks.membership.cell import cell_delta, member_indices, membership_row
from fedsafe.attacks.membership.reference_models import model_logits, pool_arrays
from fedsafe.files import load_torch


def true_prob(logits: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Softmax probability of the true label along the last axis (RMIA's Pr(x | theta))."""
    z = logits - logits.max(-1, keepdims=True)
    p = np.exp(z) / np.exp(z).sum(-1, keepdims=True)
    return np.take_along_axis(p, np.broadcast_to(y[..., None], p.shape[:-1] + (1,)), -1)[..., 0]


def scaled_logit(logits: np.ndarray, y: np.ndarray) -> np.ndarray:
    """LiRA's statistic log(p / (1 - p)) of the true label, computed stably as
    logit_y - logsumexp(other logits)."""
    own = np.take_along_axis(logits, np.broadcast_to(y[..., None], logits.shape[:-1] + (1,)), -1)[..., 0]
    other = logits.copy()
    np.put_along_axis(other, np.broadcast_to(y[..., None], logits.shape[:-1] + (1,)), -np.inf, -1)
    m = other.max(-1)
    return own - (m + np.log(np.exp(other - m[..., None]).sum(-1)))


def rmia_scores(target_p: np.ndarray, ref_p: np.ndarray, in_mask: np.ndarray, is_target: np.ndarray,
                online: bool, offline_a: float = 0.3, gamma: float = 1.0) -> np.ndarray:
    """RMIA score of every pool point flagged `is_target`, against population points z (the rest).

    Pr(x) is the mean of Pr(x | theta_ref) over all reference models (online: each x is IN half of
    them) or over the models x was OUT of, scaled as Pr(x) = ((1 + a) Pr_OUT(x) + 1 - a) / 2 to
    stand in for the missing IN models (offline, the paper's Eq. 6). Score(x) = share of z with
    (Pr(x|theta) / Pr(x)) / (Pr(z|theta) / Pr(z)) > gamma.
    """
    if online:
        pr = ref_p.mean(0)
    else:
        out = ~in_mask
        pr_out = (ref_p * out).sum(0) / np.maximum(out.sum(0), 1)
        pr = np.where(out.any(0), 0.5 * ((1 + offline_a) * pr_out + (1 - offline_a)), np.nan)
    ratio = target_p / pr
    rx, rz = ratio[is_target], ratio[~is_target]
    rz = np.sort(rz[np.isfinite(rz)])
    # share of z with rx / rz > gamma  <=>  rz < rx / gamma
    return np.searchsorted(rz, rx / gamma, side="left") / max(len(rz), 1)


def lira_scores(target_stat: np.ndarray, ref_stat: np.ndarray, in_mask: np.ndarray,
                online: bool, min_models: int = 64) -> np.ndarray:
    """LiRA: Gaussian fits of the reference models' scaled logits. Online: log-likelihood ratio of
    N(mu_in, s_in) against N(mu_out, s_out); offline: one-sided test against N(mu_out, s_out)
    (higher = further above the OUT distribution). With fewer than `min_models` (64 in the paper)
    the variances are the global ones across points (the paper's fixed-variance variant)."""
    from scipy.stats import norm

    def fit(mask):
        n = mask.sum(0)
        mu = (ref_stat * mask).sum(0) / np.maximum(n, 1)
        var = ((ref_stat - mu) ** 2 * mask).sum(0) / np.maximum(n - 1, 1)
        if ref_stat.shape[0] < min_models:
            var = np.full_like(var, np.nanmean(np.where(n > 1, var, np.nan)))
        return mu, np.sqrt(np.maximum(var, 1e-12))

    mu_out, s_out = fit(~in_mask)
    if not online:
        return norm.logcdf(target_stat, mu_out, s_out)
    mu_in, s_in = fit(in_mask)
    return norm.logpdf(target_stat, mu_in, s_in) - norm.logpdf(target_stat, mu_out, s_out)


def run(ctx, options: dict, *, kind: str) -> list[dict]:
    """Reference-model attack `kind` (rmia or lira: bound by its registry entry) on the cell."""
    from fedsafe.metrics import roc_metrics

    t0 = time.time()
    if ctx.reference_path is None:
        raise ValueError(f"{kind} needs the reference models (the `reference` rule's output)")
    ref = load_torch(ctx.reference_path)
    logits, in_mask = ref["logits"].numpy(), ref["in_mask"].numpy()
    y = ref["labels"].numpy()
    x_pool, y_pool, offsets = pool_arrays(ctx.data)
    if not np.array_equal(y_pool, y):
        raise ValueError("reference models were trained on another split of the data")
    mi, ni = member_indices(ctx, options["n_samples"])
    target_idx = np.r_[mi, ni + offsets["holdout"]]
    z_idx = np.arange(offsets["test"], len(y))  # population points: the test split
    idx = np.r_[target_idx, z_idx]
    target_logits = model_logits(ctx.new_model(), x_pool[idx], ctx.device)
    online = bool(options["online"])
    if kind == "rmia":
        is_target = np.r_[np.ones(len(target_idx), bool), np.zeros(len(z_idx), bool)]
        scores = rmia_scores(true_prob(target_logits, y[idx]), true_prob(logits[:, idx], y[idx]),
                             in_mask[:, idx], is_target, online, options["offline_a"], options["gamma"])
    else:
        t = slice(0, len(target_idx))
        scores = lira_scores(scaled_logit(target_logits[t], y[target_idx]),
                             scaled_logit(logits[:, target_idx], y[target_idx]),
                             in_mask[:, target_idx], online)
    res = roc_metrics(scores[:len(mi)], scores[len(mi):len(target_idx)], cell_delta(ctx),
                      seed=ctx.seed)
    return membership_row(ctx, res, t0, {"online": online})
