"""Configuration: schema validation, id checks against the registries, and the grid of cells.

Imported by the Snakefile at parse time, so it stays light (no torch) and every error names the
offending config key before any job starts.
"""

import hashlib
import json
from pathlib import Path

import yaml

from fedsafe.attacks import ATTACKS, known_attacks
from fedsafe.data.registry import DATASETS, known_datasets
from fedsafe.defenses import MECHANISMS, has_noise, known_mechanisms
from fedsafe.defenses import check_options as check_defense_options
from fedsafe.options import check as check_options
from fedsafe.options import resolve

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
    from snakemake.utils import validate as schema_validate

    schema_validate(config, str(schema))
    check(config)


def check(config: dict) -> None:
    """Checks that a JSON schema cannot express: ids known to the registries, noise axes."""
    for name, ds in config["datasets"].items():
        source = ds.get("source", name)
        if source not in DATASETS:
            raise ConfigError(f"datasets.{name}: unknown dataset {source!r} (set `source:` to one "
                              f"of {known_datasets()})")
        _check_local_files(name, ds)
    for name, d in config["defenses"].items():
        parts = defense_parts(config, name)
        for p in parts:
            if p not in MECHANISMS:
                key = f"defenses.{name}.parts" if "parts" in d else f"defenses.{name}"
                raise ConfigError(f"{key}: unknown defense {p!r}; known: {known_mechanisms()} "
                                  "(combine them with `parts:`)")
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
    for name, a in config["attacks"].items():
        kind = a.get("type", name)
        if kind not in ATTACKS:
            key = f"attacks.{name}.type" if "type" in a else f"attacks.{name}"
            raise ConfigError(f"{key}: unknown attack {kind!r}; known: {known_attacks()}")
        try:
            check_options(f"attacks.{name}.options", ATTACKS[kind].options, a.get("options", {}))
        except ValueError as e:
            raise ConfigError(str(e)) from None
        if ATTACKS[kind].family == "inversion":
            _check_inversion_round(config, name, a.get("options", {}))


def clients_per_round(n_clients: int, fraction: float) -> int:
    """How many clients the server samples each round (at least one)."""
    return max(1, int(round(n_clients * fraction)))


def _check_inversion_round(config: dict, attack: str, options: dict) -> None:
    """An inversion attack reads the server's recorded view: its round must be observed."""
    fed = config["federation"]
    observed = [r for r in fed.get("observe_rounds", [1]) if r <= fed.get("rounds", 5)]
    rnd = options.get("round", observed[0] if observed else None)
    if rnd is None or rnd not in observed:
        raise ConfigError(f"attacks.{attack}.options.round: round {rnd} is not observed; "
                          f"federation.observe_rounds within the {fed.get('rounds', 5)} rounds: "
                          f"{observed}")
    only = options.get("datasets")
    unknown = [d for d in ([only] if isinstance(only, str) else only or []) if d not in
               config["datasets"]]
    if unknown:
        raise ConfigError(f"attacks.{attack}.options.datasets: {unknown} not in datasets "
                          f"{sorted(config['datasets'])}")
    if options.get("observation") == "gradient" and ATTACKS[config["attacks"][attack].get(
            "type", attack)].impl.endswith("run_fedavg"):
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
    return {"dataset": dataset, "defense": defense, "parts": defense_parts(config, defense),
            "noise": float(noise), "seed": int(seed),
            "options": config["defenses"][defense]["options"],
            "federation": config["federation"], "model": config["federation"]["model"],
            "data": dataset_spec(config, dataset)}


def attack_spec(config: dict, attack: str) -> dict:
    a = config["attacks"][attack]
    kind = a.get("type", attack)
    return {"attack": attack, "type": kind, "options": resolve(ATTACKS[kind].options, a["options"])}


def config_hash(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:12]
