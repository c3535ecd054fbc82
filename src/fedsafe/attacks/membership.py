"""Membership inference on a trained classifier: the LOSS attack (Yeom et al. 2018: members have
lower loss) and what every membership attack shares (which samples are scored, the summary row).
Reference-model attacks (RMIA, LiRA) are in `reference.py`, the privacy audit in `audit.py`.

Members and nonmembers are ``(x, y)`` tensor pairs; higher score = member. Every attack reports
``roc_metrics``: AUC and its bootstrap interval, TPR at 1% and 0.1% FPR, the split-half heuristic
epsilon.
"""
from __future__ import annotations

import time

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from fedsafe.attacks.context import AttackContext
from fedsafe.federation.local import to_tensor
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


def mia_loss(model: nn.Module, members: Pair, nonmembers: Pair, delta: float = 1e-5,
             batch_size: int = 256) -> dict:
    """LOSS attack: ROC metrics of negated per-sample loss."""
    return roc_metrics(loss_scores(model, *members, batch_size), loss_scores(model, *nonmembers, batch_size),
                       delta) | {"attack": "loss"}


# Jobs: the attacks on a trained cell (members = clients' samples, non-members = holdout).

def member_indices(ctx: AttackContext, n: int | None) -> tuple[np.ndarray, np.ndarray]:
    """n members (indices into the clients' samples, concatenated) and n non-members (into the
    holdout), drawn with the cell's seed: every membership attack on a cell scores the same ones."""
    n_members = sum(len(c[1]) for c in ctx.data.clients)
    n = min(n or n_members, len(ctx.data.holdout[1]), n_members)
    rng = np.random.default_rng(ctx.seed)
    return rng.permutation(n_members)[:n], rng.permutation(len(ctx.data.holdout[1]))[:n]


def _members_and_nonmembers(ctx: AttackContext, n: int):
    xs = np.concatenate([c[0] for c in ctx.data.clients])
    ys = np.concatenate([c[1] for c in ctx.data.clients])
    hx, hy = ctx.data.holdout
    mi, ni = member_indices(ctx, n)
    as_pair = lambda x, y: (to_tensor(x).to(ctx.device), torch.from_numpy(y).long().to(ctx.device))
    return as_pair(xs[mi], ys[mi]), as_pair(hx[ni], hy[ni])


def _delta(ctx) -> float:
    return float(ctx.train_result.get("delta") or ctx.spec["options"].get("delta", 1e-5))


def _membership_row(ctx, res: dict, t0: float, extra: dict | None = None) -> list[dict]:
    """One summary row. `mia_epsilon_heuristic` is not an audit (see metrics.split_half_epsilon);
    the audit's valid lower bound is `empirical_epsilon`, from the `privacy_audit` attack."""
    eps = ctx.train_result.get("epsilon")
    eps = None if eps is None else float(eps)  # JSON spells an infinite epsilon "inf"
    return [{"attack_param": "n_samples", "attack_value": float(res["n_members"]),
             "auc": res["auc"], "auc_ci_low": res["auc_ci_low"], "auc_ci_high": res["auc_ci_high"],
             "tpr_at_1pct_fpr": res["tpr_at_1pct_fpr"], "tpr_at_0_1pct_fpr": res["tpr_at_0_1pct_fpr"],
             "mia_epsilon_heuristic": res["epsilon_heuristic"],
             "formal_epsilon": eps, "attack_seconds": time.time() - t0, **(extra or {})}]


def run(ctx: AttackContext, options: dict) -> list[dict]:
    """The loss-threshold membership attack (mia_loss) on the cell."""
    t0 = time.time()
    members, nonmembers = _members_and_nonmembers(ctx, options.get("n_samples"))
    return _membership_row(ctx, mia_loss(ctx.new_model(), members, nonmembers, _delta(ctx)), t0)
