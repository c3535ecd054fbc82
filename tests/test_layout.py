"""A reorganisation keeps behaviour: a small grid touching every registry (a dataset, a model,
three defenses, evasion, inversion and membership attacks) gives the same summary with this code
and with the code before the layout changes of issue 23 (one registry shape, the results package,
the cell/replicate names), both run here, on the same machine, at one thread per job.

BASE is the last commit before those changes. A later change that alters results on purpose
moves BASE to the commit before it (and says so in its message)."""

import os
import subprocess
import sys

import pandas as pd
import pytest
import yaml
from conftest import ROOT, base_config

from fedsafe.compare import compare

BASE = "18a139c"  # main before the layout changes of issue 23
METRICS = ("clean_accuracy", "test_loss", "robust_accuracy", "attack_success_rate", "ssim",
           "auc", "epsilon")


def _grid(code, config: dict, workdir) -> pd.DataFrame:
    workdir.mkdir()
    config = {**config, "results_dir": str(workdir / "results")}
    (workdir / "config.yaml").write_text(yaml.safe_dump(config))
    env = {**os.environ, "PYTHONPATH": str(code / "src"), "OMP_NUM_THREADS": "1"}
    p = subprocess.run([sys.executable, "-m", "snakemake", "--snakefile", str(code / "Snakefile"),
                        "--directory", str(workdir), "--configfile", str(workdir / "config.yaml"),
                        "--cores", "2", "--set-threads", "train=1", "attack=1", "--",
                        str(workdir / "results" / "summary.csv")],
                       capture_output=True, text=True, cwd=workdir, env=env)
    assert p.returncode == 0, f"{code}: snakemake failed\n{p.stdout[-3000:]}\n{p.stderr[-3000:]}"
    return pd.read_csv(workdir / "results" / "summary.csv")


@pytest.mark.slow
def test_the_layout_changes_keep_every_number(tmp_path):
    has_base = subprocess.run(["git", "-C", str(ROOT), "cat-file", "-e", f"{BASE}^{{commit}}"],
                              capture_output=True).returncode == 0
    if not has_base:
        pytest.skip(f"commit {BASE} is not in this clone (shallow?): nothing to compare with")
    old = tmp_path / "base"
    subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(old), BASE],
                   check=True, capture_output=True)
    try:
        cfg = base_config(
            mlflow={"enabled": False},
            defenses={"none": {}, "weight_noise": {"noise_multipliers": [0.02]},
                      "dp_sgd": {"noise_multipliers": [1.0]}},
            attacks={"fgsm": {"options": {"eps": [0.05], "n_samples": 40}},
                     "pgd": {"options": {"eps": [0.05], "n_samples": 20, "steps": 3}},
                     "inverting_gradients": {"options": {
                         "observation": "gradient", "n_batches": 1, "iterations": 10,
                         "round": 1}},
                     "mia_loss": {"options": {"n_samples": 40}}})
        before = _grid(old, cfg, tmp_path / "before")
        after = _grid(ROOT, cfg, tmp_path / "after")
    finally:
        subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(old)],
                       capture_output=True)
    assert len(before) == len(after) > 0
    moved = compare(before, after, atol=0.0)
    assert moved.empty, moved.to_string()
    checked = [m for m in METRICS if m in before]
    assert {"clean_accuracy", "robust_accuracy", "ssim", "auc", "epsilon"} <= set(checked)
    for column in checked:
        a, b = before[column], after[column]
        assert a.equals(b), f"{column}: {a.tolist()} != {b.tolist()}"
