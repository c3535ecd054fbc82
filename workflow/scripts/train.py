from fedsafe.jobs import setup_logging, tracking, train

setup_logging(snakemake.log[0])
train(snakemake.params.spec, snakemake.input.data, snakemake.output.metrics,
      tracking(snakemake.config), threads=snakemake.threads,
      gpus=snakemake.resources.get("gpu", 0))
