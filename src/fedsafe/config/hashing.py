"""The hashes of a config and of job specs: they name the results' config and mark a job file
stale, so their values must never change for the same input."""

import hashlib
import json

# Keys that change where results are reported, never what they are: not hashed into the results'
# config hash, and never a rule param (a param change reruns the job).
TRACKING_KEYS = ("mlflow", "experiment")


def results_hash(config: dict) -> str:
    """Hash of everything in the config that can change a result (the summary's config_hash)."""
    return config_hash({k: v for k, v in config.items() if k not in TRACKING_KEYS})


def config_hash(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:12]
