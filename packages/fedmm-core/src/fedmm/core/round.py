"""The server's round, top to bottom, on any engine.

:func:`run_round` is the whole round as named phases, in this order; each phase is a function
below. The engine (:mod:`fedmm.core.engine`: in-process, Flower) is an object passed in and does
one phase, ``train``; every other line is the same on every engine.

============  ========================  =============================  ==============================
phase         hook (techniques, order)   the hook sees (frozen)          the hook may change
============  ========================  =============================  ==============================
select        ``select_clients``         :class:`RoundContext`           nothing: it returns the
                                                                         candidates it keeps
configure     ``configure``              :class:`RoundContext`           nothing: it returns the plan
train         client hooks: ``prepare``, :class:`ClientContext` (per     the client's ``cctx.state``
              ``loss_terms``,            client, on the engine)          only; data, report and upload
              ``report``, ``upload``                                     go through return values
aggregate     ``aggregate`` (owned)      :class:`ResultsContext`         nothing: it returns the new
                                         (``global_arrays`` = previous)  global arrays (None = FedAvg)
evaluate      —                          —                               —
after_round   ``after_round``            :class:`ResultsContext`         its own state, and its own
                                         (``global_arrays`` = new)       keys in ``metrics``
============  ========================  =============================  ==============================

A context is frozen, its mappings are read-only views (``history``, ``reports``, ``groups``) and
its arrays read-only numpy views (writing into ``ctx.global_arrays`` raises), so a hook cannot
change what a later hook of the same round sees; the round alone moves the
server's state (global arrays, client states, reports, ledger) between phases, in ``commit``.
Each server phase's seconds (and, when a technique overrides it, torch FLOPs) are charged to the
round's :class:`~fedmm.core.ledger.ServerCost`; each client hook's to the client's cost.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import numpy as np

from fedmm.core.arrays import GroupedArrays, read_only, validate_update
from fedmm.core.engine import Engine, TrainRequest
from fedmm.core.evaluate import evaluate
from fedmm.core.failures import ClientDrop, describe_causes, drop_causes
from fedmm.core.ledger import ServerCost
from fedmm.core.measure import measure_step
from fedmm.core.models.model import deepest
from fedmm.core.protocol import ClientResult, ResultsContext, RoundContext, Strategy, Technique, TrainPlan

if TYPE_CHECKING:
    from fedmm.core.federation import Federation

log = logging.getLogger("fedmm")

# The engine said nothing about a planned client.
NOT_REPORTED = "the engine returned no result and no error for this client"


def run_round(fed: Federation, engine: Engine, round_: int) -> dict[str, Any]:
    """Run round ``round_`` of ``fed`` with ``engine``; returns the round's metrics row."""
    server = ServerCost(round=round_)
    t0 = time.perf_counter()
    ctx = fed.context(round_)

    selected = select(fed.strategy, ctx, server)
    plans = configure(fed.strategy, ctx, selected, server)
    results, drops = train(fed, engine, round_, plans)

    metrics: dict[str, Any] = {"round": round_, "selected": len(selected), "dropped": len(drops)}
    causes = drop_causes(drops)
    if causes:
        metrics["drop_causes"] = causes
    if plans:
        fed.depth = deepest(fed.model, [p.depth for p in plans.values()])
    skipped = len(results) < fed.strategy.min_clients
    log_drops(fed.strategy, round_, len(selected), len(results), drops, skipped)
    metrics["skipped"] = skipped
    if skipped:
        after_ctx = ctx.with_results(())
    else:
        results_ctx = ctx.with_results(results)
        new_arrays = aggregate(fed.strategy, results_ctx, server)
        commit(fed, results, new_arrays)
        after_ctx = results_ctx.aggregated(read_only(new_arrays))
        losses = [r.metrics["train_loss"] for r in results if math.isfinite(r.metrics["train_loss"])]
        metrics["train_loss"] = float(np.mean(losses)) if losses else float("nan")
    metrics["train_seconds"] = time.perf_counter() - t0

    if fed.eval_every and round_ % fed.eval_every == 0:
        metrics.update(evaluate_global(fed, server))
    after_round(fed.strategy, after_ctx, metrics, server)
    fed.history.ledger.add_server(server)
    # After after_round, so the round's totals include its work.
    totals = fed.history.ledger.round_totals(round_)
    metrics.update({f"ledger/{k}": v for k, v in totals.items()})
    return metrics


# -- the phases ----------------------------------------------------------------------------------
def select(strategy: Strategy, ctx: RoundContext, server: ServerCost) -> list[int]:
    """The round's clients: the selecting techniques narrow all clients, then uniform sampling."""
    with charged(strategy, server, "select_clients"):
        return [int(c) for c in strategy.select_clients(ctx).tolist()]


def configure(
    strategy: Strategy, ctx: RoundContext, selected: list[int], server: ServerCost
) -> dict[int, TrainPlan]:
    """Each selected client's plan: the strategy's base plan refined by each technique in turn."""
    with charged(strategy, server, "configure"):
        return {cid: strategy.configure(ctx, cid) for cid in selected}


def train(
    fed: Federation, engine: Engine, round_: int, plans: Mapping[int, TrainPlan]
) -> tuple[list[ClientResult], list[ClientDrop]]:
    """The engine runs the planned clients; results come back in plan order (so aggregation sums
    in the same order on every engine), each update checked against the global arrays.

    A client is dropped when the engine says so, when its update does not fit the global model
    (unknown group, wrong shape, NaN), or when the engine says nothing about it."""
    if not plans:
        return [], []
    request = TrainRequest(
        round=round_,
        global_arrays=fed.global_arrays,
        plans=plans,
        seeds={cid: fed.client_seed(round_, cid) for cid in plans},
        states=fed.client_states,
    )
    outcome = engine.train(request)
    by_client = {r.client_id: r for r in outcome.results}
    drops = list(outcome.drops)
    told = set(by_client) | {d.client_id for d in drops}
    results: list[ClientResult] = []
    for cid in plans:
        result = by_client.get(cid)
        if result is None:
            if cid not in told:
                drops.append(ClientDrop(cid, NOT_REPORTED))
            continue
        try:
            validate_update(result.update, fed.global_arrays)
        except Exception as exc:  # a bad update drops its client, not the round
            drops.append(ClientDrop.from_exception(cid, exc))
            log.debug("round %d: client %d dropped: %s", round_, cid, drops[-1].error)
            continue
        results.append(result)
    return results, drops


def aggregate(strategy: Strategy, ctx: ResultsContext, server: ServerCost) -> GroupedArrays:
    """The new global arrays: the owning technique's aggregate, else sample-weighted FedAvg."""
    with charged(strategy, server, "aggregate"):
        return strategy.aggregate(ctx, ctx.results)


def commit(fed: Federation, results: list[ClientResult], arrays: GroupedArrays) -> None:
    """Move the server's state to the round's outcome: global arrays, each client's kept state
    and latest report, and the clients' costs in the ledger."""
    fed.global_arrays = arrays
    for r in results:
        if r.state:
            fed.client_states[r.client_id] = r.state
        else:
            fed.client_states.pop(r.client_id, None)
        if r.report:
            fed.reports[r.client_id] = r.report
    fed.history.ledger.extend(r.cost for r in results)


def evaluate_global(fed: Federation, server: ServerCost) -> dict[str, float]:
    """Test-set metrics of the global model (at the depth the round's plans reached), and with
    ``fed.eval_validation`` its metrics on the server's validation split as ``val_<metric>``
    (model selection by a validation score needs it every round)."""
    t0 = time.perf_counter()
    model = fed.model_with(fed.global_arrays)
    out = evaluate(
        model,
        fed.data.test,
        fed.data.num_classes,
        batch_size=fed.eval_batch_size,
        per_modality=fed.eval_per_modality,
    )
    if fed.eval_validation and fed.data.validation is not None:
        val = evaluate(
            model,
            fed.data.validation,
            fed.data.num_classes,
            batch_size=fed.eval_batch_size,
            per_modality=False,
        )
        out.update({f"val_{k}": v for k, v in val.items()})
    server.eval_seconds = time.perf_counter() - t0
    return out


def after_round(strategy: Strategy, ctx: ResultsContext, metrics: dict[str, Any], server: ServerCost) -> None:
    """Each technique's end-of-round step (an RL update, a stage advance), in list order."""
    with charged(strategy, server, "after_round"):
        strategy.after_round(ctx, metrics)


# -- helpers -------------------------------------------------------------------------------------
def log_drops(
    strategy: Strategy, round_: int, selected: int, survived: int, drops: list[ClientDrop], skipped: bool
) -> None:
    """One warning per round that lost clients, by cause (one line per client only with -v)."""
    causes = drop_causes(drops)
    if skipped:
        log.warning(
            "round %d skipped: %d of %d clients survived, fewer than min_clients=%d%s",
            round_,
            survived,
            selected,
            strategy.min_clients,
            f"; dropped: {describe_causes(causes)}" if causes else "",
        )
    elif causes:
        log.warning(
            "round %d: %d of %d clients dropped: %s", round_, len(drops), selected, describe_causes(causes)
        )


def phase_overridden(strategy: Strategy, phase: str) -> bool:
    """Whether ``phase`` runs anything but the default: a technique or the strategy overrides it."""
    if getattr(type(strategy), phase) is not getattr(Strategy, phase):
        return True
    base = getattr(Technique, phase)
    return any(getattr(type(t), phase) is not base for t in strategy.techniques)


@contextmanager
def charged(strategy: Strategy, cost: ServerCost, phase: str) -> Iterator[None]:
    """Charge the block's seconds (and, when the phase is overridden, torch FLOPs) to ``phase``.

    The default phases (uniform sampling, the base plan, numpy FedAvg) run no torch ops: they
    are only timed, so the FLOP counter costs nothing when no technique overrides them."""
    t0 = time.perf_counter()
    if phase_overridden(strategy, phase):
        with measure_step(track_memory=False) as m:
            yield
        cost.flops_by_phase[phase] = int(m.flops)
    else:
        yield
    cost.seconds_by_phase[phase] = time.perf_counter() - t0


__all__ = [
    "NOT_REPORTED",
    "after_round",
    "aggregate",
    "charged",
    "commit",
    "configure",
    "evaluate_global",
    "run_round",
    "select",
    "train",
]
