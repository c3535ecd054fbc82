from fedsafe.jobs import setup_logging, tracking, train

setup_logging(snakemake.log[0])
train(snakemake.params.spec, snakemake.input.data, snakemake.output.metrics,
      tracking(snakemake.config), threads=snakemake.threads,
      gpus=snakemake.resources.get("gpu", 0),
      files={k: getattr(snakemake.output, k) for k in ("model", "checkpoints", "observed")})
