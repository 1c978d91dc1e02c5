"""What fedmm prints while it works: progress bars, plain progress lines, log messages.

- Bars (:func:`bar`) are drawn only on a terminal (or a notebook); elsewhere — a log file, a
  pipe, CI — they would fill it with carriage returns and cursor codes, so a round loop prints a
  plain line every few rounds instead (:class:`RoundProgress`) and other bars stay silent.
- Messages go through :mod:`logging` (logger ``fedmm``). :func:`configure_logging` (the CLI
  calls it) writes them with :class:`BarSafeHandler`, above any bar instead of into its line.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Iterable, Mapping
from typing import IO, Any, TypeVar

import tqdm.auto  # also loads tqdm.autonotebook, which knows whether this is a notebook
from tqdm import std as tqdm_std

T = TypeVar("T")
log = logging.getLogger("fedmm")


def in_notebook() -> bool:
    """Whether tqdm draws notebook widgets here (a Jupyter kernel), which need no terminal."""
    auto = sys.modules.get("tqdm.autonotebook")
    return auto is not None and getattr(auto, "tqdm", tqdm_std.tqdm) is not tqdm_std.tqdm


def interactive(stream: IO[str] | None = None) -> bool:
    """Whether bars can be drawn: ``stream`` (default stderr) is a terminal, or this is a notebook."""
    stream = stream if stream is not None else sys.stderr
    try:
        tty = bool(stream.isatty())
    except (AttributeError, ValueError):  # closed or file-less streams
        tty = False
    return tty or in_notebook()


def bar(iterable: Iterable[T] | None = None, *, enabled: bool = True, **options: Any) -> tqdm_std.tqdm[T]:
    """A tqdm bar, drawn only when ``enabled`` and on a terminal or in a notebook."""
    return tqdm.auto.tqdm(iterable, disable=not (enabled and interactive()), **options)


class RoundProgress:
    """Progress of a round loop: a bar on a terminal; elsewhere one plain line every few rounds.

    The plain line (``round 10/50  accuracy 0.812  loss 0.410``) goes to stderr, where the bar
    would have gone, every ``total // 10`` rounds, at the last round, and at least once a minute.
    """

    def __init__(self, total: int, initial: int = 0, *, enabled: bool = True, desc: str = "rounds") -> None:
        self.total = total
        self.enabled = enabled
        self.plain = enabled and not interactive()
        self.every = max(1, total // 10)
        self.last_line = time.monotonic()
        self.bar = tqdm.auto.tqdm(
            total=total, initial=initial, desc=desc, unit="round", disable=not enabled or self.plain
        )

    def update(self, round_: int, metrics: Mapping[str, Any]) -> None:
        acc, loss = metrics.get("accuracy"), metrics.get("loss")
        if not self.plain:
            if acc is not None:
                self.bar.set_postfix(acc=f"{acc:.3f}")
            self.bar.update(1)
            return
        now = time.monotonic()
        if round_ % self.every and round_ != self.total and now - self.last_line < 60:
            return
        self.last_line = now
        line = f"round {round_}/{self.total}"
        if acc is not None:
            line += f"  accuracy {acc:.3f}"
        if loss is not None:
            line += f"  loss {loss:.3f}"
        if metrics.get("skipped"):
            line += "  (skipped)"
        print(line, file=sys.stderr, flush=True)

    def close(self) -> None:
        self.bar.close()


class BarSafeHandler(logging.Handler):
    """Writes log records with ``tqdm.write``: above a bar that is being drawn, not into its line.

    The stream is looked up at each record (stderr by default), so a replaced ``sys.stderr``
    (pytest's capture, a redirect) is honoured."""

    def __init__(self, stream: IO[str] | None = None) -> None:
        super().__init__()
        self.stream = stream

    def emit(self, record: logging.LogRecord) -> None:
        try:
            tqdm_std.tqdm.write(self.format(record), file=self.stream or sys.stderr)
        except Exception:
            self.handleError(record)


class PlainFormatter(logging.Formatter):
    """``message`` for information, ``warning: message`` / ``error: message`` for the rest."""

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        if record.levelno >= logging.WARNING:
            return f"{record.levelname.lower()}: {text}"
        return text


def configure_logging(verbosity: int = 0) -> BarSafeHandler:
    """Log fedmm's messages (and Python warnings) to stderr above any bar.

    ``verbosity``: -1 warnings only (``-q``), 0 also progress information, 1 also each dropped
    client (``-v``). Returns the handler (``remove_logging`` takes it off again)."""
    root = logging.getLogger()
    for old in [h for h in root.handlers if isinstance(h, BarSafeHandler)]:
        root.removeHandler(old)
    handler = BarSafeHandler()
    handler.setFormatter(PlainFormatter("%(message)s"))
    root.addHandler(handler)
    log.setLevel(logging.DEBUG if verbosity > 0 else logging.INFO if verbosity == 0 else logging.WARNING)
    logging.captureWarnings(True)
    return handler


def remove_logging(handler: BarSafeHandler) -> None:
    logging.getLogger().removeHandler(handler)
    logging.captureWarnings(False)
    log.setLevel(logging.NOTSET)


__all__ = [
    "BarSafeHandler",
    "PlainFormatter",
    "RoundProgress",
    "bar",
    "configure_logging",
    "in_notebook",
    "interactive",
    "remove_logging",
]
