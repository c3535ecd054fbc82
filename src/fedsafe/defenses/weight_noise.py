"""Fed-Safe's "distributed noise": Gaussian N(0, sigma^2) on every weight in transit.

Uplink: on the weights a client sends (equivalently on its update, since the sender's starting
weights are fixed). Downlink: each client receives its own independently noised copy of the global
model. No clipping and no accountant, so there is no formal privacy guarantee.
"""

from fedsafe.defenses.base import Mechanism, add_gaussian


class WeightNoise(Mechanism):
    def downlink(self, weights, rnd, client):
        if not self.options["downlink"]:
            return weights
        return add_gaussian(weights, self.noise, self.generator("downlink", rnd, client))

    def uplink(self, update, rnd, client):
        if not self.options["uplink"]:
            return update
        return add_gaussian(update, self.noise, self.generator("uplink", rnd, client))
