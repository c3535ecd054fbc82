"""What every membership attack on a trained cell shares: the samples it scores (members = the
clients' training samples, non-members = the holdout), the cell's delta, the summary row.
"""

import time

import numpy as np
import torch

from fedsafe.attacks.context import AttackContext
from fedsafe.federation.local import to_tensor


def member_indices(ctx: AttackContext, n: int | None) -> tuple[np.ndarray, np.ndarray]:
    """n members (indices into the clients' samples, concatenated) and n non-members (into the
    holdout), drawn with the cell's seed: every membership attack on a cell scores the same ones."""
    n_members = sum(len(c[1]) for c in ctx.data.clients)
    n = min(n or n_members, len(ctx.data.holdout[1]), n_members)
    rng = np.random.default_rng(ctx.seed)
    return rng.permutation(n_members)[:n], rng.permutation(len(ctx.data.holdout[1]))[:n]


def members_and_nonmembers(ctx: AttackContext, n: int):
    xs = np.concatenate([c[0] for c in ctx.data.clients])
    ys = np.concatenate([c[1] for c in ctx.data.clients])
    hx, hy = ctx.data.holdout
    mi, ni = member_indices(ctx, n)
    as_pair = lambda x, y: (to_tensor(x).to(ctx.device), torch.from_numpy(y).long().to(ctx.device))
    return as_pair(xs[mi], ys[mi]), as_pair(hx[ni], hy[ni])


def cell_delta(ctx) -> float:
    """The delta the cell's guarantee is stated at (its accountant's, else its defense's)."""
    return float(ctx.train_result.get("delta") or ctx.spec["options"].get("delta", 1e-5))


def membership_row(ctx, res: dict, t0: float, extra: dict | None = None) -> list[dict]:
    """One summary row. `mia_epsilon_heuristic` is not an audit (see metrics.split_half_epsilon);
    the audit's valid lower bound is `empirical_epsilon`, from the `privacy_audit` attack."""
    eps = ctx.train_result.get("epsilon")
    eps = None if eps is None else float(eps)  # JSON spells an infinite epsilon "inf"
    return [{"attack_param": "n_samples", "attack_value": float(res["n_members"]),
             "auc": res["auc"], "auc_ci_low": res["auc_ci_low"], "auc_ci_high": res["auc_ci_high"],
             "tpr_at_1pct_fpr": res["tpr_at_1pct_fpr"], "tpr_at_0_1pct_fpr": res["tpr_at_0_1pct_fpr"],
             "mia_epsilon_heuristic": res["epsilon_heuristic"],
             "formal_epsilon": eps, "attack_seconds": time.time() - t0, **(extra or {})}]
