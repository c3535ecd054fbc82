"""Compare two summaries (two commits, two machines, CPU vs GPU). `fedsafe compare A/summary.csv
B/summary.csv` prints:

- the metrics that moved beyond their 95% intervals over seeds (`compare`);
- the drift per metric: the median, 90th percentile and largest |A - B| over the rows the two
  summaries share, paired by seed (`drift`), the numbers `fedsafe.stats.DRIFT` is read from;
- every claim whose verdict differs between the two (`verdict_changes`, `fedsafe.claims`).
"""

import numpy as np
import pandas as pd

from fedsafe.grid_keys import CELL
from fedsafe.stats import interval

ROW = CELL + ["attack", "attack_param", "attack_value"]
NOT_RESULTS = {"seed", "config_hash", "spec_hash", "rounds", "n_samples", "n_test", "train_seconds",
               "startup_seconds", "attack_seconds", "attack_job_seconds"}  # timings differ always


def _metrics(df: pd.DataFrame) -> list[str]:
    return [c for c in df.select_dtypes("number").columns if c not in NOT_RESULTS and c not in ROW]


def _intervals(df: pd.DataFrame) -> pd.DataFrame:
    long = df.melt(id_vars=[c for c in ROW if c in df], value_vars=_metrics(df), var_name="metric")
    keys = [c for c in ROW if c in df] + ["metric"]
    return long.groupby(keys, dropna=False)["value"].apply(
        lambda v: pd.Series(interval(v.astype(float)), index=["mean", "low", "high"])).unstack()


def compare(a: pd.DataFrame, b: pd.DataFrame, atol: float = 1e-9) -> pd.DataFrame:
    """One row per (cell, attack setting, metric) that moved: the two 95% intervals do not
    overlap, or, where a side has one seed (no interval), the means differ by more than atol."""
    ia, ib = _intervals(a), _intervals(b)
    both = ia.add_suffix("_a").join(ib.add_suffix("_b"), how="inner").dropna(
        subset=["mean_a", "mean_b"])
    no_interval = both[["low_a", "low_b"]].isna().any(axis=1)
    apart = (both["low_a"] > both["high_b"]) | (both["low_b"] > both["high_a"])
    differs = (both["mean_a"] - both["mean_b"]).abs() > atol
    moved = both[(~no_interval & apart) | (no_interval & differs)].copy()
    moved["why"] = ["no interval (1 seed), means differ" if n else "intervals do not overlap"
                    for n in no_interval[moved.index]]
    return moved.reset_index()


def paired_rows(a: pd.DataFrame, b: pd.DataFrame) -> pd.DataFrame:
    """(keys..., metric, a, b): every metric of every row the two summaries share, the same
    cell, attack setting and seed on both sides."""
    keys = [c for c in ROW + ["norm", "setting", "seed"] if c in a and c in b]
    metrics = sorted(set(_metrics(a)) & set(_metrics(b)))

    def long(df, side):
        per_row = df.groupby(keys, dropna=False)[metrics].mean().reset_index()
        return per_row.melt(id_vars=keys, value_vars=metrics, var_name="metric", value_name=side)

    if not keys or not metrics:
        return pd.DataFrame(columns=keys + ["metric", "a", "b"])
    return long(a, "a").merge(long(b, "b"), on=keys + ["metric"]).dropna(subset=["a", "b"])


def drift(a: pd.DataFrame, b: pd.DataFrame) -> pd.DataFrame:
    """Per metric, |A - B| over the rows paired by seed: how many pairs, the median, the 90th
    percentile and the largest."""
    pairs = paired_rows(a, b)
    gap = pairs.assign(gap=(pairs["a"] - pairs["b"]).abs())
    return (gap.groupby("metric")["gap"]
            .agg(pairs="size", median="median", p90=lambda g: float(np.quantile(g, 0.9)),
                 max="max").reset_index())


def verdict_changes(a: pd.DataFrame, b: pd.DataFrame, prestated: dict | None = None
                    ) -> pd.DataFrame:
    """Every claim whose verdict differs between the two summaries (`fedsafe.claims.assess`),
    with its labels on each side."""
    from fedsafe.claims import assess

    rows = [{"claim": ra.claim.id, "a": ra.shown.replace("**", ""),
             "b": rb.shown.replace("**", "")}
            for ra, rb in zip(assess(a, prestated), assess(b, prestated)) if ra.final != rb.final]
    return pd.DataFrame(rows, columns=["claim", "a", "b"])
