"""Figures, then the summary, tables and figures mirrored to MLflow as the experiment's `summary`
run (a warning, not a failure, if the tracker is unreachable)."""

from pathlib import Path

from fedsafe.jobs import setup_logging
from fedsafe.plots import write_plots

setup_logging(snakemake.log[0])
# Inversion attacks with `save_images: true` leave grids and loss curves beside their JSON.
cell_dirs = {Path(f).parent for _, _, f in snakemake.params.attacks}
recon = {f"{d.relative_to(Path(snakemake.input.summary).parent / 'attacks')}/{png.stem}": png
         for d in cell_dirs for pattern in ("*_reconstructions.png", "*_loss.png")
         for png in d.glob(pattern)}
pngs = write_plots(snakemake.input.summary, Path(snakemake.output.frontier).parent, recon)

if snakemake.params.mlflow.get("enabled", True):
    from fedsafe.tracking import log_summary, tracking_uri

    results = Path(snakemake.input.summary).parent
    log_summary(tracking_uri(snakemake.params.mlflow, results), snakemake.params.experiment,
                snakemake.params.config_hash,
                {"": [snakemake.input.summary], "tables": list(snakemake.input.tables),
                 "plots": pngs + list(snakemake.output.svg)})
