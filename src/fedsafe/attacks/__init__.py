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
INVERSION = ("honest-but-curious server inverts the victim's update at a checkpointed round, after "
             "the client's defense (only the aggregate under secagg)")
MEMBERSHIP = "black-box queries to the final global model; members = clients' training samples"
ATTACKS: dict[str, AttackSpec] = {
    "fgsm": AttackSpec("fedsafe.attacks.evasion:run_fgsm", "evasion", EVASION),
    "pgd": AttackSpec("fedsafe.attacks.evasion:run_pgd", "evasion", EVASION),
    "dlg": AttackSpec("fedsafe.attacks.privacy:run_dlg", "inversion", INVERSION),
    "idlg": AttackSpec("fedsafe.attacks.privacy:run_idlg", "inversion", INVERSION),
    "inverting_gradients": AttackSpec("fedsafe.attacks.privacy:run_inverting_gradients",
                                      "inversion", INVERSION),
    "mia_loss": AttackSpec("fedsafe.attacks.privacy:run_mia_loss", "membership", MEMBERSHIP),
    "mia_reference": AttackSpec("fedsafe.attacks.privacy:run_mia_reference", "membership",
                                MEMBERSHIP),
}


def known_attacks() -> list[str]:
    return sorted(ATTACKS)
