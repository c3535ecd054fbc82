import os
import sys
from pathlib import Path

from snakemake.utils import min_version

min_version("9.0")

# The logic lives in the fedsafe package (src/, installed by `make install` or envs/); importable
# here even before it is installed.
sys.path.insert(0, str(Path(workflow.basedir) / "src"))

# envs/fedsafe.yaml installs this checkout with `pip install -e ${FEDSAFE_ROOT}`
os.environ.setdefault("FEDSAFE_ROOT", str(Path(workflow.basedir)))

from fedsafe import config_check
from fedsafe.config import grid, hashing, specs
from fedsafe.config.schema import ConfigError
from fedsafe.plots import PLOTS
from fedsafe.results.render import TABLES
from fedsafe.results.summary import expected_jobs

try:
    config_check.validate(config)
except ConfigError as err:
    raise WorkflowError(f"config error: {err}")


# Before the first job of a real run (onstart: not in a dry run, a report, or each SLURM job):
# a tracking server that is down or refuses the credentials is reported now, not after the
# first training; folders that receive reconstruction grids are made readable by their owner.
onstart:
    from fedsafe import privacy_files, tracking

    try:
        tracking.check(config)
    except tracking.TrackerError as err:
        raise WorkflowError(f"config error: {err}")
    if images := privacy_files.protect_images(config):
        logger.warning(images)


RESULTS = config["results_dir"]
# one replicate (a cell at one seed, fedsafe.grid_keys): the path of its train and attack files
REPLICATES = grid.replicates(config)
REPLICATE = "{dataset}/{defense}/noise_{noise}/seed_{seed}"


def _alternatives(values):
    return "|".join(sorted({str(v).replace(".", r"\.") for v in values}))


wildcard_constraints:
    dataset=_alternatives(config["datasets"]),
    defense=_alternatives(config["defenses"]),
    noise=_alternatives(c["noise"] for c in REPLICATES),
    seed=_alternatives(config["seeds"]),
    attack=_alternatives(config["attacks"]),


# Every job file's path, defined once here: the rules' outputs use them, and the aggregate's
# checklist (fedsafe.results.summary.expected_jobs) formats them for every replicate of the grid.
TRAIN_DIR = f"{RESULTS}/train/{REPLICATE}"
TRAIN_JSON = f"{TRAIN_DIR}/train.json"
TRAIN_MODEL = f"{TRAIN_DIR}/model.pt"
ATTACKS_DIR = f"{RESULTS}/attacks"
ATTACK_JSON = f"{ATTACKS_DIR}/{REPLICATE}/{{attack}}.json"
# the attack's reconstruction grids and loss curves (empty unless it saves images)
ATTACK_IMAGES = f"{ATTACKS_DIR}/{REPLICATE}/{{attack}}"
REFERENCE_DIR = f"{RESULTS}/reference/{{dataset}}/seed_{{seed}}"
REFERENCE = f"{REFERENCE_DIR}/reference.pt"


def reference_input(wildcards):
    """The reference models, for the attacks that need them (an empty list for the others)."""
    if not grid.needs_reference(config, wildcards.attack):
        return []
    return REFERENCE.format(dataset=wildcards.dataset, seed=wildcards.seed)


# Set `allow_missing: true` (e.g. `--config allow_missing=true`) to aggregate whatever train and
# attack files exist after a `--keep-going` run with failed jobs; the missing ones are listed
# in missing.csv and in the tables. By default the aggregate waits for every job of the grid.
EXPECTED = expected_jobs(config, TRAIN_JSON, ATTACK_JSON)
# the same jobs' models and image folders (the grid formats any pattern of the rules' outputs)
MODELS_AND_IMAGES = expected_jobs(config, TRAIN_MODEL, ATTACK_IMAGES)


def _existing(files):
    if config.get("allow_missing", False):
        return [f for f in files if os.path.exists(f)]
    return files


def aggregate_inputs(wildcards):
    return _existing(
        [j["file"] for j in EXPECTED]
        + [a["file"] for j in EXPECTED for a in j["attacks"]]
    )


def image_inputs(wildcards):
    """Every attack's image folder, for the plots' reconstruction grids."""
    return _existing([a["file"] for j in MODELS_AND_IMAGES for a in j["attacks"]])
