import os
import sys
from pathlib import Path

from snakemake.utils import min_version, validate

min_version("9.0")

# The logic lives in the fedsafe package (src/); make it importable here and in every job.
SRC = str(Path(workflow.basedir) / "src")
sys.path.insert(0, SRC)
os.environ["PYTHONPATH"] = os.pathsep.join(
    p for p in (SRC, os.environ.get("PYTHONPATH")) if p
)

# envs/fedsafe.yaml installs this checkout with `pip install -e ${FEDSAFE_ROOT}`
os.environ.setdefault("FEDSAFE_ROOT", str(Path(workflow.basedir)))

from fedsafe import config as fc

validate(config, "../config/schema.yaml")
try:
    fc.check(config)
except fc.ConfigError as err:
    raise WorkflowError(f"config error: {err}")

RESULTS = config["results_dir"]
CELLS = fc.cells(config)
CELL = "{dataset}/{defense}/noise_{noise}/seed_{seed}"


def _alternatives(values):
    return "|".join(sorted({str(v).replace(".", r"\.") for v in values}))


wildcard_constraints:
    dataset=_alternatives(config["datasets"]),
    defense=_alternatives(config["defenses"]),
    noise=_alternatives(c["noise"] for c in CELLS),
    seed=_alternatives(config["seeds"]),
    attack=_alternatives(config["attacks"]),


def cell_paths(pattern):
    return [pattern.format(**c) for c in CELLS]


def attack_paths():
    return [
        f"{RESULTS}/attacks/{CELL}/{{attack}}.json".format(**c, attack=a)
        for c in CELLS
        for a in config["attacks"]
    ]
