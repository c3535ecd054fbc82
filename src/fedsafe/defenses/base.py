"""The hooks a defense mechanism may implement, and the composite that chains a defense's parts.

A round, as the code runs it: the server sends each client its copy of the global weights
(`downlink`); the client trains (`setup_training`, `training_batch`, `finish_training`); the
client's update (new weights - received weights) passes through `uplink`, and that is what the
server observes; the server averages the updates and passes the mean through `aggregate`.
"""

from importlib import import_module

import torch

from fedsafe.defenses import MECHANISMS

Weights = dict[str, torch.Tensor]


class Mechanism:
    """A defense that does nothing; subclasses override the hooks they need."""

    guarantee_kind: str | None = None  # set by mechanisms with a formal (epsilon, delta) guarantee

    def __init__(self, noise: float = 0.0, options: dict | None = None, seed: int = 0):
        self.noise, self.options, self.seed = float(noise), dict(options or {}), seed

    def downlink(self, weights: Weights, rnd: int, client: int) -> Weights:
        return weights

    def setup_training(self, model, optimizer, loader, state: dict):
        return model, optimizer, loader

    def training_batch(self, model, x, y):
        return x, y

    def finish_training(self, state: dict) -> dict:
        """Called after local training; returns metrics such as the client's epsilon so far."""
        return {}

    def uplink(self, update: Weights, rnd: int, client: int) -> Weights:
        return update

    def aggregate(self, mean_update: Weights, rnd: int, n_clients: int) -> Weights:
        return mean_update


class Defense(Mechanism):
    """A defense made of parts (e.g. weight noise + adversarial training), applied in order."""

    def __init__(self, parts: list[str], noise: float, options: dict, seed: int):
        super().__init__(noise, options, seed)
        self.parts = [_load(p)(noise if MECHANISMS[p].has_noise else 0.0, options, seed)
                      for p in parts]
        self.names = list(parts)

    def downlink(self, weights, rnd, client):
        for p in self.parts:
            weights = p.downlink(weights, rnd, client)
        return weights

    def setup_training(self, model, optimizer, loader, state):
        for p in self.parts:
            model, optimizer, loader = p.setup_training(model, optimizer, loader, state)
        return model, optimizer, loader

    def training_batch(self, model, x, y):
        for p in self.parts:
            x, y = p.training_batch(model, x, y)
        return x, y

    def finish_training(self, state):
        metrics: dict = {}
        for p in self.parts:
            metrics.update(p.finish_training(state))
        return metrics

    def uplink(self, update, rnd, client):
        for p in self.parts:
            update = p.uplink(update, rnd, client)
        return update

    def aggregate(self, mean_update, rnd, n_clients):
        for p in self.parts:
            mean_update = p.aggregate(mean_update, rnd, n_clients)
        return mean_update

    @property
    def guarantee(self) -> str:
        """The formal guarantee of the combination: the formal parts', else 'none' with reasons."""
        formal = [MECHANISMS[n].guarantee for n, p in zip(self.names, self.parts) if p.guarantee_kind]
        if formal:
            return "; ".join(formal)
        return "; ".join(MECHANISMS[n].guarantee for n in self.names)


def _load(name: str) -> type[Mechanism]:
    module, cls = MECHANISMS[name].impl.split(":")
    return getattr(import_module(module), cls)


def build_defense(parts: list[str], noise: float, options: dict, seed: int) -> Defense:
    return Defense(parts, noise, options, seed)


def add_gaussian(weights: Weights, std: float, generator: torch.Generator) -> Weights:
    """Gaussian noise on every floating-point tensor (integer buffers are left alone)."""
    if std == 0:
        return weights
    return {k: v + std * torch.randn(v.shape, generator=generator, dtype=v.dtype).to(v.device)
            if v.is_floating_point() else v for k, v in weights.items()}
