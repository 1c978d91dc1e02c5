"""Measure (not estimate) the compute and memory of one real training step.

:func:`measure_step` is a context manager put around one real step — forward, backward and
optimiser update — that reports, on exit:

* ``flops``: the total floating-point operations of the operators that actually ran, with the
  formulas and conventions of PyTorch's :class:`torch.utils.flop_counter.FlopCounterMode`
  (its ``flop_registry``; the tests check the totals equal ``FlopCounterMode``'s) (matrix
  multiplications, convolutions, attention; element-wise ops and the optimiser count 0 under its
  conventions — e.g. a ``Linear(in, out)`` on a batch ``B`` costs ``2·B·in·out`` forward and
  ``2·B·in·out`` per input of the backward that needs a gradient: ``4·B·in·out`` when the input
  needs no gradient, ``6·B·in·out`` when it does);
* ``peak_bytes``: the peak, over the step, of the total bytes of live tensor storages that the step
  touched or created (see *Memory accounting* below), also per device in ``peak_bytes_by_device``.

Memory accounting
-----------------
A :class:`~torch.utils._python_dispatch.TorchDispatchMode` sees every ATen operator below autograd,
*including the backward operators*: the autograd engine propagates the thread-local dispatch-mode
stack to the thread that runs backward (verified by the tests: ``threshold_backward``/``mm`` of the
backward pass and the optimiser's ops reach the mode). After each operator the mode registers the
untyped storages of the operator's tensor inputs and outputs, keyed by the storage's Python object
(``tensor.untyped_storage()`` returns the same object for as long as the storage lives; the object is
kept alive by PyTorch's PyObject preservation while C++ — e.g. the autograd graph — still holds the
storage). A ``weakref`` with a callback on that object tells when the storage is freed.

* A storage first seen as an operator *output* was *created by the step*: it counts from its
  creation until it is freed.
* A storage first seen as an *input* existed before the step (parameters, existing ``.grad``,
  optimiser state, the batch): it counts once, from the *start* of the step (it was already
  alive) until it is freed or the step ends. Discovering such a storage late therefore raises the
  peak of every earlier moment too.

The peak is the maximum of the live total over the moments right after each operator (allocation
only happens inside operators, so the maximum is attained at one of them).

What it does not see (caveats): memory an operator allocates and frees internally (workspaces,
temporary buffers inside one kernel), allocator caching/fragmentation, non-tensor memory (Python
objects, the interpreter, libraries), tensors created in the step without any ATen operator (e.g.
``torch.from_numpy``; such a tensor, once used, counts as pre-existing, i.e. from the start), sparse
and other non-strided tensors, and work done on other threads that did not inherit the mode (e.g.
``DataLoader`` workers, ``DataParallel``). For the process as a whole use :func:`peak_rss_bytes`
/ :func:`current_rss_bytes`.

Measurement does not change numerical results: every operator is executed as is, and the bitwise
equality of a measured and an unmeasured step is tested.
"""

from __future__ import annotations

import functools
import os
import resource
import sys
import threading
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves
from torch.utils.flop_counter import flop_registry

__all__ = ["StepMeasurement", "current_rss_bytes", "measure_step", "peak_rss_bytes"]


@dataclass
class StepMeasurement:
    """What :func:`measure_step` measured; filled when its ``with`` block exits.

    Attributes:
        flops: total FLOPs counted by ``FlopCounterMode`` (0 when ``count_flops=False``).
        peak_bytes: peak total bytes of live tensor storages touched or created by the step.
        peak_bytes_by_device: the same peak computed per device (``"cpu"``, ``"cuda:0"``…); each
            device's peak may occur at a different moment, so they can sum to more than
            ``peak_bytes``.
        preexisting_bytes: bytes of the storages that existed before the step and that it used
            (parameters, gradients, optimiser state, the batch…).
        live_bytes_at_exit: tracked bytes still alive when the block exited.
        num_ops: number of ATen operators that ran.
        flops_by_operator: FLOPs per operator name (e.g. ``"aten.mm"``).
        complete: True when the block exited without an exception (otherwise the numbers cover
            the part of the step that ran).
        allocator_peak_bytes_by_device: for each CUDA device the step used, the step's peak from
            the CUDA caching allocator (``torch.cuda.max_memory_allocated`` over the block, less
            what was allocated before it, plus the pre-existing storages the step used on that
            device), which includes what the tracker cannot see (kernel workspaces). Where it is
            known it replaces the tracker's figure for that device in ``peak_bytes``; the
            tracker's stays in ``peak_bytes_by_device`` as the cross-check.
    """

    flops: int = 0
    peak_bytes: int = 0
    peak_bytes_by_device: dict[str, int] = field(default_factory=dict)
    preexisting_bytes: int = 0
    live_bytes_at_exit: int = 0
    num_ops: int = 0
    flops_by_operator: dict[str, int] = field(default_factory=dict)
    complete: bool = False
    allocator_peak_bytes_by_device: dict[str, int] = field(default_factory=dict)


class _Entry:
    __slots__ = ("device", "nbytes", "preexisting", "ref")

    def __init__(self, ref: weakref.ref[Any], nbytes: int, device: str, preexisting: bool) -> None:
        self.ref = ref
        self.nbytes = nbytes
        self.device = device
        self.preexisting = preexisting


class _StorageTracker(TorchDispatchMode):
    """Dispatch mode that tracks the live bytes of the storages the operators touch (see module doc)."""

    def __init__(self, count_flops: bool = False, track_memory: bool = True) -> None:
        super().__init__()
        self.count_flops = count_flops
        self.track_memory = track_memory
        self.flops = 0
        self.flops_by_operator: dict[str, int] = {}
        self._lock = threading.RLock()
        self._entries: dict[int, _Entry] = {}
        self._closed = False
        self.num_ops = 0
        self.preexisting_bytes = 0
        self.preexisting_by_device: dict[str, int] = {}
        self._live_total = 0
        self._live: dict[str, int] = {}
        self._peak_total = 0
        self._peak: dict[str, int] = {}

    # -- bookkeeping -------------------------------------------------------------------------
    def _add_live(self, device: str, delta: int) -> None:
        self._live_total += delta
        self._live[device] = self._live.get(device, 0) + delta

    def _on_free(self, key: int, ref: weakref.ref[Any]) -> None:
        with self._lock:
            if self._closed:
                return
            entry = self._entries.get(key)
            if entry is None or entry.ref is not ref:
                return
            del self._entries[key]
            self._add_live(entry.device, -entry.nbytes)

    @staticmethod
    def _storage_of(t: torch.Tensor) -> Any | None:
        if t.layout != torch.strided or t.device.type == "meta":
            return None
        try:
            storage = t.untyped_storage()
        except (RuntimeError, NotImplementedError, TypeError):  # wrapper subclasses without storage
            return None
        return None if storage.device.type == "meta" else storage  # fake tensors hold no memory

    def _register(self, t: torch.Tensor, as_output: bool) -> None:
        storage = self._storage_of(t)
        if storage is None:
            return
        nbytes = int(storage.nbytes())
        key = id(storage)
        entry = self._entries.get(key)
        if entry is not None and entry.ref() is storage:
            if nbytes != entry.nbytes:  # resized in place (e.g. an out= operator): the change happens now
                self._add_live(entry.device, nbytes - entry.nbytes)
                entry.nbytes = nbytes
            return
        device = str(storage.device)
        ref: weakref.ref[Any] = weakref.ref(storage, functools.partial(self._on_free, key))
        preexisting = not as_output
        self._entries[key] = _Entry(ref, nbytes, device, preexisting)
        self._add_live(device, nbytes)
        if preexisting:
            self.preexisting_bytes += nbytes
            self.preexisting_by_device[device] = self.preexisting_by_device.get(device, 0) + nbytes
            self._backdate(device, nbytes)

    def _backdate(self, device: str, nbytes: int) -> None:
        """A storage alive since the start of the step was just discovered: every past moment had it too."""
        if self.num_ops > 0:
            self._peak_total += nbytes
            self._peak[device] = self._peak.get(device, 0) + nbytes

    def _record_peak(self) -> None:
        self._peak_total = max(self._peak_total, self._live_total)
        for dev, live in self._live.items():
            if live > self._peak.get(dev, 0):
                self._peak[dev] = live

    # -- dispatch ----------------------------------------------------------------------------
    def __torch_dispatch__(
        self,
        func: Any,
        types: Any,
        args: tuple[Any, ...] = (),
        kwargs: dict[str, Any] | None = None,
    ) -> Any:
        kwargs = kwargs or {}
        counter = flop_registry.get(func._overloadpacket) if self.count_flops else None
        if self.count_flops and counter is None and func is not torch.ops.prim.device.default:
            # As FlopCounterMode does: an operator without a FLOP formula is decomposed, if it can
            # be, so the operators it is made of are counted (and tracked) instead.
            with self:
                decomposed = func.decompose(*args, **kwargs)
            if decomposed is not NotImplemented:
                return decomposed
        out = func(*args, **kwargs)
        with self._lock:
            if not self._closed:
                if counter is not None:
                    n = int(counter(*args, **kwargs, out_val=out))
                    self.flops += n
                    name = str(func._overloadpacket)
                    self.flops_by_operator[name] = self.flops_by_operator.get(name, 0) + n
                if self.track_memory:
                    for leaf in tree_leaves((args, kwargs)):
                        if isinstance(leaf, torch.Tensor):
                            self._register(leaf, as_output=False)
                    for leaf in tree_leaves(out):
                        if isinstance(leaf, torch.Tensor):
                            self._register(leaf, as_output=True)
                    self.num_ops += 1
                    self._record_peak()
        return out

    def close(self) -> None:
        """Stop tracking: later frees are ignored and the weak references are dropped."""
        with self._lock:
            self._closed = True
            self._entries.clear()

    @property
    def peak_total(self) -> int:
        return self._peak_total

    @property
    def peak_by_device(self) -> dict[str, int]:
        return dict(self._peak)

    @property
    def live_total(self) -> int:
        return self._live_total


@contextmanager
def measure_step(*, count_flops: bool = True, track_memory: bool = True) -> Iterator[StepMeasurement]:
    """Measure the FLOPs and peak tensor memory of the code run inside the ``with`` block.

    Put it around one real training step (forward, loss, backward, optimiser step)::

        with measure_step() as m:
            loss = loss_fn(model(x), y)
            loss.backward()
            optimizer.step()
            optimizer.zero_grad()
        m.flops, m.peak_bytes

    The returned :class:`StepMeasurement` is filled when the block exits (also, marked
    ``complete=False``, when it raises). One dispatch mode counts FLOPs with the formulas of
    ``torch.utils.flop_counter`` (decomposing operators that have none, as ``FlopCounterMode``
    does) and tracks memory, so the memory tracker sees the operators that really run. Measuring
    slows the step down (a Python call per operator); measure once per distinct step shape and
    cache the result.

    Args:
        count_flops: count FLOPs with ``FlopCounterMode``.
        track_memory: track the peak of live tensor storages.
    """
    result = StepMeasurement()
    # One dispatch mode does both jobs: one Python call per operator, and no module hooks
    # (FlopCounterMode also tracks modules for a per-module breakdown we do not need).
    mode = _StorageTracker(count_flops=count_flops, track_memory=track_memory)
    # On CUDA the allocator's own peak is the figure (see StepMeasurement).
    cuda_before: dict[int, int] = {}
    if track_memory and torch.cuda.is_available() and torch.cuda.is_initialized():
        for index in range(torch.cuda.device_count()):
            cuda_before[index] = torch.cuda.memory_allocated(index)
            torch.cuda.reset_peak_memory_stats(index)
    ok = False
    try:
        with mode:
            yield result
        ok = True
    finally:
        if count_flops:
            result.flops = mode.flops
            result.flops_by_operator = dict(mode.flops_by_operator)
        if track_memory:
            result.peak_bytes = mode.peak_total
            result.peak_bytes_by_device = mode.peak_by_device
            result.preexisting_bytes = mode.preexisting_bytes
            result.live_bytes_at_exit = mode.live_total
            result.num_ops = mode.num_ops
            _allocator_peaks(result, mode, cuda_before)
        mode.close()
        result.complete = ok


def _allocator_peaks(result: StepMeasurement, mode: _StorageTracker, before: dict[int, int]) -> None:
    """Put the CUDA allocator's peak of each CUDA device the step used into ``result``."""
    for index, allocated in before.items():
        device = f"cuda:{index}"
        tracked = mode.peak_by_device.get(device)
        if tracked is None:
            continue
        peak = torch.cuda.max_memory_allocated(index) - allocated + mode.preexisting_by_device.get(device, 0)
        result.allocator_peak_bytes_by_device[device] = int(peak)
        result.peak_bytes += int(peak) - tracked


def peak_rss_bytes() -> int:
    """Peak resident set size of this process so far, in bytes (``getrusage`` ``ru_maxrss``).

    ``ru_maxrss`` is in kilobytes on Linux and in bytes on macOS; both are converted to bytes.
    """
    maxrss = int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
    return maxrss if sys.platform == "darwin" else maxrss * 1024


def current_rss_bytes() -> int:
    """Current resident set size of this process in bytes.

    Read from ``/proc/self/statm`` (resident pages × page size) on Linux; where that file does not
    exist (macOS) it falls back to :func:`peak_rss_bytes`, an upper bound.
    """
    try:
        with open("/proc/self/statm", encoding="ascii") as fh:
            fields = fh.read().split()
        return int(fields[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, IndexError, ValueError):
        return peak_rss_bytes()
