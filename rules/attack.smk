# RMIA and LiRA also read the dataset's reference models (rules/reference.smk).
rule attack:
    input:
        data=rules.prepare_data.output.data,
        model=rules.train.output.model,
        checkpoints=rules.train.output.checkpoints,
        observed=rules.train.output.observed,
        canaries=rules.train.output.canaries,
        train=rules.train.output.metrics,
        reference=reference_input,
    output:
        ATTACK_JSON,
        images=directory(ATTACK_IMAGES),
    log:
        f"{RESULTS}/logs/attack/{REPLICATE}/{{attack}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/attack/{REPLICATE}/{{attack}}.tsv"
    conda:
        "../envs/fedsafe.yaml"
    threads: 1
    params:
        train_spec=lambda w: specs.train_spec(
            config, w.dataset, w.defense, w.noise, w.seed
        ),
        attack_spec=lambda w: specs.attack_spec(config, w.attack),
    script:
        "../workflow/scripts/attack.py"
