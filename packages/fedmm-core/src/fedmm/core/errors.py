"""Exceptions with messages that say what is wrong and how to fix it."""

from __future__ import annotations


class FedmmError(Exception):
    """Base class of every error fedmm raises on purpose."""


class ConfigError(FedmmError, ValueError):
    """A configuration value (TOML field, argument) is invalid."""


class ArgumentError(ConfigError):
    """One argument (of a technique, encoder, ...) is invalid; ``argument`` names it.

    The message reads ``"{owner}: {argument} {problem}"``; a config names the same argument by
    its place in the file (``[[techniques]] #1 (fedmvp).completion: ...``) from these parts.
    """

    def __init__(self, owner: str, argument: str, problem: str) -> None:
        super().__init__(f"{owner}: {argument} {problem}")
        self.owner = owner
        self.argument = argument
        self.problem = problem

    def __reduce__(self) -> tuple[type[ArgumentError], tuple[str, str, str]]:
        return (type(self), (self.owner, self.argument, self.problem))


class DataError(FedmmError, ValueError):
    """A dataset, data file or sample array is malformed."""


class DataFileError(DataError):
    """A data file is malformed; the message names the file and, where known, the line."""

    def __init__(self, path: object, message: str, line: int | None = None) -> None:
        where = f"{path}" + (f", line {line}" if line is not None else "")
        super().__init__(f"{where}: {message}")
        self.path = path
        self.line = line


class MissingDependencyError(FedmmError, ImportError):
    """An optional package or system tool is needed; the message says how to install it."""


class UpdateError(FedmmError, ValueError):
    """A client's model update is malformed (NaN/Inf, wrong shape, unknown group)."""


class CheckpointError(FedmmError):
    """A checkpoint is missing, incomplete or does not match the run."""


class RunFailedError(FedmmError):
    """A run finished but trained nothing worth reporting (every round skipped, or a round lost
    every selected client to one cause). Its metrics and summary are written before it is raised;
    ``fedmm`` exits with :attr:`exit_code` (3, unlike the 2 of bad input)."""

    exit_code = 3

    def __init__(self, failure: str, run_dir: object | None = None) -> None:
        where = f"\nits metrics and summary are written to {run_dir}" if run_dir is not None else ""
        super().__init__(failure + where)
        self.failure = failure
        self.run_dir = run_dir
