"""Attack registry: attack type -> implementation, family and threat model.

To add an attack: write `run(ctx: AttackContext, options: dict) -> list[dict]` (one row per attack
parameter, e.g. per eps) in a module and add one line here. Imports nothing heavy.
"""

from dataclasses import dataclass


@dataclass(frozen=True)
class AttackSpec:
    impl: str  # "module:function"
    family: str  # evasion | inversion | membership
    threat_model: str


EVASION = "white-box on the final global model; transfer between clients' received copies"
ATTACKS: dict[str, AttackSpec] = {
    "fgsm": AttackSpec("fedsafe.attacks.evasion:run_fgsm", "evasion", EVASION),
    "pgd": AttackSpec("fedsafe.attacks.evasion:run_pgd", "evasion", EVASION),
}


def known_attacks() -> list[str]:
    return sorted(ATTACKS)
