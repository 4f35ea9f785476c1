"""Deployment benchmark: artifact size vs float checkpoint, ``predict`` vs the float eval step.

    python -m bnnns.bench --deploy [--quick] [--out FILE]

Cases (:data:`CASES`, from a random init): ``resnet20`` (width 16, CIFAR 32x32x3) and the
default MNIST model (``cnn`` width 16, 28x28x1) at batch 1 and 128, ``birealnet18`` at 224x224x3
(width 64, batch 1 and 16; ``--quick``: batch 1 only). Per case:

- ``float_params_bytes``: float32 parameters + BatchNorm statistics of the sign model (a float
  checkpoint without optimizer state); ``artifact_bytes``: the ``.bnn`` file
  (:mod:`bnnns.deploy.export`); ``float_over_artifact``;
- images/s, timed interleaved in one loop (:func:`bnnns.bench.timing.time_interleaved`, the
  order reversed every other round, median of the rounds) of: ``predict_xnor``
  (:func:`bnnns.deploy.inference.predict` with XNOR-popcount on packed bits, the native kernel),
  ``predict_int8`` (the ``int8`` reference path; resnet20 and cnn only), ``eval_float`` (the
  jitted eval forward of the sign model, :func:`bnnns.train.steps.eval_step`: float arithmetic
  on ``±1`` values, the "float model" of the issue) and ``eval_real`` (the same network with
  real weights and real activations, ``weight_binarizer="real"``, ``activation="none"``);
  ``xnor_over_eval_float`` etc. are ratios of those medians;
- ``binary_share``: the share of ``predict_xnor``'s time spent in its binary layers: every
  binary layer's XNOR-popcount conv on an input of its shape (recorded with
  ``flax.linen.intercept_methods``), timed in one jitted program interleaved with the others,
  over the predict time; the rest (stem, head, BatchNorm, shortcuts, adds, pooling) is real.

Measured, never asserted: one JSON object per line (``kind: "deploy"``).
"""

from __future__ import annotations

import dataclasses
import functools
import statistics
from collections.abc import Callable, Iterator
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

__all__ = ["CASES", "iter_rows", "deploy_rows", "run_deploy"]

# name, model kwargs, image shape, batches, quick batches, binary options
CASES = (
    ("resnet20", {"width": 16}, (32, 32, 3), (1, 128), (1, 128), {}),
    ("cnn", {"width": 16}, (28, 28, 1), (1, 128), (1, 128), {}),
    (
        "birealnet18",
        {"width": 64},
        (224, 224, 3),
        (1, 16),
        (1,),
        {"activation": "approx_sign", "weight_scale": "channel", "weight_ste": "clipped"},
    ),
)


def _tree_bytes(tree: Any) -> int:
    return int(sum(np.asarray(x).nbytes for x in jax.tree_util.tree_leaves(tree)))


def _binary_layer_inputs(model: nn.Module, variables: dict, x: jax.Array) -> list[tuple]:
    """``(input shape, kernel shape, strides, padding)`` of every binary conv/dense call."""
    from bnnns.nn.layers import BinaryConv, BinaryDense

    calls = []

    def record(next_fun, args, kwargs, context):
        module = context.module
        if context.method_name == "__call__" and isinstance(module, BinaryConv | BinaryDense):
            xin = args[0]
            if isinstance(module, BinaryConv) and module.feature_group_count == 1:
                kh, kw = module.kernel_size
                shape = (kh, kw, xin.shape[-1], module.features)
                calls.append((xin.shape, shape, tuple(module.strides), module.padding))
            elif isinstance(module, BinaryDense):
                calls.append(
                    (
                        (xin.shape[0], 1, 1, xin.shape[-1]),
                        (1, 1, xin.shape[-1], module.features),
                        (1, 1),
                        "VALID",
                    )
                )
        return next_fun(*args, **kwargs)

    with nn.intercept_methods(record):
        jax.eval_shape(lambda v, x: model.apply(v, x, train=False), variables, x)
    return calls


def _binary_layers_fn(calls: list[tuple]) -> Callable[[], Any]:
    """A jitted program of every recorded binary layer's XNOR-popcount conv, and its inputs."""
    from bnnns.core.xnor_conv import pack_window_weights, xnor_conv

    keys = jax.random.split(jax.random.key(3), 2 * max(len(calls), 1))
    xs = [jax.random.normal(keys[2 * i], c[0]) for i, c in enumerate(calls)]
    qs = [
        jnp.where(jax.random.normal(keys[2 * i + 1], c[1]) >= 0, 1, -1).astype(jnp.int8)
        for i, c in enumerate(calls)
    ]
    packed = [pack_window_weights(q) for q in qs]  # once, as predict's variables hold them
    meta = [(c[2], c[3]) for c in calls]

    @jax.jit
    def run(xs, qs, packed):
        return [
            xnor_conv(x, q, s, p, w) for x, q, w, (s, p) in zip(xs, qs, packed, meta, strict=True)
        ]

    return lambda: run(xs, qs, packed)


def _case(name, kwargs, shape, batch, options, rounds) -> dict[str, Any]:
    from bnnns.bench.timing import time_interleaved
    from bnnns.deploy import artifact, export, inference
    from bnnns.nn.layers import drop_sown
    from bnnns.nn.models import BinaryOptions, create_model
    from bnnns.train.steps import TrainState, eval_step

    images = jax.random.normal(jax.random.key(0), (batch, *shape))
    data = {
        "image": images,
        "label": jnp.zeros((batch,), jnp.int32),
        "mask": jnp.ones((batch,), jnp.float32),
    }
    row: dict[str, Any] = {"kind": "deploy", "model": name, "batch": batch, **kwargs}
    steps: dict[str, Callable[[], Any]] = {}
    sign_opts = BinaryOptions(weight_binarizer="sign", **options)
    real_opts = dataclasses.replace(sign_opts, weight_binarizer="real", activation="none")
    for key, opts in (("float", sign_opts), ("real", real_opts)):
        model = create_model(name, num_classes=10, binary=opts, **kwargs)
        init = jax.jit(lambda k, m=model, x=images[:1]: m.init(k, x, train=False))
        variables = drop_sown(init(jax.random.key(1)))
        params = variables.pop("params")
        state = TrainState(jnp.zeros((), jnp.int32), params, dict(variables), ())
        step = jax.jit(functools.partial(eval_step, model=model))
        steps[f"eval_{key}"] = lambda s=step, st=state: s(st, data)
        if key == "float":
            sign_model, sign_vars = model, {"params": params, **variables}
            row["float_params_bytes"] = _tree_bytes(params) + _tree_bytes(variables)
    deployable = export.deployable_variables(
        sign_model, sign_vars, images[:1], sign_opts.weight_scale
    )
    header = {
        "model": {"name": name, "kwargs": kwargs, "dtype": "float32", "num_classes": 10},
        "binary": {
            "weight_scale": sign_opts.weight_scale,
            "activation": sign_opts.activation,
            "act_clip": 1.0,
        },
        "input_shape": list(shape),
        "normalization": {"mean": [0.0], "std": [1.0]},
        "dataset": "bench",
    }
    art = artifact.from_bytes(artifact.to_bytes(export.make_artifact(deployable, header)))
    row["artifact_bytes"] = len(artifact.to_bytes(art))
    row["float_over_artifact"] = row["float_params_bytes"] / row["artifact_bytes"]
    row["kernel"] = inference.choose_kernel("auto")[1]
    steps["predict_xnor"] = lambda: inference.predict(art, images, "xnor")
    if name != "birealnet18":
        steps["predict_int8"] = lambda: inference.predict(art, images, "int8")
    calls = _binary_layer_inputs(
        inference.deployed_model(art), inference.deployed_variables(art), images
    )
    steps["binary_layers"] = _binary_layers_fn(calls)
    names = list(steps)
    synced = [lambda f=steps[k]: jax.block_until_ready(f()) for k in names]
    times = dict(zip(names, time_interleaved(synced, warmup=1, n=rounds), strict=True))
    med = {k: statistics.median(v) for k, v in times.items()}
    for k in names:
        if k != "binary_layers":
            row[f"{k}_img_per_s"] = batch / med[k]
    row["binary_layers"] = len(calls)
    row["binary_share"] = med["binary_layers"] / med["predict_xnor"]
    row["xnor_over_eval_float"] = med["eval_float"] / med["predict_xnor"]
    row["xnor_over_eval_real"] = med["eval_real"] / med["predict_xnor"]
    if "predict_int8" in med:
        row["xnor_over_int8"] = med["predict_int8"] / med["predict_xnor"]
    row["rounds"] = rounds
    return row


def iter_rows(quick: bool = False, models: tuple[str, ...] | None = None) -> Iterator[dict]:
    """One row per (case, batch) of :data:`CASES` (or of ``models``), as each is measured."""
    for name, kwargs, shape, batches, quick_batches, options in CASES:
        if models is not None and name not in models:
            continue
        for batch in quick_batches if quick else batches:
            rounds = (5 if quick else 15) if batch > 1 else (20 if quick else 100)
            if name == "birealnet18":
                rounds = 3 if quick else (20 if batch == 1 else 5)
            yield _case(name, kwargs, shape, batch, options, rounds)


def deploy_rows(quick: bool = False, models: tuple[str, ...] | None = None) -> list[dict]:
    """Every row of :func:`iter_rows`."""
    return list(iter_rows(quick, models))


def run_deploy(quick: bool, emit: Callable[[dict[str, Any]], None]) -> int:
    """Emit every row as it is measured; the hook of ``python -m bnnns.bench --deploy``."""
    for row in iter_rows(quick):
        emit(row)
    return 0
