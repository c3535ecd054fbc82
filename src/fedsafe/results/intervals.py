"""Per cell, the mean over its replicates with its 95% interval, and which cells are marked best
(bold) in each column: the rows of a rendered table."""

import numpy as np
import pandas as pd

from fedsafe import stats
from fedsafe.grid_keys import CELL
from fedsafe.results.columns import HIGHER_IS_BETTER, METRIC_KIND


def _with_se(long: pd.DataFrame) -> pd.DataFrame:
    """A long frame built without sampling errors: unknown for sampled metrics, 0 otherwise."""
    if "se" in long:
        return long
    sampled = long["metric"].map(METRIC_KIND).isin(stats.SAMPLED)
    return long.assign(se=np.where(sampled, np.nan, 0.0))


def stats_table(long: pd.DataFrame, flagged=()) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(text, best): the mean over seeds with its 95% interval per cell and column
    (`_mean_interval`), and a mask of the cells marked best per column within each dataset
    (`best_cells`); `flagged` cells (dataset, defense, noise) are never best."""
    if long.empty or long["value"].isna().all():
        return pd.DataFrame(columns=CELL), pd.DataFrame(columns=CELL)
    long = _with_se(long)
    order = list(dict.fromkeys(long["column"]))
    text = long.groupby(CELL + ["column"], sort=False)[["value", "se", "metric"]].apply(
        _mean_interval)
    text = text.unstack("column")[order].sort_index()
    best = best_cells(long, flagged).reindex(index=text.index, columns=order, fill_value=False)
    text.columns.name = best.columns.name = None
    keys = text.index.to_frame(index=False)
    keys["noise_multiplier"] = keys["noise_multiplier"].map("{:g}".format)
    return (pd.concat([keys, text.reset_index(drop=True).fillna("–")], axis=1),
            pd.concat([keys.astype(bool) & False, best.reset_index(drop=True)], axis=1))


def best_cells(long: pd.DataFrame, flagged=()) -> pd.DataFrame:
    """Per dataset and column, the best cell and every cell not significantly worse than it
    (`fedsafe.stats.best_set`: paired one-sided tests over seeds, Holm); `flagged` cells are
    never best; a column with a single cell, or where every cell ties, has none."""
    long = _with_se(long)
    higher = long.drop_duplicates("column").set_index("column")["metric"].isin(HIGHER_IS_BETTER)
    flagged = set(flagged)
    marks = {}
    for (dataset, column), g in long.groupby(["dataset", "column"], sort=False):
        cells = g.dropna(subset=["value"]).groupby(["defense", "noise_multiplier"])
        per_seed = {k: dict(zip(v["seed"], v["value"].astype(float))) for k, v in cells}
        ses = {k: dict(zip(v["seed"], v["se"].astype(float))) for k, v in cells}
        if len(per_seed) < 2:  # nothing to compare with: no bold
            continue
        never = {k for k in per_seed if (dataset, *k) in flagged}
        for defense, noise in stats.best_set(per_seed, bool(higher[column]), ses, never):
            marks[(dataset, defense, noise, column)] = True
    index = pd.MultiIndex.from_tuples([k[:3] for k in marks], names=CELL)
    mask = pd.Series(True, index=pd.MultiIndex.from_tuples(list(marks), names=CELL + ["column"]))
    return (mask.unstack("column").fillna(False).astype(bool) if marks
            else pd.DataFrame(index=index, dtype=bool))


def _mean_interval(g: pd.DataFrame) -> str:
    """`mean ± half-width` of the 95% interval over seeds (`fedsafe.stats.estimate`, with the
    seeds' sampling errors as its floor), or `mean [low, high]` where the interval reaches the
    metric's range and is clipped there; the value alone with one seed."""
    e = stats.estimate(g["value"].astype(float), g["se"].astype(float))
    if pd.isna(e.mean):
        return "–"
    lo, hi = e.limits(within=stats.bounds(METRIC_KIND.get(g["metric"].iloc[0])))
    if pd.isna(lo):
        return f"{e.mean:.3f}"
    if (lo, hi) != e.limits():
        return f"{e.mean:.3f} [{lo:.3f}, {hi:.3f}]"
    return f"{e.mean:.3f} ± {(hi - lo) / 2:.3f}"
