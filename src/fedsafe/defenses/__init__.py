"""Defense registry: mechanism id -> implementation and what the grid must know about it.

To add a mechanism: write a `Mechanism` subclass (see `base.py`) in its own module and add one
entry here. This module imports nothing heavy, so the Snakefile can check ids and options at parse
time. A defense made of several parts shares one `options` dict; each part receives its own keys,
with its defaults filled in.
"""

from dataclasses import dataclass

from fedsafe.defenses import ckks
from fedsafe.options import Option
from fedsafe.options import check as check_option_values
from fedsafe.registry import Entry, Registry


@dataclass(frozen=True)
class MechanismMeta:
    has_noise: bool  # runs once per noise multiplier; otherwise once with noise 0
    noise_meaning: str  # what the grid's noise multiplier is for this mechanism
    guarantee: str  # the formal guarantee it gives, or "none" and why


_DELTA = Option(1e-5, float, 0.0, 1.0, low_open=True, doc="delta of (epsilon, delta)-DP")
_CLIP = Option(1.0, float, 0.0, low_open=True, doc="L2 clipping norm")
_ACCOUNTANT = Option("pld", str, choices=("pld", "rdp", "prv"),
                     doc="pld: dp_accounting's privacy loss distributions (tightest); rdp, prv: "
                         "Opacus's analyses")
_TARGET = Option(None, float, 0.0, low_open=True, optional=True,
                 doc="privacy budget: training stops before a round would exceed it")
_SECRET = Option(False, bool, doc="draw the privacy noise and sampling from OS entropy (nobody "
                                  "can regenerate it); false: from the config seed (simulation)")

MECHANISMS = Registry("defenses.<id>.parts", "defense", {
    "none": Entry("fedsafe.defenses.base:Mechanism",
                  meta=MechanismMeta(False, "-", "none: no defense")),
    "weight_noise": Entry(
        "fedsafe.defenses.weight_noise:WeightNoise",
        {"uplink": Option(True, bool, doc="noise on the client's update"),
         "downlink": Option(True, bool, doc="noise on each client's copy of the global model"),
         "secret_noise": _SECRET},
        meta=MechanismMeta(
            True, "std of Gaussian noise added to every weight in transit",
            "none: unclipped noise has unbounded sensitivity (heuristic, not DP)")),
    "dp_sgd": Entry(
        "fedsafe.defenses.dp_sgd:DPSGD",
        {"clip_norm": _CLIP, "delta": _DELTA,
         "poisson_sampling": Option(True, bool, doc="Poisson-sampled batches (the accountant's "
                                                    "assumption); false: no epsilon is reported"),
         "accountant": _ACCOUNTANT, "target_epsilon": _TARGET, "secret_noise": _SECRET,
         "grad_sample_mode": Option("fused", str, choices=("fused", "hooks", "ew", "functorch"),
                                    doc="how per-sample gradients are computed")},
        meta=MechanismMeta(
            True, "Opacus noise multiplier (noise std / per-sample clip norm)",
            "sample-level (epsilon, delta)-DP per client (add/remove one example of that client, "
            "Poisson-sampled batches); the cell reports the max over all clients")),
    "dp_fedavg": Entry(
        "fedsafe.defenses.dp_fedavg:DPFedAvg",
        {"clip_norm": _CLIP, "delta": _DELTA,
         "mode": Option("central", str, choices=("central", "distributed"),
                        doc="distributed needs secagg as the defense's last part"),
         "accountant": _ACCOUNTANT, "target_epsilon": _TARGET, "secret_noise": _SECRET},
        meta=MechanismMeta(
            True, "noise multiplier z: std of the noise on the sum of clipped updates = z * "
            "clip_norm",
            "client-level (epsilon, delta)-DP (add/remove one client); central: Poisson-sampled "
            "clients, against anyone who sees the models; distributed (with secagg): against the "
            "server, no sampling amplification")),
    "gradient_noise": Entry(
        "fedsafe.defenses.gradient_noise:GradientNoise",
        {"distribution": Option("laplace", str, choices=("laplace", "gaussian")),
         "secret_noise": _SECRET},
        meta=MechanismMeta(
            True, "scale b of the Laplace noise (std for Gaussian) on every shared update tensor",
            "none: no clipping, so the sensitivity is unbounded (MedPFL's heuristic, not DP)")),
    "secagg": Entry(
        "fedsafe.defenses.secure_aggregation:SecureAggregation",
        {"clipping_range": Option(8.0, float, 0.0, low_open=True),
         "quantization_range": Option(2 ** 24, int, 2),
         "num_shares": Option(1.0, float, 0.0, low_open=True,
                              doc="fraction of the sampled clients (<= 1) or a count"),
         "reconstruction_threshold": Option(0.67, float, 0.0, low_open=True)},
        meta=MechanismMeta(
            False, "-",
            "none by itself: Flower's SecAgg+ shows the server only the mean of the sampled "
            "updates (honest-but-curious server); no DP")),
    "he": Entry(
        "fedsafe.defenses.homomorphic:HomomorphicEncryption",
        {"poly_modulus_degree": Option(8192, int, choices=tuple(ckks.MAX_COEFF_BITS),
                                       doc="CKKS ring degree N: N/2 values per ciphertext"),
         "coeff_mod_bit_sizes": Option([60, 60, 60], int, 20, ckks.MAX_PRIME_BITS, many=True,
                                       doc="bit sizes of the coefficient-modulus primes; all "
                                           "but the last (SEAL's special prime) hold the values"),
         "scale_bits": Option(52, int, 20, ckks.MAX_PRIME_BITS,
                              doc="values are encoded as round(value x 2^scale_bits)"),
         "max_value": Option(1024.0, float, 0.0, low_open=True,
                             doc="the largest |value| the ciphertexts must hold (an update, "
                                 "the sum of every round's aggregate); beyond it the run stops"),
         "precision": Option(1e-9, float, 0.0, low_open=True,
                             doc="the largest decryption error per value the parameters may "
                                 "give (about N x 2^(1 - scale_bits))")},
        meta=MechanismMeta(
            False, "-",
            "none by itself: the server adds CKKS ciphertexts and never holds a plaintext "
            "update, aggregate or model; the clients decrypt the aggregate; no DP")),
    "adv_training": Entry(
        "fedsafe.defenses.adv_training:AdversarialTraining",
        {"mode": Option("client", str, choices=("client", "server")),
         "eps": Option(0.03, float, 0.0, 1.0), "step_size": Option(0.005, float, 0.0, 1.0),
         "steps": Option(6, int, 1), "fraction": Option(1.0, float, 0.0, 1.0, low_open=True),
         "random_start": Option(True, bool)},
        meta=MechanismMeta(False, "-", "none: robustness defense, no privacy")),
})


def has_noise(parts: list[str]) -> bool:
    return any(MECHANISMS.get(p).meta.has_noise for p in parts)


def check_options(defense: str, parts: list[str], options: dict) -> None:
    """Every option key must belong to one of the defense's parts, with a value of the declared
    type, range and choices; the error names the key."""
    known = {k: o for p in parts for k, o in MECHANISMS.options(p).items()}
    check_option_values(f"defenses.{defense}.options", known, options)
    if "he" in parts:
        _check_he(defense, parts, options)
    if "secagg" in parts and parts[-1] != "secagg":
        raise ValueError(f"defenses.{defense}.parts: secagg must be the last part (it masks "
                         "what the other parts send)")
    formal = [p for p in parts
              if MECHANISMS.get(p).meta.guarantee.startswith(("sample", "client"))]
    if len(formal) > 1:
        raise ValueError(f"defenses.{defense}.parts: {formal} give guarantees of different kinds "
                         "that one accountant cannot compose; use one of them")
    if "dp_fedavg" in parts and options.get("mode") == "distributed" and not \
            {"secagg", "he"} & set(parts):
        raise ValueError(f"defenses.{defense}: dp_fedavg mode distributed needs secagg or he as "
                         "the last part: without it the server sees each update with only "
                         "1/sqrt(k) of the noise")
    if {"dp_sgd", "adv_training"} <= set(parts):
        raise ValueError(f"defenses.{defense}.parts: dp_sgd with adv_training is not supported "
                         "(PGD passes would bypass the DP-SGD accountant)")


def _check_he(defense: str, parts: list[str], options: dict) -> None:
    """`he` encrypts what the other parts send, and the server then holds only ciphertexts: any
    part that needs the plaintext aggregate on the server cannot come with it."""
    if "secagg" in parts:
        raise ValueError(f"defenses.{defense}.parts: he with secagg: both hide each update from "
                         "the server, and SecAgg+ masks quantised plaintext that cannot be added "
                         "as ciphertext; use one of them")
    if parts[-1] != "he":
        raise ValueError(f"defenses.{defense}.parts: he must be the last part (it encrypts what "
                         "the other parts send)")
    if "dp_fedavg" in parts and options.get("mode", "central") == "central":
        raise ValueError(f"defenses.{defense}.options.mode: dp_fedavg central adds its noise to "
                         "the plaintext sum on the server, which under he only holds "
                         "ciphertexts; use mode distributed (each client adds its share)")
    ckks.check(f"defenses.{defense}.options", MECHANISMS.resolve("he", {
        k: v for k, v in options.items() if k in MECHANISMS.options("he")}))
