from fedsafe.jobs import setup_logging
from fedsafe.results import write_tables

setup_logging(snakemake.log[0])
write_tables(snakemake.input[0], snakemake.output[0])
