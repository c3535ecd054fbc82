"""Deterministic random streams: one independent stream per (seed, purpose, round, client, ...)."""

import hashlib

import numpy as np


def _word(key: int | str) -> int:
    if isinstance(key, int):
        return key
    raw = key.encode()
    # up to 8 bytes: the bytes themselves; longer: a hash of all of them (a prefix would make
    # "reference" and "reference-train" one stream)
    return int.from_bytes(raw.ljust(8, b"\0") if len(raw) <= 8
                          else hashlib.blake2b(raw, digest_size=8).digest(), "little")


def derive_seed(*keys: int | str) -> int:
    """A 63-bit seed from any mix of ints and strings, stable across processes and machines."""
    words = [_word(k) for k in keys]
    return int(np.random.SeedSequence(words).generate_state(2, np.uint32).view(np.uint64)[0] >> 1)


def torch_generator(*keys: int | str, device: str = "cpu"):
    import torch

    return torch.Generator(device=device).manual_seed(derive_seed(*keys))
