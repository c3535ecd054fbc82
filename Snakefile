# fedsafe: datasets x defenses x noise multipliers x attacks x seeds, as one DAG.
#   prepare_data -> train (once per cell) -> attack (reuses the trained cell) -> aggregate -> tables


configfile: "config/config.yaml"


include: "rules/common.smk"


rule all:
    input:
        f"{RESULTS}/summary.csv",
        f"{RESULTS}/tables/comparison.md",
    default_target: True


include: "rules/data.smk"
include: "rules/train.smk"
include: "rules/attack.smk"
include: "rules/report.smk"
