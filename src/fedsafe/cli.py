"""`fedsafe relog [--configfile CONFIG ...]`: mirror the grid's job files to MLflow again (for jobs
that ran while the tracker was unreachable), as `snakemake relog --cores 1` with those arguments:
the workflow knows every job's files. Replaces runs, never duplicates them, so it is safe to run
any number of times.

`fedsafe ui-link [--configfile CONFIG]`: the command that starts MLflow's UI on a config's store
and the link to its experiment's runs table.

`fedsafe compare A.csv B.csv`: the metrics of two summaries that moved beyond their
intervals, the drift per metric over rows paired by seed, and the claim verdicts that changed.
`fedsafe publish RESULTS_DIR`: the run's verdicts into README.md, its claims and tables into docs/."""

import argparse
import json
import subprocess
import sys
from pathlib import Path


def _span(path: Path, seconds: float = 0.0) -> dict:
    """A job's start and end as its file tells them: written at the end of the job, which took
    `seconds` (as recorded in the file)."""
    end = int(path.stat().st_mtime * 1000)
    return {"start_time": end - int(seconds * 1000), "end_time": end}


def relog(jobs: list[dict], summary: dict, experiment: str, uri: str) -> int:
    """Log the grid's job files that exist; returns the runs logged. `jobs` are the train jobs,
    each {"file": its train.json, "model", "data", "attacks": [{"file": JSON, "images": folder}]}
    and `summary` the report's files {"summary": csv, "tables": [...], "plots": [...]}, all as
    the rules declare them (rules/report.smk: relog)."""
    from fedsafe.jobs import reconstruction_grids
    from fedsafe.tracking import log_attack, log_summary, log_train

    n = 0
    for job in jobs:
        f = Path(job["file"])
        if not f.exists():
            continue
        t = json.loads(f.read_text())
        n += log_train(uri, experiment, t, [Path(job["model"])], data=Path(job["data"]),
                       **_span(f, t.get("train_seconds", 0))) is not None
        for attack in job["attacks"]:
            a_file = Path(attack["file"])
            if a_file.exists():
                a = json.loads(a_file.read_text())
                n += log_attack(uri, experiment, a, t["spec"],
                                reconstruction_grids(attack["images"]),
                                **_span(a_file, a.get("seconds", 0))) is not None
    csv = Path(summary["summary"])
    if csv.exists():
        import pandas as pd

        config = pd.read_csv(csv, usecols=["config_hash"])["config_hash"]
        n += log_summary(uri, experiment, config.iloc[0] if len(config) else "", {
            "": [csv], "tables": _existing(summary["tables"]),
            "plots": _existing(summary["plots"])}, **_span(csv)) is not None
    return n


def _existing(paths: list[str]) -> list[Path]:
    """The files among paths that exist, a declared folder's (plots/reconstructions) listed."""
    out = []
    for p in map(Path, paths):
        # a folder's files, less Snakemake's own marker (.snakemake_timestamp)
        out += ([f for f in p.iterdir() if f.is_file() and not f.name.startswith(".")]
                if p.is_dir() else [p] * p.exists())
    return sorted(out)


def ui_link(configfile: str, uri: str | None = None, port: int = 5000) -> str:
    """Where to look at the runs of the config's experiment (`fedsafe.tracking.where_to_look`)."""
    from fedsafe.config_check import load_config
    from fedsafe.tracking import tracking_uri, where_to_look

    config = load_config(configfile)
    uri = uri or tracking_uri(config.get("mlflow", {}), config["results_dir"])
    return where_to_look(uri, config["experiment"], port)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(prog="fedsafe")
    sub = p.add_subparsers(dest="cmd", required=True)
    sub.add_parser("relog", help="log the grid's job files to MLflow again: `snakemake relog "
                   "--cores 1` with the arguments that follow (e.g. --configfile CONFIG)")
    u = sub.add_parser("ui-link", help="print the command that starts MLflow's UI on the "
                       "config's store and the link to its experiment's runs table")
    u.add_argument("--configfile", default="config/config.yaml", help="the config that ran")
    u.add_argument("--tracking-uri", help="default: MLFLOW_TRACKING_URI, else the config's")
    u.add_argument("--port", type=int, default=5000, help="the local UI's port (default 5000)")
    c = sub.add_parser("compare", help="list the metrics of two summary.csv files that moved "
                       "beyond their 95%% intervals over seeds, the drift per metric (rows paired "
                       "by seed) and the claim verdicts that changed")
    c.add_argument("a", type=Path)
    c.add_argument("b", type=Path)
    c.add_argument("--atol", type=float, default=1e-9,
                   help="single-seed cells: how far means may differ (default 1e-9)")
    c.add_argument("--fail", action="store_true",
                   help="exit 1 if any metric moved or any claim verdict changed")
    pub = sub.add_parser("publish", help="copy RESULTS_DIR's verdicts into README.md and its "
                         "claims and tables into docs/results.md (docs/results-<name>.md for "
                         "config/<name>.yaml)")
    pub.add_argument("results_dir", type=Path)
    pub.add_argument("--configfile", default="config/config.yaml",
                     help="the config the results came from (named in the docs)")
    pub.add_argument("--commit", help="the commit whose code produced the results, if not HEAD's")
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["relog"]:  # the rest is Snakemake's (argparse would read its options as ours)
        raise SystemExit(subprocess.call([sys.executable, "-m", "snakemake", "relog", "--cores",
                                          "1", *argv[1:]]))
    args = p.parse_args(argv)
    if args.cmd == "publish":
        from fedsafe.publish import publish

        publish(args.results_dir, args.configfile, commit=args.commit)
        return
    if args.cmd == "ui-link":
        from fedsafe.config.schema import ConfigError
        from fedsafe.tracking import TrackerError

        try:
            print(ui_link(args.configfile, args.tracking_uri, args.port))
        except FileNotFoundError:
            raise SystemExit(f"--configfile: {args.configfile} does not exist") from None
        except ConfigError as err:
            raise SystemExit(f"config error: {err}") from None
        except TrackerError as err:
            raise SystemExit(f"fedsafe ui-link: {err}") from None
        return
    import pandas as pd

    from fedsafe.compare import compare, drift, verdict_changes

    a, b = pd.read_csv(args.a), pd.read_csv(args.b)
    moved, gaps, changed = compare(a, b, args.atol), drift(a, b), verdict_changes(a, b)
    print("## Metrics beyond their intervals\n")
    print(moved.to_markdown(index=False, floatfmt=".4g") if len(moved) else
          "No metric moved beyond its interval.")
    print("\n## Drift per metric (|A - B| over rows paired by seed)\n")
    print(gaps.to_markdown(index=False, floatfmt=".4g") if len(gaps) else "No paired rows.")
    print("\n## Claim verdicts that changed\n")
    print(changed.to_markdown(index=False) if len(changed) else "No claim verdict changed.")
    if args.fail and (len(moved) or len(changed)):
        raise SystemExit(1)


if __name__ == "__main__":
    main()
