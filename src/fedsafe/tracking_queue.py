"""MLflow logging off the jobs' hot path.

Importing MLflow and opening its store costs a job 2-4 s on 2 cores, more than many attacks take.
Under `fedsafe.launch`, a job instead drops its logging call (which `fedsafe.tracking` function,
with which arguments) as a small JSON file in a queue folder and ends; one logger process, started
by the launcher with MLflow loaded, makes the calls in order, within a second of each job, so every
job is still its own MLflow run, visible while the grid runs. The call carries the job's start and
end times, so the run's span (the UI's Duration) is the job's, not the logger's. When the launched
run ends, the logger prints where to look at what it logged (the UI's runs table). Cluster jobs
of a launched run (`fedsafe.launch --profile slurm`) write to the same queue on the shared file
system, so a tracking server bound to the login node's loopback still receives every run
(docs/cluster.md). Without
the launcher (a plain `snakemake`), `log_call` calls `fedsafe.tracking` directly, as before. Calls
left in the queue by a killed run are made by the next launch; the job files stay the source of truth
(`fedsafe relog` rebuilds MLflow from them).
"""

import json
import logging
import os
import sys
import time
from pathlib import Path

from fedsafe.files import atomic_path

ENV = "FEDSAFE_MLFLOW_QUEUE"
log = logging.getLogger("fedsafe.tracking")


def log_call(fn: str, *args, started: float | None = None, **kwargs) -> None:
    """`fedsafe.tracking.<fn>(*args, **kwargs)`, now or through the launcher's queue. `started`:
    the job's start (`time.time()`); its run then spans from there to this call, made when the
    job has its results."""
    if started is not None:
        kwargs.update(start_time=int(started * 1000), end_time=int(time.time() * 1000))
    folder = os.environ.get(ENV)
    if not folder:
        _call(fn, args, kwargs)
        return
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    # time first, so the logger keeps the jobs' order; pid keeps names unique
    name = f"{time.time():017.6f}-{os.getpid()}-{fn}.json"
    with atomic_path(folder / name) as tmp:  # the logger never reads half a call
        tmp.write_text(json.dumps({"fn": fn, "args": args, "kwargs": kwargs}, default=str))


def _call(fn: str, args, kwargs) -> None:
    from fedsafe import tracking

    getattr(tracking, fn)(*args, **kwargs)


def drain(folder: Path, logged: set | None = None) -> int:
    """Make every queued call, oldest first; returns how many. A call that fails is logged and
    dropped (the tracking functions already retry; the job's files keep the result). `logged`
    collects the (tracking URI, experiment) pairs called."""
    done = 0
    for f in sorted(Path(folder).glob("[0-9]*.json")):
        try:
            call = json.loads(f.read_text())
            _call(call["fn"], call["args"], call["kwargs"])
            if logged is not None:
                logged.add(tuple(call["args"][:2]))  # every tracking.log_* takes (uri, experiment)
        except Exception as err:  # noqa: BLE001 - one bad entry must not stop the others
            from fedsafe.tracking import redact  # an error may quote a URI with credentials

            log.warning("MLflow call %s failed (%s: %s); `fedsafe relog` catches up", f.name,
                        type(err).__name__, redact(str(err)))
        f.unlink(missing_ok=True)
        done += 1
    return done


def follow(folder: Path, parent: int, poll: float = 0.5) -> set:
    """Drain `folder` until the launcher (`parent`) exits or leaves a `stop` file, then drain the
    rest; returns the (tracking URI, experiment) pairs logged to."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    stop = folder / "stop"
    logged = set()
    while os.getppid() == parent and not stop.exists():
        if not drain(folder, logged):
            time.sleep(poll)
    stop.unlink(missing_ok=True)
    drain(folder, logged)
    return logged


def print_where_to_look(logged: set) -> None:
    """On stderr, for each experiment logged to: how to open its runs in the UI."""
    from fedsafe.tracking import TrackerError, redact, where_to_look

    for uri, experiment in sorted(logged):
        try:
            print(f"fedsafe: {where_to_look(uri, experiment)}", file=sys.stderr)
        except Exception as err:  # noqa: BLE001 - the runs are logged; only the hint is lost
            why = err if isinstance(err, TrackerError) else type(err).__name__
            print(f"fedsafe: no link to MLflow's UI ({redact(str(why))})", file=sys.stderr)


def start_logger(folder: Path, workdir: Path):
    """Start the logger process for this launcher; the queue folder is announced in ENV. It
    works in the jobs' folder (Snakemake's `--directory`): the files a job names, such as its
    artifacts, are relative to it."""
    import subprocess

    (Path(folder) / "stop").unlink(missing_ok=True)
    return subprocess.Popen([sys.executable, "-m", "fedsafe.tracking_queue",
                             str(Path(folder).resolve()), str(os.getpid())],
                            stdin=subprocess.DEVNULL, cwd=workdir)


def stop_logger(proc, folder: Path) -> None:
    """Let the logger finish the queue (progress on stderr), then return."""
    left = len(list(Path(folder).glob("[0-9]*.json")))
    if left:
        print(f"fedsafe: logging {left} queued run(s) to MLflow", file=sys.stderr)
    (Path(folder) / "stop").touch()
    proc.wait()


if __name__ == "__main__":
    from fedsafe.logs import setup_logging

    setup_logging(None)
    import mlflow  # noqa: F401 - loaded once here, so no job pays for it

    print_where_to_look(follow(Path(sys.argv[1]), int(sys.argv[2])))
