"""Secure aggregation with Flower's SecAgg+: the server learns only the mean of the sampled
clients' updates, never one client's update.

The protocol itself is Flower's (`SecAggPlusWorkflow` on the server, `secaggplus_mod` on the
clients; see `fedsafe/federation/secagg_protocol.py` for how a round runs it). This mechanism marks a
defense as secure, so the federation runs SecAgg+ rounds, and checks what a client is about to
mask: SecAgg+ clips each coordinate to [-clipping_range, clipping_range] before quantising, which
would silently change the experiment, so an update outside that range stops the run instead.
It comes last in a defense's parts: noise, clipping and DP from earlier parts are applied to the
update before it is masked (distributed DP with secure aggregation).

Options: `clipping_range` and `quantization_range` (SecAgg+'s fixed-point encoding: the mean is
exact up to 2 * clipping_range / quantization_range per coordinate; clients per round times
quantization_range must stay below 2^32), `num_shares` (how many neighbours each client shares
its secrets with: an int, or a fraction of the sampled clients; 1.0 = all, i.e. SecAgg) and
`reconstruction_threshold` (shares needed to reconstruct a secret, int or fraction of num_shares).
"""

from fedsafe.defenses.base import Mechanism


class SecureAggregation(Mechanism):
    secure = True

    def uplink(self, update, rnd, client):
        limit = float(self.options["clipping_range"])
        for name, v in update.items():
            if v.is_floating_point() and v.numel() and float(v.abs().max()) > limit:
                raise ValueError(
                    f"secagg: round {rnd}, client {client}: update of {name} reaches "
                    f"{float(v.abs().max()):.3g}, beyond the SecAgg+ clipping range {limit}; "
                    "raise the defense's option clipping_range")
        return update
