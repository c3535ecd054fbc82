from fedsafe.worker import run

run("prepare", snakemake.log[0], spec=snakemake.params.spec,
    out_dir=snakemake.output.data.rsplit("/", 1)[0])
