"""MLflow tracking. Files are the source of truth: jobs write their JSON first, then mirror it to
MLflow here. One experiment per config (its `experiment` name); one run per training cell, one
nested run per attack, one `summary` run with the tables and plots. Rerunning a job replaces its
run (found by tag), so the store never holds duplicates. Writers retry on a locked SQLite store,
and a tracker that stays unreachable costs a warning, not the job (`fedsafe relog` catches up)."""

import contextlib
import fcntl
import functools
import logging
import math
import os
import random
import subprocess
import time
from pathlib import Path

from fedsafe.config import config_hash

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
    """Finite numbers only; a list (e.g. one value per client) becomes `name/0`, `name/1`, ..."""
    out = {}
    for k, v in metrics.items():
        if isinstance(v, (list, tuple)):
            out.update(_finite({f"{k}/{i}": x for i, x in enumerate(v)}))
        elif isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v):
            out[k] = float(v)
    return out


@functools.cache
def git_commit() -> str:
    """The code's commit: FEDSAFE_GIT_COMMIT, else `git rev-parse HEAD` of this checkout, else ''."""
    if "FEDSAFE_GIT_COMMIT" in os.environ:
        return os.environ["FEDSAFE_GIT_COMMIT"]
    try:
        return subprocess.run(["git", "-C", str(Path(__file__).parent), "rev-parse", "HEAD"],
                              capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


def log_job(uri: str, experiment: str, cell: str, job: str, params: dict, metrics: dict,
            tags: dict, steps: list[dict] | None = None, artifacts: dict | list = (),
            attempts: int = 7) -> str | None:
    """Replace-or-create the run of (cell, job); returns its id, or None if MLflow stayed down.
    `artifacts`: files, or {artifact folder: files}; files that do not exist are skipped."""
    if uri.startswith("http"):  # fail fast on a dead server; log_job's own retries back off
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "30")
    if not isinstance(artifacts, dict):
        artifacts = {"": list(artifacts)}
    for attempt in range(attempts):
        try:
            with _store_lock(uri):
                return _log_once(uri, experiment, cell, job, params, metrics, tags, steps or [],
                                 artifacts)
        except Exception as err:  # noqa: BLE001 - any tracker failure must not fail the job
            wait = min(30.0, 0.5 * 2 ** attempt) * (0.5 + random.random())
            log.warning("MLflow logging failed (%s: %s); retry %d/%d in %.1fs",
                        type(err).__name__, err, attempt + 1, attempts, wait)
            time.sleep(wait)
    log.warning("MLflow unreachable: results are in the job's files only; rerun `fedsafe relog`")
    return None


@contextlib.contextmanager
def _store_lock(uri: str):
    """Jobs take turns on a local SQLite store: SQLite has one writer at a time anyway, and
    MLflow's creation of a fresh store (a schema migration) breaks when run concurrently."""
    if not uri.startswith("sqlite:///"):
        yield
        return
    db = Path(uri.removeprefix("sqlite:///"))
    db.parent.mkdir(parents=True, exist_ok=True)
    with open(f"{db}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
        yield


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
    for folder, paths in artifacts.items():
        for path in map(Path, paths):
            if path.is_file():
                client.log_artifact(run_id, str(path), artifact_path=folder or None)
    if job == "train":  # attack runs nested under an earlier run of this cell move to this one
        for child in client.search_runs([exp_id], f"tags.`{CELL_TAG}` = '{cell}' AND "
                                        f"tags.`{JOB_TAG}` != 'train'"):
            client.set_tag(child.info.run_id, "mlflow.parentRunId", run_id)
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


def _tags(spec: dict) -> dict:
    return {"dataset": spec["dataset"], "defense": spec["defense"], "noise": f"{spec['noise']:g}",
            "seed": spec["seed"], "spec_hash": config_hash(spec), "git_commit": git_commit()}


def log_train(uri: str, experiment: str, result: dict, artifacts=()) -> str | None:
    """Mirror a train.json to MLflow: the cell's run, with per-round step metrics; `artifacts`
    e.g. the trained model."""
    spec = result["spec"]
    metrics = {k: v for k, v in result.items() if k not in ("history", "stopped")}
    tags = _tags(spec)
    if result.get("stopped"):  # the privacy budget ended training early
        metrics["stopped_before_round"] = result["stopped"]["before_round"]
        tags["stopped"] = result["stopped"]["reason"]
    # per round: the ledger (`client_epsilon/<partition>`, every client) and the diagnostics
    return log_job(uri, experiment, result["cell"], "train", params=spec, tags=tags,
                   steps=result["history"], artifacts=artifacts, metrics=metrics)


def log_attack(uri: str, experiment: str, result: dict, train_spec: dict,
               artifacts=()) -> str | None:
    """Mirror an attack JSON to MLflow: a run nested under its cell's training run, with the
    cell's params (so the compare view lines it up with the training runs) and the attack's."""
    metrics = {f"{k}/{r['attack_param']}_{_value(r['attack_value'])}": v for r in result["rows"]
               for k, v in r.items() if k not in ("attack_param", "attack_value")}
    attack = {k: result[k] for k in ("attack", "type", "options")}
    return log_job(uri, experiment, result["cell"], f"attack:{result['attack']}",
                   params={**train_spec, "attack": attack}, metrics=metrics,
                   artifacts=artifacts, tags={**_tags(train_spec), "attack": result["attack"],
                                              "attack_hash": config_hash(attack),
                                              "family": result["family"]})


def log_reference(uri: str, experiment: str, info: dict, artifacts=()) -> str | None:
    """The reference models of one (dataset, seed): their recipe, sizes and cost."""
    spec = info["spec"]
    metrics = {k: v for k, v in info.items() if isinstance(v, (int, float))}
    metrics["min_initial_distance_to_target"] = min(info["initial_distance_to_target"])
    tags = {"dataset": spec["dataset"], "seed": spec["seed"], "spec_hash": config_hash(spec),
            "git_commit": git_commit()}
    return log_job(uri, experiment, f"{spec['dataset']}/reference/seed_{spec['seed']}",
                   "reference", params=spec, metrics=metrics, tags=tags, artifacts=artifacts)


def log_summary(uri: str, experiment: str, config_hash_: str, artifacts: dict) -> str | None:
    """The experiment's `summary` run: the summary table, tables and plots as artifacts."""
    tags = {"config_hash": config_hash_, "git_commit": git_commit()}
    return log_job(uri, experiment, "summary", "summary", params=tags, metrics={}, tags=tags,
                   artifacts=artifacts)


def _value(v) -> str:
    return f"{v:g}" if isinstance(v, (int, float)) else str(v)
