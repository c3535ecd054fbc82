"""Canaries of the one-run privacy audit (`audit.py`), at the level of the cell's guarantee.

Every canary is included with probability 1/2 (a coin the attacker does not see) and scored after
training; the audit turns the guesses into a lower bound on epsilon.

- Sample level (dp_sgd, and every non-client-level defense): canary *samples* added to the
  included canaries' clients' data (`make_canaries`, `add_canaries`); score = the canary's loss
  reduction from the initial to the final global model.
- Client level (dp_fedavg): canary *clients* (Andrew et al., "One-shot empirical privacy
  estimation for federated learning", ICLR 2024). Canary i always sends the same update, a random
  direction u_i of the model's parameters scaled to the clipping norm C: the largest update a
  client may send. An included canary is sampled every round like a real client (Poisson, the
  same rate) and its update joins the clipped sum before the noise, which is exactly the
  add/remove-one-client relation the accountant covers. Score = <final - initial, u_i>: the
  server's model moves by the noisy sums, so this is the sum over rounds of what the canary's
  direction received.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from fedsafe.seeding import torch_generator

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


def loss_reduction_scores(initial, final, x, y, batch_size: int = 512) -> np.ndarray:
    """Sample canary score: its loss under the initial model minus under the final one (higher =
    more likely trained on). The attacker needs query access to both models: in a federation every
    client and the server receive the initial global model."""
    from fedsafe.attacks.membership import loss_scores

    return loss_scores(final, x, y, batch_size) - loss_scores(initial, x, y, batch_size)


def add_canaries(data_dir: Path, spec: dict, train_dir: Path) -> Path:
    """A copy of the prepared data with the included canaries spread over the clients (each to a
    random client); writes `canaries.npz` (images, labels, coins, client) into train_dir and
    returns the copy's folder. Called by the training job of a sample-level audited cell only."""
    import json
    import shutil

    from fedsafe.data.prepare import load_prepared

    data = load_prepared(data_dir)
    man, opt = data.manifest, spec["canaries"]
    shape = (man["channels"], man["image_size"], man["image_size"])
    x, y, inc = make_canaries(opt["kind"], int(opt["n"]), shape, len(man["class_names"]),
                              spec["seed"], source=data.test)
    client = np.random.default_rng([spec["seed"], 152]).integers(0, len(data.clients), len(y))
    arrays = {"test_x": data.test[0], "test_y": data.test[1],
              "holdout_x": data.holdout[0], "holdout_y": data.holdout[1]}
    for i, (cx, cy) in enumerate(data.clients):
        pick = inc & (client == i)
        arrays[f"client{i}_x"], arrays[f"client{i}_y"] = np.r_[cx, x[pick]], np.r_[cy, y[pick]]
    out = Path(train_dir) / "canaried_data"
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    np.savez(out / "data.npz", **arrays)
    (out / "manifest.json").write_text(json.dumps(man))
    np.savez(Path(train_dir) / "canaries.npz", x=x, y=y, included=inc, client=client)
    return out


class CanaryClients:
    """Client-level canaries: n canary clients of update norm `clip`, coins from `seed`. The
    directions are the rows of one seeded (n, d) Gaussian matrix, normalised, in float32; drawn
    once and kept where the matrix is small (1,000 canaries of small_cnn: 128 MB), else redrawn
    in chunks every round so memory stays at a chunk whatever the model's size d."""

    CHUNK = 128
    KEEP = 64 * 2 ** 20  # entries of the largest matrix kept in memory

    def __init__(self, n: int, seed: int, clip: float):
        self.n, self.seed, self.clip = int(n), int(seed), float(clip)
        self.included = coins(self.n, self.seed)
        self._kept: torch.Tensor | None = None

    @staticmethod
    def _keys(like: dict) -> list[str]:
        return [k for k, v in like.items() if v.is_floating_point()]

    def _directions(self, d: int):
        """(first canary, unit directions of this chunk as rows), in canary order."""
        if self._kept is not None and self._kept.shape[1] == d:
            yield 0, self._kept
            return
        g = torch_generator(self.seed, "canary-client")
        chunks = []
        for start in range(0, self.n, self.CHUNK):
            u = torch.randn(min(self.CHUNK, self.n - start), d, generator=g, dtype=torch.float64)
            u = (u / u.norm(dim=1, keepdim=True)).float()
            if self.n * d <= self.KEEP:
                chunks.append(u)
            yield start, u
        if chunks:
            self._kept = torch.cat(chunks)

    def directions(self, like: dict) -> torch.Tensor:
        """All n directions over the flattened floating-point tensors of `like`, as rows."""
        d = sum(like[k].numel() for k in self._keys(like))
        return torch.cat([u for _, u in self._directions(d)])

    def round_sum(self, like: dict[str, torch.Tensor], rnd: int, rate: float) -> dict:
        """The sum of the updates of the included canaries Poisson-sampled (rate) in round rnd."""
        keys = self._keys(like)
        sampled = np.random.default_rng([self.seed, 16, rnd]).random(self.n) < rate
        pick = torch.from_numpy(self.included & sampled)
        d = sum(like[k].numel() for k in keys)
        flat = torch.zeros(d, dtype=torch.float64)
        for start, u in self._directions(d):
            flat += self.clip * u[pick[start:start + len(u)]].double().sum(0)
        out, at = {}, 0
        for k in keys:
            out[k] = flat[at:at + like[k].numel()].view(like[k].shape)
            at += like[k].numel()
        return out

    def scores(self, initial: dict, final: dict) -> np.ndarray:
        """<final - initial, u_i> for every canary (higher = more likely included)."""
        moved = torch.cat([(final[k].double() - initial[k].double()).cpu().flatten()
                           for k in self._keys(initial)])
        return torch.cat([u.double() @ moved for _, u in self._directions(len(moved))]).numpy()

    def save(self, path: Path) -> None:
        np.savez(path, kind=CLIENT_KIND, included=self.included, seed=self.seed, clip=self.clip)
