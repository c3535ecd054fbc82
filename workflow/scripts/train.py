from fedsafe.jobs import tracking
from fedsafe.worker import run

run("train", snakemake.log[0], spec=snakemake.params.spec, data_path=snakemake.input.data,
    out_json=snakemake.output.metrics, tracked=tracking(snakemake.config),
    threads=snakemake.threads, gpus=snakemake.resources.get("gpu", 0),
    files={k: getattr(snakemake.output, k)
           for k in ("model", "checkpoints", "observed", "canaries", "clients")})
