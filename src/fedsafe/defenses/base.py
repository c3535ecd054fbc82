"""The hooks a defense mechanism may implement, and the composite that chains a defense's parts.

A round, as the code runs it: the server sends each client its copy of the global weights
(`downlink`); the client trains (`setup_training`, `training_batch`, `finish_training`); the
client's update (new weights - received weights) passes through `uplink`, and that is what the
server observes; the server averages the updates and passes the mean through `aggregate`.

Extra hooks: `begin_round` tells a client who else is in the round (secure aggregation, distributed
DP need it); `post_training` runs an extra pass after local training (Fed-Safe's adversarial
re-training).

Accounting (`round_events`): a mechanism with a formal guarantee says which privacy events
(`accounting.Event`) a client incurs in a round, from public numbers only (the client's number of
examples, the federation's settings); the server's `accounting.Ledger` composes them. Its client
sampling (`poisson_clients`) is the one its accountant assumes.
"""

import secrets

import torch

from fedsafe.defenses import MECHANISMS, check_options
from fedsafe.seeding import torch_generator

Weights = dict[str, torch.Tensor]


class Mechanism:
    """A defense that does nothing; subclasses override the hooks they need. `options`: this
    mechanism's own, with its defaults filled in; `guarantee`: its registry entry's text."""

    guarantee_kind: str | None = None  # set by mechanisms with a formal (epsilon, delta) guarantee
    secure = False  # True: clients send masked updates, the server can only sum them
    encrypted = False  # True: clients send ciphertexts, the server can only add them (he)
    unweighted = False  # True: the sensitivity analysis needs the plain mean of updates
    poisson_clients = False  # True: the server samples each client independently (Poisson)

    def __init__(self, noise: float = 0.0, options: dict | None = None, seed: int = 0,
                 guarantee: str = ""):
        self.noise, self.options, self.seed = float(noise), dict(options or {}), seed
        self.guarantee = guarantee

    def round_events(self, participates: bool, num_examples: int, federation: dict) -> list | None:
        """Server side, before a round: the privacy events (q, z, count) one client incurs in it,
        whether it takes part or not; None: no formal guarantee."""
        return None

    def generator(self, *keys, device: str = "cpu") -> torch.Generator:
        """The noise source: seeded by (config seed, keys), reproducible, a simulation shortcut;
        with the option `secret_noise`, seeded from the OS entropy pool, so nobody (the server
        included) can regenerate it."""
        if self.options.get("secret_noise"):
            return torch.Generator(device=device).manual_seed(secrets.randbits(63))
        return torch_generator(self.seed, *keys, device=device)

    def begin_round(self, info: dict) -> None:
        """Client side, before training: {"node", "peers", "sampled", "num_examples",
        "weighted"} as far as known (outside a federation: {})."""

    def post_training(self, model, x: torch.Tensor, y: torch.Tensor, step,
                      batch_size: int) -> dict:
        """After local training on the client's data (x, y); `step(xb, yb)` takes one optimiser
        step and returns the loss."""
        return {}

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

    def __init__(self, parts: list[str], noise: float, options: dict, seed: int,
                 name: str = "defense"):
        check_options(name, list(parts), options or {})
        self.noise, self.options, self.seed = float(noise), dict(options or {}), seed
        self.parts = [_part(p, noise, self.options, seed) for p in parts]
        self.names = list(parts)
        self.secure = any(p.secure for p in self.parts)
        self.encrypted = any(p.encrypted for p in self.parts)
        self.unweighted = any(p.unweighted for p in self.parts)

    def begin_round(self, info):
        for p in self.parts:
            p.begin_round(info)

    def post_training(self, model, x, y, step, batch_size):
        metrics: dict = {}
        for p in self.parts:
            metrics.update(p.post_training(model, x, y, step, batch_size))
        return metrics

    @property
    def formal(self) -> Mechanism | None:
        """The part with a formal (epsilon, delta) guarantee, if any (at most one: checked)."""
        return next((p for p in self.parts if p.guarantee_kind), None)

    @property
    def private(self) -> bool:
        """Replies must carry nothing computed from private data in the clear."""
        return self.secure or self.encrypted or self.formal is not None

    @property
    def poisson_clients(self) -> bool:
        return any(p.poisson_clients for p in self.parts)

    def round_events(self, participates, num_examples, federation):
        formal = self.formal
        return formal.round_events(participates, num_examples, federation) if formal else None

    def set_population(self, n: int, fraction: float) -> None:
        """Server side: clients in the federation and the sampling rate (DP-FedAvg divides by
        the expected count n * fraction)."""
        for p in self.parts:
            p.population, p.fraction = n, fraction

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
        formal = [p.guarantee for p in self.parts if p.guarantee_kind]
        if formal:
            return "; ".join(formal)
        return "; ".join(p.guarantee for p in self.parts)


def _part(name: str, noise: float, options: dict, seed: int) -> Mechanism:
    """Part `name` of a defense, given its own keys of the shared options (defaults filled in),
    the grid's noise where it has noise, and its guarantee."""
    entry = MECHANISMS.get(name)
    own = MECHANISMS.resolve(name, {k: v for k, v in options.items() if k in entry.options})
    return MECHANISMS.load(name)(noise if entry.meta.has_noise else 0.0, own, seed,
                                 entry.meta.guarantee)


def build_defense(parts: list[str], noise: float, options: dict, seed: int,
                  name: str = "defense") -> Defense:
    return Defense(parts, noise, options, seed, name)


def float_keys(weights: Weights) -> list[str]:
    return [k for k, v in weights.items() if v.is_floating_point()]


def l2_norm(weights: Weights) -> float:
    """Norm of all floating-point tensors taken together, as one flat vector."""
    return float(torch.sqrt(sum(weights[k].double().pow(2).sum() for k in float_keys(weights))))


def add_gaussian(weights: Weights, std: float, generator: torch.Generator) -> Weights:
    """Gaussian noise on every floating-point tensor (integer buffers are left alone)."""
    if std == 0:
        return weights
    return {k: v + std * torch.randn(v.shape, generator=generator, dtype=v.dtype).to(v.device)
            if v.is_floating_point() else v for k, v in weights.items()}
