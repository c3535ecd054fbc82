# fedsafe: datasets x defenses x noise multipliers x attacks x seeds, as one DAG.
#   prepare_data -> train (once per replicate) -> attack (its model) -> aggregate -> tables, plots


# The default grid, unless a --configfile is given: that one replaces it (merging would add the
# default datasets, defenses and attacks to, say, a paper's grid).
if not workflow.overwrite_configfiles:

    configfile: "config/config.yaml"


report: "report/workflow.rst"


include: "rules/common.smk"


rule all:
    default_target: True
    input:
        f"{RESULTS}/summary.csv",
        f"{RESULTS}/tables/comparison.md",
        f"{RESULTS}/claims.md",
        f"{RESULTS}/plots/frontier.png",


include: "rules/data.smk"
include: "rules/train.smk"
include: "rules/reference.smk"
include: "rules/attack.smk"
include: "rules/report.smk"
