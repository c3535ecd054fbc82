"""`fedsafe relog RESULTS_DIR --experiment NAME`: mirror the job files under a results folder to
MLflow again (for jobs that ran while the tracker was unreachable). Replaces runs, never
duplicates them, so it is safe to run any number of times.

`fedsafe ui-link [--configfile CONFIG]`: the command that starts MLflow's UI on a config's store
and the link to its experiment's runs table.

`fedsafe compare A.csv B.csv`: the metrics of two summaries that moved beyond their
intervals, the drift per metric over rows paired by seed, and the claim verdicts that changed.
`fedsafe publish RESULTS_DIR`: the run's verdicts into README.md, its claims and tables into docs/."""

import argparse
import json
from pathlib import Path


def _span(path: Path, seconds: float = 0.0) -> dict:
    """A job's start and end as its file tells them: written at the end of the job, which took
    `seconds` (as recorded in the file)."""
    end = int(path.stat().st_mtime * 1000)
    return {"start_time": end - int(seconds * 1000), "end_time": end}


def relog(results_dir: Path, experiment: str, uri: str | None = None) -> int:
    """Log every train, attack and summary file under results_dir; returns the runs logged."""
    from fedsafe.tracking import log_attack, log_summary, log_train, tracking_uri

    uri = uri or tracking_uri({}, results_dir)
    n = 0
    specs = {}
    for f in sorted((results_dir / "train").rglob("train.json")):
        t = json.loads(f.read_text())
        specs[t["cell"]] = t["spec"]
        # the prepared data where rules/data.smk writes it (no dataset input if it is gone)
        data = results_dir / "data" / t["spec"]["dataset"] / "data.npz"
        n += log_train(uri, experiment, t, [f.with_name("model.pt")], data=data,
                       **_span(f, t.get("train_seconds", 0))) is not None
    for f in sorted((results_dir / "attacks").rglob("*.json")):
        a = json.loads(f.read_text())
        if a["cell"] in specs:
            grids = sorted(f.parent.glob("*_reconstructions.png"))
            n += log_attack(uri, experiment, a, specs[a["cell"]], grids,
                            **_span(f, a.get("seconds", 0))) is not None
    summary = results_dir / "summary.csv"
    if summary.exists():
        import pandas as pd

        config = pd.read_csv(summary, usecols=["config_hash"])["config_hash"]
        n += log_summary(uri, experiment, config.iloc[0] if len(config) else "", {
            "": [summary], "tables": sorted((results_dir / "tables").glob("*.*")),
            "plots": sorted((results_dir / "plots").rglob("*.*"))}, **_span(summary)) is not None
    return n


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
    r = sub.add_parser("relog", help="log the job files under RESULTS_DIR to MLflow again")
    r.add_argument("results_dir", type=Path)
    r.add_argument("--experiment", required=True, help="the config's `experiment` name")
    r.add_argument("--tracking-uri", help="default: MLFLOW_TRACKING_URI, else "
                   "sqlite:///RESULTS_DIR/mlflow.db")
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
    args = p.parse_args(argv)
    if args.cmd == "publish":
        from fedsafe.publish import publish

        publish(args.results_dir, args.configfile, commit=args.commit)
        return
    if args.cmd == "relog":
        print(f"logged {relog(args.results_dir, args.experiment, args.tracking_uri)} runs")
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
