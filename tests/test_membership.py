"""Membership inference (LOSS, offline RMIA) and ROC / epsilon metrics."""
import math

import numpy as np
import pytest
import torch
from torch import nn

from fedsafe.attacks.membership import loss_scores, mia_loss, mia_reference
from fedsafe.metrics import epsilon_from_rates, roc_metrics, split_half_epsilon

N_CLASSES = 4


def make_data(n, seed):
    """Noisy 1x8x8 images: weak class signal plus heavy noise, so a big model memorises them."""
    g = torch.Generator().manual_seed(seed)
    means = torch.rand((N_CLASSES, 1, 8, 8), generator=torch.Generator().manual_seed(123))
    y = torch.randint(0, N_CLASSES, (n,), generator=g)
    x = (0.1 * means[y] + 0.9 * torch.rand((n, 1, 8, 8), generator=g)).clamp(0, 1)
    return x, y


def train(x, y, seed, epochs=300):
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 256), nn.ReLU(), nn.Linear(256, N_CLASSES))
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(epochs):  # full batch: tiny data, many epochs -> overfits
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
    return model


@pytest.fixture(scope="module")
def overfit():
    torch.set_num_threads(2)
    members, nonmembers, population = make_data(64, 1), make_data(64, 2), make_data(256, 3)
    return train(*members, seed=0), members, nonmembers, population


# ---------------------------------------------------------------- ROC / epsilon metrics

def test_roc_perfect_separation():
    m = roc_metrics(np.linspace(1, 2, 2000), np.linspace(-2, -1, 2000), delta=0.0)
    assert m["auc"] == 1.0 and m["tpr_at_1pct_fpr"] == 1.0 and m["tpr_at_0_1pct_fpr"] == 1.0
    assert m["auc_ci_low"] == m["auc_ci_high"] == 1.0
    # split-half: threshold from one half, Clopper-Pearson on the other (1000 + 1000, 2.5% each)
    q = 0.025 ** (1 / 1000)
    # (the threshold picked on one half may leave a member or two of the other below it)
    assert m["epsilon_heuristic"] == pytest.approx(math.log(q / (1 - q)), rel=2e-3)


def test_tpr_unresolved_with_few_nonmembers_is_nan():
    rng = np.random.default_rng(0)
    m = roc_metrics(rng.normal(1, size=150), rng.normal(size=150))
    assert math.isnan(m["tpr_at_1pct_fpr"]) is False and math.isnan(m["tpr_at_0_1pct_fpr"])
    m = roc_metrics(rng.normal(1, size=90), rng.normal(size=90))
    assert math.isnan(m["tpr_at_1pct_fpr"])


def test_null_tpr_at_low_fpr_is_not_inflated():
    rng = np.random.default_rng(1)
    tprs = [roc_metrics(rng.normal(size=1000), rng.normal(size=1000))["tpr_at_1pct_fpr"]
            for _ in range(30)]
    assert abs(np.mean(tprs) - 0.01) < 0.005


def test_heuristic_epsilon_zero_under_no_leakage():
    # the old bound (max over thresholds chosen on the same data) was > 0 in 4.6% at n = 150 and
    # 7.6% at n = 500; the split-half bound must be 0 in >= 95% of trials
    rng = np.random.default_rng(2)
    for n in (150, 500):
        zero = [split_half_epsilon(rng.normal(size=n), rng.normal(size=n), seed=s) == 0
                for s in range(200)]
        assert np.mean(zero) >= 0.95


def test_auc_interval_covers():
    rng = np.random.default_rng(3)
    m = roc_metrics(rng.normal(size=400), rng.normal(size=400))
    assert m["auc_ci_low"] < 0.5 < m["auc_ci_high"] and m["auc_ci_high"] - m["auc_ci_low"] < 0.15


def test_epsilon_from_rates():
    # tpr 0.5 at fpr 0.05, delta 0: eps >= max(log(0.5/0.05), log(0.95/0.5)) = log 10
    assert epsilon_from_rates(0.5, 0.05, 0.0) == pytest.approx(math.log(10))
    assert epsilon_from_rates(0.99, 0.5, 0.0) == pytest.approx(math.log(0.5 / 0.01))
    assert epsilon_from_rates([0.0, 1.0], [0.0, 1.0], 1e-5) == 0.0  # zeros handled
    assert epsilon_from_rates(0.3, 0.3, 1e-5) == 0.0  # random guessing: no leakage
    assert epsilon_from_rates(0.5, 0.05, 0.1) < epsilon_from_rates(0.5, 0.05, 0.0)


# ---------------------------------------------------------------- attacks

def test_loss_scores_are_negated_loss(overfit):
    model, (x, y), _, _ = overfit
    expected = -nn.functional.cross_entropy(model(x), y, reduction="none").detach().numpy()
    np.testing.assert_allclose(loss_scores(model, x, y, batch_size=10), expected, rtol=1e-5, atol=1e-6)


def test_loss_attack_on_overfit_model(overfit):
    model, members, nonmembers, _ = overfit
    m = mia_loss(model, members, nonmembers)
    assert m["auc"] > 0.75
    assert m["epsilon_heuristic"] >= 0
    assert {"tpr_at_1pct_fpr", "tpr_at_0_1pct_fpr"} <= m.keys()


def test_loss_attack_on_model_that_never_saw_members():
    torch.set_num_threads(2)
    model = train(*make_data(64, 10), seed=0)
    m = mia_loss(model, make_data(1000, 11), make_data(1000, 12))
    assert abs(m["auc"] - 0.5) < 0.05


def test_rmia_on_overfit_model(overfit):
    model, members, nonmembers, population = overfit
    seeds = []

    def train_reference(x, y, seed):
        seeds.append(seed)
        assert len(x) == len(population[0]) // 2  # references see half the population
        return train(x, y, seed=seed)

    m = mia_reference(model, members, nonmembers, population, train_reference, n_reference=4, seed=0)
    assert len(set(seeds)) == 4
    assert m["auc"] > 0.75 and m["attack"] == "rmia_offline"


def test_rmia_on_model_that_never_saw_members():
    torch.set_num_threads(2)
    model = train(*make_data(64, 10), seed=0)
    m = mia_reference(model, make_data(400, 11), make_data(400, 12), make_data(256, 13),
                      lambda x, y, s: train(x, y, seed=s, epochs=100), n_reference=2, seed=0)
    assert abs(m["auc"] - 0.5) < 0.08
