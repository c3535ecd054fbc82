"""The reference models of the membership attacks RMIA and LiRA (`reference_attacks`).

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

from fedsafe.files import save_torch
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
def model_logits(model, x: np.ndarray, device: str, batch_size: int = 512) -> np.ndarray:
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
        logits.append(model_logits(model, x, device))
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
