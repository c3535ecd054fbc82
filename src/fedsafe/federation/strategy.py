"""The server side: Flower's FedAvg with the defense's server hooks, seeded client sampling and a
fixed aggregation order, so the same seed gives the same model. Only FedAvg's public hooks are
overridden (`configure_train`, `aggregate_train`); Flower's own `start()` runs the rounds.

Node ids are random per run, so before `start()` the ServerApp calls `register_nodes`, which asks
every node for its partition id and number of examples (a `query` message; both are public) and
samples from the nodes in partition order.

Under secure aggregation (`defense.secure`) each round's training exchange is a Flower SecAgg+
round instead (`secagg_protocol.py`); everything after the mean update is shared (`_finish_round`).

Under homomorphic encryption (`defense.encrypted`, `he_protocol.py`) the clients send CKKS
ciphertexts: the server adds them to its encrypted running sum of the aggregates and sends that
sum, never a plaintext model, to the next round's clients. Flower's loop still carries a plaintext
model for the evaluation: the clients' model, which `clients_model` (given by the harness, which
holds the clients' key) decrypts; no message and nothing the server records contains it.

The strategy also keeps what an honest-but-curious server observes in the rounds listed in
`observe_rounds` (per-client updates as received, the aggregate, the global model before the
round); under secure aggregation it never has individual updates, so those are None; under
homomorphic encryption it has none of the three (`hidden` says why).

Privacy: where the defense has a formal guarantee, the strategy keeps the `Ledger` of every
client's epsilon (from public numbers: each client's number of examples and the training
settings), samples clients as the accountant assumes (`Defense.poisson_clients`) and, with a
`target_epsilon`, runs only clients that stay within it and ends the training before a round that
would exceed it for everyone (`stopped`): from then on it sends no messages and keeps the model,
and `start()` runs its remaining rounds empty.
"""

import secrets
import time

import numpy as np
import tenseal as ts
import torch
from flwr.app import ArrayRecord, ConfigRecord, Message, MessageType, MetricRecord, RecordDict
from flwr.serverapp.strategy import FedAvg

from fedsafe.defenses.accounting import Ledger
from fedsafe.defenses.base import Defense
from fedsafe.federation import clients_per_round, he_protocol
from fedsafe.federation.secagg_protocol import secaggplus_mean
from fedsafe.seeding import derive_seed


class DefendedFedAvg(FedAvg):
    def __init__(self, defense: Defense, seed: int, weighted: bool, fraction_train: float,
                 observe_rounds=(), n_nodes: int = 1, max_client_size: int = 1,
                 federation: dict | None = None):
        super().__init__(fraction_train=fraction_train, fraction_evaluate=0.0,
                         min_train_nodes=1, min_available_nodes=1)
        self.defense, self.seed = defense, seed
        # a DP mechanism whose sensitivity bound needs the plain mean overrides the config
        self.weighted = weighted and not defense.unweighted
        self.observe_rounds, self.n_nodes = set(observe_rounds), n_nodes
        self.max_client_size = max_client_size  # SecAgg+'s bound on a client's weight
        self.federation = federation or {}  # public training settings (batch size, epochs)
        self.client_metrics: dict[int, list[dict]] = {}  # round -> one dict per client
        self.observed: dict[int, dict] = {}  # round -> what the server saw
        self.ledger: Ledger | None = None  # every client's epsilon (formal guarantees only)
        self.stopped: dict | None = None  # {"before_round", "reason"} if the budget ended it
        self._secure_mean = None  # (mean, metrics) of this round's SecAgg+ exchange
        self._chosen: list[int] = []  # this round's nodes
        # homomorphic encryption: the CKKS parameters (no key), the encrypted running sum of the
        # aggregates, the initial model, each round's costs; the harness's decryption
        self._he_ctx, self._he_sum, self._initial = None, None, None
        self.he_costs: dict[int, dict] = {}
        self.clients_model = None  # (running sum) -> the clients' global model

    def register_nodes(self, grid, config: ConfigRecord) -> None:
        """Before the first round: each node's partition id and number of examples (public: the
        privacy accounting uses them), the population the defense samples from, the ledger.
        `config` goes with the query (the clients' settings)."""
        while len(nodes := list(grid.get_node_ids())) < self.n_nodes:
            time.sleep(0.2)
        replies = grid.send_and_receive(
            [Message(RecordDict({self.configrecord_key: config}), dst_node_id=n,
                     message_type=MessageType.QUERY) for n in nodes])
        self._partition, self._sizes = {}, {}
        for m in replies:
            if m.has_error():
                raise RuntimeError(f"node {m.metadata.src_node_id} failed to answer the query: "
                                   f"{m.error.reason}")
            part = int(m.content["metrics"]["partition_id"])
            if self.defense.encrypted:  # every node answers with the same parameters
                self._he_ctx = ts.context_from(m.content["config"][he_protocol.CONTEXT])
            self._partition[m.metadata.src_node_id] = part
            self._sizes[part] = int(m.content["metrics"]["num_examples"])
        self.defense.set_population(len(nodes), self.fraction_train)
        formal = self.defense.formal
        if formal is not None and self.defense.round_events(True, 1, self.federation) is not None:
            self.ledger = Ledger(sorted(self._sizes), float(formal.options["delta"]),
                                 formal.options["accountant"], formal.options["target_epsilon"])

    def _events(self, client: int, participates: bool) -> list:
        return self.defense.round_events(participates, self._sizes[client], self.federation)

    def eligible(self, server_round: int) -> list[int] | None:
        """Partitions that may take part in this round without exceeding the privacy budget;
        None (and `stopped` set) if the round must not run."""
        clients = sorted(self._sizes)
        if self.ledger is None or self.ledger.target is None:
            return clients
        target = self.ledger.target
        for c in clients:  # events every client incurs, taking part or not (DP-FedAvg central)
            if not self.ledger.within_budget(c, self._events(c, False)):
                self.stopped = {"before_round": server_round, "reason": (
                    f"budget: round {server_round} would take client {c} to epsilon "
                    f"{self.ledger.epsilon_of(c, self._events(c, False)):.3g} > target {target}")}
                return None
        ok = [c for c in clients if self.ledger.within_budget(c, self._events(c, True))]
        if not ok:
            self.stopped = {"before_round": server_round, "reason": (
                f"budget: every client would exceed target epsilon {target} in round "
                f"{server_round}")}
            return None
        return ok

    def sample(self, server_round: int, grid, eligible: list[int]) -> tuple[list[int], dict]:
        """Seeded choice of this round's nodes among the eligible partitions, and the config
        every chosen client gets. Poisson sampling (each client with probability fraction_train)
        where the defense's accountant assumes it, else exactly k clients."""
        by_partition = {self._partition[n]: n for n in grid.get_node_ids()}
        nodes = [by_partition[c] for c in eligible]
        self._n_nodes = len(by_partition)
        formal = self.defense.formal
        if formal is not None and formal.options.get("secret_noise"):
            rng = np.random.default_rng(secrets.randbits(128))  # the sample is secret too
        else:
            rng = np.random.default_rng(derive_seed(self.seed, "sample", server_round))
        if self.defense.poisson_clients:
            chosen = [n for n in nodes if rng.random() < self.fraction_train]
        else:
            k = min(len(nodes), clients_per_round(self._n_nodes, self.fraction_train))
            # choose indices, not ids: node ids are uint64 and numpy would turn them into floats
            chosen = [nodes[i] for i in sorted(rng.choice(len(nodes), size=k, replace=False))]
        config = {"server-round": server_round, "fedsafe-weighted": self.weighted,
                  "fedsafe-peers": ",".join(str(n) for n in chosen)}  # strings: uint64 ids
        return chosen, config

    def configure_train(self, server_round, arrays, config, grid):
        """This round's training messages: the budget check, the seeded sample, one message per
        chosen node. Under secure aggregation the round is Flower's SecAgg+ protocol, which
        exchanges its own four stages of messages over the grid here (the Message API has no
        SecAgg+ strategy; see secagg_protocol.py); `aggregate_train` then gets no replies and uses
        the mean the protocol revealed."""
        self._global = arrays.to_torch_state_dict()
        self._secure_mean = None
        if self.stopped is not None or (eligible := self.eligible(server_round)) is None:
            return []  # the privacy budget ended the training
        chosen, extra = self.sample(server_round, grid, eligible)
        self._chosen = chosen
        config = ConfigRecord({**config, **extra})
        if self.defense.secure:
            self._secure_mean = self.secure_round(server_round, grid, chosen, config)
            return []
        if self.defense.encrypted:
            return self.encrypted_messages(server_round, arrays, chosen, config)
        content = RecordDict({self.arrayrecord_key: arrays, self.configrecord_key: config})
        return [Message(content, dst_node_id=n, message_type=MessageType.TRAIN) for n in chosen]

    def aggregate_train(self, server_round, replies):
        if self.stopped is not None:
            return None, None  # no round ran: the model stays
        if self._secure_mean is not None:
            mean, metrics = self._secure_mean
            return self._finish_round(server_round, mean, metrics, None)
        contents = self._contents(server_round, replies)
        if self.defense.encrypted:
            return self.encrypted_sum(server_round, contents)
        received = [c[self.arrayrecord_key].to_torch_state_dict() for c in contents]
        metrics = [dict(c["metrics"]) for c in contents]
        if not received:  # nobody sampled (Poisson): a zero mean, the defense may add noise
            return self._finish_round(server_round, self._zero(), [], [])
        sizes = np.array([m["num_examples"] for m in metrics], dtype=float)
        w = sizes / sizes.sum() if self.weighted else np.full(len(sizes), 1 / len(sizes))
        mean = {k: sum(wi * u[k].double() for wi, u in zip(w, received)) for k in received[0]}
        return self._finish_round(server_round, mean, metrics, received)

    def _contents(self, server_round, replies) -> list:
        """The replies' contents in partition order; a failed or missing client stops the run."""
        replies = list(replies)
        errors = [m for m in replies if m.has_error()]
        if errors:  # a lost client would silently change the experiment: stop instead
            raise RuntimeError(f"round {server_round}: {len(errors)} client(s) failed: "
                               f"{errors[0].error.reason}")
        if len(replies) < len(self._chosen):  # `start()`'s timeout passed before all replied
            raise RuntimeError(f"round {server_round}: {len(replies)} of {len(self._chosen)} "
                               f"clients replied before the timeout")
        return sorted((m.content for m in replies), key=lambda c: c["metrics"]["partition_id"])

    def encrypted_messages(self, server_round, arrays, chosen, config) -> list[Message]:
        """A round under homomorphic encryption: each chosen client gets the initial model, the
        encrypted running sum and its weight in the aggregate (public sample counts, times the
        defense's linear server hook), so the ciphertexts add up to the hooked mean."""
        if self._initial is None:  # round 1's model is the initial one: public
            self._initial = ArrayRecord(arrays.to_torch_state_dict())
        sizes = np.array([self._sizes[self._partition[n]] for n in chosen], dtype=float)
        w = sizes / sizes.sum() if self.weighted else np.full(len(sizes), 1 / max(len(sizes), 1))
        w = w * he_protocol.scalar_hook(self.defense, server_round, len(chosen))
        extra = {he_protocol.SUM: self._he_sum} if self._he_sum else {}
        self.he_costs[server_round] = {
            "bytes_down": len(chosen) * he_protocol.nbytes(self._he_sum)}
        return [Message(RecordDict({self.arrayrecord_key: self._initial,
                                    self.configrecord_key: ConfigRecord(
                                        {**config, **extra, he_protocol.FACTOR: float(wi)})}),
                        dst_node_id=n, message_type=MessageType.TRAIN)
                for n, wi in zip(chosen, w)]

    def encrypted_sum(self, server_round, contents) -> tuple:
        """The server adds the round's ciphertexts to its running sum; the clients' model
        (decrypted by the harness) goes on in Flower's loop, for the evaluation only."""
        metrics = [dict(c["metrics"]) for c in contents]
        replies = [list(c[self.configrecord_key][he_protocol.UPDATE]) for c in contents]
        t0 = time.perf_counter()
        self._he_sum = he_protocol.add_replies(self._he_ctx, replies, self._he_sum)
        self.he_costs[server_round].update(
            he_server_seconds=time.perf_counter() - t0,
            bytes_up=sum(he_protocol.nbytes(r) for r in replies),
            bytes_up_plain=len(replies) * he_protocol.plain_bytes(self._global))
        view = {"updates": [None] * len(metrics), "aggregate": None, "global_before": None,
                "hidden": "homomorphic encryption: the server holds only ciphertexts (no "
                          "update, aggregate or model in the clear)"}
        new_global = self.clients_model(self._he_sum) if self._he_sum else self._global
        return self._close_round(server_round, metrics, view, new_global)

    def secure_round(self, server_round: int, grid, chosen: list[int],
                     config: ConfigRecord) -> tuple[dict, list[dict]]:
        """A round under Flower's SecAgg+: the server only ever holds the mean update."""
        if len(chosen) < 2:  # SecAgg+ needs two clients; the server knows the sample anyway
            return self._zero(), []
        max_weight = float(self.max_client_size) if self.weighted else 1.0
        options = next(p for p in self.defense.parts if p.secure).options
        mean, metrics = secaggplus_mean(grid, server_round, self._global, chosen, dict(config),
                                        options, max_weight)
        metrics.sort(key=lambda m: m["partition_id"])
        return mean, metrics

    def _zero(self) -> dict:
        return {k: torch.zeros_like(v, dtype=torch.float64) for k, v in self._global.items()}

    def _finish_round(self, server_round, mean, metrics, received):
        """The defense's server hooks on the mean update, then the new global model."""
        mean = {k: v.to(self._global[k].dtype) for k, v in mean.items()}
        mean = self.defense.aggregate(mean, server_round, len(metrics))
        view = {"updates": received or [None] * len(metrics), "aggregate": mean,
                "global_before": dict(self._global)}
        return self._close_round(server_round, metrics, view,
                                 {k: self._global[k] + mean[k] for k in mean})

    def _close_round(self, server_round, metrics, view, new_global):
        """The clients' metrics, the ledger, what the server observed, the new global model."""
        self.client_metrics[server_round] = metrics
        if self.ledger is not None:
            took_part = {int(m["partition_id"]) for m in metrics}
            self.ledger.record(server_round, {c: self._events(c, c in took_part)
                                              for c in self._sizes})
        if server_round in self.observe_rounds:
            self.observed[server_round] = {
                "clients": [int(m["partition_id"]) for m in metrics],
                "num_examples": [int(m["num_examples"]) for m in metrics], **view}
        self._global = new_global
        losses = [m["train_loss"] for m in metrics if "train_loss" in m]
        return ArrayRecord(self._global), MetricRecord(
            {"train_loss": float(np.mean(losses))} if losses else {})
