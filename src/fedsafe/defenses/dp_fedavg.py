"""Client-level DP-FedAvg (McMahan et al. 2018): each client clips its update to L2 norm
`clip_norm` C; Gaussian noise of std z * C is added to the sum of the updates, so the plain mean
gets std z * C / k (k = clients this round), the formula of Flower's DP wrappers.

mode "central": the server adds the noise to the mean (trusted server).
mode "distributed": each client adds std z * C / sqrt(k) to its clipped update, so the k noises
sum to std z * C; combined with `secagg` the server never sees a less-noised update.

Epsilon: RDP accountant of the sampled Gaussian mechanism (Opacus's analysis), sampling rate
q = k / n, composed over the rounds run so far, add/remove-one-client adjacency with k public.
Honest caveats: the strategy samples exactly k clients without replacement while the accountant
assumes Poisson sampling with rate q (the usual approximation); with fraction_train 1, q = 1 and
there is no amplification at all, epsilon is that of T plain Gaussian mechanisms.
The mean is unweighted (`unweighted`): weighting by sample counts would change the sensitivity.
Flower's DP strategy wrappers are not used: they draw unseeded numpy noise (breaking same seed ->
same model) and expect full weights in replies, while our clients send updates.
"""

import math

from fedsafe.defenses.base import Mechanism, add_gaussian, float_keys, l2_norm
from fedsafe.seeding import torch_generator

ORDERS = [1 + x / 10.0 for x in range(1, 100)] + list(range(12, 64)) + [128, 256, 512]


def rdp_epsilon(q: float, noise_multiplier: float, steps: int, delta: float) -> float:
    """Epsilon after `steps` compositions of the Poisson-sampled Gaussian mechanism."""
    if noise_multiplier == 0:
        return math.inf
    from opacus.accountants.analysis import rdp

    r = rdp.compute_rdp(q=q, noise_multiplier=noise_multiplier, steps=steps, orders=ORDERS)
    return float(rdp.get_privacy_spent(orders=ORDERS, rdp=r, delta=delta)[0])


class DPFedAvg(Mechanism):
    NAME = "dp_fedavg"
    guarantee_kind = "client-level"
    unweighted = True

    def __init__(self, noise=0.0, options=None, seed=0):
        super().__init__(noise, options, seed)
        self.clip, self.delta = float(self.options["clip_norm"]), float(self.options["delta"])
        self.sampled = None

    def begin_round(self, info):
        self.sampled = info.get("sampled")

    def uplink(self, update, rnd, client):
        scale = min(1.0, self.clip / max(l2_norm(update), 1e-12))
        update = {k: v * scale if k in float_keys(update) else v for k, v in update.items()}
        if self.options["mode"] != "distributed":
            return update
        if not self.sampled:
            raise RuntimeError("dp_fedavg distributed: the client must know how many clients "
                               "share the round (begin_round info 'sampled')")
        std = self.noise * self.clip / math.sqrt(self.sampled)
        return add_gaussian(update, std, torch_generator(self.seed, "dp_fedavg", rnd, client))

    def aggregate(self, mean_update, rnd, n_clients):
        if self.options["mode"] != "central":
            return mean_update
        std = self.noise * self.clip / n_clients
        return add_gaussian(mean_update, std, torch_generator(self.seed, "dp_fedavg_server", rnd))

    def round_metrics(self, rnd, sampled, total):
        return {"epsilon": rdp_epsilon(sampled / total, self.noise, rnd, self.delta)}
