"""Loading a config and checking it: the schema (fedsafe.config.schema, filling its defaults),
then what a schema cannot express: ids known to the registries and the claims, every option
against its registry declaration, and keys that must agree with each other. Every error is a
ConfigError that starts with the offending key, raised before any job starts.

Above the reporting layer: it reads the claim ids (fedsafe.claims), and the claims read the
results, which read the grid (fedsafe.config). The Snakefile runs `validate` at parse time.
"""

from pathlib import Path

import yaml

from fedsafe.attacks import ATTACKS
from fedsafe.config.grid import defense_parts
from fedsafe.config.schema import SCHEMA, ConfigError, validate_schema
from fedsafe.data.registry import DATASETS
from fedsafe.defenses import MECHANISMS, has_noise
from fedsafe.defenses import check_options as check_defense_options
from fedsafe.federation import clients_per_round
from fedsafe.models import MODELS, build_model
from fedsafe.registry import UnknownId


def load_config(path: str | Path, overrides: dict | None = None) -> dict:
    """Read, validate (filling defaults) and check a config file, as the Snakefile does."""
    config = yaml.safe_load(Path(path).read_text()) or {}
    config.update(overrides or {})
    validate(config)
    return config


def validate(config: dict, schema: Path = SCHEMA) -> None:
    """The schema (filling its defaults into `config`), then the registries' checks."""
    validate_schema(config, schema)
    check(config)


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
        if "he" in parts:
            _check_he_capacity(config, name)
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
        if entry.meta.family in ("inversion", "malicious"):  # both read the observed round
            _check_inversion_round(config, name, a.get("options", {}))
        if entry.meta.family == "malicious":
            _check_imprint_model(config, name)


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
    _check_canary_capacity(config, audited)
    for name, a in config["attacks"].items():
        if a.get("type", name) == "privacy_audit" and not audited:
            raise ConfigError(f"attacks.{name}: privacy_audit needs audited cells; list their "
                              "defenses in audit.defenses")


def _check_canary_capacity(config: dict, audited: list[str]) -> None:
    """Canary clients need as many orthogonal directions as there are canaries: more than the
    model's parameters give stops the run here, where the dataset's options fix the model's shape
    (the training job checks the others, naming the same key). Torch is imported only for a
    config that audits a client-level cell; the model is built on the meta device (no memory)."""
    client_level = [d for d in audited if "dp_fedavg" in defense_parts(config, d)]
    wanted = config.get("audit", {}).get("datasets") or list(config["datasets"])
    if not client_level:
        return
    from fedsafe.canaries import CanaryClients
    from fedsafe.config.specs import canary_count

    n = canary_count(config, ["dp_fedavg"])
    for name in wanted:
        model = _meta_model(config, name)
        if model is None:
            continue
        d = sum(p.numel() for p in model.parameters())
        try:
            CanaryClients.check_count(n, d, key="audit.client_canaries")
        except ValueError as e:
            raise ConfigError(f"{e} (dataset {name}, model {config['federation']['model']})") \
                from None


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


def _check_imprint_model(config: dict, attack: str) -> None:
    """The malicious server puts an imprint block (a linear layer on the flattened image) in front
    of the model: the model must take images, which a model entry says by its smallest image."""
    model = config["federation"]["model"]
    if getattr(MODELS.get(model).meta, "min_image_size", None) is None:
        raise ConfigError(f"attacks.{attack}: federation.model {model!r} does not take images, so "
                          "no imprint block can be put in front of it")


def _check_he_capacity(config: dict, defense: str) -> None:
    """The CKKS parameters must carry the model's update in one Flower message, for every
    dataset's model shape (built on the meta device: no memory)."""
    from fedsafe.defenses import ckks

    options = MECHANISMS.resolve("he", {k: v for k, v in config["defenses"][defense].get(
        "options", {}).items() if k in MECHANISMS.options("he")})
    for name in config["datasets"]:
        model = _meta_model(config, name)
        if model is None:
            continue
        try:
            ckks.check(f"defenses.{defense}.options", options,
                       sum(v.numel() for v in model.state_dict().values()))
        except ValueError as e:
            raise ConfigError(f"{e} (dataset {name}, model {config['federation']['model']})") \
                from None


def _meta_model(config: dict, dataset: str):
    """The federation's model for `dataset`'s images and classes, on the meta device (shapes, no
    memory); None where the registry cannot say before the data is prepared, or for an unknown
    source (reported elsewhere). Imports torch: only configs that need a model's shape call it."""
    ds = config["datasets"].get(dataset, {})
    entry = DATASETS.entries.get(ds.get("source"))
    meta = entry.meta if entry else None
    if meta is None or meta.channels is None or meta.classes is None:
        return None
    import torch

    options = DATASETS.resolve(ds["source"], ds.get("options", {}))
    classes = options[meta.classes] if isinstance(meta.classes, str) else meta.classes
    with torch.device("meta"):
        return build_model(config["federation"]["model"], meta.channels, classes,
                           options[meta.size_option])


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
