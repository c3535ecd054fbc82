"""The grid a config declares (vocabulary: fedsafe.grid_keys): its replicates, the noise values
of a defense, the audited cells and the attacks run on a cell."""

from fedsafe.attacks import ATTACKS
from fedsafe.defenses import has_noise


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


def replicate_id(dataset: str, defense: str, noise, seed) -> str:
    """A replicate's id, also its path under results/train/ (rules/common.smk: REPLICATE)."""
    return f"{dataset}/{defense}/noise_{fmt_noise(noise)}/seed_{seed}"


def replicates(config: dict) -> list[dict]:
    """Every replicate of the grid: (dataset, defense, noise, seed)."""
    return [{"dataset": ds, "defense": d, "noise": n, "seed": s}
            for ds in config["datasets"] for d in config["defenses"]
            for n in noise_values(config, d) for s in config["seeds"]]


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
