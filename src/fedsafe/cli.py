"""`fedsafe relog RESULTS_DIR --experiment NAME`: mirror the job files under a results folder to
MLflow again (for jobs that ran while the tracker was unreachable). Replaces runs, never
duplicates them, so it is safe to run any number of times."""

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
    args = p.parse_args(argv)
    print(f"logged {relog(args.results_dir, args.experiment, args.tracking_uri)} runs")


if __name__ == "__main__":
    main()
