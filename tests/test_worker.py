"""The warm job server (fedsafe.worker): a job handed to it runs with the script's files, folder
and environment, its failure reaches the script's exit status and the rule's log, a cancelled
script takes its job down, and without a server the job runs in the script's own process."""

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from fedsafe import worker

pytestmark = pytest.mark.xdist_group("worker")


def script(address: str | None, job: str, log: Path, **kwargs) -> subprocess.Popen:
    """What a workflow script does: `fedsafe.worker.run(...)` in a fresh interpreter."""
    env = {**os.environ, worker.ENV: address or "off"}
    code = f"from fedsafe.worker import run; run({job!r}, {str(log)!r}, **{kwargs!r})"
    return subprocess.Popen([sys.executable, "-c", code], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, cwd=log.parent)


@pytest.fixture(scope="module")
def server():
    proc, address = worker.start_server()
    yield address
    proc.terminate()
    proc.wait(30)


def test_jobs_run_on_the_server_with_the_scripts_files(server, tmp_path):
    out = tmp_path / "pid.txt"
    cmd = f"echo $PPID > {out.name}; echo hello-$FEDSAFE_TEST_VAR"
    p = script(server, "subprocess:run", tmp_path / "ok.log", args=["sh", "-c", cmd])
    stdout, _ = p.communicate(timeout=120)
    assert p.returncode == 0
    assert "hello-" in stdout  # the script's stdout, in the script's folder
    job_pid = int(out.read_text())
    assert job_pid != p.pid  # done by a child of the server, not by the script


def test_a_failure_fails_the_script_with_its_traceback_in_the_log(server, tmp_path):
    log = tmp_path / "fail.log"
    p = script(server, "claims", log, summary=str(tmp_path / "missing.csv"),
               out=str(tmp_path / "claims.md"))
    _, stderr = p.communicate(timeout=120)
    assert p.returncode == 1
    text = log.read_text()
    assert "Traceback" in text and "FileNotFoundError" in text and "missing.csv" in text


def test_a_cancelled_script_takes_its_job_down(server, tmp_path):
    pidfile = tmp_path / "sleep.pid"
    p = script(server, "subprocess:run", tmp_path / "long.log",
               args=["sh", "-c", f"echo $$ > {pidfile.name}; exec sleep 60"])
    deadline = time.time() + 120
    while not pidfile.exists() or not pidfile.read_text().strip():
        assert time.time() < deadline and p.poll() is None
        time.sleep(0.1)
    sleeper = int(pidfile.read_text())
    child = int(Path(f"/proc/{sleeper}/stat").read_text().split()[3])  # the job's process
    p.terminate()  # as Snakemake cancels a job
    p.wait(10)
    deadline = time.time() + 10
    while Path(f"/proc/{child}").exists() and "Z" not in _state(child):
        assert time.time() < deadline, "the job outlived its script"
        time.sleep(0.1)
    os.kill(sleeper, 9)


def _state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2]
    except OSError:
        return "Z"


def test_without_a_server_the_script_runs_the_job_itself(tmp_path):
    log = tmp_path / "here.log"
    p = script("@fedsafe-no-such-server", "claims", log, summary=str(tmp_path / "missing.csv"),
               out=str(tmp_path / "claims.md"))
    _, stderr = p.communicate(timeout=120)
    assert "no job server" in stderr and p.returncode == 1
    assert "FileNotFoundError" in log.read_text()


def test_the_server_reads_a_cells_files_once_for_all_its_attacks(tmp_path, monkeypatch):
    """What the server does before forking an attack: the dataset is decompressed and the model
    files read once, and every later load in that process (and its forks) uses them, until a file
    changes."""
    import numpy as np
    import torch

    from fedsafe import files
    from fedsafe.data.prepare import load_prepared, prepare

    monkeypatch.setattr(files, "_WARM", {})
    data = tmp_path / "data"
    prepare("synthetic_brain_mri", {"image_size": 8, "n_samples": 60, "test_fraction": 0.2,
                                    "partition": {"scheme": "iid"}}, 2, 0, data)
    model = tmp_path / "model.pt"
    torch.save({"w": torch.arange(4.0)}, model)
    req = {"job": "attack", "cwd": str(tmp_path),
           "kwargs": {"data_path": "data/data.npz", "model_path": "model.pt",
                      "observed_path": "missing.pt"}}  # a missing file is left to the job
    worker._warm(req)
    first = load_prepared(data)
    assert load_prepared(data) is first  # no second read or decompression

    # the model comes from memory: same size and time, other bytes on disk, old tensor back
    stat = model.stat()
    torch.save({"w": torch.arange(4.0) + 1}, model)
    assert model.stat().st_size == stat.st_size
    os.utime(model, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert torch.equal(files.load_torch(model)["w"], torch.arange(4.0))
    # a rewritten file (new time) is read again
    os.utime(model, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    assert torch.equal(files.load_torch(model)["w"], torch.arange(4.0) + 1)
    np.testing.assert_array_equal(first.test[0], load_prepared(data).test[0])

    # a process that never warmed reads its files itself, as before
    monkeypatch.setattr(files, "_WARM", {})
    assert load_prepared(data) is not load_prepared(data)
