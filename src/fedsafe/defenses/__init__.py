"""Defense registry: mechanism id -> implementation and what the grid must know about it.

To add a mechanism: write a `Mechanism` subclass (see `base.py`) in its own module and add one
line here. This module imports nothing heavy, so the Snakefile can check ids at parse time.
"""

from dataclasses import dataclass


@dataclass(frozen=True)
class MechanismSpec:
    impl: str  # "module:Class", imported only when a job builds the defense
    has_noise: bool  # runs once per noise multiplier; otherwise once with noise 0
    noise_meaning: str  # what the grid's noise multiplier is for this mechanism
    guarantee: str  # the formal guarantee it gives, or "none" and why


MECHANISMS: dict[str, MechanismSpec] = {
    "none": MechanismSpec("fedsafe.defenses.base:Mechanism", False, "-", "none: no defense"),
    "weight_noise": MechanismSpec(
        "fedsafe.defenses.weight_noise:WeightNoise", True,
        "std of Gaussian noise added to every weight in transit",
        "none: unclipped noise has unbounded sensitivity (heuristic, not DP)"),
    "dp_sgd": MechanismSpec(
        "fedsafe.defenses.dp_sgd:DPSGD", True,
        "Opacus noise multiplier (noise std / per-sample clip norm)",
        "sample-level (epsilon, delta)-DP per client, RDP accountant"),
}


def known_mechanisms() -> list[str]:
    return sorted(MECHANISMS)


def has_noise(parts: list[str]) -> bool:
    return any(MECHANISMS[p].has_noise for p in parts)
