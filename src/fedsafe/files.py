"""The jobs' files: written atomically, so a crash never leaves a half-written file that a rerun
would trust, and read back with an error that names the file and how to regenerate it.

A leaf module: it imports nothing from fedsafe (and torch only to read or write a torch file), so
every layer may use it.
"""

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

    try:
        return torch.load(path, map_location=device, weights_only=True)
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
