"""Tidy results: the summary table (one row per cell x attack x attack parameter) and the
comparison tables rendered from it, mean +- std over seeds."""

import json
from pathlib import Path

import pandas as pd

CELL_COLUMNS = ["dataset", "defense", "noise_multiplier", "seed"]
TRAIN_COLUMNS = ["clean_accuracy", "epsilon", "delta", "guarantee", "rounds", "train_seconds"]


def _train_row(train: dict) -> dict:
    s = train["spec"]
    eps = train.get("epsilon")
    return {"dataset": s["dataset"], "defense": s["defense"], "noise_multiplier": s["noise"],
            "seed": s["seed"], "clean_accuracy": train["clean_accuracy"],
            "epsilon": float(eps) if eps is not None else None, "delta": train.get("delta"),
            "guarantee": train["guarantee"], "rounds": train["rounds"],
            "train_seconds": train["train_seconds"]}


def summarise(train_files: list, attack_files: list, config_hash: str) -> pd.DataFrame:
    trains = {}
    for f in train_files:
        t = json.loads(Path(f).read_text())
        trains[t["cell"]] = _train_row(t)
    rows = []
    for f in attack_files:
        a = json.loads(Path(f).read_text())
        for r in a["rows"]:
            r = dict(r)
            r["eval_clean_accuracy"] = r.pop("clean_accuracy", None)
            rows.append({**trains[a["cell"]], "attack": a["attack"], "attack_type": a["type"],
                         "family": a["family"], **r})
    df = pd.DataFrame(rows)
    df.insert(0, "config_hash", config_hash)
    return df.sort_values(CELL_COLUMNS + ["attack", "attack_value"], kind="stable")


def _mean_std(series: pd.Series) -> str:
    s = series.dropna()
    if s.empty:
        return "-"
    if len(s) == 1:
        return f"{s.iloc[0]:.3f}"
    return f"{s.mean():.3f} ± {s.std(ddof=1):.3f}"


def comparison_table(df: pd.DataFrame) -> pd.DataFrame:
    """Rows: dataset x defense x noise. Columns: clean accuracy, epsilon and, per evasion attack
    and eps, robust accuracy and attack success rate."""
    keys = ["dataset", "defense", "noise_multiplier"]
    cells = df.drop_duplicates(CELL_COLUMNS)
    out = cells.groupby(keys).agg(clean_accuracy=("clean_accuracy", _mean_std),
                                  epsilon=("epsilon", _mean_std), guarantee=("guarantee", "first"),
                                  seeds=("seed", "nunique"))
    evasion = df[df["family"] == "evasion"]
    for (attack, value), g in evasion.groupby(["attack", "attack_value"]):
        by = g.groupby(keys)
        out[f"{attack} eps={value:g} robust acc"] = by["robust_accuracy"].agg(_mean_std)
        out[f"{attack} eps={value:g} ASR"] = by["attack_success_rate"].agg(_mean_std)
    return out.reset_index()


def write_tables(summary_csv: str | Path, out_md: str | Path) -> None:
    df = pd.read_csv(summary_csv)
    table = comparison_table(df)
    out = Path(out_md)
    out.parent.mkdir(parents=True, exist_ok=True)
    header = ("# Comparison\n\nMean ± std over seeds. Clean accuracy on the full test set; "
              "robust accuracy and attack success rate (ASR: share of correctly classified "
              "samples whose prediction flips) on the attacked subset. Epsilon is empty where "
              "the defense has no formal guarantee (see `guarantee`).\n\n")
    out.write_text(header + table.to_markdown(index=False) + "\n")
