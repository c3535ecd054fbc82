"""The server side: FedAvg on Flower's Message API with the defense's server hooks, seeded client
sampling and a fixed aggregation order, so the same seed gives the same model. Node ids are random
per run, so before round 1 the strategy asks every node for its partition id (a `query` message)
and samples from the nodes in partition order.

Under secure aggregation (`defense.secure`) each round's training exchange is a Flower SecAgg+
round instead (`secagg.py`); everything after the mean update is shared (`_finish_round`).

The strategy also keeps what an honest-but-curious server observes in the rounds listed in
`observe_rounds` (per-client updates as received, the aggregate, the global model before the
round); under secure aggregation it never has individual updates, so those are None.
"""

import time

import numpy as np
import torch
from flwr.app import ArrayRecord, Message, MetricRecord, RecordDict
from flwr.serverapp.strategy import FedAvg

from fedsafe.config import clients_per_round
from fedsafe.defenses.base import Defense
from fedsafe.federation.secagg import secaggplus_mean
from fedsafe.seeding import derive_seed


class DefendedFedAvg(FedAvg):
    def __init__(self, defense: Defense, seed: int, weighted: bool, fraction_train: float,
                 observe_rounds=(), n_nodes: int = 1, max_client_size: int = 1):
        super().__init__(fraction_train=fraction_train, fraction_evaluate=0.0,
                         min_train_nodes=1, min_available_nodes=1)
        self.defense, self.seed = defense, seed
        # a DP mechanism whose sensitivity bound needs the plain mean overrides the config
        self.weighted = weighted and not defense.unweighted
        self.observe_rounds, self.n_nodes = set(observe_rounds), n_nodes
        self.max_client_size = max_client_size  # SecAgg+'s bound on a client's weight
        self.client_metrics: dict[int, list[dict]] = {}  # round -> one dict per client
        self.server_metrics: dict[int, dict] = {}  # round -> e.g. the server's epsilon
        self.observed: dict[int, dict] = {}  # round -> what the server saw

    def sample(self, server_round: int, grid) -> tuple[list[int], dict]:
        """Seeded choice of this round's nodes, and the config every chosen client gets."""
        nodes = sorted(grid.get_node_ids(), key=self._partition.__getitem__)
        self._n_nodes = len(nodes)
        k = clients_per_round(len(nodes), self.fraction_train)
        rng = np.random.default_rng(derive_seed(self.seed, "sample", server_round))
        # choose indices, not ids: node ids are uint64 and numpy would turn them into floats
        chosen = [nodes[i] for i in sorted(rng.choice(len(nodes), size=k, replace=False))]
        config = {"server-round": server_round, "fedsafe-weighted": self.weighted,
                  "fedsafe-peers": ",".join(str(n) for n in chosen)}  # strings: uint64 ids
        return chosen, config

    def configure_train(self, server_round, arrays, config, grid):
        chosen, extra = self.sample(server_round, grid)
        config.update(extra)
        record = RecordDict({self.arrayrecord_key: arrays, self.configrecord_key: config})
        return self._construct_messages(record, chosen, "train")

    def aggregate_train(self, server_round, replies):
        valid, errors = self._check_and_log_replies(replies, is_train=True, validate=False)
        if errors:  # a lost client would silently change the experiment: stop instead
            raise RuntimeError(f"round {server_round}: {len(errors)} client(s) failed: "
                               f"{errors[0].error.reason}")
        contents = sorted((m.content for m in valid), key=lambda c: c["metrics"]["partition_id"])
        received = [c[self.arrayrecord_key].to_torch_state_dict() for c in contents]
        metrics = [dict(c["metrics"]) for c in contents]
        sizes = np.array([m["num_examples"] for m in metrics], dtype=float)
        w = sizes / sizes.sum() if self.weighted else np.full(len(sizes), 1 / len(sizes))
        mean = {k: sum(wi * u[k].double() for wi, u in zip(w, received)) for k in received[0]}
        return self._finish_round(server_round, mean, metrics, received)

    def secure_round(self, server_round: int, grid) -> ArrayRecord:
        """A round under Flower's SecAgg+: the server only ever holds the mean update."""
        chosen, config = self.sample(server_round, grid)
        max_weight = float(self.max_client_size) if self.weighted else 1.0
        options = next(p for p in self.defense.parts if p.secure).options
        mean, metrics = secaggplus_mean(grid, server_round, self._global, chosen, config, options,
                                        max_weight)
        metrics.sort(key=lambda m: m["partition_id"])
        return self._finish_round(server_round, mean, metrics, None)[0]

    def _finish_round(self, server_round, mean, metrics, received):
        """The defense's server hooks on the mean update, bookkeeping, the new global model."""
        mean = {k: v.to(self._global[k].dtype) for k, v in mean.items()}
        mean = self.defense.aggregate(mean, server_round, len(metrics))
        self.client_metrics[server_round] = metrics
        self.server_metrics[server_round] = self.defense.round_metrics(
            server_round, len(metrics), self._n_nodes)
        if server_round in self.observe_rounds:
            self.observed[server_round] = {
                "clients": [int(m["partition_id"]) for m in metrics],
                "num_examples": [int(m["num_examples"]) for m in metrics],
                "updates": received or [None] * len(metrics),
                "aggregate": mean, "global_before": dict(self._global)}
        self._global = {k: self._global[k] + mean[k] for k in mean}
        return ArrayRecord(self._global), MetricRecord(
            {"train_loss": float(np.mean([m["train_loss"] for m in metrics]))})

    def start(self, grid, initial_arrays, num_rounds=3, evaluate_fn=None, **kwargs):
        self._global = initial_arrays.to_torch_state_dict()
        while len(nodes := list(grid.get_node_ids())) < self.n_nodes:
            time.sleep(0.2)
        replies = grid.send_and_receive(
            [Message(RecordDict(), dst_node_id=n, message_type="query") for n in nodes])
        self._partition = {m.metadata.src_node_id: int(m.content["metrics"]["partition_id"])
                           for m in replies}
        if not self.defense.secure:
            return super().start(grid, initial_arrays, num_rounds=num_rounds,
                                 evaluate_fn=evaluate_fn, **kwargs)
        # Flower's SecAgg+ is a legacy workflow: this loop is FedAvg.start with the training
        # exchange replaced by a SecAgg+ round (no client-side evaluation, as configured).
        evaluate_fn(0, initial_arrays)
        for server_round in range(1, num_rounds + 1):
            evaluate_fn(server_round, self.secure_round(server_round, grid))
        return None


def reply(update: dict[str, torch.Tensor], metrics: dict, msg: Message) -> Message:
    return Message(RecordDict({"arrays": ArrayRecord(update),
                               "metrics": MetricRecord(metrics)}), reply_to=msg)
