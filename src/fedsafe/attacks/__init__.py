"""Attack registry: attack type -> implementation, family, threat model and options.

To add an attack: write `run(ctx: AttackContext, options: dict) -> list[dict]` (one row per attack
parameter, e.g. per eps) in a module and add one entry here with its options (defaults, types,
ranges: `fedsafe.options.Option`). Attacks that share a module's `run` differ by a keyword bound
in the entry's `fixed` (e.g. `kind="pgd"`). The job receives the options with defaults filled in;
unknown keys and out-of-range values stop the run at parse time. Imports nothing heavy.
"""

from dataclasses import dataclass

from fedsafe.options import Option
from fedsafe.registry import Entry, Registry


@dataclass(frozen=True)
class AttackMeta:
    family: str  # evasion | inversion | malicious | membership
    threat_model: str
    needs_reference: bool = False  # reads the dataset's reference models (rules/reference.smk)
    update_only: bool = False  # inverts a recorded update only (no single-gradient observation)


EVASION = ("white-box on the final global model and on each client's received copy; transfer "
           "between the copies")
BLACK_BOX = "black-box (scores only) on the final global model and each client's received copy"
INVERSION = ("honest-but-curious server inverts the victim's update as it received it in an observed "
             "round, after the client's defense (only the aggregate under secagg)")
MALICIOUS = ("malicious server: in round `round` it sends the clients a crafted model (an imprint "
             "block in front of the network, bins from public images) and recovers images "
             "analytically from one client's update, or from the aggregate that secure "
             "aggregation (or HE, once the clients decrypt it) reveals; the clients train with "
             "the cell's recipe and defense")
MEMBERSHIP = "black-box queries to the final global model; members = clients' training samples"
REFERENCE = (MEMBERSHIP + "; the attacker also trains reference models with the target's recipe "
             "on population data (online: half of them on each target point)")
AUDIT = ("one-run privacy audit: canaries inserted in audited cells, each with probability 1/2; "
         "queries to the initial and final global models")

_EPS = Option([8 / 255], float, 0.0, 1.0, many=True, doc="perturbation budgets (one row each)")
# every test image by default: a subset's sampling error would swamp the differences between
# cells (150 of 400 images: about 0.03 on a robust-accuracy difference)
_N = Option(None, int, 1, optional=True, doc="test samples attacked (null: all of them)")
_NORM = Option("Linf", str, choices=("Linf", "L2"))
EVASION_OPTIONS = {
    "eps": _EPS, "n_samples": _N, "batch_size": Option(250, int, 1),
    "transfer": Option(True, bool, doc="attack each client's received copy, transfer between them"),
    "draws": Option(1, int, 1, doc="downlink-noise draws the client metrics average over"),
}
PGD_OPTIONS = {
    **EVASION_OPTIONS, "steps": Option(20, int, 1), "norm": _NORM,
    "restarts": Option(2, int, 1, doc="random starts; a sample is robust only if it survives all"),
    "fgsm_first": Option(True, bool, doc="try the FGSM point first (L∞): never weaker than FGSM"),
    "step_size": Option(None, float, 0.0, low_open=True, optional=True,
                        doc="absolute step; default 2.5 * eps / steps"),
    "step_fraction": Option(None, float, 0.0, low_open=True, optional=True,
                            doc="step = eps / step_fraction (Fed-Safe: 6 steps of eps/6)"),
}
APGD_OPTIONS = {
    **EVASION_OPTIONS, "steps": Option(50, int, 1), "norm": _NORM,
    "restarts": Option(1, int, 1), "loss": Option("ce", str, choices=("ce", "dlr")),
    "eot_iter": Option(1, int, 1, doc="gradient samples per step (EOT) for random models"),
    "rho": Option(0.75, float, 0.0, 1.0, low_open=True),
}
CW_OPTIONS = {
    **EVASION_OPTIONS,
    "eps": Option([0.25, 0.5, 1.0], float, 0.0, many=True,
                  doc="L2 radii: the minimal perturbation found is scored within each"),
    "c": Option(1.0, float, 0.0, low_open=True), "kappa": Option(0.0, float, 0.0),
    "steps": Option(100, int, 1), "lr": Option(0.01, float, 0.0, low_open=True),
}
SQUARE_OPTIONS = {
    **EVASION_OPTIONS, "norm": _NORM, "n_queries": Option(1000, int, 1, doc="query budget"),
    "restarts": Option(1, int, 1), "p_init": Option(0.8, float, 0.0, 1.0, low_open=True),
}
AUTOATTACK_OPTIONS = {
    **EVASION_OPTIONS, "norm": _NORM,
    "version": Option("auto", str, choices=("auto", "standard", "rand"),
                      doc="auto: rand (EOT) where the model is random at inference, else standard"),
    "steps": Option(100, int, 1, doc="APGD iterations"),
    "n_queries": Option(5000, int, 1, doc="Square's query budget"),
    "eot_iter": Option(20, int, 1, doc="EOT samples per step (version rand)"),
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
    "iterations": Option(100, int, 1), "restarts": Option(1, int, 1),
    "lr": Option(None, float, 0.0, low_open=True, optional=True),
    "tv_weight": Option(1e-4, float, 0.0), "init": Option("random", str, choices=("random", "cpl")),
    "save_images": Option(False, bool, doc="reconstruction grids (patients' images on real data)"),
}
IMPRINT_OPTIONS = {
    "bins": Option(256, int, 2, doc="imprint bins: a bin holding one image gives it back; "
                                    "several images per bin mix"),
    "round": INVERSION_OPTIONS["round"],
    "observation": Option("update", str, choices=("update", "aggregate", "gradient"),
                          doc="update: one client's update (the aggregate under secagg); "
                              "aggregate: the mean of the round's clients' updates; gradient: "
                              "one SGD step on one batch per client (FedSGD)"),
    "max_images": Option(64, int, 1, doc="skip (say so) when more images are attacked"),
    "save_images": INVERSION_OPTIONS["save_images"],
}
MEMBERSHIP_OPTIONS = {"n_samples": _N}
_ONLINE = Option(False, bool, doc="online: reference models trained on the target points too")
RMIA_OPTIONS = {
    **MEMBERSHIP_OPTIONS, "online": _ONLINE,
    "offline_a": Option(0.3, float, 0.0, 1.0, doc="offline scaling of Pr(x) (the paper's a)"),
    "gamma": Option(1.0, float, 0.0, low_open=True, doc="likelihood-ratio threshold"),
}
LIRA_OPTIONS = {**MEMBERSHIP_OPTIONS, "online": _ONLINE}
AUDIT_OPTIONS = {
    "confidence": Option(0.95, float, 0.5, 1.0, doc="confidence level of the lower bound"),
    "guess_fractions": Option([0.02, 0.05, 0.1, 0.2, 0.5, 1.0], float, 0.0, 1.0, low_open=True,
                              many=True, doc="numbers of guesses tried, as shares of the canaries "
                              "(Bonferroni-corrected)"),
}

_EVASION = "fedsafe.attacks.evasion.run:run"
_INVERSION = "fedsafe.attacks.inversion.run:run"
_REFERENCE = "fedsafe.attacks.membership.reference_attacks:run"

ATTACKS = Registry("attacks.<id>.type", "attack", {
    "fgsm": Entry(_EVASION, EVASION_OPTIONS, {"kind": "fgsm"}, meta=AttackMeta("evasion", EVASION)),
    "pgd": Entry(_EVASION, PGD_OPTIONS, {"kind": "pgd"}, meta=AttackMeta("evasion", EVASION)),
    "apgd": Entry(_EVASION, APGD_OPTIONS, {"kind": "apgd"}, meta=AttackMeta("evasion", EVASION)),
    "cw": Entry(_EVASION, CW_OPTIONS, {"kind": "cw"}, meta=AttackMeta("evasion", EVASION)),
    "square": Entry(_EVASION, SQUARE_OPTIONS, {"kind": "square"},
                    meta=AttackMeta("evasion", BLACK_BOX)),
    "autoattack": Entry(_EVASION, AUTOATTACK_OPTIONS, {"kind": "autoattack"},
                        meta=AttackMeta("evasion", EVASION)),
    "dlg": Entry(_INVERSION, INVERSION_OPTIONS, {"method": "dlg"},
                 meta=AttackMeta("inversion", INVERSION)),
    "idlg": Entry(_INVERSION, INVERSION_OPTIONS, {"method": "idlg"},
                  meta=AttackMeta("inversion", INVERSION)),
    "fedavg": Entry(_INVERSION, INVERSION_OPTIONS, {"method": "fedavg"},
                    meta=AttackMeta("inversion", INVERSION, update_only=True)),
    "inverting_gradients": Entry(_INVERSION, INVERSION_OPTIONS, {"method": "inverting_gradients"},
                                 meta=AttackMeta("inversion", INVERSION)),
    "malicious_imprint": Entry("fedsafe.attacks.malicious.imprint:run", IMPRINT_OPTIONS,
                               meta=AttackMeta("malicious", MALICIOUS)),
    "mia_loss": Entry("fedsafe.attacks.membership.loss:run", MEMBERSHIP_OPTIONS,
                      meta=AttackMeta("membership", MEMBERSHIP)),
    "mia_rmia": Entry(_REFERENCE, RMIA_OPTIONS, {"kind": "rmia"},
                      meta=AttackMeta("membership", REFERENCE, needs_reference=True)),
    "mia_lira": Entry(_REFERENCE, LIRA_OPTIONS, {"kind": "lira"},
                      meta=AttackMeta("membership", REFERENCE, needs_reference=True)),
    "privacy_audit": Entry("fedsafe.attacks.membership.audit:run", AUDIT_OPTIONS,
                           meta=AttackMeta("membership", AUDIT)),
})
