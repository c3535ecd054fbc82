"""Tidy results: the summary table (one row per cell x attack x attack parameter), the list of
missing or stale jobs, and the paper-style tables rendered from the summary (mean and 95% interval
over seeds, limits within the metric's range; bold: the best cell and those not significantly
worse, Holm-corrected, never a whole column) as Markdown, LaTeX and HTML. The rules are in
`fedsafe.stats`; this module knows which summary column holds what (`METRIC_KIND`,
`sampling_se`)."""

import json
from pathlib import Path

import numpy as np
import pandas as pd

from fedsafe import config as fc
from fedsafe import robustness as rb
from fedsafe import stats

CELL_COLUMNS = ["dataset", "defense", "noise_multiplier", "seed"]
KEYS = ["dataset", "defense", "noise_multiplier"]  # a table row: one grid point, all seeds
# Metrics where larger is better for the defender; for every other metric smaller is better
# (attack success, transfer, reconstruction quality, membership AUC, privacy budget epsilon).
HIGHER_IS_BETTER = {"clean_accuracy", "eval_clean_accuracy", "robust_accuracy",
                    "client_robust_accuracy", "mse", "rounds_run"}
TABLES = {"fedsafe": "Robustness (Fed-Safe style)", "medpfl": "Gradient inversion (MedPFL style)",
          "tradeoff": "Privacy-utility-robustness trade-off"}
FORMATS = ("md", "tex", "html")
# What each summary column measures (`fedsafe.stats`: its range, sampling error, margin, drift);
# columns not listed are unbounded and counted over seeds alone.
METRIC_KIND = {"clean_accuracy": "clean", "eval_clean_accuracy": "clean",
               "robust_accuracy": "robust", "client_robust_accuracy": "robust",
               "attack_success_rate": "success", "client_attack_success_rate": "success",
               "transfer_rate": "transfer", "ssim": "ssim", "auc": "auc",
               "reconstruction_success_rate": "share", "label_accuracy": "share",
               "tpr_at_1pct_fpr": "share", "tpr_at_0_1pct_fpr": "share",
               "epsilon": "nonnegative", "empirical_epsilon": "nonnegative",
               "epsilon_ratio": "nonnegative", "mse": "nonnegative", "rounds_run": "nonnegative"}


def spec_hash(spec: dict) -> str:
    """Hash of the spec a job ran with: a file whose hash differs from the current config's is
    stale (an older config), never mixed into the summary."""
    return fc.config_hash(spec)


def expected_jobs(config: dict, train_file: str, attack_file: str) -> list[dict]:
    """Every job of the current config: its cell, files and specs (the aggregate's checklist).
    The file patterns come from the rules' outputs ({dataset}, {defense}, {noise}, {seed},
    {attack}), so paths are defined once, in the workflow."""
    jobs = []
    for c in fc.cells(config):
        cell = fc.cell_id(**c)
        attacks = [{"attack": a, "file": attack_file.format(**c, attack=a),
                    "spec": fc.attack_spec(config, a)} for a in fc.cell_attacks(config, **{
                        k: c[k] for k in ("dataset", "defense", "noise")})]
        jobs.append({"cell": cell, "file": train_file.format(**c),
                     "spec": fc.train_spec(config, c["dataset"], c["defense"], c["noise"],
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

    def problem(job, cell, status, file):
        problems.append({"cell": cell["cell"], "job": job, "status": status, "file": file})

    for cell in expected:
        train, status = _load(cell["file"], spec_hash(cell["spec"]))
        if train is None:
            problem("train", cell, status, cell["file"])
            for a in cell["attacks"]:
                problem(f"attack:{a['attack']}", cell, "not run (no model)", a["file"])
            continue
        base = {"config_hash": config_hash, **_train_row(train)}
        attack_rows, loaded = [], []
        for a in cell["attacks"]:
            res, status = _load(a["file"], spec_hash(a["spec"]), ("attack", "type", "options"))
            if res is None:
                problem(f"attack:{a['attack']}", cell, status, a["file"])
                continue
            loaded.append(res)
            for r in res["rows"]:
                r = rb.without_masks(r)
                r["eval_clean_accuracy"] = r.pop("clean_accuracy", None)
                attack_rows.append({**base, "attack": res["attack"], "attack_type": res["type"],
                                    "family": res["family"], **r,
                                    "attack_job_seconds": res["seconds"]})
        attack_rows += rb.worst_case_rows(base, loaded)
        rows += attack_rows or [base]  # a trained cell without attack results still shows
    summary = pd.DataFrame(rows, columns=list(dict.fromkeys(
        ["config_hash", "spec_hash", *CELL_COLUMNS, "attack", "attack_type", "family",
         "attack_param", "attack_value"] + [k for r in rows for k in r])))
    summary = summary.sort_values(CELL_COLUMNS + ["attack", "attack_value"], kind="stable",
                                  key=lambda s: s.astype(str) if s.name == "attack_value" else s)
    missing = pd.DataFrame(problems, columns=["cell", "job", "status", "file"])
    return rb.add_flags(summary), missing


# ---- sampling error of one seed's value ----

def _num(frame: pd.DataFrame, column: str) -> pd.Series:
    return pd.to_numeric(frame[column], errors="coerce") if column in frame else pd.Series(
        np.nan, index=frame.index)


def _images(frame: pd.DataFrame, column: str) -> pd.Series:
    """How many images a share in `column` is a share of (NaN: unknown)."""
    if column == "clean_accuracy":
        return _num(frame, "n_test")
    n = _num(frame, "n_samples")  # the attacked subset
    if column in ("attack_success_rate", "client_attack_success_rate"):  # of the correct ones
        n = n * _num(frame, "eval_clean_accuracy")
    if column == "transfer_rate":  # of the examples that fooled their own copy
        n = n * _num(frame, "eval_clean_accuracy") * _num(frame, "client_attack_success_rate")
    return n


def _mean_se(values) -> float:
    """Standard error of a mean over images (NaN below two)."""
    v = np.asarray(list(values), dtype=float)
    return float(v.std(ddof=1) / np.sqrt(len(v))) if len(v) > 1 else np.nan


FEW_IMAGES = 10  # below this, a spread measured on the images themselves is not trusted


def _image_se(per_image) -> float:
    """Standard error of a mean SSIM, from its per-image scores (`image_ssim`, JSON). On fewer than
    FEW_IMAGES images the measured spread is itself a guess (two images give it one degree of
    freedom), so it is raised to the bound no score in [0, 1] can exceed: 0.5 / sqrt(n)."""
    if not isinstance(per_image, str):
        return np.nan
    scores = list(json.loads(per_image).values())
    se = _mean_se(scores)
    if len(scores) < FEW_IMAGES:
        se = max(np.nan_to_num(se), 0.5 / np.sqrt(max(1, len(scores))))
    return se


def sampling_se(frame: pd.DataFrame, column: str) -> pd.Series:
    """Per summary row, the sampling error of `column` within its seed (`fedsafe.stats`):
    binomial over the images evaluated for accuracies and rates (`n_test`, `n_samples`), the
    per-image spread for SSIM (`image_ssim`), the bootstrap interval for AUC (`auc_ci_low`,
    `auc_ci_high`). NaN where the summary lacks what it needs (read as `stats.UNKNOWN_SE`); 0 for
    metrics without a sampling model (epsilon, PSNR, MSE: seeds alone)."""
    kind = METRIC_KIND.get(column)
    if kind not in stats.SAMPLED or column not in frame:
        return pd.Series(0.0, index=frame.index)
    if kind == "auc":
        se = stats.se_from_interval(_num(frame, "auc_ci_low"), _num(frame, "auc_ci_high"))
    elif kind == "ssim":
        se = (frame["image_ssim"].map(_image_se) if "image_ssim" in frame
              else pd.Series(np.nan, index=frame.index))
    else:
        se = stats.binomial_se(_num(frame, column), _images(frame, column))
    return pd.Series(np.asarray(se, dtype=float), index=frame.index)


def _rms(se: pd.Series) -> float:
    """One seed's error over several rows of the same images: as if fully correlated."""
    return float(np.sqrt(np.mean(np.square(se.astype(float)))))


# ---- tables ----

def _family(df: pd.DataFrame, family: str) -> pd.DataFrame:
    return df[df["family"] == family] if "family" in df else df.iloc[0:0]


def _setting(param, value) -> str:
    if pd.isna(param):
        return ""
    return f"{param}={value:g}" if isinstance(value, (int, float)) else f"{param}={value}"


def _long(frame: pd.DataFrame, metric: str, column: str) -> pd.DataFrame:
    """One value per (grid point, seed) for one output column; the tables' raw material."""
    if metric not in frame or frame.empty:
        return pd.DataFrame()
    out = frame.assign(se=sampling_se(frame, metric)).groupby(CELL_COLUMNS, as_index=False).agg(
        value=(metric, "mean"), se=("se", _rms))
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
    ev = _family(df, "evasion")
    ev = ev[pd.to_numeric(ev["attack_value"], errors="coerce").ne(0)]  # eps 0 = clean accuracy
    metrics = {"attack_success_rate": "ASR", "transfer_rate": "transfer"}
    transfer = ev[ev["attack"] != rb.WORST]  # the worst case is per sample, not per example
    return pd.concat([_long(df, "clean_accuracy", "clean acc.")] + [
        _column(ev if m != "transfer_rate" else transfer, s, m, label)
        for m, label in metrics.items()
        for s in _settings(ev if m != "transfer_rate" else transfer, True)])


def medpfl_long(df: pd.DataFrame) -> pd.DataFrame:
    inv = _with_setting(_family(df, "inversion"))
    metrics = {"ssim": "SSIM", "psnr": "PSNR (dB)", "mse": "MSE",
               "reconstruction_success_rate": "recon. success"}
    return pd.concat([pd.DataFrame()] + [
        _column(inv, s, m, label) for s in _settings(inv) for m, label in metrics.items()])


def _worst_case(df: pd.DataFrame) -> pd.DataFrame:
    """The per-sample worst case over a cell's evasion attacks (`fedsafe.robustness`), without
    the large-eps sanity points (where every model must fall to 0)."""
    ev = _family(df, "evasion")
    return rb.below_large_eps(ev[ev["attack"] == rb.WORST])


def tradeoff_long(df: pd.DataFrame) -> pd.DataFrame:
    """Worst case per seed: robust accuracy per sample over every evasion attack (the lowest over
    eps), the highest SSIM and AUC over attacks."""
    def worst(frame, metric, how, column):  # the row itself, so its sampling error comes along
        if metric not in frame or frame.empty:
            return pd.DataFrame()
        f = frame.assign(value=_num(frame, metric), se=sampling_se(frame, metric))
        f = f.dropna(subset=["value"]).sort_values("value", ascending=how == "min", kind="stable")
        return (f.drop_duplicates(CELL_COLUMNS)[CELL_COLUMNS + ["value", "se"]]
                .assign(column=column, metric=metric))

    return pd.concat([
        _long(df, "clean_accuracy", "clean acc."),
        worst(_worst_case(df), "robust_accuracy", "min", "robust acc."),
        worst(_worst_case(df), "client_robust_accuracy", "min", "client robust acc."),
        inversion_worst_case(_family(df, "inversion")),
        worst(_family(df, "membership"), "auc", "max", "membership AUC"),
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
    """Cells whose audited lower bound exceeds the accountant's upper bound: a bug in the DP code
    or in its accounting (or the 5% the audit's confidence allows)."""
    if "violation" not in df:
        return df.iloc[0:0]
    cols = [*CELL_COLUMNS, "attack", "empirical_epsilon", "epsilon", "epsilon_ratio"]
    return df[df["violation"].fillna(0).astype(float) > 0][cols]


def violation_section(df: pd.DataFrame) -> str:
    bad = violations(df)
    if bad.empty:
        return ""
    return ("**PRIVACY VIOLATION: in these cells the audit's 95% lower bound on epsilon exceeds "
            "the accountant's epsilon. The reported epsilon cannot hold: check the defense's code "
            "and accounting.**\n\n" + bad.to_markdown(index=False) + "\n")


def _with_setting(inv: pd.DataFrame) -> pd.DataFrame:
    """Inversion columns name what the attack observed, e.g. `idlg (single-gradient (FedSGD))`."""
    if "setting" not in inv or inv.empty:
        return inv
    return inv.assign(attack=inv["attack"] + inv["setting"].map(
        lambda v: f" ({v})" if isinstance(v, str) else ""))


def inversion_worst_case(inv: pd.DataFrame) -> pd.DataFrame:
    """Per attacked image, its best reconstruction over every inversion attack run on the cell
    (the patient's worst case), averaged over those images: one value per (grid point, seed).
    Rows without per-image scores (`image_ssim`) count with their mean SSIM. `se`: the standard
    error of that mean over the images (NaN where there are no per-image scores)."""
    if "ssim" not in inv or inv["ssim"].isna().all():
        return pd.DataFrame()
    out = []
    for keys, cell in inv[inv["ssim"].notna()].groupby(CELL_COLUMNS):
        per_image: dict[str, float] = {}
        plain = []  # rows without per-image scores count as a whole
        for row in cell.to_dict("records"):
            if isinstance(row.get("image_ssim"), str):
                for img, v in json.loads(row["image_ssim"]).items():
                    per_image[img] = max(v, per_image.get(img, -1.0))
            else:
                plain.append(row["ssim"])
        values = [(v, np.nan) for v in plain]  # (mean SSIM, its standard error)
        if per_image:
            values.append((sum(per_image.values()) / len(per_image),
                           _mean_se(per_image.values())))
        value, se = max(values, key=lambda x: x[0])
        out.append({**dict(zip(CELL_COLUMNS, keys)), "value": value, "se": se})
    return pd.DataFrame(out).assign(column="recon. SSIM", metric="ssim")


def _with_se(long: pd.DataFrame) -> pd.DataFrame:
    """A long frame built without sampling errors: unknown for sampled metrics, 0 otherwise."""
    if "se" in long:
        return long
    sampled = long["metric"].map(METRIC_KIND).isin(stats.SAMPLED)
    return long.assign(se=np.where(sampled, np.nan, 0.0))


def stats_table(long: pd.DataFrame, flagged=()) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(text, best): the mean over seeds with its 95% interval per grid point and column
    (`_mean_interval`), and a mask of the cells marked best per column within each dataset
    (`best_cells`); `flagged` grid points (dataset, defense, noise) are never best."""
    if long.empty or long["value"].isna().all():
        return pd.DataFrame(columns=KEYS), pd.DataFrame(columns=KEYS)
    long = _with_se(long)
    order = list(dict.fromkeys(long["column"]))
    text = long.groupby(KEYS + ["column"], sort=False)[["value", "se", "metric"]].apply(
        _mean_interval)
    text = text.unstack("column")[order].sort_index()
    best = best_cells(long, flagged).reindex(index=text.index, columns=order, fill_value=False)
    text.columns.name = best.columns.name = None
    keys = text.index.to_frame(index=False)
    keys["noise_multiplier"] = keys["noise_multiplier"].map("{:g}".format)
    return (pd.concat([keys, text.reset_index(drop=True).fillna("–")], axis=1),
            pd.concat([keys.astype(bool) & False, best.reset_index(drop=True)], axis=1))


def best_cells(long: pd.DataFrame, flagged=()) -> pd.DataFrame:
    """Per dataset and column, the best grid point and every grid point not significantly worse
    than it (`fedsafe.stats.best_set`: paired one-sided tests over seeds, Holm); `flagged` grid
    points are never best; a column with a single grid point, or where every grid point ties,
    has none."""
    long = _with_se(long)
    higher = long.drop_duplicates("column").set_index("column")["metric"].isin(HIGHER_IS_BETTER)
    flagged = set(flagged)
    marks = {}
    for (dataset, column), g in long.groupby(["dataset", "column"], sort=False):
        cells = g.dropna(subset=["value"]).groupby(["defense", "noise_multiplier"])
        per_seed = {k: dict(zip(v["seed"], v["value"].astype(float))) for k, v in cells}
        ses = {k: dict(zip(v["seed"], v["se"].astype(float))) for k, v in cells}
        if len(per_seed) < 2:  # nothing to compare with: no bold
            continue
        never = {k for k in per_seed if (dataset, *k) in flagged}
        for defense, noise in stats.best_set(per_seed, bool(higher[column]), ses, never):
            marks[(dataset, defense, noise, column)] = True
    index = pd.MultiIndex.from_tuples([k[:3] for k in marks], names=KEYS)
    mask = pd.Series(True, index=pd.MultiIndex.from_tuples(list(marks), names=KEYS + ["column"]))
    return (mask.unstack("column").fillna(False).astype(bool) if marks
            else pd.DataFrame(index=index, dtype=bool))


def _mean_interval(g: pd.DataFrame) -> str:
    """`mean ± half-width` of the 95% interval over seeds (`fedsafe.stats.estimate`, with the
    seeds' sampling errors as its floor), or `mean [low, high]` where the interval reaches the
    metric's range and is clipped there; the value alone with one seed."""
    e = stats.estimate(g["value"].astype(float), g["se"].astype(float))
    if pd.isna(e.mean):
        return "–"
    lo, hi = e.limits(within=stats.bounds(METRIC_KIND.get(g["metric"].iloc[0])))
    if pd.isna(lo):
        return f"{e.mean:.3f}"
    if (lo, hi) != e.limits():
        return f"{e.mean:.3f} [{lo:.3f}, {hi:.3f}]"
    return f"{e.mean:.3f} ± {(hi - lo) / 2:.3f}"


def render(text: pd.DataFrame, best: pd.DataFrame, fmt: str, caption: str = "") -> str:
    if text.empty:
        return {"md": "_No results for this table in this grid._\n",
                "tex": f"% {caption}: no results in this grid\n",
                "html": f"<p>{caption}: no results in this grid.</p>\n"}[fmt]
    if fmt == "md":
        return text.mask(best, "**" + text + "**").to_markdown(index=False) + "\n"
    style = text.style.hide(axis="index").apply(
        lambda _: best.replace({True: "font-weight: bold", False: ""}), axis=None)
    if fmt == "tex":
        return style.format(escape="latex").format_index(escape="latex", axis=1).to_latex(
            hrules=True, convert_css=True, caption=caption, position_float="centering")
    return style.set_caption(caption).to_html()


NOTES = """Mean ± half-width of the 95% Student-t interval over seeds, whose variance is at least
the seeds' sampling variance (binomial over the images evaluated, per-image spread for SSIM, the
bootstrap interval for AUC), so seeds that agree still show their measurement error; where the
interval reaches the metric's range ([0, 1] for accuracies, rates, SSIM and AUC) its clipped limits
are shown instead, `mean [low, high]`. A single seed shows its value and no interval. **Bold**:
within a dataset and column, the best value from the defender's view (highest accuracy; lowest
attack success, transfer, reconstruction quality, membership AUC and epsilon) and every value not
significantly worse than it (one-sided paired tests over seeds against the best, Holm-corrected,
0.025): tied cells are bold together; a column where every cell ties has no bold, and a cell needs
two seeds to be bold. Rules: `fedsafe.stats`, docs/outputs.md "How verdicts are decided". Clean
accuracy: final global model on the full test set. ASR (attack success rate): share of correctly
classified samples whose prediction the attack flips; transfer: share of adversarial examples
crafted on one client's copy of the model that also fool another client's copy. Trade-off: robust
accuracy is the per-sample worst case (a test sample counts only if it survives every evasion attack
of its cell), lowest over eps < 0.3, on the global model and on the clients' received copies; recon.
SSIM is per image the best reconstruction over the cell's inversion attacks; membership AUC the
highest over attacks. Epsilon is `–` where the defense has no formal (epsilon, delta) guarantee.
Audit ε: the one-run privacy audit's 95%-confidence lower bound (audited cells only), to read beside
the accountant's epsilon (an upper bound); their ratio shows how tight the accounting is. Flags
(never bold): `not trained` (clean accuracy not 5 points above the majority-class rate), `black-box
beats white-box`, `robust acc. rises with eps`, `robust at large eps` (signs of gradient masking or
a broken evaluation)."""


def write_tables(summary_csv: str | Path, missing_csv: str | Path, out_dir: str | Path) -> dict:
    """Write every table in every format, plus `comparison.md` (all tables, notes and the list of
    missing or stale jobs). Returns {name: {format: path}}."""
    df = pd.read_csv(summary_csv)
    missing = pd.read_csv(missing_csv)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    longs = {"fedsafe": fedsafe_long(df), "medpfl": medpfl_long(df), "tradeoff": tradeoff_long(df)}
    paths, doc = {}, ["# Comparison\n", violation_section(df), NOTES + "\n",
                      missing_section(missing), stopped_section(df), convergence_section(df)]
    flags = rb.flags_by_point(df)
    for name, long in longs.items():
        text, best = rb.with_flags(*stats_table(long, flags), flags)
        paths[name] = {}
        for fmt in FORMATS:
            paths[name][fmt] = out / f"{name}.{fmt}"
            paths[name][fmt].write_text(render(text, best, fmt, TABLES[name]))
        doc += [f"## {TABLES[name]}\n", render(text, best, "md")]
    config = df["config_hash"].iloc[0] if len(df) else "-"
    doc.append(f"\nconfig hash `{config}`; {df.drop_duplicates(CELL_COLUMNS).shape[0]} cells.\n")
    (out / "comparison.md").write_text("\n".join(doc))
    return paths


def missing_section(missing: pd.DataFrame) -> str:
    if missing.empty:
        return "All expected jobs have results for the current config.\n"
    return ("**Incomplete: these jobs have no result for the current config** (`missing`: no "
            "file, e.g. a failed job; `stale`: written by an older config). Their cells are left "
            "out of the tables below.\n\n" + missing.to_markdown(index=False) + "\n")


CONVERGED = 0.01  # a cell has settled when its last round moved test accuracy by less than this


def convergence_section(df: pd.DataFrame) -> str:
    """Did training settle? Per cell, the largest change of test accuracy over its last round
    across seeds (`last_round_change`): a model still moving amplifies every rounding difference
    between machines. Defended cells may move by design (noise); the recipe is judged on the
    undefended ones."""
    if "last_round_change" not in df or df["last_round_change"].isna().all():
        return ""
    cells = df.drop_duplicates(CELL_COLUMNS)
    worst = (cells.groupby(KEYS, as_index=False)["last_round_change"].max()
             .rename(columns={"last_round_change": "largest last-round change (over seeds)"}))
    col = worst.columns[-1]
    worst["settled"] = worst[col] < CONVERGED
    # as text, so a small noise level reads 5e-05 and not 0.000
    worst["noise_multiplier"] = worst["noise_multiplier"].map("{:g}".format)
    worst[col] = worst[col].map("{:.3f}".format)
    none = worst[worst["defense"] == "none"]
    verdict = ("every undefended cell settled" if len(none) and none["settled"].all() else
               "**some undefended cells were still moving**" if len(none) else "no undefended cell")
    return (f"**Convergence** ({verdict}: a cell has settled when its last round changed test "
            f"accuracy by less than {CONVERGED:g} on every seed):\n\n"
            + worst.to_markdown(index=False, disable_numparse=True) + "\n")


def stopped_section(df: pd.DataFrame) -> str:
    """Cells whose privacy budget (`target_epsilon`) ended training before the last round."""
    if "stopped" not in df or df["stopped"].isna().all():
        return ""
    cells = df[df["stopped"].notna()].drop_duplicates(CELL_COLUMNS)
    return ("**Stopped by the privacy budget** (the tables show these cells after `rounds_run` "
            "rounds):\n\n" + cells[CELL_COLUMNS + ["rounds_run", "rounds", "epsilon", "stopped"]]
            .to_markdown(index=False) + "\n")
