"""Folders that hold images of the data: reconstruction grids (originals over their
reconstructions) are patients' images on real data. On a shared file system the usual umask
(022) lets every user of the cluster read what a job writes, so these folders are made readable
by their owner only (docs/cluster.md)."""

from pathlib import Path

from fedsafe.files import private_dir


def image_dirs(config: dict) -> list[Path]:
    """The folders under which a (validated) config's run writes reconstruction grids: none
    unless an attack has `save_images: true`. The parents, not the grids' own folders: Snakemake
    deletes and recreates a rule's output folder (plots/reconstructions) before the job."""
    from fedsafe.config.specs import attack_spec

    if not any(attack_spec(config, a)["options"].get("save_images") for a in config["attacks"]):
        return []
    results = Path(config["results_dir"])
    return [results / "attacks", results / "plots"]


def protect_images(config: dict) -> str | None:
    """Before the first job of a run: the image folders made owner-only; returns a warning that
    names them (None when no attack saves images)."""
    dirs = [private_dir(d) for d in image_dirs(config)]
    if not dirs:
        return None
    real = sorted(name for name, ds in config["datasets"].items()
                  if not ds["source"].startswith("synthetic"))
    what = f"of {', '.join(real)} (patients' images)" if real else "(synthetic images)"
    upload = config.get("mlflow", {}).get("upload_images", False)
    return (f"save_images: reconstruction grids {what} are written under "
            f"{', '.join(map(str, dirs))} (readable by you only) and embedded in a --report; "
            + ("mlflow.upload_images: true uploads them to MLflow too" if upload else
               "MLflow does not get them (mlflow.upload_images: false)"))
