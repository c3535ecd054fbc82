"""MLflow tracking. Files are the source of truth: jobs write their JSON first, then mirror it to
MLflow here. One experiment per config (its `experiment` name); one run per training cell, one
nested run per attack, one `summary` run with the tables and plots. Rerunning a job replaces its
run (found by tag), so the store never holds duplicates. Writers retry on a locked SQLite store,
and a tracker that stays unreachable costs a warning, not the job (`fedsafe relog` catches up).

As MLflow's UI expects: a run starts and ends when its job did (the job's own timestamps, even
when the launcher's logger creates the run later), a training run names its data as a dataset
input (the prepared file's content hash as digest), every run carries MLflow's source tags (the
code's commit), and links to the UI open the runs table (`ui_link`).

Security (docs/cluster.md): credentials come from the environment only (MLflow's
MLFLOW_TRACKING_USERNAME / MLFLOW_TRACKING_PASSWORD or MLFLOW_TRACKING_TOKEN) and never reach a
message, param or tag; a refused login (401/403) is not retried; images of the data
(reconstruction grids: patients' images on real data) are uploaded only with
`mlflow.upload_images: true`."""

import contextlib
import fcntl
import functools
import hashlib
import logging
import math
import os
import random
import re
import subprocess
import time
import urllib.parse
import warnings
from pathlib import Path

from fedsafe.config.hashing import config_hash

log = logging.getLogger("fedsafe.tracking")
CELL_TAG, JOB_TAG = "fedsafe.cell", "fedsafe.job"
# Where `mlflow ui` serves by default; a tracking server is its own UI.
LOCAL_UI = "http://127.0.0.1:5000"
COMMIT_ENV = "FEDSAFE_GIT_COMMIT"  # the code's commit, once per workflow run (fedsafe.launch)
CREDENTIALS = ("set MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD (or "
               "MLFLOW_TRACKING_TOKEN) in the environment to an account of the tracking server")
# Values never written anywhere: the jobs' credentials, and the server's own secrets in case a
# job inherits the server's environment.
SECRET_VARS = ("MLFLOW_TRACKING_PASSWORD", "MLFLOW_TRACKING_TOKEN", "MLFLOW_AUTH_ADMIN_PASSWORD",
               "MLFLOW_FLASK_SERVER_SECRET_KEY")
_USERINFO = re.compile(r"([a-zA-Z][a-zA-Z0-9+.-]*://)[^/\s@]+@")


class TrackerError(Exception):
    """The configured tracker cannot be used; the message starts with the config key."""


def tracking_uri(mlflow_cfg: dict, results_dir: str | Path) -> str:
    return without_credentials(
        os.environ.get("MLFLOW_TRACKING_URI") or mlflow_cfg.get("tracking_uri")
        or f"sqlite:///{Path(results_dir).resolve() / 'mlflow.db'}")


def without_credentials(uri: str) -> str:
    """`http://user:pass@host` -> `http://host`, the user and password moved to the variables
    MLflow reads them from (unless already set): a URI is printed and logged in many places,
    so it must not carry a secret."""
    parts = urllib.parse.urlsplit(uri)
    if "@" not in parts.netloc:
        return uri
    if parts.username:
        os.environ.setdefault("MLFLOW_TRACKING_USERNAME", urllib.parse.unquote(parts.username))
    if parts.password:
        os.environ.setdefault("MLFLOW_TRACKING_PASSWORD", urllib.parse.unquote(parts.password))
    return urllib.parse.urlunsplit(parts._replace(netloc=parts.netloc.rpartition("@")[2]))


def redact(text: str) -> str:
    """`text` without a URI's user:password and without the value of any secret variable."""
    text = _USERINFO.sub(r"\1***@", str(text))
    for var in SECRET_VARS:
        secret = os.environ.get(var, "")
        if len(secret) >= 4:  # a shorter one would blank out ordinary words
            text = text.replace(secret, "***")
    return text


def probe(uri: str, timeout: float = 10.0) -> None:
    """One request to an http(s) tracking server, with the jobs' credentials: raises
    TrackerError if it does not answer or refuses them. Other URIs (a local store) pass."""
    uri = without_credentials(uri)
    if not uri.startswith(("http://", "https://")):
        return
    import requests

    env = os.environ.get
    auth = headers = None
    if env("MLFLOW_TRACKING_USERNAME") and env("MLFLOW_TRACKING_PASSWORD"):
        auth = (env("MLFLOW_TRACKING_USERNAME"), env("MLFLOW_TRACKING_PASSWORD"))
    elif env("MLFLOW_TRACKING_TOKEN"):
        headers = {"Authorization": f"Bearer {env('MLFLOW_TRACKING_TOKEN')}"}
    # the TLS settings MLflow's own client honours
    verify = (env("MLFLOW_TRACKING_INSECURE_TLS", "").lower() != "true"
              and (env("MLFLOW_TRACKING_SERVER_CERT_PATH") or True))
    try:
        answer = requests.get(f"{uri.rstrip('/')}/api/2.0/mlflow/experiments/search",
                              params={"max_results": 1}, auth=auth, headers=headers,
                              timeout=timeout, verify=verify)
    except requests.RequestException as err:
        raise TrackerError(f"{uri} does not answer ({type(err).__name__}): start the server, "
                           "open the SSH tunnel, or set mlflow.enabled: false") from None
    if answer.status_code in (401, 403):
        why = "refused the credentials" if answer.status_code == 401 else "denied access"
        raise TrackerError(f"{uri} {why} (HTTP {answer.status_code}): {CREDENTIALS}")
    if answer.status_code != 200:
        raise TrackerError(f"{uri} answered HTTP {answer.status_code}: not an MLflow tracking "
                           "server?")


def check(config: dict) -> None:
    """Before the first job of a run: a tracker named in the (validated) config must answer and
    take the jobs' credentials, which come from the environment, never from the config."""
    cfg = config.get("mlflow", {})
    if not cfg.get("enabled", True):
        return
    if "@" in urllib.parse.urlsplit(cfg.get("tracking_uri", "")).netloc:
        raise TrackerError(f"mlflow.tracking_uri: credentials in a config file are readable by "
                           f"anyone who can read it and land in logs; {CREDENTIALS}")
    uri = tracking_uri(cfg, config.get("results_dir", "results"))
    try:
        probe(uri)
    except TrackerError as err:
        source = " (from MLFLOW_TRACKING_URI)" if os.environ.get("MLFLOW_TRACKING_URI") else ""
        raise TrackerError(redact(f"mlflow.tracking_uri{source}: {err}")) from None


def is_data_image(path: Path) -> bool:
    """An image of the data: a reconstruction grid (originals over reconstructions) in an
    attack's image folder, or its copy under plots/reconstructions/."""
    return "reconstructions" in path.name or path.parent.name == "reconstructions"


def _refused(err: Exception) -> int | None:
    """401 or 403 if the tracker refused the credentials (MLflow's REST errors, or an artifact
    upload's HTTP error); None for anything else."""
    status = getattr(getattr(err, "response", None), "status_code", None)
    if status is None and hasattr(err, "get_http_status_code"):
        status = err.get_http_status_code()
    return status if status in (401, 403) else None


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


def git_commit(checkout: Path = Path(__file__).parent) -> str:
    """The code's commit: FEDSAFE_GIT_COMMIT (set once per workflow run by the launcher, so jobs
    ask git nothing), else `git rev-parse HEAD` of the checkout, else '' (not a git checkout)."""
    return os.environ[COMMIT_ENV] if COMMIT_ENV in os.environ else _git_head(checkout)


@functools.cache
def _git_head(checkout: Path) -> str:
    try:
        found = subprocess.run(["git", "-C", str(checkout), "rev-parse", "HEAD"],
                               capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):  # no git installed
        return ""
    return found.stdout.strip() if found.returncode == 0 else ""


def source_tags() -> dict:
    """MLflow's own tags for the code that ran (the UI's Source and Version columns); the
    commit is left out where the code is not a git checkout."""
    tags = {"mlflow.source.type": "LOCAL", "mlflow.source.name": "Snakefile"}
    if commit := git_commit():
        tags["mlflow.source.git.commit"] = commit
    return tags


def ui_link(experiment_id: str, ui: str = LOCAL_UI) -> str:
    """The experiment's runs table in the UI. MLflow 3's UI opens an experiment on its GenAI
    pages (traces) unless the URL asks for the model-training mode."""
    return f"{ui.rstrip('/')}/#/experiments/{experiment_id}?workflowType=machine_learning"


def where_to_look(uri: str, experiment: str, port: int = 5000) -> str:
    """How to open `experiment`'s runs: the command that starts the UI on a local store, and
    the link. Raises TrackerError if the store has no such experiment yet."""
    from mlflow.tracking import MlflowClient

    uri = without_credentials(uri)
    exp = MlflowClient(uri).get_experiment_by_name(experiment)
    if exp is None:
        raise TrackerError(f"experiment: {experiment!r} is not in {uri} yet; run the workflow "
                           "first (`make run`)")
    if uri.startswith(("http://", "https://")):  # a tracking server serves its own UI
        return f"MLflow runs of {experiment!r}: {ui_link(exp.experiment_id, uri)}"
    ui = f"http://127.0.0.1:{port}"
    return (f"MLflow runs of {experiment!r}: start the UI with `mlflow ui --backend-store-uri "
            f"{uri} --port {port}`, then open {ui_link(exp.experiment_id, ui)}")


def now_ms() -> int:
    """A run's start or end time as MLflow stores it."""
    return int(time.time() * 1000)


def file_digest(path: str | Path) -> str:
    """The content hash of a data file, as a dataset digest (MLflow stores at most 36 characters;
    12 hex digits, as the config hashes)."""
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()[:12]


def dataset_input(name: str, path: str | Path, context: str = "training"):
    """The dataset input of a run: `name` read from the file at `path` (source and digest)."""
    from mlflow.data.dataset_source_registry import resolve_dataset_source
    from mlflow.data.meta_dataset import MetaDataset
    from mlflow.entities import Dataset, DatasetInput, InputTag
    from mlflow.utils.mlflow_tags import MLFLOW_DATASET_CONTEXT

    path = Path(path).resolve()
    with warnings.catch_warnings():  # MLflow registers its local-file source twice (for paths
        # and for file:// URIs), so a path matches it twice and MLflow warns that it is ambiguous
        warnings.filterwarnings("ignore", "The specified dataset source can be interpreted")
        source = resolve_dataset_source(str(path))
    data = MetaDataset(source, name=name, digest=file_digest(path))
    return DatasetInput(Dataset(**data.to_dict()),
                        tags=[InputTag(MLFLOW_DATASET_CONTEXT, context)])


def _dataset_inputs(data: dict) -> list:
    """The inputs of the files in {name: file} that exist (a relog of a folder whose data was
    deleted logs its runs without them); a file that cannot be read costs a warning, not the run."""
    inputs = []
    for name, path in data.items():
        if Path(path).is_file():
            try:
                inputs.append(dataset_input(name, path))
            except OSError as err:
                log.warning("dataset %s not logged as the run's input: %s", name, err)
    return inputs


def log_job(uri: str, experiment: str, cell: str, job: str, params: dict, metrics: dict,
            tags: dict, steps: list[dict] | None = None, artifacts: dict | list = (),
            attempts: int = 7, upload_images: bool = False, data: dict | None = None,
            start_time: int | None = None, end_time: int | None = None) -> str | None:
    """Replace-or-create the run of (cell, job); returns its id, or None if MLflow stayed down
    or refused the credentials. `artifacts`: files, or {artifact folder: files}; files that do
    not exist are skipped, and so are images of the data unless `upload_images`. `data`:
    {dataset name: file} trained on, logged as dataset inputs. `start_time`, `end_time`: the
    job's, in ms (`now_ms`); by default the run starts and ends as it is logged."""
    uri = without_credentials(uri)
    # a caller in another process (the launcher's logger) gets the URI without its credentials:
    # take them from MLFLOW_TRACKING_URI here as well
    without_credentials(os.environ.get("MLFLOW_TRACKING_URI", ""))
    if uri.startswith("http"):  # fail fast on a dead server; log_job's own retries back off
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "30")
    if not isinstance(artifacts, dict):
        artifacts = {"": list(artifacts)}
    artifacts = _withhold_images(artifacts, upload_images)
    params = {k: redact(str(v)) for k, v in flatten(params).items()}
    tags = {**source_tags(), **{k: redact(str(v)) for k, v in tags.items()}}
    end_time = end_time or now_ms()
    times = (start_time or end_time, end_time)
    inputs = _dataset_inputs(data or {})
    for attempt in range(attempts):
        try:
            with _store_lock(uri):
                return _log_once(uri, experiment, cell, job, params, metrics, tags, steps or [],
                                 artifacts, inputs, times)
        except Exception as err:  # noqa: BLE001 - any tracker failure must not fail the job
            if status := _refused(err):  # a wrong password stays wrong: waiting cannot help
                why = CREDENTIALS if status == 401 else (
                    f"the account in MLFLOW_TRACKING_USERNAME may not write experiment "
                    f"{experiment!r}: ask the server's admin for access, or set "
                    "MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD to another account")
                log.warning("MLflow at %s refused to log %s/%s (HTTP %d), not retried: %s. "
                            "The results are in the job's files; `fedsafe relog` copies them "
                            "later", uri, cell, job, status, why)
                return None
            wait = min(30.0, 0.5 * 2 ** attempt) * (0.5 + random.random())
            log.warning("MLflow logging failed (%s: %s); retry %d/%d in %.1fs",
                        type(err).__name__, redact(err), attempt + 1, attempts, wait)
            time.sleep(wait)
    log.warning("MLflow unreachable: results are in the job's files only; rerun `fedsafe relog`")
    return None


def _withhold_images(artifacts: dict, upload_images: bool) -> dict:
    if upload_images:
        return artifacts
    kept = {folder: [p for p in map(Path, paths) if not is_data_image(p)]
            for folder, paths in artifacts.items()}
    withheld = sorted({str(p.parent) for paths in artifacts.values() for p in map(Path, paths)
                       if is_data_image(p) and p.is_file()})
    if withheld:
        log.info("reconstruction grids stay in %s (not uploaded: mlflow.upload_images is "
                 "false)", ", ".join(withheld))
    return kept


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


def _log_once(uri, experiment, cell, job, params, metrics, tags, steps, artifacts, inputs,
              times):
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
    start, end = times
    run = client.create_run(exp_id, start_time=start, run_name=f"{cell}/{job}", tags=all_tags)
    run_id = run.info.run_id
    now = end  # the metrics' timestamp: when the job had them
    flat = [Param(k, str(v)[:6000]) for k, v in flatten(params).items()]
    ms = [Metric(k, v, now, 0) for k, v in _finite(metrics).items()]
    for row in steps:
        step = int(row.get("round", 0))
        ms += [Metric(k, v, now, step) for k, v in _finite(row).items() if k != "round"]
    for i in range(0, len(flat), 100):  # the REST API caps batch sizes
        client.log_batch(run_id, params=flat[i:i + 100])
    for i in range(0, len(ms), 1000):
        client.log_batch(run_id, metrics=ms[i:i + 1000])
    if inputs:
        client.log_inputs(run_id, datasets=inputs)
    for folder, paths in artifacts.items():
        for path in map(Path, paths):
            if path.is_file():
                client.log_artifact(run_id, str(path), artifact_path=folder or None)
    if job == "train":  # attack runs nested under an earlier run of this cell move to this one
        for child in client.search_runs([exp_id], f"tags.`{CELL_TAG}` = '{cell}' AND "
                                        f"tags.`{JOB_TAG}` != 'train'"):
            client.set_tag(child.info.run_id, "mlflow.parentRunId", run_id)
    client.set_terminated(run_id, end_time=end)
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
            "seed": spec["seed"], "spec_hash": config_hash(spec)}


def log_train(uri: str, experiment: str, result: dict, artifacts=(), data=None,
              start_time: int | None = None, end_time: int | None = None) -> str | None:
    """Mirror a train.json to MLflow: the cell's run, with per-round step metrics; `artifacts`
    e.g. the trained model; `data` the prepared data file it trained on (its dataset input)."""
    spec = result["spec"]
    metrics = {k: v for k, v in result.items() if k not in ("history", "stopped")}
    tags = _tags(spec)
    if result.get("stopped"):  # the privacy budget ended training early
        metrics["stopped_before_round"] = result["stopped"]["before_round"]
        tags["stopped"] = result["stopped"]["reason"]
    # per round: the ledger (`client_epsilon/<partition>`, every client) and the diagnostics
    return log_job(uri, experiment, result["cell"], "train", params=spec, tags=tags,
                   steps=result["history"], artifacts=artifacts, metrics=metrics,
                   data={spec["dataset"]: data} if data else None, start_time=start_time,
                   end_time=end_time)


def log_attack(uri: str, experiment: str, result: dict, train_spec: dict,
               artifacts=(), upload_images: bool = False, start_time: int | None = None,
               end_time: int | None = None) -> str | None:
    """Mirror an attack JSON to MLflow: a run nested under its cell's training run, with the
    cell's params (so the compare view lines it up with the training runs) and the attack's.
    Reconstruction grids among `artifacts` are uploaded only with `upload_images`."""
    metrics = {f"{k}/{r['attack_param']}_{_value(r['attack_value'])}": v for r in result["rows"]
               for k, v in r.items() if k not in ("attack_param", "attack_value")}
    attack = {k: result[k] for k in ("attack", "type", "options")}
    return log_job(uri, experiment, result["cell"], f"attack:{result['attack']}",
                   params={**train_spec, "attack": attack}, metrics=metrics,
                   artifacts=artifacts, tags={**_tags(train_spec), "attack": result["attack"],
                                              "attack_hash": config_hash(attack),
                                              "family": result["family"]},
                   upload_images=upload_images, start_time=start_time, end_time=end_time)


def log_reference(uri: str, experiment: str, info: dict, artifacts=(), data=None,
                  start_time: int | None = None, end_time: int | None = None) -> str | None:
    """The reference models of one (dataset, seed): their recipe, sizes and cost; `data` the
    prepared data file they trained on."""
    spec = info["spec"]
    metrics = {k: v for k, v in info.items() if isinstance(v, (int, float))}
    metrics["min_initial_distance_to_target"] = min(info["initial_distance_to_target"])
    tags = {"dataset": spec["dataset"], "seed": spec["seed"], "spec_hash": config_hash(spec)}
    return log_job(uri, experiment, f"{spec['dataset']}/reference/seed_{spec['seed']}",
                   "reference", params=spec, metrics=metrics, tags=tags, artifacts=artifacts,
                   data={spec["dataset"]: data} if data else None, start_time=start_time,
                   end_time=end_time)


def log_summary(uri: str, experiment: str, config_hash_: str, artifacts: dict,
                upload_images: bool = False, start_time: int | None = None,
                end_time: int | None = None) -> str | None:
    """The experiment's `summary` run: the summary table, tables and plots as artifacts (the
    copies of the reconstruction grids only with `upload_images`)."""
    tags = {"config_hash": config_hash_}
    return log_job(uri, experiment, "summary", "summary", params=tags, metrics={}, tags=tags,
                   artifacts=artifacts, upload_images=upload_images, start_time=start_time,
                   end_time=end_time)


def _value(v) -> str:
    return f"{v:g}" if isinstance(v, (int, float)) else str(v)
