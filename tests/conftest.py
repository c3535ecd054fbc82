import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))


def base_config(**overrides) -> dict:
    """A tiny but complete grid, fast enough for end-to-end tests."""
    cfg = {
        "experiment": "fedsafe-test",
        "seeds": [0],
        "datasets": {"mri": {"source": "synthetic_brain_mri",
                             "options": {"image_size": 16, "n_samples": 300},
                             "n_clients": 2}},
        "defenses": {"none": {}},
        "attacks": {"fgsm": {"options": {"eps": [0.0, 0.05], "n_samples": 60}}},
        "federation": {"rounds": 1, "batch_size": 32},
    }
    cfg.update(overrides)
    return cfg


def snakemake(args: list[str], config: dict, workdir: Path, check: bool = True):
    """Run the real workflow on `config`, with results under `workdir`."""
    config = {**config, "results_dir": str(workdir / "results")}
    cfg_path = workdir / "config.yaml"
    cfg_path.write_text(yaml.safe_dump(config))
    cmd = [sys.executable, "-m", "snakemake", "--snakefile", str(ROOT / "Snakefile"),
           "--directory", str(workdir), "--configfile", str(cfg_path), *args]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=workdir)
    if check and proc.returncode != 0:
        raise AssertionError(f"snakemake failed:\n{proc.stdout}\n{proc.stderr}")
    return proc


def job_counts(dry_run_output: str) -> dict[str, int]:
    """Parse the 'Job stats' table that `snakemake -n` prints."""
    counts, in_table = {}, False
    for line in dry_run_output.splitlines():
        parts = line.split()
        if parts[:2] == ["job", "count"]:
            in_table = True
            continue
        if in_table and len(parts) == 2 and parts[1].isdigit():
            if parts[0] == "total":
                break
            counts[parts[0]] = int(parts[1])
    return counts


@pytest.fixture
def workdir(tmp_path):
    return tmp_path
