"""Compare two summaries (two commits, two machines, CPU vs GPU): which metrics moved beyond their
95% intervals over seeds. `fedsafe compare A/summary.csv B/summary.csv`."""

import pandas as pd

from fedsafe.stats import interval

ROW = ["dataset", "defense", "noise_multiplier", "attack", "attack_param", "attack_value"]
NOT_RESULTS = {"seed", "config_hash", "spec_hash", "rounds", "n_samples", "train_seconds",
               "startup_seconds", "attack_seconds", "attack_job_seconds"}  # timings differ always


def _intervals(df: pd.DataFrame) -> pd.DataFrame:
    metrics = [c for c in df.select_dtypes("number").columns
               if c not in NOT_RESULTS and c not in ROW]
    long = df.melt(id_vars=[c for c in ROW if c in df], value_vars=metrics, var_name="metric")
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
