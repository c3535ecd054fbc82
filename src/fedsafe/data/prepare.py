"""Materialise a federated split once, so every experiment reads the same data.

`prepare` writes `data.npz` (client{i}_x/_y, test_x/_y, holdout_x/_y) and
`manifest.json`; `load_prepared` reads them back. The holdout is a random part
of the training split that no client ever sees: membership-inference attacks
use it as non-members.
"""
from __future__ import annotations

import json
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fedsafe.files import atomic_path, regenerate_hint, warm, warmed

from .partition import manifest as client_manifest
from .partition import partition
from .registry import load_dataset

# Options consumed here rather than by the dataset loader.
_PREPARE_OPTIONS = ("partition", "holdout_fraction")


@dataclass
class PreparedData:
    clients: list[tuple[np.ndarray, np.ndarray]]
    test: tuple[np.ndarray, np.ndarray]
    holdout: tuple[np.ndarray, np.ndarray]
    manifest: dict


def prepare(dataset_id: str, options: dict, n_clients: int, seed: int, out_dir: Path) -> dict:
    """Load, hold out, partition and save; return the manifest."""
    options = dict(options or {})
    part_opts = dict(options.get("partition") or {"scheme": "iid"})
    holdout_fraction = float(options.get("holdout_fraction", 0.1))
    if not 0 <= holdout_fraction < 1:
        raise ValueError(f"holdout_fraction must be in [0, 1), got {holdout_fraction}")
    data = load_dataset(dataset_id, {k: v for k, v in options.items() if k not in _PREPARE_OPTIONS}, seed)

    # Separate seeded streams so changing the partition never changes the holdout.
    n = len(data.y_train)
    perm = np.random.default_rng([seed, 1]).permutation(n)
    n_hold = int(round(holdout_fraction * n))
    hold, pool = np.sort(perm[:n_hold]), np.sort(perm[n_hold:])
    scheme = part_opts.pop("scheme", "iid")
    parts = [pool[p] for p in partition(data.y_train[pool], data.site_train[pool], scheme, n_clients, seed, **part_opts)]

    arrays = {}
    for i, p in enumerate(parts):
        arrays[f"client{i}_x"], arrays[f"client{i}_y"] = data.x_train[p], data.y_train[p]
    arrays.update(test_x=data.x_test, test_y=data.y_test,
                  holdout_x=data.x_train[hold], holdout_y=data.y_train[hold])
    man = {
        "dataset": dataset_id,
        "options": options,
        "seed": seed,
        "n_clients": n_clients,
        "class_names": list(data.class_names),
        "channels": data.channels,
        "image_size": data.image_size,
        **client_manifest(parts, data.y_train, data.class_names),
        "test_size": int(len(data.y_test)),
        "holdout_size": int(n_hold),
    }
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    with atomic_path(out_dir / "data.npz") as tmp:
        np.savez_compressed(tmp, **arrays)
    with atomic_path(out_dir / "manifest.json") as tmp:
        tmp.write_text(json.dumps(man, indent=2))
    return man


def load_prepared(out_dir: Path) -> PreparedData:
    """The prepared dataset in `out_dir`: decompressed once per job server (`warm_prepared`),
    else read here."""
    return warmed(Path(out_dir) / "data.npz") or _read_prepared(Path(out_dir))


def warm_prepared(out_dir: Path) -> None:
    """Decompress the dataset once, for every job the job server forks after this."""
    warm(Path(out_dir) / "data.npz", lambda npz: _read_prepared(npz.parent))


def _read_prepared(out_dir: Path) -> PreparedData:
    man_path, npz_path = out_dir / "manifest.json", out_dir / "data.npz"
    for p in (man_path, npz_path):
        if not p.exists():
            raise FileNotFoundError(f"prepared data missing: {p}; {regenerate_hint(p)}")
    try:
        man = json.loads(man_path.read_text())
        n = int(man["n_clients"])
    except (ValueError, KeyError, TypeError) as e:
        raise ValueError(f"corrupt manifest {man_path}: {e}; {regenerate_hint(man_path)}") from e
    try:
        with np.load(npz_path) as d:
            get = lambda k: (d[f"{k}_x"], d[f"{k}_y"])
            clients = [get(f"client{i}") for i in range(n)]
            test, holdout = get("test"), get("holdout")
    except (zipfile.BadZipFile, OSError, EOFError, KeyError, ValueError) as e:
        raise ValueError(f"corrupt prepared data {npz_path}: {e}; "
                         f"{regenerate_hint(npz_path)}") from e
    return PreparedData(clients, test, holdout, man)
