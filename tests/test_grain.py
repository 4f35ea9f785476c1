"""The grain pipeline (bnnns.data.grain_loader): bitwise the batches of the thread pipeline, so
deterministic in (seed, epoch, step) and resumable at any step, for any worker count."""

import numpy as np
import pytest

from bnnns.data import DatasetInfo, Split, batch_iterator


def imagenet_like(n: int, size: int = 12) -> tuple[Split, DatasetInfo]:
    """Variable-size uint8 images (per-example random-resized crops and flips)."""
    rng = np.random.default_rng(n)
    images = np.empty(n, dtype=object)
    for i in range(n):
        h, w = rng.integers(4, 30, size=2)
        images[i] = rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8)
    info = DatasetInfo("synthetic", (size, size, 3), n, n, 0, "imagenet", mean=(0.5,) * 3)
    return Split(images, np.arange(n, dtype=np.int32)), info


def cifar_like(n: int) -> tuple[Split, DatasetInfo]:
    """Fixed-size images (per-batch pad-crop-flip parameters)."""
    images = np.random.default_rng(n).integers(0, 256, size=(n, 8, 8, 3), dtype=np.uint8)
    info = DatasetInfo("synthetic", (8, 8, 3), n, n, 0, "cifar", mean=(0.5,) * 3)
    return Split(images, np.arange(n, dtype=np.int32)), info


def epoch(split, info, **kw):
    return [dict(b) for b in batch_iterator(split, info, **kw)]


def assert_same(a, b):
    assert len(a) == len(b)
    for x, y in zip(a, b, strict=True):
        assert x.keys() == y.keys()
        for k in x:
            np.testing.assert_array_equal(x[k], y[k], err_msg=k)


@pytest.mark.parametrize("make", [imagenet_like, cifar_like])
@pytest.mark.parametrize(
    "kw",
    [
        dict(train=True, epoch=1, start_step=2, process_index=1, process_count=2),
        dict(train=False, epoch=0),  # the padded and masked last batch
    ],
)
def test_grain_in_process_equals_threads(make, kw):
    split, info = make(45)
    common = dict(global_batch_size=8, seed=3, **kw)
    threads = epoch(split, info, num_threads=2, **common)
    assert_same(epoch(split, info, loader="grain", num_threads=0, **common), threads)
    assert threads and len(threads) == (3 if kw["train"] else 6)


def test_one_grain_sequence_runs_on_across_epochs():
    """A kept pool's indices run from one epoch into the next: the batches of epoch 1 from
    step 1, then all of epoch 2 (another order), as the thread pipeline builds them."""
    from bnnns.data import grain_loader
    from bnnns.data.pipeline import epoch_plan

    split, info = imagenet_like(30)
    common = dict(global_batch_size=8, seed=4, train=True)
    plan, steps = epoch_plan(split, info, epoch=1, start_step=1, **common)
    start = steps.stop + 1  # epoch 1, step 1
    got = list(grain_loader._open(plan, steps.stop, start, start + 2 * steps.stop - 1, 0))
    want = epoch(split, info, epoch=1, start_step=1, **common)
    assert_same(got, want + epoch(split, info, epoch=2, **common))


def test_worker_batches_are_built_in_shared_memory(monkeypatch):
    """In a worker the images are written into the block grain passes on (no copy)."""
    from grain._src.python.ipc import shared_memory_array as shm

    from bnnns.data import grain_loader
    from bnnns.data.pipeline import epoch_plan

    split, info = cifar_like(16)
    plan, _ = epoch_plan(split, info, global_batch_size=8, seed=0, epoch=0, train=True)
    monkeypatch.setattr(grain_loader, "_IN_WORKER", True)
    batch = grain_loader._LoadBatch(plan, 2).map(1)
    meta = shm.copy_to_shm(batch, min_size=grain_loader._MIN_SHM_BYTES)["image"]
    assert meta.name == batch["image"].shm.name  # handed on by name: the block it was built in
    assert_same([dict(batch)], [plan.load(1, 0, 8)])
    batch["image"].unlink_on_del()


def test_pools_go_on_only_at_the_step_asked_for(monkeypatch):
    """The pool bookkeeping (pools opened in process here): the next epoch and the next eval
    pass go on from the kept pool; a resume elsewhere, or the same batches twice at once, open
    another; every batch is the thread pipeline's."""
    from bnnns.data import close_worker_pools, grain_loader

    opened = []

    def in_process(plan, steps_per_epoch, start, stop, workers):
        opened.append(start)
        return real(plan, steps_per_epoch, start, stop, 0)

    real = grain_loader._open
    monkeypatch.setattr(grain_loader, "_open", in_process)
    split, info = imagenet_like(30)
    train = dict(global_batch_size=8, seed=5, train=True)
    test = dict(global_batch_size=16, seed=0, train=False)
    close_worker_pools()
    try:
        for kw in (dict(epoch=2, start_step=1), dict(epoch=3), dict(epoch=3, start_step=2)):
            got = epoch(split, info, loader="grain", num_threads=2, **train, **kw)
            assert_same(got, epoch(split, info, num_threads=0, **train, **kw))
        assert opened == [2 * 3 + 1, 3 * 3 + 2]  # epoch 3 went on from the first pool
        first = batch_iterator(split, info, loader="grain", num_threads=2, epoch=0, **test)
        head = next(first)  # the eval pool is in use while ...
        together = epoch(split, info, loader="grain", num_threads=2, epoch=1, **test)
        assert_same([head, *first], together)
        again = epoch(split, info, loader="grain", num_threads=2, epoch=4, **test)
        assert_same(again, epoch(split, info, num_threads=0, epoch=0, **test))
        assert opened[2:] == [0, 1 * 2]  # the second pass while the first ran: its own pool
        assert len(grain_loader._POOLS) == 2  # train and eval
    finally:
        close_worker_pools()
    assert not grain_loader._POOLS


@pytest.mark.slow
def test_grain_worker_processes_equal_threads():
    """Two worker processes: the same batches, in order, resumed mid-epoch, and the next epoch
    from the same workers."""
    from bnnns.data import close_worker_pools, grain_loader

    split, info = imagenet_like(40)
    common = dict(global_batch_size=8, seed=5, train=True)
    close_worker_pools()
    try:
        workers = epoch(split, info, loader="grain", num_threads=2, epoch=2, start_step=1, **common)
        assert_same(workers, epoch(split, info, num_threads=0, epoch=2, start_step=1, **common))
        (pool,) = grain_loader._POOLS.values()
        again = epoch(split, info, loader="grain", num_threads=2, epoch=3, **common)
        assert [p is pool for p in grain_loader._POOLS.values()] == [True]  # the same workers
        assert_same(again, epoch(split, info, num_threads=0, epoch=3, **common))
        other = epoch(split, info, loader="grain", num_threads=0, epoch=2, **{**common, "seed": 6})
        assert not np.array_equal(other[1]["image"], workers[0]["image"])
    finally:
        close_worker_pools()


def test_unknown_loader_is_refused():
    split, info = cifar_like(16)
    with pytest.raises(ValueError, match="loader must be 'threads' or 'grain', got 'tf'"):
        batch_iterator(split, info, global_batch_size=8, seed=0, epoch=0, train=True, loader="tf")


def test_config_data_loader_is_checked():
    from helpers import tiny_config

    from bnnns.errors import ConfigError
    from bnnns.train.config_checks import validate_config

    validate_config(tiny_config(data_loader="grain"))
    with pytest.raises(ConfigError, match=r"config.data_loader='tf' is not allowed"):
        validate_config(tiny_config(data_loader="tf"))
