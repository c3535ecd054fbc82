"""Evasion attacks to the RobustBench standard on the default cell (config/config.yaml: pathology,
no defense, seed 0, trained with the project's own `train_cell`), on the fixed test subset the
attack jobs use (first `--n` of the cell seed's permutation).

Reports robust accuracy per attack and eps (FGSM, Fed-Safe's 6-step PGD, the default PGD, PGD 50
steps x 5 restarts as the reference, APGD-CE/DLR, Square, CW, AutoAttack), the per-sample worst
case, each attack's cost per sample (one thread, global model only), and an estimate of the
default grid's evasion time built from those costs."""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
from common import CACHE, table, write
from data import DATASET, default_config, default_spec, prepared

TARGET_POINTS = 0.02  # default PGD within 2 points of PGD-50x5


def trained_cell() -> Path:
    """The default cell trained once with the project's code, cached with the benchmark data."""
    from fedsafe.federation.simulation import train_cell

    out = CACHE / "evasion_cell"
    if not (out / "train.json").exists():
        out.mkdir(parents=True, exist_ok=True)
        result = train_cell(prepared(), default_spec(), out, cpus=1)
        (out / "train.json").write_text(json.dumps({"clean_accuracy": result["clean_accuracy"]}))
    return out


def attacks(eps: list[float], quick: bool) -> dict[str, tuple[str, dict]]:
    """name -> (registry type, options); `default` = the registry's defaults."""
    aa = {"steps": 100, "n_queries": 5000} if not quick else {"steps": 20, "n_queries": 500}
    return {
        "fgsm": ("fgsm", {}),
        "pgd_fedsafe (6 x eps/6)": ("pgd", {"steps": 6, "step_fraction": 6, "restarts": 1,
                                            "fgsm_first": False}),
        "pgd (default)": ("pgd", {}),
        "pgd 50 x 5 restarts": ("pgd", {"steps": 50, "restarts": 5, "fgsm_first": False}),
        "apgd-ce (default)": ("apgd", {}),
        "apgd-dlr": ("apgd", {"loss": "dlr"}),
        "square (1000 queries)": ("square", {}),
        "cw (L2 0.25/0.5/1)": ("cw", {"eps": [0.25, 0.5, 1.0]}),
        "autoattack (standard)": ("autoattack", {"version": "standard", **aa}),
    }


def default_grid_estimate(cost: dict[str, float], ctx) -> tuple[float, str]:
    """Seconds of evasion work in the default grid: per attack, cost per sample x samples x eps,
    times the models attacked per cell (the global model, plus each client's copy where a
    downlink defense makes the copies differ)."""
    from fedsafe import config_check
    from fedsafe.config import grid, specs
    from fedsafe.defenses.base import build_defense

    cfg = default_config()
    config_check.validate(cfg)
    models = 0
    for c in grid.replicates(cfg):
        spec = specs.train_spec(cfg, c["dataset"], c["defense"], c["noise"], c["seed"])
        d = build_defense(spec["parts"], spec["noise"], spec["options"], 0, name=spec["defense"])
        copies = [d.downlink(ctx.weights, 99, k) for k in range(3)]
        differ = any(not torch.equal(w[n], ctx.weights[n]) for w in copies for n in w)
        models += 1 + (3 if differ else 0)
    # attacks without n_samples attack every test image (the datasets' test splits)
    tests = [round(d["options"]["n_samples"] * d["options"]["test_fraction"])
             for d in cfg["datasets"].values()]
    all_images = sum(tests) / len(tests)
    total, parts = 0.0, []
    for name in cfg["attacks"]:
        spec = specs.attack_spec(cfg, name)
        if spec["type"] not in cost:
            continue
        o = spec["options"]
        nonzero = sum(1 for e in o["eps"] if e > 0)
        s = cost[spec["type"]] * (o["n_samples"] or all_images) * nonzero * models
        total += s
        parts.append(f"{name} {s:.0f} s")
    replicates = len(grid.replicates(cfg))
    return total, f"{models} models attacked over {replicates} replicates: " + ", ".join(parts)


def main(argv=None, **_) -> dict:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--n", type=int, default=None, help="test samples (default 300, quick 100)")
    a = ap.parse_args(argv)
    n = a.n or (100 if a.quick else 300)
    torch.set_num_threads(1)  # attack jobs run with one thread
    from fedsafe.attacks.context import load_context
    from fedsafe.attacks.evasion.run import run
    from fedsafe.federation.simulation import cell_files
    from fedsafe.robustness import worst_case_rows

    cell = trained_cell()
    ctx = load_context(prepared(), cell_files(cell), default_spec(),
                       json.loads((cell / "train.json").read_text()))
    eps = [float(e) for e in default_config()["attacks"]["pgd"]["options"]["eps"]]
    results, rows, cost = [], [], {}
    for name, (kind, opts) in attacks(eps, a.quick).items():
        t0 = time.process_time()
        out = run(ctx, {"eps": eps, "n_samples": n, "transfer": False, **opts}, kind=kind)
        per_sample = (time.process_time() - t0) / (n * len(out))
        if "default" in name or kind not in cost:
            cost[kind] = per_sample
        results.append({"attack": name, "family": "evasion", "rows": out})
        rows.append({"attack": name, **{f"{r['norm']} {r['attack_value']:g}": r["robust_accuracy"]
                                        for r in out}, "ms / sample / eps": 1000 * per_sample})
        print(rows[-1], flush=True)
    worst = worst_case_rows({}, [r for r in results if "autoattack" not in r["attack"]])
    rows.append({"attack": "worst case (all but AutoAttack), per sample",
                 **{f"{r['norm']} {r['attack_value']:g}": r["robust_accuracy"] for r in worst}})
    worst = worst_case_rows({}, results)
    rows.append({"attack": "worst case (all), per sample",
                 **{f"{r['norm']} {r['attack_value']:g}": r["robust_accuracy"] for r in worst}})
    acc = {r["attack"]: r for r in rows}
    gap = max(acc["pgd (default)"][f"Linf {e:g}"] - acc["pgd 50 x 5 restarts"][f"Linf {e:g}"]
              for e in eps)
    weaker = [e for e in eps if acc["pgd (default)"][f"Linf {e:g}"] > acc["fgsm"][f"Linf {e:g}"]]
    grid_s, grid_text = default_grid_estimate(cost, ctx)
    body = (f"Default cell (`{DATASET}`, no defense, seed 0; clean accuracy on the full test set "
            f"{ctx.train_result['clean_accuracy']:.3f}), {n} fixed test samples, eps {eps} "
            f"(L∞) and CW's L2 radii; robust accuracy (correct both clean and attacked). Cost: "
            "process CPU time per sample per eps, one thread, global model only.\n\n"
            + table(rows, list(dict.fromkeys(k for r in rows for k in r)))
            + f"\n- default PGD vs PGD-50x5: largest gap {gap:+.3f} "
            f"({'MET' if gap <= TARGET_POINTS else 'NOT MET'}, target <= {TARGET_POINTS})\n"
            f"- default PGD weaker than FGSM at: {weaker or 'no eps'}\n"
            f"- estimated evasion work of the default grid (config/config.yaml) from these "
            f"costs: {grid_s / 60:.1f} CPU-minutes ({grid_text})\n")
    write("evasion", "Evasion attacks on the default cell", body)
    return {"pgd_gap_points": 100 * gap, "evasion_grid_s": grid_s}


if __name__ == "__main__":
    main()
