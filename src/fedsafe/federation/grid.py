"""A Flower `Grid` that delivers the ServerApp's messages to the ClientApp inside this process.

Flower's Simulation Engine (`run_simulation`) starts a Ray cluster and passes every message
through a LinkState that the server and the workers each poll every 0.1 s. For one grid cell on a
laptop that is most of the job's wall time (see bench/bench_federation.py). This Grid keeps the
contract the ServerApp, the strategy and the ClientApp rely on: every node has its own `Context`
(with `partition-id`) that persists across rounds, messages get ids and are copied on the way in
and out as a transport would copy them, replies carry `reply_to_message_id`. Clients run one after
another, each with all of the job's torch threads (or its GPU). Exceptions in a ClientApp
propagate, so a failing client stops the run with its own traceback.

Flower API: here this module plays the part of Flower's runtime (SuperLink and SuperNodes), and
two things a runtime does have no public API, because apps never do them: giving a message its id
(Flower's own grids and SuperNode write `metadata.__dict__["_message_id"]`, as `_stamp` does) and
setting the identity of the task that runs in this process (`TaskIdentity`, which `Message(...)`
reads for the run id and source node; Flower's `run_serverapp` sets it the same way). The `Run`
a Grid reports and the SuperLink's node id come from the modules Flower's own Grid imports them
from.
"""

import copy
import random
from collections.abc import Iterable
from uuid import uuid4

from flwr.app import Context, Message, RecordDict
from flwr.clientapp import ClientApp
from flwr.common.constant import SUPERLINK_NODE_ID
from flwr.serverapp import Grid, ServerApp
from flwr.supercore.run import Run
from flwr.supercore.task_identity import TaskIdentity


def _stamp(msg: Message) -> None:
    """Give a message its id, as the transport does (see the module docstring)."""
    msg.metadata.__dict__["_message_id"] = uuid4().hex


class InProcessGrid(Grid):
    def __init__(self, client_app: ClientApp, num_nodes: int, seed: int = 0):
        rng = random.Random(seed)  # node ids are random per run in Flower too
        self._run = Run.create_empty(run_id=rng.getrandbits(63))
        self._client_app = client_app
        self._contexts = {}
        for partition in range(num_nodes):
            node_id = rng.getrandbits(63) | 1
            self._contexts[node_id] = Context(
                run_id=self._run.run_id, node_id=node_id, state=RecordDict(), run_config={},
                node_config={"partition-id": partition, "num-partitions": num_nodes})
        self._replies: dict[str, Message] = {}
        # Messages created by the server stamp their run and source from the task identity
        # (see the module docstring).
        TaskIdentity.task_id, TaskIdentity.run_id = 1, self._run.run_id
        TaskIdentity.node_id = SUPERLINK_NODE_ID

    def set_run(self, run: Run) -> None:
        self._run = run

    @property
    def run(self) -> Run:
        return self._run

    def create_message(self, content: RecordDict, message_type: str, dst_node_id: int,
                       group_id: str, ttl: float | None = None) -> Message:
        return Message(content, dst_node_id, message_type, ttl=ttl, group_id=group_id)

    def get_node_ids(self) -> Iterable[int]:
        return list(self._contexts)

    def push_messages(self, messages: Iterable[Message]) -> Iterable[str]:
        ids = []
        for msg in messages:
            msg = copy.deepcopy(msg)  # the client must not share objects with the server
            _stamp(msg)
            reply = self._client_app(msg, self._contexts[msg.metadata.dst_node_id])
            reply = copy.deepcopy(reply)
            _stamp(reply)
            self._replies[msg.metadata.message_id] = reply
            ids.append(msg.metadata.message_id)
        return ids

    def pull_messages(self, message_ids: Iterable[str]) -> Iterable[Message]:
        return [self._replies.pop(i) for i in message_ids if i in self._replies]

    def send_and_receive(self, messages: Iterable[Message], *,
                         timeout: float | None = None) -> Iterable[Message]:
        return self.pull_messages(self.push_messages(messages))


def run_in_process(server_app: ServerApp, client_app: ClientApp, num_nodes: int,
                   run_config: dict, seed: int = 0) -> Context:
    """Run `server_app` against `num_nodes` nodes of `client_app`; the ServerApp's context gets
    `run_config` (as a SuperLink gives it the run's config) and is returned after the run."""
    grid = InProcessGrid(client_app, num_nodes, seed)
    context = Context(run_id=grid.run.run_id, node_id=SUPERLINK_NODE_ID, node_config={},
                      state=RecordDict(), run_config=dict(run_config))
    server_app(grid, context)
    return context
