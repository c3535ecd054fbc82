"""A hard kill of the whole workflow (SIGKILL, as an out-of-memory kill or a lost login shell
delivers it) during a training job: the README's run command (`make run`) finishes the grid,
redoing only the killed job, with one MLflow run per job."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from conftest import ROOT, base_config

from fedsafe import launch

pytestmark = pytest.mark.xdist_group("resume")


def make_run(workdir: Path, cfg: dict, **popen):
    """`make run` with this test's grid, run in `workdir` (the venv is already installed)."""
    cfg = {**cfg, "results_dir": str(workdir / "results")}
    (workdir / "config.yaml").write_text(yaml.safe_dump(cfg))
    args = f"--snakefile {ROOT / 'Snakefile'} --directory {workdir}"
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    return subprocess.Popen(
        ["make", "-s", "-C", str(ROOT), "-o", "install", "run", "CORES=1",
         f"BIN={Path(sys.executable).parent}", f"CONFIG={workdir / 'config.yaml'}", f"ARGS={args}"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **popen)


def _mtimes(paths):
    return {p: p.stat().st_mtime_ns for p in paths}


@pytest.mark.slow
def test_sigkill_during_training_then_make_run_resumes(tmp_path):
    cfg = base_config(defenses={"none": {}, "weight_noise": {"noise_multipliers": [0.01]}},
                      federation={"rounds": 3, "batch_size": 32})
    results = tmp_path / "results"
    proc = make_run(tmp_path, cfg, start_new_session=True)
    killed = None
    deadline = time.time() + 300
    while killed is None and time.time() < deadline and proc.poll() is None:
        done = {p.parent for p in results.glob("train/**/train.json")}
        logs = list(results.glob("logs/train/**/*.log"))
        for log in logs:  # a training job that has started and not finished
            cell = results / "train" / log.relative_to(results / "logs/train").with_suffix("")
            if done and cell not in done:
                os.killpg(proc.pid, signal.SIGKILL)  # the workflow and all its jobs
                killed = cell
                break
        time.sleep(0.05)
    assert killed is not None, proc.communicate()[0]
    proc.wait()
    time.sleep(0.5)
    assert not (killed / "train.json").exists()
    assert any((tmp_path / ".snakemake/locks").iterdir()), "the kill left no lock"
    kept = _mtimes([*results.glob("data/*/*"), *results.glob("train/**/*.pt"),
                    *results.glob("attacks/**/*.json")])

    out = make_run(tmp_path, cfg).communicate()[0]
    assert (results / "summary.csv").exists(), out
    assert "removing the lock" in out
    assert _mtimes(kept) == kept, "a finished job was redone"
    assert (killed / "train.json").exists()

    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{results / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name(cfg["experiment"]).experiment_id])
    jobs = sorted(r.data.tags["fedsafe.job"] for r in runs)
    assert jobs == ["attack:fgsm"] * 2 + ["summary"] + ["train"] * 2


def test_a_live_run_keeps_its_lock(tmp_path):
    """The launcher removes a lock only when no snakemake runs in the folder."""
    (tmp_path / ".snakemake/locks").mkdir(parents=True)
    (tmp_path / ".snakemake/locks/0.input.lock").write_text("x")
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)", "snakemake"],
                            cwd=tmp_path)
    try:
        time.sleep(0.2)
        assert launch.running_in(tmp_path.resolve()) == [live.pid]
        with pytest.raises(SystemExit, match=f"already running .*{live.pid}"):
            launch.unlock_if_stale(["--directory", str(tmp_path)])
    finally:
        live.kill()
        live.wait()
    assert launch.running_in(tmp_path.resolve()) == []


def test_a_stale_lock_is_removed(tmp_path):
    cfg_path = tmp_path / "config.yaml"
    cfg_path.write_text(yaml.safe_dump({**base_config(), "results_dir": str(tmp_path / "r")}))
    (tmp_path / ".snakemake/locks").mkdir(parents=True)
    (tmp_path / ".snakemake/locks/0.input.lock").write_text("x")
    assert launch.unlock_if_stale(["--snakefile", str(ROOT / "Snakefile"), "--directory",
                                   str(tmp_path), "--configfile", str(cfg_path)])
    locks = tmp_path / ".snakemake/locks"
    assert not (locks.exists() and any(locks.iterdir()))
    assert not launch.unlock_if_stale(["--directory", str(tmp_path)])  # nothing left to remove
