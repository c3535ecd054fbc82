from fedsafe.worker import run

run("claims", snakemake.log[0], summary=snakemake.input.summary, out=snakemake.output.claims,
    prestated=snakemake.params.prestated)
