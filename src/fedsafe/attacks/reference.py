"""Reference-model membership attacks: RMIA (Zarifzadeh et al., ICML 2024) and LiRA (Carlini et al.,
S&P 2022), each online and offline.

Reference models are trained once per (dataset, recipe, seed) by `train_reference_models` (the
`reference` rule) and reused by every cell and attack. Each starts from fresh seeded weights (never
the target's) and is trained with the target's recipe (model, optimiser, batch size, rounds x local
epochs; centrally, or as a federation of the dataset's client count) on a random half of the
population pool: every training-split sample (the clients' and the holdout) plus the test split.
Every pool point is IN for half of the models (complementary pairs), which the online variants use;
the offline variants use, for each point, only the models it was OUT of, so the target points never
influence the reference statistics they are compared with. A reference model thus trains on half
the pool; it matches the target's training-set size where the clients hold half of the pool (the
papers' set-up; `config/audit.yaml` sets `holdout_fraction` for it), and the job warns otherwise.

The file holds, per reference model, its logits on the whole pool: attacks need no model of their
own, only the target's logits.
"""
from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from fedsafe.files import load_torch, save_torch
from fedsafe.models import build_model_for
from fedsafe.seeding import derive_seed

# ---- the pool: one index space shared by reference models and attacks ----

def pool_arrays(data) -> tuple[np.ndarray, np.ndarray, dict]:
    """All prepared samples in a fixed order (clients, holdout, test) and where each part starts."""
    parts = [*data.clients, data.holdout, data.test]
    xs, ys = np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])
    n_clients = sum(len(c[1]) for c in data.clients)
    return xs, ys, {"clients": 0, "holdout": n_clients, "test": n_clients + len(data.holdout[1])}


def half_masks(n_models: int, n_pool: int, seed: int) -> np.ndarray:
    """in_mask[k, j]: pool point j is in reference model k's training set. Models come in
    complementary pairs, so each point is IN for exactly half of an even number of models."""
    rng = np.random.default_rng([seed, 151])
    mask = np.zeros((n_models, n_pool), bool)
    for k in range(0, n_models, 2):
        half = rng.permutation(n_pool) < n_pool // 2
        mask[k] = half
        if k + 1 < n_models:
            mask[k + 1] = ~half
    return mask


def initial_model(spec: dict, manifest: dict, k: int):
    """Reference model k's starting weights: its own seed stream, never the target's (the target
    starts from torch.manual_seed(seed))."""
    torch.manual_seed(derive_seed(spec["seed"], "reference", k))
    return build_model_for(spec["model"], manifest)


def _train_central(model, x, y, spec: dict, seed: int, device: str):
    from fedsafe.defenses.base import Mechanism
    from fedsafe.federation.local import TrainSettings, local_train

    fed = spec["federation"]
    # one long local run: a per-round lr schedule has no rounds to follow here
    settings = replace(TrainSettings.from_config(fed), lr_schedule="constant",
                       local_epochs=fed["rounds"] * fed["local_epochs"])
    local_train(model, x, y, settings, Mechanism(), seed, 0, 0, {}, device)
    return model


def _train_federated(model, x, y, spec: dict, manifest: dict, seed: int, work: Path):
    """The target's federation (plain FedAvg, its client count, iid split) on the reference data."""
    import json
    import shutil

    from fedsafe.federation.simulation import train_cell

    n = int(manifest["n_clients"])
    parts = np.array_split(np.random.default_rng(seed).permutation(len(y)), n)
    work.mkdir(parents=True, exist_ok=True)
    arrays = {f"client{i}_{a}": v[p] for i, p in enumerate(parts) for a, v in (("x", x), ("y", y))}
    arrays.update(test_x=x[:1], test_y=y[:1], holdout_x=x[:0], holdout_y=y[:0])
    np.savez(work / "data.npz", **arrays)
    (work / "manifest.json").write_text(json.dumps({**manifest, "n_clients": n}))
    cell = {"dataset": spec["dataset"], "defense": "none", "parts": ["none"], "noise": 0.0,
            "seed": seed, "options": {}, "model": spec["model"],
            "federation": {**spec["federation"], "checkpoint_rounds": [], "observe_rounds": []}}
    train_cell(work, cell, work / "out")
    model.load_state_dict(torch.load(work / "out" / "model.pt", weights_only=True))
    shutil.rmtree(work)  # the logits are what is kept
    return model


@torch.no_grad()
def _logits(model, x: np.ndarray, device: str, batch_size: int = 512) -> np.ndarray:
    from fedsafe.federation.local import to_tensor

    model.to(device).eval()
    return torch.cat([model(to_tensor(x[i:i + batch_size]).to(device)).cpu()
                      for i in range(0, len(x), batch_size)]).numpy()


def train_reference_models(data, spec: dict, out_path: Path, device: str = "cpu") -> dict:
    """Train spec["n_models"] reference models; save their pool logits and IN masks."""
    t0 = time.time()
    x, y, offsets = pool_arrays(data)
    mask = half_masks(spec["n_models"], len(y), spec["seed"])
    logits, init_dist = [], []
    target_init = _target_initial(spec, data.manifest)
    for k in range(spec["n_models"]):
        model = initial_model(spec, data.manifest, k)
        init_dist.append(float(sum((a.float() - b.float()).pow(2).sum()
                                   for a, b in zip(model.state_dict().values(), target_init.values())) ** 0.5))
        idx = np.flatnonzero(mask[k])
        seed = derive_seed(spec["seed"], "reference-train", k)
        if spec["training"] == "federated":
            model = _train_federated(model, x[idx], y[idx], spec, data.manifest, seed,
                                     Path(out_path).parent / f"federation_{k}")
        else:
            model = _train_central(model, x[idx], y[idx], spec, seed, device)
        logits.append(_logits(model, x, device))
    out = {"logits": torch.from_numpy(np.stack(logits)), "in_mask": torch.from_numpy(mask),
           "labels": torch.from_numpy(y), "offsets": offsets}
    save_torch(out, out_path)
    info = {"n_models": spec["n_models"], "pool_size": int(len(y)),
            "train_size": int(mask[0].sum()), "target_train_size": int(offsets["holdout"]),
            "initial_distance_to_target": init_dist, "seconds": time.time() - t0}
    if abs(info["train_size"] / max(info["target_train_size"], 1) - 1) > 0.1:
        import logging

        logging.getLogger("fedsafe").warning(
            "reference models train on %d samples, the target on %d: for references of the "
            "target's size the clients must hold half of the pool (set the dataset's "
            "holdout_fraction)", info["train_size"], info["target_train_size"])
    return info


def _target_initial(spec: dict, manifest: dict) -> dict:
    torch.manual_seed(spec["seed"])  # as train_cell does
    return build_model_for(spec["model"], manifest).state_dict()


# ---- the attacks, on logits ----

def true_prob(logits: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Softmax probability of the true label along the last axis (RMIA's Pr(x | theta))."""
    z = logits - logits.max(-1, keepdims=True)
    p = np.exp(z) / np.exp(z).sum(-1, keepdims=True)
    return np.take_along_axis(p, np.broadcast_to(y[..., None], p.shape[:-1] + (1,)), -1)[..., 0]


def scaled_logit(logits: np.ndarray, y: np.ndarray) -> np.ndarray:
    """LiRA's statistic log(p / (1 - p)) of the true label, computed stably as
    logit_y - logsumexp(other logits)."""
    own = np.take_along_axis(logits, np.broadcast_to(y[..., None], logits.shape[:-1] + (1,)), -1)[..., 0]
    other = logits.copy()
    np.put_along_axis(other, np.broadcast_to(y[..., None], logits.shape[:-1] + (1,)), -np.inf, -1)
    m = other.max(-1)
    return own - (m + np.log(np.exp(other - m[..., None]).sum(-1)))


def rmia_scores(target_p: np.ndarray, ref_p: np.ndarray, in_mask: np.ndarray, is_target: np.ndarray,
                online: bool, offline_a: float = 0.3, gamma: float = 1.0) -> np.ndarray:
    """RMIA score of every pool point flagged `is_target`, against population points z (the rest).

    Pr(x) is the mean of Pr(x | theta_ref) over all reference models (online: each x is IN half of
    them) or over the models x was OUT of, scaled as Pr(x) = ((1 + a) Pr_OUT(x) + 1 - a) / 2 to
    stand in for the missing IN models (offline, the paper's Eq. 6). Score(x) = share of z with
    (Pr(x|theta) / Pr(x)) / (Pr(z|theta) / Pr(z)) > gamma.
    """
    if online:
        pr = ref_p.mean(0)
    else:
        out = ~in_mask
        pr_out = (ref_p * out).sum(0) / np.maximum(out.sum(0), 1)
        pr = np.where(out.any(0), 0.5 * ((1 + offline_a) * pr_out + (1 - offline_a)), np.nan)
    ratio = target_p / pr
    rx, rz = ratio[is_target], ratio[~is_target]
    rz = np.sort(rz[np.isfinite(rz)])
    # share of z with rx / rz > gamma  <=>  rz < rx / gamma
    return np.searchsorted(rz, rx / gamma, side="left") / max(len(rz), 1)


def lira_scores(target_stat: np.ndarray, ref_stat: np.ndarray, in_mask: np.ndarray,
                online: bool, min_models: int = 64) -> np.ndarray:
    """LiRA: Gaussian fits of the reference models' scaled logits. Online: log-likelihood ratio of
    N(mu_in, s_in) against N(mu_out, s_out); offline: one-sided test against N(mu_out, s_out)
    (higher = further above the OUT distribution). With fewer than `min_models` (64 in the paper)
    the variances are the global ones across points (the paper's fixed-variance variant)."""
    from scipy.stats import norm

    def fit(mask):
        n = mask.sum(0)
        mu = (ref_stat * mask).sum(0) / np.maximum(n, 1)
        var = ((ref_stat - mu) ** 2 * mask).sum(0) / np.maximum(n - 1, 1)
        if ref_stat.shape[0] < min_models:
            var = np.full_like(var, np.nanmean(np.where(n > 1, var, np.nan)))
        return mu, np.sqrt(np.maximum(var, 1e-12))

    mu_out, s_out = fit(~in_mask)
    if not online:
        return norm.logcdf(target_stat, mu_out, s_out)
    mu_in, s_in = fit(in_mask)
    return norm.logpdf(target_stat, mu_in, s_in) - norm.logpdf(target_stat, mu_out, s_out)


# ---- jobs ----

def run(ctx, options: dict, *, kind: str) -> list[dict]:
    """Reference-model attack `kind` (rmia or lira: bound by its registry entry) on the cell."""
    from fedsafe.attacks.membership import _delta, _membership_row, member_indices
    from fedsafe.metrics import roc_metrics

    t0 = time.time()
    if ctx.reference_path is None:
        raise ValueError(f"{kind} needs the reference models (the `reference` rule's output)")
    ref = load_torch(ctx.reference_path)
    logits, in_mask = ref["logits"].numpy(), ref["in_mask"].numpy()
    y = ref["labels"].numpy()
    x_pool, y_pool, offsets = pool_arrays(ctx.data)
    if not np.array_equal(y_pool, y):
        raise ValueError("reference models were trained on another split of the data")
    mi, ni = member_indices(ctx, options["n_samples"])
    target_idx = np.r_[mi, ni + offsets["holdout"]]
    z_idx = np.arange(offsets["test"], len(y))  # population points: the test split
    idx = np.r_[target_idx, z_idx]
    target_logits = _logits(ctx.new_model(), x_pool[idx], ctx.device)
    online = bool(options["online"])
    if kind == "rmia":
        is_target = np.r_[np.ones(len(target_idx), bool), np.zeros(len(z_idx), bool)]
        scores = rmia_scores(true_prob(target_logits, y[idx]), true_prob(logits[:, idx], y[idx]),
                             in_mask[:, idx], is_target, online, options["offline_a"], options["gamma"])
    else:
        t = slice(0, len(target_idx))
        scores = lira_scores(scaled_logit(target_logits[t], y[target_idx]),
                             scaled_logit(logits[:, target_idx], y[target_idx]),
                             in_mask[:, target_idx], online)
    res = roc_metrics(scores[:len(mi)], scores[len(mi):len(target_idx)], _delta(ctx), seed=ctx.seed)
    return _membership_row(ctx, res, t0, {"online": online})
