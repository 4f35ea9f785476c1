"""Data parallelism through JAX's own runtime: a ``("data",)`` mesh over all global devices.

The global batch is sharded over the mesh, the train state replicated; ``jax.jit`` inserts the
cross-device reductions, so BatchNorm statistics, losses and metrics are over the global
batch with no per-device code (no ``pmap``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

__all__ = ["make_mesh", "replicated", "batch_sharding", "global_batch", "with_shardings"]

DATA_AXIS = "data"


def make_mesh(shape: Sequence[int] | None = None) -> Mesh:
    """A 1-D ``("data",)`` mesh over every global device (``shape=(-1,)`` or None), or of
    ``shape[0]`` devices."""
    devices = jax.devices()
    n = len(devices) if not shape or shape[0] in (-1, None) else int(shape[0])
    if n < 1 or n > len(devices):
        raise ValueError(
            f"config.mesh_shape={tuple(shape)} asks for {n} devices; {len(devices)} are available"
        )
    return Mesh(np.asarray(devices[:n]), (DATA_AXIS,))


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, PartitionSpec())


def batch_sharding(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, PartitionSpec(DATA_AXIS))


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
