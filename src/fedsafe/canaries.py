"""Canaries of the one-run privacy audit: their generation only, what training needs to insert
them. Scoring, the bounds and the copy of a cell's data with its sample canaries
are the audit's (`fedsafe.attacks.membership`: `audit`, `canaries`). A leaf: it imports nothing
of fedsafe, so training builds its canary clients here and never depends on the audit (issue 23).

Every canary is included with probability 1/2 (a coin the attacker does not see), at the level of
the cell's guarantee:

- Sample level (dp_sgd, and every non-client-level defense): canary *samples* (`make_canaries`)
  added to the included canaries' clients' data
  (`fedsafe.attacks.membership.canaries.add_canaries`).
- Client level (dp_fedavg): canary *clients* (Andrew et al., "One-shot empirical privacy
  estimation for federated learning", ICLR 2024; `CanaryClients`). Canary i always sends the same
  update, a random unit direction u_i of the model's parameters scaled to the clipping norm C: the
  largest update a client may send. An included canary is sampled every round like a real client
  (Poisson, the same rate) and its update joins the clipped sum before the noise, which is exactly
  the add/remove-one-client relation the accountant covers.
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch

SAMPLE_KINDS = ("noise", "mislabelled", "pixel")
CLIENT_KIND = "update"  # client-level canaries


def coins(n: int, seed: int) -> np.ndarray:
    """Which of the n canaries are included (True), one fair coin each."""
    return np.random.default_rng([seed, 15, 1]).random(n) < 0.5


def make_canaries(kind: str, n: int, shape: tuple[int, ...], n_classes: int, seed: int,
                  source: tuple[np.ndarray, np.ndarray] | None = None):
    """n canary samples (uint8 images, labels) and their inclusion coins (True: train on it).

    noise: uniform random images with random labels (out of distribution, nothing else explains
    their label); mislabelled: images of `source` (data no client holds) with a wrong label;
    pixel: a black image with one distinct bright pixel-channel and a random label, whose input
    gradient touches weights no other canary touches in a linear first layer.
    """
    rng = np.random.default_rng([seed, 15])
    y = rng.integers(0, n_classes, n)
    if kind == "noise":
        x = rng.integers(0, 256, (n, *shape), dtype=np.uint8)
    elif kind == "mislabelled":
        if source is None or len(source[1]) < n:
            raise ValueError(f"mislabelled canaries need {n} source images")
        idx = rng.choice(len(source[1]), n, replace=False)
        x = source[0][idx].copy()
        y = (source[1][idx] + rng.integers(1, n_classes, n)) % n_classes  # never the true label
    elif kind == "pixel":
        size = int(np.prod(shape))
        if n > size:
            raise ValueError(f"pixel canaries: at most {size} for images of shape {shape}")
        x = np.zeros((n, size), np.uint8)
        x[np.arange(n), rng.choice(size, n, replace=False)] = 255
        x = x.reshape(n, *shape)
    else:
        raise ValueError(f"unknown sample canary kind {kind!r}; known: {list(SAMPLE_KINDS)}")
    included = rng.random(n) < 0.5
    return x, y.astype(np.int64), included


def fwht(x: torch.Tensor) -> torch.Tensor:
    """H x along the last axis (its length a power of two), H the Sylvester Hadamard matrix:
    entries +-1, symmetric, H H = n I. O(n log n) butterflies instead of an n x n matrix."""
    n, lead = x.shape[-1], x.shape[:-1]
    h = 1
    while h < n:
        y = x.reshape(*lead, n // (2 * h), 2, h)
        x = torch.stack((y[..., 0, :] + y[..., 1, :], y[..., 0, :] - y[..., 1, :]), dim=-2)
        h *= 2
    return x.reshape(*lead, n)


class CanaryClients:
    """Client-level canaries: n canary clients of update norm `clip`, coins from `seed`.

    The directions are random and exactly orthonormal (a randomised Hadamard basis): the model's d
    parameters, in a seeded random order with seeded random signs, are cut into blocks whose sizes
    are the powers of two in d's binary expansion (at least `MIN_BLOCK`, or the largest block);
    canary i is a seeded random row of one block's Hadamard matrix, divided by the block's root
    size, so every entry of its block is +-1/sqrt(size). Why not independent Gaussian directions:
    those overlap, and the other included canaries then add variance (n/2)/d x C^2 to every
    canary's score each round (with 10,000 canaries on small_cnn's 40,196 parameters, half the
    noise variance at noise multiplier 0.5), while orthonormal ones leave each score exactly its
    own update plus the mechanism's noise. Memory and time do not grow with n: one sum or
    projection is a few d-long vectors and one fast Hadamard transform per block (O(d log d)).
    The limit is the number of orthogonal directions: `check_count`.

    The mechanism calls `round_sum` (the included, sampled canaries' updates of a round) and
    `observe` (the projections of the released noisy sum on every canary: what the server sees of
    them, kept for the audit's per-round scores)."""

    MIN_BLOCK = 1024  # below it a direction spans few weights, where one large weight update
    # would dominate its score

    def __init__(self, n: int, seed: int, clip: float, noise: float | None = None):
        self.n, self.seed, self.clip = int(n), int(seed), float(clip)
        self.noise = noise  # the noise multiplier the accountant is told (for the audit's scores)
        self.included = coins(self.n, self.seed)
        self.rate: float | None = None  # the sampling rate of the rounds (set by round_sum)
        self.observed: dict[int, np.ndarray] = {}  # round -> projections of the released sum
        self._layout_cache: dict[int, list] = {}

    @staticmethod
    def _keys(like: dict) -> list[str]:
        return [k for k, v in like.items() if v.is_floating_point()]

    @classmethod
    def capacity(cls, d: int) -> int:
        """Orthogonal directions available in d parameters (the rows of the usable blocks)."""
        if d < 1:
            return 0
        smallest = min(cls.MIN_BLOCK, 1 << (d.bit_length() - 1))
        return sum(1 << b for b in range(d.bit_length()) if d >> b & 1 and 1 << b >= smallest)

    @classmethod
    def check_count(cls, n: int, d: int, key: str = "audit.canaries") -> None:
        """A clear error where n canary clients do not fit a model of d parameters."""
        cap = cls.capacity(d)
        if n > cap:
            raise ValueError(f"{key}: {n} canary clients need {n} orthogonal directions; a model "
                             f"of {d} parameters gives {cap} (Hadamard blocks of at least "
                             f"{min(cls.MIN_BLOCK, cap)} weights): use at most {cap}")

    def _layout(self, d: int) -> list[tuple[torch.Tensor, torch.Tensor, np.ndarray, np.ndarray]]:
        """Per block: (its coordinates, their signs, its canaries, their rows), from the seed."""
        if d not in self._layout_cache:
            self.check_count(self.n, d)
            rng = np.random.default_rng([self.seed, 15, 3])
            perm = torch.from_numpy(rng.permutation(d))
            signs = torch.from_numpy(rng.integers(0, 2, d) * 2.0 - 1.0)
            # canary i takes slot[i] among all usable rows, blocks largest first
            slot = rng.choice(self.capacity(d), self.n, replace=False)
            smallest = min(self.MIN_BLOCK, 1 << (d.bit_length() - 1))
            blocks, at, first_row = [], 0, 0
            for b in range(d.bit_length() - 1, -1, -1):
                if not d >> b & 1:
                    continue
                size = 1 << b
                if size >= smallest:
                    mine = np.flatnonzero((slot >= first_row) & (slot < first_row + size))
                    blocks.append((perm[at:at + size], signs[at:at + size], mine,
                                   slot[mine] - first_row))
                    first_row += size
                at += size
            self._layout_cache[d] = blocks
        return self._layout_cache[d]

    def synthesize(self, coef: torch.Tensor, d: int) -> torch.Tensor:
        """sum_i coef[..., i] u_i as d-long float64 vectors (coef: (..., n))."""
        coef = torch.as_tensor(coef, dtype=torch.float64)
        out = torch.zeros(*coef.shape[:-1], d, dtype=torch.float64)
        for coords, signs, mine, rows in self._layout(d):
            w = torch.zeros(*coef.shape[:-1], len(coords), dtype=torch.float64)
            w[..., torch.from_numpy(rows)] = coef[..., torch.from_numpy(mine)]
            out[..., coords] = fwht(w) / math.sqrt(len(coords)) * signs  # H is symmetric
        return out

    def project(self, flat: torch.Tensor) -> np.ndarray:
        """<flat, u_i> for every canary (flat: a d-long vector)."""
        flat = flat.double().cpu()
        out = np.zeros(self.n)
        for coords, signs, mine, rows in self._layout(len(flat)):
            z = fwht(flat[coords] * signs) / math.sqrt(len(coords))
            out[mine] = z[torch.from_numpy(rows)].numpy()
        return out

    def flatten(self, weights: dict) -> torch.Tensor:
        return torch.cat([weights[k].double().cpu().flatten() for k in self._keys(weights)])

    def directions(self, like: dict) -> torch.Tensor:
        """All n directions over the flattened floating-point tensors of `like`, as rows (n x d:
        for tests and small models only)."""
        d = sum(like[k].numel() for k in self._keys(like))
        return self.synthesize(torch.eye(self.n, dtype=torch.float64), d)

    def round_sum(self, like: dict[str, torch.Tensor], rnd: int, rate: float) -> dict:
        """The sum of the updates of the included canaries Poisson-sampled (rate) in round rnd."""
        self.rate = float(rate)
        keys = self._keys(like)
        sampled = np.random.default_rng([self.seed, 16, rnd]).random(self.n) < rate
        d = sum(like[k].numel() for k in keys)
        flat = self.synthesize(torch.from_numpy(self.clip * (self.included & sampled)), d)
        out, at = {}, 0
        for k in keys:
            out[k] = flat[at:at + like[k].numel()].view(like[k].shape)
            at += like[k].numel()
        return out

    def observe(self, rnd: int, released: dict) -> None:
        """Keep the projections of round rnd's released (noised) sum on every canary."""
        self.observed[int(rnd)] = self.project(self.flatten(released)).astype(np.float32)

    def save(self, path: Path) -> None:
        rounds = sorted(self.observed)
        np.savez(path, kind=CLIENT_KIND, included=self.included, seed=self.seed, clip=self.clip,
                 noise=np.nan if self.noise is None else self.noise,
                 rate=np.nan if self.rate is None else self.rate, rounds=np.array(rounds, int),
                 round_projections=np.stack([self.observed[r] for r in rounds]) if rounds
                 else np.zeros((0, self.n), np.float32))
