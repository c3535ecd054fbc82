"""Deterministic random streams: one independent stream per (seed, purpose, round, client, ...)."""

import numpy as np


def derive_seed(*keys: int | str) -> int:
    """A 63-bit seed from any mix of ints and strings, stable across processes and machines."""
    words = [k if isinstance(k, int) else int.from_bytes(k.encode()[:8].ljust(8, b"\0"), "little")
             for k in keys]
    return int(np.random.SeedSequence(words).generate_state(2, np.uint32).view(np.uint64)[0] >> 1)


def torch_generator(*keys: int | str, device: str = "cpu"):
    import torch

    return torch.Generator(device=device).manual_seed(derive_seed(*keys))
