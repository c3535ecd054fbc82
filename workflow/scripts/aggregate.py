from fedsafe.jobs import setup_logging
from fedsafe.results import summarise

setup_logging(snakemake.log[0])
summary, missing = summarise(snakemake.params.expected, snakemake.params.config_hash)
summary.to_csv(snakemake.output.csv, index=False)
summary.to_parquet(snakemake.output.parquet, index=False)
missing.to_csv(snakemake.output.missing, index=False)
if len(missing):
    print(f"{len(missing)} jobs missing or stale, listed in {snakemake.output.missing}:\n{missing}")
