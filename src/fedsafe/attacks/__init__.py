"""Attack registry: attack type -> implementation, family, threat model and options.

To add an attack: write `run(ctx: AttackContext, options: dict) -> list[dict]` (one row per attack
parameter, e.g. per eps) in a module and add one entry here with its options (defaults, types,
ranges: `fedsafe.options.Option`). The job receives the options with defaults filled in; unknown
keys and out-of-range values stop the run at parse time. Imports nothing heavy.
"""

from dataclasses import dataclass, field

from fedsafe.options import Option


@dataclass(frozen=True)
class AttackSpec:
    impl: str  # "module:function"
    family: str  # evasion | inversion | membership
    threat_model: str
    options: dict[str, Option] = field(default_factory=dict)


EVASION = "white-box on the final global model; transfer between clients' received copies"
INVERSION = ("honest-but-curious server inverts the victim's update as it received it in an observed "
             "round, after the client's defense (only the aggregate under secagg)")
MEMBERSHIP = "black-box queries to the final global model; members = clients' training samples"

_EPS = Option([8 / 255], float, 0.0, 1.0, many=True, doc="perturbation budgets (one row each)")
_N = Option(500, int, 1, doc="test samples attacked")
EVASION_OPTIONS = {
    "eps": _EPS, "n_samples": _N, "batch_size": Option(250, int, 1),
    "transfer": Option(True, bool, doc="transfer between clients' received copies"),
    "draws": Option(1, int, 1, doc="downlink-noise draws the transfer metrics average over"),
}
PGD_OPTIONS = {
    **EVASION_OPTIONS, "steps": Option(10, int, 1),
    "step_size": Option(None, float, 0.0, low_open=True, optional=True,
                        doc="absolute step; default eps / step_fraction"),
    "step_fraction": Option(4.0, float, 0.0, low_open=True),
    "norm": Option("Linf", str, choices=("Linf", "L2")),
}
INVERSION_OPTIONS = {
    "round": Option(None, int, 1, optional=True,
                    doc="federation round attacked; must be in federation.observe_rounds "
                        "(default: the first observed)"),
    "victim": Option(None, int, 0, optional=True,
                     doc="client attacked; default: the first client sampled in the round"),
    "observation": Option("update", str, choices=("update", "gradient"),
                          doc="update: the update the server recorded (threat model as deployed); "
                              "gradient: MedPFL's single-gradient setting (FedSGD)"),
    "n_batches": Option(4, int, 1, doc="single-gradient setting: gradients attacked"),
    "batch_size": Option(1, int, 1, doc="single-gradient setting: images per gradient"),
    "max_images": Option(16, int, 1, doc="update: skip (say so) clients holding more images"),
    "datasets": Option(None, str, many=True, optional=True,
                       doc="run only on these dataset ids (elsewhere a row says it was skipped), "
                           "to spend a converging budget on fewer cells"),
    "iterations": Option(100, int, 1), "restarts": Option(1, int, 1),
    "lr": Option(None, float, 0.0, low_open=True, optional=True),
    "tv_weight": Option(1e-4, float, 0.0), "init": Option("random", str, choices=("random", "cpl")),
    "save_images": Option(False, bool, doc="reconstruction grids (patients' images on real data)"),
}
MEMBERSHIP_OPTIONS = {"n_samples": _N}
REFERENCE_OPTIONS = {
    **MEMBERSHIP_OPTIONS, "n_reference": Option(2, int, 1),
    "reference_epochs": Option(None, int, 1, optional=True, doc="default rounds x local epochs"),
}

ATTACKS: dict[str, AttackSpec] = {
    "fgsm": AttackSpec("fedsafe.attacks.evasion:run_fgsm", "evasion", EVASION, EVASION_OPTIONS),
    "pgd": AttackSpec("fedsafe.attacks.evasion:run_pgd", "evasion", EVASION, PGD_OPTIONS),
    "dlg": AttackSpec("fedsafe.attacks.gradient_inversion:run_dlg", "inversion", INVERSION, INVERSION_OPTIONS),
    "idlg": AttackSpec("fedsafe.attacks.gradient_inversion:run_idlg", "inversion", INVERSION,
                       INVERSION_OPTIONS),
    "fedavg": AttackSpec("fedsafe.attacks.gradient_inversion:run_fedavg", "inversion", INVERSION,
                         INVERSION_OPTIONS),
    "inverting_gradients": AttackSpec("fedsafe.attacks.gradient_inversion:run_inverting_gradients",
                                      "inversion", INVERSION, INVERSION_OPTIONS),
    "mia_loss": AttackSpec("fedsafe.attacks.membership:run_mia_loss", "membership", MEMBERSHIP,
                           MEMBERSHIP_OPTIONS),
    "mia_reference": AttackSpec("fedsafe.attacks.membership:run_mia_reference", "membership",
                                MEMBERSHIP, REFERENCE_OPTIONS),
}


def known_attacks() -> list[str]:
    return sorted(ATTACKS)
