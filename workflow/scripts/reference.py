from fedsafe.jobs import reference, setup_logging

setup_logging(snakemake.log[0])
reference(snakemake.params.spec, snakemake.input.data, snakemake.output.models,
          threads=snakemake.threads)
