"""Scores of the one-run privacy audit's canaries (`audit.py`) and the copy of a cell's data with
its sample canaries; the canaries themselves are made by `fedsafe.canaries` (a leaf that training
imports without the attacks).

- Sample canaries: the canary's loss reduction from the initial to the final global model.
- Canary clients: how far the server's model moved along the canary's direction u_i, from what
  the server saw in every round (`client_scores`).
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from fedsafe.canaries import make_canaries


def add_canaries(data_dir: Path, spec: dict, work_dir: Path, canaries_path: Path) -> Path:
    """A copy of the prepared data (in work_dir) with the included canaries spread over the
    clients (each to a random client); writes the canaries (images, labels, coins, client) to
    canaries_path and returns the copy's folder. Called by the training job of a sample-level
    audited cell only."""
    import json
    import shutil

    from fedsafe.data.prepare import load_prepared

    data = load_prepared(data_dir)
    man, opt = data.manifest, spec["canaries"]
    shape = (man["channels"], man["image_size"], man["image_size"])
    x, y, inc = make_canaries(opt["kind"], int(opt["n"]), shape, len(man["class_names"]),
                              spec["seed"], source=data.test)
    client = np.random.default_rng([spec["seed"], 152]).integers(0, len(data.clients), len(y))
    arrays = {"test_x": data.test[0], "test_y": data.test[1],
              "holdout_x": data.holdout[0], "holdout_y": data.holdout[1]}
    for i, (cx, cy) in enumerate(data.clients):
        pick = inc & (client == i)
        arrays[f"client{i}_x"], arrays[f"client{i}_y"] = np.r_[cx, x[pick]], np.r_[cy, y[pick]]
    out = Path(work_dir) / "canaried_data"
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    np.savez(out / "data.npz", **arrays)
    (out / "manifest.json").write_text(json.dumps(man))
    np.savez(canaries_path, x=x, y=y, included=inc, client=client)
    return out


def loss_reduction_scores(initial, final, x, y, batch_size: int = 512) -> np.ndarray:
    """Sample canary score: its loss under the initial model minus under the final one (higher =
    more likely trained on). The attacker needs query access to both models: in a federation every
    client and the server receive the initial global model."""
    from fedsafe.attacks.membership.loss import loss_scores

    return loss_scores(final, x, y, batch_size) - loss_scores(initial, x, y, batch_size)


def client_scores(projections: np.ndarray, clip: float, noise: float,
                  rate: float) -> np.ndarray:
    """One score per canary client from the projections (rounds x canaries) of every round's
    released noisy sum on the canaries' directions (higher = more likely included).

    Standardised by the accounted noise std z C, a round's projection is N(a, 1) where the canary
    was in the sum (a = 1/z) and N(0, 1) where not. With every client in every round (rate 1) the
    log-likelihood ratio is linear in the sum over rounds, which is also the projection of
    final - initial: the end-to-end score is already optimal. With Poisson sampling (rate q < 1) a
    round's likelihood ratio is the mixture log(1 - q + q exp(a x - a^2 / 2)), and their sum over
    rounds (the Neyman-Pearson test of the whole transcript) beats the plain sum, which dilutes
    the rounds the canary was in with those it was not. Any fixed function of what the server saw
    keeps the audit valid; the accounted z only tunes the score, a wrong z makes it weaker, not
    invalid."""
    x = np.asarray(projections, float)
    if not noise or not math.isfinite(noise) or not 0 < rate < 1:
        return x.sum(0)
    a = 1.0 / noise
    x = x / (noise * clip)
    return np.logaddexp(math.log1p(-rate), math.log(rate) + a * x - a * a / 2).sum(0)
