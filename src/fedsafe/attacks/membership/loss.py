"""The LOSS membership attack on a trained classifier (Yeom et al. 2018: members have lower loss).

Members and nonmembers are ``(x, y)`` tensor pairs; higher score = member. The attack reports
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
from fedsafe.attacks.membership.cell import cell_delta, members_and_nonmembers, membership_row
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


def run(ctx: AttackContext, options: dict) -> list[dict]:
    """The loss-threshold membership attack (mia_loss) on the cell."""
    t0 = time.time()
    members, nonmembers = members_and_nonmembers(ctx, options.get("n_samples"))
    return membership_row(ctx, mia_loss(ctx.new_model(), members, nonmembers, cell_delta(ctx)), t0)
