"""Results: the tidy summary (missing and stale jobs listed), tables, plots, the Snakemake report
and the MLflow store seen through a real MLflow server's REST API."""

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pandas as pd
import pytest
from conftest import base_config, snakemake

from fedsafe import config_check
from fedsafe.files import write_json
from fedsafe.plots import write_plots
from fedsafe.results.render import convergence_section, write_tables
from fedsafe.results.summary import expected_jobs, summarise

pytestmark = pytest.mark.xdist_group("results")  # one worker: the tiny run is shared

EXTRA = [  # attacks of the families being built, in the attack JSON format
    ({"attack": "dlg", "type": "dlg", "options": {}}, "inversion",
     lambda n, s: [{"attack_param": "method", "attack_value": "dlg", "mse": 0.01 + n,
                    "psnr": 20 - 10 * n, "ssim": 0.9 - 0.4 * n - 0.01 * s,
                    "reconstruction_success_rate": 0.5, "label_accuracy": 1.0}]),
    ({"attack": "mia", "type": "mia", "options": {}}, "membership",
     lambda n, s: [{"attack_param": "reference", "attack_value": "loss", "auc": 0.7 - 0.1 * n,
                    "tpr_at_1pct_fpr": 0.05, "empirical_epsilon": 1.0}]),
]


def fake_grid(results, seeds=(0, 1)):
    """A 2-seed grid with every attack family, job files written in the jobs' real formats."""
    cfg = base_config(seeds=list(seeds),
                      defenses={"none": {}, "dp_sgd": {"noise_multipliers": [0.5, 1.0]}},
                      attacks={"fgsm": {"options": {"eps": [0.0, 0.05]}}, "pgd": {}})
    config_check.validate(cfg)
    cell = "{dataset}/{defense}/noise_{noise}/seed_{seed}"
    expected = expected_jobs(cfg, f"{results}/train/{cell}/train.json",
                                f"{results}/attacks/{cell}/{{attack}}.json")
    for job in expected:
        spec, n = job["spec"], job["spec"]["noise"]
        dp = spec["defense"] == "dp_sgd"
        write_json({"cell": job["cell"], "spec": spec, "clean_accuracy": 0.9 - 0.1 * n,
                    "epsilon": 8 / (n + 0.1) if dp else None, "delta": 1e-5 if dp else None,
                    "guarantee": "(eps, delta)-DP" if dp else "none", "rounds": 1,
                    "train_seconds": 3.0, "startup_seconds": 1.0, "history": []}, job["file"])
        for a in job["attacks"]:
            write_json({"cell": job["cell"], **a["spec"], "family": "evasion", "seconds": 2.0,
                        "rows": [{"attack_param": "eps", "attack_value": e, "clean_accuracy": 0.8,
                                  "robust_accuracy": 0.8 - e * (5 - n), "transfer_rate": 0.5,
                                  "attack_success_rate": e * (5 - n) + 0.01 * spec["seed"]}
                                 for e in (0.0, 0.05)]}, a["file"])
        for spec_, family, rows in EXTRA:
            file = f"{results}/attacks/{job['cell']}/{spec_['attack']}.json"
            job["attacks"].append({"attack": spec_["attack"], "file": file, "spec": spec_})
            write_json({"cell": job["cell"], **spec_, "family": family, "seconds": 1.0,
                        "rows": rows(n, spec["seed"])}, file)
    return expected


def test_summary_lists_missing_and_stale_jobs(tmp_path):
    expected = fake_grid(tmp_path)
    summary, missing = summarise(expected, "abc")
    assert missing.empty
    # 3 cells x 2 seeds x (fgsm 2 eps + pgd 2 eps + dlg + mia)
    assert len(summary) == 6 * 6
    for col in ["config_hash", "spec_hash", "dataset", "defense", "noise_multiplier", "seed",
                "attack", "family", "attack_param", "attack_value", "epsilon", "delta",
                "guarantee", "clean_accuracy", "eval_clean_accuracy", "robust_accuracy",
                "attack_success_rate", "ssim", "auc", "train_seconds", "attack_job_seconds"]:
        assert col in summary, col

    stale = json.loads(open(expected[0]["file"]).read())
    stale["spec"]["federation"]["rounds"] = 99  # written by an older config
    write_json(stale, expected[0]["file"])
    Path(expected[1]["attacks"][0]["file"]).unlink()  # a failed attack job
    summary, missing = summarise(expected, "abc")
    assert (missing["status"] == "stale").sum() == 1
    assert (missing["status"] == "missing").sum() == 1
    assert len(summary) == 6 * 6 - 6 - 2


def test_tables_and_plots(tmp_path):
    summary, missing = summarise(fake_grid(tmp_path / "r"), "abc")
    summary.to_csv(tmp_path / "summary.csv", index=False)
    missing.iloc[0:0].to_csv(tmp_path / "missing.csv", index=False)
    paths = write_tables(tmp_path / "summary.csv", tmp_path / "missing.csv", tmp_path / "t")
    fedsafe = paths["fedsafe"]["md"].read_text()
    assert "ASR fgsm" in fedsafe and "transfer pgd" in fedsafe and "eps=0 " not in fedsafe
    # two seeds that agree exactly, each with its sampling error: no cell of this table is
    # significantly best (they were bold on zero-width intervals before)
    assert "± " in fedsafe and "**" not in fedsafe
    medpfl = paths["medpfl"]["md"].read_text()
    assert "SSIM dlg" in medpfl and "**0.495 ± 0.064**" in medpfl  # lowest SSIM (sigma 1), 95% t interval
    tex = paths["tradeoff"]["tex"].read_text()
    assert r"\toprule" in tex and r"\bfseries" in tex and "membership AUC" in tex
    assert "<table" in paths["tradeoff"]["html"].read_text()
    assert "All expected jobs" in (tmp_path / "t" / "comparison.md").read_text()

    pngs = write_plots(tmp_path / "summary.csv", tmp_path / "plots")
    assert {p.stem for p in pngs} == {"accuracy_vs_noise", "robust_vs_eps", "ssim_vs_noise",
                                      "frontier"}
    assert all(p.with_suffix(".svg").stat().st_size > 5000 for p in pngs)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """The real workflow on a tiny 2-seed grid, 2 jobs at a time (about a minute)."""
    workdir = tmp_path_factory.mktemp("tiny")
    cfg = base_config(seeds=[0, 1])
    snakemake(["--cores", "2"], cfg, workdir)
    return workdir, cfg


@pytest.mark.slow
def test_workflow_results_report(tiny_run):
    workdir, cfg = tiny_run
    results = workdir / "results"
    summary = pd.read_csv(results / "summary.csv")
    # per seed: the attack's 2 eps rows and the per-sample worst case's 2 (fedsafe.robustness)
    assert len(summary[summary["attack"] == "fgsm"]) == 2 * 2 and set(summary["seed"]) == {0, 1}
    assert len(summary[summary["attack"] == "worst_case"]) == 2 * 2
    assert summary["spec_hash"].nunique() == 2
    assert pd.read_parquet(results / "summary.parquet").shape == summary.shape
    assert pd.read_csv(results / "missing.csv").empty
    assert "0.05" in (results / "tables" / "fedsafe.md").read_text()
    assert (results / "plots" / "robust_vs_eps.svg").exists()
    snakemake(["--report", "results/report.html"], cfg, workdir)
    report = (results / "report.html").read_text()
    assert "frontier.png" in report and "tradeoff.html" in report


@pytest.mark.slow
def test_mlflow_server_lists_every_cell(tiny_run):
    workdir, cfg = tiny_run
    port = _free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port),
         "--workers", "1", "--backend-store-uri", f"sqlite:///{workdir}/results/mlflow.db"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(120):
            try:
                urllib.request.urlopen(f"{base}/health", timeout=2)
                break
            except OSError:
                time.sleep(0.5)

        def post(path, body):
            req = urllib.request.Request(f"{base}/api/2.0/mlflow/{path}", json.dumps(body).encode(),
                                         {"Content-Type": "application/json"})
            return json.load(urllib.request.urlopen(req, timeout=30))

        exp = json.load(urllib.request.urlopen(
            f"{base}/api/2.0/mlflow/experiments/get-by-name?experiment_name={cfg['experiment']}"))
        runs = post("runs/search", {"experiment_ids": [exp["experiment"]["experiment_id"]],
                                    "max_results": 1000})["runs"]
    finally:  # the server's workers are in its process group: stop them all
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()

    def tags(run):
        return {t["key"]: t["value"] for t in run["data"].get("tags", [])}

    by_job = {(tags(r)["fedsafe.cell"], tags(r)["fedsafe.job"]): r for r in runs}
    assert len(by_job) == len(runs) == 2 + 2 + 1  # train + attack per seed, and the summary
    for seed in (0, 1):
        cell = f"mri/none/noise_0/seed_{seed}"
        train, attack = by_job[(cell, "train")], by_job[(cell, "attack:fgsm")]
        params = {p["key"]: p["value"] for p in train["data"]["params"]}
        assert params["seed"] == str(seed) and params["federation.rounds"] == "1"
        assert {m["key"] for m in train["data"]["metrics"]} >= {"clean_accuracy", "test_accuracy"}
        assert {m["key"] for m in attack["data"]["metrics"]} >= {"robust_accuracy/eps_0.05"}
        assert tags(attack)["mlflow.parentRunId"] == train["info"]["run_id"]
        assert tags(train)["spec_hash"] and tags(attack)["attack"] == "fgsm"


def test_convergence_section_names_undefended_cells_still_moving():
    rows = [{"dataset": "d", "defense": d, "noise_multiplier": n, "seed": s,
             "last_round_change": c}
            for d, n, changes in (("none", 0.0, (0.002, 0.004)), ("weight_noise", 5e-5,
                                                                    (0.03, 0.001)))
            for s, c in enumerate(changes)]
    text = convergence_section(pd.DataFrame(rows))
    assert "every undefended cell settled" in text and "0.030" in text  # worst seed shown
    assert "| 5e-05 " in text  # a small noise level as written, not rounded to 0.000
    rows[1]["last_round_change"] = 0.012
    assert "still moving" in convergence_section(pd.DataFrame(rows))
    assert convergence_section(pd.DataFrame([{"dataset": "d"}])) == ""
