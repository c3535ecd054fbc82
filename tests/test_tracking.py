"""MLflow mirroring: parallel writers to one SQLite store lose nothing, reruns replace runs, and an
unreachable tracker costs a warning, not the job."""

import time
from concurrent.futures import ProcessPoolExecutor

import pytest

from fedsafe.tracking import log_attack, log_train

pytestmark = pytest.mark.xdist_group("tracking")
ROUNDS = 3


def fake_train(seed: int) -> dict:
    spec = {"dataset": "mri", "defense": "dp_sgd", "noise": 0.5, "seed": seed,
            "options": {"clip_norm": 1.0}, "federation": {"rounds": ROUNDS}}
    history = [{"round": r, "test_accuracy": 0.5 + r / 10, "test_loss": 1.0 / r,
                "client_train_loss": [1.0, 2.0], "epsilon": float(r), "client_epsilon": [r, r],
                "seconds": r} for r in range(1, ROUNDS + 1)]
    return {"cell": f"mri/dp_sgd/noise_0.5/seed_{seed}", "spec": spec, "clean_accuracy": 0.8,
            "epsilon": 3.0, "delta": 1e-5, "guarantee": "(eps, delta)-DP", "rounds": ROUNDS,
            "train_seconds": 1.0, "startup_seconds": 0.5, "history": history}


def fake_attack(train: dict) -> dict:
    return {"cell": train["cell"], "attack": "fgsm", "type": "fgsm", "family": "evasion",
            "options": {"eps": [0.0, 0.05]}, "seconds": 1.0,
            "rows": [{"attack_param": "eps", "attack_value": e, "robust_accuracy": 0.5,
                      "attack_success_rate": 0.2, "transfer_rate": float("nan")}
                     for e in (0.0, 0.05)]}


def log_cell(uri: str, seed: int) -> tuple:
    train = fake_train(seed)
    return (log_train(uri, "exp", train),
            log_attack(uri, "exp", fake_attack(train), train["spec"]))


def runs(uri: str) -> list:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    return client.search_runs([client.get_experiment_by_name("exp").experiment_id])


def test_parallel_writers_lose_nothing(tmp_path):
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    with ProcessPoolExecutor(6) as pool:  # six jobs at once on a fresh store
        ids = list(pool.map(log_cell, [uri] * 6, range(6)))
    assert all(i is not None for pair in ids for i in pair)
    found = runs(uri)
    assert len(found) == 12 and len({r.info.run_id for r in found}) == 12
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    for train_id, attack_id in ids:
        train = client.get_run(train_id)
        assert len(client.get_metric_history(train_id, "test_accuracy")) == ROUNDS
        assert {"clean_accuracy", "client_train_loss/1", "epsilon"} <= set(train.data.metrics)
        assert train.data.params["federation.rounds"] == str(ROUNDS)
        attack = client.get_run(attack_id)
        assert attack.data.tags["mlflow.parentRunId"] == train_id
        assert {"robust_accuracy/eps_0", "robust_accuracy/eps_0.05"} <= set(attack.data.metrics)
        assert "transfer_rate/eps_0" not in attack.data.metrics  # NaN is left out


def test_rerun_replaces_run_and_keeps_nesting(tmp_path):
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    log_cell(uri, 0)
    model = tmp_path / "model.pt"
    model.write_bytes(b"weights")
    new_train = log_train(uri, "exp", fake_train(0), [model])  # train reran, attack did not
    found = runs(uri)
    assert len(found) == 2
    attack = next(r for r in found if r.data.tags["fedsafe.job"] == "attack:fgsm")
    assert attack.data.tags["mlflow.parentRunId"] == new_train
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    assert len(client.get_metric_history(new_train, "test_accuracy")) == ROUNDS
    assert [a.path for a in client.list_artifacts(new_train)] == ["model.pt"]


def test_unreachable_tracker_does_not_fail(monkeypatch):
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    t0 = time.time()
    train = fake_train(0)
    from fedsafe.tracking import log_job

    assert log_job("http://127.0.0.1:9", "exp", train["cell"], "train", train["spec"], {}, {},
                   attempts=1) is None
    assert time.time() - t0 < 30


def test_ledger_one_metric_per_client_step_round_and_budget_stop(tmp_path):
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp_path}/mlflow.db"
    train = fake_train(0)
    for row in train["history"]:  # client 2 not sampled in round 3: it keeps its epsilon
        r = row["round"]
        row["client_epsilon"] = [r, r, min(r, 2) + 0.5]
    train.update(stopped={"before_round": 4, "reason": "budget: ..."}, rounds_run=3)
    run_id = log_train(uri, "exp", train)
    client = MlflowClient(uri)
    for c, want in ((0, [1, 2, 3]), (2, [1.5, 2.5, 2.5])):
        hist = sorted(client.get_metric_history(run_id, f"client_epsilon/{c}"),
                      key=lambda m: m.step)
        assert [(m.step, m.value) for m in hist] == list(zip([1, 2, 3], want))
    run = client.get_run(run_id)
    assert run.data.metrics["stopped_before_round"] == 4 and run.data.tags["stopped"] == "budget: ..."


def test_reference_models_get_a_run_of_their_own(tmp_path):
    from fedsafe.tracking import log_reference

    uri = f"sqlite:///{tmp_path}/mlflow.db"
    spec = {"dataset": "mri", "seed": 1, "model": "small_cnn", "n_models": 2,
            "training": "centralised", "federation": {"rounds": ROUNDS}}
    info = {"n_models": 2, "pool_size": 100, "train_size": 50, "seconds": 3.0,
            "initial_distance_to_target": [4.0, 5.0], "spec": spec}
    first = log_reference(uri, "exp", info)
    second = log_reference(uri, "exp", info)  # a rerun replaces the run
    (run,) = runs(uri)
    assert run.info.run_id == second != first
    assert run.data.tags["fedsafe.job"] == "reference" and run.data.params["n_models"] == "2"
    assert run.data.metrics["train_size"] == 50
    assert run.data.metrics["min_initial_distance_to_target"] == 4.0
