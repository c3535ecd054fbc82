"""The default cell's data (config/config.yaml, dataset `pathology`), prepared once into the
benchmark cache with the project's own prepare step."""
from __future__ import annotations

from pathlib import Path

from common import CACHE, ROOT

DATASET = "pathology"


def default_config() -> dict:
    from fedsafe.config_check import load_config

    return load_config(ROOT / "config" / "config.yaml")


def prepared(dataset: str = DATASET) -> Path:
    """Folder holding data.npz + manifest.json for `dataset` of the default config."""
    from fedsafe.config.specs import dataset_spec
    from fedsafe.jobs import prepare

    out = CACHE / "data" / dataset
    if not (out / "data.npz").exists():
        prepare(dataset_spec(default_config(), dataset), out)
    return out


def default_spec(defense: str = "none", noise: str = "0") -> dict:
    from fedsafe.config.specs import train_spec

    return train_spec(default_config(), DATASET, defense, noise, 0)


def model_and_data(dataset: str = DATASET, model: str | None = None):
    """(model factory, prepared data) for `model` (default: the config's) on `dataset`."""
    from fedsafe.data.prepare import load_prepared
    from fedsafe.models import build_model_for

    name = model or default_config()["federation"]["model"]
    data = load_prepared(prepared(dataset))
    m = data.manifest
    make = lambda: build_model_for(name, m)
    return make, data
