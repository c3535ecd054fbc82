rule aggregate:
    input:
        train=cell_paths(f"{RESULTS}/train/{CELL}/train.json"),
        attacks=attack_paths(),
    output:
        f"{RESULTS}/summary.csv",
    params:
        config_hash=fc.config_hash(config),
    log:
        f"{RESULTS}/logs/aggregate.log",
    benchmark:
        f"{RESULTS}/benchmarks/aggregate.tsv"
    script:
        "../workflow/scripts/aggregate.py"


rule tables:
    input:
        rules.aggregate.output,
    output:
        f"{RESULTS}/tables/comparison.md",
    log:
        f"{RESULTS}/logs/tables.log",
    benchmark:
        f"{RESULTS}/benchmarks/tables.tsv"
    script:
        "../workflow/scripts/tables.py"
