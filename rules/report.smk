from fedsafe import results as fr

# Set `allow_missing: true` (e.g. `--config allow_missing=true`) to aggregate whatever train and
# attack files exist after a `--keep-going` run with failed cells; the missing ones are listed
# in missing.csv and in the tables. By default the aggregate waits for every job of the grid.
EXPECTED = fr.expected_jobs(config, RESULTS)
PLOTS = ("accuracy_vs_noise", "robust_vs_eps", "ssim_vs_noise", "frontier")


def aggregate_inputs(wildcards):
    files = [j["file"] for j in EXPECTED] + [
        a["file"] for j in EXPECTED for a in j["attacks"]
    ]
    if config.get("allow_missing", False):
        return [f for f in files if os.path.exists(f)]
    return files


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
    params:
        expected=EXPECTED,
        config_hash=fc.config_hash(config),
    conda:
        "../envs/fedsafe.yaml"
    script:
        "../workflow/scripts/aggregate.py"


rule tables:
    input:
        summary=rules.aggregate.output.csv,
        missing=rules.aggregate.output.missing,
    output:
        **{
            f"{name}_{fmt}": f"{RESULTS}/tables/{name}.{fmt}"
            for name in fr.TABLES
            for fmt in ("md", "tex")
        },
        **{
            f"{name}_html": report(
                f"{RESULTS}/tables/{name}.html",
                caption=f"../report/{name}.rst",
                category="Tables",
                labels={"table": title},
            )
            for name, title in fr.TABLES.items()
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


rule plots:
    input:
        summary=rules.aggregate.output.csv,
        tables=rules.tables.output,
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
    params:
        attacks=[
            (j["cell"], a["attack"], a["file"]) for j in EXPECTED for a in j["attacks"]
        ],
        mlflow=config["mlflow"],
        experiment=config["experiment"],
        config_hash=fc.config_hash(config),
    conda:
        "../envs/fedsafe.yaml"
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
    run:
        from fedsafe.cli import relog
        from fedsafe.tracking import tracking_uri

        uri = tracking_uri(config["mlflow"], RESULTS)
        n = relog(Path(RESULTS), config["experiment"], uri)
        Path(log[0]).write_text(f"re-logged {n} runs to {uri}\n")
