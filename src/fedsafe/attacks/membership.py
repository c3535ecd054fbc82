"""Membership inference on a trained classifier.

- ``mia_loss``: the LOSS attack (Yeom et al. 2018): members have lower loss.
- ``mia_reference``: offline RMIA (Zarifzadeh et al., ICML 2024). We pick RMIA over offline LiRA
  because it needs only a few reference models (LiRA's Gaussian fits need many), it never trains
  on the target points (offline: the reference models can be reused for every target model), and
  the paper shows it beats offline LiRA at the same reference budget.

Members and nonmembers are ``(x, y)`` tensor pairs. Every attack returns ``roc_metrics``' dict
(auc and its interval, tpr_at_1pct_fpr, tpr_at_0_1pct_fpr, the split-half epsilon_heuristic) with higher score = member.
"""
from __future__ import annotations

import time
from dataclasses import replace
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from fedsafe.attacks.context import AttackContext
from fedsafe.federation.local import TrainSettings, local_train, to_tensor
from fedsafe.metrics import roc_metrics

Pair = tuple[Tensor, Tensor]


@torch.no_grad()
def _per_sample(model: nn.Module, x: Tensor, y: Tensor, batch_size: int, fn) -> np.ndarray:
    was_training = model.training
    model.eval()  # inference behaviour (dropout off, BN running stats), as a deployed model
    try:
        out = [fn(model(x[i:i + batch_size]), y[i:i + batch_size]) for i in range(0, len(x), batch_size)]
    finally:
        model.train(was_training)
    return torch.cat(out).double().cpu().numpy()


def loss_scores(model: nn.Module, x: Tensor, y: Tensor, batch_size: int = 256) -> np.ndarray:
    """Per-sample negated cross-entropy (higher = more likely a member)."""
    return _per_sample(model, x, y, batch_size, lambda o, t: -F.cross_entropy(o, t, reduction="none"))


def true_class_prob(model: nn.Module, x: Tensor, y: Tensor, batch_size: int = 256) -> np.ndarray:
    """Per-sample softmax probability of the true label, RMIA's Pr(x | theta)."""
    return _per_sample(model, x, y, batch_size, lambda o, t: F.softmax(o, -1).gather(1, t[:, None])[:, 0])


def mia_loss(model: nn.Module, members: Pair, nonmembers: Pair, delta: float = 1e-5,
             batch_size: int = 256) -> dict:
    """LOSS attack: ROC metrics of negated per-sample loss."""
    return roc_metrics(loss_scores(model, *members, batch_size), loss_scores(model, *nonmembers, batch_size),
                       delta) | {"attack": "loss"}


def mia_reference(
    target_model: nn.Module,
    members: Pair,
    nonmembers: Pair,
    population: Pair,
    train_reference: Callable[[Tensor, Tensor, int], nn.Module],
    n_reference: int = 4,
    seed: int = 0,
    delta: float = 1e-5,
    offline_a: float = 0.3,
    gamma: float = 1.0,
    batch_size: int = 256,
) -> dict:
    """Offline RMIA. ``population`` must be disjoint from members and nonmembers.

    Reference models are trained by ``train_reference(x, y, seed)`` on random halves of the
    population, in complementary pairs so every population point is OUT for half of them.
    For a point x, Pr(x) is approximated from OUT references only with the paper's offline
    scaling Pr(x) = ((1 + a) * mean_OUT Pr(x | theta_ref) + (1 - a)) / 2, which stands in for
    the missing IN models. The score of x is the share of population points z with
    (Pr(x|target) / Pr(x)) / (Pr(z|target) / Pr(z)) > gamma; z uses the same OUT estimate.
    """
    xp, yp = population
    n_pop = len(xp)
    rng = np.random.default_rng(seed)
    out_mask = np.zeros((n_reference, n_pop), dtype=bool)  # out_mask[k, j]: z_j not in ref k's data
    for k in range(0, n_reference, 2):
        half = rng.permutation(n_pop) < n_pop // 2
        out_mask[k] = half
        if k + 1 < n_reference:
            out_mask[k + 1] = ~half  # the pair's second model trains on the other half
    xs = torch.cat([members[0], nonmembers[0], xp])
    ys = torch.cat([members[1], nonmembers[1], yp])
    ref_probs = []
    for k in range(n_reference):
        train_idx = torch.from_numpy(np.flatnonzero(~out_mask[k]))
        ref = train_reference(xp[train_idx], yp[train_idx], seed * 1000 + k)
        ref_probs.append(true_class_prob(ref, xs, ys, batch_size))
    ref_probs = np.stack(ref_probs)  # (n_reference, n_targets + n_pop)
    n_t = len(xs) - n_pop
    # Targets are OUT of every reference; population points only of those with out_mask.
    out = np.concatenate([np.ones((n_reference, n_t), bool), out_mask], axis=1)
    usable = out.any(0)  # with one reference model half the population has no OUT estimate
    mean_out = np.where(usable, (ref_probs * out).sum(0) / np.maximum(out.sum(0), 1), np.nan)
    pr_x = 0.5 * ((1 + offline_a) * mean_out + (1 - offline_a))
    ratio = true_class_prob(target_model, xs, ys, batch_size) / pr_x
    ratio_x, ratio_z = ratio[:n_t], ratio[n_t:][usable[n_t:]]
    # Pairwise likelihood-ratio test against population points (vectorised; n_t x n_z).
    scores = (ratio_x[:, None] / ratio_z[None, :] > gamma).mean(1)
    n_m = len(members[0])
    return roc_metrics(scores[:n_m], scores[n_m:], delta) | {
        "attack": "rmia_offline", "n_reference": n_reference, "offline_a": offline_a, "gamma": gamma}


# Jobs: the attacks on a trained cell (members = clients' samples, non-members = holdout).

def _members_and_nonmembers(ctx: AttackContext, n: int):
    xs = np.concatenate([c[0] for c in ctx.data.clients])
    ys = np.concatenate([c[1] for c in ctx.data.clients])
    hx, hy = ctx.data.holdout
    n = min(n, len(hy), len(ys))
    rng = np.random.default_rng(ctx.seed)
    mi, ni = rng.permutation(len(ys))[:n], rng.permutation(len(hy))[:n]
    as_pair = lambda x, y: (to_tensor(x).to(ctx.device), torch.from_numpy(y).long().to(ctx.device))
    return as_pair(xs[mi], ys[mi]), as_pair(hx[ni], hy[ni])


def _delta(ctx) -> float:
    return float(ctx.train_result.get("delta") or ctx.spec["options"].get("delta", 1e-5))


def _membership_row(ctx, res: dict, t0: float) -> list[dict]:
    eps = ctx.train_result.get("epsilon")
    eps = None if eps is None else float(eps)  # JSON spells an infinite epsilon "inf"
    return [{"attack_param": "n_samples", "attack_value": float(res["n_members"]),
             "auc": res["auc"], "tpr_at_1pct_fpr": res["tpr_at_1pct_fpr"],
             "tpr_at_0_1pct_fpr": res["tpr_at_0_1pct_fpr"],
             "auc_ci_low": res["auc_ci_low"], "auc_ci_high": res["auc_ci_high"],
             "mia_epsilon_heuristic": res["epsilon_heuristic"],
             "formal_epsilon": eps, "attack_seconds": time.time() - t0}]


def run_mia_loss(ctx: AttackContext, options: dict) -> list[dict]:
    t0 = time.time()
    members, nonmembers = _members_and_nonmembers(ctx, int(options.get("n_samples", 500)))
    return _membership_row(ctx, mia_loss(ctx.new_model(), members, nonmembers, _delta(ctx)), t0)


def run_mia_reference(ctx: AttackContext, options: dict) -> list[dict]:
    """Offline RMIA; reference models are the cell's architecture trained centrally on halves of
    the test split (disjoint from members and non-members)."""
    t0 = time.time()
    members, nonmembers = _members_and_nonmembers(ctx, int(options.get("n_samples", 500)))
    population = (to_tensor(ctx.data.test[0]).to(ctx.device),
                  torch.from_numpy(ctx.data.test[1]).long().to(ctx.device))
    fed = ctx.spec["federation"]
    epochs = int(options.get("reference_epochs") or fed["rounds"] * fed["local_epochs"])
    settings = replace(TrainSettings.from_config(fed), local_epochs=epochs)

    def train_reference(x, y, seed):
        from fedsafe.defenses.base import Mechanism

        model = ctx.new_model().train()
        local_train(model, (x.cpu() * 255).round().byte().numpy(), y.cpu().numpy(), settings,
                    Mechanism(), seed, 0, 0, {}, ctx.device)
        return model.eval()

    res = mia_reference(ctx.new_model(), members, nonmembers, population, train_reference,
                        n_reference=int(options.get("n_reference", 2)), seed=ctx.seed,
                        delta=_delta(ctx))
    return _membership_row(ctx, res, t0)
