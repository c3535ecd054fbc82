"""`fedsafe relog RESULTS_DIR`: mirror the job files under a results folder to MLflow again (for
jobs that ran while the tracker was unreachable)."""

import argparse
import json
from pathlib import Path


def relog(results_dir: Path, experiment: str, uri: str | None) -> int:
    from fedsafe.jobs import _tags
    from fedsafe.tracking import log_job, tracking_uri

    uri = uri or tracking_uri({}, results_dir)
    n = 0
    for f in sorted((results_dir / "train").rglob("train.json")):
        t = json.loads(f.read_text())
        log_job(uri, experiment, t["cell"], "train", t["spec"],
                {k: v for k, v in t.items() if k != "history"}, _tags(t["spec"]), t["history"])
        n += 1
    return n


def main(argv=None) -> None:
    p = argparse.ArgumentParser(prog="fedsafe")
    sub = p.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("relog", help="log the job files under RESULTS_DIR to MLflow again")
    r.add_argument("results_dir", type=Path)
    r.add_argument("--experiment", required=True)
    r.add_argument("--tracking-uri")
    args = p.parse_args(argv)
    print(f"logged {relog(args.results_dir, args.experiment, args.tracking_uri)} runs")
