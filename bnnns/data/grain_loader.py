"""The batch pipeline on grain: worker *processes* build the batches (``config.data_loader =
"grain"``).

The thread pool of :mod:`bnnns.data.pipeline` decodes and augments in one Python process, which
is where an accelerator host runs out of CPU first on ImageNet. Here a ``grain.MapDataset``
over the epoch's global-batch indices maps each index ``b`` to this process's part of batch
``b`` with the very function the thread pipeline uses (``_Plan.load``: order from
``(seed, epoch)``, augmentation from ``(seed, epoch, b, position)``, per-process rows), and
``IterDataset.mp_prefetch`` runs that map in ``num_workers`` worker processes. So the batches
are *bitwise* those of :func:`~bnnns.data.pipeline.batch_iterator` (``tests/test_grain.py``), for
any worker count, and deterministic in ``(seed, epoch, step)``. Used through
``batch_iterator(..., loader="grain", num_threads=workers)``.

Resume: the position of a grain iterator is the step, and the step is in the orbax checkpoint
(the train state's ``step``), so the dataset is opened at ``start_step`` and no iterator state
needs its own checkpoint item: an iterator checkpointed by grain would hold nothing more.
"""

from __future__ import annotations

from collections.abc import Iterator

import grain
from absl import flags

from bnnns.data.pipeline import Batch, _Plan

__all__ = ["grain_batches"]


class _LoadBatch(grain.transforms.Map):
    """Index ``b`` -> this process's part of global batch ``b`` (picklable for the workers)."""

    def __init__(self, plan):
        self.plan = plan

    def map(self, step: int) -> Batch:
        return self.plan.load(int(step), 0, self.plan.local_batch_size)


def grain_batches(plan: _Plan, steps: range, num_workers: int) -> Iterator[Batch]:
    """The batches of ``steps`` of ``plan`` (:func:`~bnnns.data.pipeline.epoch_plan`), built
    by ``num_workers`` grain worker processes (``0``: in this process, no prefetch)."""
    if not len(steps):
        return iter(())
    dataset = grain.MapDataset.range(steps.start, steps.stop).map(_LoadBatch(plan))
    # Batches, not examples, are the elements: no thread pool or buffer of its own here.
    it = dataset.to_iter_dataset(grain.ReadOptions(num_threads=0, prefetch_buffer_size=0))
    if num_workers > 0:
        if not flags.FLAGS.is_parsed():  # grain's workers read absl flags (their defaults)
            flags.FLAGS.mark_as_parsed()
        it = it.mp_prefetch(grain.MultiprocessingOptions(num_workers=num_workers))
    return iter(it)
