"""Verdicts that decide and reproduce (`fedsafe.stats`, `fedsafe.claims`, the tables' bold marks and
`fedsafe compare`), on constructed summaries whose truth is known."""

import math
import re

import numpy as np
import pandas as pd
import pytest
from statsmodels.stats.multitest import multipletests

from fedsafe import claims as cl
from fedsafe import stats
from fedsafe.results.intervals import stats_table
from fedsafe.results.sampling import sampling_se
from fedsafe.results.summary import _train_row
from fedsafe.results.tables import fedsafe_long, medpfl_long, tradeoff_long

PARTS = {"none": ("none", "none: no defense", np.nan),
         "weight_noise": ("weight_noise", "none: heuristic", np.nan),
         "gradient_noise": ("gradient_noise", "none: heuristic", np.nan),
         "dp_sgd": ("dp_sgd", "sample-level (epsilon, delta)-DP", 8.0),
         "dp_fedavg": ("dp_fedavg", "client-level (epsilon, delta)-DP", 4.0)}
BY_ID = {c.id: c for c in cl.CLAIMS}


def seed_cell(dataset, defense, noise, seed, clean=0.8, robust=None, transfer=None, ssim=None,
              auc=None, n=10_000, auc_width=0.004):
    """The summary rows of one replicate, as `fedsafe.results.summary.summarise` writes them."""
    parts, guarantee, eps = PARTS[defense]
    base = {"config_hash": "h", "dataset": dataset, "defense": defense,
            "noise_multiplier": noise, "seed": seed, "defense_parts": parts,
            "guarantee": guarantee, "epsilon": eps, "lr": 0.003, "clean_accuracy": clean,
            "n_test": n}
    rows = []
    if robust is not None:
        rows.append({**base, "attack": "pgd", "family": "evasion", "attack_param": "eps",
                     "attack_value": 0.03, "robust_accuracy": robust, "eval_clean_accuracy": clean,
                     "attack_success_rate": 1 - robust / clean, "n_samples": n,
                     "transfer_rate": transfer, "client_attack_success_rate": 0.9})
    if ssim is not None:
        rows.append({**base, "attack": "ig", "family": "inversion", "attack_param": "round",
                     "attack_value": 1.0, "ssim": ssim})
    if auc is not None:
        rows.append({**base, "attack": "mia", "family": "membership",
                     "attack_param": "n_samples", "attack_value": 100.0, "auc": auc,
                     "auc_ci_low": auc - auc_width / 2, "auc_ci_high": auc + auc_width / 2})
    return rows or [base]


def grid(spec: dict, seeds=range(3)) -> pd.DataFrame:
    """spec: {(dataset, defense, noise): {metric: per-seed list, or one value for every seed}}."""
    rows = []
    for (dataset, defense, noise), metrics in spec.items():
        for i, seed in enumerate(seeds):
            values = {k: (v[i] if isinstance(v, (list, tuple, np.ndarray)) else v)
                      for k, v in metrics.items()}
            rows += seed_cell(dataset, defense, noise, seed, **values)
    return pd.DataFrame(rows)


def verdicts(summary, prestated=None):
    return {r.claim.id: r for r in cl.assess(summary, prestated)}


# ---- zero-width intervals ----

def test_three_identical_per_seed_differences_are_not_significant():
    a, b = {0: 0.507, 1: 0.507, 2: 0.507}, {0: 0.5, 1: 0.5, 2: 0.5}
    se = {s: float(stats.binomial_se(0.5, 150)) for s in range(3)}  # 150 attacked images
    mean, lo, hi, n = stats.paired_difference(a, b, se_a=se, se_b=se)
    assert mean == pytest.approx(0.007) and lo < 0 < hi and hi - lo > 0.05
    assert not stats.significantly_different(a, b, se_a=se, se_b=se)
    # the same through the claims and the cost table: +0.007 on each of 3 seeds, 150 images
    df = grid({("d", "none", 0.0): {"robust": 0.5, "n": 150},
               ("d", "weight_noise", 0.02): {"robust": 0.507, "n": 150}})
    r = verdicts(df)["fedsafe-noise-robustness"]
    assert r.verdict == cl.INCONCLUSIVE and r.rows[0]["high"] - r.rows[0]["low"] > 0.05
    costs = cl.cost_table(cl.replicate_metrics(df))
    assert not costs["significant"].any()
    assert "+0.007 [+0.007, +0.007]" not in cl.report(df)


def test_a_share_of_zero_still_has_sampling_error():
    assert stats.binomial_se(0.0, 100) > 0 and stats.binomial_se(1.0, 100) > 0
    assert math.isnan(float(stats.binomial_se(0.5, np.nan)))
    e = stats.estimate([0.0, 0.0, 0.0], [stats.binomial_se(0.0, 100)] * 3)
    lo, hi = e.limits(within=stats.bounds("robust"))
    assert lo == 0.0 and hi > 0.0


def test_sampling_errors_come_from_the_summary_columns():
    import json

    df = pd.DataFrame([
        {"clean_accuracy": 0.8, "n_test": 400},
        {"clean_accuracy": 0.8, "n_test": np.nan},  # an older summary: unknown
        {"auc": 0.6, "auc_ci_low": 0.55, "auc_ci_high": 0.65},
        {"ssim": 0.5, "image_ssim": json.dumps({"0": 0.4, "1": 0.6})},
        {"ssim": 0.5, "image_ssim": json.dumps({str(i): 0.3 + 0.02 * i for i in range(20)})}])
    clean = sampling_se(df, "clean_accuracy")
    assert clean[0] == pytest.approx(stats.binomial_se(0.8, 400)) and math.isnan(clean[1])
    assert sampling_se(df, "auc")[2] == pytest.approx(0.1 / (2 * 1.959964), rel=1e-4)
    # two images cannot measure their own spread: the bound 0.5 / sqrt(n) of any [0, 1] score
    assert sampling_se(df, "ssim")[3] == pytest.approx(0.5 / np.sqrt(2))
    many = [0.3 + 0.02 * i for i in range(20)]
    assert sampling_se(df, "ssim")[4] == pytest.approx(np.std(many, ddof=1) / np.sqrt(20))
    assert (sampling_se(df, "psnr") == 0).all()  # no sampling model: seeds alone
    # an unknown error is the documented floor, never zero
    assert stats.estimate([0.7, 0.7, 0.7], [np.nan] * 3).se == pytest.approx(
        stats.UNKNOWN_SE / math.sqrt(3))
    train = {"spec": {"dataset": "d", "defense": "none", "noise": 0.0, "seed": 0, "parts": ["none"],
                      "federation": {"lr": 0.1}}, "guarantee": "none", "rounds": 1,
             "clean_accuracy": 0.8, "train_seconds": 1.0}
    assert _train_row(train)["n_test"] is None
    assert _train_row({**train, "n_test": 400})["n_test"] == 400


def test_holm_matches_statsmodels():
    rng = np.random.default_rng(3)
    for k in (1, 2, 5, 9):
        p = rng.uniform(0, 0.2, size=k)
        assert stats.holm(p) == pytest.approx(multipletests(p, method="holm")[1])
    assert stats.holm([np.nan, 0.01]).tolist() == pytest.approx([1.0, 0.02])


# ---- combining rows ----

def test_a_universal_claim_with_a_counterexample_is_contradicted_and_mixed():
    # rows [S, S, C]: two formal cells at SSIM 0.1, one at 0.94 (below 0.3 in every such cell?)
    spec = {(d, "dp_fedavg", 1.0): {"ssim": [v - 0.01, v, v + 0.01]}
            for d, v in (("a", 0.1), ("b", 0.1), ("c", 0.94))}
    r = verdicts(grid(spec))["formal-stops-inversion"]
    assert [row["verdict"] for row in r.rows] == [cl.SUPPORTED, cl.SUPPORTED, cl.CONTRADICTED]
    assert r.verdict == r.final == cl.CONTRADICTED and r.mixed
    text = cl.report(grid(spec))
    assert "**contradicted** (mixed, exploratory" in text
    assert "Mixed: supported in a; b; contradicted in c." in text


def test_an_existential_claim_shows_the_dataset_that_contradicts_it():
    spec = {("a", "gradient_noise", 3e-5): {"ssim": [0.89, 0.9, 0.91]},
            ("b", "gradient_noise", 3e-5): {"ssim": [0.09, 0.1, 0.11]}}
    r = verdicts(grid(spec))["medpfl-noise-does-not-protect"]
    assert r.verdict == cl.SUPPORTED and r.mixed
    assert "contradicted in b" in cl.report(grid(spec))


def _null_robust_metrics(rng, sims, levels=4, seeds=10, sd=0.05):
    """`sims` independent grids side by side (one dataset each): no defense and weight noise at
    `levels` noise levels, all with the same true robust accuracy."""
    cells = [("none", 0.0, "none")] + [("weight_noise", 0.01 * (k + 1), "weight_noise")
                                       for k in range(levels)]
    n = sims * len(cells) * seeds
    return {"robust": pd.DataFrame({
        "dataset": np.repeat([f"sim{i}" for i in range(sims)], len(cells) * seeds),
        "setting": "eps=0.03",
        "defense": np.tile(np.repeat([c[0] for c in cells], seeds), sims),
        "noise_multiplier": np.tile(np.repeat([c[1] for c in cells], seeds), sims),
        "defense_parts": np.tile(np.repeat([c[2] for c in cells], seeds), sims),
        "seed": np.tile(np.arange(seeds), sims * len(cells)),
        "value": 0.3 + sd * rng.standard_normal(n), "se": 0.005})}


def test_at_the_best_level_holds_its_error_rate_under_the_null():
    """Picking the best of 4 noise levels and testing it on the same seeds said "supported" in
    7.3% of 10,000 null grids; Holm across the levels: 2.3% (nominal 2.5%)."""
    rng = np.random.default_rng(1)
    sims = 2000
    _, rows = cl.evaluate(BY_ID["fedsafe-noise-robustness"], _null_robust_metrics(rng, sims))
    per_grid = {r["dataset"]: r["after correction"] for r in rows}  # each grid's own verdict
    assert len(per_grid) == sims
    assert np.mean([v == cl.SUPPORTED for v in per_grid.values()]) <= 0.03


@pytest.mark.parametrize("k", [4, 8])
def test_an_existential_claim_holds_its_error_rate_under_the_null(k):
    """"At some noise level SSIM stays above 0.5" over k rows at SSIM 0.5 exactly: "any row
    supported" said "supported" in 9.5% (4 rows) and 18.5% (8 rows) of 10,000 null grids; Holm
    across the rows: 2.4% (nominal 2.5%)."""
    rng = np.random.default_rng(2)
    claim, sims, seeds = BY_ID["medpfl-noise-does-not-protect"], 2000, 10
    supported = 0
    for _ in range(sims):
        cells = {("d", "", "gradient_noise", level): (
            dict(enumerate(0.5 + 0.05 * rng.standard_normal(seeds))), dict.fromkeys(range(seeds),
                                                                             0.005))
            for level in range(k)}
        rows = [cl.Row("d", "", key, None, key) for key in cells]
        supported += cl.judge(claim, rows, cells).verdict == cl.SUPPORTED
    assert supported / sims <= 0.03


def test_a_pre_stated_level_is_tested_alone():
    spec = {("d", "none", 0.0): {"robust": [0.30, 0.31, 0.29, 0.30, 0.31, 0.29]}}
    for noise, gain in ((0.01, 0.0), (0.02, 0.0), (0.03, 0.1), (0.04, 0.0)):
        spec[("d", "weight_noise", noise)] = {"robust": [0.30 + gain + 0.01 * (s % 3 - 1)
                                                         for s in range(6)]}
    df = grid(spec, seeds=range(6))
    found = verdicts(df)["fedsafe-noise-robustness"]
    assert len(found.rows) == 4 and found.verdict == cl.SUPPORTED  # some level, Holm
    stated = verdicts(df, {"fedsafe-noise-robustness": 0.03})["fedsafe-noise-robustness"]
    assert [r["cell"] for r in stated.rows] == ["weight_noise σ=0.03"]
    assert stated.verdict == cl.SUPPORTED
    other = verdicts(df, {"fedsafe-noise-robustness": {"level": 0.01}})["fedsafe-noise-robustness"]
    assert other.verdict != cl.SUPPORTED  # the stated level has no effect: no shopping
    assert "pre-stated level σ=0.01" in cl.report(df, {"fedsafe-noise-robustness": 0.01})
    missing = verdicts(df, {"fedsafe-noise-robustness": 0.5})["fedsafe-noise-robustness"]
    assert missing.verdict == cl.UNTESTED and "σ=0.5 is not in the grid" in missing.note
    with pytest.raises(ValueError, match="unknown claims"):
        cl.assess(df, {"no-such-claim": 0.1})


# ---- equivalence, minimal effects, labels, correction across claims ----

def test_an_effect_on_the_threshold_is_decided_equivalent():
    seeds = range(10)
    jitter = [0.002 * ((s * 7) % 5 - 2) for s in seeds]
    spec = {("d", "none", 0.0): {"robust": [0.30 + j for j in jitter]},
            ("d", "weight_noise", 0.02): {"robust": [0.304 + j * 0.5 for j in jitter]},
            ("d", "dp_sgd", 1.0): {"auc": [0.5498 + j for j in jitter]}}
    v = verdicts(grid(spec, seeds))
    assert v["fedsafe-noise-robustness"].final == cl.EQUIVALENT  # +0.004: no effect
    assert v["formal-stops-membership"].final == cl.EQUIVALENT  # AUC 0.5498 against 0.55
    text = cl.report(grid(spec, seeds))
    assert "**equivalent**" in text and "equivalent within 0 ± 0.03" in text


def test_transfer_must_drop_by_the_stated_minimum():
    def transfer(drop):
        spec = {("d", "none", 0.0): {"robust": 0.3, "transfer": [0.99, 1.0, 0.98]},
                ("d", "weight_noise", 0.02): {"robust": 0.3,
                                              "transfer": [0.99 - drop, 1.0 - drop, 0.98 - drop]}}
        return verdicts(grid(spec, range(3)))["fedsafe-noise-transfer"].verdict

    assert transfer(0.3) == cl.SUPPORTED
    assert transfer(0.005) != cl.SUPPORTED  # below 0, not by the minimal effect


def test_claims_md_shows_bh_adjusted_p_values_and_reads_verdicts_from_them():
    # membership alone would be supported (p about 0.02); a second tested claim (p about 0.5)
    # doubles its Benjamini-Hochberg-adjusted p past 0.025
    spec = {("d", "none", 0.0): {"ssim": [0.3, 0.5, 0.7]},
            ("d", "dp_sgd", 1.0): {"auc": [0.474, 0.494, 0.514]}}
    v = verdicts(grid(spec))
    member = v["formal-stops-membership"]
    assert member.verdict == cl.SUPPORTED and member.p <= stats.ALPHA
    assert member.adjusted > stats.ALPHA and member.final == cl.INCONCLUSIVE
    text = cl.report(grid(spec))
    assert "| claim | source | verdict | rule | p | adjusted p |" in text
    assert "Benjamini-Hochberg" in text and "Holm" in text and "exploratory" in text
    lines = text.splitlines()
    first = lines.index("| claim | source | verdict | rule | p | adjusted p |") + 2
    table = [line.split("|") for line in lines[first:first + len(cl.CLAIMS)]]
    number = lambda x: 0.0 if x.strip().startswith("<") else float(x.split()[0])  # noqa: E731
    tested = [(number(p), number(adj)) for *_, p, adj, _ in table if p.strip() != "–"]
    assert len(tested) == 2 and all(adj >= p for p, adj in tested)
    assert "Before the correction across claims: supported" in text


def _strong(seeds):
    return grid({("d", "none", 0.0): {"robust": 0.1, "ssim": 0.85},
                 ("d", "weight_noise", 0.02): {"robust": 0.4},
                 ("d", "dp_sgd", 1.0): {"ssim": 0.05, "auc": 0.5}}, seeds=seeds)


def test_fewer_than_six_seeds_is_exploratory():
    assert stats.MIN_CONFIRMATORY_SEEDS == 6 and 0.5 ** 5 > stats.ALPHA >= 0.5 ** 6
    few, enough = verdicts(_strong(range(5))), verdicts(_strong(range(6)))
    for r in few.values():
        assert ("exploratory" in r.labels) == (r.verdict != cl.UNTESTED)
    assert not any("exploratory" in r.labels for r in enough.values())
    assert "**supported** (exploratory)" in cl.report(_strong(range(5)))
    assert "**supported** |" in cl.report(_strong(range(6)))


def test_a_verdict_one_drift_away_from_changing_is_fragile():
    # AUC 0.543 with a tight spread: below 0.55, but one seed 0.01 higher undoes it
    near = grid({("d", "dp_sgd", 1.0): {"auc": [0.538, 0.543, 0.548, 0.54, 0.546, 0.541]}},
                seeds=range(6))
    r = verdicts(near)["formal-stops-membership"]
    assert r.final == cl.SUPPORTED and "fragile" in r.labels
    assert "raising seed" in r.fragile and "by 0.01" in r.fragile
    assert "Fragile: raising seed" in cl.report(near)
    far = verdicts(_strong(range(6)))
    assert not far["formal-stops-membership"].fragile
    assert far["formal-stops-membership"].final == cl.SUPPORTED


# ---- printed limits ----

INTERVAL = re.compile(r"([+-]?\d+\.\d+) \[([+-]?\d+\.\d+), ([+-]?\d+\.\d+)\]")
PLUS_MINUS = re.compile(r"(\d+\.\d+) ± (\d+\.\d+)")


def _spread_near_the_edges():
    return grid({("d", "none", 0.0): {"clean": [0.99, 0.7, 0.999], "robust": [0.0, 0.3, 0.01],
                                      "ssim": [0.99, 0.6, 0.999], "auc": [0.99, 0.7, 0.995],
                                      "transfer": [1.0, 0.6, 1.0]},
                 ("d", "weight_noise", 0.02): {"clean": [0.5, 0.99, 0.98],
                                               "robust": [0.9, 0.0, 0.02],
                                               "transfer": [0.0, 0.9, 0.05]},
                 ("d", "dp_sgd", 1.0): {"clean": [0.2, 0.9, 0.5], "robust": [0.01, 0.0, 0.4],
                                        "ssim": [0.01, 0.4, 0.0], "auc": [0.5, 0.9, 0.51]}})


def test_no_printed_limit_leaves_the_range():
    df = _spread_near_the_edges()
    text = cl.report(df)
    found = INTERVAL.findall(text)
    assert len(found) >= 8
    for mean, lo, hi in found:
        signed = mean[0] in "+-"
        low, high = (-1, 1) if signed else (0, 1)
        assert low <= float(lo) <= float(mean) <= float(hi) <= high, (mean, lo, hi)
    assert "1.000]" in text  # clipped, not past 1
    df = df.assign(flags="")
    for long in (fedsafe_long(df), tradeoff_long(df), medpfl_long(df)):
        table, _ = stats_table(long)
        for column in table.columns[3:]:
            if column == "epsilon":  # not a share
                continue
            for cell in table[column]:
                for _mean, lo, hi in INTERVAL.findall(cell):
                    assert 0 <= float(lo) <= float(hi) <= 1, (column, cell)
                for mean, half in PLUS_MINUS.findall(cell):
                    assert 0 <= float(mean) - float(half) and float(mean) + float(half) <= 1, cell
    assert any("[" in c for c in stats_table(tradeoff_long(df))[0]["recon. SSIM"])


# ---- bold marks ----

def _long(cells: dict, metric="robust_accuracy", column="robust acc."):
    return pd.DataFrame([{"dataset": "d", "defense": defense, "noise_multiplier": 0.0, "seed": s,
                          "value": v, "se": 0.01, "column": column, "metric": metric}
                         for defense, values in cells.items() for s, v in enumerate(values)])


def test_a_single_seed_cell_neither_wins_nor_hides_a_tie():
    tie = {k: {0: 0.5, 1: 0.5, 2: 0.5} for k in "abc"}
    assert stats.best_set({**tie, "one": {0: 0.9}}, True, never_best=()) == set()
    assert stats.best_set({**tie, "d": {0: 0.9, 1: 0.9, 2: 0.9}}, True,
                          never_best={"d"}) == set()  # the others still all tie
    clear = {"a": {0: 0.9, 1: 0.91, 2: 0.9}, "b": {0: 0.1, 1: 0.12, 2: 0.1}, "one": {0: 1.0}}
    assert stats.best_set(clear, True) == {"a"}


def test_a_column_where_every_cell_ties_has_no_bold():
    _, best = stats_table(_long({"a": [0.0, 0.0, 0.0], "b": [0.0, 0.0, 0.0],
                                    "c": [0.0, 0.01, 0.0]}))
    assert not best["robust acc."].any()  # e.g. robust accuracy 0.000 everywhere
    # a cell not significantly worse than the best stays bold; a clearly worse one does not
    _, best = stats_table(_long({"a": [0.50, 0.52, 0.51], "b": [0.49, 0.53, 0.50],
                                    "c": [0.10, 0.11, 0.12]}))
    assert best["robust acc."].tolist() == [True, True, False]
    # one seed: nothing is bold
    _, best = stats_table(_long({"a": [0.9], "b": [0.1]}))
    assert not best["robust acc."].any()


def test_a_flagged_cell_is_never_best_and_does_not_make_a_tie():
    per_seed = {"none": {0: 0.1, 1: 0.11, 2: 0.12}, "one_class": {0: 0.34, 1: 0.34, 2: 0.34}}
    assert stats.best_set(per_seed, True, never_best={"one_class"}) == {"none"}
    assert stats.best_set(per_seed, True) == {"one_class"}


# ---- crash cases: every subset of a grid gives a report ----

def _full(seeds=range(3)):
    return grid({("d", "none", 0.0): {"robust": 0.1, "transfer": 1.0, "ssim": 0.85, "auc": 0.7},
                 ("d", "weight_noise", 0.02): {"robust": 0.3, "transfer": 0.5, "ssim": 0.8,
                                               "auc": 0.69},
                 ("d", "gradient_noise", 3e-5): {"robust": 0.1, "ssim": 0.9, "auc": 0.7},
                 ("d", "dp_sgd", 1.0): {"robust": 0.05, "ssim": 0.1, "auc": 0.51}}, seeds=seeds)


def _subsets():
    full = _full()
    yield "full", full
    yield "one seed", _full(seeds=[0])
    yield "one defense", full[full["defense"] == "none"]
    for family in ("evasion", "inversion", "membership"):
        yield f"only {family}", full[full["family"].isin([family, np.nan])]
        yield f"without {family}", full[full["family"] != family]
    yield "no attack rows", full.drop_duplicates(["dataset", "defense", "seed"]).assign(
        family=np.nan, attack=np.nan)
    nan_base = full.copy()  # base cells whose values are all NaN (the idxmax crash)
    nan_base.loc[nan_base["defense"] == "none", ["robust_accuracy", "transfer_rate", "ssim",
                                                 "auc", "clean_accuracy"]] = np.nan
    yield "NaN base cells", nan_base
    nan_all = full.copy()
    nan_all[["robust_accuracy", "transfer_rate", "ssim", "auc"]] = np.nan
    yield "every attack value NaN", nan_all
    yield "missing cells", full.drop(index=full.index[::3])
    yield "old summary", full.drop(columns=["n_test", "n_samples", "auc_ci_low", "auc_ci_high",
                                            "lr", "guarantee", "defense_parts"])
    yield "fgsm only", full.assign(attack=lambda f: f["attack"].replace("pgd", "fgsm"))
    yield "empty", full.iloc[0:0]
    yield "no columns", pd.DataFrame()


@pytest.mark.parametrize("name, summary", list(_subsets()), ids=[n for n, _ in _subsets()])
def test_the_report_never_raises(name, summary):
    text = cl.report(summary)
    for c in cl.CLAIMS:
        assert c.id in text
    results = cl.assess(summary)
    assert {r.final for r in results} <= {cl.SUPPORTED, cl.CONTRADICTED, cl.EQUIVALENT,
                                          cl.INCONCLUSIVE, cl.UNTESTED}
    if name in ("one defense", "only membership", "empty", "no columns", "no attack rows"):
        assert verdicts(summary)["fedsafe-noise-robustness"].final == cl.UNTESTED
    if name == "NaN base cells":
        assert verdicts(summary)["fedsafe-noise-robustness"].final == cl.UNTESTED
    if name == "one seed":
        assert {r.final for r in results} <= {cl.INCONCLUSIVE, cl.UNTESTED}


# ---- compare ----

def test_compare_pairs_by_seed_and_lists_changed_verdicts(tmp_path, capsys):
    from fedsafe.cli import main
    from fedsafe.compare import drift, verdict_changes

    a = _strong(range(6))
    b = a.copy()
    b.loc[(b["seed"] == 0) & (b["family"] == "evasion"), "robust_accuracy"] += 0.01
    b.loc[b["family"] == "membership", "auc"] = 0.7  # formal-stops-membership turns around
    gaps = drift(a, b).set_index("metric")
    assert gaps.loc["robust_accuracy", "max"] == pytest.approx(0.01)
    assert gaps.loc["robust_accuracy", "median"] == 0
    assert gaps.loc["clean_accuracy", "max"] == 0
    shuffled = a.assign(seed=a["seed"].map(lambda s: (s + 1) % 6))  # same values, other seeds
    assert drift(a, shuffled).set_index("metric").loc["robust_accuracy", "max"] == 0  # constant
    changed = verdict_changes(a, b)
    assert changed["claim"].tolist() == ["formal-stops-membership"]
    assert changed["a"].iloc[0].startswith("supported") and changed["b"].iloc[0].startswith(
        "contradicted")
    a.to_csv(tmp_path / "a.csv", index=False)
    b.to_csv(tmp_path / "b.csv", index=False)
    with pytest.raises(SystemExit) as exit_:
        main(["compare", str(tmp_path / "a.csv"), str(tmp_path / "b.csv"), "--fail"])
    assert exit_.value.code == 1
    out = capsys.readouterr().out
    assert "Drift per metric" in out and "p90" in out and "formal-stops-membership" in out
    main(["compare", str(tmp_path / "a.csv"), str(tmp_path / "a.csv"), "--fail"])
    assert "No claim verdict changed." in capsys.readouterr().out
