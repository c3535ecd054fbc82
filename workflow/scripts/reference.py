from fedsafe.jobs import reference, setup_logging, tracking

setup_logging(snakemake.log[0])
reference(snakemake.params.spec, snakemake.input.data, snakemake.output.models,
          tracking(snakemake.config), threads=snakemake.threads)
