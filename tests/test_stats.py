"""Intervals over seeds and the significance rule behind every bold cell."""

import math

import numpy as np
import pandas as pd
import pytest

from fedsafe.results.intervals import stats_table
from fedsafe.stats import best_set, interval, paired_difference, significantly_different


def test_interval_matches_the_t_distribution():
    mean, lo, hi = interval([1.0, 2.0, 3.0])  # sd 1, n 3: t(0.975, 2) = 4.3027
    assert mean == 2.0 and hi - mean == pytest.approx(4.3027 / math.sqrt(3), rel=1e-4)
    assert math.isnan(interval([0.7])[1])  # one seed: no interval
    assert interval([0.5, 0.5, 0.5]) == (0.5, 0.5, 0.5)


def test_interval_covers_the_true_mean_95_percent_of_the_time():
    rng = np.random.default_rng(0)
    covered = [lo <= 0.3 <= hi for lo, hi in
               (interval(rng.normal(0.3, 0.05, size=3))[1:] for _ in range(4000))]
    assert np.mean(covered) == pytest.approx(0.95, abs=0.01)


def test_paired_comparison_cancels_seed_effects():
    # seed effects (+-0.1) dwarf the 0.01 difference; pairing by seed shows it anyway
    a = {0: 0.61, 1: 0.81, 2: 0.71}
    b = {0: 0.60, 1: 0.80, 2: 0.70}
    assert significantly_different(a, b)
    mean, lo, hi, n = paired_difference(a, b)
    assert n == 3 and mean == pytest.approx(0.01) and lo == pytest.approx(0.01)
    assert not significantly_different({0: 0.6, 1: 0.8, 2: 0.7}, {0: 0.65, 1: 0.7, 2: 0.8})
    assert not significantly_different({0: 0.9}, {0: 0.1})  # one seed: never significant
    # given each seed's sampling error (0.02: an accuracy near 0.7 on about 500 images), the
    # identical differences above no longer make a zero-width interval (tests/test_verdicts.py)
    se = dict.fromkeys(a, 0.02)
    assert not significantly_different(a, b, se_a=se, se_b=se)


def test_best_marks_ties_together_and_nothing_with_one_seed():  # paired tests with Holm
    clear = {"a": {0: 0.9, 1: 0.91, 2: 0.92}, "b": {0: 0.5, 1: 0.52, 2: 0.49}}
    assert best_set(clear, higher_is_better=True) == {"a"}
    assert best_set(clear, higher_is_better=False) == {"b"}
    tied = {"a": {0: 0.9, 1: 0.7, 2: 0.8}, "b": {0: 0.8, 1: 0.85, 2: 0.78},
            "c": {0: 0.1, 1: 0.12, 2: 0.11}}
    assert best_set(tied, higher_is_better=True) == {"a", "b"}
    assert best_set({"a": {0: 0.9}, "b": {0: 0.1}}, higher_is_better=True) == set()


def test_tables_do_not_bold_a_difference_within_noise():
    rows = [{"dataset": "d", "defense": defense, "noise_multiplier": 0.0, "seed": s,
             "value": v, "column": "clean acc.", "metric": "clean_accuracy"}
            for defense, values in {"x": [0.72, 0.80, 0.75], "y": [0.76, 0.71, 0.74]}.items()
            for s, v in enumerate(values)]
    text, best = stats_table(pd.DataFrame(rows))
    # x is ahead on average, not significantly: they tie, and a column where every cell ties has
    # no bold (it used to mark both, which says nothing and flipped between machines)
    assert not best["clean acc."].any()
    assert text["clean acc."].str.contains("±").all()


def test_a_column_with_one_cell_is_not_bold_and_client_robustness_is_higher_better():
    rows = [{"dataset": "d", "defense": defense, "noise_multiplier": 1.0, "seed": s,
             "value": v + 0.001 * s, "column": column, "metric": metric}
            for column, metric, cells in (
                ("epsilon", "epsilon", {"dp_sgd": 7.0}),  # only one cell has an epsilon
                ("client robust acc.", "client_robust_accuracy", {"dp_sgd": 0.1, "none": 0.3}))
            for defense, v in cells.items() for s in range(3)]
    text, best = stats_table(pd.DataFrame(rows))
    assert not best["epsilon"].any()
    assert best.set_index(text["defense"])["client robust acc."].to_dict() == {"dp_sgd": False,
                                                                               "none": True}
