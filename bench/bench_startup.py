"""Item 5: per-job fixed cost: interpreter, imports, MLflow's first write (and Ray's start-up,
which a training job pays only with `federation.backend: ray`).

Each probe runs in a fresh interpreter (what every Snakemake job pays), alternating probes across
repetitions; medians of wall time. Import probes report the cost on top of a bare interpreter."""
from __future__ import annotations

import argparse
import tempfile

from common import median, run_py, table, write

PROBES = {
    "python -c pass": "pass",
    "import torch": "import torch",
    "import fedsafe.config_check (Snakefile parse time)": "import fedsafe.config_check",
    "import fedsafe.jobs (every job)": "import fedsafe.jobs",
    "import snakemake.script (script: directive preamble)": "import snakemake.script",
    "import flwr": "import flwr",
    "import ray": "import ray",
    "import mlflow": "import mlflow",
    "import fedsafe.federation.simulation (train job)":
        "import fedsafe.federation.simulation",
    "import fedsafe.attacks.evasion.run (attack job)": "import fedsafe.attacks.evasion.run",
    "import torchattacks": "import torchattacks",
    "import opacus": "import opacus",
}

RAY = """
import time, ray, tempfile, os
t = time.perf_counter()
ray.init(num_cpus=2, include_dashboard=False, _temp_dir=tempfile.mkdtemp(prefix='rb-'))
t1 = time.perf_counter()
ray.shutdown()
print(t1 - t, time.perf_counter() - t1)
"""



def mlflow_probe(db: str) -> str:
    return f"""
import time
t0 = time.perf_counter()
import mlflow
t1 = time.perf_counter()
mlflow.set_tracking_uri('sqlite:///{db}')
mlflow.set_experiment('bench')
with mlflow.start_run():
    mlflow.log_metric('m', 1.0)
t2 = time.perf_counter()
print(t1 - t0, t2 - t1)
"""


def main(argv=None, **_) -> dict:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--reps", type=int, default=None)
    a = ap.parse_args(argv)
    reps = a.reps or (2 if a.quick else 3)
    times: dict[str, list[float]] = {k: [] for k in PROBES}
    ray_init, ray_down, ml_new, ml_old, ml_import = [], [], [], [], []
    tmp = tempfile.mkdtemp(prefix="fedsafe-bench-")
    for r in range(reps):
        items = list(PROBES.items())
        for name, code in (items if r % 2 == 0 else items[::-1]):
            times[name].append(run_py(code)[0])
        i, d = run_py(RAY)[1].split()
        ray_init.append(float(i)), ray_down.append(float(d))
        imp, new = run_py(mlflow_probe(f"{tmp}/fresh{r}.db"))[1].split()
        ml_new.append(float(new)), ml_import.append(float(imp))
        _, old = run_py(mlflow_probe(f"{tmp}/fresh{r}.db"))[1].split()  # now exists
        ml_old.append(float(old))
    bare = median(times["python -c pass"])
    rows = [{"probe": k, "wall s (median)": median(v),
             "minus bare interpreter": median(v) - bare if k != "python -c pass" else "-"}
            for k, v in times.items()]
    rows += [{"probe": "ray.init(num_cpus=2)", "wall s (median)": median(ray_init)},
             {"probe": "ray.shutdown()", "wall s (median)": median(ray_down)},
             {"probe": "MLflow first run + metric, new sqlite DB (schema migrations)",
              "wall s (median)": median(ml_new)},
             {"probe": "MLflow run + metric, existing sqlite DB", "wall s (median)": median(ml_old)}]
    train_fixed = (median(times["import fedsafe.jobs (every job)"])
                   + median(times["import snakemake.script (script: directive preamble)"]) - bare
                   + median(times["import fedsafe.federation.simulation (train job)"]) - bare
                   + median(ml_import) + median(ml_old))
    ray_fixed = median(ray_init) + median(ray_down)  # only with federation.backend: ray
    attack_fixed = (median(times["import fedsafe.jobs (every job)"])
                    + median(times["import snakemake.script (script: directive preamble)"]) - bare
                    + median(times["import fedsafe.attacks.evasion.run (attack job)"]) - bare
                    + median(ml_import) + median(ml_old))
    body = (f"Fresh interpreter per probe, {reps} alternating repetitions, medians of wall time.\n\n"
            + table(rows)
            + f"\nEstimated fixed cost per job (interpreter + imports + Snakemake script preamble"
              f" + MLflow import and one logged run): train job **{train_fixed:.1f} s** "
              f"(+ {ray_fixed:.1f} s Ray start/stop with `federation.backend: ray`), attack job "
              f"**{attack_fixed:.1f} s**.\n")
    reads = context_reads(tmp)
    body += (f"\nA cell's files for one attack job (the default grid's pathology data, 3,000 images,"
             f" and a small_cnn model; best of 5): read and decompressed by the job "
             f"**{reads['cold'] * 1000:.0f} ms**, kept in memory by the job server for every attack"
             f" on the cell (`fedsafe.files.warm`) **{reads['warm'] * 1000:.0f} ms**.\n")
    write("startup", "Item 5: per-job fixed cost", body)
    return {"fixed_train_s": train_fixed, "fixed_attack_s": attack_fixed,
            "import_jobs_s": median(times["import fedsafe.jobs (every job)"]),
            "ray_init_s": median(ray_init), "mlflow_new_db_s": median(ml_new),
            "context_read_cold_s": reads["cold"], "context_read_warm_s": reads["warm"]}


def context_reads(tmp: str) -> dict[str, float]:
    """What an attack job reads before it attacks, as a job reads it alone and as it reads it
    when the job server kept the cell's files (fedsafe.worker._warm)."""
    import time
    from pathlib import Path

    import torch

    from fedsafe import files
    from fedsafe.data.prepare import load_prepared, prepare, warm_prepared
    from fedsafe.models import build_model_for

    data = Path(tmp) / "data"
    man = prepare("synthetic_pathology", {"image_size": 32, "n_samples": 3000,
                                          "test_fraction": 0.134, "holdout_fraction": 0.4,
                                          "partition": {"scheme": "dirichlet", "alpha": 1.0}},
                  3, 0, data)
    model = Path(tmp) / "model.pt"
    torch.save(build_model_for("small_cnn", man).state_dict(), model)

    def once() -> float:
        t0 = time.perf_counter()
        load_prepared(data), files.load_torch(model)
        return time.perf_counter() - t0

    cold = min(once() for _ in range(5))
    warm_prepared(data), files.warm(model)
    return {"cold": cold, "warm": min(once() for _ in range(5))}


if __name__ == "__main__":
    main()
