"""Item 9: homomorphic-encryption aggregation (`he`, CKKS with TenSEAL, default parameters) vs
plain FedAvg on the default cell (pathology, seed 0, config/config.yaml): the same training,
each side in a fresh interpreter with the job's CPUs, alternating.

Reported: training time of both and their ratio, per round the bytes a client's update weighs
encrypted and in the clear, the server's seconds to add the ciphertexts, the slowest client's
seconds to decrypt the global model and encrypt its update, the bound on the aggregate's
decryption error, and the final accuracy of both (they agree to CKKS's error)."""
from __future__ import annotations

import json

from common import median, run_py, table, training_args, write
from data import prepared

CELL = r"""
import json, sys, time, tempfile
sys.path.insert(0, 'bench')
import torch
torch.set_num_threads({cpus})
from pathlib import Path
from data import default_spec
from fedsafe.federation.simulation import train_cell
spec = default_spec()
if {he!r}:
    spec.update(defense="he", parts=["he"], options={{}})
t0 = time.perf_counter()
res = train_cell(Path({data!r}), spec, Path(tempfile.mkdtemp()), cpus={cpus})
rows = res["history"]
per_round = lambda k: sum(r[k] for r in rows) / len(rows) if rows and k in rows[0] else 0.0
print(json.dumps({{"train": time.perf_counter() - t0, "acc": res["clean_accuracy"],
                  "clients": sum(len(r["clients"]) for r in rows) / len(rows),
                  "bytes_up": per_round("bytes_up"), "bytes_up_plain": per_round("bytes_up_plain"),
                  "server_s": per_round("he_server_seconds"),
                  "client_s": per_round("he_client_seconds"),
                  "error": max((r.get("he_error_bound", 0.0) for r in rows), default=0.0)}}))
"""


def main(argv=None, **_) -> dict:
    a, reps = training_args(argv)
    data = str(prepared())
    res: dict[str, list[dict]] = {"plain": [], "he": []}
    for r in range(reps):
        for side in (list(res) if r % 2 == 0 else list(res)[::-1]):
            _, out = run_py(CELL.format(data=data, cpus=a.cpus, he=side == "he"),
                            env={"FLWR_LOG_LEVEL": "WARNING"}, timeout=1800)
            res[side].append(json.loads(out.strip().splitlines()[-1]))
    med = {s: {k: median([row[k] for row in rows]) for k in rows[0]} for s, rows in res.items()}
    plain, he = med["plain"], med["he"]
    ratio = he["train"] / plain["train"]
    per_client = he["bytes_up"] / max(he["clients"], 1)
    size_ratio = he["bytes_up"] / he["bytes_up_plain"]
    rows = [{"side": "plain FedAvg (`none`)", "train_cell s": plain["train"],
             "final test acc": plain["acc"]},
            {"side": "`he` (CKKS, N 8192, primes [60, 60, 60], scale 2^52)",
             "train_cell s": he["train"], "final test acc": he["acc"]}]
    body = (f"Default cell (pathology / seed 0, config/config.yaml), {a.cpus} CPUs, {reps} "
            f"alternating repetition(s), medians.\n\n" + table(rows)
            + f"\n- training time, he / plain: {ratio:.2f}x\n"
              f"- a client's update per round: {per_client / 2**20:.2f} MiB encrypted, "
              f"{he['bytes_up_plain'] / max(he['clients'], 1) / 2**20:.3f} MiB in the clear "
              f"({size_ratio:.1f}x)\n"
              f"- per round: server adds the ciphertexts in {he['server_s']:.3f} s; the slowest "
              f"client decrypts the global model and encrypts its update in "
              f"{he['client_s']:.3f} s\n"
              f"- largest bound on an aggregate's decryption error: {he['error']:.2g}\n"
              f"- final accuracy, he - plain: {he['acc'] - plain['acc']:+.4f}\n")
    write("he", "Item 9: homomorphic-encryption aggregation vs plain FedAvg", body)
    return {"he_ratio": ratio, "he_bytes_ratio": size_ratio, "he_server_round_s": he["server_s"],
            "he_client_round_s": he["client_s"], "he_acc_diff": he["acc"] - plain["acc"]}


if __name__ == "__main__":
    main()
