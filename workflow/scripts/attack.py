from fedsafe.jobs import tracking
from fedsafe.worker import run

run("attack", snakemake.log[0], train_spec=snakemake.params.train_spec,
    attack_spec=snakemake.params.attack_spec, data_path=snakemake.input.data,
    model_path=snakemake.input.model, checkpoints_path=snakemake.input.checkpoints,
    observed_path=snakemake.input.observed, canaries_path=snakemake.input.canaries,
    train_json=snakemake.input.train, out_json=snakemake.output[0],
    images_dir=snakemake.output.images, tracked=tracking(snakemake.config),
    threads=snakemake.threads, reference=snakemake.input.get("reference"))
