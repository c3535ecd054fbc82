"""The sampling error of one replicate's value: how much its images alone make it vary
(`fedsafe.stats` takes it as the floor of the spread over seeds)."""

import json

import numpy as np
import pandas as pd

from fedsafe import stats
from fedsafe.results.columns import METRIC_KIND


def numeric(frame: pd.DataFrame, column: str) -> pd.Series:
    """`column` as numbers (NaN where absent or not a number)."""
    return pd.to_numeric(frame[column], errors="coerce") if column in frame else pd.Series(
        np.nan, index=frame.index)


def _images(frame: pd.DataFrame, column: str) -> pd.Series:
    """How many images a share in `column` is a share of (NaN: unknown)."""
    if column == "clean_accuracy":
        return numeric(frame, "n_test")
    if column == "reconstruction_success_rate":  # of the images the server attacked
        return numeric(frame, "n_images")
    n = numeric(frame, "n_samples")  # the attacked subset
    if column in ("attack_success_rate", "client_attack_success_rate"):  # of the correct ones
        n = n * numeric(frame, "eval_clean_accuracy")
    if column == "transfer_rate":  # of the examples that fooled their own copy
        n = n * numeric(frame, "eval_clean_accuracy") * numeric(
            frame, "client_attack_success_rate")
    return n


def mean_se(values) -> float:
    """Standard error of a mean over images (NaN below two)."""
    v = np.asarray(list(values), dtype=float)
    return float(v.std(ddof=1) / np.sqrt(len(v))) if len(v) > 1 else np.nan


FEW_IMAGES = 10  # below this, a spread measured on the images themselves is not trusted


def _image_se(per_image) -> float:
    """Standard error of a mean SSIM, from its per-image scores (`image_ssim`, JSON). On fewer than
    FEW_IMAGES images the measured spread is itself a guess (two images give it one degree of
    freedom), so it is raised to the bound no score in [0, 1] can exceed: 0.5 / sqrt(n)."""
    if not isinstance(per_image, str):
        return np.nan
    return scores_se(list(json.loads(per_image).values()))


def scores_se(scores) -> float:
    """Standard error of a mean of per-image scores in [0, 1], with the floor of `_image_se`
    below FEW_IMAGES images (the tables and the claims read the same error)."""
    scores = list(scores)
    se = mean_se(scores)
    if len(scores) < FEW_IMAGES:
        se = max(np.nan_to_num(se), 0.5 / np.sqrt(max(1, len(scores))))
    return se


def sampling_se(frame: pd.DataFrame, column: str) -> pd.Series:
    """Per summary row, the sampling error of `column` within its replicate (`fedsafe.stats`):
    binomial over the images evaluated for accuracies and rates (`n_test`, `n_samples`), the
    per-image spread for SSIM (`image_ssim`), the bootstrap interval for AUC (`auc_ci_low`,
    `auc_ci_high`). NaN where the summary lacks what it needs (read as `stats.UNKNOWN_SE`); 0 for
    metrics without a sampling model (epsilon, PSNR, MSE: seeds alone)."""
    kind = METRIC_KIND.get(column)
    if kind not in stats.SAMPLED or column not in frame:
        return pd.Series(0.0, index=frame.index)
    if kind == "auc":
        se = stats.se_from_interval(numeric(frame, "auc_ci_low"), numeric(frame, "auc_ci_high"))
    elif kind == "ssim":
        se = (frame["image_ssim"].map(_image_se) if "image_ssim" in frame
              else pd.Series(np.nan, index=frame.index))
    else:
        se = stats.binomial_se(numeric(frame, column), _images(frame, column))
    return pd.Series(np.asarray(se, dtype=float), index=frame.index)


def rms(se: pd.Series) -> float:
    """One replicate's error over several rows of the same images: as if fully correlated."""
    return float(np.sqrt(np.mean(np.square(se.astype(float)))))
