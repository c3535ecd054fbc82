"""Item 1: the project's Flower training of the default cell vs a plain-PyTorch reference loop
doing identical math: same model init, same `local_train` per client per round (same seeds, same
data order), the same seeded client sampling, the same weighted FedAvg in double precision in
partition order, the same central evaluation every round.

Each side runs in a fresh interpreter (as a Snakemake job would), alternating, with the job's
2 CPUs; the reference trains the clients one after another with 2 torch threads, as does Flower
with the default in-process backend; with `backend: ray` (a third side, for comparison) Flower's
Simulation Engine runs one client per CPU with 1 thread each. Reported: process wall time (spawn to exit), training
time inside the process, Flower's start-up (`startup_seconds`: train_cell entry to round 0),
and the final accuracy of both (they should agree up to float summation order)."""
from __future__ import annotations

import json

from common import median, run_py, table, training_args, verdict, write
from data import prepared

TARGET = 1.3

FLOWER = r"""
import json, sys, time, tempfile, logging
t0 = time.perf_counter()
sys.path.insert(0, 'bench')
import torch
torch.set_num_threads({cpus})
from data import default_spec
from fedsafe.federation.simulation import train_cell
t_imp = time.perf_counter()
spec = default_spec(); spec["federation"]["backend"] = {backend!r}
res = train_cell(__import__('pathlib').Path({data!r}), spec, __import__('pathlib').Path(tempfile.mkdtemp()), cpus={cpus})
t1 = time.perf_counter()
print(json.dumps({{"imports": t_imp - t0, "train": t1 - t_imp, "startup": res["startup_seconds"],
                  "acc": res["clean_accuracy"], "loss": res["test_loss"]}}))
"""

REFERENCE = r"""
import json, sys, time
t0 = time.perf_counter()
sys.path.insert(0, 'bench')
import numpy as np, torch
torch.set_num_threads({cpus})
from data import default_spec
from fedsafe.data.prepare import load_prepared
from fedsafe.defenses.base import build_defense
from fedsafe.federation.local import TrainSettings, evaluate, local_train
from fedsafe.models import build_model_for
from fedsafe.seeding import derive_seed
t_imp = time.perf_counter()
spec = default_spec(); fed = spec["federation"]
data = load_prepared(__import__('pathlib').Path({data!r})); m = data.manifest
make = lambda: build_model_for(spec["model"], m)
torch.manual_seed(spec["seed"])
model = make()
defense = build_defense(spec["parts"], spec["noise"], spec["options"], spec["seed"], spec["defense"])
glob = {{k: v.detach().clone() for k, v in model.state_dict().items()}}
evaluate(model, *data.test)  # round 0, as the strategy's evaluate_fn
settings = TrainSettings.from_config(fed)
n = len(data.clients); states = [{{}} for _ in range(n)]
for rnd in range(1, fed["rounds"] + 1):
    k = max(1, int(round(n * fed["fraction_train"])))
    rng = np.random.default_rng(derive_seed(spec["seed"], "sample", rnd))
    chosen = sorted(rng.choice(n, size=k, replace=False))
    updates, sizes = [], []
    for c in chosen:
        d = build_defense(spec["parts"], spec["noise"], spec["options"], spec["seed"], spec["defense"])
        cm = make(); cm.load_state_dict(d.downlink(glob, rnd, int(c)))
        x, y = data.clients[c]
        info = {{"node": int(c), "peers": [str(i) for i in chosen], "sampled": k,
                "num_examples": len(y), "weighted": fed["aggregation"] == "weighted"}}
        u, met = local_train(cm, x, y, settings, d, spec["seed"], rnd, int(c), states[c], "cpu", round_info=info)
        updates.append(u); sizes.append(met["num_examples"])
    s = np.array(sizes, dtype=float)
    w = s / s.sum() if fed["aggregation"] == "weighted" else np.full(len(s), 1 / len(s))
    mean = {{key: sum(wi * u[key].double() for wi, u in zip(w, updates)).to(glob[key].dtype) for key in updates[0]}}
    mean = defense.aggregate(mean, rnd, len(updates))
    glob = {{key: glob[key] + mean[key] for key in mean}}
    model.load_state_dict(glob)
    res = evaluate(model, *data.test)
t1 = time.perf_counter()
print(json.dumps({{"imports": t_imp - t0, "train": t1 - t_imp, "startup": 0.0,
                  "acc": res["accuracy"], "loss": res["loss"]}}))
"""


def main(argv=None, **_) -> dict:
    a, reps = training_args(argv)
    data = str(prepared())
    env = {"RAY_DEDUP_LOGS": "0", "FLWR_LOG_LEVEL": "WARNING"}
    res: dict[str, list[dict]] = {"flower": [], "reference": [], "ray": []}
    for r in range(reps):
        order = list(res) if r % 2 == 0 else list(res)[::-1]
        for side in order:
            code = (REFERENCE if side == "reference" else FLOWER).format(
                data=data, cpus=a.cpus, backend="ray" if side == "ray" else "inprocess")
            wall, out = run_py(code, env=env, timeout=900)
            row = json.loads(out.strip().splitlines()[-1])
            row["wall"] = wall
            res[side].append(row)
    med = {s: {k: median([r[k] for r in rows]) for k in rows[0]} for s, rows in res.items()}
    f, p, ray = med["flower"], med["reference"], med["ray"]
    total = f["wall"] / p["wall"]
    train_only = f["train"] / p["train"]
    after_start = (f["train"] - f["startup"]) / p["train"]
    rows = [{"side": s, "process wall s": m["wall"], "imports s": m["imports"],
             "train_cell / loop s": m["train"], "start-up to round 0 s": m["startup"],
             "final test acc": m["acc"], "final test loss": m["loss"]}
            for s, m in (("Flower train_cell (backend inprocess, default)", f),
                         ("plain PyTorch reference", p),
                         ("Flower train_cell (backend ray)", ray))]
    body = (f"Default cell (pathology / none / seed 0, config/config.yaml), {a.cpus} CPUs, "
            f"{reps} alternating repetition(s), medians of wall time.\n\n" + table(rows)
            + f"\n- whole process (spawn to exit): {verdict(total, TARGET)}\n"
              f"- training call only (after imports): {train_only:.2f}x\n"
              f"- excluding Flower's start-up (train_cell minus time to round 0): "
              f"{after_start:.2f}x\n"
              f"- fixed start-up cost of the Flower run: {f['startup']:.1f} s to round 0 "
              f"(+ {f['imports']:.1f} s imports)\n"
              f"- with `backend: ray`: {ray['wall'] / p['wall']:.2f}x whole process, "
              f"{ray['startup']:.1f} s to round 0\n")
    write("federation", "Item 1: Flower training vs a plain PyTorch loop", body)
    return {"fed_ratio": total, "fed_ratio_train": train_only, "fed_ratio_no_startup": after_start,
            "fed_startup_s": f["startup"], "fed_flower_wall_s": f["wall"],
            "fed_reference_wall_s": p["wall"], "fed_ray_ratio": ray["wall"] / p["wall"]}


if __name__ == "__main__":
    main()
