"""Tidy results: the summary table (one row per cell x attack x attack parameter), the list of
missing or stale jobs, and the paper-style tables rendered from the summary (mean ± std over seeds,
best value per column in bold) as Markdown, LaTeX (booktabs) and HTML."""

import json
from pathlib import Path

import pandas as pd

from fedsafe import config as fc
from fedsafe import robustness as rb

CELL_COLUMNS = ["dataset", "defense", "noise_multiplier", "seed"]
KEYS = ["dataset", "defense", "noise_multiplier"]  # a table row: one grid point, all seeds
# Metrics where larger is better for the defender; for every other metric smaller is better
# (attack success, transfer, reconstruction quality, membership AUC, privacy budget epsilon).
HIGHER_IS_BETTER = {"clean_accuracy", "eval_clean_accuracy", "robust_accuracy", "mse"}
TABLES = {"fedsafe": "Robustness (Fed-Safe style)", "medpfl": "Gradient inversion (MedPFL style)",
          "tradeoff": "Privacy-utility-robustness trade-off"}
FORMATS = ("md", "tex", "html")


def spec_hash(spec: dict) -> str:
    """Hash of the spec a job ran with: a file whose hash differs from the current config's is
    stale (an older config), never mixed into the summary."""
    return fc.config_hash(spec)


def expected_jobs(config: dict, results_dir: str) -> list[dict]:
    """Every job of the current config: its cell, files and specs (the aggregate's checklist)."""
    jobs = []
    for c in fc.cells(config):
        cell = fc.cell_id(**c)
        attacks = [{"attack": a, "file": f"{results_dir}/attacks/{cell}/{a}.json",
                    "spec": fc.attack_spec(config, a)} for a in config["attacks"]]
        jobs.append({"cell": cell, "file": f"{results_dir}/train/{cell}/train.json",
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
            "noise_multiplier": s["noise"], "seed": s["seed"], "guarantee": train["guarantee"],
            # JSON spells an infinite epsilon (noise 0) "inf": keep the column numeric
            "epsilon": _number(train.get("epsilon")), "delta": train.get("delta"),
            "rounds": train["rounds"], "clean_accuracy": train["clean_accuracy"],
            "test_loss": train.get("test_loss"), "train_seconds": train["train_seconds"],
            "startup_seconds": train.get("startup_seconds")}


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
    out = frame.groupby(CELL_COLUMNS, as_index=False)[metric].mean()
    return out.rename(columns={metric: "value"}).assign(column=column, metric=metric)


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
    inv = _family(df, "inversion")
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
    def worst(frame, metric, how, column):
        if metric not in frame or frame.empty:
            return pd.DataFrame()
        out = frame.groupby(CELL_COLUMNS, as_index=False)[metric].agg(how)
        return out.rename(columns={metric: "value"}).assign(column=column, metric=metric)

    return pd.concat([
        _long(df, "clean_accuracy", "clean acc."),
        worst(_worst_case(df), "robust_accuracy", "min", "robust acc."),
        worst(_worst_case(df), "client_robust_accuracy", "min", "client robust acc."),
        worst(_family(df, "inversion"), "ssim", "max", "recon. SSIM"),
        worst(_family(df, "membership"), "auc", "max", "membership AUC"),
        _long(df, "epsilon", "epsilon")])


def stats_table(long: pd.DataFrame, flagged=()) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(text, best): `mean ± std` over seeds per grid point and column, and a mask of the best
    value per column within each dataset; `flagged` grid points are never best."""
    if long.empty or long["value"].isna().all():
        return pd.DataFrame(columns=KEYS), pd.DataFrame(columns=KEYS)
    stats = long.groupby(KEYS + ["column"], sort=False)["value"].agg(["mean", "std", "count"])
    text = stats.apply(_mean_std, axis=1).unstack("column")
    mean = stats["mean"].unstack("column")
    order = list(dict.fromkeys(long["column"]))
    text, mean = text[order].sort_index(), mean[order].sort_index()
    higher = long.drop_duplicates("column").set_index("column")["metric"].isin(HIGHER_IS_BETTER)
    ranked = mean.mask(pd.Series(mean.index.isin(list(flagged)), index=mean.index), axis=0)
    best = ranked.apply(lambda col: col.groupby(level="dataset").transform(
        "max" if higher[col.name] else "min").eq(col) & col.notna())
    text.columns.name = best.columns.name = None
    keys = text.index.to_frame(index=False)
    keys["noise_multiplier"] = keys["noise_multiplier"].map("{:g}".format)
    return (pd.concat([keys, text.reset_index(drop=True).fillna("–")], axis=1),
            pd.concat([keys.astype(bool) & False, best.reset_index(drop=True)], axis=1))


def _mean_std(s: pd.Series) -> str:
    if s["count"] == 0 or pd.isna(s["mean"]):
        return "–"
    return f"{s['mean']:.3f}" if s["count"] == 1 else f"{s['mean']:.3f} ± {s['std']:.3f}"


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


NOTES = """Mean ± std over seeds (a single seed shows its value). **Bold**: the best value per column
within a dataset, from the defender's view (highest accuracy; lowest attack success, transfer,
reconstruction quality, membership AUC and epsilon). Clean accuracy: final global model on the full
test set. ASR (attack success rate): share of correctly classified samples whose prediction the
attack flips; transfer: share of adversarial examples crafted on one client's copy of the model that
also fool another client's copy. Trade-off: robust accuracy is the per-sample worst case (a test
sample counts only if it survives every evasion attack of its cell), lowest over eps < 0.3, on the
global model and on the clients' received copies; highest SSIM and AUC over attacks. Epsilon is `–` where
the defense has no formal (epsilon, delta) guarantee. Flags (never bold): `not trained` (clean
accuracy not 5 points above the majority-class rate), `black-box beats white-box`, `robust acc.
rises with eps`, `robust at large eps` (signs of gradient masking or a broken evaluation)."""


def write_tables(summary_csv: str | Path, missing_csv: str | Path, out_dir: str | Path) -> dict:
    """Write every table in every format, plus `comparison.md` (all tables, notes and the list of
    missing or stale jobs). Returns {name: {format: path}}."""
    df = pd.read_csv(summary_csv)
    missing = pd.read_csv(missing_csv)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    longs = {"fedsafe": fedsafe_long(df), "medpfl": medpfl_long(df), "tradeoff": tradeoff_long(df)}
    paths, doc = {}, ["# Comparison\n", NOTES + "\n", missing_section(missing)]
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
