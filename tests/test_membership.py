"""Membership inference (LOSS, RMIA and LiRA online and offline) and ROC / epsilon metrics."""
import math

import numpy as np
import pytest
import torch
from torch import nn

from fedsafe.attacks.membership.loss import loss_scores, mia_loss
from fedsafe.attacks.membership.reference_attacks import (
    lira_scores,
    rmia_scores,
    scaled_logit,
    true_prob,
)
from fedsafe.attacks.membership.reference_models import half_masks
from fedsafe.metrics import epsilon_from_rates, roc_metrics, split_half_epsilon

N_CLASSES = 4


def make_data(n, seed):
    """Noisy 1x8x8 images whose class signal varies from strong to none between samples: easy
    samples have a low loss whether members or not (what the reference models calibrate away),
    hard ones are memorised."""
    g = torch.Generator().manual_seed(seed)
    means = torch.rand((N_CLASSES, 1, 8, 8), generator=torch.Generator().manual_seed(123))
    y = torch.randint(0, N_CLASSES, (n,), generator=g)
    s = torch.rand((n, 1, 1, 1), generator=g) ** 2 * 0.6
    x = (s * means[y] + (1 - s) * torch.rand((n, 1, 8, 8), generator=g)).clamp(0, 1)
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
    # one thread: these models are tiny (64-256-4), and with two test workers on two cores a
    # second thread each oversubscribes them (training ran ~10x slower)
    torch.set_num_threads(1)
    members, nonmembers, population = make_data(200, 1), make_data(200, 2), make_data(400, 3)
    return train(*members, seed=0), members, nonmembers, population


@pytest.fixture(scope="module")
def overfit_loss_attack(overfit):
    """The LOSS attack on the overfit model, run once: its own test checks it and the reference
    attacks are compared with it. Not mutated by the tests (a dict of numbers)."""
    model, members, nonmembers, _ = overfit
    return mia_loss(model, members, nonmembers)


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


def test_loss_attack_on_overfit_model(overfit_loss_attack):
    m = overfit_loss_attack
    assert m["auc"] > 0.7
    assert {"tpr_at_1pct_fpr", "tpr_at_0_1pct_fpr", "auc_ci_low"} <= m.keys()


def test_loss_attack_on_model_that_never_saw_members():
    torch.set_num_threads(1)
    model = train(*make_data(64, 10), seed=0)
    m = mia_loss(model, make_data(1000, 11), make_data(1000, 12))
    assert abs(m["auc"] - 0.5) < 0.05


def reference_attack(target, members, nonmembers, population, n_models=8, epochs=300):
    """Reference models on complementary halves of the pool (members, non-members, population),
    as the `reference` rule trains them; every attack's scores for members and non-members."""
    xs = torch.cat([members[0], nonmembers[0], population[0]])
    ys = torch.cat([members[1], nonmembers[1], population[1]])
    mask = half_masks(n_models, len(ys), seed=0)
    refs = [train(xs[m], ys[m], seed=100 + k, epochs=epochs) for k, m in enumerate(torch.from_numpy(mask))]
    with torch.no_grad():
        ref_logits = np.stack([r(xs).numpy() for r in refs])
        target_logits = target(xs).numpy()
    y, n_t = ys.numpy(), len(members[1]) + len(nonmembers[1])
    is_target = np.arange(len(y)) < n_t
    out = {}
    for online in (False, True):
        r = rmia_scores(true_prob(target_logits, y), true_prob(ref_logits, y), mask, is_target, online)
        lira = lira_scores(scaled_logit(target_logits, y)[:n_t], scaled_logit(ref_logits, y)[:, :n_t],
                           mask[:, :n_t], online)
        tag = "online" if online else "offline"
        out[f"rmia_{tag}"], out[f"lira_{tag}"] = r, lira
    n_m = len(members[1])
    return {k: roc_metrics(v[:n_m], v[n_m:]) for k, v in out.items()}


def test_reference_attacks_beat_loss_on_overfit_model(overfit, overfit_loss_attack):
    model, members, nonmembers, population = overfit
    loss = overfit_loss_attack
    res = reference_attack(model, members, nonmembers, population, n_models=4, epochs=200)
    for name, m in res.items():
        assert m["auc"] > 0.75, name
    assert res["rmia_offline"]["tpr_at_1pct_fpr"] > loss["tpr_at_1pct_fpr"]
    assert res["rmia_online"]["tpr_at_1pct_fpr"] > loss["tpr_at_1pct_fpr"]


def test_reference_attacks_on_model_that_never_saw_members():
    torch.set_num_threads(1)
    model = train(*make_data(200, 10), seed=0)
    res = reference_attack(model, make_data(200, 11), make_data(200, 12), make_data(200, 13),
                           n_models=4, epochs=100)
    for name, m in res.items():
        assert abs(m["auc"] - 0.5) < 0.08, name


def test_reference_models_start_from_fresh_weights():
    from fedsafe.attacks.membership.reference_models import _target_initial, initial_model

    spec = {"seed": 0, "model": "small_cnn"}
    manifest = {"channels": 1, "class_names": ["a", "b", "c"], "image_size": 16}
    target = _target_initial(spec, manifest)
    starts = [initial_model(spec, manifest, k).state_dict() for k in range(3)]
    weights = [k for k in target if k.endswith("weight") and target[k].dim() > 1]
    for i, s in enumerate(starts):
        assert all(not torch.equal(s[k], target[k]) for k in weights)  # never the target's
        assert all(not torch.equal(s[k], starts[i - 1][k]) for k in weights)  # nor each other's
