"""Sample-level DP-SGD on every client with Opacus: per-sample clipping to `clip_norm`, Gaussian
noise of std noise_multiplier * clip_norm, Poisson sampling, RDP accounting.

Each client keeps one accountant for the whole federation: Opacus builds a fresh PrivacyEngine
whenever `make_private` is called, so the accountant's history is carried in the client's state
between rounds and restored before training (re-creating it each round would reset epsilon).
`grad_sample_mode` picks how per-sample gradients are computed: `fused` (the default,
`fedsafe.defenses.grad_sample`: in the backward pass itself, fed to Opacus's optimizer through its
`no_op` mode) or one of Opacus's own engines, hooks, ew or functorch. Clipping, noise, Poisson
sampling and accounting are Opacus's in every mode.
"""

from fedsafe.defenses import grad_sample
from fedsafe.defenses.base import Mechanism


class DPSGD(Mechanism):
    NAME = "dp_sgd"
    guarantee_kind = "sample-level"

    def setup_training(self, model, optimizer, loader, state):
        import warnings

        from opacus import PrivacyEngine

        # Known and harmless here: no secure RNG (research use) and Opacus's hooks on an input
        # that needs no gradient.
        warnings.filterwarnings("ignore", message="Secure RNG turned off")
        warnings.filterwarnings("ignore", message="Full backward hook is firing")

        self.model = model
        self.engine = PrivacyEngine(accountant=self.options["accountant"])
        self.engine.accountant.history = [tuple(h) for h in state.get("dp_history", [])]
        return self.engine.make_private(
            module=model, optimizer=optimizer, data_loader=loader,
            noise_multiplier=self.noise,
            max_grad_norm=float(self.options["clip_norm"]),
            poisson_sampling=bool(self.options["poisson_sampling"]),
            # same gradients in every mode, different speed (bench/bench_dpsgd.py)
            grad_sample_mode=grad_sample.opacus_mode(model, self.options["grad_sample_mode"]),
        )

    def finish_training(self, state):
        grad_sample.detach(self.model)
        state["dp_history"] = [list(h) for h in self.engine.accountant.history]
        return {"epsilon": self.epsilon(), "delta": self.delta}

    @property
    def delta(self) -> float:
        return float(self.options["delta"])

    def epsilon(self) -> float:
        if self.noise == 0:
            return float("inf")
        return float(self.engine.get_epsilon(self.delta))
