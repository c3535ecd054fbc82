"""`fedsafe relog RESULTS_DIR --experiment NAME`: mirror the job files under a results folder to
MLflow again (for jobs that ran while the tracker was unreachable). Replaces runs, never
duplicates them, so it is safe to run any number of times.

`fedsafe compare A.csv B.csv`: the metrics of two summaries that moved beyond their
intervals, the drift per metric over rows paired by seed, and the claim verdicts that changed.
`fedsafe publish RESULTS_DIR`: the run's verdicts into README.md, its claims and tables into docs/."""

import argparse
import json
from pathlib import Path


def relog(results_dir: Path, experiment: str, uri: str | None = None) -> int:
    """Log every train, attack and summary file under results_dir; returns the runs logged."""
    from fedsafe.tracking import log_attack, log_summary, log_train, tracking_uri

    uri = uri or tracking_uri({}, results_dir)
    n = 0
    specs = {}
    for f in sorted((results_dir / "train").rglob("train.json")):
        t = json.loads(f.read_text())
        specs[t["cell"]] = t["spec"]
        n += log_train(uri, experiment, t, [f.with_name("model.pt")]) is not None
    for f in sorted((results_dir / "attacks").rglob("*.json")):
        a = json.loads(f.read_text())
        if a["cell"] in specs:
            grids = sorted(f.parent.glob("*_reconstructions.png"))
            n += log_attack(uri, experiment, a, specs[a["cell"]], grids) is not None
    summary = results_dir / "summary.csv"
    if summary.exists():
        import pandas as pd

        config = pd.read_csv(summary, usecols=["config_hash"])["config_hash"]
        n += log_summary(uri, experiment, config.iloc[0] if len(config) else "", {
            "": [summary], "tables": sorted((results_dir / "tables").glob("*.*")),
            "plots": sorted((results_dir / "plots").rglob("*.*"))}) is not None
    return n


def main(argv=None) -> None:
    p = argparse.ArgumentParser(prog="fedsafe")
    sub = p.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("relog", help="log the job files under RESULTS_DIR to MLflow again")
    r.add_argument("results_dir", type=Path)
    r.add_argument("--experiment", required=True, help="the config's `experiment` name")
    r.add_argument("--tracking-uri", help="default: MLFLOW_TRACKING_URI, else "
                   "sqlite:///RESULTS_DIR/mlflow.db")
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
