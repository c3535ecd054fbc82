"""Configuration: schema validation, id checks against the registries, and the grid of cells.

Imported by the Snakefile at parse time, so it stays light (no torch) and every error names the
offending config key before any job starts.
"""

import copy
import functools
import hashlib
import json
from pathlib import Path

import yaml

from fedsafe.attacks import ATTACKS
from fedsafe.data.registry import DATASETS
from fedsafe.defenses import MECHANISMS, has_noise
from fedsafe.defenses import check_options as check_defense_options
from fedsafe.federation import clients_per_round
from fedsafe.models import MODELS
from fedsafe.registry import UnknownId

SCHEMA = Path(__file__).resolve().parents[2] / "config" / "schema.yaml"


class ConfigError(ValueError):
    pass


def load_config(path: str | Path, overrides: dict | None = None) -> dict:
    """Read, validate (filling defaults) and check a config file, as the Snakefile does."""
    config = yaml.safe_load(Path(path).read_text()) or {}
    config.update(overrides or {})
    validate(config)
    return config


def validate(config: dict, schema: Path = SCHEMA) -> None:
    """The schema (filling its defaults into `config`), then the registries' checks. Every
    error is a ConfigError that starts with the offending key."""
    import jsonschema

    checker, filler = _validators(str(schema))
    errors = list(checker.iter_errors(config))
    # A misspelt key also makes its intended key missing: name the misspelling.
    typos = [e for e in errors if e.validator == "additionalProperties"]
    error = typos[0] if typos else jsonschema.exceptions.best_match(errors)
    if error is not None:
        key = ".".join(map(str, error.absolute_path)) or "(top level)"
        raise ConfigError(f"{key}: {error.message}")
    filler.validate(config)
    check(config)


@functools.lru_cache
def _validators(schema: str):
    """A checking validator, and one that also fills in defaults (as snakemake.utils.validate
    does, but with the schema read once)."""
    import jsonschema

    rules = yaml.safe_load(Path(schema).read_text())
    cls = jsonschema.validators.validator_for(rules)
    properties = cls.VALIDATORS["properties"]

    def fill(validator, props, instance, subschema):
        if isinstance(instance, dict):
            for key, sub in props.items():
                if "default" in sub:
                    instance.setdefault(key, copy.deepcopy(sub["default"]))
        yield from properties(validator, props, instance, subschema)

    return cls(rules), jsonschema.validators.extend(cls, {"properties": fill})(rules)


def check(config: dict) -> None:
    """Checks that a JSON schema cannot express: ids known to the registries, every option
    against its registry declaration, noise axes, and keys that must agree with each other."""
    fed = config["federation"]
    if config.get("claims"):
        from fedsafe.claims import CLAIMS  # pandas: only for a config that pre-states levels

        known = [c.id for c in CLAIMS]
        for claim_id in config["claims"]:
            if claim_id not in known:
                raise ConfigError(f"claims.{claim_id}: unknown claim; known: {known}")
    _entry(MODELS, fed["model"], "federation.model")
    for key in ("checkpoint_rounds", "observe_rounds"):
        beyond = [r for r in fed[key] if r > fed["rounds"]]
        if beyond:
            raise ConfigError(f"federation.{key}: {beyond} beyond federation.rounds "
                              f"({fed['rounds']})")
    for name, ds in config["datasets"].items():
        source = ds.get("source", name)
        _entry(DATASETS, source, f"datasets.{name}.source" if "source" in ds else
               f"datasets.{name}")
        try:
            DATASETS.check_options(source, ds["options"], f"datasets.{name}.options")
        except ValueError as e:
            raise ConfigError(str(e)) from None
        _check_fits(config, name)
        _check_local_files(name, ds)
        _check_packages(name, ds)
    for name, d in config["defenses"].items():
        parts = defense_parts(config, name)
        for p in parts:
            _entry(MECHANISMS, p, f"defenses.{name}.parts" if "parts" in d else f"defenses.{name}")
        try:
            check_defense_options(name, parts, d.get("options", {}))
        except ValueError as e:
            raise ConfigError(str(e)) from None
        if has_noise(parts) and "noise_multipliers" not in d:
            raise ConfigError(f"defenses.{name}.noise_multipliers: required, {parts} has noise")
        if not has_noise(parts) and "noise_multipliers" in d:
            raise ConfigError(f"defenses.{name}.noise_multipliers: {parts} has no noise, so it "
                              "runs once; remove the key")
        if "secagg" in parts:
            _check_secagg_clients(config, name)
    _check_audit(config)
    for name, a in config["attacks"].items():
        kind = a.get("type", name)
        entry = _entry(ATTACKS, kind, f"attacks.{name}.type" if "type" in a else f"attacks.{name}")
        try:
            ATTACKS.check_options(kind, a.get("options", {}), f"attacks.{name}.options")
        except ValueError as e:
            raise ConfigError(str(e)) from None
        unknown = [d for d in a.get("datasets", []) if d not in config["datasets"]]
        if unknown:
            raise ConfigError(f"attacks.{name}.datasets: {unknown} not in datasets "
                              f"{sorted(config['datasets'])}")
        if entry.meta.family == "inversion":
            _check_inversion_round(config, name, a.get("options", {}))


def _entry(registry, name: str, where: str):
    """The registry's entry `name`; an unknown id is a ConfigError naming `where` and the known
    ids."""
    try:
        return registry.get(name, where)
    except UnknownId as e:
        raise ConfigError(str(e)) from None


def _check_audit(config: dict) -> None:
    audited = config.get("audit", {}).get("defenses", [])
    for key, known in (("defenses", config["defenses"]), ("datasets", config["datasets"])):
        for d in config.get("audit", {}).get(key, []):
            if d not in known:
                raise ConfigError(f"audit.{key}: {d!r} is not in this grid; known: {sorted(known)}")
    for name in audited:
        d = config["defenses"][name]
        if "dp_fedavg" in defense_parts(config, name) and d.get("options", {}).get("mode") == \
                "distributed":
            raise ConfigError(f"audit.defenses: {name!r} is distributed DP-FedAvg; canary "
                              "clients are audited against the central mechanism only (mode: "
                              "central)")
    for name, a in config["attacks"].items():
        if a.get("type", name) == "privacy_audit" and not audited:
            raise ConfigError(f"attacks.{name}: privacy_audit needs audited cells; list their "
                              "defenses in audit.defenses")


def _check_inversion_round(config: dict, attack: str, options: dict) -> None:
    """An inversion attack reads the server's recorded view: its round must be observed."""
    fed = config["federation"]
    observed = [r for r in fed.get("observe_rounds", [1]) if r <= fed.get("rounds", 5)]
    rnd = options.get("round", observed[0] if observed else None)
    if rnd is None or rnd not in observed:
        raise ConfigError(f"attacks.{attack}.options.round: round {rnd} is not observed; "
                          f"federation.observe_rounds within the {fed.get('rounds', 5)} rounds: "
                          f"{observed}")
    if options.get("observation") == "gradient" and ATTACKS.get(config["attacks"][attack].get(
            "type", attack)).meta.update_only:
        raise ConfigError(f"attacks.{attack}.options.observation: the multi-step attack inverts "
                          "the recorded update (observation: update)")


def _check_secagg_clients(config: dict, defense: str) -> None:
    """SecAgg+ masks pairwise: every round needs at least two sampled clients."""
    fraction = config["federation"].get("fraction_train", 1.0)
    for name, ds in config["datasets"].items():
        k = clients_per_round(ds["n_clients"], fraction)
        if k < 2:
            raise ConfigError(f"defenses.{defense}: secagg needs at least 2 clients per round; "
                              f"datasets.{name} samples {k} (n_clients {ds['n_clients']} x "
                              f"federation.fraction_train {fraction})")


def _check_fits(config: dict, name: str) -> None:
    """The images fit the model, and every client can get at least one training image."""
    ds = config["datasets"][name]
    source, model = ds.get("source", name), config["federation"]["model"]
    meta, options = DATASETS.get(source).meta, DATASETS.resolve(source, ds["options"])
    size, smallest = options[meta.size_option], MODELS.get(model).meta.min_image_size
    if size < smallest:
        raise ConfigError(f"datasets.{name}.options.{meta.size_option}: {size} is smaller than "
                          f"federation.model {model} takes ({smallest})")
    n = options[meta.samples_option] if meta.samples_option else None
    if n is not None:
        test = options.get("test_fraction", 0.0)
        pool = int(n * (1 - test) * (1 - ds["holdout_fraction"]))
        if ds["n_clients"] > pool:
            raise ConfigError(f"datasets.{name}.n_clients: {ds['n_clients']} clients but at most "
                              f"{pool} training images to share ({meta.samples_option} {n})")


def _check_packages(name: str, ds: dict) -> None:
    """Optional packages a dataset needs, before any job (the loader says the same at run time)."""
    import importlib.util

    if ds.get("source", name) == "medmnist" and ds["options"].get("flag") and \
            importlib.util.find_spec("medmnist") is None:
        from fedsafe.data.loaders import MEDMNIST_INSTALL

        raise ConfigError(f"datasets.{name}.options.flag: MedMNIST class names and downloads need "
                          f"the optional medmnist package: `{MEDMNIST_INSTALL}`")


def _check_local_files(name: str, ds: dict) -> None:
    """Data that must be downloaded by hand: stop before any job if it is not where it should be."""
    options = ds.get("options", {})
    for key in ("root", "npz_path"):
        if key in options and not Path(options[key]).expanduser().exists():
            hint = f"; get it from {ds['download']}" if "download" in ds else ""
            raise ConfigError(f"datasets.{name}.options.{key}: {options[key]} not found{hint}")


def defense_parts(config: dict, defense: str) -> list[str]:
    return list(config["defenses"][defense].get("parts", [defense]))


def fmt_noise(x: float) -> str:
    """One spelling per value in paths and tables (0.010 and 0.01 are the same cell)."""
    return f"{float(x):g}"


def noise_values(config: dict, defense: str) -> list[str]:
    d = config["defenses"][defense]
    if not has_noise(defense_parts(config, defense)):
        return ["0"]
    return list(dict.fromkeys(fmt_noise(x) for x in d["noise_multipliers"]))


def cell_id(dataset: str, defense: str, noise, seed) -> str:
    """A training cell's id, also its path under results/train/ (rules/common.smk: CELL)."""
    return f"{dataset}/{defense}/noise_{fmt_noise(noise)}/seed_{seed}"


def cells(config: dict) -> list[dict]:
    """Every training cell of the grid: (dataset, defense, noise, seed)."""
    return [{"dataset": ds, "defense": d, "noise": n, "seed": s}
            for ds in config["datasets"] for d in config["defenses"]
            for n in noise_values(config, d) for s in config["seeds"]]


def dataset_spec(config: dict, dataset: str) -> dict:
    ds = config["datasets"][dataset]
    return {"dataset": dataset, "source": ds.get("source", dataset), "options": ds["options"],
            "n_clients": ds["n_clients"], "partition": ds["partition"], "seed": ds["seed"],
            "holdout_fraction": ds["holdout_fraction"]}


def train_spec(config: dict, dataset: str, defense: str, noise: str, seed: int | str) -> dict:
    """Everything that determines a trained model, and nothing else (so attack options never
    trigger retraining)."""
    spec = {"dataset": dataset, "defense": defense, "parts": defense_parts(config, defense),
            "noise": float(noise), "seed": int(seed),
            "options": config["defenses"][defense]["options"],
            "federation": config["federation"], "model": config["federation"]["model"],
            "data": dataset_spec(config, dataset)}
    if audited(config, dataset, defense, noise):  # only these carry the key: others unchanged
        a = config["audit"]  # client-level guarantees get canary clients (fedsafe/canaries.py)
        kind = "update" if "dp_fedavg" in spec["parts"] else a.get("kind", "noise")
        spec["canaries"] = {"n": int(a.get("canaries", 1000)), "kind": kind}
    return spec


def audited(config: dict, dataset: str, defense: str, noise) -> bool:
    """The cell trains with canaries (the privacy audit's): its defense is in `audit.defenses`
    and, where given, its dataset and noise multiplier in `audit.datasets` / `noise_multipliers`."""
    a = config.get("audit", {})
    noises = a.get("noise_multipliers")
    return (defense in a.get("defenses", []) and dataset in a.get("datasets", [dataset])
            and (noises is None or fmt_noise(noise) in {fmt_noise(n) for n in noises}))


def cell_attacks(config: dict, dataset: str, defense: str, noise) -> list[str]:
    """The attacks run on a cell: those of its dataset (`attacks.<id>.datasets`, default all), and
    the privacy audit only on audited cells."""
    return [a for a, v in config["attacks"].items()
            if dataset in v.get("datasets", [dataset])
            and (v.get("type", a) != "privacy_audit" or audited(config, dataset, defense, noise))]


def needs_reference(config: dict, attack: str) -> bool:
    return ATTACKS.get(config["attacks"][attack].get("type", attack)).meta.needs_reference


def reference_spec(config: dict, dataset: str, seed: int | str) -> dict:
    """What determines the reference models of a dataset: its data, the target's recipe (model,
    federation settings) and the seed; never a defense or an attack option."""
    ref = config.get("reference_models", {})
    return {"dataset": dataset, "seed": int(seed), "model": config["federation"]["model"],
            "federation": config["federation"], "n_models": int(ref.get("n", 8)),
            "training": ref.get("training", "centralised"), "data": dataset_spec(config, dataset)}


def attack_spec(config: dict, attack: str) -> dict:
    a = config["attacks"][attack]
    kind = a.get("type", attack)
    return {"attack": attack, "type": kind, "options": ATTACKS.resolve(kind, a["options"])}


# Keys that change where results are reported, never what they are: not hashed into the results'
# config hash, and never a rule param (a param change reruns the job).
TRACKING_KEYS = ("mlflow", "experiment")


def results_hash(config: dict) -> str:
    """Hash of everything in the config that can change a result (the summary's config_hash)."""
    return config_hash({k: v for k, v in config.items() if k not in TRACKING_KEYS})


def config_hash(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:12]
