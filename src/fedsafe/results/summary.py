"""The summary table (one row per replicate x attack x attack parameter) from the job files that
match the current config, and the list of expected jobs whose file is missing or stale."""

import json
from pathlib import Path

import pandas as pd

from fedsafe import robustness as rb
from fedsafe.config import grid, hashing, specs
from fedsafe.grid_keys import REPLICATE


def spec_hash(spec: dict) -> str:
    """Hash of the spec a job ran with: a file whose hash differs from the current config's is
    stale (an older config), never mixed into the summary."""
    return hashing.config_hash(spec)


def expected_jobs(config: dict, train_file: str, attack_file: str) -> list[dict]:
    """Every job of the current config: its replicate (`cell`: the replicate's id), files and
    specs (the aggregate's checklist). The file patterns come from the rules' outputs
    ({dataset}, {defense}, {noise}, {seed}, {attack}), so paths are defined once, in the
    workflow."""
    jobs = []
    for c in grid.replicates(config):
        cell = grid.replicate_id(**c)
        attacks = [{"attack": a, "file": attack_file.format(**c, attack=a),
                    "spec": specs.attack_spec(config, a)} for a in grid.cell_attacks(config, **{
                        k: c[k] for k in ("dataset", "defense", "noise")})]
        jobs.append({"cell": cell, "file": train_file.format(**c),
                     "spec": specs.train_spec(config, c["dataset"], c["defense"], c["noise"],
                                              c["seed"]), "attacks": attacks})
    return jobs


def _load(path: str, expected_hash: str, fields=None) -> tuple[dict | None, str]:
    p = Path(path)
    if not p.exists():
        return None, "missing"
    obj = json.loads(p.read_text())
    found = obj["spec"] if fields is None else {k: obj.get(k) for k in fields}
    return (obj, "ok") if spec_hash(found) == expected_hash else (None, "stale")


def _number(x) -> float | None:
    return None if x is None else float(x)


def _train_row(train: dict) -> dict:
    s = train["spec"]
    return {"spec_hash": spec_hash(s), "dataset": s["dataset"], "defense": s["defense"],
            "noise_multiplier": s["noise"], "seed": s["seed"],
            "defense_parts": "+".join(s["parts"]), "guarantee": train["guarantee"],
            # JSON spells an infinite epsilon (noise 0) "inf": keep the column numeric
            "epsilon": _number(train.get("epsilon")), "delta": train.get("delta"),
            "rounds": train["rounds"], "rounds_run": train.get("rounds_run", train["rounds"]),
            # why training stopped before `rounds` (the privacy budget), else empty
            "stopped": (train.get("stopped") or {}).get("reason"),
            "clean_accuracy": train["clean_accuracy"],
            "n_test": train.get("n_test"),  # test images behind clean_accuracy (its sampling error)
            # the last round's change of test accuracy (a converged recipe: below 0.01)
            "last_round_change": train.get("last_round_change"),
            "test_loss": train.get("test_loss"), "train_seconds": train["train_seconds"],
            "startup_seconds": train.get("startup_seconds"),
            "lr": s["federation"]["lr"]}  # noise on updates reads against lr (fedsafe.claims)


def summarise(expected: list[dict], config_hash: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(summary, problems): the rows of every job file that matches the current config, and one
    row per expected job whose file is missing or stale (written by an older config)."""
    rows, problems = [], []

    def problem(job, replicate, status, file):
        problems.append({"cell": replicate["cell"], "job": job, "status": status, "file": file})

    for replicate in expected:
        train, status = _load(replicate["file"], spec_hash(replicate["spec"]))
        if train is None:
            problem("train", replicate, status, replicate["file"])
            for a in replicate["attacks"]:
                problem(f"attack:{a['attack']}", replicate, "not run (no model)", a["file"])
            continue
        base = {"config_hash": config_hash, **_train_row(train)}
        attack_rows, loaded = [], []
        for a in replicate["attacks"]:
            res, status = _load(a["file"], spec_hash(a["spec"]), ("attack", "type", "options"))
            if res is None:
                problem(f"attack:{a['attack']}", replicate, status, a["file"])
                continue
            loaded.append(res)
            for r in res["rows"]:
                r = rb.without_masks(r)
                r["eval_clean_accuracy"] = r.pop("clean_accuracy", None)
                attack_rows.append({**base, "attack": res["attack"], "attack_type": res["type"],
                                    "family": res["family"], **r,
                                    "attack_job_seconds": res["seconds"]})
        attack_rows += rb.worst_case_rows(base, loaded)
        rows += attack_rows or [base]  # a trained replicate without attack results still shows
    summary = pd.DataFrame(rows, columns=list(dict.fromkeys(
        ["config_hash", "spec_hash", *REPLICATE, "attack", "attack_type", "family",
         "attack_param", "attack_value"] + [k for r in rows for k in r])))
    summary = summary.sort_values(REPLICATE + ["attack", "attack_value"], kind="stable",
                                  key=lambda s: s.astype(str) if s.name == "attack_value" else s)
    missing = pd.DataFrame(problems, columns=["cell", "job", "status", "file"])
    return rb.add_flags(summary), missing
