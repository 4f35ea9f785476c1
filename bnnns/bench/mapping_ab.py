"""Mapping-network A/B: the isolated mapping function with each implementation, interleaved.

Per model, on random kernels of its LNS layers' shapes, the reference network (before issue
11), the plain conv, the valid-taps conv and ``auto`` (the default) run the same forward +
backward (:func:`bnnns.bench.mapping_fn.mapping_grad_fn`) on the same theta; prints one
``mapping_ab`` line per variant, a ``mapping_ab_summary`` and the 1.5x ``target``
(``python -m bnnns.bench --mapping-ab``).
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import os
import statistics
import time
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import traverse_util

from bnnns.bench.cases import LR, Case, binary_options, build, defaults
from bnnns.bench.mapping_fn import analytic_mapping_flops, cotangents, mapping_grad_fn
from bnnns.bench.process import emit
from bnnns.bench.timing import median_stats, run_synced, time_interleaved, xla_flops, xla_memory
from bnnns.core.mapping import drop_prenorm_biases, make_mapping_net
from bnnns.train.stage_init import fresh_state

__all__ = ["AB_VARIANTS", "lns_kernels", "run_mapping_ab"]

# Names of bnnns.core.mapping.MAPPING_IMPLS; "reference" first: the others are timed against it.
AB_VARIANTS = ("reference", "conv", "valid_taps", "auto")


def _ab_net(variant: str, residual: bool) -> nn.Module:
    """The mapping network of ``variant`` (default compute dtype: the kernel's)."""
    return make_mapping_net(variant, residual=residual)


def lns_kernels(case: Case, seed: int = 0) -> dict[str, jax.Array]:
    """Random latent kernels ``W`` of the LNS layers of ``case``'s model, by layer name.

    The shapes come from ``jax.eval_shape`` of its init: nothing of the model is computed.
    """
    model, shape, _ = build(dataclasses.replace(case, binarizer="lns"))
    tx = optax.sgd(LR)
    abstract = jax.eval_shape(
        functools.partial(fresh_state, model, tx), jax.random.key(0), jnp.zeros((1, *shape))
    )
    flat = traverse_util.flatten_dict(abstract.params)
    prefixes = sorted({k[: k.index("mapping")] for k in flat if "mapping" in k})
    rng = np.random.default_rng(seed)
    kernels = {}
    for p in prefixes:
        s = flat[p + ("kernel",)].shape
        fan_in = int(np.prod(s[:-1]))
        kernels["/".join(p)] = jnp.asarray(rng.standard_normal(s, np.float32) / fan_in**0.5)
    return kernels


def _random_theta(net: nn.Module, kernel: jax.Array, rng: np.random.Generator) -> Any:
    """Parameters of ``net`` for ``kernel`` without running it: lecun-normal conv kernels,
    unit norm scales, small random biases (values do not change the cost)."""
    abstract = jax.eval_shape(net.init, jax.random.key(0), kernel)["params"]

    def fill(path: tuple[Any, ...], x: Any) -> jax.Array:
        name = path[-1].key
        if name == "kernel":
            std = 1.0 / float(np.prod(x.shape[:-1])) ** 0.5
            return jnp.asarray(std * rng.standard_normal(x.shape, np.float32))
        if name == "scale":
            return jnp.ones(x.shape, x.dtype)
        return jnp.asarray(0.1 * rng.standard_normal(x.shape, np.float32))

    return jax.tree_util.tree_map_with_path(fill, abstract)


def _worst_dw_diff(grads: dict[str, Any], reference: dict[str, Any]) -> dict[str, float]:
    """dL/dW against the reference, worst layer: relative L2 and max |diff| / max |g|.

    Both are float32 rounding (~1e-6) except where a ReLU input within rounding of 0 changes
    side: then one filter's gradient differs by that unit's contribution.
    """
    diff = [(grads[n] - g, g) for n, g in reference.items()]
    return {
        "rel_l2_dW_vs_reference": max(
            float(jnp.linalg.norm(d) / (jnp.linalg.norm(g) + 1e-30)) for d, g in diff
        ),
        "max_rel_diff_dW_vs_reference": max(
            float(jnp.max(jnp.abs(d)) / (jnp.max(jnp.abs(g)) + 1e-30)) for d, g in diff
        ),
    }


def run_mapping_ab(args: argparse.Namespace) -> int:
    """Per model in ``args.models``: every variant of :data:`AB_VARIANTS` compiled in this
    process and timed in interleaved rounds; then their ratios and the 1.5x target.

    Returns:
        The exit status (0).
    """
    for model in args.models.split(","):
        batch, image, width = defaults(model, "quick" if args.quick else "full")
        case = Case(model, "lns", batch, args.image or image, args.width or width)
        opts = binary_options(model, "lns")
        kernels = lns_kernels(case)
        rng = np.random.default_rng(2)
        ref = _ab_net("reference", opts.residual_mapping)
        theta_ref = {n: _random_theta(ref, k, rng) for n, k in kernels.items()}
        theta_new = drop_prenorm_biases({n: {"mapping": t} for n, t in theta_ref.items()})
        theta_new = {n: t["mapping"] for n, t in theta_new.items()}
        cot = cotangents(kernels)
        load_before = os.getloadavg()
        runs, grads = {}, {}
        for v in AB_VARIANTS:
            fn = mapping_grad_fn(_ab_net(v, opts.residual_mapping), opts)
            a = (theta_ref if v == "reference" else theta_new, kernels, cot)
            t0 = time.perf_counter()
            compiled = fn.lower(*a).compile()
            compile_s = time.perf_counter() - t0
            grads[v] = jax.block_until_ready(compiled(*a))[1]  # d/dW: the same in every variant
            runs[v] = (compiled, a, compile_s)
        steps = [functools.partial(run_synced, c, a) for c, a, _ in runs.values()]
        times = dict(zip(runs, time_interleaved(steps, args.warmup, args.steps), strict=True))
        load_after = os.getloadavg()
        shapes = [k.shape for k in kernels.values()]
        for v, (compiled, _, compile_s) in runs.items():
            line = {"kind": "mapping_ab", "model": model, "variant": v, "width": case.width}
            line.update(median_stats(times[v], 1), compile_s=compile_s, n_layers=len(shapes))
            line.pop("img_per_s")
            line["xla_flops"] = xla_flops(compiled)
            line.update(xla_memory(compiled, "xla_"))
            line.update(_worst_dw_diff(grads[v], grads["reference"]))
            emit(line, args.out)
        summary = {"kind": "mapping_ab_summary", "model": model, "rounds": args.steps}
        summary.update(analytic_mapping_flops(shapes))
        for v in AB_VARIANTS[1:]:
            ratios = [r / x for r, x in zip(times["reference"], times[v], strict=True)]
            summary[f"speedup_{v}_median"] = statistics.median(ratios)
            summary[f"speedup_{v}_min"] = min(ratios)
            summary[f"speedup_{v}_max"] = max(ratios)
        summary.update(loadavg_before=load_before, loadavg_after=load_after, cpus=os.cpu_count())
        emit(summary, args.out)
        value = summary["speedup_auto_median"]  # the default
        target = {"kind": "target", "name": f"{model}_mapping_fwd_bwd_speedup", "value": value}
        emit({**target, "target": 1.5, "met": value >= 1.5}, args.out)
    return 0
