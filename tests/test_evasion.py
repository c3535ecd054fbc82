"""Evasion measured to the RobustBench standard, on a small trained cell: attack strength
ordering, the per-sample worst case, both threat models, the fake-defense flags and parse-time
option checks."""

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import base_config
from conftest import cell_context as _ctx

from fedsafe import config_check
from fedsafe import robustness as rb
from fedsafe.attacks import ATTACKS
from fedsafe.attacks.context import AttackContext
from fedsafe.config import specs
from fedsafe.config.schema import ConfigError
from fedsafe.results.intervals import stats_table
from fedsafe.results.tables import _long

run_fgsm, run_pgd, run_apgd, run_cw, run_square, run_autoattack = (
    ATTACKS.load(k) for k in ("fgsm", "pgd", "apgd", "cw", "square", "autoattack"))

pytestmark = pytest.mark.xdist_group("attacks")  # shares the trained `cell` with test_attacks

EPS = [0.0, 0.02, 0.05, 0.3]
N = 60
BASE = {"dataset": "mri", "defense": "none", "noise_multiplier": 0.0, "seed": 0,
        "clean_accuracy": 0.9}


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """As attack jobs run: many small attack steps on a busy machine are far faster on one
    thread than on oversubscribed ones."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _results(ctx, attacks: dict) -> list[dict]:
    """Attack JSONs as the attack job writes them."""
    return [{"attack": name, "type": name, "family": "evasion", "rows": run(ctx, opts)}
            for name, (run, opts) in attacks.items()]


def _summary(results: list[dict], base=BASE) -> pd.DataFrame:
    rows = [{**base, "attack": r["attack"], "family": "evasion", **rb.without_masks(row)}
            for r in results for row in r["rows"]]
    return rb.add_flags(pd.DataFrame(rows + rb.worst_case_rows(base, results)))


def _acc(results, attack) -> dict:
    return {row["attack_value"]: row["robust_accuracy"]
            for r in results if r["attack"] == attack for row in r["rows"]}


@pytest.fixture(scope="module")
def suite(cell):
    ctx = _ctx(cell)
    common = {"eps": EPS, "n_samples": N, "transfer": False}
    return _results(ctx, {
        "fgsm": (run_fgsm, common),
        "pgd": (run_pgd, common),  # the defaults: 20 steps of 2.5 eps / 20, 2 restarts
        "apgd_dlr": (run_apgd, {**common, "loss": "dlr", "steps": 20}),
        "autoattack": (run_autoattack, {**common, "steps": 20, "n_queries": 200}),
        "square": (run_square, {**common, "n_queries": 200}),
    })


def test_strength_ordering_on_trained_cell(suite):
    fgsm, pgd, aa = (_acc(suite, a) for a in ("fgsm", "pgd", "autoattack"))
    for eps in EPS:
        assert pgd[eps] <= fgsm[eps]  # default PGD is never weaker than FGSM ...
        masks = {r["attack"]: rb._mask(row["robust_mask"], N) for r in suite for row in r["rows"]
                 if row["attack_value"] == eps}
        assert not (masks["pgd"] & ~masks["fgsm"]).any()  # ... on any sample
        assert aa[eps] <= pgd[eps]  # AutoAttack is never weaker than PGD
    assert pgd[0.0] > 0.5 and pgd[0.05] < pgd[0.0]


def test_worst_case_is_per_sample_and_monotone(suite):
    worst = {r["attack_value"]: r for r in rb.worst_case_rows(BASE, suite)}
    for eps in EPS:
        singles = [_acc(suite, r["attack"])[eps] for r in suite]
        assert worst[eps]["robust_accuracy"] <= min(singles) + 1e-12
        masks = [rb._mask(row["robust_mask"], N) for r in suite for row in r["rows"]
                 if row["attack_value"] == eps]
        assert worst[eps]["robust_accuracy"] == pytest.approx(np.mean(np.all(masks, axis=0)))
    accs = [worst[e]["robust_accuracy"] for e in EPS]
    assert accs == sorted(accs, reverse=True)  # never rises with eps
    assert accs[-1] == 0.0  # eps 0.3 breaks everything on a model without a defense
    assert _summary(suite)["flags"].iloc[0] == ""


def test_same_subset_across_attacks(cell):
    ctx = _ctx(cell)
    short = run_fgsm(ctx, {"eps": [0.0], "n_samples": 20, "transfer": False})[0]
    long = run_pgd(ctx, {"eps": [0.0], "n_samples": 40, "transfer": False})[0]
    assert long["clean_mask"][:20] == short["clean_mask"]  # a prefix of one seeded permutation
    assert rb.worst_case_rows(BASE, [{"attack": "a", "family": "evasion", "rows": [short]},
                                     {"attack": "b", "family": "evasion", "rows": [long]}]
                              )[0]["n_samples"] == 20


def test_cw_scores_within_each_l2_radius(cell):
    rows = run_cw(_ctx(cell), {"eps": [0.1, 0.5, 2.0], "steps": 30, "n_samples": 30,
                               "transfer": False})
    assert [r["norm"] for r in rows] == ["L2"] * 3
    for r in rows:
        assert r["l2_max"] <= r["attack_value"] + 1e-4
    accs = [r["robust_accuracy"] for r in rows]
    assert accs == sorted(accs, reverse=True) and accs[-1] < accs[0]


def test_client_copies_are_a_separate_threat_model(cell):
    row = run_pgd(_ctx(cell, "weight_noise", 0.05), {"eps": [0.05], "n_samples": 40, "draws": 2,
                                                      "steps": 5, "restarts": 1})[0]
    n_clients = len(cell[1].clients)
    assert len(row["client_robust_masks"]) == 2 * n_clients and row["noise_draws"] == 2
    assert 0.0 <= row["client_robust_accuracy"] <= 1.0
    worst = rb.worst_case_rows(BASE, [{"attack": "pgd", "family": "evasion", "rows": [row]}])[0]
    assert worst["client_robust_accuracy"] == pytest.approx(row["client_robust_accuracy"])


class _Masked(torch.nn.Module):
    """Gradient masking: logits scaled by 1e4 saturate the softmax, so cross-entropy gradients
    vanish while predictions are unchanged."""

    def __init__(self, inner):
        super().__init__()
        self.inner = inner

    def forward(self, x):
        return self.inner(x) * 1e4


class _MaskedContext(AttackContext):
    def new_model(self, weights=None):
        return _Masked(super().new_model(weights)).eval()


def test_gradient_masking_is_flagged(cell):
    spec, data, init, trained = cell
    ctx = _MaskedContext({**spec, "parts": ["none"], "options": {}}, data, trained, {0: init}, {})
    common = {"eps": [0.05], "n_samples": N, "transfer": False}
    results = _results(ctx, {"pgd": (run_pgd, common),
                             "square": (run_square, {**common, "n_queries": 300})})
    assert _acc(results, "square")[0.05] < _acc(results, "pgd")[0.05] - 0.1
    assert "black-box beats white-box" in _summary(results)["flags"].iloc[0]


class _Random(_Masked):
    """Random at inference (input noise): AutoAttack's `auto` version switches to `rand` (EOT)."""

    def forward(self, x):
        return self.inner(x + 0.01 * torch.randn_like(x))


class _RandomContext(AttackContext):
    def new_model(self, weights=None):
        return _Random(super().new_model(weights)).eval()


def test_autoattack_rand_on_a_random_model(cell):
    spec, data, init, trained = cell
    ctx = _RandomContext({**spec, "parts": ["none"], "options": {}}, data, trained, {0: init}, {})
    row = run_autoattack(ctx, {"eps": [0.05], "n_samples": 20, "steps": 5, "eot_iter": 2,
                               "transfer": False})[0]
    assert row["random_model"] and row["autoattack_version"] == "rand"
    assert row["robust_accuracy"] < row["clean_accuracy"]


def test_one_class_model_is_not_trained_and_never_best():
    rows = []  # three seeds: bold needs a difference shown significant over seeds
    for defense, clean, seed in [(d, c, s) for d, c in (("none", 0.8), ("one_class", 0.34))
                                 for s in range(3)]:
        base = {**BASE, "defense": defense, "clean_accuracy": clean, "seed": seed}
        for eps, acc in ((0.0, clean), (0.03, 0.1 + 0.01 * seed if defense == "none" else clean)):
            rows.append({**base, "attack": "pgd", "family": "evasion", "attack_value": eps,
                         "robust_accuracy": acc, "majority_rate": 0.34, "norm": "Linf",
                         "black_box": False})
    summary = rb.add_flags(pd.DataFrame(rows))
    flags = summary.drop_duplicates("defense").set_index("defense")["flags"]
    assert flags["one_class"] == "not trained" and flags["none"] == ""
    long = _long(summary.assign(attack="worst_case"), "robust_accuracy", "robust acc.")
    text, best = stats_table(long, rb.flags_by_point(summary))
    text, best = rb.with_flags(text, best, rb.flags_by_point(summary))
    row = text.index[text["defense"] == "one_class"][0]
    assert not best.loc[row].any() and text.loc[row, "flags"] == "not trained"
    assert best.loc[text.index[text["defense"] == "none"][0], "robust acc."]


@pytest.mark.parametrize("attack, options, key", [
    ("pgd", {"stepz": 50}, r"attacks\.a\.options\.stepz: unknown option"),
    ("pgd", {"steps": 0}, r"attacks\.a\.options\.steps: 0 out of range"),
    ("apgd", {"eps": [0.03, 1.5]}, r"attacks\.a\.options\.eps: 1\.5 out of range"),
    ("apgd", {"loss": "hinge"}, r"attacks\.a\.options\.loss: 'hinge'; expected one of"),
    ("square", {"n_queries": 0}, r"attacks\.a\.options\.n_queries: 0 out of range"),
    ("autoattack", {"version": "plus"}, r"attacks\.a\.options\.version: 'plus'; expected"),
    ("cw", {"c": 0}, r"attacks\.a\.options\.c: 0 out of range"),
])
def test_attack_options_checked_at_parse_time(attack, options, key):
    cfg = base_config(attacks={"a": {"type": attack, "options": options}})
    with pytest.raises(ConfigError, match=key):
        config_check.validate(cfg)


def test_defaults_filled_for_jobs():
    cfg = base_config(attacks={"pgd_fedsafe": {"type": "pgd", "options": {"steps": 6,
                                                                          "step_fraction": 6}},
                               "pgd": {}})
    config_check.validate(cfg)
    assert specs.attack_spec(cfg, "pgd")["options"]["restarts"] == 2
    assert specs.attack_spec(cfg, "pgd_fedsafe")["options"]["step_fraction"] == 6
