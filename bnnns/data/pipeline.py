"""Deterministic, process-sharded batch iteration over a :class:`~bnnns.data.Split`.

Order: for training, ``np.random.default_rng([seed, epoch]).permutation(N)``; for evaluation,
``0..N-1``. Global batch ``b`` is ``order[b*G:(b+1)*G]`` and process ``p`` reads only positions
``[p*L, (p+1)*L)`` of it (``L = G // process_count``), so concatenating the processes' batches
in process order gives the global batch.

Augmentation randomness depends only on ``(seed, epoch, b, position in the global batch)``:
``"cifar"`` draws the parameters of the whole global batch from
``default_rng([seed, epoch, b, 1])`` and each process keeps its positions; ``"imagenet"`` seeds
each example with ``default_rng([seed, epoch, b, position, 2])``. Results therefore do not
depend on ``process_count``, ``num_threads`` or ``start_step``.

Batches are assembled by a thread pool of ``num_threads`` workers (each takes a contiguous
chunk of the local batch) with one batch of prefetch: batch ``b + 1`` is being read while the
caller consumes batch ``b``.
"""

from __future__ import annotations

import collections
import concurrent.futures
import dataclasses
import sys
from collections.abc import Iterator

import numpy as np

from bnnns.data import transforms
from bnnns.data.split import DatasetInfo, Split

Batch = dict[str, np.ndarray]
_CIFAR_TAG = 1
_IMAGENET_TAG = 2


def steps_per_epoch(num_examples: int, global_batch_size: int, drop_remainder: bool) -> int:
    """Number of global batches in one pass over ``num_examples``.

    Args:
        num_examples: Examples in the split.
        global_batch_size: Examples per global batch (all processes together).
        drop_remainder: Whether a final partial batch is dropped (else padded and masked).

    Returns:
        ``num_examples // G`` if ``drop_remainder`` else ``ceil(num_examples / G)``.
    """
    if global_batch_size <= 0:
        raise ValueError(f"global_batch_size must be positive, got {global_batch_size}.")
    if drop_remainder:
        return num_examples // global_batch_size
    return -(-num_examples // global_batch_size)


def _order(n: int, seed: int, epoch: int, train: bool) -> np.ndarray:
    """The epoch's order of the ``n`` examples: shuffled by ``(seed, epoch)`` for training."""
    return np.random.default_rng([seed, epoch]).permutation(n) if train else np.arange(n)


@dataclasses.dataclass(frozen=True)
class _Plan:
    """Everything needed to build any local batch of one epoch."""

    split: Split
    info: DatasetInfo
    order: np.ndarray
    global_batch_size: int
    local_batch_size: int
    process_index: int
    seed: int
    epoch: int
    train: bool

    def _transform(
        self, images: np.ndarray, step: int, positions: np.ndarray, out: np.ndarray
    ) -> None:
        """Augments (train) / resizes (imagenet) and normalises the valid rows into ``out``."""
        info = self.info
        if info.augment == "imagenet":
            size, channels = info.image_shape[0], info.image_shape[2]
            for i, (image, pos) in enumerate(zip(images, positions, strict=True)):
                image = transforms.to_channels(np.asarray(image), channels)
                if self.train:
                    key = [self.seed, self.epoch, step, int(pos), _IMAGENET_TAG]
                    image = transforms.imagenet_train(image, size, np.random.default_rng(key))
                else:
                    image = transforms.imagenet_eval(image, size)
                transforms.normalize(image, info.mean, info.std, out=out[i])
            return
        if info.augment == "cifar" and self.train:
            rng = np.random.default_rng([self.seed, self.epoch, step, _CIFAR_TAG])
            params = transforms.cifar_params(rng, self.global_batch_size)
            images = transforms.pad_crop_flip(images, params[positions])
        transforms.normalize(images, info.mean, info.std, out=out)

    def for_epoch(self, epoch: int) -> _Plan:
        """The plan of ``epoch`` (an eval plan is the same for every epoch)."""
        if not self.train or epoch == self.epoch:
            return self
        order = _order(len(self.split), self.seed, epoch, self.train)
        return dataclasses.replace(self, epoch=epoch, order=order)

    def empty(self, n: int) -> Batch:
        """A zeroed batch of ``n`` rows (what :meth:`load` fills)."""
        return {
            "image": np.zeros((n, *self.info.image_shape), dtype=np.float32),
            "label": np.zeros((n,), dtype=np.int32),
            "mask": np.zeros((n,), dtype=np.float32),
        }

    def load(self, step: int, lo: int, hi: int, out: Batch | None = None) -> Batch:
        """Builds rows ``[lo, hi)`` of this process's part of global batch ``step``, into
        ``out`` (zeroed, as :meth:`empty` makes) when given: padding rows are left as they are."""
        positions = self.process_index * self.local_batch_size + np.arange(lo, hi)
        flat = step * self.global_batch_size + positions
        valid = flat < len(self.order)
        positions = positions[valid]
        images, labels = self.split.get(self.order[flat[valid]])
        if images.ndim == 3 and images.dtype != object:
            images = images[..., None]
        out = self.empty(hi - lo) if out is None else out
        k = len(positions)
        if k:
            self._transform(images, step, positions, out["image"][:k])
            out["label"][:k] = labels
            out["mask"][:k] = 1.0
        return out


def _concat(parts: list[Batch]) -> Batch:
    """Concatenates chunk results along the batch axis."""
    if len(parts) == 1:
        return parts[0]
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


def _run(plan: _Plan, steps: range, num_threads: int) -> Iterator[Batch]:
    """Yields the batches of ``steps``, prefetching one batch on a thread pool."""
    local = plan.local_batch_size
    if num_threads <= 0:
        for step in steps:
            yield plan.load(step, 0, local)
        return
    edges = np.linspace(0, local, num=min(num_threads, local) + 1).astype(int)
    chunks = [(int(a), int(b)) for a, b in zip(edges[:-1], edges[1:], strict=True) if b > a]
    pool = concurrent.futures.ThreadPoolExecutor(num_threads, thread_name_prefix="bnnns-data")
    pending: collections.deque[list[concurrent.futures.Future[Batch]]] = collections.deque()
    try:
        for i, step in enumerate(steps):
            if i == 0:
                pending.append([pool.submit(plan.load, step, a, b) for a, b in chunks])
            if i + 1 < len(steps):
                nxt = steps[i + 1]
                pending.append([pool.submit(plan.load, nxt, a, b) for a, b in chunks])
            yield _concat([f.result() for f in pending.popleft()])
    finally:
        pool.shutdown(wait=False, cancel_futures=True)


def batch_iterator(
    split: Split,
    info: DatasetInfo,
    *,
    global_batch_size: int,
    seed: int,
    epoch: int,
    train: bool,
    process_index: int = 0,
    process_count: int = 1,
    start_step: int = 0,
    drop_remainder: bool | None = None,
    num_threads: int = 2,
    loader: str = "threads",
) -> Iterator[Batch]:
    """Iterates over this process's share of one epoch of ``split``.

    Args:
        split: The split to read.
        info: Dataset metadata (augmentation, model input shape, normalisation).
        global_batch_size: Examples per global batch ``G``, summed over processes.
        seed: Seed of the shuffle and the augmentation.
        epoch: Epoch number (with ``seed``, fixes the order and the augmentation).
        train: Shuffle and augment (``True``) or read in order without augmentation.
        process_index: This process's index in ``[0, process_count)``.
        process_count: Number of processes sharing each global batch; must divide ``G``.
        start_step: Skip the first ``start_step`` batches without reading them (resume).
        drop_remainder: Drop the last partial batch; default ``True`` for train, ``False`` for
            eval. When ``False`` the last batch is zero-padded to ``G`` and ``mask`` marks pads.
        num_threads: Worker threads (``0``: build batches synchronously in the caller); with
            ``loader="grain"``, grain worker processes.
        loader: ``"threads"`` (this module's thread pool) or ``"grain"``
            (:mod:`bnnns.data.grain_loader`: worker processes, the same batches).

    Returns:
        An iterator of ``{"image": float32 (L, H, W, C), "label": int32 (L,),
        "mask": float32 (L,)}`` with ``L = G // process_count``.

    Raises:
        ValueError: On inconsistent sizes or indices (raised at call time, not lazily).
    """
    plan, steps = epoch_plan(
        split,
        info,
        global_batch_size=global_batch_size,
        seed=seed,
        epoch=epoch,
        train=train,
        process_index=process_index,
        process_count=process_count,
        start_step=start_step,
        drop_remainder=drop_remainder,
    )
    if loader == "grain":
        from bnnns.data.grain_loader import grain_batches

        return grain_batches(plan, steps, num_threads)
    if loader != "threads":
        raise ValueError(f"loader must be 'threads' or 'grain', got {loader!r}")
    return _run(plan, steps, num_threads)


def close_worker_pools() -> None:
    """Ends the grain worker pools kept for later epochs (:mod:`bnnns.data.grain_loader`); a
    no-op when grain was not used."""
    module = sys.modules.get("bnnns.data.grain_loader")
    if module is not None:
        module.close_pools()


def epoch_plan(
    split: Split,
    info: DatasetInfo,
    *,
    global_batch_size: int,
    seed: int,
    epoch: int,
    train: bool,
    process_index: int = 0,
    process_count: int = 1,
    start_step: int = 0,
    drop_remainder: bool | None = None,
) -> tuple[_Plan, range]:
    """The plan of one epoch (``plan.load(step, 0, plan.local_batch_size)`` builds this
    process's part of global batch ``step``, a pure function of its arguments) and the steps
    to read; the arguments and errors of :func:`batch_iterator`."""
    if global_batch_size <= 0 or process_count <= 0:
        raise ValueError(
            f"global_batch_size ({global_batch_size}) and process_count ({process_count}) "
            "must be positive."
        )
    if global_batch_size % process_count:
        raise ValueError(
            f"global_batch_size {global_batch_size} is not divisible by process_count "
            f"{process_count}."
        )
    if not 0 <= process_index < process_count:
        raise ValueError(f"process_index {process_index} not in [0, {process_count}).")
    if seed < 0 or epoch < 0:
        raise ValueError(f"seed ({seed}) and epoch ({epoch}) must be non-negative.")
    if drop_remainder is None:
        drop_remainder = train
    n = len(split)
    num_steps = steps_per_epoch(n, global_batch_size, drop_remainder)
    if not 0 <= start_step <= num_steps:
        raise ValueError(f"start_step {start_step} not in [0, {num_steps}] (steps per epoch).")
    plan = _Plan(
        split=split,
        info=info,
        order=_order(n, seed, epoch, train),
        global_batch_size=global_batch_size,
        local_batch_size=global_batch_size // process_count,
        process_index=process_index,
        seed=seed,
        epoch=epoch,
        train=train,
    )
    return plan, range(start_step, num_steps)
