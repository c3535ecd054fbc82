"""Item 8: what the privacy audit and the reference-model attacks cost on the default cell.

- audit: training the default dp_sgd cell with the audit's canaries vs without (the canaries add
  about m / 2 samples to the clients), and the audit job itself (scoring m canaries);
- reference models: the `reference` rule on the default dataset (n models, centralised, the
  default recipe), and one RMIA and one LiRA attack on its output.
One run each (a training is tens of seconds; the machine may be shared: read the ratios)."""
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
    from fedsafe.jobs import train

    t0 = time.perf_counter()
    train(spec, prepared() / "data.npz", out / "train.json", {"enabled": False}, "bench", threads=2)
    return time.perf_counter() - t0


def main(argv=None, **_) -> dict:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="2 rounds, 4 reference models")
    ap.add_argument("--canaries", type=int, default=1000)
    ap.add_argument("--n-reference", type=int, default=8)
    a = ap.parse_args(argv)
    from fedsafe.attacks.context import load_context
    from fedsafe.attacks.reference import run_lira, run_rmia
    from fedsafe.config import attack_spec, reference_spec
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
        ctx = load_context(prepared(), tmp / "audited", audited, result, "cpu", tmp)
        t0 = time.perf_counter()
        from fedsafe.attacks.audit import run_privacy_audit

        row = run_privacy_audit(ctx, {"confidence": 0.95,
                                      "guess_fractions": [0.02, 0.05, 0.1, 0.2, 0.5, 1.0]})[0]
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
        info = reference(rspec, prepared() / "data.npz", tmp / "reference.pt", threads=2)
        t_ref = time.perf_counter() - t0
        ctx.reference_path = tmp / "reference.pt"
        base = {"n_samples": 150, "offline_a": 0.3, "gamma": 1.0}
        rows.append({"item": f"reference rule: {info['n_models']} models x "
                             f"{info['train_size']} samples", "seconds": t_ref,
                     "ratio": t_ref / t_clean, "note": "ratio to one clean training"})
        for name, fn in (("RMIA offline", run_rmia), ("LiRA online", run_lira)):
            opts = {**attack_spec({"attacks": {"x": {"type": "mia_rmia", "options": {}}}}, "x")["options"],
                    **base, "online": name.endswith("online")}
            t0 = time.perf_counter()
            r = fn(ctx, opts)[0]
            rows.append({"item": f"{name} attack", "seconds": time.perf_counter() - t0,
                         "note": f"AUC {r['auc']:.3f}"})
    body = "\n" + table(rows, ["item", "seconds", "ratio", "note"])
    write("audit", "Privacy audit and reference models: cost", body)
    return {"audit_train_ratio": t_audit / t_clean, "audit_job_s": t_job,
            "reference_s": t_ref, "reference_vs_cell": t_ref / t_clean}
