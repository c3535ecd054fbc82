"""Secure aggregation by pairwise additive masking (the core of SecAgg / SecAgg+, Bonawitz et al.
2017; Bell et al. 2020), so the server learns only the sum of the updates.

What it does, as in SecAgg+: each client encodes its float update in fixed point (x * 2^30) in the
ring Z_M, M = 2^62 (weighted FedAvg: it first multiplies by its sample count, which it also sends
in the clear); for every other client j in the round it adds a mask m_ij drawn uniformly from Z_M
(+ if i < j, - otherwise). The server receives only masked vectors, each uniformly distributed on
its own, sums them mod M (the masks cancel exactly), decodes and divides by k or the total count.
The server-side code (`secure_sum`) never holds an unmasked individual update.

What it is not: this is not Flower's SecAgg+ protocol code. Flower 1.41's SecAggPlusWorkflow
needs the legacy Strategy API (LegacyContext, configure_fit/aggregate_fit), which cannot carry our
Message-API strategy with its defense hooks. Here the pairwise seeds come from the experiment seed
(derive_seed(seed, round, i, j)) instead of a Diffie-Hellman key agreement, there is no
Shamir secret sharing of seeds, no dropout recovery (a lost client stops the run anyway) and no
sparse k-regular communication graph (every pair is masked). Against an honest-but-curious server
that does not know the experiment seed, the server's view is the same as under SecAgg+ with no
dropouts: the masked vectors and their sum.
"""

import hashlib

import torch

from fedsafe.defenses.base import Mechanism, Weights
from fedsafe.seeding import derive_seed

MODULUS = 2 ** 62  # sums of two residues stay below 2^63: no int64 overflow
SCALE = 2 ** 30  # fixed-point resolution 1e-9


def encode(x: torch.Tensor) -> torch.Tensor:
    q = torch.round(x.double() * SCALE)
    if q.abs().max() >= MODULUS // 4:
        raise OverflowError("secagg: update too large for the fixed-point ring")
    return torch.remainder(q.long(), MODULUS)


def decode(r: torch.Tensor) -> torch.Tensor:
    r = torch.remainder(r, MODULUS)
    return torch.where(r >= MODULUS // 2, r - MODULUS, r).double() / SCALE


def pair_mask(shape, seed: int, rnd: int, a: int, b: int, tensor: str) -> torch.Tensor:
    """The mask clients a and b share for one tensor (stands in for a key agreement)."""
    key = int.from_bytes(hashlib.sha256(tensor.encode()).digest()[:8], "little")
    g = torch.Generator().manual_seed(derive_seed(seed, "secagg", rnd, min(a, b), max(a, b), key))
    return torch.randint(0, MODULUS, shape, generator=g, dtype=torch.int64)


def mask_update(update: Weights, me: int, peers: list[int], seed: int, rnd: int,
                factor: float = 1.0) -> Weights:
    """Client side: fixed-point encode factor * update and add the pairwise masks."""
    out = {}
    for name, v in update.items():
        r = encode(v * factor)
        for p in peers:
            if p != me:
                m = pair_mask(v.shape, seed, rnd, me, p, name)
                r = torch.remainder(r + m if me < p else r - m, MODULUS)
        out[name] = r
    return out


def secure_sum(masked: list[Weights]) -> dict[str, torch.Tensor]:
    """Server side: the sum of the clients' (factor-weighted) updates, in float64."""
    total = {}
    for name in masked[0]:
        acc = torch.zeros_like(masked[0][name])
        for m in masked:
            acc = torch.remainder(acc + m[name], MODULUS)
        total[name] = decode(acc)
    return total


class SecureAggregation(Mechanism):
    NAME = "secagg"
    secure = True

    def begin_round(self, info):
        self.info = info

    def uplink(self, update, rnd, client):
        info = getattr(self, "info", {})
        if "peers" not in info:  # outside a federation (attack replay): the plain update
            return update
        factor = float(info["num_examples"]) if info.get("weighted") else 1.0
        return mask_update(update, int(info["node"]), [int(p) for p in info["peers"]],
                           self.seed, rnd, factor)
