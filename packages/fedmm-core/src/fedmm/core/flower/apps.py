"""A fedmm round on Flower's Message API: the ClientApp and the server's message exchange.

The server side is the same round as in-process (:mod:`fedmm.core.round`): the same selection,
planning, aggregation, evaluation and ``after_round`` code. Only its ``train`` phase runs on a
different engine: :class:`FlowerEngine` sends each client's plan and the parameter
groups it needs as a ``train`` message to the SuperNode that holds that client's partition, and
turns the replies back into :class:`~fedmm.core.protocol.ClientResult`. The ClientApp runs core's
:func:`~fedmm.core.client.client_round` (the same pure function the in-process engine runs) and
keeps the client's state in its Flower ``Context``.

Node ↔ client: every SuperNode has a ``partition-id`` in its node config (Flower's convention;
the simulation engine numbers them 0..N-1). The server asks each node for it once.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MessageType, MetricRecord, RecordDict
from flwr.clientapp import ClientApp
from flwr.serverapp import Grid
from torch import nn

from fedmm.core.client import StepMeter, client_round, groups_to_receive, kept_groups
from fedmm.core.data.types import FederatedDataset
from fedmm.core.engine import TrainOutcome, TrainRequest
from fedmm.core.errors import FedmmError
from fedmm.core.failures import ClientDrop
from fedmm.core.flower.codec import (
    arrays_to_record,
    content_bytes,
    contiguous,
    pack,
    record_to_arrays,
    unpack,
)
from fedmm.core.ledger import ClientCost
from fedmm.core.protocol import ClientResult, Technique, TrainPlan

log = logging.getLogger("fedmm")

STATE_RECORD = "fedmm.state"
PARTITION_KEY = "partition-id"


# -- the client side ---------------------------------------------------------------------------
@dataclass
class ClientRuntime:
    """What a SuperNode needs to run fedmm clients: a working model, the federated dataset it
    takes its partition from, and the techniques' client hooks."""

    model: nn.Module
    data: FederatedDataset
    techniques: list[Technique]
    threads: int | None = None

    def __post_init__(self) -> None:
        self.meter = StepMeter()


RuntimeSource = Callable[[Context], ClientRuntime]


def as_int(value: object, name: str) -> int:
    """A record or config value that must be an integer (a peer's malformed value is refused)."""
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise FedmmError(f"{name!r} must be an integer, got {value!r}")
    try:
        return int(value)
    except ValueError:
        raise FedmmError(f"{name!r} must be an integer, got {value!r}") from None


def partition_of(context: Context) -> int:
    value = context.node_config.get(PARTITION_KEY)
    if value is None:
        raise FedmmError(
            f"this SuperNode has no '{PARTITION_KEY}' in its node config; start it with "
            f'--node-config "{PARTITION_KEY}=<client index> num-partitions=<clients>"'
        )
    return as_int(value, PARTITION_KEY)


def _load_state(context: Context) -> dict[str, np.ndarray]:
    record = context.state.array_records.get(STATE_RECORD)
    return {k: a.numpy() for k, a in record.items()} if record is not None else {}


def _store_state(context: Context, state: Mapping[str, np.ndarray]) -> None:
    from flwr.app import Array

    context.state[STATE_RECORD] = ArrayRecord({k: Array(contiguous(v)) for k, v in state.items()})


def make_client_app(runtime: RuntimeSource) -> ClientApp:
    """A Flower ClientApp running fedmm's client round; ``runtime(context)`` gives its model/data."""
    app = ClientApp()

    @app.query()
    def query(message: Message, context: Context) -> Message:
        content = RecordDict({"fedmm.node": ConfigRecord({PARTITION_KEY: partition_of(context)})})
        return Message(content, reply_to=message)

    @app.train()
    def train(message: Message, context: Context) -> Message:
        rt = runtime(context)
        if rt.threads:
            torch.set_num_threads(rt.threads)
        cid = partition_of(context)
        info = message.content.config_records["fedmm.round"]
        if as_int(info["client"], "client") != cid:
            raise FedmmError(f"message for client {info['client']!r} reached the node holding client {cid}")
        plan = TrainPlan.from_dict(unpack(message.content, "fedmm.plan"))
        sent = record_to_arrays(message.content.array_records["fedmm.arrays"])
        state = _load_state(context)
        result = client_round(
            rt.model,
            sent,
            plan,
            rt.data.client(cid),
            state,
            rt.techniques,
            round_=as_int(info["round"], "round"),
            seed=as_int(info["seed"], "seed"),
            modalities=rt.data.modalities,
            num_classes=rt.data.num_classes,
            meter=rt.meter,
        )
        _store_state(context, result.state)
        content = RecordDict(
            {
                "fedmm.update": arrays_to_record(result.update),
                "fedmm.metrics": MetricRecord({k: float(v) for k, v in result.metrics.items()}),
                "fedmm.result": ConfigRecord(
                    {"num_samples": int(result.num_samples), "kept": kept_groups(rt.model, result.state)}
                ),
            }
        )
        pack(content, "fedmm.report", result.report)
        pack(content, "fedmm.cost", result.cost.to_dict())
        return Message(content, reply_to=message)

    return app


# -- the server side ---------------------------------------------------------------------------
class _Dropped(Exception):
    """A client the server drops; the message is the whole cause (no exception type before it)."""


_ANSI = re.compile(r"\x1b\[[0-9;]*m")
# An exception line of a traceback: ``RuntimeError: message`` (or a dotted exception name).
_RAISED = re.compile(r"^(?:[A-Za-z_][\w]*\.)*([A-Za-z_]\w*(?:Error|Exception|Exit|Interrupt)\w*): (.+)$")


def remote_error(reason: str) -> str:
    """The error a ClientApp raised, from the reason Flower reports: its first ``Type: message``
    line (a chained traceback prints the original error first), else the reason's first line."""
    text = _ANSI.sub("", reason)
    for line in text.splitlines():
        found = _RAISED.match(line)
        if found:
            return f"{found.group(1)}: {found.group(2).strip()}"
    return next((line.strip() for line in text.splitlines() if line.strip()), "no reason given")


def exchange(
    grid: Grid, messages: list[Message], timeout: float | None, poll: float = 0.1
) -> dict[int, Message]:
    """Push ``messages`` and pull replies until all are back or ``timeout`` passes.

    Returns {index in ``messages``: reply}. Replies are matched by the message they answer: an
    error the SuperLink writes for a vanished node comes from the SuperLink, not that node.
    (Flower's ``send_and_receive`` polls every 3 s on the deployment engine; rounds of a few
    seconds need finer polling.)
    """
    ids = list(grid.push_messages(messages))
    index = {mid: i for i, mid in enumerate(ids) if mid}
    pending = set(index)
    replies: dict[int, Message] = {}
    deadline = None if timeout is None else time.monotonic() + timeout
    while pending:
        for reply in grid.pull_messages(list(pending)):
            mid = reply.metadata.reply_to_message_id
            if mid in pending:
                pending.discard(mid)
                replies[index[mid]] = reply
        if not pending or (deadline is not None and time.monotonic() >= deadline):
            break
        time.sleep(poll)
    return replies


def discover(
    grid: Grid,
    expected: int,
    *,
    wait: float = 60.0,
    reply_timeout: float = 300.0,
    clients: int | None = None,
) -> dict[int, int]:
    """Ask every connected SuperNode for its partition id: {client id: node id}.

    Waits up to ``wait`` seconds for ``expected`` nodes to connect (deployment nodes join over
    time) and up to ``reply_timeout`` for their answers (a cold node imports torch first); goes
    on with fewer after that, warning that the clients without a node are dropped when selected.
    """
    deadline = time.monotonic() + wait
    nodes = list(grid.get_node_ids())
    while len(nodes) < expected and time.monotonic() < deadline:
        time.sleep(0.2)
        nodes = list(grid.get_node_ids())
    messages = [
        Message(RecordDict({"fedmm.query": ConfigRecord({"want": PARTITION_KEY})}), node, MessageType.QUERY)
        for node in nodes
    ]
    mapping: dict[int, int] = {}
    for i, reply in sorted(exchange(grid, messages, reply_timeout).items()):
        if reply.has_error():
            log.warning("node %s did not say its partition: %s", nodes[i], reply.error.reason)
            continue
        cid = as_int(reply.content.config_records["fedmm.node"][PARTITION_KEY], PARTITION_KEY)
        if cid in mapping:
            raise FedmmError(
                f"two SuperNodes ({mapping[cid]} and {nodes[i]}) both hold partition {cid}; "
                "give each node its own --node-config partition-id"
            )
        mapping[cid] = nodes[i]
    wanted = expected if clients is None else clients
    if len(mapping) < wanted:
        log.warning(
            "%d of %d clients have a SuperNode; the others are dropped when selected", len(mapping), wanted
        )
    return mapping


class FlowerEngine:
    """The Flower engine (:class:`fedmm.core.engine.Engine`): runs a round's planned clients as
    Flower ``train`` messages over ``grid``.

    Sends each client its plan and the parameter groups it needs: the plan's downloads plus
    every group the client does not keep itself (the engine mirrors what each client keeps from
    its last reply; ``model`` gives the groups). Replies that are errors or missing after
    ``round_timeout`` seconds drop that client. The ledger's bytes are the sizes of the records
    Flower carried each way. The SuperNodes are asked for their partition once, at construction
    (waiting up to ``node_wait`` seconds for ``min_nodes``, default all ``num_clients``).
    """

    def __init__(
        self,
        grid: Grid,
        *,
        model: nn.Module,
        num_clients: int,
        round_timeout: float | None = None,
        node_wait: float = 60.0,
        min_nodes: int | None = None,
    ) -> None:
        self.grid = grid
        self.model = model
        self.round_timeout = round_timeout
        self.nodes = discover(grid, min_nodes or num_clients, wait=node_wait, clients=num_clients)
        self.kept: dict[int, set[str]] = {}

    def train(self, request: TrainRequest) -> TrainOutcome:
        messages: list[Message] = []
        senders: list[int] = []
        sent_bytes: dict[int, int] = {}
        drops: list[ClientDrop] = []
        round_ = request.round
        for cid, plan in request.plans.items():
            node = self.nodes.get(cid)
            if node is None:
                drops.append(ClientDrop(cid, "no SuperNode holds this client"))
                log.debug("round %d: client %d dropped: no SuperNode holds it", round_, cid)
                continue
            groups = groups_to_receive(self.model, plan, self.kept.get(cid, set()))
            content = RecordDict(
                {
                    "fedmm.arrays": arrays_to_record({g: request.global_arrays[g] for g in groups}),
                    "fedmm.round": ConfigRecord({"round": round_, "client": cid, "seed": request.seeds[cid]}),
                }
            )
            pack(content, "fedmm.plan", plan.to_dict())
            sent_bytes[cid] = content_bytes(content)
            messages.append(Message(content, node, MessageType.TRAIN, group_id=str(round_)))
            senders.append(cid)
        replies = {senders[i]: r for i, r in exchange(self.grid, messages, self.round_timeout).items()}
        results: list[ClientResult] = []
        for cid in request.plans:
            if cid not in sent_bytes:
                continue
            got = replies.get(cid)
            try:
                if got is None:
                    raise _Dropped(f"no reply within round_timeout={self.round_timeout}s")
                if got.has_error():
                    log.debug("round %d: client %d: its ClientApp failed: %s", round_, cid, got.error.reason)
                    raise _Dropped(f"ClientApp failed: {remote_error(got.error.reason or '')}")
                results.append(self._result(cid, got, sent_bytes[cid]))
            except Exception as exc:  # a failing client must not stop the round
                drop = (
                    ClientDrop(cid, str(exc))
                    if isinstance(exc, _Dropped)
                    else ClientDrop.from_exception(cid, exc)
                )
                drops.append(drop)
                self.kept.pop(cid, None)
                # The round logs its drops by cause; one line each with -v.
                log.debug("round %d: client %d dropped: %s", round_, cid, drop.error)
        return TrainOutcome(tuple(results), tuple(drops))

    def _result(self, cid: int, reply: Message, bytes_down: int) -> ClientResult:
        content = reply.content
        update = record_to_arrays(content.array_records["fedmm.update"])
        info = content.config_records["fedmm.result"]
        cost = ClientCost.from_dict(unpack(content, "fedmm.cost"))
        cost.bytes_down, cost.bytes_up = bytes_down, content_bytes(content)
        report: dict[str, Any] = unpack(content, "fedmm.report")
        metrics = {
            k: float(v)
            for k, v in content.metric_records["fedmm.metrics"].items()
            if isinstance(v, int | float)
        }
        kept = info["kept"]
        self.kept[cid] = {str(g) for g in kept} if isinstance(kept, list) else set()
        return ClientResult(
            cid, as_int(info["num_samples"], "num_samples"), update, report, metrics, {}, cost
        )


__all__ = ["ClientRuntime", "FlowerEngine", "discover", "exchange", "make_client_app", "partition_of"]
