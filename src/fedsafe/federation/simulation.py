"""Run one grid cell (dataset, defense, noise, seed) as a Flower federation inside this job.

`federation.backend` picks how messages travel: `inprocess` (default) delivers them to the
ClientApp in this process (`grid.py`); `ray` runs Flower's Simulation Engine, one Ray worker per
CPU. Both run the same ServerApp, strategy and ClientApp and give the same model.

As in Flower's own examples, the apps are module-level objects (`server_app`, `client_app`) and
take their settings from Flower's channels, not from closures: the ServerApp reads the cell from
its context's run config (`fedsafe-cell`, `fedsafe-files`) and passes the clients what they need
in every message's config (`fedsafe-cell`: paths and settings, as Flower's quickstart passes the
learning rate), which works the same on both backends (`run_simulation` gives no run config to
the nodes). Clients load their partition from the prepared data file themselves, so nothing
large travels to the simulation workers. The ServerApp writes the model files itself and leaves
the cell's result in its context's state, where `train_cell` reads it.
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
from flwr.clientapp import ClientApp
from flwr.serverapp import Grid, ServerApp

from fedsafe.data.prepare import load_prepared
from fedsafe.defenses.base import build_defense
from fedsafe.defenses.homomorphic import KEYS_FILE
from fedsafe.federation import he_protocol
from fedsafe.federation.grid import run_in_process
from fedsafe.federation.local import TrainSettings, evaluate, local_train, pick_device
from fedsafe.federation.secagg_protocol import (
    is_secagg_train,
    secagg_train_input,
    secagg_train_reply,
    secaggplus_rounds_mod,
)
from fedsafe.federation.strategy import DefendedFedAvg
from fedsafe.files import save_torch
from fedsafe.models import build_model_for

log = logging.getLogger("fedsafe.train")


@lru_cache(maxsize=2)
def _data(path: str):
    return load_prepared(Path(path))


def _model(spec: dict):
    return build_model_for(spec["model"], _data(spec["data_dir"]).manifest)


def _defense(spec: dict):
    return build_defense(spec["parts"], spec["noise"], spec["options"], spec["seed"],
                         spec.get("defense", "defense"))


client_app = ClientApp()


@client_app.train(mods=[secaggplus_rounds_mod])
def train(msg: Message, context: Context) -> Message:
    """One client's round: local training from the received global model, the client-side
    defense, the update (masked by SecAgg+ in a secure cell) and public metrics."""
    secure = is_secagg_train(msg)
    if secure:  # SecAgg+ speaks the legacy FitIns / FitRes format
        received, config = secagg_train_input(msg)
    else:
        received, config = msg.content["arrays"].to_torch_state_dict(), msg.content["config"]
    spec = json.loads(config["fedsafe-cell"])
    if spec["backend"] == "ray":
        torch.set_num_threads(1)  # Ray runs one client per CPU
    client = int(context.node_config["partition-id"])
    defense = _defense(spec)
    model = _model(spec)
    if secure:
        received = dict(zip(model.state_dict(), received, strict=True))
    keys = he_protocol.client_keys(spec["client_log_dir"], defense) if defense.encrypted else None
    if keys is not None:  # the global model: the decrypted running sum (he_protocol.py)
        received, decrypt_seconds = he_protocol.train_input(keys, msg.content, defense)
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
    if keys is not None:
        chunks, costs = he_protocol.encrypt_update(keys, update, float(config[he_protocol.FACTOR]),
                                                   defense)
        metrics.update(costs, he_decrypt_seconds=decrypt_seconds)
    if defense.private:  # the client keeps what it computed from its data (train loss)
        _client_log(spec, client, {"round": rnd, **metrics})
        metrics = {"num_examples": len(y)}  # public (README)
    metrics["partition_id"] = client
    if secure:
        return secagg_train_reply(update, len(y) if weighted else 1, metrics, msg)
    if keys is not None:
        return Message(RecordDict({"config": ConfigRecord({he_protocol.UPDATE: chunks}),
                                   "metrics": MetricRecord(metrics)}), reply_to=msg)
    return Message(RecordDict({"arrays": ArrayRecord(update), "metrics": MetricRecord(metrics)}),
                   reply_to=msg)


@client_app.query()
def query(msg: Message, context: Context) -> Message:
    """Tells the server which partition this node holds (node ids are random per run) and its
    number of examples (public: the privacy accounting uses it)."""
    spec = json.loads(msg.content["config"]["fedsafe-cell"])
    client = int(context.node_config["partition-id"])
    size = len(_data(spec["data_dir"]).clients[client][1])
    content = RecordDict({"metrics": MetricRecord({"partition_id": client, "num_examples": size})})
    defense = _defense(spec)
    if defense.encrypted:  # the CKKS parameters, without any key (the clients keep theirs)
        content["config"] = ConfigRecord(he_protocol.query_answer(spec["client_log_dir"], defense))
    return Message(content, reply_to=msg)


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


def cell_files(folder: Path) -> dict[str, Path]:
    """A trained cell's files in `folder`, named as rules/train.smk names them: the default of
    callers outside the workflow (tests, benchmarks, the reference models' scratch cells)."""
    folder = Path(folder)
    return {"model": folder / "model.pt", "checkpoints": folder / "checkpoints.pt",
            "observed": folder / "observed.pt", "canaries": folder / "canaries.npz",
            "clients": folder / "clients"}


def train_cell(data_dir: Path, spec: dict, out_dir: Path, cpus: int = 1, gpus: int = 0,
               files: dict | None = None) -> dict:
    """Train one cell; writes the final model, the checkpoints ({round: global weights}), the
    server's view, an audited cell's canary clients and the clients' own logs to `files`
    {"model", "checkpoints", "observed", "canaries", "clients" (a folder)}: the rule's outputs;
    without them `model.pt`, `checkpoints.pt`, `observed.pt`, `canaries.npz`, `clients/` in
    out_dir, for callers outside the workflow (tests, the reference models' scratch cells).
    The server's view is what the server saw in each round of
    `federation.observe_rounds` (default [1]): {round: {"clients": [partition ids],
    "num_examples": [...], "updates": [per-client update as received, or None under secure
    aggregation], "aggregate": the mean update applied, "global_before": weights}}. In cells with a
    formal guarantee or secure aggregation each client writes its own diagnostics to
    `<partition>.jsonl` in the clients' folder; the result holds the privacy ledger per round
    (`history`) and, if the privacy budget ended training early, `stopped`."""
    t0 = time.time()
    fed = spec["federation"]
    files = cell_files(out_dir) | {k: Path(v) for k, v in (files or {}).items()}
    client_logs = files["clients"].resolve()  # absolute: Ray workers have their own cwd
    spec = {**spec, "data_dir": str(data_dir), "device": pick_device(fed["device"]),
            "backend": fed.get("backend", "inprocess"), "client_log_dir": str(client_logs)}
    client_logs.mkdir(parents=True, exist_ok=True)  # a declared output, empty in open cells
    for old_log in client_logs.glob("*.jsonl"):  # a rerun starts the clients' logs afresh
        old_log.unlink()
    (client_logs / KEYS_FILE).unlink(missing_ok=True)  # and their HE keys
    run_config = {"fedsafe-cell": json.dumps(spec),
                  "fedsafe-files": json.dumps({k: str(v) for k, v in files.items()}),
                  "fedsafe-started-at": t0}
    n_clients = len(_data(str(data_dir)).clients)
    # Flower resets its logger on import; our per-round lines are the progress report.
    logging.getLogger("flwr").setLevel(logging.WARNING)
    if spec["backend"] == "ray":
        context = _run_ray(run_config, n_clients, cpus, gpus)
    else:
        torch.set_num_threads(max(cpus, 1))
        context = run_in_process(server_app, client_app, n_clients, run_config, spec["seed"])
    if context is None or "fedsafe-result" not in context.state:
        raise RuntimeError("federation: the ServerApp ended without a result (see the log above)")
    result = json.loads(context.state["fedsafe-result"]["json"])
    if result["rounds_run"] != fed["rounds"] and result["stopped"] is None:
        raise RuntimeError(f"federation stopped after {result['rounds_run']} of {fed['rounds']} "
                           f"rounds")
    own = _client_logs(client_logs)
    for row in result["history"]:  # diagnostics the clients logged themselves (private cells)
        if row["round"] in own:
            row["client_train_loss"] = [own[row["round"]][c].get("train_loss")
                                        for c in sorted(own[row["round"]])]
            row.update(he_protocol.client_costs(own[row["round"]].values()))
    result.update(he_protocol.cell_costs(result["history"]))
    return result


class CentralEvaluation:
    """The strategy's `evaluate_fn`: the global model on the test set before training and after
    every round. Keeps the history rows, the checkpoints ({round: weights}: the configured
    rounds and the last) and the time from `t0` to the first evaluation (Flower's start-up)."""

    def __init__(self, strategy: DefendedFedAvg, model, test: tuple, fed: dict, device: str,
                 t0: float):
        self.strategy, self.model, self.test, self.fed = strategy, model, test, fed
        self.device, self.t0 = device, t0
        self.history: list[dict] = []
        self.checkpoints: dict[int, dict] = {}
        self.initial: dict | None = None  # the initial model's test metrics
        self.startup_seconds: float | None = None

    def __call__(self, rnd: int, arrays: ArrayRecord) -> MetricRecord | None:
        strategy, fed = self.strategy, self.fed
        if strategy.stopped is not None:  # the budget ended the training: nothing new to see
            return None
        weights = arrays.to_torch_state_dict()
        if rnd in fed["checkpoint_rounds"] or rnd == fed["rounds"]:
            self.checkpoints[rnd] = weights
        self.model.load_state_dict(weights)
        res = evaluate(self.model, *self.test, device=self.device)
        if rnd == 0:
            self.startup_seconds, self.initial = time.time() - self.t0, res
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
               "seconds": time.time() - self.t0, **strategy.he_costs.get(rnd, {})}
        self.history.append(row)
        log.info("round %d/%d  test acc %.3f  loss %.3f%s", rnd, fed["rounds"], res["accuracy"],
                 res["loss"], f"  eps {row['epsilon']:.2f}" if row["epsilon"] is not None else "")
        return MetricRecord(res)


server_app = ServerApp()


@server_app.main()
def main(grid: Grid, context: Context) -> None:
    """Train the cell of the run config (`fedsafe-cell`) with Flower's FedAvg loop
    (`strategy.start`), the defended strategy and central evaluation after every round; write
    the final model, the checkpoints and the server's view to the run config's `fedsafe-files`
    and leave the cell's result (JSON) in `context.state["fedsafe-result"]`."""
    spec = json.loads(context.run_config["fedsafe-cell"])
    files = {k: Path(v) for k, v in json.loads(context.run_config["fedsafe-files"]).items()}
    t0 = float(context.run_config["fedsafe-started-at"])  # train_cell's start: timings from it
    fed = spec["federation"]
    data = _data(spec["data_dir"])
    torch.manual_seed(spec["seed"])
    model = _model(spec)
    defense = _defense(spec)
    canaries = _canary_clients(spec, defense)
    observe = [r for r in fed.get("observe_rounds", [1]) if 1 <= r <= fed["rounds"]]
    strategy = DefendedFedAvg(defense, spec["seed"], fed["aggregation"] == "weighted",
                              fed["fraction_train"], observe, len(data.clients),
                              max(len(y) for _, y in data.clients), fed)
    to_clients = ConfigRecord({"fedsafe-cell": context.run_config["fedsafe-cell"]})
    strategy.register_nodes(grid, to_clients)
    if defense.encrypted:  # the experimenter evaluates the clients' model, with their key
        keys = he_protocol.client_keys(spec["client_log_dir"], defense)
        initial_weights = {k: v.clone() for k, v in model.state_dict().items()}
        max_value = he_protocol.he_options(defense)["max_value"]
        strategy.clients_model = lambda chunks: he_protocol.global_model(
            keys, initial_weights, chunks, max_value)
    evaluation = CentralEvaluation(strategy, model, data.test, fed, spec["device"], t0)
    initial = ArrayRecord(model.state_dict())
    # wait for a round's replies as long as a message lives in Flower (12 h, its default TTL)
    run = strategy.start(grid=grid, initial_arrays=initial, num_rounds=fed["rounds"],
                         timeout=12 * 3600, train_config=to_clients, evaluate_fn=evaluation)
    history = evaluation.history
    # stopped before round 1 by the budget: the initial model, nothing spent
    final = history[-1] if history else {"test_accuracy": evaluation.initial["accuracy"],
                                         "test_loss": evaluation.initial["loss"],
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
        "train_seconds": time.time() - t0, "startup_seconds": evaluation.startup_seconds,
        "device": spec["device"], "history": history,
    }
    if canaries is not None:
        canaries.save(files["canaries"])
    # the Result's arrays are the last round's model (empty if the budget stopped round 1)
    last = (run.arrays if len(run.arrays) else initial).to_torch_state_dict()
    for name, obj in (("checkpoints", evaluation.checkpoints), ("model", last),
                      ("observed", strategy.observed)):
        save_torch(obj, files[name])  # atomic, and creates the folder
    context.state["fedsafe-result"] = ConfigRecord({"json": json.dumps(result)})


def _canary_clients(spec: dict, defense):
    """An audited client-level cell: canary clients join DP-FedAvg's clipped sums. Built by the
    canaries' leaf module: training never imports the audit (the attacks)."""
    from fedsafe.canaries import CLIENT_KIND, CanaryClients

    opt = spec.get("canaries")
    if not opt or opt["kind"] != CLIENT_KIND:
        return None
    dp = defense.formal
    # with secret noise the coins are secret too (the audit reads them from canaries.npz)
    seed = secrets.randbits(63) if dp.options.get("secret_noise") else spec["seed"]
    dp.canaries = CanaryClients(opt["n"], seed, dp.clip, noise=dp.noise)
    return dp.canaries



def _run_ray(run_config: dict, n_clients: int, cpus: int, gpus: int) -> Context | None:
    """Flower's Simulation Engine in this process; Ray gets exactly this job's CPUs/GPUs and a
    job-private temp dir. Returns the ServerApp's context (None if the ServerApp failed)."""
    from flwr.simulation import run_simulation

    # `run_simulation` gives the ServerApp an empty run config (a SuperLink would give it the
    # run's) and returns nothing: this app hands `main` the run config and keeps its context.
    contexts = []
    server = ServerApp()

    @server.main()
    def main_with_run_config(grid: Grid, context: Context) -> None:
        context.run_config.update(run_config)
        main(grid, context)
        contexts.append(context)

    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    per_client_gpu = gpus / min(n_clients, max(cpus, 1)) if gpus else 0.0
    # A job-private Ray session folder (under RAY_TMPDIR if the site sets one), removed after.
    parent = os.environ.get("RAY_TMPDIR") or None
    with tempfile.TemporaryDirectory(prefix="fedsafe-ray-", dir=parent,
                                     ignore_cleanup_errors=True) as ray_dir:
        os.environ["RAY_TMPDIR"] = ray_dir
        try:
            run_simulation(
                server_app=server, client_app=client_app, num_supernodes=n_clients,
                backend_config={"client_resources": {"num_cpus": 1, "num_gpus": per_client_gpu},
                                "init_args": {"num_cpus": max(cpus, 1), "num_gpus": gpus,
                                              "include_dashboard": False}},
            )
        finally:
            if parent:
                os.environ["RAY_TMPDIR"] = parent
            else:
                del os.environ["RAY_TMPDIR"]
    return contexts[0] if contexts else None
