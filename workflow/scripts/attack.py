from fedsafe.jobs import attack, setup_logging, tracking

setup_logging(snakemake.log[0])
attack(snakemake.params.train_spec, snakemake.params.attack_spec, snakemake.input.data,
       snakemake.input.model, snakemake.input.train, snakemake.output[0],
       tracking(snakemake.config), threads=snakemake.threads,
       checkpoints_path=snakemake.input.checkpoints, reference=snakemake.input.get("reference"),
       observed_path=snakemake.input.observed)
