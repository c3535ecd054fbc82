from fedsafe.jobs import setup_logging
from fedsafe.results import summarise

setup_logging(snakemake.log[0])
summarise(snakemake.input.train, snakemake.input.attacks, snakemake.params.config_hash).to_csv(
    snakemake.output[0], index=False)
