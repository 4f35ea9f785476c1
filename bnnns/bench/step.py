"""The train-step benchmark: step time, compile time, memory and the LNS overhead per case.

:func:`prepare` compiles one case's jitted, donating train step; :func:`run_cases` times cases
in this process (``--one A,B``: interleaved, with a ``pair`` line); :func:`run_models` runs each
(model, binarizer) in a fresh process and prints one ``summary`` line per model.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import statistics
import time
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import traverse_util

from bnnns.bench.cases import LNS_ALPHA, LNS_BINARIZERS, LR, MOMENTUM, Case, build, defaults
from bnnns.bench.mapping_fn import analytic_mapping_flops, mapping_step
from bnnns.bench.process import child_cmd, emit, run
from bnnns.bench.timing import (
    device_peak_mib,
    leaves_size,
    median_stats,
    peak_rss_mib,
    run_synced,
    time_interleaved,
    xla_flops,
    xla_memory,
)
from bnnns.train.stage_init import fresh_state
from bnnns.train.steps import train_step

__all__ = ["INIT_COMPILER_OPTIONS", "prepare", "run_cases", "run_models", "summary"]

INIT_COMPILER_OPTIONS = {"xla_backend_optimization_level": 0}


def prepare(case: Case) -> tuple[Callable[[], float], dict[str, Any], list[Any]]:
    """Compile the jitted, donating train step of ``case`` on a fixed random batch.

    Returns:
        ``(step, info, state_ref)``: ``step()`` runs one step and returns the loss as a host
        float (this syncs); ``info`` the compile-time figures; ``state_ref[0]`` is the current
        :class:`TrainState`.
    """
    model, shape, classes = build(case)
    tx = optax.sgd(LR, momentum=MOMENTUM)
    rng = np.random.default_rng(0)
    batch = {
        "image": jnp.asarray(rng.standard_normal((case.batch, *shape), dtype=np.float32)),
        "label": jnp.asarray(rng.integers(0, classes, size=(case.batch,)), jnp.int32),
        "mask": jnp.ones((case.batch,), jnp.float32),
    }
    alpha = LNS_ALPHA if case.binarizer in LNS_BINARIZERS else 0.0
    init = jax.jit(functools.partial(fresh_state, model, tx))
    init_args = (jax.random.key(0), batch["image"][:1])
    # Runs once: compile it fast (XLA -O0 takes ~2 s instead of ~10 s for resnet20).
    state = init.lower(*init_args).compile(INIT_COMPILER_OPTIONS)(*init_args)
    step_fn = jax.jit(
        functools.partial(train_step, model=model, tx=tx, alpha=alpha), donate_argnums=(0,)
    )
    t0 = time.perf_counter()
    compiled = step_fn.lower(state, batch).compile()
    compile_s = time.perf_counter() - t0
    params = traverse_util.flatten_dict(state.params)
    info: dict[str, Any] = {
        "n_params": leaves_size(state.params),
        "n_mapping_params": int(sum(v.size for k, v in params.items() if "mapping" in k)),
        "compile_s": compile_s,
        "xla_flops": xla_flops(compiled),
        **xla_memory(compiled, "xla_"),
    }
    state_ref = [state]

    def step() -> float:
        state_ref[0], metrics = compiled(state_ref[0], batch)
        return float(metrics["loss"])

    step.compiled = compiled  # type: ignore[attr-defined]  # for bnnns.bench.profile
    t0 = time.perf_counter()
    info["loss_first"] = step()
    info["first_step_s"] = time.perf_counter() - t0
    return step, info, state_ref


def _add_mapping_figures(res: dict[str, Any], case: Case, params: Any, steps: int) -> None:
    """Add the isolated mapping function's time, FLOPs and memory, and their shares of the
    step's, to the ``step`` result ``res`` (nothing for a model without mapping networks)."""
    mapping = mapping_step(case, params)
    if mapping is None:
        return
    fn, args = mapping
    t0 = time.perf_counter()
    compiled = fn.lower(*args).compile()
    res["mapping_compile_s"] = time.perf_counter() - t0
    sync = functools.partial(run_synced, compiled, args)
    (mt,) = time_interleaved([sync], 1, max(3, steps // 4))
    res["mapping_s_median"] = statistics.median(mt)
    res["mapping_share"] = res["mapping_s_median"] / res["step_s_median"]
    res["mapping_xla_flops"] = xla_flops(compiled)
    res["mapping_flops_share"] = res["mapping_xla_flops"] / res["xla_flops"]
    res.update(xla_memory(compiled, "mapping_xla_"))
    res.update(analytic_mapping_flops([k.shape for k in args[1].values()]))
    res["n_mapping_layers"] = len(args[1])


def run_cases(cases: Sequence[Case], warmup: int, steps: int) -> list[dict[str, Any]]:
    """Time ``cases`` in this process (interleaved if several).

    Returns:
        One ``step`` dict per case, plus a ``pair`` dict per case after the first (per-round
        ratios of its step time to the first case's).
    """
    prepared = [prepare(c) for c in cases]
    times = time_interleaved([p[0] for p in prepared], warmup, steps)
    results = []
    for case, (step, info, state_ref), t in zip(cases, prepared, times, strict=True):
        res: dict[str, Any] = {"kind": "step", **dataclasses.asdict(case), "warmup": warmup}
        res.update(info, **median_stats(t, case.batch), loss_last=step())
        res["xla_gflop_per_s"] = info["xla_flops"] / res["step_s_median"] / 1e9
        _add_mapping_figures(res, case, state_ref[0].params, steps)
        res["paired"] = len(cases) > 1
        res["peak_rss_mib"] = peak_rss_mib()
        res["device_peak_mib"] = device_peak_mib()
        res["device"] = jax.devices()[0].device_kind
        res["jax"] = jax.__version__
        results.append(res)
    for j in range(1, len(cases)):  # each case against the first, round by round
        ratios = [b / a for a, b in zip(times[0], times[j], strict=True)]
        results.append(
            {
                "kind": "pair",
                "first": cases[0].name,
                "second": cases[j].name,
                "batch": cases[0].batch,
                "pairs": steps,
                "ratio_median": statistics.median(ratios),
                "ratio_min": min(ratios),
                "ratio_max": max(ratios),
                "ratio_of_medians": statistics.median(times[j]) / statistics.median(times[0]),
            }
        )
    return results


def run_models(args: argparse.Namespace) -> int:
    """Each (model, binarizer) in a fresh process; then one ``summary`` line per model.

    Returns:
        The exit status: 1 if any case failed.
    """
    failed = 0
    for model in args.models.split(","):
        batch, image, width = defaults(model, "quick" if args.quick else "full")
        batch, image, width = args.batch or batch, args.image or image, args.width or width
        by_bin: dict[str, dict[str, Any]] = {}
        for binarizer in args.binarizers.split(","):
            case = Case(model, binarizer, batch, image, width)
            rc, lines, err, wall = run(child_cmd([case], args.warmup, args.steps), 3600)
            for obj in lines:
                emit(obj, args.out)
                if obj.get("kind") == "step":
                    by_bin[binarizer] = obj
            if rc != 0 or binarizer not in by_bin:
                failed += 1
                emit({"kind": "error", "case": case.name, "rc": rc, "stderr": err}, args.out)
        emit(summary(model, by_bin), args.out)
    return 1 if failed else 0


def summary(model: str, r: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The ``summary`` line of ``model`` from its ``step`` results by binarizer."""
    s: dict[str, Any] = {"kind": "summary", "model": model}
    for b, res in r.items():
        s[f"{b}_step_s"] = res["step_s_median"]
        s[f"{b}_peak_rss_mib"] = res["peak_rss_mib"]
        s[f"{b}_xla_peak_mib"] = res.get("xla_peak_mib")
    if "sign" in r and "float" in r:
        s["sign_over_float"] = r["sign"]["step_s_median"] / r["float"]["step_s_median"]
    if "sign" in r and "lns" in r:
        sign_s, lns_s = r["sign"]["step_s_median"], r["lns"]["step_s_median"]
        s["lns_over_sign"] = lns_s / sign_s
        s["lns_minus_sign_s"] = lns_s - sign_s
        s["mapping_share_diff"] = (lns_s - sign_s) / lns_s
    if "lns" in r and "mapping_share" in r["lns"]:
        s["mapping_share_isolated"] = r["lns"]["mapping_share"]
    return s
