"""Data parallelism through JAX's own runtime: a ``("data",)`` mesh over all global devices.

The global batch is sharded over the mesh, the train state replicated; ``jax.jit`` inserts the
cross-device reductions, so BatchNorm statistics, losses and metrics are over the global
batch with no per-device code (no ``pmap``). Multi-host runs use the same code: every process
calls ``jax.distributed.initialize`` (``train.py`` does), builds the same mesh over
``jax.devices()`` (all processes' devices, ordered by process) and feeds only its own rows
(:func:`global_batch`).

The LNS mapping networks do not depend on the batch. By default (:func:`split_mapping`,
``config.split_mapping``) their filters are split over the ``"data"`` axis instead of every
device recomputing them in full; jit inserts the collectives FilterBankNorm needs (its
statistics are over the whole filter bank) and all-gathers ``q^``. See ``docs/scaling.md``
for the measurement behind this default.
"""

from __future__ import annotations

import collections
import contextlib
import functools
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import flax.linen as nn
import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from bnnns.core.mapping import MappingNet

__all__ = [
    "DATA_AXIS",
    "make_mesh",
    "replicated",
    "batch_sharding",
    "global_batch",
    "with_shardings",
    "check_batch_size",
    "round_up_batch",
    "split_mapping",
    "with_split_mapping",
]

DATA_AXIS = "data"


def make_mesh(shape: Sequence[int] | None = None) -> Mesh:
    """A 1-D ``("data",)`` mesh over every global device (``shape=(-1,)`` or None), or of
    ``shape[0]`` devices.

    Devices are in ``jax.devices()`` order (grouped by process), so process ``p``'s devices hold
    a contiguous block of the global batch, the block ``bnnns.data.batch_iterator`` gives it.
    A smaller mesh takes the same number of devices from every process (the first ones).
    """
    devices = jax.devices()
    shape = tuple(shape) if shape is not None else (-1,)
    if len(shape) != 1:
        raise ValueError(
            f"config.mesh_shape={shape}: the mesh is 1-D (data parallel); use (-1,) for every "
            "device or (n,) for n of them"
        )
    n = len(devices) if shape[0] in (-1, None) else int(shape[0])
    if n < 1 or n > len(devices):
        raise ValueError(
            f"config.mesh_shape={shape} asks for {n} devices; {len(devices)} are available"
        )
    if n == len(devices):
        return Mesh(np.asarray(devices), (DATA_AXIS,))
    by_process: dict[int, list] = collections.defaultdict(list)
    for d in devices:
        by_process[d.process_index].append(d)
    per_process = n // len(by_process)
    if n % len(by_process) or per_process > min(len(v) for v in by_process.values()):
        raise ValueError(
            f"config.mesh_shape={shape}: {n} devices cannot be taken evenly from the "
            f"{len(by_process)} processes ({[len(v) for v in by_process.values()]} devices each)"
        )
    chosen = [d for p in sorted(by_process) for d in by_process[p][:per_process]]
    return Mesh(np.asarray(chosen), (DATA_AXIS,))


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, PartitionSpec())


def batch_sharding(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, PartitionSpec(DATA_AXIS))


def check_batch_size(mesh: Mesh, batch_size: int, field: str = "batch_size") -> None:
    """Raise a ``ValueError`` naming ``config.<field>`` unless the global batch splits evenly
    over the processes and over the devices of ``mesh``."""
    for count, what in ((jax.process_count(), "processes"), (mesh.size, "devices of the mesh")):
        if batch_size % count:
            raise ValueError(
                f"config.{field}={batch_size} is the global batch: it must be divisible by the "
                f"{count} {what}"
            )


def round_up_batch(mesh: Mesh, batch_size: int) -> int:
    """The smallest multiple of the mesh size that is ``>= batch_size``: the global size of
    evaluation batches, whose rows past the data are padding with ``mask = 0``, so any
    ``config.eval_batch_size`` works on any number of devices with the same results."""
    return -(-int(batch_size) // mesh.size) * mesh.size


def global_batch(mesh: Mesh, local_batch: dict[str, np.ndarray]) -> dict[str, jax.Array]:
    """Assemble the process-local rows of a batch into global arrays sharded on ``"data"``."""
    sharding = batch_sharding(mesh)
    return {
        k: jax.make_array_from_process_local_data(sharding, np.asarray(v))
        for k, v in local_batch.items()
    }


def with_shardings(abstract: Any, sharding: NamedSharding) -> Any:
    """Attach ``sharding`` to every leaf of an ``eval_shape`` tree (for restore targets)."""
    return jax.tree.map(
        lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding), abstract
    )


@contextlib.contextmanager
def split_mapping(mesh: Mesh) -> Iterator[None]:
    """While tracing inside this context, every :class:`~bnnns.core.mapping.MappingNet` computes its
    filters split over the ``"data"`` axis of ``mesh`` and returns ``q^`` replicated.

    The kernel's output-channel axis (one filter per output channel, method.md §2) is
    constrained to ``"data"``; XLA propagates that through the mapping convs and their
    gradients and inserts the all-reduces of FilterBankNorm's statistics. Values are those of
    the replicated computation up to float32 reduction order. A no-op on a 1-device mesh.
    Works by Flax method interception, so the layers need no mesh argument.
    """
    if mesh.size == 1:
        yield
        return
    filters = functools.partial(NamedSharding, mesh)

    def interceptor(next_fun, args, kwargs, context):
        if not (isinstance(context.module, MappingNet) and context.method_name == "__call__"):
            return next_fun(*args, **kwargs)
        kernel, *rest = args
        spec = PartitionSpec(*([None] * (kernel.ndim - 1)), DATA_AXIS)
        kernel = jax.lax.with_sharding_constraint(kernel, filters(spec))
        out = next_fun(kernel, *rest, **kwargs)
        return jax.lax.with_sharding_constraint(out, filters(PartitionSpec()))

    with nn.intercept_methods(interceptor):
        yield


def with_split_mapping(fn: Callable, mesh: Mesh, enabled: bool = True) -> Callable:
    """``fn`` traced under :func:`split_mapping` (unchanged when ``enabled`` is false)."""
    if not enabled or mesh.size == 1:
        return fn

    def wrapped(*args, **kwargs):
        with split_mapping(mesh):
            return fn(*args, **kwargs)

    # keep the name jit reports (e.g. "train_step" in JAX_LOG_COMPILES) for partials too
    wrapped.__name__ = getattr(fn, "__name__", getattr(getattr(fn, "func", None), "__name__", ""))
    return wrapped
