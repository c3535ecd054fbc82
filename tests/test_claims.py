"""The claims report on synthetic summaries whose truth is known: supported, contradicted,
inconclusive and untested verdicts each come from the data, not from the claim."""

import numpy as np
import pandas as pd

from fedsafe import claims as cl

CELLS = {  # defense -> (parts, guarantee, epsilon, clean, robust, ssim, auc), per seed + noise
    "none": ("none", "none: no defense", np.nan, 0.80, 0.10, 0.85, 0.70),
    "weight_noise": ("weight_noise", "none: heuristic", np.nan, 0.79, 0.30, 0.80, 0.69),
    "dp_sgd": ("dp_sgd", "sample-level (epsilon, delta)-DP", 8.0, 0.60, 0.05, 0.70, 0.51),
}


def summary(seeds=(0, 1, 2), cells=CELLS, jitter=0.003):
    rng = np.random.default_rng(0)
    rows = []
    for defense, (parts, guarantee, eps, clean, robust, ssim, auc) in cells.items():
        for seed in seeds:
            e = lambda v: v + jitter * rng.standard_normal()  # noqa: E731
            base = {"config_hash": "x", "dataset": "mri", "defense": defense,
                    "noise_multiplier": 0.0 if defense == "none" else 1.0, "seed": seed,
                    "defense_parts": parts, "guarantee": guarantee, "epsilon": eps,
                    "clean_accuracy": e(clean)}
            rows += [{**base, "attack": "pgd", "family": "evasion", "attack_param": "eps",
                      "attack_value": 0.03, "robust_accuracy": e(robust), "transfer_rate": 0.5},
                     {**base, "attack": "ig", "family": "inversion", "attack_param": "round",
                      "attack_value": 1.0, "ssim": e(ssim)},
                     {**base, "attack": "mia", "family": "membership",
                      "attack_param": "n_samples", "attack_value": 100.0, "auc": e(auc)}]
    return pd.DataFrame(rows)


def verdicts(df):
    metrics = cl.replicate_metrics(df)
    return {c.id: cl.evaluate(c, metrics)[0] for c in cl.CLAIMS}


def test_true_false_and_untested_claims():
    v = verdicts(summary())
    assert v["fedsafe-noise-robustness"] == cl.SUPPORTED  # 0.30 vs 0.10 robust accuracy
    assert v["fedsafe-noise-cheap"] == cl.SUPPORTED  # loses 0.01 clean accuracy
    assert v["medpfl-server-reconstructs"] == cl.SUPPORTED  # SSIM 0.85
    assert v["formal-stops-inversion"] == cl.CONTRADICTED  # DP cell still at SSIM 0.70
    assert v["formal-stops-membership"] == cl.SUPPORTED  # AUC 0.51
    assert v["fedsafe-noise-close-to-adv"] == cl.UNTESTED  # no adversarial training cell
    assert v["medpfl-noise-does-not-protect"] == cl.UNTESTED  # no gradient-noise cell
    # transfer 0.5 either way: no effect, so not lowered by the stated minimum (it was
    # inconclusive while the rule asked only for "below 0", which any difference satisfies)
    assert v["fedsafe-noise-transfer"] == cl.CONTRADICTED


def test_one_seed_is_inconclusive_and_noise_is_not_an_effect():
    assert set(verdicts(summary(seeds=(0,))).values()) <= {cl.INCONCLUSIVE, cl.UNTESTED}
    same = {k: (*v[:3], 0.8, 0.1, 0.85, 0.7) for k, v in CELLS.items()}  # no real differences
    v = verdicts(summary(seeds=range(5), cells=same, jitter=0.05))
    assert v["fedsafe-noise-robustness"] == cl.INCONCLUSIVE


def test_report_lists_every_claim_and_the_costs():
    text = cl.report(summary())
    for c in cl.CLAIMS:
        assert c.id in text
    assert "**contradicted**" in text and "**untested**" in text and "Untested: the grid needs" in text
    assert "What each defense costs" in text and "dp_sgd σ=1" in text


def test_compare_lists_only_metrics_that_moved(tmp_path):
    from fedsafe.cli import main
    from fedsafe.compare import compare

    a = summary()
    b = a.copy()
    b.loc[b["defense"] == "dp_sgd", "auc"] += 0.2  # a real change in one cell
    b["ssim"] += 1e-4  # within the seeds' intervals
    b["train_seconds"] = 99.0  # timings never count
    moved = compare(a, b)
    assert set(zip(moved["defense"], moved["metric"])) == {("dp_sgd", "auc")}
    assert compare(a, a).empty
    one = compare(summary(seeds=(0,)), summary(seeds=(0,)).assign(auc=lambda f: f["auc"] + 1e-3))
    assert set(one["metric"]) == {"auc"} and "1 seed" in one["why"].iloc[0]
    a.to_csv(tmp_path / "a.csv", index=False)
    b.to_csv(tmp_path / "b.csv", index=False)
    try:
        main(["compare", str(tmp_path / "a.csv"), str(tmp_path / "b.csv"), "--fail"])
        raise AssertionError("--fail should exit 1")
    except SystemExit as e:
        assert e.code == 1


def test_publish_copies_the_generated_verdicts(tmp_path):
    from fedsafe.publish import END, START, publish

    results = tmp_path / "results"
    (results / "tables").mkdir(parents=True)
    (results / "claims.md").write_text(cl.report(summary()))
    (results / "tables" / "comparison.md").write_text("# Comparison\n\n| a |\n|---|\n| 1 |\n")
    readme = tmp_path / "README.md"
    readme.write_text(f"intro\n{START}\nold, typed by hand\n{END}\nrest\n")
    summary().to_csv(results / "summary.csv", index=False)
    for _ in range(2):  # idempotent
        publish(results, "config/published.yaml", readme, tmp_path / "docs", commit="abc1234")
    text = readme.read_text()
    assert "typed by hand" not in text and text.count(START) == 1 and text.endswith("rest\n")
    assert "| claim | source | verdict | rule |" in text and "**contradicted**" in text
    assert "**untested**" not in text and "4 claim(s) of the papers" in text  # counted, not listed
    assert "`make publish` then `fedsafe publish" in text and "commit `abc1234`" in text
    docs = (tmp_path / "docs" / "published" / "results.md").read_text()
    assert "## Claims" in docs and "## All tables" in docs
    # the headline grid's summary is committed beside its page, unchanged
    assert (tmp_path / "docs" / "published" / "summary.csv").read_text() == \
        (results / "summary.csv").read_text()
    # the default grid (exploratory) fills its own page and leaves the README as it is
    publish(results, "config/config.yaml", readme, tmp_path / "docs")
    assert readme.read_text() == text
    assert "`make run` then `fedsafe publish" in (tmp_path / "docs" / "results-default.md").read_text()
    # another config fills its own page, with its audited cells
    audit_row = {"dataset": "d", "defense": "dp_fedavg", "noise_multiplier": 1.0,
                 "attack_type": "privacy_audit", "attack_value": 100.0, "formal_epsilon": 4.0,
                 "audit_level": "client-level", "epsilon_ratio": 0.25, "violation": 0,
                 "audit_ceiling": 3.0}
    pd.DataFrame([{**audit_row, "seed": s, "empirical_epsilon": e}
                  for s, e in enumerate((0.9, 1.0, 1.1))]).to_csv(results / "summary.csv")
    publish(results, "config/audit.yaml", readme, tmp_path / "docs")
    page = (tmp_path / "docs" / "results-audit.md").read_text()
    assert readme.read_text() == text and "--configfile config/audit.yaml" in page
    assert ("| d | dp_fedavg | 1 | 100 client-level | 3 | 4.00 ± 0.00 | 1.00 ± 0.25 | 0.25 ± 0.00 | "
            "3.00 (accountant above it: no violation could show) | 0 |" in page)
    assert "## Audited cells" in (tmp_path / "docs" / "results-audit.md").read_text()


def test_medpfl_claim_reads_noise_on_the_gradients_scale():
    # the defense noises the update (lr x gradient): b on the update is b / lr on the gradient
    cells = {**CELLS, "gradient_noise": ("gradient_noise", "none: heuristic", np.nan, 0.8, 0.1,
                                         0.9, 0.7)}
    for noise, expected in ((0.01, cl.UNTESTED), (3e-5, cl.SUPPORTED)):
        df = summary(cells=cells).assign(lr=0.003)
        df.loc[df["defense"] == "gradient_noise", "noise_multiplier"] = noise
        assert verdicts(df)["medpfl-noise-does-not-protect"] == expected, noise


def test_a_grid_without_evasion_rows_leaves_those_claims_untested():
    df = summary()
    v = verdicts(df[df["family"] != "evasion"])
    assert v["fedsafe-noise-robustness"] == cl.UNTESTED and v["fedsafe-noise-transfer"] == cl.UNTESTED
    assert v["medpfl-server-reconstructs"] == cl.SUPPORTED


def _malicious(shares_by_defense, seeds=range(10), n_images=96):
    """Replicates whose malicious-server attack recovers the given share of its images."""
    rows = []
    for defense, share in shares_by_defense.items():
        for seed in seeds:
            rows.append({"config_hash": "x", "dataset": "mri", "defense": defense,
                         "noise_multiplier": 0.0, "seed": seed, "defense_parts": defense,
                         "guarantee": "none", "epsilon": np.nan, "clean_accuracy": 0.8,
                         "attack": "imprint", "family": "malicious", "attack_param": "round",
                         "attack_value": 1.0, "n_images": n_images,
                         "reconstruction_success_rate": share(seed)})
    return pd.DataFrame(rows)


def test_the_malicious_server_claims_read_the_share_of_images_recovered():
    by_id = {c.id: c for c in cl.CLAIMS}
    verdict = lambda df, claim: cl.evaluate(by_id[claim], cl.replicate_metrics(df))[0]  # noqa: E731
    # through secure aggregation the server recovers most images; DP-SGD leaves it nothing
    df = _malicious({"secagg": lambda s: 0.80 + 0.01 * (s % 3), "dp_sgd": lambda s: 0.0})
    assert verdict(df, "secagg-does-not-stop-malicious") == cl.SUPPORTED
    assert verdict(df, "dp-sgd-stops-malicious") == cl.SUPPORTED
    # the cases that must fail: secure aggregation that does stop it, DP-SGD that does not
    df = _malicious({"secagg": lambda s: 0.0, "dp_sgd": lambda s: 0.6 + 0.02 * (s % 2)})
    assert verdict(df, "secagg-does-not-stop-malicious") == cl.CONTRADICTED
    assert verdict(df, "dp-sgd-stops-malicious") == cl.CONTRADICTED
    # identical shares on few images: binomial sampling error keeps the interval from being exact
    # (0.09 of 12 images is 1 image: not shown to be below 0.1)
    df = _malicious({"dp_sgd": lambda s: 1 / 12}, n_images=12)
    assert verdict(df, "dp-sgd-stops-malicious") != cl.SUPPORTED
    # no malicious-server rows: untested
    assert verdict(summary(), "secagg-does-not-stop-malicious") == cl.UNTESTED


def test_the_claims_floor_the_ssim_error_on_few_images_as_the_tables_do():
    """Two reconstructed images give the spread over images one degree of freedom: the claims
    read the same floored error (0.5 / sqrt(2)) as the inversion table, not the measured 0.005."""
    import json

    from fedsafe.results.sampling import sampling_se
    from fedsafe.results.tables import inversion_worst_case

    row = {"dataset": "mri", "defense": "dp_sgd", "noise_multiplier": 1.0, "seed": 0,
           "attack": "ig", "family": "inversion", "ssim": 0.015,
           "image_ssim": json.dumps({"0:0": 0.01, "0:1": 0.02})}
    inv = pd.DataFrame([row])
    claim_se = float(inversion_worst_case(inv)["se"].iloc[0])
    table_se = float(sampling_se(inv, "ssim").iloc[0])
    assert claim_se == table_se == 0.5 / np.sqrt(2)
