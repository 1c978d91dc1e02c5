"""Where a run computes: ``device = "auto" | "cpu" | "cuda" | "cuda:N"``.

A run names its device once (``[run] device`` in a config, ``Federation(device=...)`` in Python);
the model is moved there, and everything that meets the model follows it: each minibatch is moved
to the model's device before its forward (:meth:`fedmm.core.data.types.Batch.to`), and a model
allocates what it needs in ``forward`` on the device of its inputs. What crosses between server and
client stays plain numpy on the host (:mod:`fedmm.core.arrays` copies to and from the device), so
the round protocol, the ledger's bytes and every engine are the same on any device.
"""

from __future__ import annotations

import os
import re

import torch
from torch import nn

from fedmm.core.errors import ConfigError

DEVICE_CHOICES = ('"auto"', '"cpu"', '"cuda"', '"cuda:N"')
# Overrides what "auto" picks (e.g. FEDMM_DEVICE=cuda for a device check, cpu to keep off a GPU).
DEVICE_ENV = "FEDMM_DEVICE"
_CUDA = re.compile(r"cuda(?::(\d+))?")


def resolve_device(spec: str | torch.device | None = "auto") -> torch.device:
    """The :class:`torch.device` that ``spec`` names.

    ``"auto"`` (or None) is the device named by the environment variable ``FEDMM_DEVICE`` when it
    is set (how ``tools/device_check.py`` puts every benchmark on a GPU), else the first CUDA
    device when one is usable, else the CPU. A CUDA device
    that this machine does not have is a :class:`~fedmm.core.errors.ConfigError` naming what
    exists, never a failure deep inside the first forward pass.
    """
    if isinstance(spec, torch.device):
        spec = str(spec)
    if spec is None or spec == "auto":
        chosen = os.environ.get(DEVICE_ENV, "").strip()
        if chosen and chosen != "auto":
            try:
                return resolve_device(chosen)
            except ConfigError as exc:
                raise ConfigError(f"environment variable {DEVICE_ENV}: {exc}") from None
        return torch.device("cuda:0" if torch.cuda.is_available() else "cpu")
    if not isinstance(spec, str):
        raise ConfigError(f"device must be one of {', '.join(DEVICE_CHOICES)}, got {spec!r}")
    text = spec.strip().lower()
    if text == "cpu":
        return torch.device("cpu")
    match = _CUDA.fullmatch(text)
    if match is None:
        raise ConfigError(f"unknown device {spec!r}; use one of {', '.join(DEVICE_CHOICES)}")
    if not torch.cuda.is_available():
        raise ConfigError(
            f"device {spec!r} needs a CUDA GPU, and torch sees none on this machine "
            f"(torch {torch.__version__}, CUDA build: {torch.version.cuda or 'no'}); "
            'use device = "cpu" or "auto"'
        )
    index = int(match.group(1) or 0)
    count = torch.cuda.device_count()
    if index >= count:
        raise ConfigError(
            f"device {spec!r}: this machine has {count} CUDA device(s), cuda:0..cuda:{count - 1}"
        )
    return torch.device("cuda", index)


def module_device(module: nn.Module) -> torch.device:
    """The device of ``module``'s first parameter (or buffer); the CPU for a module with neither."""
    for p in module.parameters():
        return p.device
    for b in module.buffers():
        return b.device
    return torch.device("cpu")


__all__ = ["DEVICE_CHOICES", "DEVICE_ENV", "module_device", "resolve_device"]
