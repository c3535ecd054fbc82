"""MLflow as its UI shows it: the tiny grid run by the launcher (as `make run` runs it), `mlflow ui`
on its store, and the link the launcher printed loaded in headless Chromium. The link opens the
experiment's runs table (model-training mode, not the GenAI overview): the runs are listed, the
training run with its dataset input; each run spans its job and names the code's commit."""

import hashlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests
import yaml
from conftest import ROOT, base_config

from fedsafe.tracking import ui_link

CHROMIUM = shutil.which("chromium")
pytestmark = [
    pytest.mark.slow, pytest.mark.xdist_group("mlflow_ui"),
    pytest.mark.skipif(CHROMIUM is None, reason="needs a headless browser to render MLflow's "
                       "UI: Debian's chromium package (`apt-get install -y chromium`, as .ci/run "
                       "does)"),
]
EXPERIMENT = "fedsafe-ui"
TRAIN_RUN = "mri/none/noise_0/seed_0/train"


@pytest.fixture(scope="module")
def launched(tmp_path_factory):
    """The finished tiny grid (one trained cell, one attack), launched from another folder with
    a relative results folder: the logger must find the jobs' files in Snakemake's folder."""
    workdir = tmp_path_factory.mktemp("ui")
    config = workdir / "config.yaml"
    config.write_text(yaml.safe_dump(base_config(experiment=EXPERIMENT, results_dir="results")))
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    proc = subprocess.run(
        [sys.executable, "-m", "fedsafe.launch", "--snakefile", str(ROOT / "Snakefile"),
         "--directory", str(workdir), "--configfile", str(config), "--cores", "2"],
        capture_output=True, text=True, cwd=workdir.parent, env=env, timeout=1800)
    assert proc.returncode == 0, proc.stderr[-5000:]
    return workdir, proc.stderr


@pytest.fixture(scope="module")
def store(launched):
    from mlflow.tracking import MlflowClient

    workdir, _ = launched
    uri = f"sqlite:///{workdir / 'results/mlflow.db'}"
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name(EXPERIMENT)
    runs = {r.info.run_name: r for r in client.search_runs([exp.experiment_id])}
    return {"uri": uri, "experiment_id": exp.experiment_id, "runs": runs}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def ui(store, tmp_path_factory):
    """`mlflow ui` on the grid's store (it needs about a minute to start on 2 cores)."""
    port = free_port()
    log = tmp_path_factory.mktemp("mlflow-ui") / "ui.log"
    with open(log, "w") as out:
        server = subprocess.Popen(
            [str(Path(sys.executable).with_name("mlflow")), "ui", "--backend-store-uri",
             store["uri"], "--host", "127.0.0.1", "--port", str(port)],
            stdout=out, stderr=subprocess.STDOUT, start_new_session=True)  # its own workers too
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 300
        while True:
            assert server.poll() is None, f"mlflow ui exited:\n{log.read_text()[-3000:]}"
            try:
                if requests.get(f"{base}/health", timeout=5).ok:
                    break
            except requests.RequestException:
                pass
            assert time.time() < deadline, f"mlflow ui did not start:\n{log.read_text()[-3000:]}"
            time.sleep(2)
        yield base
    finally:
        os.killpg(server.pid, signal.SIGTERM)  # the group this fixture started
        try:
            server.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)


def rendered(url: str, profile: Path) -> str:
    """The page's DOM once its scripts have run, as a user's browser shows it."""
    done = subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", f"--user-data-dir={profile}",
         "--virtual-time-budget=15000", "--dump-dom", url],
        capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def test_the_launcher_prints_the_link_to_the_runs_table(launched, store):
    _, stderr = launched
    assert f"--backend-store-uri {store['uri']} --port 5000`" in stderr
    assert ui_link(store["experiment_id"]) in stderr


def test_the_link_lists_the_runs_and_the_dataset(ui, store, launched, tmp_path):
    workdir, _ = launched
    dom = rendered(ui_link(store["experiment_id"], ui), tmp_path / "chromium")
    for name in (TRAIN_RUN, "summary/summary"):
        assert name in dom, f"run {name} not listed by the page the link opens"
    data = workdir / "results/data/mri/data.npz"
    digest = hashlib.sha256(data.read_bytes()).hexdigest()[:12]
    # the Dataset column: the dataset's name and digest, e.g. "mri (1a2b3c4d5e6f)"
    assert re.search(rf"mri\W.{{0,200}}{digest}", dom, re.S), "no dataset input in the runs table"


def test_each_run_spans_its_job_and_names_the_commit(store, launched):
    workdir, _ = launched
    train = store["runs"][TRAIN_RUN]
    attack = store["runs"]["mri/none/noise_0/seed_0/attack:fgsm"]
    trained = json.loads((workdir / "results/train/mri/none/noise_0/seed_0/train.json").read_text())
    assert train.info.end_time - train.info.start_time >= 1000 * trained["train_seconds"]
    assert attack.info.start_time >= train.info.end_time  # the attack job ran after training
    head = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True,
                          text=True)
    for run in store["runs"].values():
        assert run.data.tags.get("mlflow.source.git.commit") == (
            head.stdout.strip() if head.returncode == 0 else None)
