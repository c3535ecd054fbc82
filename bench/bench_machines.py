"""How much results move between CPUs: `python bench/bench_machines.py [--cores 1]`.

On x86, what changes from one machine to another for the same code and wheels is which vector
kernels torch, oneDNN and MKL pick (AVX-512, AVX2, or plain SSE code paths): their sums run in
another order, and the rounding differences grow through training. This runs one small grid
(brain MRI 16x16; no defense and DP-SGD; 3 seeds; FGSM and the loss attack) as this machine's CPU
runs it and again with every library limited to each lower instruction set, as on an older CPU,
then lists with `fedsafe compare` what moved beyond the intervals over seeds and by how much each
metric moved at most. Writes results/bench/machines.md."""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
import yaml
from common import ROOT, write

# environment that caps every library at an instruction set (torch's ATen kernels, oneDNN, MKL)
ISAS = {
    "native": {},
    "avx2": {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2",
             "MKL_ENABLE_INSTRUCTIONS": "AVX2"},
    "no simd (default)": {"ATEN_CPU_CAPABILITY": "default", "ONEDNN_MAX_CPU_ISA": "SSE41",
                          "MKL_ENABLE_INSTRUCTIONS": "SSE4_2"},
}
GRID = {
    "experiment": "bench-machines", "seeds": [0, 1, 2],
    "datasets": {"mri": {"source": "synthetic_brain_mri",
                         "options": {"image_size": 16, "n_samples": 400}, "n_clients": 3}},
    "defenses": {"none": {}, "dp_sgd": {"noise_multipliers": [1.0]}},
    "attacks": {"fgsm": {"options": {"eps": [0.0, 0.03], "n_samples": 100}},
                "mia_loss": {"options": {"n_samples": 60}}},
    "federation": {"rounds": 3, "batch_size": 32, "optimizer": "adam", "lr": 0.003},
    "mlflow": {"enabled": False},
}
METRICS = ["clean_accuracy", "test_loss", "robust_accuracy", "auc", "epsilon"]


def run_grid(env_extra: dict, folder: Path, cores: int) -> pd.DataFrame:
    cfg = {**GRID, "results_dir": str(folder / "results")}
    (folder / "config.yaml").write_text(yaml.safe_dump(cfg))
    env = {**os.environ, **env_extra, "PYTHONPATH": str(ROOT / "src")}
    subprocess.run([sys.executable, "-m", "snakemake", "--snakefile", str(ROOT / "Snakefile"),
                    "--directory", str(folder), "--configfile", str(folder / "config.yaml"),
                    "--cores", str(cores), "--quiet"], check=True, env=env, cwd=folder,
                   capture_output=True)
    return pd.read_csv(folder / "results" / "summary.csv")


def main(argv=None) -> dict:
    from fedsafe.compare import compare

    ap = argparse.ArgumentParser()
    ap.add_argument("--cores", type=int, default=2)
    a, _ = ap.parse_known_args(argv)
    tmp = Path(tempfile.mkdtemp(prefix="fedsafe-machines-"))
    runs, seconds = {}, {}
    for name, env in ISAS.items():
        t0 = time.time()
        (tmp / name.split()[0]).mkdir()
        runs[name] = run_grid(env, tmp / name.split()[0], a.cores)
        seconds[name] = time.time() - t0
    base = runs["native"]
    keys = ["dataset", "defense", "noise_multiplier", "seed", "attack", "attack_value"]
    lines = [f"Grid: {GRID['datasets']['mri']['options']}, defenses {list(GRID['defenses'])}, "
             f"seeds {GRID['seeds']}, {GRID['federation']['rounds']} rounds.", "",
             "| run | beyond the intervals (`fedsafe compare`) | "
             + " | ".join(f"max abs change in {m}" for m in METRICS) + " | wall s |",
             "|---|---|" + "---|" * len(METRICS) + "---|"]
    out = {}
    for name, df in runs.items():
        moved = compare(base, df, 0.0)
        merged = base.merge(df, on=keys, suffixes=("_a", "_b"))
        diffs = {m: float((merged[f"{m}_a"] - merged[f"{m}_b"]).abs().max())
                 for m in METRICS if f"{m}_a" in merged}
        out[name] = {"moved": len(moved), **diffs}
        lines.append(f"| {name} | {len(moved)} | "
                     + " | ".join(f"{diffs.get(m, float('nan')):.2g}" for m in METRICS)
                     + f" | {seconds[name]:.0f} |")
    write("machines", "How results move across CPU instruction sets", "\n".join(lines))
    return {f"machines_{k.split()[0]}_moved": v["moved"] for k, v in out.items()}


if __name__ == "__main__":
    print(main(sys.argv[1:]))
