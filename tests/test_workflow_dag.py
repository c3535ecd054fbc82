"""The DAG: exact job counts per rule, and training reused by every attack."""

import pytest
import yaml
from conftest import ROOT, base_config, job_counts, snakemake

# No xdist group: every test dry-runs its own folder, so they spread over the workers (together
# they are about 150 s of one core, the longest stretch of `make test`).


def test_dry_run_job_counts(workdir):
    cfg = base_config(
        datasets={"mri": {"source": "synthetic_brain_mri"},
                  "path": {"source": "synthetic_pathology"}},
        defenses={"none": {}, "weight_noise": {"noise_multipliers": [0.01, 0.02, 0.03]},
                  "dp_sgd": {"noise_multipliers": [0.5, 1.0]}},
        attacks={"fgsm": {}, "pgd": {}, "pgd_strong": {"type": "pgd", "options": {"steps": 20}}},
    )
    counts = job_counts(snakemake(["-n"], cfg, workdir).stdout)
    assert counts == {"all": 1, "prepare_data": 2, "train": 12, "attack": 36, "aggregate": 1,
                      "tables": 1, "claims": 1, "plots": 1}


def test_seeds_multiply_training_not_data(workdir):
    cfg = base_config(seeds=[0, 1, 2], defenses={"none": {}, "dp_sgd": {"noise_multipliers": [1]}})
    counts = job_counts(snakemake(["-n"], cfg, workdir).stdout)
    assert counts["prepare_data"] == 1
    assert counts["train"] == 6
    assert counts["attack"] == 6


@pytest.mark.parametrize("name, counts", [
    # the default grid: 2 datasets x (1 + 1 + 1 + 1) trainings x 3 seeds; 4 attacks each, the
    # inversion on brain_mri's cells only, and the privacy audit of its one audited cell per seed
    ("config", {"prepare_data": 2, "train": 24, "attack": 111}),
    # the same cells over 10 seeds
    ("published", {"prepare_data": 2, "train": 80, "attack": 370}),
    # 3 datasets x (1 + 3 + 1 + 3) trainings x 3 seeds; 4 attacks each
    ("fedsafe", {"prepare_data": 3, "train": 72, "attack": 288}),
    # 1 dataset x (1 + 4) x 3 seeds; 5 attacks each
    ("medpfl", {"prepare_data": 1, "train": 15, "attack": 75}),
    # 4 datasets x (1+3+4+3+3+1+1+1+3+1 = 21) x 3 seeds; 14 attacks each, the audit on the
    # 6 dp_sgd and dp_fedavg cells; reference models once per dataset and seed
    ("full", {"prepare_data": 4, "train": 252, "attack": 3600, "reference": 12}),
    # every defense: 2 datasets x (20 cells + 2 privacy-budget cells = 22) x 3 seeds; 5 attacks
    # on each brain_mri cell, 1 on each mri_few cell, the audit on the 2 dp_sgd cells per seed
    ("defenses", {"prepare_data": 2, "train": 132, "attack": 402}),
    # 1 dataset x (1 + 3 + 2); 5 attacks each, the audit on the 5 DP cells
    ("audit", {"prepare_data": 1, "train": 6, "attack": 35, "reference": 1}),
])
def test_paper_configs_dry_run(name, counts, workdir):
    """The reproduction configs expand to their documented job counts (hand-downloaded data is
    stood in by empty folders: the dry run only checks that they exist). The default
    config/config.yaml is present, as in a checkout: a --configfile replaces it, not merges."""
    import yaml
    from conftest import ROOT

    for folder in ("data/pathology", "data/brain_tumor_mri", "data/medmnist"):
        (workdir / folder).mkdir(parents=True)
    (workdir / "config").symlink_to(ROOT / "config")
    cfg = yaml.safe_load((ROOT / f"config/{name}.yaml").read_text())
    got = job_counts(snakemake(["-n"], cfg, workdir).stdout)
    assert {k: got[k] for k in counts} == counts
    assert got["aggregate"] == got["tables"] == 1


def test_missing_hand_downloaded_data_stops_before_any_job(workdir):
    import yaml
    from conftest import ROOT

    cfg = yaml.safe_load((ROOT / "config/medpfl.yaml").read_text())
    proc = snakemake(["-n"], cfg, workdir, check=False)
    assert proc.returncode != 0
    out = proc.stdout + proc.stderr
    assert "datasets.brain_mri.options.root: data/brain_tumor_mri not found" in out
    assert "brain-tumor-mri-dataset" in out


def test_published_grid_is_the_default_grid_over_more_seeds():
    """The README's headline verdicts come from config/published.yaml: the default grid's cells,
    recipe and attacks, only with 10 seeds (and its own experiment and results folder)."""
    load = lambda name: yaml.safe_load((ROOT / "config" / f"{name}.yaml").read_text())  # noqa: E731
    default, published = load("config"), load("published")
    assert len(published["seeds"]) >= 10 and set(default["seeds"]) < set(published["seeds"])
    for key in ("seeds", "experiment", "results_dir"):
        default.pop(key), published.pop(key)
    assert published == default


def test_test_grid_runs_from_its_folder_as_ci_runs_it(tmp_path):
    """CI runs `snakemake --directory .test` from the repository root, with no --configfile: the
    workflow's default `config/config.yaml` is then read inside .test/, the tiny grid the tests
    start from (base_config), not the default grid. On a copy, so the checkout's .test/ stays
    clean."""
    import shutil
    import subprocess
    import sys

    shutil.copytree(ROOT / ".test" / "config", tmp_path / ".test" / "config")
    proc = subprocess.run([sys.executable, "-m", "snakemake", "-n", "--snakefile",
                           str(ROOT / "Snakefile"), "--directory", str(tmp_path / ".test")],
                          capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert job_counts(proc.stdout) == {"all": 1, "prepare_data": 1, "train": 1, "attack": 1,
                                       "aggregate": 1, "tables": 1, "claims": 1, "plots": 1}


def test_dry_run_lists_every_file_the_jobs_write(workdir):
    """Every file a job writes is a declared output (issue 23): the audited replicate's canaries,
    the clients' logs, the reference models' info, an attack's image folder; nothing is found by
    globbing after the fact."""
    cfg = base_config(
        defenses={"none": {}, "dp_sgd": {"noise_multipliers": [1.0]}},
        audit={"defenses": ["dp_sgd"], "canaries": 100},
        reference_models={"n": 2},
        attacks={"inversion": {"type": "inverting_gradients",
                               "options": {"observation": "gradient", "iterations": 2,
                                           "save_images": True}},
                 "rmia": {"type": "mia_rmia", "options": {"n_samples": 30}},
                 "audit": {"type": "privacy_audit"}},
        mlflow={"enabled": False})
    listed = snakemake(["-n", "--summary"], cfg, workdir).stdout
    for replicate in ("mri/none/noise_0/seed_0", "mri/dp_sgd/noise_1/seed_0"):
        for name in ("canaries.npz", "clients", "model.pt", "observed.pt"):
            assert f"results/train/{replicate}/{name}\t" in listed, name
        assert f"results/attacks/{replicate}/inversion\t" in listed
    assert "results/reference/mri/seed_0/reference.json\t" in listed
