"""The job specs built from a config: what determines each job's output, and nothing else (a
spec's hash decides whether a job file is stale)."""

from fedsafe.attacks import ATTACKS
from fedsafe.config.grid import audited, defense_parts


def dataset_spec(config: dict, dataset: str) -> dict:
    ds = config["datasets"][dataset]
    return {"dataset": dataset, "source": ds.get("source", dataset), "options": ds["options"],
            "n_clients": ds["n_clients"], "partition": ds["partition"], "seed": ds["seed"],
            "holdout_fraction": ds["holdout_fraction"]}


def train_spec(config: dict, dataset: str, defense: str, noise: str, seed: int | str) -> dict:
    """Everything that determines a trained model, and nothing else (so attack options never
    trigger retraining)."""
    spec = {"dataset": dataset, "defense": defense, "parts": defense_parts(config, defense),
            "noise": float(noise), "seed": int(seed),
            "options": config["defenses"][defense]["options"],
            "federation": config["federation"], "model": config["federation"]["model"],
            "data": dataset_spec(config, dataset)}
    if audited(config, dataset, defense, noise):  # only these carry the key: others unchanged
        a = config["audit"]  # client-level guarantees get canary clients (fedsafe/canaries.py)
        kind = "update" if "dp_fedavg" in spec["parts"] else a.get("kind", "noise")
        n = canary_count(config, spec["parts"])
        spec["canaries"] = {"n": n, "kind": kind}
    return spec


# Canary clients are orthonormal random directions: many more fit than canary samples could be
# trained with, and the one-run bound's ceiling grows with their number (10,000 canaries: 12.9 by
# the f-DP bound at 95%, delta 1e-5, above config/audit.yaml's DP-FedAvg epsilons of 9.3 and 6.6).
CLIENT_CANARIES = 10_000


def canary_count(config: dict, parts: list[str]) -> int:
    """How many canaries an audited cell of these defense parts trains with: canary clients for a
    client-level guarantee (dp_fedavg), canary samples otherwise."""
    a = config.get("audit", {})
    if "dp_fedavg" in parts:
        return int(a.get("client_canaries", CLIENT_CANARIES))
    return int(a.get("canaries", 1000))


def reference_spec(config: dict, dataset: str, seed: int | str) -> dict:
    """What determines the reference models of a dataset: its data, the target's recipe (model,
    federation settings) and the seed; never a defense or an attack option."""
    ref = config.get("reference_models", {})
    return {"dataset": dataset, "seed": int(seed), "model": config["federation"]["model"],
            "federation": config["federation"], "n_models": int(ref.get("n", 8)),
            "training": ref.get("training", "centralised"), "data": dataset_spec(config, dataset)}


def attack_spec(config: dict, attack: str) -> dict:
    a = config["attacks"][attack]
    kind = a.get("type", attack)
    return {"attack": attack, "type": kind, "options": ATTACKS.resolve(kind, a["options"])}
