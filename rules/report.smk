rule aggregate:
    input:
        aggregate_inputs,
    output:
        csv=report(
            f"{RESULTS}/summary.csv",
            caption="../report/summary.rst",
            category="Tables",
            labels={"table": "summary (every job, tidy)"},
        ),
        parquet=f"{RESULTS}/summary.parquet",
        missing=report(
            f"{RESULTS}/missing.csv",
            caption="../report/missing.rst",
            category="Tables",
            labels={"table": "missing or stale jobs"},
        ),
    log:
        f"{RESULTS}/logs/aggregate.log",
    benchmark:
        f"{RESULTS}/benchmarks/aggregate.tsv"
    conda:
        "../envs/fedsafe.yaml"
    params:
        expected=EXPECTED,
        config_hash=hashing.results_hash(config),
    script:
        "../workflow/scripts/aggregate.py"


rule tables:
    input:
        summary=rules.aggregate.output.csv,
        missing=rules.aggregate.output.missing,
    output:
        **{
            f"{name}_{fmt}": f"{RESULTS}/tables/{name}.{fmt}"
            for name in TABLES
            for fmt in ("md", "tex")
        },
        **{
            f"{name}_html": report(
                f"{RESULTS}/tables/{name}.html",
                caption=f"../report/{name}.rst",
                category="Tables",
                labels={"table": title},
            )
            for name, title in TABLES.items()
        },
        comparison=f"{RESULTS}/tables/comparison.md",
    log:
        f"{RESULTS}/logs/tables.log",
    benchmark:
        f"{RESULTS}/benchmarks/tables.tsv"
    conda:
        "../envs/fedsafe.yaml"
    script:
        "../workflow/scripts/tables.py"


rule claims:
    input:
        summary=rules.aggregate.output.csv,
    output:
        claims=report(
            f"{RESULTS}/claims.md",
            caption="../report/claims.rst",
            category="Claims",
            labels={"document": "claims and verdicts"},
        ),
    log:
        f"{RESULTS}/logs/claims.log",
    benchmark:
        f"{RESULTS}/benchmarks/claims.tsv"
    conda:
        "../envs/fedsafe.yaml"
    params:
        prestated=config.get("claims", {}),
    script:
        "../workflow/scripts/claims.py"


rule plots:
    input:
        summary=rules.aggregate.output.csv,
        tables=rules.tables.output,
        claims=rules.claims.output.claims,
        images=image_inputs,
    output:
        **{
            name: report(
                f"{RESULTS}/plots/{name}.png",
                caption=f"../report/{name}.rst",
                category="Plots",
                labels={"figure": name.replace("_", " ")},
            )
            for name in PLOTS
        },
        svg=expand(f"{RESULTS}/plots/{{name}}.svg", name=PLOTS),
        reconstructions=report(
            directory(f"{RESULTS}/plots/reconstructions"),
            patterns=["{name}.png"],
            caption="../report/reconstructions.rst",
            category="Reconstructions",
            labels={"cell and attack": "{name}"},
        ),
    log:
        f"{RESULTS}/logs/plots.log",
    benchmark:
        f"{RESULTS}/benchmarks/plots.tsv"
    conda:
        "../envs/fedsafe.yaml"
    params:
        attacks_dir=ATTACKS_DIR,
        config_hash=hashing.results_hash(config),
    script:
        "../workflow/scripts/plots.py"


# Not part of `all`: `snakemake relog --cores 1` mirrors every job file to MLflow again (after
# jobs ran while the tracking server was unreachable). Files are the source of truth.
localrules:
    relog,


rule relog:
    input:
        rules.aggregate.input,
    log:
        f"{RESULTS}/logs/relog.log",
    conda:
        "../envs/fedsafe.yaml"
    params:
        results=RESULTS,
        jobs=[
            {
                "file": job["file"],
                "model": files["file"],
                "data": rules.prepare_data.output.data.format(
                    dataset=job["spec"]["dataset"]
                ),
                "attacks": [
                    {"file": a["file"], "images": i["file"]}
                    for a, i in zip(job["attacks"], files["attacks"])
                ],
            }
            for job, files in zip(EXPECTED, MODELS_AND_IMAGES)
        ],
        # plain paths: the rules' file objects hold their rule, which does not pickle
        summary={
            "summary": str(rules.aggregate.output.csv),
            "tables": [str(f) for f in rules.tables.output],
            "plots": [str(f) for f in rules.plots.output],
        },
    script:
        "../workflow/scripts/relog.py"
