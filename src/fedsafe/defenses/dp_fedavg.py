"""Client-level DP-FedAvg (McMahan et al. 2018): each client clips its update to L2 norm
`clip_norm` C; Gaussian noise of std z * C is added to the sum of the updates, and the noisy sum
is divided by the expected number of clients q * n (not the realised one: the sensitivity of the
estimate must not depend on who was sampled).

Sampling: the server includes every client independently with probability q = fraction_train
(Poisson sampling, `poisson_clients`), the sampling the accountant assumes; a round may have any
number of clients, none included (then it releases noise only).

mode "central": the server adds the noise to the sum (a trusted server). Epsilon: every round is
one Poisson-sampled Gaussian mechanism (rate q, noise multiplier z) for every client, taking part
or not, add/remove-one-client relation; exact for what anyone who sees the models observes.
mode "distributed" (needs `secagg` as the last part; checked at parse time): each of the k sampled
clients adds std z * C / sqrt(k) to its clipped update, so the k noises sum to std z * C and the
server, which only learns the sum, sees that noise. The server knows who was sampled, so there is
no amplification against it: a round is one Gaussian mechanism (noise multiplier z) for each
client that took part, none for the others; honest clients assumed (each adds its share).
Rounds with fewer than two sampled clients are skipped (SecAgg+ needs two); the server knows the
sample anyway, so the skip reveals nothing about the data.

Audited cells (`audit.defenses`, central mode) add canary clients (`fedsafe/canaries.py`): their
updates join the clipped sum before the noise, sampled at the same rate as the real clients, and
the released noisy sum of every round is projected on their directions (what the server sees of
them; the audit scores the canaries from these projections).

The mean is unweighted (`unweighted`): weighting by sample counts would change the sensitivity.
Flower's DP strategy wrappers are not used: they draw unseeded numpy noise (breaking same seed ->
same model) and expect full weights in replies, while our clients send updates.
"""

import math

from fedsafe.defenses.base import Mechanism, add_gaussian, float_keys, l2_norm


class DPFedAvg(Mechanism):
    guarantee_kind = "client-level"
    unweighted = True
    poisson_clients = True
    population, fraction = 1, 1.0  # set by the server (`Defense.set_population`)
    canaries = None  # CanaryClients of an audited cell, set by the training job

    def __init__(self, noise=0.0, options=None, seed=0, guarantee=""):
        super().__init__(noise, options, seed, guarantee)
        self.clip, self.delta = float(self.options["clip_norm"]), float(self.options["delta"])
        self.central = self.options["mode"] == "central"
        self.sampled = None

    def round_events(self, participates, num_examples, federation):
        if self.central:  # the sampling rate the server uses (`Defense.set_population`)
            return [(self.fraction, self.noise, 1)]
        return [(1.0, self.noise, 1)] if participates else []

    def begin_round(self, info):
        self.sampled = info.get("sampled")

    def uplink(self, update, rnd, client):
        scale = min(1.0, self.clip / max(l2_norm(update), 1e-12))
        update = {k: v * scale if k in float_keys(update) else v for k, v in update.items()}
        if self.central:
            return update
        if not self.sampled:
            raise RuntimeError("dp_fedavg distributed: the client must know how many clients "
                               "share the round (begin_round info 'sampled')")
        std = self.noise * self.clip / math.sqrt(self.sampled)
        return add_gaussian(update, std, self.generator("dp_fedavg", rnd, client))

    def aggregate(self, mean_update, rnd, n_clients):
        """`mean_update`: the plain mean of the `n_clients` clipped (noised) updates; returns
        (sum + central noise) / expected count."""
        total = {k: v * n_clients for k, v in mean_update.items()}
        if self.canaries is not None:
            extra = self.canaries.round_sum(total, rnd, self.fraction)
            total = {k: v + extra[k].to(v) if k in extra else v for k, v in total.items()}
        if self.central:
            total = add_gaussian(total, self.noise * self.clip,
                                 self.generator("dp_fedavg_server", rnd))
        if self.canaries is not None:
            self.canaries.observe(rnd, total)
        return {k: v / (self.fraction * self.population) for k, v in total.items()}
