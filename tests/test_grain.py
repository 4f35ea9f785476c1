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


@pytest.mark.slow
def test_grain_worker_processes_equal_threads():
    """Two worker processes: the same batches, in order, resumed mid-epoch."""
    split, info = imagenet_like(40)
    common = dict(global_batch_size=8, seed=5, epoch=2, train=True, start_step=1)
    workers = epoch(split, info, loader="grain", num_threads=2, **common)
    assert_same(workers, epoch(split, info, num_threads=0, **common))
    other = epoch(split, info, loader="grain", num_threads=0, **{**common, "seed": 6})
    assert not np.array_equal(other[0]["image"], workers[0]["image"])
    del workers  # grain's shared-memory arrays are freed before the interpreter exits


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
