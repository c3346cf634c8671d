"""A Flower `Grid` whose nodes are virtual devices in this process.

Flower's simulation engine delivers each message to a Ray actor that runs the `ClientApp`
(about 30 ms of engine time per message on 2 cores). `InProcessGrid` implements the same
public `Grid` interface by calling the `ClientApp` of the destination node directly, with
that node's own `Context` (`node_config`: `partition-id`, `num-partitions`, kept across
messages as the engine keeps it), and turns an exception into an error reply as the engine
does. Every message still passes the ClientApp's mods (the egress guard and log).

The batched engine (`fedrec.simulation.batched`) uses it for everything but training:
registration, federated evaluation, node discovery.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable
from uuid import uuid4

from flwr.app import Context, Error, Message, RecordDict
from flwr.clientapp import ClientApp
from flwr.common.constant import NUM_PARTITIONS_KEY, PARTITION_ID_KEY, SUPERLINK_NODE_ID, ErrorCode
from flwr.serverapp.grid import Grid
from flwr.supercore.run import Run
from flwr.supercore.task_identity import TaskIdentity

from fedrec.simulation.devices import IN_PROCESS_KEY

FIRST_NODE_ID = 1000  # node FIRST_NODE_ID + i is partition i


class InProcessGrid(Grid):
    """`num_nodes` virtual devices; node `FIRST_NODE_ID + i` runs `client_app` as partition i."""

    def __init__(self, client_app: ClientApp, num_nodes: int, run_config: dict,
                 run_id: int = 1):
        self.client_app, self.num_nodes = client_app, num_nodes
        self.run_config = dict(run_config)
        self._run = Run.create_empty(run_id)
        self._contexts: dict[int, Context] = {}
        self._replies: dict[str, Message] = {}

    def serve(self, server_app) -> None:
        """Run `server_app` in this thread against this grid. Flower builds every message's
        metadata from the process' task identity, which its own runners set before a
        ServerApp starts; this does what `flwr.server.compat.start_grid` does for that."""
        TaskIdentity.task_id = 1
        TaskIdentity.run_id = self._run.run_id
        TaskIdentity.node_id = SUPERLINK_NODE_ID
        server_app(self, Context(run_id=self._run.run_id, node_id=SUPERLINK_NODE_ID,
                                 node_config={}, state=RecordDict(),
                                 run_config=dict(self.run_config)))

    @staticmethod
    def partition(node_id: int) -> int:
        return node_id - FIRST_NODE_ID

    def node_map(self) -> dict[int, int]:
        """Flower node id -> partition (client index)."""
        return {FIRST_NODE_ID + i: i for i in range(self.num_nodes)}

    # --- the Grid interface ----------------------------------------------------------------
    def set_run(self, run: Run) -> None:
        self._run = run

    @property
    def run(self) -> Run:
        return self._run

    def create_message(self, content: RecordDict, message_type: str, dst_node_id: int,
                       group_id: str, ttl: float | None = None) -> Message:
        return Message(content, dst_node_id, message_type, ttl=ttl, group_id=group_id)

    def get_node_ids(self) -> Iterable[int]:
        return range(FIRST_NODE_ID, FIRST_NODE_ID + self.num_nodes)

    def push_messages(self, messages: Iterable[Message]) -> Iterable[str]:
        ids = []
        for message in messages:
            reply = self._deliver(message)
            self._replies[message.metadata.message_id] = reply
            ids.append(message.metadata.message_id)
        return ids

    def pull_messages(self, message_ids: Iterable[str]) -> Iterable[Message]:
        return [self._replies.pop(i) for i in message_ids if i in self._replies]

    def send_and_receive(self, messages: Iterable[Message], *,
                         timeout: float | None = None) -> Iterable[Message]:
        """Deliver every message in order and return the replies (no message can time out:
        each is handled before the next)."""
        return [self._deliver(message) for message in messages]

    # --- delivery --------------------------------------------------------------------------
    def _deliver(self, message: Message) -> Message:
        node_id = message.metadata.dst_node_id
        if not FIRST_NODE_ID <= node_id < FIRST_NODE_ID + self.num_nodes:
            raise ValueError(f"message for node {node_id}: this grid has nodes {FIRST_NODE_ID} "
                             f"to {FIRST_NODE_ID + self.num_nodes - 1}")
        meta = message.metadata.__dict__  # what a SuperLink fills in when a message is pushed
        meta["_message_id"] = str(uuid4())
        meta["_run_id"] = self._run.run_id
        meta["_src_node_id"] = SUPERLINK_NODE_ID
        # a transport hands every node its own copy: SecAgg+ sends one content object to every
        # node, and a client's mod may change what it received
        delivered = copy.deepcopy(message)
        try:
            return self.client_app(message=delivered, context=self._context(node_id))
        except Exception as exc:  # noqa: BLE001 — reported to the server, as the engine does
            reason = f"{type(exc)}:<'{exc}'>"
            return Message(Error(code=ErrorCode.CLIENT_APP_RAISED_EXCEPTION, reason=reason),
                           reply_to=message)

    def _context(self, node_id: int) -> Context:
        if node_id not in self._contexts:
            self._contexts[node_id] = Context(
                run_id=self._run.run_id, node_id=node_id,
                node_config={PARTITION_ID_KEY: self.partition(node_id),
                             NUM_PARTITIONS_KEY: self.num_nodes, IN_PROCESS_KEY: True},
                state=RecordDict(), run_config=dict(self.run_config))
        return self._contexts[node_id]
