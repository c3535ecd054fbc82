"""Item 6: the whole default grid, as `make run` runs it, beside an earlier commit's code.

`--grid` runs config/config.yaml through `fedsafe.launch` (what `make run` types) with results in a
temporary folder; `--baseline REF` (default: the commit before the job server, 6b303df's
successor d4e5214) runs the same grid with that commit's workflow and package, checked out by
`git worktree`, in the same call, so the two ratios come from one machine in one run. Use
`--seeds 0` to time a one-seed grid.

For each run:
- work: what the jobs report as their own work (`train_seconds` of training jobs, `seconds` of
  attack jobs): the part no job structure can remove;
- wall / (work / cores): 1.0 would be perfect packing of that work on the cores;
- fixed cost of a job: its wall time (Snakemake's benchmark file) minus its own work, median over
  training and attack jobs;
- CPU utilisation: the CPU time of every process the run started (`getrusage` of the launcher's
  reaped descendants, the job server's children included) over wall x cores.
Without `--grid`, summarises the benchmark files of an earlier run (`--results`)."""
from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml
from common import OUT, ROOT, table, write

BASELINE = "d4e5214"  # main before the job server and the MLflow queue (issue 22)


def own_work(results: Path) -> dict[str, float]:
    """Benchmark file (relative path without suffix) -> the job's own reported work (s)."""
    work = {}
    for f in (results / "train").rglob("train.json"):
        rel = f.parent.relative_to(results / "train")
        work[f"train/{rel}"] = float(json.loads(f.read_text())["train_seconds"])
    for f in (results / "attacks").rglob("*.json"):
        rel = f.relative_to(results / "attacks").with_suffix("")
        work[f"attack/{rel}"] = float(json.loads(f.read_text())["seconds"])
    return work


def job_walls(results: Path) -> dict[str, float]:
    out = {}
    for f in (results / "benchmarks").rglob("*.tsv"):
        rows = f.read_text().splitlines()
        if len(rows) >= 2:
            out[str(f.relative_to(results / "benchmarks").with_suffix(""))] = float(
                rows[-1].split("\t")[0])
    return out


def measure(results: Path, wall: float | None, cpu: float | None, cores: int) -> dict:
    work, walls = own_work(results), job_walls(results)
    fixed = {k: walls[k] - w for k, w in work.items() if k in walls}
    total = sum(work.values())
    med = statistics.median(fixed.values()) if fixed else None
    return {"jobs": len(walls), "work_s": total, "sum_job_wall_s": sum(walls.values()),
            "wall_s": wall, "ratio": wall / (total / cores) if wall and total else None,
            "fixed_median_s": med,
            "fixed_train_median_s": _median(v for k, v in fixed.items() if k.startswith("train")),
            "fixed_attack_median_s": _median(v for k, v in fixed.items()
                                             if k.startswith("attack")),
            "cpu_util": cpu / (wall * cores) if wall and cpu is not None else None}


def _median(values):
    values = list(values)
    return statistics.median(values) if values else None


def run_grid(code: Path, seeds: list[int] | None, cores: int, label: str) -> dict:
    """The default grid with the workflow and package in `code`, as `make run` starts it."""
    tmp = Path(tempfile.mkdtemp(prefix=f"fedsafe-grid-{label.split()[0]}-"))
    cfg = yaml.safe_load((code / "config" / "config.yaml").read_text())
    cfg["results_dir"] = str(tmp / "results")
    cfg["experiment"] = f"bench-{label.split()[0]}"
    if seeds is not None:
        cfg["seeds"] = seeds
    (tmp / "config.yaml").write_text(yaml.safe_dump(cfg))
    env = {**os.environ, "PYTHONPATH": str(code / "src")}  # that commit's package, not ours
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    p = subprocess.run([sys.executable, "-m", "fedsafe.launch", "--cores", str(cores),
                        "--snakefile", str(code / "Snakefile"), "--directory", str(tmp),
                        "--configfile", str(tmp / "config.yaml")],
                       capture_output=True, text=True, cwd=tmp, env=env)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    (OUT / f"grid_{label.split()[0]}.log").write_text(p.stdout + p.stderr)
    if p.returncode:
        raise RuntimeError(f"{label} grid failed, see {OUT / f'grid_{label.split()[0]}.log'}")
    return {"label": label, **measure(tmp / "results", wall, cpu, cores)}


def checkout(ref: str) -> Path:
    dest = Path(tempfile.mkdtemp(prefix="fedsafe-baseline-")) / "code"
    subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(dest), ref],
                   check=True, capture_output=True)
    return dest


def main(argv=None, fixed: dict | None = None) -> dict:
    ap = argparse.ArgumentParser()
    ap.add_argument("--grid", action="store_true", help="run the default grid (many minutes)")
    ap.add_argument("--baseline", default=BASELINE,
                    help="commit to run beside this checkout ('' = none)")
    ap.add_argument("--seeds", default="", help="comma-separated seeds (default: the config's)")
    ap.add_argument("--cores", type=int, default=2)
    ap.add_argument("--results", default=str(ROOT / "results"),
                    help="results folder of an earlier run (without --grid)")
    ap.add_argument("--quick", action="store_true")
    a, _ = ap.parse_known_args(argv)
    seeds = [int(s) for s in a.seeds.split(",") if s] or None
    runs = []
    if a.grid:
        if a.baseline:
            base = checkout(a.baseline)
            try:
                runs.append(run_grid(base, seeds, a.cores, f"baseline {a.baseline}"))
            finally:
                subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force",
                                str(base)], capture_output=True)
        runs.append(run_grid(ROOT, seeds, a.cores, "this checkout"))
    else:
        runs.append({"label": f"earlier run in {a.results}",
                     **measure(Path(a.results), None, None, a.cores)})
    shown = [{"code": r["label"], "jobs": r["jobs"], "wall s": _f(r["wall_s"], "{:.0f}"),
              "own work s": f"{r['work_s']:.0f}",
              f"wall / (work / {a.cores} cores)": _f(r["ratio"], "{:.2f}x"),
              "fixed cost per job, median (train / attack)":
                  f"{_f(r['fixed_median_s'], '{:.2f}')} s ({_f(r['fixed_train_median_s'], '{:.2f}')}"
                  f" / {_f(r['fixed_attack_median_s'], '{:.2f}')})",
              "CPU utilisation": _f(r["cpu_util"], "{:.0%}")} for r in runs]
    lines = [f"Default grid (`config/config.yaml`{', seeds ' + a.seeds if a.seeds else ''}) on "
             f"{a.cores} cores; targets: wall <= 1.3x work / cores, median fixed cost <= 1 s, "
             "CPU utilisation >= 90%.", "", table(shown)]
    write("grid", "Item 6: the default grid", "\n".join(lines) + "\n")
    last = runs[-1]
    return {"grid_wall_s": last["wall_s"], "grid_jobs": last["jobs"],
            "grid_ratio": last["ratio"], "grid_fixed_median_s": last["fixed_median_s"],
            "grid_cpu_util": last["cpu_util"]}


def _f(v, fmt: str) -> str:
    return "-" if v is None else fmt.format(v)


if __name__ == "__main__":
    main()
