"""The server side: FedAvg on Flower's Message API with the defense's server hooks, seeded client
sampling and a fixed aggregation order, so the same seed gives the same model."""

import numpy as np
import torch
from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict
from flwr.serverapp.strategy import FedAvg

from fedsafe.defenses.base import Defense
from fedsafe.seeding import derive_seed


class DefendedFedAvg(FedAvg):
    def __init__(self, defense: Defense, seed: int, weighted: bool, fraction_train: float):
        super().__init__(fraction_train=fraction_train, fraction_evaluate=0.0,
                         min_train_nodes=1, min_available_nodes=1)
        self.defense, self.seed, self.weighted = defense, seed, weighted
        self.client_metrics: dict[int, list[dict]] = {}  # round -> one dict per client

    def configure_train(self, server_round, arrays, config, grid):
        nodes = sorted(grid.get_node_ids())
        k = max(1, int(round(len(nodes) * self.fraction_train)))
        rng = np.random.default_rng(derive_seed(self.seed, "sample", server_round))
        # choose indices, not ids: node ids are uint64 and numpy would turn them into floats
        chosen = [nodes[i] for i in sorted(rng.choice(len(nodes), size=k, replace=False))]
        config["server-round"] = server_round
        record = RecordDict({self.arrayrecord_key: arrays, self.configrecord_key: config})
        return self._construct_messages(record, chosen, "train")

    def aggregate_train(self, server_round, replies):
        valid, errors = self._check_and_log_replies(replies, is_train=True, validate=False)
        if errors:  # a lost client would silently change the experiment: stop instead
            raise RuntimeError(f"round {server_round}: {len(errors)} client(s) failed: "
                               f"{errors[0].error.reason}")
        contents = sorted((m.content for m in valid), key=lambda c: c["metrics"]["partition_id"])
        updates = [c[self.arrayrecord_key].to_torch_state_dict() for c in contents]
        sizes = np.array([c["metrics"]["num_examples"] for c in contents], dtype=float)
        weights = sizes / sizes.sum() if self.weighted else np.full(len(sizes), 1 / len(sizes))
        mean = {k: sum(w * u[k].double() for w, u in zip(weights, updates)).to(updates[0][k].dtype)
                for k in updates[0]}
        mean = self.defense.aggregate(mean, server_round, len(updates))
        self.client_metrics[server_round] = [dict(c["metrics"]) for c in contents]
        self._global = {k: self._global[k] + mean[k].to(self._global[k].dtype) for k in mean}
        return ArrayRecord(self._global), MetricRecord(
            {"train_loss": float(np.mean([c["metrics"]["train_loss"] for c in contents]))})

    def start(self, grid, initial_arrays, **kwargs):
        self._global = initial_arrays.to_torch_state_dict()
        return super().start(grid, initial_arrays, **kwargs)


def reply(update: dict[str, torch.Tensor], metrics: dict, msg: Message) -> Message:
    return Message(RecordDict({"arrays": ArrayRecord(update),
                               "metrics": MetricRecord(metrics)}), reply_to=msg)


__all__ = ["DefendedFedAvg", "reply", "ConfigRecord"]
