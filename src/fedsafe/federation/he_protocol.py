"""Homomorphic-encryption rounds in Flower messages (the protocol and its guarantee:
`fedsafe/defenses/homomorphic.py`).

What travels, all ciphertexts as serialised bytes in config records:
- the nodes' answer to the server's first query: the CKKS parameters without any key (`CONTEXT`);
- a train message: the initial model (arrays; public), the client's weight in the round's
  aggregate (`FACTOR`) and the encrypted running sum of every earlier round's aggregate (`SUM`,
  absent in round 1);
- a reply: the client's encrypted, weighted update (`UPDATE`) and public metrics.
Clients and the harness turn the running sum into the global model with the same function
(`global_model`), so the evaluated model is the one the clients train from.
"""

import time
from pathlib import Path

import tenseal as ts
import torch

from fedsafe.defenses.base import Defense, Weights
from fedsafe.defenses.homomorphic import (
    add,
    client_context,
    decrypt,
    encrypt,
    max_error,
    server_context,
)

CONTEXT, FACTOR, SUM, UPDATE = ("fedsafe-he-context", "fedsafe-he-factor", "fedsafe-he-sum",
                                "fedsafe-he-update")


def he_options(defense: Defense) -> dict:
    return next(p for p in defense.parts if p.encrypted).options


def client_keys(key_dir: str | Path, defense: Defense) -> ts.Context:
    """Client side: the clients' shared key pair, kept in their own folder."""
    return client_context(Path(key_dir), he_options(defense))


def query_answer(key_dir: str | Path, defense: Defense) -> dict:
    """Client side, first query: what the server may hold (parameters, no key)."""
    return {CONTEXT: server_context(client_keys(key_dir, defense))}


def global_model(ctx: ts.Context, initial: Weights, chunks: list[bytes] | None,
                 max_value: float) -> Weights:
    """The initial model plus the decrypted running sum of the aggregates, in each tensor's own
    dtype (integer buffers rounded, not truncated). A sum beyond `max_value` may have wrapped
    around the ciphertext modulus: the run stops."""
    if not chunks:
        return dict(initial)
    delta = decrypt(ctx, chunks, initial)
    top = max(float(v.abs().max()) for v in delta.values() if v.numel())
    if top > max_value:
        raise ValueError(f"he: the sum of the aggregates reaches {top:.3g}, beyond max_value "
                         f"{max_value}; raise the defense's option max_value (and scale or data "
                         "primes)")
    out = {}
    for k, v in initial.items():
        total = v.double() + delta[k]
        out[k] = (total if v.is_floating_point() else total.round()).to(v.dtype)
    return out


def train_input(ctx: ts.Context, content, defense: Defense) -> tuple[Weights, float]:
    """Client side: the global model from a train message's content, and the seconds spent
    decrypting it."""
    t0 = time.perf_counter()
    config = content["config"]
    weights = global_model(ctx, content["arrays"].to_torch_state_dict(),
                           list(config[SUM]) if SUM in config else None,
                           he_options(defense)["max_value"])
    return weights, time.perf_counter() - t0


def encrypt_update(ctx: ts.Context, update: Weights, factor: float,
                   defense: Defense) -> tuple[list[bytes], dict]:
    """Client side: the update times its weight, encrypted; and the client's own diagnostics
    (private, for its log): seconds spent, and the largest error of decrypting it (decryption is
    linear, so the aggregate's error is at most the sum of its clients')."""
    t0 = time.perf_counter()
    chunks = encrypt(ctx, update, factor, he_options(defense)["poly_modulus_degree"] // 2)
    seconds = time.perf_counter() - t0
    return chunks, {"he_encrypt_seconds": seconds,
                    "he_error": max_error(ctx, chunks, update, factor)}


def add_replies(ctx: ts.Context, replies: list[list[bytes]],
                running: list[bytes] | None) -> list[bytes] | None:
    """Server side: the running sum plus this round's encrypted updates (None: nothing yet)."""
    vectors = ([running] if running else []) + replies
    return add(ctx, vectors) if vectors else None


def nbytes(chunks: list[bytes] | None) -> int:
    return sum(len(c) for c in chunks or [])


def plain_bytes(weights: Weights) -> int:
    """What the same update weighs in the clear (as the plain cells' array records carry it)."""
    return sum(v.numel() * v.element_size() for v in weights.values())


def client_costs(logged) -> dict:
    """A round's HE diagnostics from its clients' own logs (empty in other cells): the bound on
    the aggregate's largest decryption error (the sum of the clients' own errors) and the
    slowest client's encryption and decryption seconds."""
    logged = [m for m in logged if "he_error" in m]
    if not logged:
        return {}
    return {"he_error_bound": sum(m["he_error"] for m in logged),
            "he_client_seconds": max(m["he_encrypt_seconds"] + m["he_decrypt_seconds"]
                                     for m in logged)}


def cell_costs(history: list[dict]) -> dict:
    """The cell's HE costs for the tables (empty in other cells): per round, the bytes the server
    received encrypted and what they weigh in the clear, and the seconds HE added (the server's
    additions and the slowest client's decryption and encryption); the largest error bound."""
    rows = [r for r in history if "bytes_up" in r]
    if not rows:
        return {}

    def mean(key: str) -> float:
        return sum(r.get(key, 0.0) for r in rows) / len(rows)

    return {"he_bytes_up_per_round": mean("bytes_up"),
            "he_bytes_up_plain_per_round": mean("bytes_up_plain"),
            "he_seconds_per_round": mean("he_server_seconds") + mean("he_client_seconds"),
            "he_error_bound": max(r.get("he_error_bound", 0.0) for r in rows)}


def scalar_hook(defense: Defense, rnd: int, n_clients: int) -> float:
    """The factor the defense's server hook applies to the mean update. The parts `he` combines
    with have linear hooks (checked at parse time: the identity, or distributed DP-FedAvg's sum
    over the expected count), so the server folds it into each client's weight."""
    one = defense.aggregate({"x": torch.ones((), dtype=torch.float64)}, rnd, n_clients)
    return float(one["x"])
