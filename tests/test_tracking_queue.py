"""MLflow logging off the jobs' path (fedsafe.tracking_queue): under the launcher a job leaves its
logging call in a queue and a logger process makes it, in the jobs' order, as one run per job;
calls a killed run left behind are made by the next logger; without the launcher a job logs
itself."""

import os
import subprocess
import sys

import pytest
from test_tracking import fake_attack, fake_train, runs

from fedsafe import tracking_queue as tq

pytestmark = pytest.mark.xdist_group("tracking")


def test_queued_calls_become_one_run_per_job_in_order(tmp_path, monkeypatch):
    uri, queue = f"sqlite:///{tmp_path}/mlflow.db", tmp_path / "queue"
    monkeypatch.setenv(tq.ENV, str(queue))
    train = fake_train(0)
    tq.log_call("log_train", uri, "exp", train)
    tq.log_call("log_attack", uri, "exp", fake_attack(train), train["spec"])
    assert len(list(queue.glob("[0-9]*.json"))) == 2
    assert not (tmp_path / "mlflow.db").exists()  # nothing logged by the job itself
    assert tq.drain(queue) == 2
    assert not list(queue.iterdir())
    got = {r.data.tags["fedsafe.job"]: r for r in runs(uri)}
    assert set(got) == {"train", "attack:fgsm"}
    # the attack's run sits under its cell's training run: the train call was made first
    assert got["attack:fgsm"].data.tags["mlflow.parentRunId"] == got["train"].info.run_id


def test_the_logger_process_drains_what_a_killed_run_left(tmp_path, monkeypatch):
    uri, queue = f"sqlite:///{tmp_path}/mlflow.db", tmp_path / "queue"
    monkeypatch.setenv(tq.ENV, str(queue))
    tq.log_call("log_train", uri, "exp", fake_train(1))  # left by a run killed before logging
    monkeypatch.delenv(tq.ENV)
    # a later launcher's logger, told to stop at once, still makes every queued call first
    (queue / "stop").touch()
    subprocess.run([sys.executable, "-m", "fedsafe.tracking_queue", str(queue), str(os.getpid())],
                   check=True, timeout=300)
    assert [r.data.tags["fedsafe.job"] for r in runs(uri)] == ["train"]
    assert not list(queue.glob("[0-9]*.json"))


def test_without_a_queue_the_job_logs_itself(tmp_path, monkeypatch):
    monkeypatch.delenv(tq.ENV, raising=False)
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    tq.log_call("log_train", uri, "exp", fake_train(2))
    assert len(runs(uri)) == 1
