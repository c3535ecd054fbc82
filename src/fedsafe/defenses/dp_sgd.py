"""Sample-level DP-SGD on every client with Opacus: per-sample clipping to `clip_norm`, Gaussian
noise of std noise_multiplier * clip_norm, Poisson-sampled batches.

Accounting: a client's round is `local_epochs * m` steps of the Poisson-sampled Gaussian with rate
q = 1/m, m = ceil(n / batch_size), exactly what Opacus's DPDataLoader runs; n (the client's number
of examples) is public, so the server's ledger computes every client's epsilon itself
(`round_events`). The client keeps Opacus's accountant history too (carried in its state between
rounds: Opacus builds a fresh PrivacyEngine per `make_private`) and logs its own epsilon; the two
agree (tested). Without Poisson sampling (`poisson_sampling: false`: shuffled fixed-size batches)
no accountant here covers the mechanism, so no epsilon is reported and `guarantee` says why.

`grad_sample_mode` picks how per-sample gradients are computed: `fused` (the default,
`fedsafe.defenses.grad_sample`: in the backward pass itself, fed to Opacus's optimizer through its
`no_op` mode) or one of Opacus's own engines, hooks, ew or functorch. Clipping, noise and Poisson
sampling are Opacus's in every mode.
"""

import math

from fedsafe.defenses import grad_sample
from fedsafe.defenses.accounting import epsilon
from fedsafe.defenses.base import Mechanism

NO_POISSON = ("none: shuffled fixed-size batches (poisson_sampling: false) are not covered by the "
              "Poisson-sampled Gaussian accountant, and their true epsilon can be much larger "
              "(Chua et al. 2024)")


class DPSGD(Mechanism):
    guarantee_kind = "sample-level"

    def __init__(self, noise=0.0, options=None, seed=0, guarantee=""):
        super().__init__(noise, options, seed, guarantee)
        if not self.options["poisson_sampling"]:
            self.guarantee_kind, self.guarantee = None, NO_POISSON

    def round_events(self, participates, num_examples, federation):
        if not self.guarantee_kind:
            return None
        if not participates:
            return []
        m = math.ceil(num_examples / federation.get("batch_size", 32))
        q = 1 / m  # Opacus: sample_rate = 1 / len(loader), int(1 / sample_rate) steps per epoch
        return [(q, self.noise, federation.get("local_epochs", 1) * int(1 / q))]

    def setup_training(self, model, optimizer, loader, state):
        import warnings

        from opacus import PrivacyEngine

        # Known and harmless here: Opacus's secure_mode (torchcsprng) is not used, see
        # `generator`, and Opacus's hooks on an input that needs no gradient.
        warnings.filterwarnings("ignore", message="Secure RNG turned off")
        warnings.filterwarnings("ignore", message="Full backward hook is firing")

        self.model = model
        # Opacus's accountant only records the steps; epsilon comes from `accounting`
        self.engine = PrivacyEngine(accountant="rdp")
        self.engine.accountant.history = [tuple(h) for h in state.get("dp_history", [])]
        secret = self.options["secret_noise"]
        if secret:  # Poisson batches from OS entropy too (DPDataLoader takes the loader's)
            loader.generator = self.generator("batches")
        return self.engine.make_private(
            module=model, optimizer=optimizer, data_loader=loader,
            noise_multiplier=self.noise,
            max_grad_norm=float(self.options["clip_norm"]),
            poisson_sampling=bool(self.options["poisson_sampling"]),
            noise_generator=self.generator("noise") if secret else None,
            # same gradients in every mode, different speed (bench/bench_dpsgd.py)
            grad_sample_mode=grad_sample.opacus_mode(model, self.options["grad_sample_mode"]),
        )

    def finish_training(self, state):
        grad_sample.detach(self.model)
        state["dp_history"] = [list(h) for h in self.engine.accountant.history]
        return {"epsilon": self.epsilon(), "delta": self.delta} if self.guarantee_kind else {}

    @property
    def delta(self) -> float:
        return float(self.options["delta"])

    def epsilon(self) -> float:
        """This client's epsilon from its own Opacus history (the server's ledger agrees)."""
        return epsilon([(q, z, n) for z, q, n in self.engine.accountant.history], self.delta,
                       self.options["accountant"])
