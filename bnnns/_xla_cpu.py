"""XLA:CPU flags bnnns sets for its own runs (issue 17): convolutions off XLA's YNNPACK fusions.

jaxlib 0.10.2's CPU backend hands convolutions to YNNPACK fusions by default; for the weight
gradients of convolutions with large maps and few channels those run at 1-3 GFLOP/s. On a
2-core AMD EPYC (AVX2), ``--xla_cpu_experimental_ynn_fusion_type=`` (no YNNPACK fusions: XLA's
own convolution) made the default job's step (``bench --one mnist_cnn:sign``, b128) 1.9x faster
(0.269 -> 0.143 s) and the peers' ResNet-20 step 2.5x (1.99 -> 0.80 s); docs/bench.md, "XLA:CPU
flags". The convolutions compute the same sums in another order, so results match to float
round-off, not bit for bit.

A first try (session 3) trained the default job to 83.0% MNIST test accuracy with this flag,
against 97.6% without: the binary layers then folded the D8 scale into the weights, so
``conv(x, s * Q)`` summed ``±s`` terms whose rounding depends on the summation order; the
max-pools after the binary convs broke their ties by that rounding, and the step-0 gradients of
the stem and the first two binary convs differed by 30% between the two paths (both within 30-60%
of a float64 reference: a subgradient chosen by noise). The layers now compute ``s * conv(x, Q)``
(exact integers for ±1 inputs; :meth:`bnnns.nn.layers.BinaryConv.binary_kernel_and_scale`), the
two paths' gradients agree to 7e-5, and the default job reached 97.54% / 97.15% (pretrain / LNS)
with the flag and 97.72% / 97.85% without (docs/bench.md).

:func:`configure` runs when bnnns is imported (this module is its first import) and adds the
flag to ``XLA_FLAGS`` unless the user's
``XLA_FLAGS`` already sets any ``xla_cpu_experimental_ynn_fusion_type`` or
``BNNNS_XLA_CPU_DEFAULTS=0``. XLA reads ``XLA_FLAGS`` once, when its first backend starts, so
``import bnnns`` must come before the first JAX computation (importing jax first is fine). The
flag is CPU-only: GPU and TPU backends ignore it.
"""

from __future__ import annotations

import os

__all__ = ["FLAGS", "configure"]

FLAGS = ("--xla_cpu_experimental_ynn_fusion_type=",)


def configure(environ: dict[str, str] | None = None) -> bool:
    """Add :data:`FLAGS` to ``environ["XLA_FLAGS"]`` (``os.environ`` by default).

    Returns:
        Whether the flags were added (False: opted out, or the user sets that flag already).
    """
    env = os.environ if environ is None else environ
    if env.get("BNNNS_XLA_CPU_DEFAULTS", "1") == "0":
        return False
    current = env.get("XLA_FLAGS", "")
    if "xla_cpu_experimental_ynn_fusion_type" in current:
        return False
    env["XLA_FLAGS"] = " ".join([current, *FLAGS]).strip()
    return True


configure()
