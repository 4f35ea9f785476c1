"""One 3x3 ``SAME`` convolution, forward and backward, in several lowerings (issue 17).

    python -m bnnns.bench.conv_lowering [--batch 128] [--shapes 32x16,16x32,8x64] [--rounds 2]

Where the binary ResNet-20 step's time goes on XLA:CPU is its convolutions and the layout
transposes XLA inserts for their weight gradients (docs/bench.md, "XLA:CPU flags and the per-op
profile": activations copied to ``[C, H, W, N]`` for the weight-gradient convolution). This
times ``jax.grad`` of ``sum(conv(x, w) ** 2)`` (input and kernel gradients, jitted) at ResNet-20's
three map sizes for:

* ``xla_nhwc``: ``lax.conv_general_dilated`` NHWC / HWIO, JAX's own transpose rules (what bnnns
  runs);
* ``vjp_taps``: the same forward, a ``jax.custom_vjp`` whose weight gradient is one
  ``dot_general`` per tap over the shifted input (no transposed activations; the input gradient
  is XLA's convolution of the cotangent with the flipped kernel);
* ``vjp_im2col``: the same, the nine shifted inputs concatenated and one ``dot_general``;
* ``xla_nchw``: ``lax.conv_general_dilated`` NCHW / OIHW;
* ``native_dw``: :func:`bnnns.core.conv_dw.conv`: XLA's forward and input gradient, the weight
  gradient by the native kernel reading NHWC in place (needs the native kernel).

One JSON line per (shape, round, lowering): median milliseconds of ``--steps`` calls,
GFLOP/s (3 convolutions' worth), and the kernel gradient's relative L2 distance from
``xla_nhwc``'s on the same inputs. XLA's flags are the process's (importing this module imports
bnnns, which sets its own; run with ``BNNNS_XLA_CPU_DEFAULTS=0`` or your own ``XLA_FLAGS`` to
compare).
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
from jax import lax

__all__ = ["LOWERINGS", "conv_grads", "main", "measure"]

_NHWC = ("NHWC", "HWIO", "NHWC")


def _conv(x: jax.Array, w: jax.Array) -> jax.Array:
    return lax.conv_general_dilated(x, w, (1, 1), "SAME", dimension_numbers=_NHWC)


def _shifted(x: jax.Array, kh: int, kw: int) -> list[jax.Array]:
    """The ``kh * kw`` windows of the zero-padded ``x`` that tap ``(i, j)`` reads (SAME)."""
    h, w = x.shape[1:3]
    xp = jnp.pad(x, ((0, 0), ((kh - 1) // 2, kh // 2), ((kw - 1) // 2, kw // 2), (0, 0)))
    return [xp[:, i : i + h, j : j + w, :] for i in range(kh) for j in range(kw)]


def _dw_taps(x: jax.Array, dy: jax.Array, kh: int, kw: int) -> jax.Array:
    contract = (((0, 1, 2), (0, 1, 2)), ((), ()))
    taps = [lax.dot_general(s, dy, contract) for s in _shifted(x, kh, kw)]
    return jnp.stack(taps).reshape(kh, kw, x.shape[-1], dy.shape[-1])


def _dw_im2col(x: jax.Array, dy: jax.Array, kh: int, kw: int) -> jax.Array:
    cols = jnp.concatenate(_shifted(x, kh, kw), -1).reshape(-1, kh * kw * x.shape[-1])
    dw = lax.dot_general(cols, dy.reshape(-1, dy.shape[-1]), (((0,), (0,)), ((), ())))
    return dw.reshape(kh, kw, x.shape[-1], dy.shape[-1])


def _with_weight_grad(dw_fn: Callable) -> Callable:
    """The NHWC convolution with its weight gradient computed by ``dw_fn``."""

    @jax.custom_vjp
    def conv(x, w):
        return _conv(x, w)

    def fwd(x, w):
        return _conv(x, w), (x, w)

    def bwd(res, dy):
        x, w = res
        dx = _conv(dy, jnp.flip(w, (0, 1)).transpose(0, 1, 3, 2))
        return dx, dw_fn(x, dy, w.shape[0], w.shape[1])

    conv.defvjp(fwd, bwd)
    return conv


def _nchw(x: jax.Array, w: jax.Array) -> jax.Array:
    """NHWC/HWIO arguments, convolved as NCHW/OIHW operands (XLA's layout pass may fold the
    transposes)."""
    dn = ("NCHW", "OIHW", "NCHW")
    y = lax.conv_general_dilated(
        x.transpose(0, 3, 1, 2), w.transpose(3, 2, 0, 1), (1, 1), "SAME", dimension_numbers=dn
    )
    return y.transpose(0, 2, 3, 1)


def _native_dw(x: jax.Array, w: jax.Array) -> jax.Array:
    from bnnns.core import conv_dw

    return conv_dw.conv(x, w, (1, 1), "SAME")


LOWERINGS: dict[str, Callable] = {
    "xla_nhwc": _conv,
    "vjp_taps": _with_weight_grad(_dw_taps),
    "vjp_im2col": _with_weight_grad(_dw_im2col),
    "xla_nchw": _nchw,
    "native_dw": _native_dw,
}


def conv_grads(name: str) -> Callable:
    """The jitted ``(dL/dx, dL/dw)`` of ``L = sum(conv(x, w) ** 2)`` in lowering ``name``."""
    conv = LOWERINGS[name]
    return jax.jit(jax.grad(lambda x, w: jnp.sum(conv(x, w) ** 2), argnums=(0, 1)))


def _inputs(batch: int, size: int, channels: int) -> tuple[jax.Array, jax.Array]:
    kx, kw = jax.random.split(jax.random.key(0))
    x = jax.random.normal(kx, (batch, size, size, channels))
    return x, jax.random.normal(kw, (3, 3, channels, channels))


def measure(name: str, batch: int, size: int, channels: int, steps: int) -> tuple[float, tuple]:
    """Median seconds of one call of :func:`conv_grads` (after a compile call), and the grads."""
    grads = conv_grads(name)
    x, w = _inputs(batch, size, channels)
    out = jax.block_until_ready(grads(x, w))
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        jax.block_until_ready(grads(x, w))
        times.append(time.perf_counter() - t0)
    return sorted(times)[len(times) // 2], out


def _shape(text: str) -> tuple[int, int]:
    size, channels = text.lower().split("x")
    return int(size), int(channels)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bnnns.bench.conv_lowering", description=__doc__)
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--shapes", default="32x16,16x32,8x64", help="SIZExCHANNELS, comma-separated")
    p.add_argument("--lowerings", default=",".join(LOWERINGS), help="comma-separated")
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--steps", type=int, default=20)
    args = p.parse_args(argv)
    names = args.lowerings.split(",")
    unknown = sorted(set(names) - set(LOWERINGS))
    if unknown:
        p.error(f"--lowerings: unknown {unknown}; choose from {sorted(LOWERINGS)}")
    for size, channels in map(_shape, args.shapes.split(",")):
        flops = 3 * 2 * args.batch * size * size * 9 * channels * channels
        reference = None  # xla_nhwc's kernel gradient: from its own row when it is timed
        if "xla_nhwc" not in names:
            reference = conv_grads("xla_nhwc")(*_inputs(args.batch, size, channels))[1]
        for rnd in range(args.rounds):
            for name in sorted(names, key=lambda n: n != "xla_nhwc"):  # the reference first
                seconds, (_, dw) = measure(name, args.batch, size, channels, args.steps)
                if reference is None:
                    reference = dw
                err = float(jnp.linalg.norm(dw - reference) / jnp.linalg.norm(reference))
                row = {
                    "kind": "conv_lowering",
                    "lowering": name,
                    "batch": args.batch,
                    "size": size,
                    "channels": channels,
                    "round": rnd,
                    "ms": round(1e3 * seconds, 3),
                    "gflop_per_s": round(flops / seconds / 1e9, 1),
                    "dw_rel_err": err,
                }
                print(json.dumps(row), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
