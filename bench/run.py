"""Benchmarks of fedsafe: `python bench/run.py [--only NAME[,NAME]] [--quick] [--grid]`.

Writes results/bench/<name>.md per benchmark and results/bench/report.md (all of them, plus a
summary table); results/bench/summary.json keeps the figures for later runs (e.g. the grid's
fixed-cost share uses the start-up figures)."""
from __future__ import annotations

import argparse
import importlib
import json
import sys
import time
import traceback
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import OUT, header, table  # noqa: E402

BENCHES = {  # name -> module; order = report order (startup before grid: grid uses its figures)
    "federation": "bench_federation",
    "dp_sgd": "bench_dpsgd",
    "pgd": "bench_pgd",
    "evasion": "bench_evasion",
    "inversion": "bench_inversion",
    "startup": "bench_startup",
    "grid": "bench_grid",
    "dag": "bench_dag",
    "audit": "bench_audit",
    "he": "bench_he",
}
TARGETS = [  # (item, summary key, target, unit)
    ("1 Flower vs plain loop, whole process", "fed_ratio", 1.3, "x"),
    ("1 ... excluding Flower start-up", "fed_ratio_no_startup", 1.3, "x"),
    ("1 Flower start-up to round 0", "fed_startup_s", None, "s"),
    ("2 DP-SGD vs plain, project path", "dp_sgd_project_ratio", 1.6, "x"),
    ("2 ... fused engine, hand-built loop", "dp_sgd_fused_ratio", 1.6, "x"),
    ("2 ... fastest of Opacus's own engines (reference)", "dp_sgd_best_ratio", None, "x"),
    ("3 PGD(k) vs k+1 fwd+bwd", "pgd_ratio", 1.2, "x"),
    ("3 default PGD minus PGD-50x5, robust accuracy", "pgd_gap_points", 2, "points"),
    ("3 evasion work of the default grid (estimate)", "evasion_grid_s", None, "s"),
    ("4 inversion vs plain loop", "inversion_ratio", 1.2, "x"),
    ("4 multi-step inversion: vectorised restarts vs a loop (speed-up)", "fedavg_restarts_speedup",
     None, "x"),
    ("5 fixed cost per train job", "fixed_train_s", None, "s"),
    ("5 fixed cost per attack job", "fixed_attack_s", None, "s"),
    ("6 default grid wall time", "grid_wall_s", None, "s"),
    ("6 default grid wall / (own work / cores)", "grid_ratio", 1.3, "x"),
    ("6 default grid fixed cost per job, median", "grid_fixed_median_s", 1.0, "s"),
    ("6 default grid CPU utilisation", "grid_cpu_util", -0.9, ""),  # negative: at least
    ("7 snakemake -n, paper-size grid", "dag_s", 30, "s"),
    ("8 training with audit canaries vs clean", "audit_train_ratio", None, "x"),
    ("8 privacy_audit job", "audit_job_s", None, "s"),
    ("8 reference rule (all models) vs one clean training", "reference_vs_cell", None, "x"),
    ("9 HE aggregation vs plain FedAvg, training time", "he_ratio", None, "x"),
]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--only", default="", help=f"comma-separated subset of {list(BENCHES)}")
    ap.add_argument("--quick", action="store_true", help="fewer repetitions (a smoke run)")
    ap.add_argument("--grid", action="store_true", help="also run the whole default grid")
    a = ap.parse_args()
    names = [n for n in a.only.split(",") if n] or list(BENCHES)
    unknown = set(names) - set(BENCHES)
    if unknown:
        ap.error(f"unknown benchmark(s) {sorted(unknown)}; known: {list(BENCHES)}")
    OUT.mkdir(parents=True, exist_ok=True)
    summary_path = OUT / "summary.json"
    summary = json.loads(summary_path.read_text()) if summary_path.exists() else {}
    failed = []
    for name in names:
        argv = (["--quick"] if a.quick else []) + (["--grid"] if a.grid and name == "grid" else [])
        t0 = time.perf_counter()
        print(f"== {name} ==", flush=True)
        try:
            mod = importlib.import_module(BENCHES[name])
            got = mod.main(argv, fixed=summary) if name == "grid" else mod.main(argv)
            summary.update({k: v for k, v in (got or {}).items() if v is not None})
        except Exception:  # noqa: BLE001 - one failing benchmark must not hide the others
            failed.append(name)
            (OUT / f"{name}.md").write_text(f"# {name}: FAILED\n\n```\n{traceback.format_exc()}```\n")
            traceback.print_exc()
        print(f"== {name}: {time.perf_counter() - t0:.0f} s ==", flush=True)
    summary_path.write_text(json.dumps(summary, indent=1, sort_keys=True))

    rows = []
    for item, key, target, unit in TARGETS:
        v = summary.get(key)
        if v is None:
            continue
        shown = f"{v:.0%}" if unit == "" else f"{v:.2f} {unit}"
        at_least = target is not None and target < 0
        bound = abs(target) if target is not None else None
        ok = target is not None and (v >= bound if at_least else v <= bound)
        status = "-" if target is None else ("met" if ok else "NOT met")
        shown_target = (f"{bound:.0%}" if unit == "" else f"{bound} {unit}") if bound else ""
        rows.append({"item": item, "value": shown,
                     "target": "-" if target is None else
                     f"{'>=' if at_least else '<='} {shown_target}",
                     "status": status})
    parts = [header("fedsafe benchmarks"), "## Summary (latest figure of each item)\n",
             table(rows, ["item", "value", "target", "status"]), ""]
    for name in BENCHES:
        f = OUT / f"{name}.md"
        if f.exists():
            lines = f.read_text().splitlines()
            cut = next((i for i, ln in enumerate(lines) if ln.startswith("- versions:")), 0)
            parts += ["#" + lines[0], "", "\n".join(lines[cut + 1:]).strip(), ""]
    (OUT / "report.md").write_text("\n".join(parts) + "\n")
    print(f"report: {OUT / 'report.md'}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
