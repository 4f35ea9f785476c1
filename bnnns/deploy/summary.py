"""Model summary like ``larq.models.summary``: bits, parameters, memory and FLOPs per layer.

    python -m bnnns.deploy.summary configs/imagenet_birealnet18_pretrain.py [--json]

Per conv/dense layer: kind, weight and input bits, latent parameters, binary parameters,
memory as float32 and as deployed (Mbit), binary operations and real FLOPs (multiply-adds per
image); then totals, the compression ratio, and the training-only parameters of the LNS mapping
networks on their own line (method.md §1.7: not deployed, not counted in memory or FLOPs).

Conventions (method.md §5, Table 3): ``flops = real FLOPs + binary operations / 64``. A binary
weight costs 1 bit, its layer's D8 scale (one float per layer or per output channel) and every
real parameter (first/last layers, shortcuts, BatchNorm scale and bias, PReLU) 32 bits;
BatchNorm running statistics are not counted (they fold into the scale and bias). Mbit is
10^6 bits, Mibit 2^20 bits. The paper's two tables use two conventions: Table 3 counts every
parameter in 10^6 bits (ResNet-18: 374 Mbit float, 34 Mbit binary: ``float_memory_mbit``,
``memory_mbit``), Table 5 only the conv/dense kernels in 2^20 bits (AlexNet: 1860 and 180:
``float_kernel_memory_mibit``, ``kernel_memory_mibit``).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
from flax import traverse_util
from ml_collections import ConfigDict

from bnnns.nn.layers import BinaryConv, BinaryDense

__all__ = ["summarize", "summarize_config", "format_summary", "main"]

MBIT, MIBIT = 1e6, float(2**20)
# (image shape, classes) of datasets whose shape is known without reading them.
KNOWN_DATASETS = {
    "mnist": ((28, 28, 1), 10),
    "tfds:mnist": ((28, 28, 1), 10),
    "tfds:fashion_mnist": ((28, 28, 1), 10),
    "tfds:cifar10": ((32, 32, 3), 10),
    "tfds:cifar100": ((32, 32, 3), 100),
    "tfds:imagenet2012": (None, 1000),
}


def _record_layers(model: nn.Module, x: jax.Array) -> tuple[list[dict], Any]:
    """Trace ``model.init`` and record every conv/dense call: path, module, in/out shapes."""
    calls: list[dict] = []

    def interceptor(next_fun, args, kwargs, context):
        out = next_fun(*args, **kwargs)
        module = context.module
        if context.method_name == "__call__" and isinstance(
            module, nn.Conv | nn.Dense | BinaryConv | BinaryDense
        ):
            y = out[0] if isinstance(out, tuple) else out
            calls.append({"path": module.path, "module": module, "out_shape": y.shape})
        return out

    with nn.intercept_methods(interceptor):
        variables = jax.eval_shape(lambda: model.init(jax.random.key(0), x, train=False))
    return calls, variables


def summarize(
    model: nn.Module,
    input_shape: Sequence[int],
    lns_model: nn.Module | None = None,
) -> dict[str, Any]:
    """Per-layer rows and totals of a sign-binarized ``model`` (see the module docstring).

    ``lns_model``: the same network with LNS binarization, to count its mapping parameters.
    """
    x = jnp.zeros((1, *input_shape), jnp.float32)
    calls, variables = _record_layers(model, x)
    params = traverse_util.flatten_dict(variables["params"])
    rows, counted = [], set()
    for call in calls:
        module, path = call["module"], tuple(call["path"])
        kernel = params[(*path, "kernel")]
        bias = params.get((*path, "bias"))
        counted.update({(*path, "kernel"), (*path, "bias")})
        n_kernel = math.prod(kernel.shape)
        n_bias = 0 if bias is None else math.prod(bias.shape)
        binary = isinstance(module, BinaryConv | BinaryDense)
        binary_inputs = binary and module.activation != "none"
        out = call["out_shape"]
        macs = math.prod(out[1:]) * n_kernel // kernel.shape[-1]  # per image
        if binary:
            n_scale = kernel.shape[-1] if module.weight_scale == "channel" else 1
            if module.weight_scale == "none":
                n_scale = 0
            deployed_bits = n_kernel + 32 * (n_scale + n_bias)
        else:
            n_scale = 0
            deployed_bits = 32 * (n_kernel + n_bias)
        rows.append(
            {
                "layer": "/".join(path),
                "kind": ("binary " if binary else "") + ("conv" if kernel.ndim == 4 else "dense"),
                "weight_bits": 1 if binary else 32,
                "input_bits": 1 if binary_inputs else 32,
                "kernel_shape": list(kernel.shape),
                "output_shape": list(out[1:]),
                "params": n_kernel + n_bias,
                "binary_params": n_kernel if binary else 0,
                "float_memory_mbit": 32 * (n_kernel + n_bias) / MBIT,
                "memory_mbit": deployed_bits / MBIT,
                "kernel_bits": n_kernel * (1 if binary else 32),
                "binary_ops": macs if binary_inputs else 0,
                "real_flops": 0 if binary_inputs else macs,
            }
        )
    other = sum(math.prod(v.shape) for k, v in params.items() if k not in counted)
    binary_params = sum(r["binary_params"] for r in rows)
    total_params = sum(r["params"] for r in rows) + other
    memory_bits = sum(r["memory_mbit"] for r in rows) * MBIT + 32 * other
    kernel_bits = sum(r["kernel_bits"] for r in rows)
    float_kernel_bits = 32 * sum(math.prod(r["kernel_shape"]) for r in rows)
    binary_ops = sum(r["binary_ops"] for r in rows)
    real_flops = sum(r["real_flops"] for r in rows)
    mapping = 0
    if lns_model is not None:
        lns_vars = jax.eval_shape(lambda: lns_model.init(jax.random.key(0), x, train=False))
        flat = traverse_util.flatten_dict(lns_vars["params"])
        mapping = sum(math.prod(v.shape) for k, v in flat.items() if "mapping" in k)
    totals = {
        "params": total_params,
        "binary_params": binary_params,
        "real_params": total_params - binary_params,
        "other_real_params": other,
        "memory_mbit": memory_bits / MBIT,
        "memory_mibit": memory_bits / MIBIT,
        "float_memory_mbit": 32 * total_params / MBIT,
        "compression": 32 * total_params / max(memory_bits, 1),
        "kernel_memory_mbit": kernel_bits / MBIT,
        "kernel_memory_mibit": kernel_bits / MIBIT,
        "float_kernel_memory_mbit": float_kernel_bits / MBIT,
        "float_kernel_memory_mibit": float_kernel_bits / MIBIT,
        "binary_ops": binary_ops,
        "real_flops": real_flops,
        "flops": real_flops + binary_ops / 64,
        "mapping_params": mapping,
    }
    return {"layers": rows, "totals": totals}


def input_spec(config: ConfigDict) -> tuple[tuple[int, int, int], int]:
    """``(image shape, classes)`` of ``config.dataset``, without reading it where known."""
    if config.dataset in KNOWN_DATASETS:
        shape, classes = KNOWN_DATASETS[config.dataset]
        if shape is None:
            size = config.image_size or 224
            shape = (size, size, 3)
        return tuple(shape), classes
    from bnnns.train.train_lib import load_data

    _, info = load_data(config)
    return tuple(info.image_shape), info.num_classes


def summarize_config(config: ConfigDict) -> dict[str, Any]:
    """:func:`summarize` of a config's model (the sign model; mapping counted from LNS)."""
    from bnnns.train.train_lib import build_model

    shape, classes = input_spec(config)
    out = summarize(
        build_model(config, classes, "pretrain"), shape, build_model(config, classes, "lns")
    )
    out["model"] = config.model.name
    out["input_shape"] = list(shape)
    return out


def format_summary(summary: dict[str, Any]) -> str:
    """A text table: one line per conv/dense layer, then the totals."""
    head = (
        f"{'layer':<28}{'kind':<14}{'W/A bits':>9}{'params':>11}{'binary':>11}"
        f"{'fp32 Mbit':>11}{'deployed':>10}{'binary ops':>13}{'real FLOPs':>13}"
    )
    lines = [f"model {summary.get('model', '?')}, input {summary.get('input_shape', '?')}", head]
    lines.append("-" * len(head))
    for r in summary["layers"]:
        lines.append(
            f"{r['layer'][-27:]:<28}{r['kind']:<14}{r['weight_bits']:>4}/{r['input_bits']:<4}"
            f"{r['params']:>11,}{r['binary_params']:>11,}{r['float_memory_mbit']:>11.3f}"
            f"{r['memory_mbit']:>10.3f}{r['binary_ops']:>13,}{r['real_flops']:>13,}"
        )
    t = summary["totals"]
    lines += [
        "-" * len(head),
        f"other real parameters (BatchNorm, PReLU): {t['other_real_params']:,}",
        f"total parameters: {t['params']:,} ({t['binary_params']:,} binary)",
        f"memory: {t['float_memory_mbit']:.2f} Mbit float32 -> {t['memory_mbit']:.2f} Mbit "
        f"deployed ({t['compression']:.1f}x smaller); kernels only: "
        f"{t['float_kernel_memory_mbit']:.1f} -> {t['kernel_memory_mbit']:.2f} Mbit "
        f"({t['float_kernel_memory_mibit']:.1f} -> {t['kernel_memory_mibit']:.2f} Mibit)",
        f"FLOPs: {t['flops'] / 1e6:.1f} M = {t['real_flops'] / 1e6:.1f} M real + "
        f"{t['binary_ops'] / 1e6:.1f} M binary ops / 64",
        f"training only (LNS mapping networks, not deployed): {t['mapping_params']:,} parameters",
    ]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    from bnnns.train.default_config import load_config_file

    p = argparse.ArgumentParser(
        prog="python -m bnnns.deploy.summary", description=__doc__.split("\n")[0]
    )
    p.add_argument("config", help="a config file, e.g. configs/mnist_lns.py")
    p.add_argument("--json", action="store_true", help="print the totals as one JSON object")
    args = p.parse_args(argv)
    summary = summarize_config(load_config_file(args.config))
    if args.json:
        print(json.dumps(summary["totals"]))
    else:
        print(format_summary(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
