"""Item 7: DAG construction for a paper-size grid: `snakemake -n --quiet` on a generated config
with 5,000+ jobs (synthetic sources, many datasets x defense multipliers x seeds x attacks).
Nothing is run; the config check runs at parse time, as in a real run."""
from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml
from common import ROOT, median, table, verdict, write

TARGET = 30.0


def grid_config(n_datasets: int, n_noise: int, n_seeds: int, results: str) -> dict:
    base = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())
    datasets = {}
    for i in range(n_datasets):
        src = ["synthetic_pathology", "synthetic_brain_mri"][i % 2]
        datasets[f"ds{i}"] = {"source": src, "options": {"image_size": 32, "n_samples": 2000},
                              "n_clients": 3 + i % 3,
                              "partition": {"scheme": "dirichlet", "alpha": 0.5 + i}}
    mults = lambda lo, hi: [round(lo * (hi / lo) ** (j / max(1, n_noise - 1)), 6)
                            for j in range(n_noise)]
    base.update(
        experiment="fedsafe-bench-dag", results_dir=results, seeds=list(range(n_seeds)),
        datasets=datasets,
        defenses={"none": {},
                  "weight_noise": {"noise_multipliers": mults(0.001, 0.1),
                                   "options": {"uplink": True, "downlink": True}},
                  "dp_sgd": {"noise_multipliers": mults(0.3, 3.0),
                             "options": {"clip_norm": 1.0, "delta": 1.0e-5}}},
        attacks={"fgsm": {"options": {"eps": [0.01, 0.03], "n_samples": 300}},
                 "pgd": {"options": {"eps": [0.01, 0.03], "steps": 6, "n_samples": 300}},
                 "mia_loss": {"options": {}}},
    )
    return base


def dry_run(cfg: dict, work: Path) -> tuple[float, int, str]:
    work.mkdir(parents=True, exist_ok=True)
    path = work / "config.yaml"
    path.write_text(yaml.safe_dump(cfg))
    cmd = [sys.executable, "-m", "snakemake", "-n", "--quiet", "rules", "--snakefile",
           str(ROOT / "Snakefile"), "--directory", str(work), "--configfile", str(path)]
    t0 = time.perf_counter()
    p = subprocess.run(cmd, capture_output=True, text=True, cwd=work)
    wall = time.perf_counter() - t0
    if p.returncode:
        raise RuntimeError(f"snakemake -n failed:\n{p.stdout[-2000:]}\n{p.stderr[-3000:]}")
    m = re.search(r"^total\s+(\d+)", p.stdout + p.stderr, re.M)
    return wall, int(m.group(1)) if m else -1, p.stdout + p.stderr


def main(argv=None, **_) -> dict:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--reps", type=int, default=None)
    a = ap.parse_args(argv)
    reps = a.reps or (1 if a.quick else 2)
    # 12 datasets x (1 + 10 + 10 noise cells) x 5 seeds = 1260 cells; x 3 attacks
    sizes = [("quarter", 3, 10, 5), ("paper-size", 12, 10, 5)]
    rows, full = [], None
    with tempfile.TemporaryDirectory(prefix="fedsafe-dag-") as tmp:
        for name, nd, nn_, ns in sizes:
            work = Path(tmp) / name
            cfg = grid_config(nd, nn_, ns, str(work / "results"))
            walls, jobs = [], -1
            for _ in range(reps):
                w, jobs, _ = dry_run(cfg, work)
                walls.append(w)
            rows.append({"grid": name, "datasets": nd, "seeds": ns, "jobs": jobs,
                         "snakemake -n s (median)": median(walls),
                         "ms per job": 1000 * median(walls) / max(jobs, 1)})
            full = rows[-1]
    body = (f"`snakemake -n --quiet rules` (prints only the job counts) on generated configs (3 defenses with 10 multipliers each "
            f"for the noisy ones, 3 attacks), {reps} repetition(s), medians of wall time.\n\n"
            + table(rows) + f"\n- paper-size grid ({full['jobs']} jobs): "
            + verdict(full["snakemake -n s (median)"], TARGET).replace("x", " s") + "\n")
    write("dag", "Item 7: DAG construction for a paper-size grid", body)
    return {"dag_jobs": full["jobs"], "dag_s": full["snakemake -n s (median)"]}


if __name__ == "__main__":
    main()
