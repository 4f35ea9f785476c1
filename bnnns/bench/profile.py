"""``python -m bnnns.bench --profile MODEL:BIN``: where a train step's time goes, per XLA op.

Runs the case's compiled train step under :func:`jax.profiler.trace` (with a Perfetto trace),
reads the trace's complete events back, keeps those named like an instruction of the compiled
HLO module's entry computation (on CPU: one thunk per fusion, convolution, custom call ...),
and prints one ``profile_op`` line per op, sorted by time per step, plus one ``profile`` line
with the step's wall time, the share the listed ops cover, and the time per op *category*:
``conv`` (a convolution instruction or a fusion that holds one), ``dot``, ``custom-call``,
``fusion`` (elementwise/reduce fusions), ``copy/transpose`` and ``other``. Counts are thunk
executions, so a layer's forward, input-gradient and weight-gradient convolutions are separate
rows (their HLO names say which: ``convolution`` vs ``ynn_fusion``/``xnn_fusion`` ...).
"""

from __future__ import annotations

import collections
import glob
import gzip
import json
import os
import re
import tempfile
import time
from typing import Any

import jax

from bnnns.bench.cases import Case

__all__ = ["hlo_op_kinds", "op_times", "profile_case"]

_INSTR = re.compile(r"^\s*(?:ROOT\s+)?%?([\w.\-]+)\s*=\s*[^=]*?\s([a-z][\w\-]*)\(")
_CALLS = re.compile(r"calls=%?([\w.\-]+)")


def hlo_op_kinds(hlo_text: str) -> dict[str, str]:
    """Category of every instruction of the entry computation in ``hlo_text`` (by name)."""
    comps: dict[str, list[str]] = {}
    entry, current = None, None
    for line in hlo_text.splitlines():
        head = re.match(r"^(ENTRY\s+)?%?([\w.\-]+)\s.*\{\s*$", line)
        if head and not line.startswith(" "):
            current = head.group(2)
            comps[current] = []
            if head.group(1):
                entry = current
        elif current is not None:
            comps[current].append(line)

    def holds(comp: str, opcode: str, seen: frozenset = frozenset()) -> bool:
        for line in comps.get(comp, []):
            m = _INSTR.match(line)
            if m and m.group(2) == opcode:
                return True
            called = _CALLS.search(line)
            if (
                called
                and called.group(1) not in seen
                and holds(called.group(1), opcode, seen | {comp})
            ):
                return True
        return False

    kinds: dict[str, str] = {}
    for line in comps.get(entry, []):
        m = _INSTR.match(line)
        if not m:
            continue
        name, opcode = m.groups()
        called = _CALLS.search(line)
        if opcode == "convolution" or (called and holds(called.group(1), "convolution")):
            kinds[name] = "conv"
        elif opcode == "dot" or (called and holds(called.group(1), "dot")):
            kinds[name] = "dot"
        elif opcode == "custom-call":
            kinds[name] = "custom-call"
        elif opcode == "fusion":
            kinds[name] = "copy/transpose" if ("copy" in name or "transpose" in name) else "fusion"
        elif opcode in ("copy", "transpose"):
            kinds[name] = "copy/transpose"
        else:
            kinds[name] = "other"
    return kinds


def op_times(trace_dir: str, names: set[str]) -> dict[str, tuple[int, float]]:
    """``{op: (executions, total seconds)}`` of the trace's complete events named in ``names``."""
    paths = glob.glob(os.path.join(trace_dir, "**", "perfetto_trace.json.gz"), recursive=True)
    if not paths:
        raise RuntimeError(f"no perfetto_trace.json.gz under {trace_dir}: the profiler wrote none")
    with gzip.open(sorted(paths)[-1]) as f:
        data = json.load(f)
    events = data["traceEvents"] if isinstance(data, dict) else data
    out: dict[str, list[float]] = collections.defaultdict(lambda: [0, 0.0])
    for e in events:
        if e.get("ph") == "X" and e.get("name") in names:
            out[e["name"]][0] += 1
            out[e["name"]][1] += float(e.get("dur", 0.0)) * 1e-6
    return {k: (int(n), s) for k, (n, s) in out.items()}


def profile_case(case: Case, warmup: int, steps: int, top: int = 25) -> list[dict[str, Any]]:
    """Profile ``steps`` train steps of ``case`` after ``warmup``: the ``top`` ops' ``profile_op``
    lines, then one ``profile`` line (seconds per step; ``ops_s`` sums every op's time, which
    can exceed ``step_s``: the CPU runtime executes independent thunks concurrently)."""
    from bnnns.bench.step import prepare  # the benchmark's own compiled, donating step

    step, info, state_ref = prepare(case)
    for _ in range(warmup):
        step()
    kinds = hlo_op_kinds(step.compiled.as_text())
    with tempfile.TemporaryDirectory() as tmp:
        with jax.profiler.trace(tmp, create_perfetto_trace=True):
            t0 = time.perf_counter()
            for _ in range(steps):
                step()
            wall = (time.perf_counter() - t0) / steps
        times = op_times(tmp, set(kinds))
    rows = sorted(times.items(), key=lambda kv: -kv[1][1])
    lines: list[dict[str, Any]] = []
    per_kind: dict[str, float] = collections.defaultdict(float)
    for name, (n, total) in rows:
        per_kind[kinds[name]] += total / steps
        if len(lines) >= top:
            continue
        lines.append(
            {
                "kind": "profile_op",
                "case": case.name,
                "op": name,
                "category": kinds[name],
                "calls_per_step": n / steps,
                "s_per_step": total / steps,
                "share": total / steps / wall,
            }
        )
    covered = sum(per_kind.values())
    lines.append(
        {
            "kind": "profile",
            "case": case.name,
            "batch": case.batch,
            "image": case.image,
            "width": case.width,
            "steps": steps,
            "step_s": wall,
            "ops_s": covered,
            "ops_share": covered / wall,
            "n_ops": len(rows),
            "per_category_s": dict(sorted(per_kind.items(), key=lambda kv: -kv[1])),
            "xla_flops": info["xla_flops"],
            "device": jax.devices()[0].device_kind,
            "jax": jax.__version__,
        }
    )
    return lines
