from fedsafe.jobs import attack, setup_logging

setup_logging(snakemake.log[0])
attack(snakemake.params.train_spec, snakemake.params.attack_spec, snakemake.input.data,
       snakemake.input.model, snakemake.input.train, snakemake.output[0], snakemake.params.mlflow,
       snakemake.params.experiment, threads=snakemake.threads,
       reference=snakemake.input.get("reference"))
