"""Why clients were dropped, and whether a run trained anything at all.

A client that raises or returns a bad update is dropped and the round goes on with the others;
each drop is a :class:`ClientDrop`. A round's metrics row records them as ``dropped`` (the count)
and ``drop_causes``: ``{cause: {"count", "error", "client"}}``, where the cause is the error's
type and message with numbers replaced by ``N`` (so the same failure in many clients is one
cause) and ``error``/``client`` are the first such error's own text and client.

:func:`run_failure` reads those rows: a run in which every round was skipped, or in which some
round lost every selected client (two or more) to one cause, trained nothing worth reporting;
its text says how many clients were dropped, in which rounds, and why.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

# A number on its own (not a digit inside a name such as ``encoder.0`` or ``conv2``).
_NUMBER = re.compile(r"(?<![\w.])[-+]?\d+(?:\.\d+)?(?:e[-+]?\d+)?(?![\w])")
_MAX_TEXT = 300
UNKNOWN = "unknown cause (the client step did not say)"


def _shorten(text: str) -> str:
    text = " ".join(text.split())  # one line, even for a remote traceback
    return text if len(text) <= _MAX_TEXT else text[: _MAX_TEXT - 1] + "…"


@dataclass(frozen=True)
class ClientDrop:
    """One client dropped from a round: its id and the error that dropped it ("Type: message")."""

    client_id: int | None  # None: not known (rows written before drops named their client)
    error: str

    @classmethod
    def from_exception(cls, client_id: int | None, exc: BaseException) -> ClientDrop:
        return cls(client_id, f"{type(exc).__name__}: {exc}")

    @property
    def cause(self) -> str:
        """The error with its numbers normalised: what many clients' drops have in common."""
        return _shorten(_NUMBER.sub("N", self.error))


def drop_causes(drops: Iterable[ClientDrop]) -> dict[str, dict[str, Any]]:
    """``{cause: {"count", "error", "client"}}`` of a round's drops, causes in order of appearance."""
    out: dict[str, dict[str, Any]] = {}
    for d in drops:
        entry = out.setdefault(d.cause, {"count": 0, "error": _shorten(d.error), "client": d.client_id})
        entry["count"] += 1
    return out


def describe_causes(causes: Mapping[str, Mapping[str, Any]]) -> str:
    """``2 × RuntimeError: disk on fire; 1 × UpdateError: …`` (one line, for a round's log line)."""
    return "; ".join(f"{int(c['count'])} × {cause}" for cause, c in causes.items())


def round_causes(row: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """A metrics row's drop causes; drops of rows written without causes form one unknown cause."""
    causes = row.get("drop_causes")
    if isinstance(causes, Mapping) and causes:
        return {str(k): dict(v) for k, v in causes.items()}
    dropped = int(row.get("dropped") or 0)
    return {UNKNOWN: {"count": dropped, "error": UNKNOWN, "client": None}} if dropped else {}


def spans(rounds: Sequence[int], most: int = 8) -> str:
    """``1-3, 5, 8-9`` (the first ``most`` runs of consecutive rounds, then ``…``)."""
    runs: list[list[int]] = []
    for r in sorted(set(rounds)):
        if runs and r == runs[-1][1] + 1:
            runs[-1][1] = r
        else:
            runs.append([r, r])
    text = [str(a) if a == b else f"{a}-{b}" for a, b in runs[:most]]
    return ", ".join(text) + (", …" if len(runs) > most else "")


# What a user can do about a cause, where fedmm knows.
_HINTS: tuple[tuple[str, str], ...] = (
    ("contains NaN or Inf", "the local training diverged: lower [strategy].lr or check the technique's loss"),
)


def _hint(cause: str) -> str:
    return next((f" ({hint})" for needle, hint in _HINTS if needle in cause), "")


def drop_totals(rows: Sequence[Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
    """The run's drops by cause: ``{cause: {"count", "rounds", "error", "client"}}`` (``error`` and
    ``client``: the first such drop's)."""
    totals: dict[str, dict[str, Any]] = {}
    for row in rows:
        for cause, c in round_causes(row).items():
            t = totals.setdefault(cause, {"count": 0, "rounds": [], "error": c.get("error"), "client": None})
            t["count"] += int(c.get("count") or 0)
            t["rounds"].append(int(row.get("round", 0)))
            if t["client"] is None and c.get("client") is not None:
                t["client"], t["error"] = c["client"], c.get("error")
    return totals


def drop_report(rows: Sequence[Mapping[str, Any]]) -> list[str]:
    """One line per drop cause over the run: how many clients, in which rounds, the first error."""
    lines = []
    for cause, t in drop_totals(rows).items():
        where = f", first client {t['client']}" if t["client"] is not None else ""
        plural = "s" if len(t["rounds"]) > 1 else ""
        lines.append(
            f"{t['count']} in round{plural} {spans(t['rounds'])}{where}: {t['error'] or cause}{_hint(cause)}"
        )
    return lines


def run_failure(rows: Sequence[Mapping[str, Any]], min_clients: int | None = None) -> str | None:
    """Why the run with these metrics rows failed, or None when it trained.

    A run fails when every round was skipped (the model was never updated), or when some round
    lost every selected client, two or more, to the same cause (a systematic error, not bad luck;
    one client dropped once is no evidence either way).
    """
    if not rows:
        return None
    skipped = [r for r in rows if r.get("skipped")]
    threshold = f"min_clients={min_clients}" if min_clients is not None else "[strategy].min_clients"
    lost = [
        r
        for r in rows
        if int(r.get("selected") or 0) >= 2
        and int(r.get("dropped") or 0) == int(r.get("selected") or 0)
        and len(round_causes(r)) == 1
    ]
    if len(skipped) == len(rows):
        n = len(rows)
        head = (
            f"the run trained nothing: {'its only round was' if n == 1 else f'all {n} rounds were'} skipped "
            f"(fewer than {threshold} clients survived), so the model is still the initial one"
        )
    elif lost:
        first = lost[0]
        head = (
            f"the run failed: every selected client of round {first['round']} "
            f"({int(first['selected'])} of {int(first['selected'])}) was dropped for the same cause"
            + (f", and so in {len(lost) - 1} more round(s)" if len(lost) > 1 else "")
        )
    else:
        return None
    report = drop_report(rows)
    if not report:
        most = max(int(r.get("selected") or 0) for r in rows)
        return (
            f"{head}\nno client was dropped: the rounds selected at most {most} client(s), fewer than "
            f"{threshold}; lower [strategy].min_clients or select more clients per round"
        )
    dropped = sum(int(r.get("dropped") or 0) for r in rows)
    return f"{head}\n{dropped} client(s) dropped:\n" + "\n".join(f"  {line}" for line in report)


__all__ = [
    "UNKNOWN",
    "ClientDrop",
    "describe_causes",
    "drop_causes",
    "drop_report",
    "drop_totals",
    "round_causes",
    "run_failure",
    "spans",
]
