"""End to end on a tiny grid: real data, a real Flower federation, real attacks, real MLflow."""

import shutil

import pandas as pd
import pytest
import yaml
from conftest import base_config, job_counts, snakemake

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("e2e")]


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("e2e")
    cfg = base_config()
    snakemake(["--cores", "2"], cfg, workdir)
    return workdir, cfg


def test_outputs_and_mlflow_runs(finished_run):
    workdir, cfg = finished_run
    summary = pd.read_csv(workdir / "results/summary.csv")
    # one row per (cell, attack, eps), and per eps the per-sample worst case over the attacks
    n_eps = len(cfg["attacks"]["fgsm"]["options"]["eps"])
    assert sorted(summary["attack"]) == ["fgsm"] * n_eps + ["worst_case"] * n_eps
    assert (summary["robust_accuracy"] <= summary["eval_clean_accuracy"] + 1e-9).all()
    eps0 = summary[summary["attack_value"] == 0]
    assert (eps0["robust_accuracy"] == eps0["eval_clean_accuracy"]).all()
    assert summary["epsilon"].isna().all()  # defense `none` has no formal guarantee
    assert (workdir / "results/tables/comparison.md").read_text().count("|") > 10

    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{workdir / 'results/mlflow.db'}")
    exp = client.get_experiment_by_name(cfg["experiment"])
    runs = client.search_runs([exp.experiment_id])
    assert sorted(r.data.tags["fedsafe.job"] for r in runs) == ["attack:fgsm", "summary", "train"]
    train = next(r for r in runs if r.data.tags["fedsafe.job"] == "train")
    attack = next(r for r in runs if r.data.tags["fedsafe.job"] == "attack:fgsm")
    assert attack.data.tags["mlflow.parentRunId"] == train.info.run_id
    assert "clean_accuracy" in train.data.metrics


def test_attack_option_change_reruns_only_attacks(finished_run, tmp_path):
    workdir, cfg = finished_run
    assert job_counts(snakemake(["-n"], cfg, workdir).stdout) == {}  # nothing left to do
    changed = yaml.safe_load(yaml.safe_dump(cfg))
    changed["attacks"]["fgsm"]["options"]["n_samples"] = 50
    counts = job_counts(snakemake(["-n"], changed, workdir).stdout)
    assert counts == {"attack": 1, "aggregate": 1, "tables": 1, "claims": 1, "plots": 1, "all": 1}


def test_same_seed_same_numbers(finished_run, tmp_path):
    workdir, cfg = finished_run
    snakemake(["--cores", "2"], cfg, tmp_path)
    a = pd.read_csv(workdir / "results/summary.csv")
    b = pd.read_csv(tmp_path / "results/summary.csv")
    numbers = ["clean_accuracy", "robust_accuracy", "attack_success_rate", "eval_clean_accuracy"]
    pd.testing.assert_frame_equal(a[numbers], b[numbers])


def test_rerun_after_crash_resumes(finished_run, tmp_path):
    """A crash during an attack job leaves neither its file nor anything downstream: a rerun
    redoes only that job and what follows, never the training."""
    workdir, cfg = finished_run
    run_dir = tmp_path / "copy"
    shutil.copytree(workdir, run_dir, symlinks=True)
    model = next((run_dir / "results/train").rglob("model.pt"))
    before = model.stat().st_mtime_ns
    next((run_dir / "results/attacks").rglob("*.json")).unlink()
    for downstream in ("tables", "plots"):
        shutil.rmtree(run_dir / "results" / downstream)
    (run_dir / "results/summary.csv").unlink()
    counts = job_counts(snakemake(["-n"], cfg, run_dir).stdout)
    assert counts == {"attack": 1, "aggregate": 1, "tables": 1, "claims": 1, "plots": 1, "all": 1}
    snakemake(["--cores", "2"], cfg, run_dir)
    assert model.stat().st_mtime_ns == before


def test_tracking_settings_never_rerun_jobs(finished_run):
    """Pointing the jobs at a tracking server, renaming the experiment or turning tracking off
    changes no result: a dry run schedules nothing."""
    workdir, cfg = finished_run
    for change in ({"mlflow": {"tracking_uri": "http://tracker.example:5000"}},
                   {"experiment": "renamed"}, {"mlflow": {"enabled": False}}):
        assert job_counts(snakemake(["-n"], {**cfg, **change}, workdir).stdout) == {}, change
