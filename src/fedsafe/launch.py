"""Start the workflow so that an interrupted run always resumes: `python -m fedsafe.launch ARGS`
runs `snakemake ARGS` (what `make run` types), after removing a lock left by a dead run.

A run killed hard (SIGKILL, out of memory, a lost login shell) leaves Snakemake's lock behind and
the next run stops with LockException. Removing a lock is safe only when no Snakemake runs in that
folder, so this checks the process table first: a lock held by a live run (or by its still running
jobs) is left alone and the launch stops, naming the process. Jobs left incomplete are redone by
the workflow profile's `rerun-incomplete` (profiles/default/config.yaml).

At the end the MLflow logger prints where to look: the command that starts MLflow's UI on the
run's store and the link to the experiment's runs table (`fedsafe.tracking.where_to_look`).
"""

import os
import signal
import subprocess
import sys
from pathlib import Path


def workdir_of(args: list[str]) -> Path:
    """The folder Snakemake will run in: `--directory`/`-d`, else the current one."""
    for i, a in enumerate(args):
        if a in ("--directory", "-d") and i + 1 < len(args):
            return Path(args[i + 1]).resolve()
        if a.startswith("--directory="):
            return Path(a.split("=", 1)[1]).resolve()
    return Path.cwd().resolve()


def _is_snakemake(argv: list[str]) -> bool:
    """Snakemake itself (`snakemake`, `python -m snakemake`), one of its script jobs, or the job
    server that runs them (and its children)."""
    return any(a == "snakemake" or Path(a).name == "snakemake" or "/.snakemake/scripts/" in a
               or a == "fedsafe.worker" for a in argv)


def running_in(workdir: Path) -> list[int]:
    """Process ids of Snakemake runs and jobs whose working folder is `workdir`."""
    pids = []
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            argv = (proc / "cmdline").read_bytes().decode(errors="replace").split("\0")
            if int(proc.name) != os.getpid() and _is_snakemake(argv) and \
                    Path(os.readlink(proc / "cwd")).resolve() == workdir:
                pids.append(int(proc.name))
        except (OSError, ValueError):  # gone meanwhile, or another user's process
            continue
    return pids


def snakemake_cmd() -> list[str]:
    return [sys.executable, "-m", "snakemake"]


def unlock_if_stale(args: list[str]) -> bool:
    """Remove a lock no live run holds; True if one was removed. Raises if a run is live."""
    workdir = workdir_of(args)
    locks = workdir / ".snakemake" / "locks"
    if not (locks.is_dir() and any(locks.iterdir())):
        return False
    if not Path("/proc").is_dir():
        raise SystemExit(f"{locks} holds a lock; if no snakemake runs in {workdir}, type "
                         "`snakemake --unlock` and run again")
    live = running_in(workdir)
    if live:
        raise SystemExit(f"snakemake is already running in {workdir} (process {live}): wait for "
                         f"it to finish, or stop it (kill {' '.join(map(str, live))}) and run again")
    print(f"removing the lock left by a run that no longer runs in {workdir}", file=sys.stderr)
    subprocess.run([*snakemake_cmd(), *args, "--unlock"], check=True, stdout=subprocess.DEVNULL)
    return True


def runs_locally(args: list[str]) -> bool:
    """Jobs run on this machine (no cluster profile or executor), so a warm job server helps."""
    return not any(a.split("=")[0] in ("--profile", "--executor", "-e", "--workflow-profile")
                   for a in args) and os.environ.get("FEDSAFE_WORKER", "") != "off"


def main(args: list[str] | None = None) -> int:
    """Run Snakemake with a warm job server (local runs) and an MLflow logger beside it
    (`fedsafe.worker`, `fedsafe.tracking_queue`); both end with it."""
    from fedsafe import tracking, tracking_queue, worker

    args = sys.argv[1:] if args is None else args
    unlock_if_stale(args)
    # the code version of every run's MLflow tags, asked of git once for the whole workflow run
    # (the logger and each job, local or on a cluster, inherit it)
    os.environ.setdefault(tracking.COMMIT_ENV, tracking.git_commit())
    env = dict(os.environ)
    helpers = []
    if runs_locally(args):
        server, env[worker.ENV] = worker.start_server()
        helpers.append(server)
    queue = workdir_of(args) / ".snakemake" / "fedsafe-mlflow-queue"
    logger = tracking_queue.start_logger(queue, workdir_of(args))
    env[tracking_queue.ENV] = str(queue)
    # Ctrl-C reaches Snakemake and its jobs through the terminal; the launcher only waits
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    snakemake = subprocess.Popen(snakemake_cmd() + args, env=env)
    signal.signal(signal.SIGTERM, lambda *_: snakemake.terminate())
    rc = snakemake.wait()
    for proc in helpers:
        proc.terminate()
        proc.wait()  # its CPU time then counts as this run's (bench/bench_grid.py)
    tracking_queue.stop_logger(logger, queue)
    return rc


if __name__ == "__main__":
    sys.exit(main())
