"""Figures, then the summary, claims, tables and figures mirrored to MLflow as the experiment's
`summary` run (a warning, not a failure, if the tracker is unreachable)."""

from pathlib import Path

from fedsafe.jobs import setup_logging, tracking
from fedsafe.plots import write_plots

setup_logging(snakemake.log[0])
# Inversion attacks with `save_images: true` leave grids and loss curves beside their JSON.
attacks_dir = Path(snakemake.params.attacks_dir)
cell_dirs = {Path(f).parent for _, _, f in snakemake.params.attacks}
recon = {f"{d.relative_to(attacks_dir)}/{png.stem}": png
         for d in cell_dirs for pattern in ("*_reconstructions.png", "*_loss.png")
         for png in d.glob(pattern)}
pngs = write_plots(snakemake.input.summary, Path(snakemake.output.frontier).parent, recon)

tracked = tracking(snakemake.config)
if tracked:
    from fedsafe.tracking import log_summary

    log_summary(tracked["uri"], tracked["experiment"], snakemake.params.config_hash,
                {"": [snakemake.input.summary, snakemake.input.claims],
                 "tables": list(snakemake.input.tables),
                 "plots": pngs + list(snakemake.output.svg)})
