"""MLflow logging off the jobs' hot path.

Importing MLflow and opening its store costs a job 2-4 s on 2 cores, more than many attacks take.
Under `fedsafe.launch`, a job instead drops its logging call (which `fedsafe.tracking` function,
with which arguments) as a small JSON file in a queue folder and ends; one logger process, started
by the launcher with MLflow loaded, makes the calls in order, within a second of each job, so every
job is still its own MLflow run, visible while the grid runs. Cluster jobs of a launched run
(`fedsafe.launch --profile slurm`) write to the same queue on the shared file system, so a tracking
server bound to the login node's loopback still receives every run (docs/cluster.md). Without
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

ENV = "FEDSAFE_MLFLOW_QUEUE"
log = logging.getLogger("fedsafe.tracking")


def log_call(fn: str, *args, **kwargs) -> None:
    """`fedsafe.tracking.<fn>(*args, **kwargs)`, now or through the launcher's queue."""
    folder = os.environ.get(ENV)
    if not folder:
        _call(fn, args, kwargs)
        return
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    # time first, so the logger keeps the jobs' order; pid keeps names unique
    name = f"{time.time():017.6f}-{os.getpid()}-{fn}.json"
    tmp = folder / f".{name}.tmp"
    tmp.write_text(json.dumps({"fn": fn, "args": args, "kwargs": kwargs}, default=str))
    tmp.replace(folder / name)  # atomic: the logger never reads half a call


def _call(fn: str, args, kwargs) -> None:
    from fedsafe import tracking

    getattr(tracking, fn)(*args, **kwargs)


def drain(folder: Path) -> int:
    """Make every queued call, oldest first; returns how many. A call that fails is logged and
    dropped (the tracking functions already retry; the job's files keep the result)."""
    done = 0
    for f in sorted(Path(folder).glob("[0-9]*.json")):
        try:
            call = json.loads(f.read_text())
            _call(call["fn"], call["args"], call["kwargs"])
        except Exception as err:  # noqa: BLE001 - one bad entry must not stop the others
            from fedsafe.tracking import redact  # an error may quote a URI with credentials

            log.warning("MLflow call %s failed (%s: %s); `fedsafe relog` catches up", f.name,
                        type(err).__name__, redact(str(err)))
        f.unlink(missing_ok=True)
        done += 1
    return done


def follow(folder: Path, parent: int, poll: float = 0.5) -> None:
    """Drain `folder` until the launcher (`parent`) exits or leaves a `stop` file, then drain the
    rest and return."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    stop = folder / "stop"
    while os.getppid() == parent and not stop.exists():
        if not drain(folder):
            time.sleep(poll)
    stop.unlink(missing_ok=True)
    drain(folder)


def start_logger(folder: Path):
    """Start the logger process for this launcher; the queue folder is announced in ENV."""
    import subprocess

    (Path(folder) / "stop").unlink(missing_ok=True)
    return subprocess.Popen([sys.executable, "-m", "fedsafe.tracking_queue", str(folder),
                             str(os.getpid())], stdin=subprocess.DEVNULL)


def stop_logger(proc, folder: Path) -> None:
    """Let the logger finish the queue (progress on stderr), then return."""
    left = len(list(Path(folder).glob("[0-9]*.json")))
    if left:
        print(f"fedsafe: logging {left} queued run(s) to MLflow", file=sys.stderr)
    (Path(folder) / "stop").touch()
    proc.wait()


if __name__ == "__main__":
    from fedsafe.jobs import setup_logging

    setup_logging(None)
    import mlflow  # noqa: F401 - loaded once here, so no job pays for it

    follow(Path(sys.argv[1]), int(sys.argv[2]))
