"""Shared helpers for the benchmarks: environment header, timing, Markdown output.

Every ratio is measured within one run, alternating the two sides and taking medians, because the
machine may be shared with other work."""
from __future__ import annotations

import datetime as _dt
import os
import platform
import statistics
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src"
if str(SRC) not in sys.path:
    sys.path.insert(0, str(SRC))
OUT = ROOT / "results" / "bench"
CACHE = OUT / "cache"


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def versions() -> dict:
    out = {"python": platform.python_version()}
    for pkg in ("torch", "flwr", "ray", "opacus", "torchattacks", "mlflow", "snakemake"):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            out[pkg] = "-"
    return out


def header(title: str) -> str:
    import torch

    dev = "cuda: " + torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"
    try:
        load = " / ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        load = "-"
    v = versions()
    return "\n".join([
        f"# {title}", "",
        f"- date: {_dt.datetime.now().isoformat(timespec='seconds')}",
        f"- host: {platform.node()}, {platform.system()} {platform.release()}",
        f"- CPU: {cpu_model()}, {os.cpu_count()} logical cores"
        f" ({len(os.sched_getaffinity(0))} usable); load average at start {load}",
        f"- device: {dev}; torch threads {torch.get_num_threads()} (interop "
        f"{torch.get_num_interop_threads()})",
        "- versions: " + ", ".join(f"{k} {x}" for k, x in v.items()), "",
    ])


def median(xs) -> float:
    return float(statistics.median(xs))


def timeit(fn, *args, **kw) -> float:
    t0 = time.perf_counter()
    fn(*args, **kw)
    return time.perf_counter() - t0


def alternate(sides: dict, reps: int, warmup: int = 1, clock: str = "wall"
              ) -> dict[str, list[float]]:
    """Run each side's callable `reps` times, interleaved (A B C A B C ...) after `warmup` untimed
    rounds; returns {name: [seconds, ...]}. clock="cpu" measures this process's CPU time instead
    of wall time: for single-threaded work on a shared machine it is far less noisy (other
    processes' load does not count), and it equals wall time on an idle machine."""
    for _ in range(warmup):
        for fn in sides.values():
            fn()
    now = time.perf_counter if clock == "wall" else time.process_time
    times: dict[str, list[float]] = {k: [] for k in sides}
    for r in range(reps):
        order = list(sides.items())
        if r % 2:  # reverse every other round so neither side always runs first
            order.reverse()
        for k, fn in order:
            t0 = now()
            fn()
            times[k].append(now() - t0)
    return times


def training_args(argv) -> tuple:
    """The options of the benchmarks that train whole cells: --quick (one repetition), --reps,
    --cpus; returns them and the repetitions."""
    import argparse

    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--reps", type=int, default=None)
    ap.add_argument("--cpus", type=int, default=2)
    a = ap.parse_args(argv)
    return a, a.reps or (1 if a.quick else 2)


def table(rows: list[dict], cols: list[str] | None = None) -> str:
    if not rows:
        return "(no rows)\n"
    cols = cols or list(rows[0])
    fmt = lambda v: f"{v:.3g}" if isinstance(v, float) else str(v)
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(fmt(r.get(c, "")) for c in cols) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def verdict(value: float, target: float) -> str:
    return f"{'MET' if value <= target else 'NOT MET'} ({value:.2f}x vs target <= {target}x)"


def write(name: str, title: str, body: str) -> str:
    OUT.mkdir(parents=True, exist_ok=True)
    text = header(title) + body.rstrip() + "\n"
    (OUT / f"{name}.md").write_text(text)
    print(text, flush=True)
    return text


def run_py(code: str, env: dict | None = None, timeout: float = 600) -> tuple[float, str]:
    """Run `python -c code` in a fresh interpreter; returns (wall seconds, stdout)."""
    e = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(SRC),
                                                                    os.environ.get("PYTHONPATH")]))}
    e.update(env or {})
    t0 = time.perf_counter()
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=e,
                       timeout=timeout, cwd=ROOT)
    wall = time.perf_counter() - t0
    if p.returncode:
        raise RuntimeError(f"subprocess failed ({p.returncode}):\n{p.stderr[-3000:]}")
    return wall, p.stdout
