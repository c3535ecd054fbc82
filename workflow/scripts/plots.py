from pathlib import Path

from fedsafe.jobs import tracking
from fedsafe.worker import run

run("plots", snakemake.log[0], summary=snakemake.input.summary,
    claims_md=snakemake.input.claims, tables=list(snakemake.input.tables),
    out_dir=str(Path(snakemake.output.frontier).parent), svgs=list(snakemake.output.svg),
    image_dirs=list(snakemake.input.images),
    attacks_dir=snakemake.params.attacks_dir, config_hash=snakemake.params.config_hash,
    tracked=tracking(snakemake.config))
