"""The batch pipeline on grain: worker *processes* build the batches (``config.data_loader =
"grain"``).

The thread pool of :mod:`bnnns.data.pipeline` decodes and augments in one Python process, which
is where an accelerator host runs out of CPU first on ImageNet. Here a ``grain.MapDataset``
over global-batch indices maps each index to this process's part of that batch with the very
function the thread pipeline uses (``_Plan.load``: order from ``(seed, epoch)``, augmentation
from ``(seed, epoch, b, position)``, per-process rows), and ``IterDataset.mp_prefetch`` runs
that map in ``num_workers`` worker processes. So the batches are *bitwise* those of
:func:`~bnnns.data.pipeline.batch_iterator` (``tests/test_grain.py``), for any worker count,
and deterministic in ``(seed, epoch, step)``. Used through
``batch_iterator(..., loader="grain", num_threads=workers)``.

Two things keep it as fast as the thread pool (docs/bench.md, "Input pipeline"):

* Workers write the images straight into shared memory (a ``SharedMemoryArray``, passed to the
  trainer by name); any other array grain copies into a new block first, 38 MB a batch of 64
  ImageNet crops in float32.
* Workers outlive the iterator: index ``i`` of a pool is step ``i % S`` of epoch ``i // S``
  (``S`` steps per epoch), so when the next epoch (or evaluation pass) asks for the step the
  pool is at, it carries on, already prefetched, instead of spawning workers again (seconds:
  each imports bnnns and jax). Another position (a resume, a new stage) opens a new pool.
  :func:`close_pools` ends them all (they also end with the interpreter).

Resume: the position of a grain iterator is the step, and the step is in the orbax checkpoint
(the train state's ``step``), so the dataset is opened at ``start_step`` and no iterator state
needs its own checkpoint item: an iterator checkpointed by grain would hold nothing more.
"""

from __future__ import annotations

import collections
import dataclasses
from collections.abc import Iterator

import grain
import numpy as np
from absl import flags
from grain.multiprocessing import SharedMemoryArray

from bnnns.data.pipeline import Batch, _Plan

__all__ = ["close_pools", "grain_batches"]

MAX_POOLS = 8  # live worker pools (train per seed, eval per split), least recently used closed
_HORIZON = 1 << 40  # a pool's indices: far more steps than any run has
_MIN_SHM_BYTES = 1 << 16  # smaller arrays (labels, masks) are pickled, not given a block each
_IN_WORKER = False  # True in grain's worker processes (set by _mark_worker)


def _mark_worker(index: int, count: int) -> None:
    """grain's ``worker_init_fn``: marks this process as a worker."""
    del index, count
    global _IN_WORKER
    _IN_WORKER = True


class _LoadBatch(grain.transforms.Map):
    """Index ``i`` -> this process's part of global batch ``i % S`` of epoch ``i // S``
    (picklable for the workers; in a worker the images are built in shared memory)."""

    def __init__(self, plan: _Plan, steps_per_epoch: int):
        self.plan, self.steps_per_epoch = plan, steps_per_epoch

    def map(self, index: int) -> Batch:
        epoch, step = divmod(int(index), self.steps_per_epoch)
        self.plan = self.plan.for_epoch(epoch)  # the same object within an epoch
        out = self.plan.empty(self.plan.local_batch_size)
        if _IN_WORKER:  # a new block reads as zeros, as empty() is
            out["image"] = SharedMemoryArray(out["image"].shape, np.float32)
        return self.plan.load(step, 0, self.plan.local_batch_size, out=out)


def _open(plan: _Plan, steps_per_epoch: int, start: int, stop: int, workers: int):
    """A grain iterator over indices ``[start, stop)`` (see :class:`_LoadBatch`)."""
    dataset = grain.MapDataset.range(start, stop).map(_LoadBatch(plan, steps_per_epoch))
    # Batches, not examples, are the elements: no thread pool or buffer of its own here.
    it = dataset.to_iter_dataset(grain.ReadOptions(num_threads=0, prefetch_buffer_size=0))
    if workers > 0:
        if not flags.FLAGS.is_parsed():  # grain's workers read absl flags (their defaults)
            flags.FLAGS.mark_as_parsed()
        options = grain.experimental.DatasetOptions(min_shm_size=_MIN_SHM_BYTES)
        it = grain.experimental.WithOptionsIterDataset(it, options).mp_prefetch(
            grain.MultiprocessingOptions(num_workers=workers), worker_init_fn=_mark_worker
        )
    return iter(it)


@dataclasses.dataclass(eq=False)  # pools compare by identity
class _Pool:
    """A live grain iterator and the index its next batch has."""

    plan: _Plan  # holds the split, so its id() in the key stays this split's
    iterator: Iterator[Batch]
    next_index: int
    busy: bool = False

    def close(self) -> None:
        self.iterator.close()


_POOLS: collections.OrderedDict[tuple, _Pool] = collections.OrderedDict()


def close_pools() -> None:
    """Ends every worker pool kept for later epochs (idle ones hold processes and batches)."""
    while _POOLS:
        _POOLS.popitem()[1].close()


def _key(plan: _Plan, num_steps: int, workers: int) -> tuple:
    """What makes two epochs' batches one sequence of a pool. An eval plan does not depend on
    seed or epoch: one pool serves every pass of every seed."""
    return (
        id(plan.split),
        plan.info,
        plan.global_batch_size,
        plan.local_batch_size,
        plan.process_index,
        plan.train,
        plan.seed if plan.train else None,
        num_steps,
        workers,
    )


def _take(plan: _Plan, steps: range, key: tuple, workers: int) -> tuple[_Pool, bool]:
    """A pool at the first batch of ``steps`` (kept, unless one of the same key is in use)."""
    num_steps = steps.stop
    pool = _POOLS.get(key)
    if pool is not None and pool.busy:  # the same batches twice at once: a pool of its own
        start = plan.epoch * num_steps + steps.start
        return _Pool(plan, _open(plan, num_steps, start, start + len(steps), workers), start), False
    if plan.train:
        start = plan.epoch * num_steps + steps.start
        if pool is not None and pool.next_index != start:
            pool = None
    else:  # any pass will do
        start = steps.start
        if pool is not None and pool.next_index % num_steps != start:
            pool = None
    if pool is None:
        if key in _POOLS:
            _POOLS.pop(key).close()
        pool = _Pool(plan, _open(plan, num_steps, start, _HORIZON, workers), start)
        _POOLS[key] = pool
        idle = [k for k, p in _POOLS.items() if not p.busy]
        for oldest in idle[: max(0, len(_POOLS) - MAX_POOLS)]:
            _POOLS.pop(oldest).close()
    _POOLS.move_to_end(key)
    pool.busy = True
    return pool, True


def _pooled(plan: _Plan, steps: range, workers: int) -> Iterator[Batch]:
    key = _key(plan, steps.stop, workers)
    pool, kept = _take(plan, steps, key, workers)
    try:
        for _ in steps:
            try:
                batch = next(pool.iterator)
            except Exception:  # a broken pool is not kept (GeneratorExit is no Exception)
                if _POOLS.get(key) is pool:
                    _POOLS.pop(key).close()
                raise
            pool.next_index += 1
            yield batch
    finally:
        pool.busy = False
        if not kept:
            pool.close()


def grain_batches(plan: _Plan, steps: range, num_workers: int) -> Iterator[Batch]:
    """The batches of ``steps`` of ``plan`` (:func:`~bnnns.data.pipeline.epoch_plan`), built
    by ``num_workers`` grain worker processes (``0``: in this process, no prefetch); the
    workers are kept for the next epoch (module docstring)."""
    if not len(steps):
        return iter(())
    if num_workers <= 0:
        first = plan.epoch * steps.stop
        return _open(plan, steps.stop, first + steps.start, first + steps.stop, 0)
    return _pooled(plan, steps, num_workers)
