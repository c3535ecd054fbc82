"""Run one grid cell (dataset, defense, noise, seed) as a Flower federation inside this job.

`federation.backend` picks how messages travel: `inprocess` (default) delivers them to the
ClientApp in this process (`grid.py`); `ray` runs Flower's Simulation Engine, one Ray worker per
CPU. Both run the same ServerApp, strategy and ClientApp and give the same model. The ClientApp
only receives a small spec (paths and settings); clients load their partition from the prepared
data file themselves, so nothing large is pickled to the simulation workers.
"""

import json
import logging
import os
import secrets
import tempfile
import time
from functools import lru_cache
from pathlib import Path

import torch
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.client.mod import secaggplus_mod
from flwr.clientapp import ClientApp
from flwr.serverapp import Grid, ServerApp

from fedsafe.data.prepare import load_prepared
from fedsafe.defenses.base import build_defense
from fedsafe.federation.grid import run_in_process
from fedsafe.federation.secagg import secagg_train_input, secagg_train_reply
from fedsafe.federation.local import TrainSettings, evaluate, local_train, pick_device
from fedsafe.federation.strategy import DefendedFedAvg, reply
from fedsafe.models import build_model

log = logging.getLogger("fedsafe.train")


@lru_cache(maxsize=2)
def _data(path: str):
    return load_prepared(Path(path))


def _model(spec: dict):
    m = _data(spec["data_dir"]).manifest
    return build_model(spec["model"], m["channels"], len(m["class_names"]), m["image_size"])


def _defense(spec: dict):
    return build_defense(spec["parts"], spec["noise"], spec["options"], spec["seed"],
                         spec.get("defense", "defense"))


def _client_app(spec: dict) -> ClientApp:
    app = ClientApp()
    secure = _defense(spec).secure

    @app.train(mods=[secaggplus_mod] if secure else None)
    def train(msg: Message, context: Context) -> Message:
        if spec["backend"] == "ray":
            torch.set_num_threads(1)  # Ray runs one client per CPU
        client = int(context.node_config["partition-id"])
        defense = _defense(spec)
        model = _model(spec)
        if secure:  # SecAgg+ speaks the legacy FitIns / FitRes format
            received, config = secagg_train_input(msg, list(model.state_dict()))
        else:
            received, config = msg.content["arrays"].to_torch_state_dict(), msg.content["config"]
        rnd = int(config["server-round"])
        model.load_state_dict(defense.downlink(received, rnd, client))
        state = json.loads(context.state["fedsafe"]["json"]) if "fedsafe" in context.state else {}
        x, y = _data(spec["data_dir"]).clients[client]
        peers = str(config["fedsafe-peers"]).split(",")
        weighted = bool(config["fedsafe-weighted"])
        info = {"node": context.node_id, "peers": peers, "sampled": len(peers),
                "num_examples": len(y), "weighted": weighted}
        update, metrics = local_train(model, x, y, TrainSettings.from_config(spec["federation"]),
                                      defense, spec["seed"], rnd, client, state, spec["device"],
                                      round_info=info)
        context.state["fedsafe"] = ConfigRecord({"json": json.dumps(state)})
        if defense.private:  # the client keeps what it computed from its data (train loss)
            _client_log(spec, client, {"round": rnd, **metrics})
            metrics = {"num_examples": len(y)}  # public (README)
        metrics["partition_id"] = client
        if secure:
            return secagg_train_reply(update, len(y) if weighted else 1, metrics, msg)
        return reply(update, metrics, msg)

    @app.query()
    def query(msg: Message, context: Context) -> Message:
        """Tells the server which partition this node holds (node ids are random per run) and
        its number of examples (public: the privacy accounting uses it)."""
        client = int(context.node_config["partition-id"])
        size = len(_data(spec["data_dir"]).clients[client][1])
        return Message(RecordDict({"metrics": MetricRecord(
            {"partition_id": client, "num_examples": size})}), reply_to=msg)

    return app


def _client_log(spec: dict, client: int, metrics: dict) -> None:
    """A client's own diagnostics, in its own file (`clients/<id>.jsonl` in the cell folder);
    under a formal guarantee or secure aggregation they never reach the server."""
    path = Path(spec["client_log_dir"]) / f"{client}.jsonl"
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as f:
        f.write(json.dumps(metrics) + "\n")


def _client_logs(folder: Path) -> dict[int, dict[int, dict]]:
    """{round: {client: its logged metrics}} from the clients' own files."""
    out: dict[int, dict[int, dict]] = {}
    for path in sorted(folder.glob("*.jsonl")):
        for line in path.read_text().splitlines():
            row = json.loads(line)
            out.setdefault(row["round"], {})[int(path.stem)] = row
    return out


def train_cell(data_dir: Path, spec: dict, out_dir: Path, cpus: int = 1, gpus: int = 0,
               files: dict | None = None) -> dict:
    """Train one cell; writes the final model, the checkpoints ({round: global weights}) and the
    server's view to `files` {"model", "checkpoints", "observed"} (the rule's outputs; by default
    `model.pt`, `checkpoints.pt`, `observed.pt` in out_dir, which also holds the clients' logs).
    The server's view is what the server saw in each round of
    `federation.observe_rounds` (default [1]): {round: {"clients": [partition ids],
    "num_examples": [...], "updates": [per-client update as received, or None under secure
    aggregation], "aggregate": the mean update applied, "global_before": weights}}. In cells with a
    formal guarantee or secure aggregation each client writes its own diagnostics to
    `clients/<partition>.jsonl`; the result holds the privacy ledger per round (`history`) and,
    if the privacy budget ended training early, `stopped`."""
    t0 = time.time()
    fed = spec["federation"]
    client_logs = Path(out_dir).resolve() / "clients"  # absolute: Ray workers have their own cwd
    spec = {**spec, "data_dir": str(data_dir), "device": pick_device(fed["device"]),
            "backend": fed.get("backend", "inprocess"), "client_log_dir": str(client_logs)}
    for old_log in client_logs.glob("*.jsonl"):  # a rerun starts the clients' logs afresh
        old_log.unlink()
    data = _data(str(data_dir))
    # Flower resets its logger on import; our per-round lines are the progress report.
    logging.getLogger("flwr").setLevel(logging.WARNING)
    torch.manual_seed(spec["seed"])
    model = _model(spec)
    defense = _defense(spec)
    canaries = _canary_clients(spec, defense)
    observe = [r for r in fed.get("observe_rounds", [1]) if 1 <= r <= fed["rounds"]]
    strategy = DefendedFedAvg(defense, spec["seed"], fed["aggregation"] == "weighted",
                              fed["fraction_train"], observe, len(data.clients),
                              max(len(y) for _, y in data.clients), fed)
    history: list[dict] = []
    checkpoints: dict[int, dict] = {}
    start_time = {"first_round": None}

    def central_eval(rnd: int, arrays: ArrayRecord) -> MetricRecord:
        weights = arrays.to_torch_state_dict()
        checkpoints["last"] = weights
        if rnd in fed["checkpoint_rounds"] or rnd == fed["rounds"]:
            checkpoints[rnd] = weights
        model.load_state_dict(weights)
        res = evaluate(model, *data.test, device=spec["device"])
        if rnd == 0:
            start_time["first_round"], start_time["initial"] = time.time() - t0, res
            return MetricRecord(res)
        clients = strategy.client_metrics[rnd]
        ledger = strategy.ledger.rounds[-1] if strategy.ledger else None
        row = {"round": rnd, "test_accuracy": res["accuracy"], "test_loss": res["loss"],
               "clients": [int(c["partition_id"]) for c in clients],
               "client_train_loss": [c["train_loss"] for c in clients if "train_loss" in c],
               # every client's epsilon so far, indexed by partition id (sampled or not)
               "epsilon": ledger["epsilon"] if ledger else None,
               "client_epsilon": [ledger["client_epsilon"][c] for c in sorted(
                   ledger["client_epsilon"])] if ledger else None,
               "seconds": time.time() - t0}
        history.append(row)
        log.info("round %d/%d  test acc %.3f  loss %.3f%s", rnd, fed["rounds"], res["accuracy"],
                 res["loss"], f"  eps {row['epsilon']:.2f}" if row["epsilon"] is not None else "")
        return MetricRecord(res)

    server = ServerApp()

    @server.main()
    def main(grid: Grid, context: Context) -> None:
        strategy.start(grid=grid, initial_arrays=ArrayRecord(model.state_dict()),
                       num_rounds=fed["rounds"], evaluate_fn=central_eval)

    if spec["backend"] == "ray":
        _run_ray(server, _client_app(spec), len(data.clients), cpus, gpus)
    else:
        torch.set_num_threads(max(cpus, 1))
        run_in_process(server, _client_app(spec), len(data.clients), spec["seed"])
    if len(history) != fed["rounds"] and strategy.stopped is None:
        raise RuntimeError(f"federation stopped after {len(history)} of {fed['rounds']} rounds")
    own = _client_logs(client_logs)
    for row in history:  # diagnostics the clients logged themselves (private cells)
        if row["round"] in own:
            row["client_train_loss"] = [own[row["round"]][c].get("train_loss")
                                        for c in sorted(own[row["round"]])]

    # stopped before round 1 by the budget: the initial model, nothing spent
    final = history[-1] if history else {"test_accuracy": start_time["initial"]["accuracy"],
                                         "test_loss": start_time["initial"]["loss"],
                                         "epsilon": 0.0 if strategy.ledger else None}
    formal = defense.formal
    result = {
        "clean_accuracy": final["test_accuracy"], "test_loss": final["test_loss"],
        "n_test": len(data.test[1]),
        # how far the last round moved test accuracy: a converged recipe keeps it below 0.01
        "last_round_change": (abs(history[-1]["test_accuracy"] - history[-2]["test_accuracy"])
                              if len(history) >= 2 else None),
        "epsilon": final["epsilon"],
        "delta": float(formal.options["delta"]) if strategy.ledger else None,
        "accountant": formal.options["accountant"] if strategy.ledger else None,
        "target_epsilon": formal.options["target_epsilon"] if strategy.ledger else None,
        "guarantee": defense.guarantee, "rounds": fed["rounds"], "rounds_run": len(history),
        "stopped": strategy.stopped,
        "train_seconds": time.time() - t0, "startup_seconds": start_time["first_round"],
        "device": spec["device"], "history": history,
    }
    files = {k: Path(out_dir) / f"{k}.pt" for k in ("model", "checkpoints", "observed")
             } | {k: Path(v) for k, v in (files or {}).items()}
    if canaries is not None:
        canaries.save(Path(out_dir) / "canaries.npz")
    last = checkpoints.pop("last")
    for name, obj in (("checkpoints", checkpoints), ("model", last),
                      ("observed", strategy.observed)):
        files[name].parent.mkdir(parents=True, exist_ok=True)
        _save_torch(obj, files[name])
    return result


def _canary_clients(spec: dict, defense):
    """An audited client-level cell: canary clients join DP-FedAvg's clipped sums."""
    from fedsafe.attacks.canaries import CLIENT_KIND, CanaryClients

    opt = spec.get("canaries")
    if not opt or opt["kind"] != CLIENT_KIND:
        return None
    dp = defense.formal
    # with secret noise the coins are secret too (the audit reads them from canaries.npz)
    seed = secrets.randbits(63) if dp.options.get("secret_noise") else spec["seed"]
    dp.canaries = CanaryClients(opt["n"], seed, dp.clip)
    return dp.canaries


def _save_torch(obj, path: Path) -> None:
    tmp = path.with_suffix(".tmp")
    torch.save(obj, tmp)
    tmp.replace(path)


def _run_ray(server: ServerApp, client: ClientApp, n_clients: int, cpus: int, gpus: int) -> None:
    """In-process simulation; Ray gets exactly this job's CPUs/GPUs and a job-private temp dir."""
    from flwr.simulation import run_simulation

    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    per_client_gpu = gpus / min(n_clients, max(cpus, 1)) if gpus else 0.0
    # A job-private Ray session folder (under RAY_TMPDIR if the site sets one), removed after.
    parent = os.environ.get("RAY_TMPDIR") or None
    with tempfile.TemporaryDirectory(prefix="fedsafe-ray-", dir=parent,
                                     ignore_cleanup_errors=True) as ray_dir:
        os.environ["RAY_TMPDIR"] = ray_dir
        try:
            run_simulation(
                server_app=server, client_app=client, num_supernodes=n_clients,
                backend_config={"client_resources": {"num_cpus": 1, "num_gpus": per_client_gpu},
                                "init_args": {"num_cpus": max(cpus, 1), "num_gpus": gpus,
                                              "include_dashboard": False}},
            )
        finally:
            if parent:
                os.environ["RAY_TMPDIR"] = parent
            else:
                del os.environ["RAY_TMPDIR"]
