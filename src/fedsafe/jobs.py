"""One function per workflow rule. `workflow/scripts/*.py` only unpack Snakemake's objects and
call these, so every job can also be run and tested without Snakemake."""

import logging
import time
from pathlib import Path

from fedsafe.files import read_json, write_json
from fedsafe.tracking_queue import log_call

log = logging.getLogger("fedsafe")


def replicate_id(spec: dict) -> str:
    from fedsafe.config.grid import replicate_id as make_id

    return make_id(spec["dataset"], spec["defense"], spec["noise"], spec["seed"])


def _set_threads(threads: int) -> None:
    import torch

    torch.set_num_threads(max(1, threads))


def prepare(spec: dict, out_dir: str | Path) -> dict:
    from fedsafe.data.prepare import prepare as prepare_data

    t0 = time.time()
    options = {**spec["options"], "partition": spec["partition"],
               "holdout_fraction": spec["holdout_fraction"]}
    manifest = prepare_data(spec["source"], options, spec["n_clients"], spec["seed"], Path(out_dir))
    log.info("prepared %s in %.1fs: %s", spec["dataset"], time.time() - t0,
             [c["size"] for c in manifest["clients"]])
    return manifest


def tracking(config: dict) -> dict | None:
    """Where jobs log: read by the job scripts from Snakemake's config at run time, never passed
    as a rule param, so changing the tracking server or experiment never reruns a job (params
    are part of Snakemake's rerun triggers). None when tracking is off."""
    from fedsafe.tracking import tracking_uri

    cfg = config.get("mlflow", {})
    if not cfg.get("enabled", True):
        return None
    tracked = {"uri": tracking_uri(cfg, config.get("results_dir", "results")),
               "experiment": config.get("experiment", "fedsafe")}
    if cfg.get("upload_images"):  # reconstruction grids go to MLflow only when opted in
        tracked["upload_images"] = True
    return tracked


def train(spec: dict, data_path: str | Path, out_json: str | Path, files: dict,
          tracked: dict | None = None, threads: int = 1, gpus: int = 0) -> dict:
    """Train a cell; `files` are the rule's other outputs: "model", "checkpoints", "observed",
    "canaries" (an archive without arrays unless the cell is audited) and "clients" (the folder
    of the clients' own logs)."""
    from fedsafe.federation.simulation import train_cell

    started = time.time()  # the span of the job's MLflow run
    _set_threads(threads)
    cell = replicate_id(spec)
    log.info("training %s", cell)
    data_dir = Path(data_path).parent
    # a sample-level audited cell trains on its data plus the included canaries (client-level
    # canaries join the server's sums instead: federation/simulation.py)
    from fedsafe.attacks.membership.canaries import add_canaries
    from fedsafe.canaries import SAMPLE_KINDS

    canaried = spec.get("canaries", {}).get("kind") in SAMPLE_KINDS
    Path(files["canaries"]).parent.mkdir(parents=True, exist_ok=True)
    if canaried:
        data_dir = add_canaries(data_dir, spec, Path(out_json).parent, files["canaries"])
    elif not spec.get("canaries"):  # not audited: no canaries (the audit refuses such a cell)
        import numpy as np

        np.savez(files["canaries"])
    result = train_cell(data_dir, spec, Path(out_json).parent, threads, gpus, files)
    if canaried:
        import shutil

        shutil.rmtree(data_dir)  # the canaries file keeps what the audit needs
    result.update(cell=cell, spec=spec)
    write_json(result, out_json)
    if tracked:
        log_call("log_train", tracked["uri"], tracked["experiment"], result,
                 [Path(files["model"])], data=data_path, started=started)
    log.info("done %s: clean accuracy %.3f, epsilon %s", cell, result["clean_accuracy"],
             result["epsilon"])
    return result


def reference(spec: dict, data_path: str | Path, out_path: str | Path, info_path: str | Path,
              tracked: dict | None = None, threads: int = 1) -> dict:
    """Train the reference models of one (dataset, recipe, seed), shared by RMIA and LiRA:
    the models to out_path, their recipe, sizes and cost to info_path (JSON)."""
    from fedsafe.attacks.membership.reference_models import train_reference_models
    from fedsafe.data.prepare import load_prepared
    from fedsafe.federation.local import pick_device

    started = time.time()  # the span of the job's MLflow run
    _set_threads(threads)
    info = train_reference_models(load_prepared(Path(data_path).parent), spec, Path(out_path),
                                  pick_device(spec["federation"]["device"]))
    info = {**info, "spec": spec}
    write_json(info, info_path)
    if tracked:
        log_call("log_reference", tracked["uri"], tracked["experiment"], info,
                 [Path(info_path)], data=data_path, started=started)
    log.info("reference models of %s seed %s: %d in %.1fs", spec["dataset"], spec["seed"],
             info["n_models"], info["seconds"])
    return info


def attack(train_spec: dict, attack_spec: dict, data_path: str | Path, model_path: str | Path,
           checkpoints_path: str | Path, observed_path: str | Path, canaries_path: str | Path,
           train_json: str | Path, out_json: str | Path, images_dir: str | Path,
           tracked: dict | None = None, threads: int = 1,
           reference: str | Path | None = None) -> list[dict]:
    """Run one attack on a trained cell (its files are the train rule's outputs); the result to
    out_json, any reconstruction grids and loss curves to images_dir (made, empty if none)."""
    from fedsafe.attacks import ATTACKS
    from fedsafe.attacks.context import load_context, run_attack
    from fedsafe.federation.local import pick_device  # not .simulation: no Flower import here

    started = time.time()  # the span of the job's MLflow run
    _set_threads(threads)
    cell, kind = replicate_id(train_spec), attack_spec["type"]
    images = Path(images_dir)
    images.mkdir(parents=True, exist_ok=True)  # the rule's output, even when it stays empty
    files = {"model": model_path, "checkpoints": checkpoints_path, "observed": observed_path,
             "canaries": canaries_path}
    ctx = load_context(Path(data_path).parent, {k: Path(v) for k, v in files.items()},
                       train_spec, read_json(train_json),
                       pick_device(train_spec["federation"]["device"]), images,
                       Path(reference) if reference else None)
    log.info("attack %s (%s) on %s", attack_spec["attack"], kind, cell)
    t0 = time.time()
    rows = run_attack(kind, ctx, attack_spec["options"])
    for row in rows:
        log.info("  %s", {k: round(v, 4) if isinstance(v, float) else v for k, v in row.items()})
    result = {"cell": cell, "attack": attack_spec["attack"], "type": kind,
              "family": ATTACKS.get(kind).meta.family, "options": attack_spec["options"],
              "rows": rows, "seconds": time.time() - t0}
    write_json(result, out_json)
    if tracked:
        log_call("log_attack", tracked["uri"], tracked["experiment"], result, train_spec,
                 reconstruction_grids(images), upload_images=tracked.get("upload_images", False),
                 started=started)
    return rows


def reconstruction_grids(images_dir: str | Path) -> list[Path]:
    """The reconstruction grids in an attack's image folder (beside them: loss curves)."""
    return sorted(Path(images_dir).glob("*_reconstructions.png"))


def aggregate(expected: list[dict], config_hash: str, csv: str, parquet: str,
              missing: str) -> None:
    """summary.csv (and .parquet) from every job file of the grid; missing.csv lists the rest."""
    from fedsafe.results.summary import summarise

    summary, problems = summarise(expected, config_hash)
    summary.to_csv(csv, index=False)
    summary.to_parquet(parquet, index=False)
    problems.to_csv(missing, index=False)
    if len(problems):
        log.warning("%d jobs missing or stale, listed in %s:\n%s", len(problems), missing,
                    problems)


def tables(summary: str, missing: str, out_dir: str) -> None:
    from fedsafe.results.render import write_tables

    write_tables(summary, missing, Path(out_dir))


def claims(summary: str, out: str, prestated: dict | None = None) -> None:
    from fedsafe.claims import write_claims

    write_claims(summary, out, prestated)


def plots(summary: str, claims_md: str, tables: list[str], out_dir: str, svgs: list[str],
          image_dirs: list[str], attacks_dir: str, config_hash: str,
          tracked: dict | None = None) -> None:
    """Figures, then the summary, claims, tables and figures mirrored to MLflow as the
    experiment's `summary` run. `image_dirs` are the attacks' image folders (rules/attack.smk):
    inversion attacks with `save_images: true` leave grids and loss curves there."""
    from fedsafe.plots import write_plots

    started = time.time()  # the span of the job's MLflow run
    attacks_dir = Path(attacks_dir)
    # named by replicate (the image folder's parent) and image, as before the per-attack folders
    recon = {f"{Path(d).parent.relative_to(attacks_dir)}/{png.stem}": png
             for d in image_dirs for pattern in ("*_reconstructions.png", "*_loss.png")
             for png in sorted(Path(d).glob(pattern))}
    pngs = write_plots(summary, Path(out_dir), recon)
    if tracked:
        log_call("log_summary", tracked["uri"], tracked["experiment"], config_hash,
                 {"": [summary, claims_md], "tables": list(tables),
                  "plots": [str(p) for p in pngs] + list(svgs)},
                 upload_images=tracked.get("upload_images", False), started=started)
