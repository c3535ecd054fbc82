from fedsafe.jobs import prepare, setup_logging

setup_logging(snakemake.log[0])
prepare(snakemake.params.spec, snakemake.output.data.rsplit("/", 1)[0])
