"""Mapping-free inference from a ``.bnn`` artifact: ``predict(artifact, images) -> logits``.

The network is the same Flax model definition as in training, built with
``weight_binarizer="deployed"`` (:mod:`bnnns.nn.layers`): no latent weights, no mapping network
(none is built, and the artifact holds no mapping parameters), each binary layer computes
``s * (sign(X) ⊛ Q)`` exactly, with ``int8`` ±1 operands and ``int32`` accumulation, from the
artifact's unpacked sign bits (method.md §1.7), by one of two kernels (:func:`choose_kernel`):

- ``"xnor"``: XNOR-popcount on packed bits (:mod:`bnnns.core.xnor_conv`, a native XLA FFI
  kernel, built on first use with the system C++ compiler); the default on CPU when it builds;
- ``"int8"``: ``int8`` convolutions (:mod:`bnnns.core.binary_ops`): the reference, and the
  path on other platforms or without a compiler.

Both are exact, so their logits are identical. Where a BatchNorm feeds only the next binary
layer's sign it is folded into a per-channel integer threshold on that accumulator
(:func:`bnnns.nn.models.common.norm_to_sign`). Real layers compute in float32.

``images`` are preprocessed as in training: float, ``(N, H, W, C)`` with the artifact's input
shape, normalised with its ``normalization`` (:func:`normalize` does it for uint8 images).

Example:
    >>> import numpy as np
    >>> from bnnns.deploy import artifact, inference
    >>> art = artifact.read("model.bnn")                  # doctest: +SKIP
    >>> logits = inference.predict(art, images)           # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util

from bnnns.core import native
from bnnns.core.packing import unpack_signs
from bnnns.core.xnor_conv import pack_window_weights
from bnnns.deploy import artifact as artifact_lib
from bnnns.nn.models import BinaryOptions, create_model

__all__ = [
    "KERNELS",
    "choose_kernel",
    "deployed_model",
    "deployed_variables",
    "predict",
    "normalize",
    "check_images",
]

SEP = "/"
KERNELS = ("auto", "xnor", "int8")


def choose_kernel(kernel: str = "auto") -> tuple[str, str]:
    """``(kernel, why)``: ``"xnor"`` or ``"int8"`` for the request ``kernel`` (:data:`KERNELS`).

    ``"auto"``: ``"xnor"`` when JAX runs on CPU and the native kernel is available
    (:func:`bnnns.core.native.status`), else ``"int8"``; ``why`` says which and why. Asking for
    ``"xnor"`` where it is unavailable is a ``ValueError`` naming the reason.
    """
    if kernel not in KERNELS:
        raise ValueError(f"kernel must be one of {KERNELS}, got {kernel!r}")
    if kernel == "int8":
        return "int8", "int8 convolutions (reference path, as requested)"
    backend = jax.default_backend()
    state = native.status() if backend == "cpu" else None
    if state is not None and state.available:
        return "xnor", f"XNOR-popcount on packed bits (native CPU kernel, {state.detail})"
    why = f"JAX runs on {backend}" if state is None else state.detail
    if kernel == "xnor":
        raise ValueError(f"kernel 'xnor' is unavailable: {why}")
    return "int8", f"int8 convolutions (reference path: {why})"


def deployed_model(art: artifact_lib.Artifact, kernel: str = "int8"):
    """The artifact's network with ``weight_binarizer="deployed"`` binary layers computing
    with ``kernel`` (``"int8"`` or ``"xnor"``, :data:`bnnns.nn.layers.DEPLOYED_KERNELS`)."""
    spec, binary = art.header["model"], art.header["binary"]
    options = BinaryOptions(
        weight_binarizer="deployed",
        deployed_kernel=kernel,
        weight_scale=binary["weight_scale"],
        activation=binary["activation"],
        act_clip=binary["act_clip"],
    )
    return create_model(
        spec["name"],
        num_classes=spec["num_classes"],
        binary=options,
        dtype=jnp.dtype(spec["dtype"]),
        **spec["kwargs"],
    )


def deployed_variables(art: artifact_lib.Artifact, kernel: str = "int8") -> dict[str, Any]:
    """Flax variables of :func:`deployed_model`: the sign bits unpacked to ``int8`` ±1; for
    ``kernel="xnor"`` also each layer's window-packed weights (``binary/<layer>/xnor_words``,
    ``xnor_wpop``: :func:`bnnns.core.xnor_conv.pack_window_weights`), packed once here."""
    layers = art.header["binary_layers"]
    flat: dict[tuple[str, ...], np.ndarray] = {}
    for name, value in art.arrays.items():
        parts = tuple(name.split(SEP))
        if parts[0] == "binary" and parts[-1] == "bits":
            layer = SEP.join(parts[1:-1])
            if layer not in layers:
                raise artifact_lib.ArtifactError(f"binary layer {layer!r} missing in the header")
            shape, axis = layers[layer]["shape"], layers[layer]["packed_axis"]
            value = unpack_signs(value, shape[axis], axis=axis)
            if list(value.shape) != shape:
                raise artifact_lib.ArtifactError(
                    f"binary layer {layer!r}: bits unpack to {value.shape}, header says {shape}"
                )
            if kernel == "xnor":
                window = value if value.ndim == 4 else value[None, None]
                words, wpop = pack_window_weights(jnp.asarray(window))
                flat[(*parts[:-1], "xnor_words")] = np.asarray(words)
                flat[(*parts[:-1], "xnor_wpop")] = np.asarray(wpop)
        flat[parts] = value
    return traverse_util.unflatten_dict(flat)


def check_images(art: artifact_lib.Artifact, images: Any) -> jax.Array:
    """``images`` as an array, or a ``ValueError`` naming the wrong shape or dtype."""
    shape = tuple(art.header["input_shape"])
    dtype = getattr(images, "dtype", None)
    if dtype is None or not jnp.issubdtype(dtype, jnp.floating):
        raise ValueError(
            f"images must be floating point, normalised as in training (see "
            f"bnnns.deploy.inference.normalize), got dtype {dtype}"
        )
    if images.ndim != 4 or tuple(images.shape[1:]) != shape:
        raise ValueError(
            f"images must have shape (N, {', '.join(map(str, shape))}) for this model, "
            f"got {tuple(images.shape)}"
        )
    # a jax.Array as it is: jnp.asarray of one took ~30 us a call (2-core Zen 1 EPYC), ~2% of
    # a batch-1 resnet20 predict (docs/bench.md)
    return images if isinstance(images, jax.Array) else jnp.asarray(images)


def normalize(art: artifact_lib.Artifact, images: np.ndarray) -> np.ndarray:
    """uint8 ``(N, H, W, C)`` images -> the model's float input (``(x / 255 - mean) / std``)."""
    norm = art.header["normalization"]
    x = np.asarray(images, np.float32) / 255.0
    return (x - np.asarray(norm["mean"], np.float32)) / np.asarray(norm["std"], np.float32)


def _prepared(art: artifact_lib.Artifact, kernel: str) -> tuple[Any, Any]:
    """(device variables, jitted apply) of ``art`` with ``kernel``, built once per artifact."""
    if ("predict", kernel) not in art.cache:
        model = deployed_model(art, kernel)
        variables = jax.device_put(deployed_variables(art, kernel))
        fn = jax.jit(lambda v, x: model.apply(v, x, train=False))
        art.cache["predict", kernel] = (variables, fn)
    return art.cache["predict", kernel]


def _bound(art: artifact_lib.Artifact, kernel: str) -> Callable[[jax.Array], jax.Array]:
    """The jitted apply of ``art`` with its variables closed over, built once per artifact:
    the weights are constants of the compiled program, as in a deployment engine's graph, so a
    call passes one array instead of the variables' ~150 leaves (their argument handling was
    ~0.2 ms of a ~1.5 ms batch-1 resnet20 predict on a 2-core Zen 1 EPYC, docs/bench.md)."""
    if ("bound", kernel) not in art.cache:
        variables, fn = _prepared(art, kernel)
        art.cache["bound", kernel] = jax.jit(lambda x: fn(variables, x))
    return art.cache["bound", kernel]


def predict(art: artifact_lib.Artifact | str, images: Any, kernel: str = "auto") -> jax.Array:
    """Logits ``(N, num_classes)`` of the deployed model for preprocessed ``images``.

    Args:
      art: an :class:`bnnns.deploy.artifact.Artifact` or the path of a ``.bnn`` file.
      images: float ``(N, H, W, C)`` with the artifact's ``input_shape``, normalised as in
        training (:func:`normalize`).
      kernel: ``"auto"`` (default: XNOR-popcount on CPU when the native kernel is available,
        else ``int8``), ``"xnor"`` or ``"int8"``; :func:`choose_kernel` says which and why.
    """
    if not isinstance(art, artifact_lib.Artifact):
        art = artifact_lib.read(art)
    return _bound(art, choose_kernel(kernel)[0])(check_images(art, images))
