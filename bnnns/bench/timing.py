"""Timing and memory helpers shared by the benchmarks.

Interleaved timing of several steps, synchronised calls, median statistics, the process's peak
RSS and device memory, and XLA's memory and FLOP figures of a compiled executable.
"""

from __future__ import annotations

import resource
import statistics
import time
from collections.abc import Callable, Sequence
from typing import Any

import jax

__all__ = [
    "MIB",
    "time_interleaved",
    "run_synced",
    "median_stats",
    "peak_rss_mib",
    "device_peak_mib",
    "xla_memory",
    "xla_flops",
    "leaves_size",
]

MIB = 1024.0 * 1024.0


def time_interleaved(
    steps: Sequence[Callable[[], float]], warmup: int, n: int
) -> list[list[float]]:
    """Run ``warmup + n`` rounds; in each, every step once.

    The order is reversed every other round, so a pair A/B sees the machine's drift equally.

    Returns:
        The ``n`` timed seconds of each step.
    """
    times: list[list[float]] = [[] for _ in steps]
    for i in range(warmup + n):
        order = range(len(steps)) if i % 2 == 0 else reversed(range(len(steps)))
        for j in order:
            t0 = time.perf_counter()
            steps[j]()
            if i >= warmup:
                times[j].append(time.perf_counter() - t0)
    return times


def run_synced(compiled: Any, args: tuple[Any, ...]) -> float:
    """Call ``compiled(*args)`` and wait for its outputs; returns 0.0 (a step for timing)."""
    out = compiled(*args)
    jax.block_until_ready(out)
    return 0.0


def median_stats(times: list[float], batch: int) -> dict[str, Any]:
    """Median, min and max seconds per step of ``times``, and images/s at the median."""
    med = statistics.median(times)
    return {
        "n_timed": len(times),
        "step_s_median": med,
        "step_s_min": min(times),
        "step_s_max": max(times),
        "img_per_s": batch / med,
    }


def peak_rss_mib() -> float:
    """This process's peak resident set size so far (``getrusage``; Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def device_peak_mib() -> float | None:
    """The accelerator's peak bytes in use by this process so far (``memory_stats``), MiB.

    ``None`` where the backend keeps no such count (CPU).
    """
    try:
        stats = jax.local_devices()[0].memory_stats()
    except Exception:  # not every backend implements it
        return None
    return stats["peak_bytes_in_use"] / MIB if stats and "peak_bytes_in_use" in stats else None


def xla_memory(compiled: Any, prefix: str) -> dict[str, float]:
    """XLA's buffer sizes of a compiled executable (MiB), keys prefixed with ``prefix``.

    Arguments, outputs, temporaries, aliased (donated) bytes, and their total
    ``peak`` = argument + output + temp - alias; empty where the backend has no analysis.
    """
    try:
        m = compiled.memory_analysis()
    except Exception:  # not every backend implements it
        return {}
    if m is None:
        return {}
    arg, out, temp, alias = (
        m.argument_size_in_bytes,
        m.output_size_in_bytes,
        m.temp_size_in_bytes,
        m.alias_size_in_bytes,
    )
    peak = arg + out + temp - alias
    return {
        f"{prefix}argument_mib": arg / MIB,
        f"{prefix}output_mib": out / MIB,
        f"{prefix}temp_mib": temp / MIB,
        f"{prefix}alias_mib": alias / MIB,
        f"{prefix}peak_mib": peak / MIB,
    }


def xla_flops(compiled: Any) -> float:
    """XLA's cost-analysis FLOPs of a compiled executable (NaN where unavailable)."""
    try:
        cost = compiled.cost_analysis()
        cost = cost[0] if isinstance(cost, list | tuple) else cost
        return float(cost.get("flops", float("nan")))
    except Exception:  # not every backend implements it
        return float("nan")


def leaves_size(tree: Any) -> int:
    """Number of elements in all leaves of ``tree``."""
    return int(sum(x.size for x in jax.tree_util.tree_leaves(tree)))
