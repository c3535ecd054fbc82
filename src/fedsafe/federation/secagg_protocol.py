"""Secure aggregation rounds with Flower's SecAgg+ (Bell et al. 2020), so the server learns only
the (weighted) mean of the sampled clients' updates.

Flower ships SecAgg+ as a server workflow (`SecAggPlusWorkflow`) and a client mod
(`secaggplus_mod`) that speak the legacy FitIns/FitRes message format and call a legacy
`Strategy`. Per round, `secaggplus_mean` runs the workflow's four stages over our Grid (setup:
public keys; share keys: Shamir shares of each client's secrets, encrypted pairwise; collect
masked vectors: each client trains and uploads its quantised update plus pairwise masks and a
private mask; unmask: surviving clients send shares, the server removes the masks from the sum).
A small legacy strategy (`_Round`) tells the workflow which nodes were sampled and receives the
unmasked mean; the rest of the round (the defense's server hooks, the global update) stays in
`DefendedFedAvg`.

Precision: SecAgg+ clips every coordinate of a client's (weighted) update to [-clipping_range,
clipping_range] and quantises it to `quantization_range` levels, so the mean is exact up to
2 * clipping_range / quantization_range per coordinate and client; `SecureAggregation.uplink`
refuses an update outside the clipping range rather than letting SecAgg+ clip it silently.

Flower API: SecAgg+ exists only in Flower's legacy API; its own example (flower-secure-aggregation)
runs it for a whole training through `DefaultWorkflow`. One round of it inside a Message API
strategy needs two things `DefaultWorkflow` otherwise sets up itself: a client manager holding a
`GridClientProxy` per node, and the workflow's state records (`MAIN_PARAMS_RECORD`,
`MAIN_CONFIGS_RECORD`, read by `SecAggPlusWorkflow`). Both come from modules that `flwr.server`
does not export (the project's only other such imports are the runtime's, in grid.py). The client
side uses the public `secaggplus_mod` and Flower's legacy converters (`flwr.compat`), as the mod
does itself.
"""

import numpy as np
import torch
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, RecordDict
from flwr.client.mod import secaggplus_mod
from flwr.common import Code, FitIns, FitRes, Status, ndarrays_to_parameters, parameters_to_ndarrays
from flwr.common.secure_aggregation.secaggplus_constants import RECORD_KEY_CONFIGS
from flwr.compat.common import recorddict_compat as compat
from flwr.server import LegacyContext, ServerConfig, SimpleClientManager

# not exported by flwr.server (see the module docstring: what DefaultWorkflow sets up itself)
from flwr.server.compat.grid_client_proxy import GridClientProxy
from flwr.server.strategy import Strategy
from flwr.server.workflow import SecAggPlusWorkflow
from flwr.server.workflow.constant import MAIN_CONFIGS_RECORD, MAIN_PARAMS_RECORD, Key

MODULUS_RANGE = 2 ** 32  # the largest ring Flower's SecAgg+ supports


def is_secagg_train(msg: Message) -> bool:
    """A train message sent by SecAggPlusWorkflow (legacy FitIns format)."""
    return "fitins.parameters" in msg.content.array_records


def secagg_train_input(msg: Message) -> tuple[list[torch.Tensor], ConfigRecord]:
    """Client side: the global weights (in the model's state-dict order) and the config."""
    ins = compat.recorddict_to_fitins(msg.content, keep_input=True)
    arrays = parameters_to_ndarrays(ins.parameters)
    return [torch.from_numpy(np.array(a)) for a in arrays], ConfigRecord(ins.config)


def secaggplus_rounds_mod(msg: Message, context: Context, call_next) -> Message:
    """Flower's `secaggplus_mod` for the messages of a SecAgg+ round; other messages pass
    untouched (one ClientApp serves every cell, and the mod expects only SecAgg+ messages)."""
    if RECORD_KEY_CONFIGS in msg.content.config_records:
        return secaggplus_mod(msg, context, call_next)
    return call_next(msg, context)


def secagg_train_reply(update: dict, weight: int, metrics: dict, msg: Message) -> Message:
    """Client side: the update in FitRes format; `secaggplus_mod` masks it before it leaves."""
    res = FitRes(Status(Code.OK, ""), ndarrays_to_parameters([v.numpy() for v in update.values()]),
                 num_examples=weight, metrics=metrics)
    return Message(compat.fitres_to_recorddict(res, keep_input=True), reply_to=msg)


class _Round(Strategy):
    """The legacy strategy SecAggPlusWorkflow calls: samples the given nodes, keeps the mean."""

    def __init__(self, nodes: list[int], config: dict):
        self.nodes, self.config = nodes, config
        self.mean: list[np.ndarray] | None = None
        self.metrics: list[dict] = []

    def configure_fit(self, server_round, parameters, client_manager):
        clients = client_manager.all()
        return [(clients[str(n)], FitIns(parameters, dict(self.config))) for n in self.nodes]

    def aggregate_fit(self, server_round, results, failures):
        if failures:
            raise RuntimeError(f"round {server_round}: {len(failures)} client(s) failed under "
                               f"SecAgg+: {failures[0]}")
        # the workflow put the unmasked mean into every result; the metrics are each client's
        self.mean = parameters_to_ndarrays(results[0][1].parameters)
        self.metrics = [dict(fit_res.metrics) for _, fit_res in results]
        return results[0][1].parameters, {}

    def initialize_parameters(self, client_manager):
        return None

    def configure_evaluate(self, server_round, parameters, client_manager):
        return []

    def aggregate_evaluate(self, server_round, results, failures):
        return None, {}

    def evaluate(self, server_round, parameters):
        return None


def secaggplus_mean(grid, server_round: int, weights: dict, nodes: list[int],
                    config: dict, options: dict, max_weight: float) -> tuple[dict, list[dict]]:
    """Run one SecAgg+ training round on `nodes`, sending them the global `weights`; return the
    mean update (a state dict named like `weights`, weighted by what each client reports as
    num_examples) and each client's metrics. Raises if the protocol halts (too few clients or
    shares)."""
    levels = int(options["quantization_range"])
    if len(nodes) * levels >= MODULUS_RANGE:
        raise ValueError(f"secagg: {len(nodes)} clients per round x quantization_range {levels} "
                         f"overflows SecAgg+'s 2^32 ring; lower the option quantization_range")
    manager = SimpleClientManager()
    for n in grid.get_node_ids():
        manager.register(GridClientProxy(n, grid, grid.run.run_id))
    strategy = _Round(nodes, config)
    context = LegacyContext(
        Context(run_id=grid.run.run_id, node_id=0, node_config={}, state=RecordDict(),
                run_config={}),
        config=ServerConfig(num_rounds=server_round), strategy=strategy, client_manager=manager)
    context.state.array_records[MAIN_PARAMS_RECORD] = ArrayRecord(weights)
    context.state.config_records[MAIN_CONFIGS_RECORD] = ConfigRecord(
        {Key.CURRENT_ROUND: server_round})
    SecAggPlusWorkflow(
        num_shares=options["num_shares"],
        reconstruction_threshold=options["reconstruction_threshold"], max_weight=max_weight,
        clipping_range=float(options["clipping_range"]),
        quantization_range=levels, modulus_range=MODULUS_RANGE,
    )(grid, context)
    if strategy.mean is None:
        raise RuntimeError(f"round {server_round}: the SecAgg+ protocol halted (see the log); "
                           f"it needs at least 2 sampled clients")
    mean = {k: torch.from_numpy(np.asarray(a, dtype=np.float64)).reshape(weights[k].shape)
            for k, a in zip(weights, strategy.mean, strict=True)}
    return mean, strategy.metrics
