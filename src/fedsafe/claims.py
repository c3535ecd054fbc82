"""The claims report: each claim of Fed-Safe and MedPFL and each headline question of the benchmark,
checked against `summary.csv` by a rule fixed before the data (statistics: `fedsafe.stats`).

- **Row.** One dataset, setting (e.g. `eps=0.03`) and noise level: the per-seed value of the
  subject cell, or its difference with the baseline cell paired by seed (where several baseline
  cells exist, the one least favourable to the claim), estimated with the seeds' sampling errors
  as a floor (`stats.estimate`, `stats.paired`).
- **Rule.** `above(t)`, `below(t)`, `not_worse_than(m)` (the difference lies above -m:
  non-inferiority). One-sided p-values at ALPHA = 0.025: a row *supports* the claim when it lies
  beyond t, *contradicts* it when it lies beyond t the other way, and, for a claim with an
  equivalence reading, is *equivalent* when it lies within t +- the metric's margin
  (`stats.EQUIVALENCE_MARGIN`, two one-sided tests). Equivalent reads as "sits at the threshold":
  for a threshold of 0 (an effect), "no effect", which does not support the claim. Claims with a
  threshold a result can sit on have that reading; the non-inferiority claims (`cheap`,
  `close-to-adv`) already carry their margin in the rule, and the transfer claim asks for a stated
  minimal effect (MIN_TRANSFER_EFFECT), so "no effect" contradicts it.
- **Levels.** A claim "at the best noise level" (`levels="best"`) is existential over the noise
  levels of each dataset and setting: Holm across the levels, since picking the best level and
  testing it on the same seeds would overstate it. A level pre-stated in the config
  (`report(prestated={claim id: level})`) replaces that: only the stated level is tested.
- **Combination** over groups (a group: a row, or the levels of a best-level claim). `all`
  (universal): supported when every group supports (intersection-union test: no correction),
  contradicted when any group contradicts after Holm across groups. `any` (existential):
  supported when some group supports after Holm, contradicted when every group contradicts.
  Equivalent when every group is. *Mixed*: some groups support and others contradict; both are
  listed.
- **Across claims.** A claim's p-value is the one-sided p of the side its verdict reads (the
  smallest of its sides when inconclusive); Benjamini-Hochberg across the tested claims; a verdict
  stands only where its adjusted p is at most ALPHA, else it is inconclusive.
- **Labels.** *Exploratory*: a row with fewer than `stats.MIN_CONFIRMATORY_SEEDS` seeds. *Fragile*:
  moving one seed's value of one cell by its metric's cross-machine drift (`stats.DRIFT`), up or
  down, changes the verdict. *Untested*: the grid has no cells for the claim.
"""

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from fedsafe import stats
from fedsafe.grid_keys import REPLICATE
from fedsafe.results.sampling import sampling_se
from fedsafe.results.tables import inversion_worst_case
from fedsafe.stats import ALPHA

SUPPORTED, CONTRADICTED, EQUIVALENT, INCONCLUSIVE, UNTESTED = (
    "supported", "contradicted", "equivalent", "inconclusive", "untested")
RECOGNISABLE, UNRECOGNISABLE = 0.5, 0.3  # SSIM levels (MedPFL's success threshold is 0.9)
MEDPFL_MAX_B = 0.01  # MedPFL's largest Laplace scale on the gradient (0.0025..0.01)
MARGIN = 0.05  # accuracy points a defense may lose and still be "close" / "cheap"
# Any difference between the clients' copies lowers transfer a little, so "lowers transfer" asks
# for at least this much: more than a transfer rate's cross-machine drift (stats.DRIFT, 0.040), so
# no verdict can rest on an effect that a change of machine produces.
MIN_TRANSFER_EFFECT = 0.05
# A malicious server "recovers" an image when its best match reaches MedPFL's success threshold
# (SSIM >= 0.9, the attack's `reconstruction_success_rate`). It does not stop the server while it
# recovers more than half of the images it attacks, and is stopped below one in ten.
RECOVERS, STOPPED = 0.5, 0.1
NAMES = {"clean": "clean accuracy", "robust": "robust accuracy", "transfer": "transfer rate",
         "ssim": "SSIM", "auc": "AUC", "share": "share of images recovered"}


@dataclass(frozen=True)
class Rule:
    kind: str  # above | below | not_worse_than
    value: float

    @property
    def threshold(self) -> float:
        return -self.value if self.kind == "not_worse_than" else self.value

    def __str__(self):
        return {"above": "above {v:g}", "below": "below {v:g}",
                "not_worse_than": "difference above -{v:g}"}[self.kind].format(v=self.value)

    def p_values(self, e: stats.Estimate, margin: float | None) -> tuple[float, float, float]:
        """One-sided p-values (supported, contradicted, equivalent) of an estimate; NaN: no
        test (one seed, or no equivalence reading)."""
        t = self.threshold
        above, below = e.p_above(t), e.p_below(t)
        supported, contradicted = (below, above) if self.kind == "below" else (above, below)
        equivalent = (max(e.p_above(t - margin), e.p_below(t + margin)) if margin
                      else math.nan)
        return supported, contradicted, equivalent


@dataclass(frozen=True)
class Claim:
    id: str
    source: str
    statement: str
    metric: str  # clean | robust | transfer | ssim | auc (a kind of `fedsafe.stats`)
    subject: Callable[[pd.DataFrame], pd.Series]  # which cells the claim is about
    rule: Rule
    baseline: Callable[[pd.DataFrame], pd.Series] | None = None  # compared against, paired
    combine: str = "all"  # over datasets and settings (and levels, unless levels="best")
    needs: str = ""  # the cells a grid must have to test it
    levels: str = "each"  # each: every noise level is a row; best: some level (Holm)
    equivalence: bool = False  # whether "within the threshold +- margin" is a verdict

    @property
    def margin(self) -> float | None:
        return stats.EQUIVALENCE_MARGIN[self.metric] if self.equivalence else None


# ---- per replicate metrics: one value per (dataset, defense, noise, seed[, eps]) ----

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


def _one(frame: pd.DataFrame, keys: list, column: str, how: str) -> pd.DataFrame:
    """One value per key (replicate and setting) with its sampling error `se`: the row with the
    lowest or highest value (`min`, `max`), or the mean over rows (`mean`; their error as if fully
    correlated: they share the images)."""
    if column not in frame:
        return pd.DataFrame()
    f = frame.assign(value=pd.to_numeric(frame[column], errors="coerce"),
                     se=sampling_se(frame, column)).dropna(subset=["value"])
    if f.empty:
        return pd.DataFrame()
    if how == "mean":
        return f.groupby(keys, dropna=False, as_index=False).agg(
            value=("value", "mean"), se=("se", lambda s: float(np.sqrt(np.mean(s ** 2)))))
    f = f.sort_values("value", ascending=how == "min", kind="stable")
    return f.drop_duplicates(keys)[keys + ["value", "se"]]


def replicate_metrics(df: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """Per replicate values and their sampling errors (`value`, `se`), with a `setting` column
    (e.g. `eps=0.03`, or empty). A metric the grid lacks is an empty frame."""
    keys = REPLICATE + ["defense_parts", "guarantee", "epsilon", "lr"]
    if df.empty or not set(REPLICATE) <= set(df):
        return {}
    df = df.assign(defense_parts=df.get("defense_parts", df["defense"]),
                   guarantee=df.get("guarantee", "none"),
                   lr=pd.to_numeric(df.get("lr", np.nan), errors="coerce"),
                   epsilon=pd.to_numeric(df.get("epsilon", np.nan), errors="coerce"),
                   **{c: df.get(c, np.nan) for c in ("family", "attack", "attack_value")})
    eps = lambda f: f["attack_value"].map(lambda v: f"eps={float(v):g}")  # noqa: E731
    ev = _evasion(df).assign(setting=eps)
    out = {"clean": _one(df, keys, "clean_accuracy", "mean").assign(setting=""),
           "robust": _one(ev, keys + ["setting"], "robust_accuracy", "min"),
           "transfer": _one(_transfer_rows(df).assign(setting=eps), keys + ["setting"],
                            "transfer_rate", "mean"),
           "auc": _one(df[df["family"] == "membership"], keys, "auc", "max").assign(setting=""),
           # a malicious server's best attack on the replicate (its strongest observation)
           "share": _one(df[df["family"] == "malicious"], keys, "reconstruction_success_rate",
                         "max").assign(setting="")}
    # per image, its best reconstruction over the replicate's attacks (the trade-off's SSIM)
    ssim = inversion_worst_case(df[df["family"] == "inversion"])
    info = df.drop_duplicates(keys)[keys]
    out["ssim"] = (ssim.drop(columns=["column", "metric"]).merge(info, on=REPLICATE)
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
          baseline=lambda f: _parts(f, "adv_training"), levels="best",
          needs="weight_noise and adv_training cells, an evasion attack"),
    Claim("fedsafe-noise-robustness", "Fed-Safe",
          "Gaussian weight noise raises worst-case robust accuracy over no defense "
          "(at the best noise level)",
          "robust", lambda f: _parts(f, "weight_noise"), Rule("above", 0.0),
          baseline=lambda f: _parts(f, "none"), levels="best", equivalence=True,
          needs="weight_noise and none cells, an evasion attack"),
    Claim("fedsafe-noise-cheap", "Fed-Safe",
          f"Gaussian weight noise costs at most {MARGIN:g} clean accuracy (every noise level)",
          "clean", lambda f: _parts(f, "weight_noise"), Rule("not_worse_than", MARGIN),
          baseline=lambda f: _parts(f, "none"), needs="weight_noise and none cells"),
    Claim("fedsafe-noise-transfer", "Fed-Safe",
          "Gaussian weight noise lowers the transfer of adversarial examples between clients by "
          f"at least {MIN_TRANSFER_EFFECT:g} (at the best noise level; without downlink noise "
          "every client holds the same model, so there transfer is 1 by construction, as in "
          "Fed-Safe's own comparison)",
          "transfer", lambda f: _parts(f, "weight_noise"), Rule("below", -MIN_TRANSFER_EFFECT),
          baseline=lambda f: _parts(f, "none"), levels="best",
          needs="weight_noise and none cells, an evasion attack with transfer"),
    Claim("medpfl-server-reconstructs", "MedPFL",
          "An honest-but-curious server reconstructs recognisable images from undefended client "
          f"updates (worst-case SSIM over inversion attacks above {RECOGNISABLE:g})",
          "ssim", lambda f: _parts(f, "none"), Rule("above", RECOGNISABLE), equivalence=True,
          needs="none cells, an inversion attack"),
    Claim("medpfl-noise-does-not-protect", "MedPFL",
          "Random (Laplace or Gaussian) noise on gradients at MedPFL's scales (b <= "
          f"{MEDPFL_MAX_B:g} on the gradient) does not reliably stop reconstruction (at some "
          f"noise level SSIM stays above {RECOGNISABLE:g})",
          "ssim", lambda f: _parts(f, "gradient_noise") & _medpfl_scale(f),
          Rule("above", RECOGNISABLE), combine="any", equivalence=True,
          needs=f"gradient_noise cells at MedPFL's scale (noise multiplier / federation lr <= "
                f"{MEDPFL_MAX_B:g}: the defense noises the update, lr x the gradient), an "
                "inversion attack"),
    Claim("formal-stops-inversion", "benchmark",
          "A defense with a formal (epsilon, delta) guarantee stops gradient inversion "
          f"(SSIM below {UNRECOGNISABLE:g} in every such cell)",
          "ssim", _formal, Rule("below", UNRECOGNISABLE), equivalence=True,
          needs="dp_sgd or dp_fedavg cells, an inversion attack"),
    Claim("formal-stops-membership", "benchmark",
          "A defense with a formal (epsilon, delta) guarantee stops membership inference "
          "(worst-case AUC below 0.55 in every such cell)",
          "auc", _formal, Rule("below", 0.55), equivalence=True,
          needs="dp_sgd or dp_fedavg cells, a membership attack"),
    Claim("secagg-does-not-stop-malicious", "benchmark",
          "Secure aggregation does not stop a malicious server: with a crafted model it recovers "
          f"more than {RECOVERS:g} of the images it attacks with SSIM >= 0.9 (its best setting "
          "over the malicious-server attacks run)",
          "share", lambda f: _parts(f, "secagg"), Rule("above", RECOVERS), equivalence=True,
          needs="secagg cells, a malicious-server attack"),
    Claim("dp-sgd-stops-malicious", "benchmark",
          "DP-SGD stops a malicious server: it recovers fewer than "
          f"{STOPPED:g} of the images it attacks with SSIM >= 0.9 (in every dp_sgd cell, its best "
          "setting over the malicious-server attacks run)",
          "share", lambda f: _parts(f, "dp_sgd"), Rule("below", STOPPED), equivalence=True,
          needs="dp_sgd cells, a malicious-server attack"),
]


# ---- one claim: rows, groups, verdict ----

@dataclass(frozen=True)
class Row:
    dataset: str
    setting: str
    subject: tuple  # a key of the cells: (dataset, setting, defense, noise)
    baseline: tuple | None
    group: tuple  # rows of one group combine first (the levels of a best-level claim)


@dataclass
class Result:
    """One claim on one grid: its verdict before (`verdict`, `p`) and after (`final`,
    `adjusted`) the correction across claims, the evidence and the labels."""
    claim: Claim
    verdict: str
    p: float = math.nan
    side: str = ""  # the verdict p reads: the verdict's own, or the nearest when inconclusive
    rows: list[dict] = field(default_factory=list)
    groups: list[dict] = field(default_factory=list)
    seeds: int = 0  # the fewest seeds of any row
    note: str = ""
    level: float | None = None  # the pre-stated noise level, if any
    adjusted: float = math.nan
    final: str = ""
    fragile: str = ""  # what flips the verdict, if anything
    _data: tuple = ()  # (rows, cells) to re-judge

    @property
    def mixed(self) -> bool:
        return {g["after correction"] for g in self.groups} >= {SUPPORTED, CONTRADICTED}

    @property
    def labels(self) -> list[str]:
        if self.verdict == UNTESTED:
            return []
        return ((["mixed"] if self.mixed else [])
                + (["exploratory"] if self.seeds < stats.MIN_CONFIRMATORY_SEEDS else [])
                + (["fragile"] if self.fragile else []))

    @property
    def shown(self) -> str:
        """The verdict as printed: `**supported** (exploratory, fragile)`."""
        labels = self.labels
        return f"**{self.final or self.verdict}**" + (f" ({', '.join(labels)})" if labels else "")


def _verdict(p: tuple) -> str:
    supported, contradicted, equivalent = p
    return (SUPPORTED if supported <= ALPHA else CONTRADICTED if contradicted <= ALPHA
            else EQUIVALENT if equivalent <= ALPHA else INCONCLUSIVE)  # NaN: never decides


SIDES = (SUPPORTED, CONTRADICTED, EQUIVALENT)


def _p_of(verdict: str, p: tuple) -> tuple[float, str]:
    """(p, side): the p-value a verdict reads, its own side's, or the smallest side's when it is
    inconclusive."""
    if verdict in SIDES:
        return p[SIDES.index(verdict)], verdict
    if np.isnan(p).all():
        return math.nan, ""
    return float(np.nanmin(p)), SIDES[int(np.nanargmin(p))]


def _combine(p: np.ndarray, how: str) -> tuple[tuple, np.ndarray]:
    """(combined, adjusted): p has one row (supported, contradicted, equivalent) per member.
    `any` needs one member supported (Holm) and every member contradicted; `all` the reverse.
    Equivalent needs every member. A NaN member (no test) blocks what needs every member, and
    stays NaN."""
    s, c, e = p[:, 0], p[:, 1], p[:, 2]
    if how == "any":
        s = stats.holm(s)
        combined = [s.min(), np.max(c), np.max(e)]
    else:
        c = stats.holm(c)
        combined = [np.max(s), c.min(), np.max(e)]
    untested = np.isnan(p)
    combined = tuple(math.nan if u else float(x) for x, u in zip(combined, untested.all(axis=0)))
    return combined, np.where(untested, np.nan, np.column_stack([s, c, e]))


def _estimate(row: Row, cells: dict) -> stats.Estimate:
    values, ses = cells[row.subject]
    if row.baseline is None:
        seeds = sorted(values)
        return stats.estimate([values[s] for s in seeds], [ses[s] for s in seeds])
    base_values, base_ses = cells[row.baseline]
    return stats.paired(values, base_values, ses, base_ses)


@dataclass(frozen=True)
class Judgement:
    verdict: str
    p: float
    side: str  # see `_p_of`
    rows: list[dict]  # per row: its interval, p, verdict alone and after the correction
    groups: list[dict]  # per group: its verdict after the correction


def judge(claim: Claim, rows: list[Row], cells: dict) -> Judgement:
    """One claim before the correction across claims. `cells`: {key: ({seed: value},
    {seed: sampling error})}, the keys the rows name."""
    estimates = [_estimate(r, cells) for r in rows]
    p_rows = np.array([claim.rule.p_values(e, claim.margin) for e in estimates]).reshape(-1, 3)
    members: dict[tuple, list[int]] = {}
    for i, r in enumerate(rows):
        members.setdefault(r.group, []).append(i)
    p_groups = np.array([_combine(p_rows[i], "any")[0] for i in members.values()]).reshape(-1, 3)
    combined, adjusted = _combine(p_groups, claim.combine)
    after = {g: _verdict(tuple(a)) for g, a in zip(members, adjusted)}
    row_out = []
    for r, e, p in zip(rows, estimates, p_rows):
        lo, hi = e.limits(within=stats.bounds(claim.metric, r.baseline is not None))
        alone = _verdict(tuple(p))
        p_alone, side = _p_of(alone, tuple(p))
        row_out.append({"dataset": r.dataset, "setting": r.setting, "cell": _label(r.subject),
                        "against": _label(r.baseline), "effect": e.mean, "low": lo, "high": hi,
                        "seeds": e.n, "p": p_alone, "side": side, "verdict": alone,
                        "after correction": after[r.group]})
    group_out = [{"dataset": g[0], "setting": g[1], "after correction": v}
                 for g, v in after.items()]
    verdict = _verdict(combined)
    return Judgement(verdict, *_p_of(verdict, combined), row_out, group_out)


def _label(key: tuple | None) -> str:
    return "" if key is None else f"{key[2]} σ={float(key[3]):g}"


def _level(prestated: dict | None, claim_id: str) -> float | None:
    """The pre-stated noise level of a claim: `{id: 0.02}` or `{id: {"level": 0.02}}`."""
    value = (prestated or {}).get(claim_id)
    if isinstance(value, dict):
        value = value.get("level")
    return None if value is None else float(value)


def _cells(frame: pd.DataFrame) -> dict:
    """{(dataset, setting, defense, noise): ({seed: value}, {seed: se})}."""
    cells: dict[tuple, tuple[dict, dict]] = {}
    for *key, seed, value, se in frame[["dataset", "setting", "defense", "noise_multiplier",
                                        "seed", "value", "se"]].itertuples(index=False):
        values, ses = cells.setdefault(tuple(key), ({}, {}))
        values[seed], ses[seed] = float(value), float(se)
    return dict(sorted(cells.items()))


def _rows(claim: Claim, metrics: dict, level: float | None) -> tuple[list[Row], dict, str]:
    """The claim's rows and the per-seed values of their cells; no rows: untested (and why)."""
    m = metrics.get(claim.metric)
    if m is None or m.empty:
        return [], {}, ""
    subject = _cells(m[claim.subject(m)])
    if level is not None:
        subject = {k: v for k, v in subject.items() if np.isclose(float(k[3]), level)}
        if not subject:
            return [], {}, f"The pre-stated level σ={level:g} is not in the grid."
    base = _cells(m[claim.baseline(m)]) if claim.baseline else {}
    # several baseline cells for one dataset and setting: the one least favourable to the claim
    places: dict[tuple, list] = {}
    for key, (values, _) in base.items():
        places.setdefault(key[:2], []).append((np.mean(list(values.values())), key))
    least = min if claim.rule.kind == "below" else max
    against = {place: least(candidates)[1] for place, candidates in places.items()}
    rows = []
    for key in subject:
        if claim.baseline and key[:2] not in against:
            continue
        group = key[:2] if claim.levels == "best" and level is None else key
        rows.append(Row(key[0], key[1], key, against.get(key[:2]), group))
    return rows, {**subject, **base}, ""


def _result(claim: Claim, metrics: dict, prestated: dict | None = None) -> Result:
    level = _level(prestated, claim.id)
    rows, cells, note = _rows(claim, metrics, level)
    if not rows:
        return Result(claim, UNTESTED, note=note, level=level)
    j = judge(claim, rows, cells)
    return Result(claim, j.verdict, j.p, j.side, j.rows, j.groups,
                  min(r["seeds"] for r in j.rows), level=level, _data=(rows, cells))


def evaluate(claim: Claim, metrics: dict[str, pd.DataFrame],
             prestated: dict | None = None) -> tuple[str, list[dict]]:
    """(verdict, evidence rows) of one claim on its own, before the correction across claims
    (`assess` applies it): one row per dataset, setting and noise level."""
    r = _result(claim, metrics, prestated)
    return r.verdict, r.rows


# ---- every claim: the correction across claims and the labels ----

def _final(verdict: str, adjusted: float) -> str:
    decided = verdict in (SUPPORTED, CONTRADICTED, EQUIVALENT)
    return verdict if not decided or adjusted <= ALPHA else INCONCLUSIVE


def _perturbations(claim: Claim, cells: dict):
    """Every cell with one seed's value moved by the metric's drift, up or down (within the
    metric's range): (description, cells)."""
    drift = stats.DRIFT.get(claim.metric, 0.0)
    lo, hi = stats.bounds(claim.metric)
    for key, (values, ses) in cells.items():
        for seed in values:
            for sign in (-1, 1):
                moved = dict(values)
                moved[seed] = float(np.clip(values[seed] + sign * drift, lo, hi))
                if moved[seed] != values[seed]:
                    yield (f"{'raising' if sign > 0 else 'lowering'} seed {seed} of "
                           f"{_label(key)} ({' '.join(x for x in key[:2] if x)}) by {drift:g}",
                           {**cells, key: (moved, ses)})


def _fragility(results: list[Result], i: int) -> str:
    """How one drift-sized move of a single seed changes claim i's verdict after the correction
    across claims ('' if none does)."""
    r = results[i]
    rows, cells = r._data
    p = np.array([x.p for x in results if x.verdict != UNTESTED])
    at = sum(x.verdict != UNTESTED for x in results[:i])
    for what, moved in _perturbations(r.claim, cells):
        j = judge(r.claim, rows, moved)
        p[at] = j.p
        final = _final(j.verdict, stats.bh(p)[at])
        p[at] = r.p
        if final != r.final:
            return f"{what} makes it {final}"
    return ""


def assess(summary: pd.DataFrame, prestated: dict | None = None) -> list[Result]:
    """Every claim of CLAIMS on a summary: verdicts read from Benjamini-Hochberg-adjusted p-values
    across the tested claims, with their labels. `prestated`: {claim id: noise level} (or
    {claim id: {"level": noise level}}) for the claims whose level the config names in advance."""
    unknown = set(prestated or {}) - {c.id for c in CLAIMS}
    if unknown:
        raise ValueError(f"pre-stated levels for unknown claims: {sorted(unknown)}")
    metrics = replicate_metrics(summary)
    results = [_result(c, metrics, prestated) for c in CLAIMS]
    tested = [r for r in results if r.verdict != UNTESTED]
    for r, adjusted in zip(tested, stats.bh([r.p for r in tested])):  # no test (NaN) counts as 1
        r.adjusted = math.nan if math.isnan(r.p) else float(adjusted)
        r.final = _final(r.verdict, adjusted)
    for i, r in enumerate(results):
        if r.verdict != UNTESTED:
            r.fragile = _fragility(results, i)
        else:
            r.final = UNTESTED
    return results


def cost_table(metrics: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """What each defense costs against no defense, paired by seed: clean accuracy and worst-case
    robust accuracy (per eps), with 95% intervals; `significant`: two-sided at 0.05 after Holm
    across the table."""
    rows = []
    for metric in ("clean", "robust"):
        m = metrics.get(metric)
        if m is None or m.empty:
            continue
        for (dataset, setting), g in m.groupby(["dataset", "setting"]):
            none = g[_parts(g, "none")]
            if none.empty:
                continue
            ref = (dict(zip(none["seed"], none["value"])), dict(zip(none["seed"], none["se"])))
            for (defense, noise), c in g[~_parts(g, "none")].groupby(["defense",
                                                                       "noise_multiplier"]):
                e = stats.paired(dict(zip(c["seed"], c["value"])), ref[0],
                                 dict(zip(c["seed"], c["se"])), ref[1])
                lo, hi = e.limits(within=stats.bounds(metric, difference=True))
                rows.append({"dataset": dataset, "metric": f"{metric} {setting}".strip(),
                             "defense": f"{defense} σ={noise:g}", "change": e.mean, "low": lo,
                             "high": hi, "seeds": e.n,
                             "p": 2 * min(e.p_above(0), e.p_below(0))})
    table = pd.DataFrame(rows)
    if len(table):
        table["significant"] = stats.holm(table["p"].clip(upper=1)) <= 2 * ALPHA
    return table


def _fmt(x, signed: bool = True) -> str:
    return "–" if pd.isna(x) else f"{x:+.3f}" if signed else f"{x:.3f}"


def _fmt_p(p, side: str = "", verdict: str = "") -> str:
    """A p-value; naming its side where the verdict does not (inconclusive)."""
    text = "–" if pd.isna(p) else f"{p:.2g}" if p >= 0.001 else "<0.001"
    return text + (f" ({side})" if side and side != verdict and not pd.isna(p) else "")


def _rule_text(r: Result) -> str:
    claim = r.claim
    text = str(claim.rule)
    if claim.margin:
        text += f"; equivalent within {claim.rule.threshold:g} ± {claim.margin:g}"
    if claim.levels == "best":
        text += (f"; pre-stated level σ={r.level:g}" if r.level is not None
                 else "; some noise level (Holm across levels)")
    elif r.level is not None:
        text += f"; pre-stated level σ={r.level:g}"
    return text


def header(seeds: int, config_hash: str) -> str:
    metrics = list(dict.fromkeys(c.metric for c in CLAIMS))
    drift = ", ".join(f"{NAMES[k]} {stats.DRIFT[k]:g}" for k in metrics)
    margins = ", ".join(f"{NAMES[k]} ±{stats.EQUIVALENCE_MARGIN[k]:g}" for k in metrics
                        if any(c.equivalence and c.metric == k for c in CLAIMS))
    return f"""# Claims checked on this grid

Built from `summary.csv` ({seeds} seed(s); config hash `{config_hash}`). Every rule below is fixed
before the data (modules `fedsafe.claims`, `fedsafe.stats`; docs/outputs.md, "How verdicts are
decided").

- **Effect**: a cell's mean over seeds, or the mean of its difference with another cell seed by
  seed, with a 95% Student-t interval whose variance is at least the seeds' sampling variance
  (binomial over the images evaluated, per-image spread for SSIM, the bootstrap interval for AUC),
  so seeds that agree never give a zero-width interval. Limits are clipped to [0, 1] for a value,
  [-1, 1] for a difference.
- **Rule**: a row *supports* the claim when its one-sided p-value is at most {ALPHA:g} (its
  interval lies beyond the threshold), *contradicts* it at {ALPHA:g} the other way, and, where the
  rule says so, is *equivalent* when its interval lies within the threshold ± the metric's margin
  (two one-sided tests; margins: {margins}). Equivalent to a threshold of 0 means no effect.
- **Rows**: "every" claims are supported when every row supports (no correction needed) and
  contradicted when any row contradicts after Holm's correction across rows; "some" claims, and
  "at the best noise level" within each dataset and setting, are supported when some row (level)
  supports after Holm and contradicted when every one contradicts. *mixed*: some rows support and
  others contradict (the evidence lists both). A level pre-stated in the config is tested alone.
- **Across claims**: p is a claim's one-sided p-value for its verdict's side (for an
  inconclusive claim or row, the side nearest a decision, named); adjusted p is
  Benjamini-Hochberg across the tested claims, and a verdict stands only if it is at most
  {ALPHA:g} (else inconclusive).
- **Labels**: *exploratory*: fewer than {stats.MIN_CONFIRMATORY_SEEDS} seeds (with fewer, no
  distribution-free paired test can reach p <= {ALPHA:g}: the sign test's smallest one-sided p is
  1/2^n, 0.031 at 5 seeds); *fragile*: moving one seed's value of one cell by the metric's measured
  cross-machine drift ({drift}) changes the verdict; *untested*: the grid has no cells for it.
- **Assumption**: the t tests take a seed's values as roughly normal around their mean. A cell
  whose seeds occasionally collapse (a diverged training) breaks that; the per-seed values are
  in summary.csv to check.
"""


def report(summary: pd.DataFrame, prestated: dict | None = None) -> str:
    """`claims.md`: the rules, the verdict table, each claim's evidence, then the cost of each
    defense. `prestated`: see `assess`."""
    results = assess(summary, prestated)
    seeds = summary["seed"].nunique() if "seed" in summary else 0
    config = summary["config_hash"].iloc[0] if len(summary) and "config_hash" in summary else "-"
    lines = [header(seeds, config), "| claim | source | verdict | rule | p | adjusted p |",
             "|---|---|---|---|---|---|"]
    sections = []
    for r in results:
        claim = r.claim
        lines.append(f"| {claim.statement} | {claim.source} | {r.shown} | {_rule_text(r)} | "
                     f"{_fmt_p(r.p, r.side, r.verdict)} | {_fmt_p(r.adjusted)} |")
        sections.append(f"\n## {claim.id} ({claim.source}): {r.shown}\n\n{claim.statement}.\n\n"
                        f"Rule: {_rule_text(r)}; rows combine by `{claim.combine}` "
                        f"({'every' if claim.combine == 'all' else 'some'} dataset and setting)."
                        + (f" Before the correction across claims: {r.verdict} (p "
                           f"{_fmt_p(r.p)}, adjusted {_fmt_p(r.adjusted)})."
                           if r.final != r.verdict else "") + "\n")
        if not r.rows:
            sections.append((r.note + " " if r.note else "")
                            + f"Untested: the grid needs {claim.needs}.\n")
            continue
        if r.mixed:
            where = {v: "; ".join(f"{g['dataset']} {g['setting']}".strip() for g in r.groups
                                  if g["after correction"] == v)
                     for v in (SUPPORTED, CONTRADICTED)}
            sections.append(f"Mixed: supported in {where[SUPPORTED]}; contradicted in "
                            f"{where[CONTRADICTED]}.\n")
        if r.fragile:
            sections.append(f"Fragile: {r.fragile}.\n")
        table = pd.DataFrame(r.rows)
        label = "difference" if claim.baseline else "value"
        table[label] = [f"{_fmt(e, bool(claim.baseline))} [{_fmt(lo, bool(claim.baseline))}, "
                        f"{_fmt(hi, bool(claim.baseline))}]"
                        for e, lo, hi in zip(table["effect"], table["low"], table["high"])]
        table["p"] = [_fmt_p(p, side, v) for p, side, v in zip(table["p"], table["side"],
                                                               table["verdict"])]
        table = table.rename(columns={"verdict": "row alone"})
        cols = ["dataset", "setting", "cell", "against", label, "seeds", "p", "row alone",
                "after correction"]
        if not claim.baseline:
            cols.remove("against")
        sections.append(table[cols].to_markdown(index=False) + "\n")
    costs = cost_table(replicate_metrics(summary))
    sections.append("\n## What each defense costs (against no defense, paired by seed)\n\n"
                    "Exploratory: the intervals are each at 95% on their own; *significant* "
                    "applies Holm's correction across every row of this table.\n")
    if costs.empty:
        sections.append("Untested: the grid needs a `none` cell.\n")
    else:
        costs["change [95% interval]"] = [f"{_fmt(e)} [{_fmt(lo)}, {_fmt(hi)}]" for e, lo, hi
                                          in zip(costs["change"], costs["low"], costs["high"])]
        costs["significant (Holm)"] = costs["significant"]
        sections.append(costs[["dataset", "metric", "defense", "change [95% interval]", "seeds",
                               "significant (Holm)"]].to_markdown(index=False) + "\n")
    return "\n".join(lines + sections)


def write_claims(summary_csv, out, prestated: dict | None = None) -> str:
    from pathlib import Path

    text = report(pd.read_csv(summary_csv), prestated)
    Path(out).write_text(text)
    return text
