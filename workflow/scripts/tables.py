from pathlib import Path

from fedsafe.jobs import setup_logging
from fedsafe.results import write_tables

setup_logging(snakemake.log[0])
write_tables(snakemake.input.summary, snakemake.input.missing,
             Path(snakemake.output.comparison).parent)
