"""Split a training set across federated clients.

Schemes: `iid` (uniform random), `dirichlet` (label skew, Dir(alpha) class
proportions per client; smaller alpha = more skew), `shards` (Fed-Safe style
pathological skew: sort by label, cut into n_clients * shards_per_client
shards, deal each client shards_per_client of them) and `sites` (natural
split: client i gets acquisition site i). All are deterministic for a seed.
"""
from __future__ import annotations

import inspect

import numpy as np

SCHEMES = ("iid", "dirichlet", "shards", "sites")


def _iid(labels, sites, n_clients, rng):
    return np.array_split(rng.permutation(len(labels)), n_clients)


def _dirichlet(labels, sites, n_clients, rng, alpha=0.5, min_size=10):
    if alpha <= 0:
        raise ValueError(f"dirichlet: alpha must be > 0, got {alpha}")
    min_size = min(min_size, len(labels) // n_clients)
    parts = [[] for _ in range(n_clients)]
    for c in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == c))
        cuts = (np.cumsum(rng.dirichlet(np.full(n_clients, float(alpha))))[:-1] * len(idx)).astype(int)
        for k, chunk in enumerate(np.split(idx, cuts)):
            parts[k].extend(chunk.tolist())
    # Guarantee a minimum size by moving random samples from the largest client:
    # resampling until every client is large enough may never end at tiny alpha.
    for k in range(n_clients):
        while len(parts[k]) < min_size:
            big = max(range(n_clients), key=lambda j: len(parts[j]))
            parts[k].append(parts[big].pop(rng.integers(len(parts[big]))))
    return [np.array(p, dtype=np.int64) for p in parts]


def _shards(labels, sites, n_clients, rng, shards_per_client=2):
    n_shards = n_clients * shards_per_client
    if n_shards > len(labels):
        raise ValueError(f"shards: {n_shards} shards but only {len(labels)} samples")
    # Shuffle first so that the stable sort orders samples randomly within a class.
    perm = rng.permutation(len(labels))
    shards = np.array_split(perm[np.argsort(labels[perm], kind="stable")], n_shards)
    deal = rng.permutation(n_shards).reshape(n_clients, shards_per_client)
    return [np.concatenate([shards[s] for s in row]) for row in deal]


def _sites(labels, sites, n_clients, rng):
    ids = np.unique(sites)
    if (ids < 0).any():
        raise ValueError("sites: this dataset has no acquisition-site information (site -1); use another scheme")
    if len(ids) != n_clients:
        raise ValueError(f"sites: n_clients must equal the number of sites ({len(ids)}: {ids.tolist()}), got {n_clients}")
    return [np.flatnonzero(sites == s) for s in ids]


def partition(labels, sites, scheme: str, n_clients: int, seed: int, **params) -> list[np.ndarray]:
    """Return one sorted int64 index array per client; together they are disjoint and cover all samples."""
    fns = {"iid": _iid, "dirichlet": _dirichlet, "shards": _shards, "sites": _sites}
    if scheme not in fns:
        raise ValueError(f"unknown partition scheme '{scheme}'; known: {list(SCHEMES)}")
    labels = np.asarray(labels).reshape(-1)
    sites = np.full(len(labels), -1) if sites is None else np.asarray(sites).reshape(-1)
    if n_clients < 1 or n_clients > len(labels):
        raise ValueError(f"n_clients must be in 1..{len(labels)}, got {n_clients}")
    allowed = list(inspect.signature(fns[scheme]).parameters)[4:]
    unknown = sorted(set(params) - set(allowed))
    if unknown:
        raise ValueError(f"partition scheme '{scheme}': unknown parameter(s) {unknown}; allowed: {allowed}")
    parts = fns[scheme](labels, sites, n_clients, np.random.default_rng(seed), **params)
    return [np.sort(np.asarray(p, dtype=np.int64)) for p in parts]


def manifest(parts, labels, class_names) -> dict:
    """JSON-serialisable per-client sizes and class histograms."""
    labels = np.asarray(labels).reshape(-1)
    clients = []
    for i, p in enumerate(parts):
        counts = np.bincount(labels[p], minlength=len(class_names))
        clients.append({"client": i, "size": int(len(p)),
                        "class_counts": {name: int(c) for name, c in zip(class_names, counts)}})
    return {"n_clients": len(parts), "clients": clients}
