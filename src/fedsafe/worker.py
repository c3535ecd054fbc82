"""A warm job server, so that a job costs its work and not an interpreter's start-up.

Every workflow job is a Snakemake `script:` that calls `run(name, log, **kwargs)`. Started alone
(a cluster node, a plain `snakemake`), `run` does the job in its own process. Under `fedsafe.launch`
(`make run`), a server started beside Snakemake has already imported torch, Flower, Opacus and
torchattacks (5-6 s per process on 2 cores); `run` hands the job to it over a Unix socket and the
server forks a child that does the job with the script's own stdin/stdout/stderr, working folder
and environment, then reports the exit status. The script waits, so Snakemake's scheduling,
threads, logs, benchmarks and kills are unchanged:
- the child writes the rule's log (with the traceback of a failure) exactly as in-process;
- if the script dies (Snakemake cancels a job, Ctrl-C), the child notices the closed socket and
  exits; if the child dies, the script fails the job;
- the server never runs torch itself, so the fork copies no OpenMP or CUDA state; it exits when
  the launcher that started it does.
Only the script's own benchmark line misses the child's CPU time (the child is not its process):
the job's JSON keeps its own seconds, and `bench/bench_grid.py` measures utilisation from the
machine's counters.
"""

import json
import logging
import os
import select
import signal
import socket
import struct
import sys
import threading
import time
import traceback
from importlib import import_module

ENV = "FEDSAFE_WORKER"  # the server's address, set by fedsafe.launch ("off": no server)
log = logging.getLogger("fedsafe.worker")
_HEADER = struct.Struct("!Q")
_STATUS = struct.Struct("!i")
# What the jobs import; loaded once by the server (each 1-3 s), none of them starts a thread.
PRELOAD = ("torch", "numpy", "scipy.stats", "pandas", "sklearn.metrics", "opacus", "torchattacks",
           "fedsafe.federation.simulation", "fedsafe.attacks.evasion.run",
           "fedsafe.attacks.inversion.run", "fedsafe.attacks.membership.loss",
           "fedsafe.attacks.membership.reference_attacks", "fedsafe.attacks.membership.audit",
           "fedsafe.results.summary", "fedsafe.results.render", "fedsafe.claims", "fedsafe.plots")


def run(job: str, log_path: str | None, **kwargs) -> None:
    """Run `fedsafe.jobs.<job>(**kwargs)` (or `module:function`) with its log in `log_path`: on the
    warm server when one is announced in the environment and answers, else here. Exits non-zero if
    the job fails."""
    address = os.environ.get(ENV, "off")  # "off": the user turned the server off
    if address != "off":
        status = submit(address, job, log_path, kwargs)
        if status is not None:
            if status:
                sys.exit(status)
            return
    sys.exit(execute(job, log_path, kwargs))


def execute(job: str, log_path: str | None, kwargs: dict) -> int:
    """Do the job in this process: 0 on success, 1 on failure with the traceback in the log."""
    from fedsafe.logs import setup_logging

    setup_logging(log_path)
    try:
        module, _, fn = job.rpartition(":")
        getattr(import_module(module or "fedsafe.jobs"), fn)(**kwargs)
        return 0
    except Exception:  # noqa: BLE001 - every failure goes to the rule's log, then fails the job
        logging.getLogger("fedsafe").error("job %s failed:\n%s", job, traceback.format_exc())
        return 1
    finally:
        logging.shutdown()


# ---- the client side: a few standard-library calls, nothing heavy imported ----

def submit(address: str, job: str, log_path: str | None, kwargs: dict) -> int | None:
    """The job's exit status from the server, or None if no server answers (then run here)."""
    request = json.dumps({"job": job, "log": log_path, "kwargs": kwargs, "cwd": os.getcwd(),
                          "env": dict(os.environ)}).encode()
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.connect(_address(address))
    except OSError:
        sock.close()
        print(f"fedsafe: no job server at {address}; running the job in this process",
              file=sys.stderr)
        return None
    with sock:
        sys.stdout.flush()
        sys.stderr.flush()
        socket.send_fds(sock, [_HEADER.pack(len(request))], [0, 1, 2])
        sock.sendall(request)
        reply = _recv_exact(sock, _STATUS.size)
    if reply is None:
        print("fedsafe: the job server's child died without a status", file=sys.stderr)
        return 1
    return _STATUS.unpack(reply)[0]


def _address(address: str) -> str:
    # '@name' is Linux's abstract namespace: no file to clean up, no path-length limit, and only
    # reachable on this machine (a job on another node falls back to running itself)
    return "\0" + address[1:] if address.startswith("@") else address


def _recv_exact(sock: socket.socket, n: int) -> bytes | None:
    buf = b""
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            return None
        buf += chunk
    return buf


# ---- the server side ----

def serve(address: str, parent: int | None = None) -> None:
    """Listen at `address`, preload, then fork one child per job until `parent` exits."""
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(_address(address))
    listener.listen(128)  # jobs that connect during the preload wait in this queue
    print("listening", flush=True)  # start_server returns once the address answers
    os.dup2(os.open(os.devnull, os.O_WRONLY), 1)  # nobody reads that pipe any more
    for name in PRELOAD:
        import_module(name)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C stops the jobs and Snakemake; we follow
    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(True))
    while not stop and (parent is None or os.getppid() == parent):
        try:
            ready, _, _ = select.select([listener], [], [], 1.0)
        except InterruptedError:
            continue
        _reap()
        if ready:
            conn, _ = listener.accept()
            try:
                _start(conn, listener)
            except (OSError, ValueError, struct.error) as err:  # a client gone mid-request
                log.warning("dropped a job request: %s", err)
            conn.close()
    # a normal stop collects its last children (their CPU time then counts as the run's), but
    # never waits on one for long: a stop must not hang on a job its script has abandoned
    deadline = time.monotonic() + 5
    while stop and not _reap() and time.monotonic() < deadline:
        time.sleep(0.05)


def _reap() -> bool:
    """Collect finished children; True when none is left."""
    try:
        while os.waitpid(-1, os.WNOHANG)[0]:
            pass
    except ChildProcessError:
        return True
    return False


def _start(conn: socket.socket, listener: socket.socket) -> None:
    head, fds, _, _ = socket.recv_fds(conn, _HEADER.size, 3)
    body = _recv_exact(conn, _HEADER.unpack(head)[0])
    try:
        if body is None or len(fds) != 3:
            raise OSError("incomplete request")
        req = json.loads(body)
    except (OSError, ValueError):
        for fd in fds:
            os.close(fd)
        raise
    _warm(req)
    if os.fork():
        for fd in fds:
            os.close(fd)
        return
    # the child: become the script's process in all but pid
    status = 1
    try:
        listener.close()
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        for target, fd in enumerate(fds):
            os.dup2(fd, target)
            os.close(fd)
        os.chdir(req["cwd"])
        os.environ.clear()
        os.environ.update(req["env"])
        threading.Thread(target=_exit_with_client, args=(conn,), daemon=True).start()
        status = execute(req["job"], req["log"], req["kwargs"])
    except BaseException:  # noqa: BLE001 - report, never return into the server's loop
        traceback.print_exc()
    finally:
        try:
            sys.stdout.flush()
            sys.stderr.flush()
            conn.sendall(_STATUS.pack(status))
        finally:
            os._exit(status)


# An attack's input files, read by the server before the fork: every attack on a cell then
# shares one read of its model files and one decompression of its dataset (fedsafe.files.warm).
# numpy and plain reads only: the server still runs no torch code.
_WARMED_FILES = ("model_path", "checkpoints_path", "observed_path", "reference")


def _warm(req: dict) -> None:
    if req.get("job") != "attack":
        return
    from fedsafe.data.prepare import warm_prepared
    from fedsafe.files import warm

    kwargs, cwd = req["kwargs"], req["cwd"]
    for key in ("data_path", *_WARMED_FILES):
        if not kwargs.get(key):
            continue
        path = os.path.join(cwd, kwargs[key])
        try:
            warm_prepared(os.path.dirname(path)) if key == "data_path" else warm(path)
        except Exception as err:  # noqa: BLE001 - the job reads the file itself and names the fault
            log.debug("not kept in memory: %s (%s)", path, err)


def _exit_with_client(conn: socket.socket) -> None:
    """The script sends nothing after its request: a readable socket means it has gone (Snakemake
    cancelled the job), so the job goes too."""
    try:
        conn.recv(1)
    except OSError:
        pass
    os._exit(130)


def start_server(parent: int | None = None) -> tuple["subprocess.Popen", str]:  # noqa: F821
    """Start a server process for this process's Snakemake; (process, address for ENV)."""
    import subprocess

    address = f"@fedsafe-worker-{os.getpid()}-{os.urandom(4).hex()}"
    proc = subprocess.Popen([sys.executable, "-m", "fedsafe.worker", address,
                             str(parent or os.getpid())], stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE)
    proc.stdout.readline()  # bound: from now on a job that connects waits for it, never falls back
    proc.stdout.close()
    return proc, address


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    serve(sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else None)
