from fedsafe.jobs import setup_logging, train

setup_logging(snakemake.log[0])
train(snakemake.params.spec, snakemake.input.data, snakemake.output.metrics,
      snakemake.params.mlflow, snakemake.params.experiment,
      threads=snakemake.threads, gpus=snakemake.resources.get("gpu", 0))
