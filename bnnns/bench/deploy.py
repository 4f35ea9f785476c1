"""Deployment benchmark: artifact size vs float checkpoint, ``predict`` vs the float eval step.

    python -m bnnns.bench --deploy [--quick] [--out FILE]

For ``resnet20`` (CIFAR 32x32x3, width 16, batch 128) and the default MNIST model
(``configs/mnist_lns.py``: ``cnn`` width 16, 28x28x1, batch 1000), from a random init:

- ``float_params_bytes``: float32 parameters + BatchNorm statistics of the trained sign model
  (what a float checkpoint of the model holds, without optimizer state);
  ``lns_params_bytes``: the same with the LNS mapping networks;
- ``artifact_bytes``: the ``.bnn`` file (:mod:`bnnns.deploy.export`), identical for sign and LNS;
- images/s of :func:`bnnns.deploy.inference.predict` (integer binary layers, mapping-free) and
  of the
  jitted eval forward of the training models (:func:`bnnns.train.steps.eval_step`, float arithmetic
  on ``±1`` values; LNS recomputes its mapping networks every call), median of timed calls.

Measured, never asserted: one JSON object per line (``kind: "deploy"``).
"""

from __future__ import annotations

import functools
import statistics
import time
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

__all__ = ["CASES", "deploy_rows", "run_deploy"]

# name, model kwargs, image shape, batch
CASES = (
    ("resnet20", {"width": 16}, (32, 32, 3), 128),
    ("cnn", {"width": 16}, (28, 28, 1), 1000),
)


def _tree_bytes(tree: Any) -> int:
    return int(sum(np.asarray(x).nbytes for x in jax.tree_util.tree_leaves(tree)))


def _images_per_s(fn: Callable[[], Any], batch: int, n: int) -> float:
    jax.block_until_ready(fn())  # compile + first run
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        jax.block_until_ready(fn())
        times.append(time.perf_counter() - t0)
    return batch / statistics.median(times)


def deploy_rows(quick: bool = False) -> list[dict[str, Any]]:
    """One row per case (see the module docstring)."""
    from bnnns.deploy import artifact, export, inference
    from bnnns.nn.layers import drop_sown
    from bnnns.nn.models import BinaryOptions, create_model
    from bnnns.train.steps import TrainState, eval_step

    rows = []
    n = 3 if quick else 10
    for name, kwargs, shape, batch in CASES:
        images = jax.random.normal(jax.random.key(0), (batch, *shape))
        data = {
            "image": images,
            "label": jnp.zeros((batch,), jnp.int32),
            "mask": jnp.ones((batch,), jnp.float32),
        }
        row: dict[str, Any] = {"kind": "deploy", "model": name, "batch": batch, **kwargs}
        arts = {}
        for binarizer in ("sign", "lns"):
            model = create_model(
                name, num_classes=10, binary=BinaryOptions(weight_binarizer=binarizer), **kwargs
            )
            init = jax.jit(lambda k, m=model, x=images[:1]: m.init(k, x, train=False))
            variables = drop_sown(init(jax.random.key(1)))
            params = variables.pop("params")
            state = TrainState(jnp.zeros((), jnp.int32), params, dict(variables), ())
            key = "float" if binarizer == "sign" else "lns"
            row[f"{key}_params_bytes"] = _tree_bytes(params) + _tree_bytes(variables)
            deployable = export.deployable_variables(
                model, {"params": params, **variables}, images[:1], "layer"
            )
            header = {
                "model": {"name": name, "kwargs": kwargs, "dtype": "float32", "num_classes": 10},
                "binary": {"weight_scale": "layer", "activation": "ste_sign", "act_clip": 1.0},
                "input_shape": list(shape),
                "normalization": {"mean": [0.0], "std": [1.0]},
                "dataset": "bench",
            }
            arts[binarizer] = artifact.from_bytes(
                artifact.to_bytes(export.make_artifact(deployable, header))
            )
            step = jax.jit(functools.partial(eval_step, model=model))
            row[f"eval_{key}_img_per_s"] = _images_per_s(
                lambda s=step, st=state, d=data: s(st, d), batch, n
            )
        row["artifact_bytes"] = len(artifact.to_bytes(arts["sign"]))
        row["lns_artifact_bytes"] = len(artifact.to_bytes(arts["lns"]))
        row["float_over_artifact"] = row["float_params_bytes"] / row["artifact_bytes"]
        row["predict_img_per_s"] = _images_per_s(
            lambda a=arts["sign"], x=images: inference.predict(a, x), batch, n
        )
        row["predict_over_eval_float"] = row["predict_img_per_s"] / row["eval_float_img_per_s"]
        rows.append(row)
    return rows


def run_deploy(quick: bool, emit: Callable[[dict[str, Any]], None]) -> int:
    """Emit every row; the hook of ``python -m bnnns.bench --deploy``."""
    for row in deploy_rows(quick):
        emit(row)
    return 0
