"""Item 6 (and the share of item 5): the whole default grid.

With `--grid`, runs `snakemake --cores 2` on config/config.yaml with results in a temporary
folder (many minutes) and measures wall time. Without it, summarises the per-job benchmark TSVs
of an earlier run (default `results/benchmarks`, written by every `make run`), whose overall wall
time is unknown. CPU utilisation = sum of jobs' cpu_time / (wall x cores); fixed-cost share =
(jobs x the per-job fixed cost measured by bench_startup) / sum of jobs' wall time."""
from __future__ import annotations

import argparse
import csv
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

from common import OUT, ROOT, table, write


def read_tsvs(bench_dir: Path) -> list[dict]:
    rows = []
    for f in sorted(bench_dir.rglob("*.tsv")):
        with f.open() as fh:
            for r in csv.DictReader(fh, delimiter="\t"):
                rule = f.relative_to(bench_dir).parts[0]
                rows.append({"rule": rule, "job": str(f.relative_to(bench_dir)),
                             "s": float(r["s"]), "cpu_time": float(r.get("cpu_time") or 0)})
    return rows


def startup_seconds(results: Path) -> list[float]:
    out = []
    for f in (results / "train").rglob("train.json"):
        s = json.loads(f.read_text()).get("startup_seconds")
        if s is not None:
            out.append(float(s))
    return out


def main(argv=None, fixed: dict | None = None) -> dict:
    ap = argparse.ArgumentParser()
    ap.add_argument("--grid", action="store_true", help="run the default grid (many minutes)")
    ap.add_argument("--cores", type=int, default=2)
    ap.add_argument("--results", default=str(ROOT / "results"),
                    help="results folder of an earlier run (without --grid)")
    ap.add_argument("--quick", action="store_true")
    a, _ = ap.parse_known_args(argv)
    fixed = fixed or {}
    if not fixed and (OUT / "summary.json").exists():
        fixed = json.loads((OUT / "summary.json").read_text())
    wall = None
    if a.grid:
        tmp = Path(tempfile.mkdtemp(prefix="fedsafe-grid-"))
        cfg = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())
        cfg["results_dir"] = str(tmp / "results")
        (tmp / "config.yaml").write_text(yaml.safe_dump(cfg))
        t0 = time.perf_counter()
        p = subprocess.run([sys.executable, "-m", "snakemake", "--cores", str(a.cores),
                            "--snakefile", str(ROOT / "Snakefile"), "--directory", str(tmp),
                            "--configfile", str(tmp / "config.yaml")],
                           capture_output=True, text=True, cwd=tmp)
        wall = time.perf_counter() - t0
        (OUT / "grid_snakemake.log").write_text(p.stdout + p.stderr)
        if p.returncode:
            raise RuntimeError(f"grid failed, see {OUT / 'grid_snakemake.log'}")
        results = tmp / "results"
    else:
        results = Path(a.results)
    jobs = read_tsvs(results / "benchmarks")
    if not jobs:
        body = f"No per-job benchmarks under {results / 'benchmarks'}; run `make run` or --grid.\n"
        write("grid", "Item 6: the default grid", body)
        return {}
    by_rule: dict[str, dict] = {}
    for j in jobs:
        r = by_rule.setdefault(j["rule"], {"rule": j["rule"], "jobs": 0, "sum s": 0.0,
                                           "sum cpu_time s": 0.0})
        r["jobs"] += 1
        r["sum s"] += j["s"]
        r["sum cpu_time s"] += j["cpu_time"]
    total_s = sum(j["s"] for j in jobs)
    total_cpu = sum(j["cpu_time"] for j in jobs)
    n_train = by_rule.get("train", {}).get("jobs", 0)
    n_attack = by_rule.get("attack", {}).get("jobs", 0)
    n_other = len(jobs) - n_train - n_attack
    ft, fa = fixed.get("fixed_train_s"), fixed.get("fixed_attack_s")
    starts = startup_seconds(results)
    lines = [f"Results: `{results}`; {len(jobs)} jobs with benchmark files.", ""]
    lines.append(table(list(by_rule.values())))
    lines.append(f"- sum of job wall times: {total_s:.0f} s; sum of job CPU times: "
                 f"{total_cpu:.0f} s")
    if wall is not None:
        lines.append(f"- grid wall time ({a.cores} cores): **{wall:.0f} s**; CPU utilisation "
                     f"(sum cpu_time / (wall x {a.cores})): **{total_cpu / (wall * a.cores):.0%}**")
    else:
        lines.append("- grid wall time: not measured (rerun with `--grid`); job-level CPU "
                     f"utilisation (sum cpu_time / sum s): {total_cpu / total_s:.0%} of one core")
    share = None
    if ft is not None and fa is not None:
        fixed_total = n_train * ft + n_attack * fa + n_other * fixed.get("import_jobs_s", 0)
        share = fixed_total / total_s
        lines.append(f"- fixed cost (item 5: {ft:.1f} s per train job, {fa:.1f} s per attack "
                     f"job): {fixed_total:.0f} s = **{share:.0%}** of the summed job wall time")
    if starts:
        lines.append(f"- train jobs' start-up to round 0 (train.json): median "
                     f"{sorted(starts)[len(starts) // 2]:.1f} s, sum {sum(starts):.0f} s")
    write("grid", "Item 6: the default grid", "\n".join(lines) + "\n")
    return {"grid_wall_s": wall, "grid_jobs": len(jobs), "grid_sum_job_s": total_s,
            "grid_cpu_util": total_cpu / (wall * a.cores) if wall else None,
            "grid_fixed_share": share}


if __name__ == "__main__":
    main()
