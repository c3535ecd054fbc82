"""Same seed, config and thread count: an identical summary (timings aside). Checked with
`fedsafe compare`, the command a user runs to check a reproduction."""

import pandas as pd
import pytest
from conftest import base_config, snakemake

from fedsafe.compare import compare


@pytest.mark.slow
def test_same_seed_config_and_threads_give_an_identical_summary(tmp_path):
    cfg = base_config(seeds=[0, 1], attacks={
        "fgsm": {"options": {"eps": [0.0, 0.05], "n_samples": 60}},
        "mia_loss": {"options": {"n_samples": 40}}})
    summaries = []
    for run in ("a", "b"):
        (tmp_path / run).mkdir()
        snakemake(["--cores", "2", f"{tmp_path / run}/results/summary.csv"], cfg, tmp_path / run)
        summaries.append(pd.read_csv(tmp_path / run / "results" / "summary.csv"))
    a, b = summaries
    assert len(a) == len(b) > 0
    moved = compare(a, b, atol=0.0)
    assert moved.empty, moved.to_string()
    for column in ("clean_accuracy", "robust_accuracy", "auc"):
        assert a[column].equals(b[column]), column
