from pathlib import Path

from fedsafe.worker import run

run("tables", snakemake.log[0], summary=snakemake.input.summary,
    missing=snakemake.input.missing, out_dir=str(Path(snakemake.output.comparison).parent))
