import contextlib
import functools
import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))


TEST_CONFIG = ROOT / ".test" / "config" / "config.yaml"


def base_config(**overrides) -> dict:
    """The tiny but complete grid of `.test/config/config.yaml` (what CI runs with `snakemake
    --directory .test`), fast enough for end-to-end tests; `overrides` replace top-level keys.
    Read anew on each call, so a test may change what it gets."""
    cfg = yaml.safe_load(TEST_CONFIG.read_text())
    cfg.update(overrides)
    return cfg


def snakemake(args: list[str], config: dict, workdir: Path, check: bool = True):
    """Run the real workflow on `config`, with results under `workdir`."""
    config = {**config, "results_dir": str(workdir / "results")}
    cfg_path = workdir / "config.yaml"
    cfg_path.write_text(yaml.safe_dump(config))
    cmd = [sys.executable, "-m", "snakemake", "--snakefile", str(ROOT / "Snakefile"),
           "--directory", str(workdir), "--configfile", str(cfg_path), *args]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=workdir)
    if check and proc.returncode != 0:
        raise AssertionError(f"snakemake failed:\n{proc.stdout}\n{proc.stderr}")
    return proc


def job_counts(dry_run_output: str) -> dict[str, int]:
    """Parse the 'Job stats' table that `snakemake -n` prints."""
    counts, in_table = {}, False
    for line in dry_run_output.splitlines():
        parts = line.split()
        if parts[:2] == ["job", "count"]:
            in_table = True
            continue
        if in_table and len(parts) == 2 and parts[1].isdigit():
            if parts[0] == "total":
                break
            counts[parts[0]] = int(parts[1])
    return counts


@contextlib.contextmanager
def server_inbox(received: list):
    """While the block runs, every message the in-process server pulls from its clients is also
    appended to `received` (what the server saw, to check what it could learn)."""
    from fedsafe.federation.grid import InProcessGrid

    pull = InProcessGrid.pull_messages

    def recording_pull(grid, ids):
        replies = pull(grid, ids)
        received.extend(replies)
        return replies

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(InProcessGrid, "pull_messages", recording_pull)
        yield received


@pytest.fixture
def workdir(tmp_path):
    return tmp_path


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(config, items):
    """Make `--dist loadgroup` honour the `xdist_group` marks again: pytest-xdist tells its
    scheduler a test's group by appending `@group` to the test's `_nodeid`, which pytest 9.2 no
    longer reads (node ids became structured, `_id`), so every group was silently split over the
    workers and the fixtures they share were built once per worker (pytest-dev/pytest-xdist#1386).
    Where xdist's suffix did not take, set it on the structured id, as xdist does on older pytest."""
    if not getattr(config.option, "loadgroup", False):  # only on loadgroup's workers
        return
    for item in items:
        names = {str(m.args[0] if m.args else m.kwargs.get("name", "default"))
                 for m in item.iter_markers("xdist_group")}
        suffix = "@" + "_".join(sorted(names))
        if names and not item.nodeid.endswith(suffix) and hasattr(item, "_id"):
            item._id = type(item._id).parse(item.nodeid + suffix)


@pytest.fixture(scope="module", autouse=True)
def _torch_threads_restored():
    """What a module does to torch's thread count (itself, or through code such as `train_cell`,
    which sets the cell's cpus) stays in that module: the next module on the same test worker
    starts with the count the worker started with (`make test`: one). Two threads per worker on
    two cores oversubscribe them, and the tests' small problems then run several times slower."""
    import torch

    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def pld_reference(q: float, z: float, count: int, delta: float = 1e-5) -> float:
    """dp_accounting's PLD epsilon of `count` Gaussian mechanisms (noise z), Poisson-subsampled at
    rate q (q >= 1: no sampling), at its own default resolution: the independent reference the
    accounting tests compare against. Cached: several tests and loops ask for the same values."""
    return _pld_reference(float(q), float(z), int(count), float(delta))


@functools.cache
def _pld_reference(q: float, z: float, count: int, delta: float) -> float:
    import dp_accounting

    acc = dp_accounting.pld.PLDAccountant()
    gauss = dp_accounting.GaussianDpEvent(z)
    acc.compose(gauss if q >= 1 else dp_accounting.PoissonSampledDpEvent(q, gauss), count)
    return acc.get_epsilon(delta)


@pytest.fixture(scope="session")
def prepared_data(tmp_path_factory):
    """`prepared_data(source, options, n_clients, seed)`: a prepared data folder, made once per
    test worker for each set of arguments and shared by the tests that ask for it (they only read
    it: `load_prepared` and `train_cell` never write there)."""
    from fedsafe.data.prepare import prepare

    made = {}

    def get(source: str, options: dict, n_clients: int, seed: int = 0) -> Path:
        key = json.dumps([source, options, n_clients, seed], sort_keys=True)
        if key not in made:
            made[key] = tmp_path_factory.mktemp("data")
            prepare(source, options, n_clients, seed, made[key])
        return made[key]

    return get


@pytest.fixture(scope="session")
def cell(prepared_data):
    """A small trained MRI cell shared by the attack tests (test_attacks, test_evasion; both in
    the xdist group "attacks", so one worker trains it once): the prepared data, the initial
    model (round-0 checkpoint) and the model centrally trained from it. Never mutated: attacks
    load the weights into fresh models."""
    import copy

    import numpy as np
    import torch

    from fedsafe import config_check
    from fedsafe.config import specs
    from fedsafe.data.prepare import load_prepared
    from fedsafe.defenses.base import Mechanism
    from fedsafe.federation.local import TrainSettings, local_train
    from fedsafe.models import build_model

    data = load_prepared(prepared_data("synthetic_brain_mri", {"image_size": 16, "n_samples": 400},
                                       3, 0))
    cfg = base_config(federation={"optimizer": "adam", "lr": 0.003})
    config_check.validate(cfg)
    spec = specs.train_spec(cfg, "mri", "none", "0", 0)
    torch.manual_seed(0)
    model = build_model("small_cnn", 1, 3, 16)
    init = copy.deepcopy(model.state_dict())
    x = np.concatenate([c[0] for c in data.clients])
    y = np.concatenate([c[1] for c in data.clients])
    update, _ = local_train(model, x, y, TrainSettings(local_epochs=15, optimizer="adam", lr=0.003),
                            Mechanism(), 0, 1, 0, {})
    trained = {k: init[k] + update[k] for k in init}
    return spec, data, init, trained


def cell_context(cell, defense="none", noise=0.0, parts=None, options=None):
    """The attack context of `cell` as if it had been trained under `defense`."""
    from fedsafe.attacks.context import AttackContext

    spec, data, init, trained = cell
    spec = {**spec, "defense": defense, "parts": parts or [defense], "noise": noise,
            "options": options or {}}
    sizes = [len(y) for _, y in data.clients]
    view = {1: {"clients": [0, 1, 2], "num_examples": sizes, "updates": [None] * 3
                if "secagg" in spec["parts"] else [{}] * 3, "aggregate": {}, "global_before": init}}
    return AttackContext(spec, data, trained, {0: init}, {"epsilon": None}, observed=view)
