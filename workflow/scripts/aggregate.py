from fedsafe.worker import run

run("aggregate", snakemake.log[0], expected=snakemake.params.expected,
    config_hash=snakemake.params.config_hash, csv=snakemake.output.csv,
    parquet=snakemake.output.parquet, missing=snakemake.output.missing)
