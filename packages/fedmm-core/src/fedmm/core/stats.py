"""Seeds and confidence intervals: what every multi-seed figure in fedmm is made of.

* :func:`parse_seeds` reads ``"0,1,2"``, ``"0-4"`` or a mix (``"0-2,7"``) with one clear error for
  anything else (the ``--seeds`` of ``fedmm bench`` and ``fedmm run``).
* :func:`ci95` is the half-width of a two-sided 95 % Student-t interval for the mean of
  independent per-seed values: ``t(0.975, n-1) * s / sqrt(n)`` with ``s`` the sample standard
  deviation. With one seed there is no interval: ``None``.
* :func:`summarize_seeds` turns per-seed records into ``K`` (mean), ``K_ci95`` and ``K_per_seed``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from fedmm.core.errors import ConfigError

MAX_SEEDS = 1000


def parse_seeds(text: str | Sequence[int]) -> tuple[int, ...]:
    """``"0,1,2"`` / ``"0-4"`` / ``"0-2,7"`` (or a sequence of ints) → sorted distinct seeds.

    Raises :class:`ConfigError` naming the bad part: an empty list, a non-integer, a negative
    seed, a descending range (``5-2``), a repeated seed, or more than ``MAX_SEEDS`` seeds.
    """
    if not isinstance(text, str):
        parts = [str(int(s)) for s in text]
        text = ",".join(parts)
    raw = text.strip()
    if not raw:
        raise ConfigError("--seeds is empty: give seeds like 0,1,2 or a range like 0-4")
    seeds: list[int] = []
    for part in raw.split(","):
        part = part.strip()
        if not part:
            raise ConfigError(f"--seeds {raw!r}: an empty item between commas; write e.g. 0,1,2")
        lo_text, dash, hi_text = part.partition("-")
        try:
            if dash and not lo_text:
                raise ValueError
            lo = int(lo_text)
            hi = int(hi_text) if dash else lo
        except ValueError:
            raise ConfigError(
                f"--seeds {raw!r}: {part!r} is not a seed (a whole number >= 0) or a range like 0-4"
            ) from None
        if lo < 0 or hi < 0:
            raise ConfigError(f"--seeds {raw!r}: seeds must be >= 0 (got {part!r})")
        if hi < lo:
            raise ConfigError(f"--seeds {raw!r}: the range {part!r} runs backwards; write {hi}-{lo}")
        if hi - lo + 1 + len(seeds) > MAX_SEEDS:
            raise ConfigError(f"--seeds {raw!r}: more than {MAX_SEEDS} seeds")
        seeds.extend(range(lo, hi + 1))
    repeated = sorted({s for s in seeds if seeds.count(s) > 1})
    if repeated:
        raise ConfigError(f"--seeds {raw!r}: seed(s) {repeated} given twice")
    return tuple(sorted(seeds))


def ci95(values: Sequence[float]) -> float | None:
    """Half-width of the 95 % t-interval of the mean of ``values`` (None for fewer than 2 or a
    non-finite value)."""
    n = len(values)
    if n < 2 or not all(math.isfinite(float(v)) for v in values):
        return None
    if all(float(v) == float(values[0]) for v in values):
        return 0.0  # exactly constant: no rounding noise from the variance sum
    from scipy import stats

    mean = sum(float(v) for v in values) / n
    var = sum((float(v) - mean) ** 2 for v in values) / (n - 1)
    return float(stats.t.ppf(0.975, n - 1) * math.sqrt(var / n))


def mean(values: Sequence[float]) -> float:
    return float(sum(float(v) for v in values) / len(values)) if values else float("nan")


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def summarize_seeds(records: Sequence[Mapping[str, Any]], seeds: Sequence[int]) -> dict[str, Any]:
    """Per-seed records (one dict per seed, same keys) → one record.

    A key ``K`` that is a number in every record becomes ``K`` = mean, ``K_ci95`` and
    ``K_per_seed``; a boolean becomes the fraction of seeds where it held (``K``) and
    ``K_per_seed``; any other value is kept once if every seed gave the same, else as
    ``K_per_seed``. ``seeds`` lists the seeds.
    """
    if len(records) != len(seeds):
        raise ValueError("one record per seed")
    out: dict[str, Any] = {"seeds": list(seeds)}
    keys: list[str] = []
    for r in records:
        keys.extend(k for k in r if k not in keys)
    for key in keys:
        values = [r.get(key) for r in records]
        if all(_is_number(v) for v in values):
            nums = [float(v) for v in values]  # type: ignore[arg-type]
            out[key] = mean(nums)
            out[f"{key}_ci95"] = ci95(nums)
            out[f"{key}_per_seed"] = nums
        elif all(isinstance(v, bool) for v in values):
            out[key] = mean([float(bool(v)) for v in values])
            out[f"{key}_per_seed"] = values
        elif all(v == values[0] for v in values):
            out[key] = values[0]
        else:
            out[f"{key}_per_seed"] = values
    return out


__all__ = ["ci95", "mean", "parse_seeds", "summarize_seeds"]
