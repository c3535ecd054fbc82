rule prepare_data:
    output:
        data=f"{RESULTS}/data/{{dataset}}/data.npz",
        manifest=f"{RESULTS}/data/{{dataset}}/manifest.json",
    log:
        f"{RESULTS}/logs/prepare_data/{{dataset}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/prepare_data/{{dataset}}.tsv"
    conda:
        "../envs/fedsafe.yaml"
    params:
        spec=lambda w: specs.dataset_spec(config, w.dataset),
    script:
        "../workflow/scripts/prepare_data.py"
