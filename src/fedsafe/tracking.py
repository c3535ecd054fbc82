"""MLflow tracking. Files are the source of truth: jobs write their JSON first, then mirror it to
MLflow here. One run per training cell, one nested run per attack; rerunning a job replaces its
run (found by tag), so the store never holds duplicates. Writers retry on a locked SQLite store,
and a tracker that stays unreachable costs a warning, not the job."""

import logging
import math
import os
import random
import time
from pathlib import Path

log = logging.getLogger("fedsafe.tracking")
CELL_TAG, JOB_TAG = "fedsafe.cell", "fedsafe.job"


def tracking_uri(mlflow_cfg: dict, results_dir: str | Path) -> str:
    return (os.environ.get("MLFLOW_TRACKING_URI") or mlflow_cfg.get("tracking_uri")
            or f"sqlite:///{Path(results_dir).resolve() / 'mlflow.db'}")


def flatten(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(flatten(v, f"{key}."))
        else:
            out[key] = v
    return out


def _finite(metrics: dict) -> dict:
    return {k: float(v) for k, v in metrics.items()
            if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)}


def log_job(uri: str, experiment: str, cell: str, job: str, params: dict, metrics: dict,
            tags: dict, steps: list[dict] | None = None, artifacts: list[Path] = (),
            attempts: int = 8) -> str | None:
    """Replace-or-create the run of (cell, job); returns its id, or None if MLflow stayed down."""
    for attempt in range(attempts):
        try:
            return _log_once(uri, experiment, cell, job, params, metrics, tags, steps or [],
                             artifacts)
        except Exception as err:  # noqa: BLE001 - any tracker failure must not fail the job
            wait = min(30.0, 0.5 * 2 ** attempt) * (0.5 + random.random())
            log.warning("MLflow logging failed (%s: %s); retry %d/%d in %.1fs",
                        type(err).__name__, err, attempt + 1, attempts, wait)
            time.sleep(wait)
    log.warning("MLflow unreachable: results are in the job's files only; rerun `fedsafe relog`")
    return None


def _log_once(uri, experiment, cell, job, params, metrics, tags, steps, artifacts):
    from mlflow.entities import Metric, Param
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    exp = client.get_experiment_by_name(experiment)
    exp_id = exp.experiment_id if exp else _create_experiment(client, experiment, uri)
    query = f"tags.`{CELL_TAG}` = '{cell}' AND tags.`{JOB_TAG}` = '{job}'"
    for old in client.search_runs([exp_id], query):
        client.delete_run(old.info.run_id)
    parent = None
    if job != "train":
        found = client.search_runs([exp_id], f"tags.`{CELL_TAG}` = '{cell}' AND "
                                   f"tags.`{JOB_TAG}` = 'train'", max_results=1)
        parent = found[0].info.run_id if found else None
    all_tags = {CELL_TAG: cell, JOB_TAG: job, **{k: str(v) for k, v in tags.items()}}
    if parent:
        all_tags["mlflow.parentRunId"] = parent
    run = client.create_run(exp_id, run_name=f"{cell}/{job}", tags=all_tags)
    run_id = run.info.run_id
    now = int(time.time() * 1000)
    flat = [Param(k, str(v)[:6000]) for k, v in flatten(params).items()]
    ms = [Metric(k, v, now, 0) for k, v in _finite(metrics).items()]
    for row in steps:
        step = int(row.get("round", 0))
        ms += [Metric(k, v, now, step) for k, v in _finite(row).items() if k != "round"]
    for i in range(0, len(flat), 100):  # the REST API caps batch sizes
        client.log_batch(run_id, params=flat[i:i + 100])
    for i in range(0, len(ms), 1000):
        client.log_batch(run_id, metrics=ms[i:i + 1000])
    for path in artifacts:
        client.log_artifact(run_id, str(path))
    client.set_terminated(run_id)
    return run_id


def _create_experiment(client, name: str, uri: str) -> str:
    # A local SQLite store keeps its artifacts beside it, not in the job's working directory.
    location = None
    if uri.startswith("sqlite:///"):
        location = (Path(uri.removeprefix("sqlite:///")).parent / "mlartifacts").resolve().as_uri()
    try:
        return client.create_experiment(name, artifact_location=location)
    except Exception:  # a parallel job created it first
        return client.get_experiment_by_name(name).experiment_id
