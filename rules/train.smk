rule train:
    input:
        data=rules.prepare_data.output.data,
    output:
        model=TRAIN_MODEL,
        checkpoints=f"{TRAIN_DIR}/checkpoints.pt",
        metrics=TRAIN_JSON,
        observed=f"{TRAIN_DIR}/observed.pt",
        # the audit's canaries; an archive without arrays where the replicate is not audited
        # (an output must exist, and one reader's check beats a rule per kind of replicate)
        canaries=f"{TRAIN_DIR}/canaries.npz",
        # one <partition>.jsonl per client that logs its own diagnostics (private cells)
        clients=directory(f"{TRAIN_DIR}/clients"),
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
