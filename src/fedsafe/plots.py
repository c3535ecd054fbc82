"""Figures from the summary table (matplotlib, PNG and SVG): mean over seeds with error bars of the
95% t interval. A figure whose attack family is not in the grid says so instead of failing."""

import shutil
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from fedsafe.grid_keys import CELL, REPLICATE  # noqa: E402
from fedsafe.results.tables import family, worst_case  # noqa: E402
from fedsafe.robustness import flag_text  # noqa: E402

PLOTS = ("accuracy_vs_noise", "robust_vs_eps", "ssim_vs_noise", "frontier")
MARKERS = "osD^vP*X"


def _save(fig, stem: Path) -> None:
    for ext in ("png", "svg"):
        fig.savefig(stem.with_suffix(f".{ext}"), dpi=150, bbox_inches="tight")
    plt.close(fig)


def _empty(stem: Path, message: str) -> None:
    fig, ax = plt.subplots(figsize=(5, 2))
    ax.text(0.5, 0.5, message, ha="center", va="center", wrap=True)
    ax.set_axis_off()
    _save(fig, stem)


def _per_replicate(frame: pd.DataFrame, metric: str, how: str = "mean") -> pd.DataFrame:
    """One value per replicate (worst case or mean over attack settings)."""
    return frame.groupby(REPLICATE, as_index=False)[metric].agg(how)


def _seed_stats(frame: pd.DataFrame, by: list[str], metric: str) -> pd.DataFrame:
    """Mean over seeds, and `down`/`up`: the distances from the mean to the limits of its 95% t
    interval, clipped to the metric's range as the tables clip them (0 with one seed)."""
    from fedsafe.results.columns import METRIC_KIND
    from fedsafe.stats import bounds, interval

    within = bounds(METRIC_KIND.get(metric))

    def limits(v: pd.Series) -> pd.Series:  # one interval per group, both sides from it
        mean, lo, hi = interval(v.astype(float), within=within)
        return pd.Series({"mean": v.mean(), "down": 0.0 if np.isnan(lo) else mean - lo,
                          "up": 0.0 if np.isnan(hi) else hi - mean})

    if frame.empty:
        return pd.DataFrame(columns=[*by, "mean", "down", "up"])
    return frame.groupby(by)[metric].apply(limits).unstack().reset_index()


def _err(frame: pd.DataFrame, key) -> list[list[float]]:
    return [[frame.loc[key, "down"]], [frame.loc[key, "up"]]]


def metric_vs_noise(replicates: pd.DataFrame, metric: str, line: str, ylabel: str,
                    stem: Path) -> None:
    """One panel per noisy defense: `metric` against its noise multiplier, one line per `line`
    value; defenses without noise (e.g. `none`) are dashed reference lines in every panel."""
    stats = _seed_stats(replicates, CELL + [line] if line not in CELL else CELL, metric)
    noisy = sorted(stats.loc[stats["noise_multiplier"] > 0, "defense"].unique())
    flat = stats[~stats["defense"].isin(noisy)]
    fig, axes = plt.subplots(1, max(1, len(noisy)), figsize=(4.5 * max(1, len(noisy)), 3.6),
                             squeeze=False, sharey=True)
    colors = {v: f"C{i}" for i, v in enumerate(sorted(stats[line].unique()))}
    for ax, defense in zip(axes[0], noisy or ["(no noisy defense)"]):
        for value, g in stats[stats["defense"] == defense].groupby(line):
            ax.errorbar(g["noise_multiplier"], g["mean"], yerr=[g["down"], g["up"]], marker="o",
                        capsize=3,
                        color=colors[value], label=str(value))
        for (value, ref), g in flat.groupby([line, "defense"]):
            ax.axhline(g["mean"].iloc[0], ls="--", lw=1, color=colors[value],
                       label=f"{value}: {ref}")
        ax.set(title=f"defense: {defense}", xlabel="noise multiplier σ", ylabel=ylabel)
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=8, title=line)
    fig.suptitle(f"{ylabel} vs noise multiplier (mean, 95% t interval over seeds)")
    _save(fig, stem)


def robust_vs_eps(df: pd.DataFrame, stem: Path) -> None:
    """One panel per dataset, attack and norm; the `worst_case` panels (per sample, over every
    evasion attack of a replicate) are the robust accuracy to read."""
    ev = family(df, "evasion")
    if ev.empty or "robust_accuracy" not in ev:
        return _empty(stem, "No evasion attack in this grid")
    norm = ev["norm"].fillna("Linf") if "norm" in ev else "Linf"
    flagged = flag_text(ev["flags"]).ne("") if "flags" in ev else False
    ev = ev.assign(norm=norm, setting=ev["defense"] + " σ=" + ev["noise_multiplier"].map(
        "{:g}".format) + np.where(flagged, " (flagged)", ""))
    stats = _seed_stats(ev, ["dataset", "attack", "norm", "setting", "attack_value"],
                        "robust_accuracy")
    stats = stats.assign(order=stats["attack"].ne("worst_case")).sort_values(
        ["dataset", "order", "attack"], kind="stable")  # worst case first in each row
    rows = {d: list(g.groupby(["attack", "norm"], sort=False)) for d, g in
            stats.groupby("dataset", sort=False)}
    ncols = max(len(r) for r in rows.values())
    fig, axes = plt.subplots(len(rows), ncols, figsize=(4.5 * ncols, 3.6 * len(rows)),
                             squeeze=False, sharey=True)
    for ax in axes.flat:
        ax.set_axis_off()
    for i, (dataset, panels) in enumerate(rows.items()):
        for ax, ((attack, norm), p) in zip(axes[i], panels):
            ax.set_axis_on()
            for setting, g in p.groupby("setting"):
                ax.errorbar(g["attack_value"].astype(float), g["mean"], yerr=[g["down"], g["up"]],
                            marker="o", capsize=3, label=setting)
            ax.set(title=f"{dataset}: {attack}", ylabel="robust accuracy",
                   xlabel=f"perturbation budget ε ({norm}, pixels in [0,1])")
            ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=8, title="defense, noise")
    fig.suptitle("Robust accuracy vs attack strength (mean, 95% t interval over seeds)")
    _save(fig, stem)


def frontier(df: pd.DataFrame, stem: Path) -> None:
    """Privacy (epsilon, reconstruction SSIM) against utility (clean accuracy) and robustness
    (worst-case robust accuracy), one point per defense and noise multiplier."""
    reps = df.drop_duplicates(REPLICATE)[REPLICATE + ["clean_accuracy", "epsilon"]]
    for frame, metric, how in ((worst_case(df), "robust_accuracy", "min"),
                               (family(df, "inversion"), "ssim", "max")):
        if metric in frame and frame[metric].notna().any():
            reps = reps.merge(_per_replicate(frame, metric, how), on=REPLICATE, how="left")
    reps["epsilon"] = pd.to_numeric(reps["epsilon"], errors="coerce").replace(np.inf, np.nan)
    xs = [(m, label) for m, label in (("clean_accuracy", "clean accuracy"),
                                      ("robust_accuracy", "robust accuracy (worst case)"))
          if m in reps]
    ys = [(m, label) for m, label in (("epsilon", "privacy budget ε (lower = more private)"),
                                      ("ssim", "reconstruction SSIM (lower = more private)"))
          if m in reps and reps[m].notna().any()]
    if not ys:
        return _empty(stem, "No privacy measure in this grid (no DP defense, no inversion attack)")
    stats = {m: _seed_stats(reps, CELL, m).set_index(CELL) for m, _ in xs + ys}
    fig, axes = plt.subplots(len(ys), len(xs), figsize=(5 * len(xs), 4 * len(ys)), squeeze=False,
                             layout="constrained")
    defenses = sorted(reps["defense"].unique())
    datasets = sorted(reps["dataset"].unique())
    for row, (ym, ylabel) in enumerate(ys):
        for col, (xm, xlabel) in enumerate(xs):
            ax, x, y = axes[row][col], stats[xm], stats[ym]
            for key in y.index[y["mean"].notna()]:
                dataset, defense, noise = key
                ax.errorbar(x.loc[key, "mean"], y.loc[key, "mean"], xerr=_err(x, key),
                            yerr=_err(y, key), capsize=3, ls="none",
                            marker=MARKERS[datasets.index(dataset) % len(MARKERS)],
                            color=f"C{defenses.index(defense)}")
                ax.annotate(f"σ={noise:g}", (x.loc[key, "mean"], y.loc[key, "mean"]),
                            fontsize=7, xytext=(4, 3), textcoords="offset points")
            if ym == "epsilon":
                _audit_points(df, ax, x, datasets)
            if ym == "epsilon" and (y["mean"].dropna() > 0).all():
                ax.set_yscale("log")
            ax.set(xlabel=xlabel, ylabel=ylabel)
            ax.grid(alpha=0.3)
    handles = [plt.Line2D([], [], color=f"C{i}", marker="o", ls="none",
                          label=f"defense: {d}") for i, d in enumerate(defenses)]
    handles += [plt.Line2D([], [], color="gray", marker=MARKERS[i % len(MARKERS)], ls="none",
                           label=f"dataset: {d}") for i, d in enumerate(datasets)]
    fig.legend(handles=handles, loc="outside right upper", fontsize=8)
    fig.suptitle("Privacy-utility-robustness frontier (mean, 95% t interval over seeds;\n"
                 "ε only with a formal guarantee; hollow: audit's lower bound)")
    _save(fig, stem)


def _audit_points(df: pd.DataFrame, ax, x: pd.DataFrame, datasets: list) -> None:
    """The privacy audit's lower bound under each audited cell's epsilon (hollow marker, dotted
    line up to the accountant's value); a violation (lower above upper) in red, labelled."""
    if "attack_type" not in df or "empirical_epsilon" not in df:
        return
    audit = df[df["attack_type"] == "privacy_audit"]
    if audit.empty:
        return
    per = audit.groupby(CELL).agg(low=("empirical_epsilon", "mean"), up=("epsilon", "mean"),
                                  bad=("violation", "max"))
    for key, r in per.iterrows():
        if key not in x.index:
            continue
        bad = bool(r["bad"] > 0)
        cx = x.loc[key, "mean"]
        if not r["low"] > 0:  # nothing proven: no point on a log axis
            ax.annotate("audit: 0", (cx, r["up"]), fontsize=7, xytext=(4, -10),
                        textcoords="offset points")
            continue
        ax.plot([cx, cx], [r["low"], r["up"]], ls=":", color="red" if bad else "gray")
        ax.plot(cx, r["low"], marker=MARKERS[datasets.index(key[0]) % len(MARKERS)], mfc="none",
                color="red" if bad else "black", ls="none")
        if bad:
            ax.annotate("VIOLATION", (cx, r["low"]), color="red", fontsize=8, weight="bold",
                        xytext=(4, -10), textcoords="offset points")


def write_plots(summary_csv: str | Path, out_dir: str | Path,
                reconstructions: dict[str, Path] | None = None) -> list[Path]:
    """Every figure as PNG and SVG under out_dir, and the inversion attacks' reconstruction
    grids (`{name: png}`, saved where enabled) copied to out_dir/reconstructions. Returns the
    PNG paths."""
    df = pd.read_csv(summary_csv)
    out = Path(out_dir)
    from fedsafe.files import private_dir  # patients' images: owner-only

    private_dir(out / "reconstructions")
    metric_vs_noise(df.drop_duplicates(REPLICATE), "clean_accuracy", "dataset",
                    "clean test accuracy", out / "accuracy_vs_noise")
    robust_vs_eps(df, out / "robust_vs_eps")
    inv = family(df, "inversion")
    if "ssim" in inv and inv["ssim"].notna().any():
        metric_vs_noise(inv.groupby(REPLICATE + ["attack"], as_index=False)["ssim"].mean(),
                        "ssim", "attack", "reconstruction SSIM", out / "ssim_vs_noise")
    else:
        _empty(out / "ssim_vs_noise", "No inversion attack in this grid")
    frontier(df, out / "frontier")
    for name, png in (reconstructions or {}).items():
        shutil.copyfile(png, out / "reconstructions" / f"{name.replace('/', '__')}.png")
    return sorted(out.rglob("*.png"))
