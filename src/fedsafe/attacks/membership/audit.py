"""One-run privacy auditing: Steinke, Nasr and Jagielski (NeurIPS 2023) and its f-DP version,
Mahloujifar, Melis and Chaudhuri ("Auditing f-differential privacy in one run", arXiv 2410.22235).

m canaries are drawn before training; each is included in the training data independently with
probability 1/2 (a fair coin the attacker does not see). After training, the attacker scores every
canary, guesses "included" for the r/2 highest scores and "excluded" for the r/2 lowest, and
abstains on the rest; v of the r guesses are right. Two bounds turn (m, r, v) into a lower bound on
epsilon at a confidence (1 - beta):

- Steinke et al. (Theorem 5.2): under (eps, delta)-DP, v is stochastically dominated, up to a
  delta term, by Binomial(r, e^eps / (1 + e^eps)). The bound is the largest eps whose tail
  probability of the observed v is below beta. Valid for any (eps, delta)-DP mechanism.
- Mahloujifar et al. (f-DP): the same game under the hypothesis that the mechanism is f-DP, with
  f the Gaussian trade-off curve G_mu (mu-GDP); a recursion bounds the probability of v correct
  guesses, and the bound is the largest mu it rejects at level beta, reported as the epsilon of
  mu-GDP at the cell's delta. Much tighter where the mechanism is Gaussian, but only a bound on
  epsilon where the claim being tested is a Gaussian curve: the largest mu rejected says "not
  mu-GDP", which contradicts an accountant only if its guarantee is (at least) mu-GDP.

Selection: several guess counts r are tried (`guess_counts`); each bound takes its best r, and to
stay valid after that choice every r is tested at level beta / (number of r tried) (Bonferroni).
The two bounds are reported side by side, each at the stated confidence; the violation check uses
one of them, fixed before seeing the data by the cell's guarantee (`run`), so no
further correction is needed.

This module holds the statistics and `run`, the audit of a trained cell; the canaries
are made by `fedsafe.canaries` and scored by `canaries.py`.
"""
from __future__ import annotations

import functools
import math
from pathlib import Path

import numpy as np
from scipy.optimize import brentq
from scipy.special import log_ndtr, ndtr, ndtri

# ---------------------------------------------------------------- Steinke et al.


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

# ---------------------------------------------------------------- Gaussian DP


def gdp_delta(eps: float, mu: float) -> float:
    """delta(eps) of mu-GDP (Dong, Roth and Su 2022, Corollary 2.13):
    Phi(-eps/mu + mu/2) - e^eps Phi(-eps/mu - mu/2), in logs (e^eps overflows past eps 700)."""
    if mu <= 0:
        return 0.0
    a = log_ndtr(-eps / mu + mu / 2)
    b = eps + log_ndtr(-eps / mu - mu / 2)
    return float(math.exp(a) * -math.expm1(min(b - a, 0.0)))


def gdp_epsilon(mu: float, delta: float) -> float:
    """The epsilon of mu-GDP at delta (0 where mu-GDP already has delta(0) <= delta)."""
    if mu <= 0 or gdp_delta(0.0, mu) <= delta:
        return 0.0
    if delta <= 0:
        return math.inf  # mu-GDP with mu > 0 is (epsilon, 0)-DP for no finite epsilon
    hi = 1.0
    while gdp_delta(hi, mu) > delta:
        hi *= 2
    return brentq(lambda e: math.log(max(gdp_delta(e, mu), 1e-300)) - math.log(delta), 0.0, hi,
                  xtol=1e-10, rtol=1e-12)


def gdp_mu(eps: float, delta: float) -> float:
    """The mu whose GDP curve is exactly (eps, delta)-DP: the Gaussian mechanism of noise
    multiplier 1 / mu (delta grows with mu)."""
    hi = 1.0
    while gdp_delta(eps, hi) < delta:
        hi *= 2
    return brentq(lambda u: gdp_delta(eps, u) - delta, 1e-12, hi, xtol=1e-12, rtol=1e-12)

# ---------------------------------------------------------------- Mahloujifar et al. (f-DP)


def fdp_rejects(m: int, r: int, v: int, mu: float, beta: float) -> bool:
    """True where v correct of r guesses (m canaries) happen with probability below beta under
    mu-GDP for every canary, i.e. mu-GDP is rejected at level beta.

    The recursion of Mahloujifar et al. (their bound on the probability of v correct guesses for
    an f-DP mechanism, with the probabilities capped at 1): `right` and `wrong` are the masses of
    correct and wrong guesses the event "at least v correct" forces, starting from beta v / m and
    beta (r - v) / m; peeling one correct guess at a time, f-DP forces at least f^-1(right) of
    wrong-guess mass (for G_mu, Phi(Phi^-1(x) - mu): the least mass one neighbour gives an event
    that has mass x under the other), and shifting it shifts the correct mass by i / (r - i) of
    the change. If the forced masses exceed the r / m a guesser has per canary, the event is
    rarer than beta. Both masses only grow, so the loop stops as soon as they do, or once nothing
    changes any more."""
    if v == 0 or r == 0:
        return False
    right, wrong, budget = beta * v / m, beta * (r - v) / m, r / m
    for i in range(v - 1, -1, -1):
        forced = max(wrong, float(ndtr(ndtri(right) - mu)))
        if forced == wrong:
            break
        right, wrong = min(right + i / (r - i) * (forced - wrong), 1.0), forced
        if right + wrong > budget:
            return True
    return right + wrong > budget


def fdp_mu_lower_bound(m: int, r: int, v: int, beta: float, tol: float = 1e-6) -> float:
    """Largest mu whose GDP the count rejects at level beta (0.0: none). A larger mu is a weaker
    claim, harder to reject, so the rejected set is an interval [0, mu*): bisection."""
    if not fdp_rejects(m, r, v, 1e-9, beta):
        return 0.0
    lo, hi = 0.0, 1.0
    while fdp_rejects(m, r, v, hi, beta):
        lo, hi = hi, 2 * hi
        if hi > 1e3:
            return lo
    while hi - lo > tol * max(hi, 1.0):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if fdp_rejects(m, r, v, mid, beta) else (lo, mid)
    return lo


def fdp_epsilon_lower_bound(m: int, r: int, v: int, delta: float,
                            confidence: float = 0.95) -> float:
    """The f-DP bound as an epsilon: that of the largest rejected mu-GDP at `delta`."""
    return gdp_epsilon(fdp_mu_lower_bound(m, r, v, 1.0 - confidence), delta)

# ---------------------------------------------------------------- the audit


def guess_counts(m: int, fractions) -> list[int]:
    """Numbers of guesses tried (fractions of m, at least 2, even: half per side, and at most m:
    an odd m guesses on m - 1 canaries at most)."""
    return sorted({min(max(2, 2 * int(round(f * m / 2))), m - m % 2)
                   for f in fractions if f * m >= 1})


def audit(scores, included, delta: float = 0.0, confidence: float = 0.95,
          guess_fractions=(0.02, 0.05, 0.1, 0.2, 0.5, 1.0)) -> dict:
    """Audit from canary scores (higher = more likely included) and the true coins.

    The attacker guesses both tails of the score ranking, r / 2 each. Several r are tried; to keep
    each bound valid after picking its best r, every r is tested at level
    (1 - confidence) / (number of r tried) (Bonferroni). Returns both bounds, the counts behind
    them and their ceilings (the most every guess right could prove: an accounted epsilon at or
    above a ceiling can never be flagged by that bound, so "no violation" there is no evidence).
    Steinke's under the keys `epsilon_lower_bound`, `guesses`, `correct`, `ceiling`; the f-DP
    bound under `fdp_...` (and `fdp_mu_lower_bound`, the rejected GDP mu itself).
    """
    s, inc = np.asarray(scores, float), np.asarray(included, bool)
    m = len(s)
    order = np.argsort(-s, kind="stable")
    counts = guess_counts(m, guess_fractions)
    beta = (1.0 - confidence) / max(len(counts), 1)
    best = {"epsilon_lower_bound": 0.0, "guesses": 0, "correct": 0}
    fdp = {"fdp_mu_lower_bound": 0.0, "fdp_guesses": 0, "fdp_correct": 0}
    for r in counts:
        top, bottom = order[: r // 2], order[m - r // 2:]
        v = int(inc[top].sum() + (~inc[bottom]).sum())
        eps = epsilon_lower_bound(m, r, v, delta, 1.0 - beta)
        # ties (all 0 under no leakage) report the most guesses, the most informative count
        if eps >= best["epsilon_lower_bound"]:
            best = {"epsilon_lower_bound": eps, "guesses": r, "correct": v}
        mu = fdp_mu_lower_bound(m, r, v, beta)
        if mu >= fdp["fdp_mu_lower_bound"]:
            fdp = {"fdp_mu_lower_bound": mu, "fdp_guesses": r, "fdp_correct": v}
    ceiling, fdp_ceiling = _ceilings(m, tuple(counts), delta, beta)
    return {**best, **fdp, "fdp_epsilon_lower_bound": gdp_epsilon(fdp["fdp_mu_lower_bound"], delta),
            "n_canaries": m, "n_included": int(inc.sum()), "confidence": confidence,
            "delta": delta, "ceiling": ceiling, "fdp_mu_ceiling": fdp_ceiling,
            "fdp_ceiling": gdp_epsilon(fdp_ceiling, delta)}


@functools.lru_cache(maxsize=64)
def _ceilings(m: int, counts: tuple, delta: float, beta: float) -> tuple[float, float]:
    """What every guess right proves (Steinke's epsilon, the f-DP mu) with the best count: it
    depends on the design alone, not on the scores, so every seed of an audit shares it."""
    return (max((epsilon_lower_bound(m, r, r, delta, 1.0 - beta) for r in counts), default=0.0),
            max((fdp_mu_lower_bound(m, r, r, beta) for r in counts), default=0.0))


def compare_bounds(lower: float | None, upper: float | None) -> dict:
    """The audit's lower bound beside the accountant's upper bound. A lower bound above the upper
    bound (beyond float noise) means the implementation or the accounting is wrong: `violation`."""
    if lower is None or upper is None or not math.isfinite(lower):
        return {"epsilon_ratio": None, "violation": False}
    ratio = lower / upper if upper > 0 else (math.inf if lower > 0 else 0.0)
    return {"epsilon_ratio": ratio, "violation": bool(lower > upper * (1 + 1e-9))}


def jax_privacy_auditing():
    """jax-privacy's `auditing.py` (an independent implementation of both bounds, the reference of
    the tests and the benchmark), loaded by path, or None where jax-privacy is not installed. By
    path because the package's __init__ imports jax, which is not installed: jax-privacy is
    installed with --no-deps, its auditing.py needs only numpy, scipy and dp_accounting."""
    import importlib.util
    import sys

    spec = importlib.util.find_spec("jax_privacy")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(list(spec.submodule_search_locations)[0]) / "auditing.py"
    loader = importlib.util.spec_from_file_location("jax_privacy_auditing", path)
    module = importlib.util.module_from_spec(loader)
    sys.modules[loader.name] = module  # its dataclasses look their module up while it loads
    loader.loader.exec_module(module)
    return module


def gaussian_guarantee(level: str, rate: float) -> bool:
    """Whether the accountant's guarantee is itself a Gaussian trade-off curve, so that the f-DP
    bound refutes it: client-level DP-FedAvg (central) with every client in every round. Its T
    rounds are Gaussian mechanisms of noise multiplier z on each client's clipped update, exactly
    sqrt(T)/z-GDP (Dong, Roth and Su), and its accounted epsilon is that curve's (the PLD
    accountant's is a pessimistic, so larger, value). Poisson-sampled rounds and DP-SGD are not
    Gaussian curves: there only Steinke's bound, valid for any (eps, delta)-DP, decides."""
    return level == "client-level" and rate >= 1.0


def run(ctx, options: dict) -> list[dict]:
    """The one-run audit of a cell trained with canaries (`fedsafe.canaries`): score every canary
    (sample canaries by their loss reduction from the initial global model, rebuilt from the
    cell's seed as training starts, to the final one; canary clients from every round's released
    sum, `client_scores`); guess; both bounds. Beside them the accountant's epsilon, their ratio
    and the violation flag, from the f-DP bound where the guarantee is Gaussian
    (`gaussian_guarantee`), else from Steinke's (`audit_bound` says which; `empirical_epsilon`,
    `audit_ceiling`, `audit_guesses` and `audit_correct` are that bound's)."""
    import time

    import torch

    from fedsafe.attacks.membership.canaries import client_scores, loss_reduction_scores
    from fedsafe.attacks.membership.cell import cell_delta
    from fedsafe.canaries import CLIENT_KIND
    from fedsafe.federation.local import to_tensor
    from fedsafe.models import build_model_for

    t0 = time.time()
    path = ctx.canaries
    if path is None:  # a context built without the cell's files (tests, benchmarks)
        raise ValueError("privacy_audit: no canaries file given")
    rate = float(ctx.spec["federation"].get("fraction_train", 1.0))
    with np.load(path) as c:
        if "included" not in c:  # the training job writes an empty archive for such a cell
            raise ValueError("privacy_audit: this cell was trained without canaries (add its "
                             "defense to `audit.defenses`)")
        level = "client-level" if "kind" in c and str(c["kind"]) == CLIENT_KIND else "sample-level"
        inc = c["included"]
        if level == "client-level":
            if "round_projections" not in c or not len(c["round_projections"]):
                raise ValueError(f"privacy_audit: {path} holds no per-round projections (made "
                                 "by an older version of the canaries): retrain this cell")
            scores = client_scores(c["round_projections"], float(c["clip"]), float(c["noise"]),
                                   float(c["rate"]))
        else:
            torch.manual_seed(ctx.seed)  # the target's initial weights, as train_cell draws them
            initial = build_model_for(ctx.spec["model"], ctx.data.manifest).to(ctx.device)
            xt = to_tensor(c["x"]).to(ctx.device)
            yt = torch.from_numpy(c["y"]).long().to(ctx.device)
            scores = loss_reduction_scores(initial, ctx.new_model(), xt, yt)
    res = audit(scores, inc, cell_delta(ctx), float(options["confidence"]),
                tuple(options["guess_fractions"]))
    eps = ctx.train_result.get("epsilon")
    eps = None if eps is None else float(eps)
    fdp = gaussian_guarantee(level, rate)
    used = ({"lower": res["fdp_epsilon_lower_bound"], "ceiling": res["fdp_ceiling"],
             "guesses": res["fdp_guesses"], "correct": res["fdp_correct"]} if fdp else
            {"lower": res["epsilon_lower_bound"], "ceiling": res["ceiling"],
             "guesses": res["guesses"], "correct": res["correct"]})
    # A violation is claimed only where the canaries are at the guarantee's own level: sample
    # canaries under a client-level guarantee are a substitution of the client's data, covered
    # only up to twice its epsilon.
    kinds = {p.guarantee_kind for p in ctx.defense.parts if p.guarantee_kind}
    cmp = compare_bounds(used["lower"], eps)
    if kinds != {level}:
        cmp["violation"] = False
    if cmp["violation"]:
        import logging

        logging.getLogger("fedsafe").warning(
            "PRIVACY VIOLATION: audited lower bound %.3f (%s) > accounted epsilon %.3f",
            used["lower"], "f-DP" if fdp else "Steinke", eps)
    return [{"attack_param": "n_canaries", "attack_value": float(res["n_canaries"]),
             "empirical_epsilon": used["lower"], "formal_epsilon": eps,
             "epsilon_ratio": cmp["epsilon_ratio"], "violation": int(cmp["violation"]),
             "audit_bound": "fdp" if fdp else "steinke",
             "audit_guesses": used["guesses"], "audit_correct": used["correct"],
             "audit_confidence": res["confidence"], "audit_level": level,
             "audit_ceiling": used["ceiling"],
             "audit_epsilon_steinke": res["epsilon_lower_bound"],
             "audit_epsilon_fdp": res["fdp_epsilon_lower_bound"],
             "audit_mu_fdp": res["fdp_mu_lower_bound"],
             "audit_ceiling_steinke": res["ceiling"], "audit_ceiling_fdp": res["fdp_ceiling"],
             "attack_seconds": time.time() - t0}]
