"""Defense registry: mechanism id -> implementation and what the grid must know about it.

To add a mechanism: write a `Mechanism` subclass (see `base.py`) in its own module and add one
entry here. This module imports nothing heavy, so the Snakefile can check ids and options at parse
time. A defense made of several parts shares one `options` dict; each part reads its own keys.
"""

from dataclasses import dataclass, field


@dataclass(frozen=True)
class MechanismSpec:
    impl: str  # "module:Class", imported only when a job builds the defense
    has_noise: bool  # runs once per noise multiplier; otherwise once with noise 0
    noise_meaning: str  # what the grid's noise multiplier is for this mechanism
    guarantee: str  # the formal guarantee it gives, or "none" and why
    options: dict = field(default_factory=dict)  # option name -> default
    choices: dict = field(default_factory=dict)  # option name -> its allowed values


MECHANISMS: dict[str, MechanismSpec] = {
    "none": MechanismSpec("fedsafe.defenses.base:Mechanism", False, "-", "none: no defense"),
    "weight_noise": MechanismSpec(
        "fedsafe.defenses.weight_noise:WeightNoise", True,
        "std of Gaussian noise added to every weight in transit",
        "none: unclipped noise has unbounded sensitivity (heuristic, not DP)",
        {"uplink": True, "downlink": True}),
    "dp_sgd": MechanismSpec(
        "fedsafe.defenses.dp_sgd:DPSGD", True,
        "Opacus noise multiplier (noise std / per-sample clip norm)",
        "sample-level (epsilon, delta)-DP per client, RDP accountant",
        {"clip_norm": 1.0, "delta": 1e-5, "poisson_sampling": True, "accountant": "rdp",
         "grad_sample_mode": "fused"},
        {"accountant": ["rdp", "prv"], "grad_sample_mode": ["fused", "hooks", "ew", "functorch"]}),
    "dp_fedavg": MechanismSpec(
        "fedsafe.defenses.dp_fedavg:DPFedAvg", True,
        "noise multiplier z: std of the noise on the sum of clipped updates = z * clip_norm",
        "client-level (epsilon, delta)-DP, RDP accountant of the sampled Gaussian mechanism",
        {"clip_norm": 1.0, "delta": 1e-5, "mode": "central"},
        {"mode": ["central", "distributed"]}),
    "gradient_noise": MechanismSpec(
        "fedsafe.defenses.gradient_noise:GradientNoise", True,
        "scale b of the Laplace noise (std for Gaussian) on every shared update tensor",
        "none: no clipping, so the sensitivity is unbounded (MedPFL's heuristic, not DP)",
        {"distribution": "laplace"}, {"distribution": ["laplace", "gaussian"]}),
    "secagg": MechanismSpec(
        "fedsafe.defenses.secagg:SecureAggregation", False, "-",
        "none by itself: Flower's SecAgg+ shows the server only the mean of the sampled "
        "updates (honest-but-curious server); no DP",
        {"clipping_range": 8.0, "quantization_range": 2 ** 24, "num_shares": 1.0,
         "reconstruction_threshold": 0.67}),
    "adv_training": MechanismSpec(
        "fedsafe.defenses.adv_training:AdversarialTraining", False, "-",
        "none: robustness defense, no privacy",
        {"mode": "client", "eps": 0.03, "step_size": 0.005, "steps": 6, "fraction": 1.0,
         "random_start": True}, {"mode": ["client", "server"]}),
}


def known_mechanisms() -> list[str]:
    return sorted(MECHANISMS)


def has_noise(parts: list[str]) -> bool:
    return any(MECHANISMS[p].has_noise for p in parts)


def check_options(defense: str, parts: list[str], options: dict) -> None:
    """Every option key must belong to one of the defense's parts; the error names the key."""
    known = {k for p in parts for k in MECHANISMS[p].options}
    for key, value in options.items():
        if key not in known:
            raise ValueError(f"defenses.{defense}.options.{key}: unknown option for {parts}; "
                             f"known: {sorted(known) or 'none'}")
        allowed = [c for p in parts for c in MECHANISMS[p].choices.get(key, [])]
        if allowed and value not in allowed:
            raise ValueError(f"defenses.{defense}.options.{key}: {value!r}; expected one of "
                             f"{allowed}")
    if "secagg" in parts and parts[-1] != "secagg":
        raise ValueError(f"defenses.{defense}.parts: secagg must be the last part (it masks "
                         "what the other parts send)")
    if {"dp_sgd", "adv_training"} <= set(parts):
        raise ValueError(f"defenses.{defense}.parts: dp_sgd with adv_training is not supported "
                         "(PGD passes would bypass the DP-SGD accountant)")
