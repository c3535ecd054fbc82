# Reference models of RMIA and LiRA: trained once per (dataset, seed) with the target's recipe and
# reused by every replicate and attack of that dataset and seed (fedsafe.attacks.membership.reference_models).
rule reference:
    input:
        data=rules.prepare_data.output.data,
    output:
        models=REFERENCE,
        info=f"{REFERENCE_DIR}/reference.json",
    log:
        f"{RESULTS}/logs/reference/{{dataset}}/seed_{{seed}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/reference/{{dataset}}/seed_{{seed}}.tsv"
    conda:
        "../envs/fedsafe.yaml"
    threads: 1
    params:
        spec=lambda w: specs.reference_spec(config, w.dataset, w.seed),
    script:
        "../workflow/scripts/reference.py"
