"""Evasion results read as a robustness reviewer would (RobustBench / AutoAttack practice).

- Per-sample worst case: per replicate, norm and eps, a test sample is robust only if it survives
  every evasion attack run on the replicate (the attack rows' masks, over its fixed test subset).
  These rows (attack `worst_case`) are the robust accuracy of the trade-off table and the plots,
  for the global model and for the clients' received copies.
- Flags that catch a fake defense (Croce et al. 2020, "Reliable evaluation ..."; Carlini et al.
  2019, "On evaluating adversarial robustness"): a black-box attack beating the white-box ones,
  robust accuracy rising with eps, robust accuracy above zero at a large eps, and a model whose
  clean accuracy is not clearly above its test set's majority-class rate. A cell with a flagged
  replicate is never marked best in the tables.
"""

import numpy as np
import pandas as pd

from fedsafe.grid_keys import CELL, REPLICATE

MASKS = ("clean_mask", "robust_mask", "client_robust_masks")
WORST = "worst_case"
TOLERANCE = 0.02  # share of samples: differences below this are attack noise, not a symptom
LARGE_EPS = {"Linf": 0.3}  # no classifier keeps a robust sample at this budget
NOT_TRAINED_MARGIN = 0.05  # clean accuracy must beat the majority-class rate by this much


def _mask(bits: str, n: int) -> np.ndarray:
    return np.frombuffer(bits[:n].encode(), dtype=np.uint8) == ord("1")


def without_masks(row: dict) -> dict:
    return {k: v for k, v in row.items() if k not in MASKS}


def worst_case_rows(base: dict, results: list[dict]) -> list[dict]:
    """One row per (norm, eps) of the replicate's evasion attacks (attack JSONs `results`). Attacks
    with different `n_samples` share the prefix of one seeded permutation: the worst case is taken
    over the shortest."""
    groups: dict[tuple, list[tuple[str, dict]]] = {}
    for res in results:
        if res.get("family") != "evasion":
            continue
        for r in res["rows"]:
            if "robust_mask" in r:
                key = (r.get("norm", "Linf"), float(r["attack_value"]))
                groups.setdefault(key, []).append((res["attack"], r))
    rows = []
    for (norm, eps), items in sorted(groups.items()):
        n = min(len(r["robust_mask"]) for _, r in items)
        clean = _mask(items[0][1]["clean_mask"], n)
        robust = np.logical_and.reduce([_mask(r["robust_mask"], n) for _, r in items])
        row = {**base, "attack": WORST, "attack_type": WORST, "family": "evasion",
               "attack_param": "eps", "attack_value": eps, "norm": norm, "black_box": False,
               "eval_clean_accuracy": clean.mean(), "robust_accuracy": robust.mean(),
               "attack_success_rate": (clean & ~robust).sum() / clean.sum() if clean.any()
               else np.nan, "n_samples": n, "majority_rate": items[0][1].get("majority_rate"),
               "worst_of": "+".join(sorted({a for a, _ in items}))}
        client = [r["client_robust_masks"] for _, r in items if r.get("client_robust_masks")]
        if client and len({len(c) for c in client}) == 1:  # same copies (clients x draws)
            per_copy = [np.logical_and.reduce([_mask(c[k], n) for c in client])
                        for k in range(len(client[0]))]
            row["client_robust_accuracy"] = float(np.mean([m.mean() for m in per_copy]))
        rows.append(row)
    return rows


def _large(frame: pd.DataFrame) -> pd.Series:
    norm = frame["norm"].fillna("Linf") if "norm" in frame else pd.Series("Linf", frame.index)
    return pd.to_numeric(frame["attack_value"], errors="coerce") >= norm.map(LARGE_EPS).astype(
        float)


def below_large_eps(frame: pd.DataFrame) -> pd.DataFrame:
    """Rows below the large-eps sanity budget: what a robustness summary should rank."""
    return frame[~_large(frame)] if len(frame) else frame


def _rises(frame: pd.DataFrame) -> bool:
    """Robust accuracy rising with eps by more than the tolerance, within one attack and norm."""
    for _, g in frame.groupby(["attack", "norm"]):
        acc = g.sort_values("attack_value")["robust_accuracy"].to_numpy(dtype=float)
        if len(acc) > 1 and (np.diff(acc) > TOLERANCE).any():
            return True
    return False


def _black_box_stronger(frame: pd.DataFrame) -> bool:
    ev = frame[frame["attack"] != WORST]
    for _, g in ev.groupby(["norm", "attack_value"]):
        black, white = g[g["black_box"].astype(bool)], g[~g["black_box"].astype(bool)]
        if len(black) and len(white) and (
                black["robust_accuracy"].min() < white["robust_accuracy"].min() - TOLERANCE):
            return True
    return False


def _large_eps_robust(frame: pd.DataFrame) -> bool:
    worst = frame[frame["attack"] == WORST]
    return bool((worst.loc[_large(worst), "robust_accuracy"] > 0).any()) if len(worst) else False


def _not_trained(frame: pd.DataFrame) -> bool:
    if "majority_rate" not in frame:
        return False
    majority = pd.to_numeric(frame["majority_rate"], errors="coerce").dropna()
    return bool(len(majority)) and (
        frame["clean_accuracy"].iloc[0] < majority.iloc[0] + NOT_TRAINED_MARGIN)


FLAGS = {"not trained": _not_trained, "black-box beats white-box": _black_box_stronger,
         "robust acc. rises with eps": _rises, "robust at large eps": _large_eps_robust}


def replicate_flags(frame: pd.DataFrame) -> str:
    """The flags of one replicate's summary rows, '; '-joined ('' = none)."""
    ev = frame[frame["family"] == "evasion"] if "family" in frame else frame.iloc[0:0]
    if ev.empty or "robust_accuracy" not in ev:
        return ""
    ev = ev.assign(norm=ev["norm"].fillna("Linf") if "norm" in ev else "Linf",
                   black_box=ev["black_box"].fillna(False) if "black_box" in ev else False,
                   attack_value=pd.to_numeric(ev["attack_value"], errors="coerce"),
                   robust_accuracy=pd.to_numeric(ev["robust_accuracy"], errors="coerce"))
    return "; ".join(name for name, test in FLAGS.items() if test(ev))


def add_flags(summary: pd.DataFrame) -> pd.DataFrame:
    """The summary with a `flags` column: every row of a replicate carries its flags."""
    if summary.empty:
        return summary.assign(flags="")
    flags = {key: replicate_flags(g)
             for key, g in summary.groupby(REPLICATE, sort=False, dropna=False)}
    return summary.assign(flags=[flags[k] for k in summary[REPLICATE].itertuples(index=False,
                                                                                   name=None)])


def flag_text(flags: pd.Series) -> pd.Series:
    """Flags as strings (a CSV column without any flag reads back as NaN floats)."""
    return flags.map(lambda v: v if isinstance(v, str) else "")


def flags_by_point(df: pd.DataFrame) -> dict[tuple, str]:
    """Per cell (a table row): the union of its replicates' flags."""
    if "flags" not in df:
        return {}
    out = {}
    for key, g in df.groupby(CELL):
        names = sorted({f for s in flag_text(g["flags"]) for f in s.split("; ") if f})
        if names:
            out[key] = "; ".join(names)
    return out


def with_flags(text: pd.DataFrame, best: pd.DataFrame, flags: dict[tuple, str]):
    """A `flags` column for a rendered table (keys as `stats_table` writes them)."""
    by_text = {(d, f, f"{n:g}"): v for (d, f, n), v in flags.items()}
    keys = zip(text["dataset"], text["defense"], text["noise_multiplier"])
    text = text.assign(flags=[by_text.get(k, "") for k in keys]) if len(text) else text
    return text, best.assign(flags=False) if len(best) else best
