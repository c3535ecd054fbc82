rule train:
    input:
        data=rules.prepare_data.output.data,
    output:
        model=f"{RESULTS}/train/{CELL}/model.pt",
        checkpoints=f"{RESULTS}/train/{CELL}/checkpoints.pt",
        metrics=f"{RESULTS}/train/{CELL}/train.json",
        observed=f"{RESULTS}/train/{CELL}/observed.pt",
    log:
        f"{RESULTS}/logs/train/{CELL}.log",
    benchmark:
        f"{RESULTS}/benchmarks/train/{CELL}.tsv"
    conda:
        "../envs/fedsafe.yaml"
    threads: 2
    resources:
        gpu=0,
    params:
        spec=lambda w: fc.train_spec(config, w.dataset, w.defense, w.noise, w.seed),
        mlflow=config["mlflow"],
        experiment=config["experiment"],
    script:
        "../workflow/scripts/train.py"
