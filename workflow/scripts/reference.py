from fedsafe.jobs import tracking
from fedsafe.worker import run

run("reference", snakemake.log[0], spec=snakemake.params.spec, data_path=snakemake.input.data,
    out_path=snakemake.output.models, info_path=snakemake.output.info, tracked=tracking(snakemake.config),
    threads=snakemake.threads)
