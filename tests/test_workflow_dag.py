"""The DAG: exact job counts per rule, and training reused by every attack."""

import pytest
from conftest import base_config, job_counts, snakemake

pytestmark = pytest.mark.xdist_group("dag")


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
                      "tables": 1}


def test_seeds_multiply_training_not_data(workdir):
    cfg = base_config(seeds=[0, 1, 2], defenses={"none": {}, "dp_sgd": {"noise_multipliers": [1]}})
    counts = job_counts(snakemake(["-n"], cfg, workdir).stdout)
    assert counts["prepare_data"] == 1
    assert counts["train"] == 6
    assert counts["attack"] == 6
