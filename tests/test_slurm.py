"""A real SLURM (start one with `sudo .ci/slurm-up.sh`): the tiny grid through
`snakemake --profile slurm`, a job cancelled with scancel, and a rerun that finishes the grid
without redoing finished jobs. Skipped when no SLURM controller answers. About 3-4 minutes."""

import os
import re
import shutil
import subprocess
import sys
import time

import pandas as pd
import pytest
import yaml
from conftest import ROOT, base_config

pytestmark = [pytest.mark.slurm, pytest.mark.slow, pytest.mark.xdist_group("slurm")]


def _sinfo(fmt: str) -> str:
    return subprocess.run(["sinfo", "-h", "-o", fmt], capture_output=True, text=True,
                          timeout=15, check=True).stdout.strip()


def _cluster() -> dict:
    """Default partition, CPUs and memory (MB) of the first node; skip without SLURM."""
    if shutil.which("sinfo") is None:
        pytest.skip("no SLURM here: `sinfo` not on PATH (start one with .ci/slurm-up.sh)")
    try:
        parts = _sinfo("%P").split()
        cpus, mem = _sinfo("%c %m").splitlines()[0].split()
    except (subprocess.SubprocessError, IndexError, ValueError) as err:
        pytest.skip(f"no SLURM controller answers ({err}); start one with .ci/slurm-up.sh")
    default = next((p for p in parts if p.endswith("*")), parts[0]).rstrip("*")
    return {"partition": default, "cpus": int(cpus), "mem": int(mem.rstrip("+"))}


def _profile_run(workdir, config, env, extra=(), wait=True):
    """`snakemake --profile slurm` from the repo root, as a user types it, on `config`."""
    cfg_path = workdir / "config.yaml"
    cfg_path.write_text(yaml.safe_dump({**config, "results_dir": str(workdir / "results")}))
    cmd = [sys.executable, "-m", "snakemake", "--profile", "slurm", "--directory", str(workdir),
           "--configfile", str(cfg_path),
           "--slurm-init-seconds-before-status-checks", "1", *extra]  # first check after 1 s
    log = open(workdir / f"run{len(list(workdir.glob('run*.log')))}.log", "w")
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, text=True,
                            env=env)
    proc.log = log.name
    if wait:
        proc.wait(timeout=600)
    return proc


def _read(path) -> str:
    return open(path).read()


def _run_id(log_path) -> str | None:
    m = re.search(r"SLURM run ID: (\S+)", _read(log_path))
    return m.group(1) if m else None


def _submitted(log_path) -> list[str]:
    """Relative paths of the SLURM logs of every job this run submitted."""
    return re.findall(r"submitted with SLURM jobid (\d+) \(log: \S*/slurm_logs/(\S+?)\)",
                      _read(log_path))


def test_grid_through_slurm_cancel_and_rerun(tmp_path):
    cluster = _cluster()
    if cluster["cpus"] < 2:
        pytest.skip("the train rule needs 2 CPUs on one SLURM node")
    env = {**os.environ, "SLURM_PARTITION": cluster["partition"],
           "FEDSAFE_GPUS": "0"}  # no GPU on the test node
    extra = []
    if cluster["mem"] < 9000:  # the profile asks 8 GB for training: shrink for small nodes
        extra = ["--set-resources", "train:mem_mb=2000", "attack:mem_mb=1000",
                 "prepare_data:mem_mb=1000", "aggregate:mem_mb=1000", "tables:mem_mb=1000"]
    cfg = base_config(attacks={
        "fgsm": {"options": {"eps": [0.0, 0.05], "n_samples": 60}},
        "pgd": {"options": {"eps": [0.05], "steps": 2, "n_samples": 60}},
    })
    model = tmp_path / "results/train/mri/none/noise_0/seed_0/model.pt"
    data = tmp_path / "results/data/mri/data.npz"
    run_ids, first = [], None
    try:
        # 1. First run, no retries: cancel the (grouped) attack job once it runs.
        first = _profile_run(tmp_path, cfg, env, [*extra, "--retries", "0"], wait=False)
        cancelled, deadline = None, time.time() + 400
        while first.poll() is None and time.time() < deadline and cancelled is None:
            time.sleep(1)
            run_id = _run_id(first.log)
            if not run_id or not model.exists():
                continue
            queue = subprocess.run(["squeue", "-h", "--name", run_id, "-o", "%i|%T|%k"],
                                   capture_output=True, text=True).stdout.split()
            running = [q.split("|")[0] for q in queue if "|RUNNING|" in q and "attack" in q]
            if running:
                time.sleep(3)  # let it start its work
                subprocess.run(["scancel", running[0]], check=True)
                cancelled = running[0]
        run_ids.append(_run_id(first.log))
        assert cancelled, f"no attack job seen running:\n{_read(first.log)[-3000:]}"
        assert first.wait(timeout=300) != 0, "the run should fail: one job was cancelled"
        assert not (tmp_path / "results/summary.csv").exists()
        model_mtime, data_mtime = model.stat().st_mtime_ns, data.stat().st_mtime_ns

        # 2. Rerun with the profile as it is: only the cancelled part and the report run.
        second = _profile_run(tmp_path, cfg, env, extra)
        run_ids.append(_run_id(second.log))
        assert second.returncode == 0, _read(second.log)[-5000:]
        assert model.stat().st_mtime_ns == model_mtime, "training was redone"
        assert data.stat().st_mtime_ns == data_mtime, "data preparation was redone"

        # Every job went through sbatch: one SLURM log per submission, nothing ran locally.
        jobs1, jobs2 = _submitted(first.log), _submitted(second.log)
        kinds = lambda jobs: sorted(p.split("/")[0] for _, p in jobs)  # noqa: E731
        assert kinds(jobs1) == ["group_attacks_attack", "rule_prepare_data", "rule_train"]
        assert kinds(jobs2)[0] == "group_attacks_attack"  # then the report group(s)
        assert all(k.startswith("group_report") for k in kinds(jobs2)[1:]), kinds(jobs2)
        assert cancelled in [i for i, _ in jobs1]
        for jobid, path in jobs2:
            assert (tmp_path / ".snakemake/slurm_logs" / path.replace("%j", jobid)).exists()
        for log in (first.log, second.log):
            assert re.findall(r"^localrule (\w+):", _read(log), re.M) in ([], ["all"])

        # The grid is complete: one row per (attack, eps), nothing missing.
        summary = pd.read_csv(tmp_path / "results/summary.csv")
        assert sorted(summary["attack"]) == ["fgsm", "fgsm", "pgd", "worst_case", "worst_case"]
        missing = tmp_path / "results/missing.csv"
        assert not missing.exists() or pd.read_csv(missing).empty
        assert (tmp_path / "results/tables/comparison.md").exists()
    finally:  # leave no job of ours behind
        if first is not None:
            if first.poll() is None:
                first.terminate()
            run_ids.append(_run_id(first.log))
        for run_id in set(filter(None, run_ids)):
            subprocess.run(["scancel", "--name", run_id], capture_output=True)
