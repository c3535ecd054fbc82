"""Membership inference (LOSS, offline RMIA) and ROC / epsilon metrics."""
import math

import numpy as np
import pytest
import torch
from torch import nn

from fedsafe.attacks.membership import loss_scores, mia_loss, mia_reference
from fedsafe.metrics import empirical_epsilon_lower_bound, roc_metrics

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
    m = roc_metrics(np.linspace(1, 2, 500), np.linspace(-2, -1, 500), delta=0.0)
    assert m["auc"] == 1.0 and m["tpr_at_1pct_fpr"] == 1.0 and m["tpr_at_0_1pct_fpr"] == 1.0
    # no finite sample proves eps = inf; the best finite point is tpr 1, fpr 1/500 -> log(500)
    assert m["epsilon_point_estimate"] == pytest.approx(math.log(500))
    # Clopper-Pearson at tpr 500/500, fpr 0/500 (one-sided 2.5% each): bounds q and 1 - q
    q = 0.025 ** (1 / 500)
    assert m["epsilon_lower_bound"] == pytest.approx(math.log(q / (1 - q)), rel=1e-6)


def test_roc_identical_distributions():
    rng = np.random.default_rng(0)
    m = roc_metrics(rng.normal(size=5000), rng.normal(size=5000))
    assert abs(m["auc"] - 0.5) < 0.03
    assert m["tpr_at_1pct_fpr"] < 0.03
    assert m["epsilon_lower_bound"] == 0.0  # the confidence bound sees no leakage...
    assert m["epsilon_point_estimate"] > 0.3  # ...the point estimate overfits extreme thresholds


def test_epsilon_bound_values():
    # tpr 0.5 at fpr 0.05, delta 0: eps >= max(log(0.5/0.05), log(0.95/0.5)) = log 10
    assert empirical_epsilon_lower_bound(0.5, 0.05, 0.0) == pytest.approx(math.log(10))
    # the second inequality wins when the attack is good at rejecting: fpr 0.5, tpr 0.99
    assert empirical_epsilon_lower_bound(0.99, 0.5, 0.0) == pytest.approx(math.log(0.5 / 0.01))
    assert empirical_epsilon_lower_bound([0.0, 1.0], [0.0, 1.0], 1e-5) == 0.0  # zeros handled
    assert empirical_epsilon_lower_bound(0.3, 0.3, 1e-5) == 0.0  # random guessing: no leakage
    # delta subtracts from tpr: a bigger delta can only lower the bound
    assert empirical_epsilon_lower_bound(0.5, 0.05, 0.1) < empirical_epsilon_lower_bound(0.5, 0.05, 0.0)


# ---------------------------------------------------------------- attacks

def test_loss_scores_are_negated_loss(overfit):
    model, (x, y), _, _ = overfit
    expected = -nn.functional.cross_entropy(model(x), y, reduction="none").detach().numpy()
    np.testing.assert_allclose(loss_scores(model, x, y, batch_size=10), expected, rtol=1e-5, atol=1e-6)


def test_loss_attack_on_overfit_model(overfit):
    model, members, nonmembers, _ = overfit
    m = mia_loss(model, members, nonmembers)
    assert m["auc"] > 0.75
    assert m["epsilon_lower_bound"] > 0
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
