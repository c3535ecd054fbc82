"""Item 8: what the privacy audit and the reference-model attacks cost on the default cell.

- audit: training the default dp_sgd cell with the audit's canaries vs without (the canaries add
  about m / 2 samples to the clients), and the audit job itself (scoring m canaries);
- reference models: the `reference` rule on the default dataset (n models, centralised, the
  default recipe), and one RMIA and one LiRA attack on its output.
One run each (a training is tens of seconds; the machine may be shared: read the ratios).

- audit ratios (issue 24): audited / accounted epsilon on ideal Gaussian canary scores (no
  training: included ~ N(1/sigma, 1), excluded ~ N(0, 1), exactly the Gaussian mechanism of noise
  multiplier sigma for every canary), ours (Steinke, f-DP) beside jax-privacy's on the same scores
  (`audit_ratios`; jax-privacy's columns are empty where it is not installed)."""
from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch
from common import table, write
from data import default_config, default_spec, prepared


def _train(spec: dict, out: Path) -> float:
    from fedsafe.federation.simulation import cell_files
    from fedsafe.jobs import train

    t0 = time.perf_counter()
    train(spec, prepared() / "data.npz", out / "train.json", cell_files(out), threads=2)
    return time.perf_counter() - t0


def audit_ratios(sizes=(1000, 10000, 40000), sigmas=(0.5, 1.0, 2.0), seeds=5,
                 delta=1e-5) -> list[dict]:
    """Audited / accounted epsilon on the same ideal Gaussian scores, mean over `seeds` draws:
    ours (both tails guessed, 6 guess counts, Bonferroni) and jax-privacy's `CanaryScoreAuditor`
    (one tail, Bonferroni over every threshold), 95% confidence; the accounted epsilon is the PLD
    accountant's for one Gaussian mechanism of noise multiplier sigma."""
    import numpy as np

    from fedsafe.attacks.membership.audit import audit, jax_privacy_auditing
    from fedsafe.defenses.accounting import epsilon

    jax = jax_privacy_auditing()
    rows = []
    for m in sizes:
        for sigma in sigmas:
            acc = epsilon([(1.0, sigma, 1)], delta)
            got: dict[str, list[float]] = {}
            for seed in range(seeds):
                rng = np.random.default_rng([seed, m, int(sigma * 100)])
                inc = rng.random(m) < 0.5
                scores = rng.normal(size=m) + inc / sigma
                t0 = time.perf_counter()
                res = audit(scores, inc, delta)
                got.setdefault("ours s", []).append(time.perf_counter() - t0)
                got.setdefault("Steinke (ours)", []).append(res["epsilon_lower_bound"] / acc)
                got.setdefault("f-DP (ours)", []).append(res["fdp_epsilon_lower_bound"] / acc)
                if jax is not None:
                    t0 = time.perf_counter()
                    auditor = jax.CanaryScoreAuditor(scores[inc], scores[~inc])
                    got.setdefault("Steinke (jax-privacy)", []).append(
                        auditor.epsilon_one_run(0.05, delta) / acc)
                    got.setdefault("f-DP (jax-privacy)", []).append(
                        auditor.epsilon_one_run_fdp(0.05, delta) / acc)
                    got.setdefault("jax-privacy s", []).append(time.perf_counter() - t0)
            rows.append({"canaries": m, "sigma": sigma, "accounted ε": acc,
                         **{k: float(np.mean(v)) for k, v in got.items()},
                         "ceiling Steinke / f-DP": f"{res['ceiling']:.2f} / "
                                                   f"{res['fdp_ceiling']:.2f}"})
    return rows


def main(argv=None, **_) -> dict:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="2 rounds, 4 reference models")
    ap.add_argument("--canaries", type=int, default=1000)
    ap.add_argument("--n-reference", type=int, default=8)
    a = ap.parse_args(argv)
    from fedsafe.attacks import ATTACKS
    from fedsafe.attacks.context import load_context
    from fedsafe.config.specs import attack_spec, reference_spec
    from fedsafe.federation.simulation import cell_files
    from fedsafe.jobs import reference

    torch.set_num_threads(2)
    cfg = default_config()
    spec = default_spec("dp_sgd", "1")
    if a.quick:
        spec["federation"] = {**spec["federation"], "rounds": 2}
    audited = {**spec, "canaries": {"n": a.canaries, "kind": "noise"}}
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        t_clean = _train(spec, tmp / "clean")
        t_audit = _train(audited, tmp / "audited")
        result = json.loads((tmp / "audited" / "train.json").read_text())
        ctx = load_context(prepared(), cell_files(tmp / "audited"), audited, result, "cpu", tmp)
        t0 = time.perf_counter()
        row = ATTACKS.load("privacy_audit")(
            ctx, {"confidence": 0.95, "guess_fractions": [0.02, 0.05, 0.1, 0.2, 0.5, 1.0]})[0]
        t_job = time.perf_counter() - t0
        rows += [{"item": "train dp_sgd cell, clean", "seconds": t_clean},
                 {"item": f"train dp_sgd cell, {a.canaries} canaries", "seconds": t_audit,
                  "ratio": t_audit / t_clean},
                 {"item": "privacy_audit attack (scoring + bound)", "seconds": t_job,
                  "note": f"lower bound {row['empirical_epsilon']:.3f}, accounted "
                          f"{row['formal_epsilon']:.3f}"}]

        rcfg = {**cfg, "reference_models": {"n": 4 if a.quick else a.n_reference,
                                            "training": "centralised"}}
        rspec = reference_spec(rcfg, "pathology", 0)
        if a.quick:
            rspec["federation"] = spec["federation"]
        t0 = time.perf_counter()
        info = reference(rspec, prepared() / "data.npz", tmp / "reference.pt",
                         tmp / "reference.json", threads=2)
        t_ref = time.perf_counter() - t0
        ctx.reference_path = tmp / "reference.pt"
        base = {"n_samples": 150, "offline_a": 0.3, "gamma": 1.0}
        rows.append({"item": f"reference rule: {info['n_models']} models x "
                             f"{info['train_size']} samples", "seconds": t_ref,
                     "ratio": t_ref / t_clean, "note": "ratio to one clean training"})
        for name, fn in (("RMIA offline", ATTACKS.load("mia_rmia")),
                         ("LiRA online", ATTACKS.load("mia_lira"))):
            opts = {**attack_spec({"attacks": {"x": {"type": "mia_rmia", "options": {}}}}, "x")["options"],
                    **base, "online": name.endswith("online")}
            t0 = time.perf_counter()
            r = fn(ctx, opts)[0]
            rows.append({"item": f"{name} attack", "seconds": time.perf_counter() - t0,
                         "note": f"AUC {r['auc']:.3f}"})
    body = "\n" + table(rows, ["item", "seconds", "ratio", "note"])
    ratios = audit_ratios()
    body += ("\nAudited / accounted epsilon on ideal Gaussian canary scores (95%, delta 1e-5; "
             "same scores for both implementations, mean of 5 draws; seconds per audit):\n\n"
             + table(ratios, ["canaries", "sigma", "accounted ε", "Steinke (ours)", "f-DP (ours)",
                              "Steinke (jax-privacy)", "f-DP (jax-privacy)",
                              "ceiling Steinke / f-DP", "ours s", "jax-privacy s"]))
    write("audit", "Privacy audit and reference models: cost", body)
    return {"audit_train_ratio": t_audit / t_clean, "audit_job_s": t_job,
            "reference_s": t_ref, "reference_vs_cell": t_ref / t_clean}
