"""The authenticated tracking recipe of docs/cluster.md, end to end: MLflow's basic-auth server on
loopback refuses anonymous clients, a tiny grid logs every job with the credentials of the
environment, uploads no reconstruction grid, and writes the planted secrets nowhere; a wrong
password stops the run before any job, costs a job's logging one refused attempt, and `fedsafe
relog` catches up once the password is right."""

import logging
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests
from conftest import ROOT, base_config, snakemake

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("tracking_auth")]
JOB_USER = "fedsafe-job"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """`mlflow server --app-name basic-auth` as docs/cluster.md starts it (loopback, secrets
    from the environment), with an account for the jobs."""
    root = tmp_path_factory.mktemp("tracker")
    (root / "auth.ini").write_text(
        "[mlflow]\ndefault_permission = NO_PERMISSIONS\n"
        f"database_uri = sqlite:///{root / 'basic_auth.db'}\nadmin_username = admin\n"
        "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n")
    env = {**os.environ, "MLFLOW_AUTH_CONFIG_PATH": str(root / "auth.ini"),
           "MLFLOW_FLASK_SERVER_SECRET_KEY": secrets.token_hex(16),
           "MLFLOW_AUTH_ADMIN_PASSWORD": "admin-" + secrets.token_hex(12)}
    port = free_port()
    uri = f"http://127.0.0.1:{port}"
    mlflow = Path(sys.executable).with_name("mlflow")
    log = open(root / "server.log", "w")
    proc = subprocess.Popen(
        [str(mlflow), "server", "--app-name", "basic-auth", "--host", "127.0.0.1", "--port",
         str(port), "--workers", "1", "--backend-store-uri", f"sqlite:///{root / 'mlflow.db'}",
         "--artifacts-destination", str(root / "artifacts")],
        env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.time() + 240  # 60-90 s on 2 busy cores
        while True:
            try:
                if requests.get(f"{uri}/health", timeout=5).status_code == 200:
                    break
            except requests.RequestException:
                pass
            assert proc.poll() is None and time.time() < deadline, \
                (root / "server.log").read_text()[-3000:]
            time.sleep(2)
        password = "job-" + secrets.token_hex(12)  # the planted secret
        answer = requests.post(f"{uri}/api/2.0/mlflow/users/create",
                               json={"username": JOB_USER, "password": password},
                               auth=("admin", env["MLFLOW_AUTH_ADMIN_PASSWORD"]), timeout=30)
        assert answer.status_code == 200, answer.text
        yield {"uri": uri, "root": root, "password": password,
               "secrets": [password, env["MLFLOW_AUTH_ADMIN_PASSWORD"],
                           env["MLFLOW_FLASK_SERVER_SECRET_KEY"]]}
    finally:
        os.killpg(proc.pid, signal.SIGTERM)  # the server and its workers, started above
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:  # a graceful stop takes 15 s: nothing to keep here
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(30)
        log.close()


def job_env(server, password=None) -> dict:
    token = "token-" + secrets.token_hex(12)  # planted too: MLflow prefers the password
    return {"MLFLOW_TRACKING_URI": server["uri"], "MLFLOW_TRACKING_USERNAME": JOB_USER,
            "MLFLOW_TRACKING_PASSWORD": password or server["password"],
            "MLFLOW_TRACKING_TOKEN": token}


def tiny_grid(**overrides) -> dict:
    """conftest's tiny grid with an inversion attack that saves its reconstruction grid."""
    return base_config(experiment="fedsafe-auth", attacks={"inverting_gradients": {"options": {
        "observation": "gradient", "iterations": 5, "n_batches": 1, "round": 1,
        "save_images": True}}}, **overrides)


@pytest.fixture(scope="module")
def grid(server, tmp_path_factory):
    workdir = tmp_path_factory.mktemp("grid")
    env = job_env(server)
    with pytest.MonkeyPatch.context() as mp:
        for k, v in env.items():
            mp.setenv(k, v)
        proc = snakemake(["--cores", "2"], tiny_grid(), workdir)
    return {"workdir": workdir, "proc": proc, "secrets": [*server["secrets"],
                                                          env["MLFLOW_TRACKING_TOKEN"]]}


@pytest.fixture
def as_job(server, monkeypatch):
    for k, v in job_env(server).items():
        monkeypatch.setenv(k, v)


def all_runs(server, experiment="fedsafe-auth"):
    from mlflow.tracking import MlflowClient

    c = MlflowClient(server["uri"])
    return c, c.search_runs([c.get_experiment_by_name(experiment).experiment_id])


def artifact_paths(c, run_id, path=None) -> list[str]:
    out = []
    for a in c.list_artifacts(run_id, path):
        out += artifact_paths(c, run_id, a.path) if a.is_dir else [a.path]
    return out


def test_anonymous_client_gets_401(server):
    url = f"{server['uri']}/api/2.0/mlflow/experiments/search"
    assert requests.get(url, params={"max_results": 1}, timeout=30).status_code == 401
    assert requests.get(url, params={"max_results": 1}, timeout=30,
                        auth=(JOB_USER, server["password"])).status_code == 200


def test_every_job_logs_its_run_with_credentials(server, grid, as_job):
    c, runs = all_runs(server)
    assert sorted(r.data.tags["fedsafe.job"] for r in runs) == [
        "attack:inverting_gradients", "summary", "train"]
    summary = next(r for r in runs if r.data.tags["fedsafe.job"] == "summary")
    assert "plots/frontier.png" in artifact_paths(c, summary.info.run_id)  # uploads work


def test_no_image_of_the_data_leaves_the_results_folder(server, grid, as_job):
    import stat

    from fedsafe.tracking import is_data_image

    results = grid["workdir"] / "results"
    grids = sorted(results.rglob("*_reconstructions.png"))
    # on disk: in the attack's image folder and copied to the plots'
    assert {p.parent.name for p in grids} == {"inverting_gradients", "reconstructions"}
    for png in grids:  # a folder on the way is closed to everyone but its owner
        assert any(stat.S_IMODE(d.stat().st_mode) & 0o077 == 0
                   for d in png.parents if results in d.parents)
    assert "readable by you only" in grid["proc"].stderr  # the run's warning names them
    c, runs = all_runs(server)
    uploaded = [p for r in runs for p in artifact_paths(c, r.info.run_id)]
    assert uploaded and not [p for p in uploaded if is_data_image(Path(p))]
    assert not list((server["root"] / "artifacts").rglob("*reconstructions*"))


def test_planted_secrets_appear_in_no_output(server, grid, as_job):
    """The password, the unused token and the server's secrets: in no file of the run (results,
    logs, Snakemake's metadata), no console line, no MLflow param or tag, nothing the server
    stored for the runs."""
    c, runs = all_runs(server)
    texts = [grid["proc"].stdout, grid["proc"].stderr]
    texts += [" ".join([*r.data.params.values(), *r.data.tags.values(), *r.data.params,
                        *r.data.tags]) for r in runs]
    # the server's files too, but for its user store (password hashes)
    files = [p for d in (grid["workdir"], server["root"]) for p in d.rglob("*")
             if p.is_file() and p.name != "basic_auth.db"]
    assert len(files) > 20
    for secret in grid["secrets"]:
        assert not [t for t in texts if secret in t]
        assert not [p for p in files if secret.encode() in p.read_bytes()]


def test_wrong_password_stops_the_run_before_any_job(server, tmp_path, monkeypatch):
    wrong = "wrong-" + secrets.token_hex(8)
    for k, v in job_env(server, wrong).items():
        monkeypatch.setenv(k, v)
    proc = snakemake(["--cores", "1"], tiny_grid(), tmp_path, check=False)
    assert proc.returncode != 0
    assert "config error: mlflow.tracking_uri (from MLFLOW_TRACKING_URI): " in proc.stderr
    assert "HTTP 401" in proc.stderr and "MLFLOW_TRACKING_PASSWORD" in proc.stderr
    assert wrong not in proc.stdout + proc.stderr
    assert not (tmp_path / "results/data").exists()  # no job ran


def test_wrong_password_costs_one_attempt_and_relog_catches_up(server, grid, monkeypatch,
                                                                caplog):
    import json

    from fedsafe.tracking import log_train

    results = grid["workdir"] / "results"
    train_json = next(results.rglob("train.json"))
    before = {p: p.read_bytes() for p in results.rglob("*.json")}
    for k, v in job_env(server, "wrong-" + secrets.token_hex(8)).items():
        monkeypatch.setenv(k, v)
    t0 = time.time()
    with caplog.at_level(logging.WARNING, logger="fedsafe.tracking"):
        assert log_train(server["uri"], "relogged", json.loads(train_json.read_text())) is None
    assert time.time() - t0 < 15
    (warning,) = caplog.records
    assert "HTTP 401" in warning.message and "MLFLOW_TRACKING_USERNAME" in warning.message
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", server["password"])
    # the CLI runs `snakemake relog --cores 1` (the rule knows the grid's files) in the checkout
    workdir = grid["workdir"]
    out = subprocess.run([sys.executable, "-m", "fedsafe.cli", "relog", "--directory",
                          str(workdir), "--configfile", str(workdir / "config.yaml"), "--config",
                          "experiment=relogged"], capture_output=True, text=True, timeout=300,
                         cwd=ROOT)
    assert "re-logged 3 runs" in out.stdout + out.stderr, out.stderr
    _, runs = all_runs(server, "relogged")
    assert len(runs) == 3
    assert before == {p: p.read_bytes() for p in results.rglob("*.json")}  # files untouched
