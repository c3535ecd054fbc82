rule train:
    input:
        data=rules.prepare_data.output.data,
    output:
        model=f"{TRAIN_DIR}/model.pt",
        checkpoints=f"{TRAIN_DIR}/checkpoints.pt",
        metrics=TRAIN_JSON,
        observed=f"{TRAIN_DIR}/observed.pt",
    log:
        f"{RESULTS}/logs/train/{REPLICATE}.log",
    benchmark:
        f"{RESULTS}/benchmarks/train/{REPLICATE}.tsv"
    conda:
        "../envs/fedsafe.yaml"
    threads: 1
    resources:
        gpu=0,
    params:
        spec=lambda w: specs.train_spec(config, w.dataset, w.defense, w.noise, w.seed),
    script:
        "../workflow/scripts/train.py"
