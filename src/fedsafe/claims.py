"""The claims report: each claim of Fed-Safe and MedPFL and each headline question of the benchmark,
checked against `summary.csv` with a stated rule.

A claim compares per-seed values of grid cells (paired by seed where two cells are compared) and
turns the 95% t interval of the effect into a verdict with a written rule:
- `above(t)`: supported if the interval lies above t, contradicted if it lies below t;
- `below(t)`: the reverse; `not_worse_than(m)`: supported if the interval of a - b lies above -m
  (the first cell is at most m worse: non-inferiority), contradicted if it lies below -m.
Anything else, or a single seed (no interval), is inconclusive. A claim's rows (dataset, setting)
combine by `all` (every row must agree) or `any` (one supported row suffices: "noise does not
*reliably* protect"). A claim with no cells in the grid is untested.
"""

from dataclasses import dataclass
from typing import Callable

import numpy as np
import pandas as pd

from fedsafe.results import inversion_worst_case
from fedsafe.stats import interval, paired_difference

SUPPORTED, CONTRADICTED, INCONCLUSIVE, UNTESTED = ("supported", "contradicted", "inconclusive",
                                                   "untested")
RECOGNISABLE, UNRECOGNISABLE = 0.5, 0.3  # SSIM levels (MedPFL's success threshold is 0.9)
MEDPFL_MAX_B = 0.01  # MedPFL's largest Laplace scale on the gradient (0.0025..0.01)
MARGIN = 0.05  # accuracy points a defense may lose and still be "close" / "cheap"
CELL = ["dataset", "defense", "noise_multiplier"]


@dataclass(frozen=True)
class Rule:
    kind: str  # above | below | not_worse_than
    value: float

    def __str__(self):
        return {"above": "interval lies above {v:g}", "below": "interval lies below {v:g}",
                "not_worse_than": "interval of the difference lies above -{v:g}"}[self.kind].format(
            v=self.value)

    def verdict(self, lo: float, hi: float) -> str:
        if np.isnan(lo) or np.isnan(hi):
            return INCONCLUSIVE
        t = -self.value if self.kind == "not_worse_than" else self.value
        if self.kind == "below":
            return SUPPORTED if hi < t else CONTRADICTED if lo > t else INCONCLUSIVE
        return SUPPORTED if lo > t else CONTRADICTED if hi < t else INCONCLUSIVE


@dataclass(frozen=True)
class Claim:
    id: str
    source: str
    statement: str
    metric: str  # clean | robust | transfer | ssim | auc
    subject: Callable[[pd.DataFrame], pd.Series]  # which cells the claim is about
    rule: Rule
    baseline: Callable[[pd.DataFrame], pd.Series] | None = None  # compared against, paired
    combine: str = "all"
    needs: str = ""  # the cells a grid must have to test it


# ---- per seed-cell metrics: one value per (dataset, defense, noise, seed[, eps]) ----

def _evasion(df):
    """Evasion rows with eps > 0, below the large-eps sanity budget; only the per-sample worst
    case where the summary has it (`fedsafe.robustness`), so a claim reads the strongest attack."""
    from fedsafe import robustness as rb

    ev = _transfer_rows(df)
    worst = ev[ev["attack"] == rb.WORST]
    return worst if not worst.empty else ev


def _transfer_rows(df):
    """Every evasion row with eps > 0 below the large-eps budget (transfer is per attack)."""
    from fedsafe import robustness as rb

    ev = df[df["family"] == "evasion"]
    return rb.below_large_eps(ev[pd.to_numeric(ev["attack_value"], errors="coerce").fillna(0) > 0])


def cell_metrics(df: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """Per seed-cell values, with a `setting` column (e.g. `eps=0.03`, or empty)."""
    keys = CELL + ["seed", "defense_parts", "guarantee", "epsilon", "lr"]
    df = df.assign(defense_parts=df.get("defense_parts", df["defense"]),
                   lr=pd.to_numeric(df.get("lr", np.nan), errors="coerce"),
                   epsilon=pd.to_numeric(df.get("epsilon", np.nan), errors="coerce"))
    out = {"clean": df.groupby(keys, dropna=False, as_index=False)["clean_accuracy"].first()
           .rename(columns={"clean_accuracy": "value"}).assign(setting="")}
    eps = lambda f: f["attack_value"].map(lambda v: f"eps={float(v):g}")  # noqa: E731
    ev = _evasion(df).assign(setting=eps)
    transfer = _transfer_rows(df).assign(setting=eps)
    for name, col, how in (("robust", "robust_accuracy", "min"), ("transfer", "transfer_rate",
                                                                   "mean")):
        frame = transfer if name == "transfer" else ev
        out[name] = (frame.groupby(keys + ["setting"], dropna=False, as_index=False)[col].agg(how)
                     .rename(columns={col: "value"}) if col in frame and frame[col].notna().any()
                     else pd.DataFrame())
    members = df[df["family"] == "membership"]
    out["auc"] = (members.groupby(keys, dropna=False, as_index=False)["auc"].max()
                  .rename(columns={"auc": "value"}).assign(setting="")
                  if "auc" in members and members["auc"].notna().any() else pd.DataFrame())
    # per image, its best reconstruction over the cell's inversion attacks (the trade-off's SSIM)
    ssim = inversion_worst_case(df[df["family"] == "inversion"])
    info = df.drop_duplicates(keys)[keys]
    out["ssim"] = (ssim.drop(columns=["column", "metric"]).merge(info, on=CELL + ["seed"])
                   .assign(setting="") if not ssim.empty else pd.DataFrame())
    return out


def _parts(f, name):
    return f["defense_parts"].astype(str).str.split("+").map(lambda p: p == [name])


def _medpfl_scale(f):
    """Noise on the update of scale b is noise b / lr on the gradient the attack inverts: only
    cells whose gradient-scale noise is in MedPFL's range test MedPFL's claim."""
    lr = pd.to_numeric(f["lr"], errors="coerce") if "lr" in f else np.nan
    return (f["noise_multiplier"].astype(float) / lr) <= MEDPFL_MAX_B * (1 + 1e-9)


def _formal(f):
    """Cells whose defense has a formal guarantee and a finite epsilon (noise 0 has none)."""
    return ~f["guarantee"].astype(str).str.startswith("none") & np.isfinite(f["epsilon"])


CLAIMS = [
    Claim("fedsafe-noise-close-to-adv", "Fed-Safe",
          "Gaussian weight noise gives adversarial robustness close to adversarial training "
          f"(worst-case robust accuracy at most {MARGIN:g} below it, at the best noise level)",
          "robust", lambda f: _parts(f, "weight_noise"), Rule("not_worse_than", MARGIN),
          baseline=lambda f: _parts(f, "adv_training"),
          needs="weight_noise and adv_training cells, an evasion attack"),
    Claim("fedsafe-noise-robustness", "Fed-Safe",
          "Gaussian weight noise raises worst-case robust accuracy over no defense "
          "(at the best noise level)",
          "robust", lambda f: _parts(f, "weight_noise"), Rule("above", 0.0),
          baseline=lambda f: _parts(f, "none"), needs="weight_noise and none cells, an evasion "
                                                       "attack"),
    Claim("fedsafe-noise-cheap", "Fed-Safe",
          f"Gaussian weight noise costs at most {MARGIN:g} clean accuracy (every noise level)",
          "clean", lambda f: _parts(f, "weight_noise"), Rule("not_worse_than", MARGIN),
          baseline=lambda f: _parts(f, "none"), needs="weight_noise and none cells"),
    Claim("fedsafe-noise-transfer", "Fed-Safe",
          "Gaussian weight noise lowers the transfer of adversarial examples between clients "
          "(at the best noise level; without downlink noise every client holds the same model, "
          "so there transfer is 1 by construction, as in Fed-Safe's own comparison)",
          "transfer", lambda f: _parts(f, "weight_noise"), Rule("below", 0.0),
          baseline=lambda f: _parts(f, "none"), needs="weight_noise and none cells, an evasion "
                                                       "attack with transfer"),
    Claim("medpfl-server-reconstructs", "MedPFL",
          "An honest-but-curious server reconstructs recognisable images from undefended client "
          f"updates (worst-case SSIM over inversion attacks above {RECOGNISABLE:g})",
          "ssim", lambda f: _parts(f, "none"), Rule("above", RECOGNISABLE),
          needs="none cells, an inversion attack"),
    Claim("medpfl-noise-does-not-protect", "MedPFL",
          "Random (Laplace or Gaussian) noise on gradients at MedPFL's scales (b <= "
          f"{MEDPFL_MAX_B:g} on the gradient) does not reliably stop reconstruction (at some "
          f"noise level SSIM stays above {RECOGNISABLE:g})",
          "ssim", lambda f: _parts(f, "gradient_noise") & _medpfl_scale(f),
          Rule("above", RECOGNISABLE), combine="any",
          needs=f"gradient_noise cells at MedPFL's scale (noise multiplier / federation lr <= "
                f"{MEDPFL_MAX_B:g}: the defense noises the update, lr x the gradient), an "
                "inversion attack"),
    Claim("formal-stops-inversion", "benchmark",
          "A defense with a formal (epsilon, delta) guarantee stops gradient inversion "
          f"(SSIM below {UNRECOGNISABLE:g} in every such cell)",
          "ssim", _formal, Rule("below", UNRECOGNISABLE),
          needs="dp_sgd or dp_fedavg cells, an inversion attack"),
    Claim("formal-stops-membership", "benchmark",
          "A defense with a formal (epsilon, delta) guarantee stops membership inference "
          "(worst-case AUC below 0.55 in every such cell)",
          "auc", _formal, Rule("below", 0.55),
          needs="dp_sgd or dp_fedavg cells, a membership attack"),
]
PICK_BEST = {"robust": max, "transfer": min}  # "at the best noise level" claims


def _per_seed(frame: pd.DataFrame) -> dict:
    return dict(zip(frame["seed"], frame["value"].astype(float)))


def evaluate(claim: Claim, metrics: dict[str, pd.DataFrame]) -> tuple[str, list[dict]]:
    """(verdict, evidence rows): one row per dataset and setting (and noise level, unless the
    claim is about the best one)."""
    m = metrics.get(claim.metric)
    if m is None or m.empty:
        return UNTESTED, []
    subject = m[claim.subject(m)]
    base = m[claim.baseline(m)] if claim.baseline else None
    if subject.empty or (base is not None and base.empty):
        return UNTESTED, []
    rows = []
    for (dataset, setting), g in subject.groupby(["dataset", "setting"], sort=True):
        b = None if base is None else base[(base["dataset"] == dataset)
                                           & (base["setting"] == setting)]
        if b is not None and b.empty:
            continue
        candidates = [_row(claim, dataset, setting, cell, _per_seed(c), b)
                      for cell, c in g.groupby(["defense", "noise_multiplier"])]
        pick = PICK_BEST.get(claim.metric)
        if pick and base is not None:  # the noise level most favourable to the claim
            candidates = [pick(candidates, key=lambda r: r["subject_mean"])]
        rows += candidates
    if not rows:
        return UNTESTED, []
    verdicts = [r["verdict"] for r in rows]
    if claim.combine == "any" and SUPPORTED in verdicts:
        return SUPPORTED, rows
    if all(v == verdicts[0] for v in verdicts) and verdicts[0] != INCONCLUSIVE:
        return verdicts[0], rows
    return INCONCLUSIVE, rows


def _row(claim, dataset, setting, cell, subject: dict, base: pd.DataFrame | None) -> dict:
    mean_s = float(np.mean(list(subject.values())))
    if base is None:
        mean, lo, hi = interval(subject.values())
        n, against = len(subject), ""
    else:
        best = (base.groupby(["defense", "noise_multiplier"])["value"].mean().idxmax())
        ref = base[(base["defense"] == best[0]) & (base["noise_multiplier"] == best[1])]
        mean, lo, hi, n = paired_difference(subject, _per_seed(ref))
        against = f"{best[0]} σ={best[1]:g}"
    return {"dataset": dataset, "setting": setting, "cell": f"{cell[0]} σ={cell[1]:g}",
            "against": against, "subject_mean": mean_s, "effect": mean, "low": lo, "high": hi,
            "seeds": n, "verdict": claim.rule.verdict(lo, hi)}


def cost_table(metrics: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """What each defense costs against no defense, paired by seed: clean accuracy and worst-case
    robust accuracy (per eps), with 95% intervals."""
    rows = []
    for metric in ("clean", "robust"):
        m = metrics.get(metric)
        if m is None or m.empty:
            continue
        for (dataset, setting), g in m.groupby(["dataset", "setting"]):
            none = g[_parts(g, "none")]
            if none.empty:
                continue
            ref = _per_seed(none)
            for (defense, noise), c in g[~_parts(g, "none")].groupby(["defense",
                                                                       "noise_multiplier"]):
                mean, lo, hi, n = paired_difference(_per_seed(c), ref)
                rows.append({"dataset": dataset, "metric": f"{metric} {setting}".strip(),
                             "defense": f"{defense} σ={noise:g}", "change": mean, "low": lo,
                             "high": hi, "seeds": n,
                             "significant": bool(n >= 2 and (lo > 0 or hi < 0))})
    return pd.DataFrame(rows)


def _fmt(x) -> str:
    return "–" if pd.isna(x) else f"{x:+.3f}"


def report(summary: pd.DataFrame) -> str:
    """`claims.md`: the verdict table, then each claim's evidence, then the cost of each
    defense."""
    metrics = cell_metrics(summary)
    seeds = summary["seed"].nunique() if len(summary) else 0
    lines = ["# Claims checked on this grid\n",
             f"Built from `summary.csv` ({seeds} seed(s); config hash "
             f"`{summary['config_hash'].iloc[0] if len(summary) else '-'}`). Effects are means "
             "over seeds with a 95% Student-t interval; two cells are compared paired by seed. "
             "Verdict rules are written next to each claim (module `fedsafe.claims`). With one "
             "seed there is no interval and every tested claim is inconclusive.\n",
             "| claim | source | verdict | rule |", "|---|---|---|---|"]
    sections = []
    for claim in CLAIMS:
        verdict, rows = evaluate(claim, metrics)
        lines.append(f"| {claim.statement} | {claim.source} | **{verdict}** | {claim.rule} |")
        sections.append(f"\n## {claim.id} ({claim.source}): {verdict}\n\n{claim.statement}.\n\n"
                        f"Rule: supported if the 95% {claim.rule}; contradicted if it lies on the "
                        f"other side; otherwise inconclusive; rows combine by `{claim.combine}`.\n")
        if not rows:
            sections.append(f"Untested: the grid needs {claim.needs}.\n")
            continue
        table = pd.DataFrame(rows)
        label = "difference" if claim.baseline else "value"
        table[label] = [f"{_fmt(e)} [{_fmt(lo)}, {_fmt(hi)}]"
                        for e, lo, hi in zip(table["effect"], table["low"], table["high"])]
        cols = ["dataset", "setting", "cell", "against", label, "seeds", "verdict"]
        if not claim.baseline:
            cols.remove("against")
        sections.append(table[cols].to_markdown(index=False) + "\n")
    costs = cost_table(metrics)
    sections.append("\n## What each defense costs (against no defense, paired by seed)\n")
    if costs.empty:
        sections.append("Untested: the grid needs a `none` cell.\n")
    else:
        costs["change [95% interval]"] = [f"{_fmt(e)} [{_fmt(lo)}, {_fmt(hi)}]" for e, lo, hi
                                          in zip(costs["change"], costs["low"], costs["high"])]
        sections.append(costs[["dataset", "metric", "defense", "change [95% interval]", "seeds",
                               "significant"]].to_markdown(index=False) + "\n")
    return "\n".join(lines + sections)


def write_claims(summary_csv, out) -> str:
    from pathlib import Path

    text = report(pd.read_csv(summary_csv))
    Path(out).write_text(text)
    return text
