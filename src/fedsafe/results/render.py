"""The tables in Markdown, LaTeX and HTML (bold: the best cells), their notes, and the prose
sections of `comparison.md`: privacy violations, missing or stale jobs, replicates stopped by their
privacy budget, convergence."""

from pathlib import Path

import pandas as pd

from fedsafe import robustness as rb
from fedsafe.grid_keys import CELL, REPLICATE
from fedsafe.results.intervals import stats_table
from fedsafe.results.tables import fedsafe_long, medpfl_long, tradeoff_long, violations

TABLES = {"fedsafe": "Robustness (Fed-Safe style)", "medpfl": "Gradient inversion (MedPFL style)",
          "tradeoff": "Privacy-utility-robustness trade-off"}
FORMATS = ("md", "tex", "html")


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
    # counts replicates; the published pages already say "cells" here, so the text stays
    doc.append(f"\nconfig hash `{config}`; {df.drop_duplicates(REPLICATE).shape[0]} cells.\n")
    (out / "comparison.md").write_text("\n".join(doc))
    return paths


def missing_section(missing: pd.DataFrame) -> str:
    if missing.empty:
        return "All expected jobs have results for the current config.\n"
    return ("**Incomplete: these jobs have no result for the current config** (`missing`: no "
            "file, e.g. a failed job; `stale`: written by an older config). Their cells are left "
            "out of the tables below.\n\n" + missing.to_markdown(index=False) + "\n")


def violation_section(df: pd.DataFrame) -> str:
    bad = violations(df)
    if bad.empty:
        return ""
    return ("**PRIVACY VIOLATION: in these cells the audit's 95% lower bound on epsilon exceeds "
            "the accountant's epsilon. The reported epsilon cannot hold: check the defense's code "
            "and accounting.**\n\n" + bad.to_markdown(index=False) + "\n")


CONVERGED = 0.01  # a cell has settled when its last round moved test accuracy by less than this


def convergence_section(df: pd.DataFrame) -> str:
    """Did training settle? Per cell, the largest change of test accuracy over its last round
    across seeds (`last_round_change`): a model still moving amplifies every rounding difference
    between machines. Defended cells may move by design (noise); the recipe is judged on the
    undefended ones."""
    if "last_round_change" not in df or df["last_round_change"].isna().all():
        return ""
    replicates = df.drop_duplicates(REPLICATE)
    worst = (replicates.groupby(CELL, as_index=False)["last_round_change"].max()
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
    """Replicates whose privacy budget (`target_epsilon`) ended training before the last
    round."""
    if "stopped" not in df or df["stopped"].isna().all():
        return ""
    stopped = df[df["stopped"].notna()].drop_duplicates(REPLICATE)
    return ("**Stopped by the privacy budget** (the tables show these cells after `rounds_run` "
            "rounds):\n\n" + stopped[REPLICATE + ["rounds_run", "rounds", "epsilon", "stopped"]]
            .to_markdown(index=False) + "\n")
