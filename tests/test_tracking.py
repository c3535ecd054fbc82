"""MLflow mirroring: parallel writers to one SQLite store lose nothing, reruns replace runs, and an
unreachable tracker costs a warning, not the job. Security: a refused login is not retried and
names the variables to set, the tracker is checked before any job, secrets reach no log line,
param or tag, and images of the data reach MLflow only when the config opts in (the same
against a real authenticated server: test_tracking_auth.py)."""

import os
import stat
import subprocess
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

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


# --- as MLflow's UI expects: the job's span, the dataset input, the code version, the link ---


def test_a_run_spans_its_job_however_late_it_is_logged(tmp_path, monkeypatch):
    """Queued (under the launcher) or direct, a run starts when its job started and ends when
    the job handed over its results, not when the logger got to it."""
    from mlflow.tracking import MlflowClient

    from fedsafe import tracking_queue as tq

    uri, queue = f"sqlite:///{tmp_path}/mlflow.db", tmp_path / "queue"
    train = fake_train(0)
    started = time.time() - 60  # the job began a minute ago
    monkeypatch.setenv(tq.ENV, str(queue))
    before = time.time()
    tq.log_call("log_train", uri, "exp", train, started=started)
    after = time.time()
    time.sleep(1.5)  # the logger comes later
    tq.drain(queue)
    monkeypatch.delenv(tq.ENV)  # no launcher: the job logs itself
    attack_started = time.time() - 5
    attack_before = time.time()
    tq.log_call("log_attack", uri, "exp", fake_attack(train), train["spec"],
                started=attack_started)
    got = {r.data.tags["fedsafe.job"]: r for r in runs(uri)}
    assert got["train"].info.start_time == int(started * 1000)
    assert int(before * 1000) <= got["train"].info.end_time <= int(after * 1000)
    attack = got["attack:fgsm"]
    assert attack.info.start_time == int(attack_started * 1000)
    assert int(attack_before * 1000) <= attack.info.end_time <= int(time.time() * 1000)
    assert attack.info.status == "FINISHED"
    (metric,) = MlflowClient(uri).get_metric_history(attack.info.run_id, "robust_accuracy/eps_0")
    assert metric.timestamp == attack.info.end_time  # when the job had its metrics


def test_a_training_run_names_its_data_as_a_dataset_input(tmp_path):
    """Name, digest (the prepared file's content hash: new content, new digest) and source, in
    the training context; a relog whose data file is gone still logs the run."""
    import hashlib
    import json

    import numpy as np
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp_path}/mlflow.db"
    data = tmp_path / "data.npz"
    np.savez(data, x_train=np.zeros((4, 2)))
    client = MlflowClient(uri)
    (first,) = client.get_run(log_train(uri, "exp", fake_train(0),
                                        data=data)).inputs.dataset_inputs
    assert first.dataset.name == "mri"
    assert first.dataset.digest == hashlib.sha256(data.read_bytes()).hexdigest()[:12]
    assert json.loads(first.dataset.source)["uri"] == str(data.resolve())
    assert {t.key: t.value for t in first.tags} == {"mlflow.data.context": "training"}
    np.savez(data, x_train=np.ones((4, 2)))
    (second,) = client.get_run(log_train(uri, "exp", fake_train(1),
                                         data=data)).inputs.dataset_inputs
    assert second.dataset.digest != first.dataset.digest
    gone = log_train(uri, "exp", fake_train(2), data=tmp_path / "deleted.npz")
    assert gone is not None and not client.get_run(gone).inputs.dataset_inputs


def test_runs_carry_the_code_version_once_given_and_none_outside_git(tmp_path, monkeypatch):
    from mlflow.tracking import MlflowClient

    from fedsafe.tracking import COMMIT_ENV, git_commit

    uri = f"sqlite:///{tmp_path}/mlflow.db"
    client = MlflowClient(uri)
    monkeypatch.setenv(COMMIT_ENV, "0123abcd")  # as the launcher sets it, once per run
    tags = client.get_run(log_train(uri, "exp", fake_train(0))).data.tags
    assert tags["mlflow.source.git.commit"] == "0123abcd"
    assert tags["mlflow.source.name"] == "Snakefile" and tags["mlflow.source.type"] == "LOCAL"
    monkeypatch.setenv(COMMIT_ENV, "")  # launched outside a git checkout
    tags = client.get_run(log_train(uri, "exp", fake_train(1))).data.tags
    assert "mlflow.source.git.commit" not in tags and tags["mlflow.source.name"] == "Snakefile"
    monkeypatch.delenv(COMMIT_ENV)
    assert git_commit(tmp_path) == ""  # not a git checkout: no commit, no error
    root = Path(__file__).resolve().parents[1]
    head = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True,
                          text=True)
    if head.returncode == 0:
        assert git_commit() == head.stdout.strip()


def test_the_link_opens_the_runs_table_of_the_experiment(tmp_path, capsys, monkeypatch):
    import yaml
    from conftest import base_config

    from fedsafe.cli import main
    from fedsafe.tracking import TrackerError, ui_link, where_to_look

    assert ui_link("7") == "http://127.0.0.1:5000/#/experiments/7?workflowType=machine_learning"
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    uri = f"sqlite:///{tmp_path / 'results' / 'mlflow.db'}"
    exp_id = experiment_of(uri, log_train(uri, "fedsafe-test", fake_train(0)))
    text = where_to_look(uri, "fedsafe-test", port=5001)
    assert f"`mlflow ui --backend-store-uri {uri} --port 5001`" in text
    assert text.endswith(ui_link(exp_id, "http://127.0.0.1:5001"))
    with pytest.raises(TrackerError, match="experiment: 'nope' is not in .* run the workflow"):
        where_to_look(uri, "nope")
    config = tmp_path / "config.yaml"  # the CLI: the config's store and experiment
    config.write_text(yaml.safe_dump(base_config(results_dir=str(tmp_path / "results"))))
    main(["ui-link", "--configfile", str(config)])
    assert capsys.readouterr().out.strip().endswith(ui_link(exp_id))
    config.write_text(yaml.safe_dump(base_config(results_dir=str(tmp_path / "results"),
                                                 experiment="never-ran")))
    with pytest.raises(SystemExit, match="'never-ran' is not in"):
        main(["ui-link", "--configfile", str(config)])


def experiment_of(uri: str, run_id: str) -> str:
    """The experiment id of a run."""
    from mlflow.tracking import MlflowClient

    return MlflowClient(uri).get_run(run_id).info.experiment_id


def test_relog_takes_each_run_span_and_data_from_the_job_files(tmp_path):
    import json

    import numpy as np
    from mlflow.tracking import MlflowClient

    from fedsafe.cli import relog

    results = tmp_path / "results"
    train = fake_train(0)
    train["train_seconds"] = 30.0
    f = results / "train" / train["cell"] / "train.json"
    f.parent.mkdir(parents=True)
    f.write_text(json.dumps(train))
    os.utime(f, (1_700_000_000, 1_700_000_000))  # the job ended then
    data = results / "data" / "mri" / "data.npz"
    data.parent.mkdir(parents=True)
    np.savez(data, x_train=np.zeros(3))
    uri = f"sqlite:///{results}/mlflow.db"
    jobs = [{"file": f, "model": f.with_name("model.pt"), "data": data, "attacks": []}]
    assert relog(jobs, {"summary": results / "summary.csv", "tables": [], "plots": []}, "exp",
                 uri) == 1
    (run,) = runs(uri)
    assert (run.info.start_time, run.info.end_time) == (1_699_999_970_000, 1_700_000_000_000)
    assert [d.dataset.name for d in MlflowClient(uri).get_run(run.info.run_id)
            .inputs.dataset_inputs] == ["mri"]


def test_the_launcher_logger_finds_job_files_in_the_jobs_folder(tmp_path):
    """Jobs name their files relative to Snakemake's folder; the launcher's logger runs there,
    so it uploads them and reads the data, wherever the launcher was started."""
    from mlflow.tracking import MlflowClient

    from fedsafe import tracking_queue as tq

    workdir, queue = tmp_path / "run", tmp_path / "run/.snakemake/queue"
    (workdir / "results/data/mri").mkdir(parents=True)
    (workdir / "results/data/mri/data.npz").write_bytes(b"prepared")
    (workdir / "results/model.pt").write_bytes(b"weights")
    uri = f"sqlite:///{workdir / 'results/mlflow.db'}"
    queue.mkdir(parents=True)
    env = {**os.environ, tq.ENV: str(queue)}
    job = ("from fedsafe.tracking_queue import log_call; from test_tracking import fake_train; "
           f"log_call('log_train', {uri!r}, 'exp', fake_train(0), ['results/model.pt'], "
           "data='results/data/mri/data.npz')")
    subprocess.run([sys.executable, "-c", job], cwd=workdir, env={
        **env, "PYTHONPATH": str(Path(__file__).parent)}, check=True, timeout=120)
    logger = tq.start_logger(queue, workdir)  # started from elsewhere, as `make run -C` would
    tq.stop_logger(logger, queue)  # it makes the queued call, then ends
    assert logger.returncode == 0
    (run,) = runs(uri)
    client = MlflowClient(uri)
    assert [a.path for a in client.list_artifacts(run.info.run_id)] == ["model.pt"]
    assert [d.dataset.name for d in client.get_run(run.info.run_id).inputs.dataset_inputs] == [
        "mri"]


# --- security: credentials, refused logins, images of the data --------------------------------

SECRET = "planted-Secret-4e1f"


@pytest.fixture(autouse=True)
def credentials_restored(monkeypatch):
    """without_credentials() exports the credentials it strips from a URI: each test starts
    without them, and what it exported is undone after it."""
    for var in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"):
        monkeypatch.setenv(var, "")  # records the variable's state for the undo
        monkeypatch.delenv(var)


@pytest.fixture
def refusing_server():
    """A local HTTP server that answers every request with 401 (or 403 for user `reader`), as an
    authenticated tracking server answers a wrong password."""
    import base64
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    class Refuse(BaseHTTPRequestHandler):
        def _refuse(self):
            reader = "Basic " + base64.b64encode(f"reader:{SECRET}".encode()).decode()
            status = 403 if self.headers.get("Authorization") == reader else 401
            self.send_response(status)
            self.send_header("Content-Type", "text/plain")
            self.end_headers()
            self.wfile.write(b"You are not authenticated.")

        do_GET = do_POST = _refuse

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Refuse)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()


@pytest.mark.parametrize("user", ["job", "reader"])
def test_refused_credentials_stop_at_once_and_say_what_to_set(refusing_server, monkeypatch,
                                                               caplog, user):
    from fedsafe.tracking import log_job

    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", user)
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", SECRET)
    train = fake_train(0)
    t0 = time.time()
    with caplog.at_level("WARNING", logger="fedsafe.tracking"):
        assert log_job(refusing_server, "exp", train["cell"], "train", train["spec"], {},
                       {}) is None
    assert time.time() - t0 < 10  # seven attempts with back-off took minutes
    (record,) = caplog.records  # one warning, no retries
    status = 403 if user == "reader" else 401
    assert f"HTTP {status}" in record.message and "not retried" in record.message
    assert "MLFLOW_TRACKING_USERNAME" in record.message
    assert "MLFLOW_TRACKING_PASSWORD" in record.message and "fedsafe relog" in record.message
    assert SECRET not in caplog.text


def test_probe_names_the_variables_or_the_uri(refusing_server, monkeypatch):
    from fedsafe.tracking import TrackerError, probe

    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "job")
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", SECRET)
    with pytest.raises(TrackerError, match="HTTP 401.*MLFLOW_TRACKING_USERNAME and "
                       "MLFLOW_TRACKING_PASSWORD"):
        probe(refusing_server)
    with pytest.raises(TrackerError, match=r"http://127\.0\.0\.1:9 does not answer") as err:
        probe(f"http://job:{SECRET}@127.0.0.1:9")
    assert SECRET not in str(err.value)
    probe("sqlite:///nowhere/mlflow.db")  # a local store needs no probe


def test_check_before_any_job(refusing_server, monkeypatch, tmp_path):
    """The workflow's onstart check: skipped when tracking is off, names the config key,
    refuses credentials in the config file, and redacts them from the environment's URI."""
    from fedsafe.tracking import TrackerError, check

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    config = {"results_dir": str(tmp_path), "mlflow": {"tracking_uri": refusing_server}}
    with pytest.raises(TrackerError, match=r"^mlflow\.tracking_uri: .*HTTP 401"):
        check(config)
    check({**config, "mlflow": {"tracking_uri": "http://127.0.0.1:9", "enabled": False}})
    check({"results_dir": str(tmp_path), "mlflow": {}})  # the local store
    with pytest.raises(TrackerError, match="credentials in a config file") as err:
        check({**config, "mlflow": {"tracking_uri": f"http://job:{SECRET}@127.0.0.1:9"}})
    assert SECRET not in str(err.value)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://job:{SECRET}@127.0.0.1:9")
    with pytest.raises(TrackerError, match=r"from MLFLOW_TRACKING_URI.*127\.0\.0\.1:9 does not "
                       "answer") as err:
        check(config)
    assert SECRET not in str(err.value)


def test_credentials_leave_the_uri_for_the_environment(monkeypatch, tmp_path):
    from fedsafe.tracking import redact, tracking_uri, without_credentials

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"https://job:{SECRET}@tracker:5000/x")
    assert tracking_uri({}, tmp_path) == "https://tracker:5000/x"
    assert os.environ["MLFLOW_TRACKING_USERNAME"] == "job"
    assert os.environ["MLFLOW_TRACKING_PASSWORD"] == SECRET  # MLflow still logs in
    assert without_credentials("sqlite:///a/b.db") == "sqlite:///a/b.db"
    text = redact(f"failed: https://job:{SECRET}@tracker:5000/x, password {SECRET}")
    assert SECRET not in text and "https://***@tracker:5000/x" in text


def test_secrets_reach_no_param_tag_or_log_line(tmp_path, monkeypatch, caplog):
    """A secret planted in the environment and in a URI appears in no MLflow param or tag and
    in no log line, even where a caller passes it along."""
    from mlflow.tracking import MlflowClient

    from fedsafe.tracking import log_job

    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", SECRET)
    monkeypatch.setenv("MLFLOW_TRACKING_TOKEN", SECRET + "-token")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    train = fake_train(0)
    spec = {**train["spec"], "note": f"http://job:{SECRET}@tracker:5000"}
    with caplog.at_level("INFO"):
        run_id = log_job(uri, "exp", train["cell"], "train", spec, {"accuracy": 0.5},
                         {"where": f"token {SECRET}-token"})
        log_job(f"http://job:{SECRET}@127.0.0.1:9", "exp", train["cell"], "train", spec, {},
                {}, attempts=1)
    run = MlflowClient(uri).get_run(run_id)
    stored = " ".join([*run.data.params.values(), *run.data.tags.values()])
    assert "http://***@tracker:5000" in stored
    assert SECRET not in stored and SECRET not in caplog.text


def fake_grids(tmp_path):
    cell = tmp_path / "attacks/mri/none/noise_0/seed_0"
    plots = tmp_path / "plots"
    files = {"grid": cell / "dlg_round1_reconstructions.png",
             "copy": plots / "reconstructions/mri__dlg_round1_reconstructions.png",
             "plot": plots / "frontier.png"}
    for f in files.values():
        f.parent.mkdir(parents=True, exist_ok=True)
        f.write_bytes(b"\x89PNG image")
    return files


@pytest.mark.parametrize("upload", [False, True])
def test_images_of_the_data_reach_mlflow_only_when_opted_in(tmp_path, upload):
    from mlflow.tracking import MlflowClient

    from fedsafe.tracking import log_summary

    uri = f"sqlite:///{tmp_path}/mlflow.db"
    files = fake_grids(tmp_path)
    train = fake_train(0)
    log_train(uri, "exp", train)
    attack_id = log_attack(uri, "exp", fake_attack(train), train["spec"], [files["grid"]],
                           upload_images=upload)
    summary_id = log_summary(uri, "exp", "hash", {"plots": [files["plot"], files["copy"]]},
                             upload_images=upload)
    client = MlflowClient(uri)
    attack = [a.path for a in client.list_artifacts(attack_id)]
    summary = [a.path for a in client.list_artifacts(summary_id, "plots")]
    assert attack == (["dlg_round1_reconstructions.png"] if upload else [])
    assert summary == (["plots/frontier.png", "plots/mri__dlg_round1_reconstructions.png"]
                       if upload else ["plots/frontier.png"])
    assert all(f.exists() for f in files.values())  # the results folder keeps them


def test_jobs_get_the_opt_in_from_the_config(monkeypatch, tmp_path):
    from fedsafe.jobs import tracking

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    config = {"results_dir": str(tmp_path), "mlflow": {"upload_images": True}}
    assert tracking(config)["upload_images"] is True
    assert not tracking({**config, "mlflow": {}}).get("upload_images")


def test_image_folders_readable_by_their_owner_only(tmp_path):
    sys.path.insert(0, str(Path(__file__).parent))
    from conftest import base_config

    from fedsafe import config_check
    from fedsafe.privacy_files import private_dir, protect_images

    existing = tmp_path / "existing"
    existing.mkdir(mode=0o755)
    assert stat.S_IMODE(private_dir(existing).stat().st_mode) == 0o700
    config = base_config(results_dir=str(tmp_path / "results"))
    config_check.validate(config)
    assert protect_images(config) is None  # no attack saves images: nothing to say
    config["attacks"]["inverting_gradients"] = {
        "options": {"observation": "gradient", "round": 1, "save_images": True}}
    config["datasets"]["mri"]["source"] = "brain_tumor_mri"  # as if real: named in the warning
    warning = protect_images(config)
    for folder in (tmp_path / "results/attacks", tmp_path / "results/plots"):
        assert stat.S_IMODE(folder.stat().st_mode) == 0o700
        assert str(folder) in warning
    assert "of mri (patients' images)" in warning and "upload_images: false" in warning
