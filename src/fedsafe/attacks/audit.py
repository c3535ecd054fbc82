"""One-run privacy auditing (Steinke, Nasr and Jagielski, NeurIPS 2023).

m canaries are drawn before training; each is included in the training data independently with
probability 1/2 (a fair coin the attacker does not see). After training, the attacker scores every
canary, guesses "included" for the k_plus highest scores and "excluded" for the k_minus lowest,
and abstains on the rest. If training is (eps, delta)-DP, the number of correct guesses among the
r = k_plus + k_minus guesses is stochastically dominated, up to a delta term, by
Binomial(r, e^eps / (1 + e^eps)) (their Theorem 5.2). Every eps whose tail probability of the
observed count is below 1 - confidence is rejected; the audit reports the largest rejected eps, a
lower bound on the eps of the training algorithm at that confidence.

This module holds the statistics and `run_privacy_audit`, the audit of a trained cell; the canaries
(sample-level and client-level) are in `canaries.py`.
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np


def p_value(m: int, r: int, v: int, eps: float, delta: float = 0.0) -> float:
    """Upper bound on P[at least v of r guesses correct] under (eps, delta)-DP, m canaries.

    Theorem 5.2 of Steinke et al.: with W' ~ Binomial(r, p), p = e^eps / (1 + e^eps),
    P[W >= v] <= P[W' >= v] + 2 m delta max_{1<=i<=v} P[v - i <= W' < v] / i.
    """
    from scipy.stats import binom

    if not 0 <= v <= r <= m:
        raise ValueError(f"need 0 <= v <= r <= m, got v={v}, r={r}, m={m}")
    if r == 0:
        return 1.0
    p = 1.0 / (1.0 + math.exp(-eps))
    tail = float(binom.sf(v - 1, r, p))
    if delta > 0 and v > 0:
        # P[v - i <= W' < v] for i = 1..v: cumulative sums of the pmf below v
        window = np.cumsum(binom.pmf(np.arange(v - 1, -1, -1), r, p))
        tail += 2 * m * delta * float(np.max(window / np.arange(1, v + 1)))
    return min(tail, 1.0)


def epsilon_lower_bound(m: int, r: int, v: int, delta: float = 0.0,
                        confidence: float = 0.95) -> float:
    """Largest eps rejected at level 1 - confidence by v correct of r guesses (0.0: none).

    p_value grows with eps, so the rejected set is an interval [0, eps*): bisection."""
    beta = 1.0 - confidence
    if p_value(m, r, v, 0.0, delta) >= beta:
        return 0.0
    lo, hi = 0.0, 1.0
    while p_value(m, r, v, hi, delta) < beta:
        lo, hi = hi, 2 * hi
        if hi > 1e3:  # more than any finite count can prove
            return lo
    for _ in range(40):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if p_value(m, r, v, mid, delta) < beta else (lo, mid)
    return lo


def guess_counts(m: int, fractions) -> list[int]:
    """Numbers of guesses tried (fractions of m, at least 2, even: half per side)."""
    return sorted({max(2, 2 * int(round(f * m / 2))) for f in fractions if f * m >= 1})


def audit(scores, included, delta: float = 0.0, confidence: float = 0.95,
          guess_fractions=(0.02, 0.05, 0.1, 0.2, 0.5, 1.0)) -> dict:
    """Audit from canary scores (higher = more likely included) and the true coins.

    The attacker guesses both tails of the score ranking, r / 2 each. Several r are tried; to keep
    the bound valid after picking the best one, each is tested at level (1 - confidence) / (number
    of r tried) (Bonferroni). Returns the bound and the counts behind it.
    """
    s, inc = np.asarray(scores, float), np.asarray(included, bool)
    m = len(s)
    order = np.argsort(-s, kind="stable")
    counts = guess_counts(m, guess_fractions)
    level = 1.0 - (1.0 - confidence) / max(len(counts), 1)
    best = {"epsilon_lower_bound": 0.0, "guesses": 0, "correct": 0}
    for r in counts:
        top, bottom = order[: r // 2], order[m - r // 2:]
        v = int(inc[top].sum() + (~inc[bottom]).sum())
        eps = epsilon_lower_bound(m, r, v, delta, level)
        # ties (all 0 under no leakage) report the most guesses, the most informative count
        if eps >= best["epsilon_lower_bound"]:
            best = {"epsilon_lower_bound": eps, "guesses": r, "correct": v}
    # the most any attack could prove here (every guess right): an accounted epsilon at or above
    # it can never be flagged, so "no violation" there is no evidence
    ceiling = max((epsilon_lower_bound(m, r, r, delta, level) for r in counts), default=0.0)
    return {**best, "n_canaries": m, "n_included": int(inc.sum()), "confidence": confidence,
            "delta": delta, "ceiling": ceiling}


def compare_bounds(lower: float | None, upper: float | None) -> dict:
    """The audit's lower bound beside the accountant's upper bound. A lower bound above the upper
    bound (beyond float noise) means the implementation or the accounting is wrong: `violation`."""
    if lower is None or upper is None or not math.isfinite(lower):
        return {"epsilon_ratio": None, "violation": False}
    ratio = lower / upper if upper > 0 else (math.inf if lower > 0 else 0.0)
    return {"epsilon_ratio": ratio, "violation": bool(lower > upper * (1 + 1e-9))}


def run_privacy_audit(ctx, options: dict) -> list[dict]:
    """The one-run audit of a cell trained with canaries (`canaries.py`): score every canary
    (sample canaries by their loss reduction, client canaries by how far the model moved along
    their update) from the initial global model (rebuilt from the cell's seed, as training starts)
    to the final one; guess; bound. Beside it the accountant's epsilon, their ratio and the
    violation flag."""
    import time

    import torch

    from fedsafe.attacks.canaries import CLIENT_KIND, CanaryClients, loss_reduction_scores
    from fedsafe.attacks.membership import _delta
    from fedsafe.federation.local import to_tensor
    from fedsafe.models import build_model

    t0 = time.time()
    path = Path(ctx.train_dir) / "canaries.npz"
    if not path.exists():
        raise ValueError("privacy_audit: this cell was trained without canaries (add its defense "
                         "to `audit.defenses`)")
    man = ctx.data.manifest
    torch.manual_seed(ctx.seed)  # the target's initial weights, as train_cell draws them
    initial = build_model(ctx.spec["model"], man["channels"], len(man["class_names"]),
                          man["image_size"]).to(ctx.device)
    final = ctx.new_model()
    with np.load(path) as c:
        level = "client-level" if "kind" in c and str(c["kind"]) == CLIENT_KIND else "sample-level"
        inc = c["included"]
        if level == "client-level":
            canaries = CanaryClients(len(inc), int(c["seed"]), float(c["clip"]))
            scores = canaries.scores(initial.state_dict(), final.state_dict())
        else:
            xt = to_tensor(c["x"]).to(ctx.device)
            yt = torch.from_numpy(c["y"]).long().to(ctx.device)
            scores = loss_reduction_scores(initial, final, xt, yt)
    res = audit(scores, inc, _delta(ctx), float(options["confidence"]),
                tuple(options["guess_fractions"]))
    eps = ctx.train_result.get("epsilon")
    eps = None if eps is None else float(eps)
    # A violation is claimed only where the canaries are at the guarantee's own level: sample
    # canaries under a client-level guarantee are a substitution of the client's data, covered
    # only up to twice its epsilon.
    kinds = {p.guarantee_kind for p in ctx.defense.parts if p.guarantee_kind}
    cmp = compare_bounds(res["epsilon_lower_bound"], eps)
    if kinds != {level}:
        cmp["violation"] = False
    if cmp["violation"]:
        import logging

        logging.getLogger("fedsafe").warning(
            "PRIVACY VIOLATION: audited lower bound %.3f > accounted epsilon %.3f",
            res["epsilon_lower_bound"], eps)
    return [{"attack_param": "n_canaries", "attack_value": float(res["n_canaries"]),
             "empirical_epsilon": res["epsilon_lower_bound"], "formal_epsilon": eps,
             "epsilon_ratio": cmp["epsilon_ratio"], "violation": int(cmp["violation"]),
             "audit_guesses": res["guesses"], "audit_correct": res["correct"],
             "audit_confidence": res["confidence"], "audit_level": level,
             "audit_ceiling": res["ceiling"],
             "attack_seconds": time.time() - t0}]
