"""Statistics over seeds: 95% intervals, paired comparisons, and which cells may be called best.

Intervals are Student-t intervals of the mean over seeds (a few seeds: the t quantile, not 1.96,
widens them honestly). Comparisons between two cells are paired by seed (same data, same client
split, same attack subset), so seed-to-seed variation common to both cells cancels.
"""

import math

import numpy as np
from scipy import stats as sps

LEVEL = 0.95


def interval(values, level: float = LEVEL) -> tuple[float, float, float]:
    """(mean, low, high): the t interval of the mean; low = high = nan with fewer than 2 values."""
    x = np.asarray([v for v in values if v is not None and not math.isnan(v)], dtype=float)
    if len(x) == 0:
        return math.nan, math.nan, math.nan
    mean = float(x.mean())
    if len(x) < 2:
        return mean, math.nan, math.nan
    sd = float(x.std(ddof=1))
    if sd == 0:
        return mean, mean, mean
    half = float(sps.t.ppf(0.5 + level / 2, len(x) - 1)) * sd / math.sqrt(len(x))
    return mean, mean - half, mean + half


def paired_difference(a: dict, b: dict, level: float = LEVEL) -> tuple[float, float, float, int]:
    """(mean, low, high, n) of a[seed] - b[seed] over the seeds both have."""
    seeds = sorted(set(a) & set(b))
    diffs = [a[s] - b[s] for s in seeds
             if not (math.isnan(a[s]) or math.isnan(b[s]))]
    return (*interval(diffs, level), len(diffs))


def significantly_different(a: dict, b: dict, level: float = LEVEL) -> bool:
    """Paired two-sided test over seeds: the interval of a - b excludes 0. Never with < 2 seeds."""
    _, lo, hi, n = paired_difference(a, b, level)
    return n >= 2 and not math.isnan(lo) and (lo > 0 or hi < 0)


def best_set(per_seed: dict[str, dict], higher_is_better: bool) -> set[str]:
    """Cells to mark best: the cell with the best mean, and every cell not significantly worse
    than it in a paired comparison over seeds (ties are marked together). With fewer than two
    seeds nothing can be shown significant, so nothing is marked."""
    means = {k: np.nanmean(list(v.values())) for k, v in per_seed.items()
             if v and not all(math.isnan(x) for x in v.values())}
    if not means or max(len(v) for v in per_seed.values()) < 2:
        return set()
    top = (max if higher_is_better else min)(means, key=means.get)
    tied = {k for k in means
            if k == top or not significantly_different(per_seed[k], per_seed[top])}
    return tied
