"""The jobs' files: written atomically, so a crash never leaves a half-written file that a rerun
would trust, and read back with an error that names the file and how to regenerate it.

A leaf module: it imports nothing from fedsafe (and torch only to read or write a torch file), so
every layer may use it.
"""

import io
import json
import math
import os
import uuid
from contextlib import contextmanager
from pathlib import Path


def regenerate_hint(path: str | Path) -> str:
    """What to type when a job's input file is damaged: a missing output is redone by the next
    run, and so is everything that depends on it."""
    return (f"delete it and run the workflow again, which regenerates it: `rm {path}` then "
            "`make run` (or the snakemake command you ran)")


@contextmanager
def atomic_path(path: str | Path):
    """A temporary path beside `path` to write to; renamed over `path` when the block ends, removed
    if it raises. Hidden and with `path`'s suffix (numpy adds `.npz` to a name without it), so
    globs of the folder's results and the tracking queue never see it. Created with the usual
    permissions (the umask), like any other file the run writes (docs/cluster.md)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.{uuid.uuid4().hex[:8]}{path.suffix}")
    try:
        yield tmp
        os.replace(tmp, path)  # atomic on one file system, and the temp file is beside the target
    finally:
        tmp.unlink(missing_ok=True)


def write_json(obj, path: str | Path) -> None:
    """Atomic JSON write; non-finite floats as JSON can hold them (NaN as null, "inf", "-inf")."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(_jsonable(obj), indent=1, sort_keys=True))


def _jsonable(obj):
    if isinstance(obj, float) and not math.isfinite(obj):
        return None if math.isnan(obj) else ("inf" if obj > 0 else "-inf")
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    return obj


def read_json(path: str | Path):
    try:
        return json.loads(Path(path).read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: corrupt or truncated JSON ({e}); {regenerate_hint(path)}") from e


def save_torch(obj, path: str | Path) -> None:
    """Atomic torch.save."""
    import torch

    with atomic_path(path) as tmp:
        torch.save(obj, tmp)


def load_torch(path: str | Path, device: str = "cpu"):
    """torch.load of a job file (weights_only: plain tensors, never pickled code), with an error
    that names the file and how to regenerate it instead of a bare unpickling error."""
    import torch

    kept = warmed(path)
    try:
        return torch.load(io.BytesIO(kept) if isinstance(kept, bytes) else path,
                          map_location=device, weights_only=True)
    except FileNotFoundError:
        raise
    except Exception as e:  # torch raises RuntimeError, EOFError, UnpicklingError, ...
        raise ValueError(f"{path}: cannot be read, corrupt or truncated ({type(e).__name__}: "
                         f"{str(e)[:200]}); {regenerate_hint(path)}") from e


def private_dir(path: str | Path) -> Path:
    """`path` created if missing, with mode 0o700 (also if it already existed): for folders that
    hold images of the data, patients' images on real data (fedsafe.privacy_files)."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    path.chmod(0o700)
    return path


# ---- a cell's files read once for all the attacks on it ----
# The warm job server (fedsafe.worker) reads an attack's input files before it forks the job's
# process, so every attack on one cell shares one read of the model files and one decompression
# of the dataset (fedsafe.data.prepare), through the fork's copy-on-write memory. Only the server
# fills this; a process that never called `warm` reads its files as usual. An entry is used while
# the file keeps its size and modification time, so a rewritten file is read again.
_WARM: dict[str, tuple[tuple[int, int], object]] = {}
_WARM_MAX = 64  # entries (a cell's files are a few MB): the server's memory stays bounded


def _signature(path: str) -> tuple[int, int]:
    st = os.stat(path)
    return st.st_mtime_ns, st.st_size


def warm(path: str | Path, load=None):
    """`load(path)` (default: the file's bytes), kept for `warmed(path)` in this process and the
    processes it forks; read again only when the file changed."""
    key = str(Path(path).resolve())
    signature = _signature(key)
    hit = _WARM.get(key)
    if hit is None or hit[0] != signature:
        if len(_WARM) >= _WARM_MAX:
            _WARM.pop(next(iter(_WARM)))  # the oldest: grids attack cell after cell
        _WARM[key] = (signature, load(Path(key)) if load else Path(key).read_bytes())
    return _WARM[key][1]


def warmed(path: str | Path):
    """What `warm` kept for `path`, or None (never warmed, or the file changed since)."""
    if not _WARM:
        return None
    key = str(Path(path).resolve())
    hit = _WARM.get(key)
    try:
        return hit[1] if hit is not None and hit[0] == _signature(key) else None
    except OSError:
        return None
