"""The tables' raw material: long frames of one value per replicate and column (`value`, its
sampling error `se`, the table `column` and the summary `metric`), one builder per table."""

import json

import numpy as np
import pandas as pd

from fedsafe import robustness as rb
from fedsafe.grid_keys import REPLICATE
from fedsafe.results.sampling import numeric, rms, sampling_se, scores_se


def family(df: pd.DataFrame, name: str) -> pd.DataFrame:
    """The summary rows of one attack family (evasion, inversion, membership)."""
    return df[df["family"] == name] if "family" in df else df.iloc[0:0]


def _setting(param, value) -> str:
    if pd.isna(param):
        return ""
    return f"{param}={value:g}" if isinstance(value, (int, float)) else f"{param}={value}"


def _long(frame: pd.DataFrame, metric: str, column: str) -> pd.DataFrame:
    """One value per replicate for one output column; the tables' raw material."""
    if metric not in frame or frame.empty:
        return pd.DataFrame()
    out = frame.assign(se=sampling_se(frame, metric)).groupby(REPLICATE, as_index=False).agg(
        value=(metric, "mean"), se=("se", rms))
    return out.assign(column=column, metric=metric)


def _settings(frame: pd.DataFrame, always: bool = False) -> list[tuple]:
    """(attack, value, suffix) per attack setting; the suffix names the value where an attack
    has several (or always)."""
    s = frame.drop_duplicates(["attack", "attack_param", "attack_value"])
    many = (s.groupby("attack")["attack"].transform("size") > 1) | always
    return [(r.attack, r.attack_value, _setting(r.attack_param, r.attack_value) if m else "")
            for r, m in zip(s.itertuples(), many)]


def _column(frame: pd.DataFrame, setting: tuple, metric: str, label: str) -> pd.DataFrame:
    attack, value, suffix = setting
    same = frame["attack_value"].eq(value) | (frame["attack_value"].isna() & pd.isna(value))
    return _long(frame[(frame["attack"] == attack) & same], metric,
                 f"{label} {attack} {suffix}".strip())


def fedsafe_long(df: pd.DataFrame) -> pd.DataFrame:
    ev = family(df, "evasion")
    ev = ev[pd.to_numeric(ev["attack_value"], errors="coerce").ne(0)]  # eps 0 = clean accuracy
    metrics = {"attack_success_rate": "ASR", "transfer_rate": "transfer"}
    transfer = ev[ev["attack"] != rb.WORST]  # the worst case is per sample, not per example
    return pd.concat([_long(df, "clean_accuracy", "clean acc.")] + [
        _column(ev if m != "transfer_rate" else transfer, s, m, label)
        for m, label in metrics.items()
        for s in _settings(ev if m != "transfer_rate" else transfer, True)])


def medpfl_long(df: pd.DataFrame) -> pd.DataFrame:
    inv = _with_setting(family(df, "inversion"))
    metrics = {"ssim": "SSIM", "psnr": "PSNR (dB)", "mse": "MSE",
               "reconstruction_success_rate": "recon. success"}
    return pd.concat([pd.DataFrame()] + [
        _column(inv, s, m, label) for s in _settings(inv) for m, label in metrics.items()])


def worst_case(df: pd.DataFrame) -> pd.DataFrame:
    """The per-sample worst case over a replicate's evasion attacks (`fedsafe.robustness`),
    without the large-eps sanity points (where every model must fall to 0)."""
    ev = family(df, "evasion")
    return rb.below_large_eps(ev[ev["attack"] == rb.WORST])


def tradeoff_long(df: pd.DataFrame) -> pd.DataFrame:
    """Worst case per seed: robust accuracy per sample over every evasion attack (the lowest over
    eps), the highest SSIM and AUC over attacks."""
    def worst(frame, metric, how, column):  # the row itself, so its sampling error comes along
        if metric not in frame or frame.empty:
            return pd.DataFrame()
        f = frame.assign(value=numeric(frame, metric), se=sampling_se(frame, metric))
        f = f.dropna(subset=["value"]).sort_values("value", ascending=how == "min", kind="stable")
        return (f.drop_duplicates(REPLICATE)[REPLICATE + ["value", "se"]]
                .assign(column=column, metric=metric))

    return pd.concat([
        _long(df, "clean_accuracy", "clean acc."),
        worst(worst_case(df), "robust_accuracy", "min", "robust acc."),
        worst(worst_case(df), "client_robust_accuracy", "min", "client robust acc."),
        inversion_worst_case(family(df, "inversion")),
        worst(family(df, "membership"), "auc", "max", "membership AUC"),
        _long(df, "epsilon", "epsilon"),
        *audit_long(df)] + (  # where a privacy budget cut training short
        [_long(df, "rounds_run", "rounds run")] if df.get("stopped", pd.Series()).notna().any()
        else []))


def audit_long(df: pd.DataFrame) -> list[pd.DataFrame]:
    """The privacy audit's lower bound beside the accountant's epsilon (upper bound), and their
    ratio; empty where no cell is audited."""
    audit = df[df["attack_type"] == "privacy_audit"] if "attack_type" in df else df.iloc[0:0]
    return [_long(audit, "empirical_epsilon", "audit ε (lower bound)"),
            _long(audit, "epsilon_ratio", "audit / accounted ε")]


def violations(df: pd.DataFrame) -> pd.DataFrame:
    """Replicates whose audited lower bound exceeds the accountant's upper bound: a bug in the DP
    code or in its accounting (or the 5% the audit's confidence allows)."""
    if "violation" not in df:
        return df.iloc[0:0]
    cols = [*REPLICATE, "attack", "empirical_epsilon", "epsilon", "epsilon_ratio"]
    return df[df["violation"].fillna(0).astype(float) > 0][cols]


def _with_setting(inv: pd.DataFrame) -> pd.DataFrame:
    """Inversion columns name what the attack observed, e.g. `idlg (single-gradient (FedSGD))`."""
    if "setting" not in inv or inv.empty:
        return inv
    return inv.assign(attack=inv["attack"] + inv["setting"].map(
        lambda v: f" ({v})" if isinstance(v, str) else ""))


def inversion_worst_case(inv: pd.DataFrame) -> pd.DataFrame:
    """Per attacked image, its best reconstruction over every inversion attack run on the
    replicate (the patient's worst case), averaged over those images: one value per replicate.
    Rows without per-image scores (`image_ssim`) count with their mean SSIM. `se`: the standard
    error of that mean over the images, floored on few images as every SSIM error is
    (`sampling.scores_se`; NaN where there are no per-image scores)."""
    if "ssim" not in inv or inv["ssim"].isna().all():
        return pd.DataFrame()
    out = []
    for keys, replicate in inv[inv["ssim"].notna()].groupby(REPLICATE):
        per_image: dict[str, float] = {}
        plain = []  # rows without per-image scores count as a whole
        for row in replicate.to_dict("records"):
            if isinstance(row.get("image_ssim"), str):
                for img, v in json.loads(row["image_ssim"]).items():
                    per_image[img] = max(v, per_image.get(img, -1.0))
            else:
                plain.append(row["ssim"])
        values = [(v, np.nan) for v in plain]  # (mean SSIM, its standard error)
        if per_image:
            values.append((sum(per_image.values()) / len(per_image),
                           scores_se(per_image.values())))
        value, se = max(values, key=lambda x: x[0])
        out.append({**dict(zip(REPLICATE, keys)), "value": value, "se": se})
    return pd.DataFrame(out).assign(column="recon. SSIM", metric="ssim")
