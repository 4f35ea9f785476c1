"""Tests for bnnns.data: loaders (mnist, npz, mocked tfds) and batch_iterator properties."""

from __future__ import annotations

import gzip
import hashlib
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bnnns.data import DatasetInfo, Split, batch_iterator, load_dataset, steps_per_epoch, transforms
from bnnns.data import mnist as mnist_lib

MNIST_TRAIN_COUNTS = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
FAST = settings(max_examples=20, deadline=None)


def _epoch(split: Split, info: DatasetInfo, **kw) -> list[dict[str, np.ndarray]]:
    """Materialises one epoch of batch_iterator."""
    return list(batch_iterator(split, info, **kw))


def _stack(batches: list[dict[str, np.ndarray]], key: str) -> np.ndarray:
    return np.concatenate([b[key] for b in batches]) if batches else np.zeros((0,))


# ---------------------------------------------------------------- synthetic splits


def _cifar_like(n: int, side: int = 8) -> tuple[Split, DatasetInfo]:
    """Random uint8 images; label i == row id i (so labels identify examples)."""
    rng = np.random.default_rng(n)
    images = rng.integers(0, 256, size=(n, side, side, 3), dtype=np.uint8)
    info = DatasetInfo("synthetic", (side, side, 3), n, n, 0, "cifar", mean=(0.5,) * 3)
    return Split(images, np.arange(n, dtype=np.int32)), info


def _imagenet_like(n: int, size: int = 12) -> tuple[Split, DatasetInfo]:
    """Variable-size uint8 images in an object array."""
    rng = np.random.default_rng(n)
    images = np.empty(n, dtype=object)
    for i in range(n):
        h, w = rng.integers(4, 30, size=2)
        images[i] = rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8)
    info = DatasetInfo("synthetic", (size, size, 3), n, n, 0, "imagenet", mean=(0.5,) * 3)
    return Split(images, np.arange(n, dtype=np.int32)), info


# ---------------------------------------------------------------- mnist


def test_mnist_loads_real_files() -> None:
    splits, info = load_dataset("mnist")
    assert set(splits) == {"train", "test"}
    train, test = splits["train"], splits["test"]
    assert len(train) == 60000 and len(test) == 10000
    assert info.image_shape == (28, 28, 1) and info.num_classes == 10 and info.augment == "none"
    assert (info.num_train, info.num_test) == (60000, 10000)
    images, labels = train.get(np.arange(5))
    assert images.shape == (5, 28, 28, 1) and images.dtype == np.uint8
    assert labels.dtype == np.int32
    assert train.labels.min() == 0 and train.labels.max() == 9
    assert np.bincount(train.labels, minlength=10).tolist() == MNIST_TRAIN_COUNTS
    assert set(np.unique(test.labels)) == set(range(10))


def _copy_mnist(tmp_path: Path) -> Path:
    for stem, _, _ in mnist_lib.FILES.values():
        shutil.copy(mnist_lib.DEFAULT_DIR / f"{stem}.gz", tmp_path / f"{stem}.gz")
    return tmp_path


def test_mnist_checksum_mismatch_names_file_and_md5s(tmp_path: Path) -> None:
    _copy_mnist(tmp_path)
    stem, md5, _ = mnist_lib.FILES["train_labels"]
    path = tmp_path / f"{stem}.gz"
    data = bytearray(gzip.decompress(path.read_bytes()))
    data[100] ^= 0x01  # a valid gzip whose content is wrong
    path.write_bytes(gzip.compress(bytes(data)))
    with pytest.raises(ValueError) as err:
        load_dataset("mnist", data_dir=str(tmp_path))
    msg = str(err.value)
    assert str(path) in msg and md5 in msg
    assert hashlib.md5(bytes(data)).hexdigest() in msg


def test_mnist_flipped_byte_in_gzip_raises(tmp_path: Path) -> None:
    _copy_mnist(tmp_path)
    stem, md5, _ = mnist_lib.FILES["test_images"]
    path = tmp_path / f"{stem}.gz"
    raw = bytearray(path.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    path.write_bytes(bytes(raw))
    with pytest.raises(ValueError, match=stem) as err:
        load_dataset("mnist", data_dir=str(tmp_path))
    assert md5 in str(err.value)


def test_mnist_missing_file(tmp_path: Path) -> None:
    _copy_mnist(tmp_path)
    stem, md5, _ = mnist_lib.FILES["test_labels"]
    (tmp_path / f"{stem}.gz").unlink()
    with pytest.raises(FileNotFoundError, match=stem) as err:
        load_dataset("mnist", data_dir=str(tmp_path))
    assert md5 in str(err.value)


def test_mnist_batches_are_normalised() -> None:
    splits, info = load_dataset("mnist", train_subset=512)
    assert len(splits["train"]) == 512 and info.num_train == 512
    batches = _epoch(splits["train"], info, global_batch_size=256, seed=0, epoch=0, train=True)
    assert len(batches) == 2
    x = _stack(batches, "image")
    assert x.shape == (512, 28, 28, 1) and x.dtype == np.float32
    assert abs(float(x.mean())) < 0.2 and 0.8 < float(x.std()) < 1.2


# ---------------------------------------------------------------- npz


def _save(path: Path, **arrays: np.ndarray) -> str:
    np.savez(path, **arrays)
    return f"npz:{path}"


def test_npz_round_trip_uint8_2d(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    x_train = rng.integers(0, 256, size=(30, 6, 5), dtype=np.uint8)
    x_test = rng.integers(0, 256, size=(7, 6, 5), dtype=np.uint8)
    y_train, y_test = rng.integers(0, 4, size=30), rng.integers(0, 4, size=7)
    y_train[0] = 3
    spec = _save(tmp_path / "d.npz", x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test)
    splits, info = load_dataset(spec)
    assert info.image_shape == (6, 5, 1) and info.num_classes == 4 and info.augment == "none"
    images, labels = splits["train"].get(np.arange(30))
    np.testing.assert_array_equal(images[..., 0], x_train)
    np.testing.assert_array_equal(labels, y_train)
    assert labels.dtype == np.int32
    np.testing.assert_allclose(info.mean, [x_train.mean() / 255], rtol=1e-6)
    np.testing.assert_allclose(info.std, [(x_train / 255).std()], rtol=1e-6)
    batches = _epoch(splits["test"], info, global_batch_size=4, seed=0, epoch=0, train=False)
    x = _stack(batches, "image")[:7]
    expected = (x_test[..., None] / 255 - info.mean[0]) / info.std[0]
    np.testing.assert_allclose(x, expected, rtol=1e-5, atol=1e-5)


def test_npz_round_trip_float_4d(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    x_train = rng.random((20, 4, 4, 3), dtype=np.float32)
    x_test = rng.random((5, 4, 4, 3), dtype=np.float32)
    y_train, y_test = np.arange(20) % 3, np.arange(5) % 3
    spec = _save(tmp_path / "f.npz", x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test)
    splits, info = load_dataset(spec)
    assert info.image_shape == (4, 4, 3) and info.num_classes == 3
    np.testing.assert_array_equal(splits["test"].get(np.arange(5))[0], x_test)
    np.testing.assert_allclose(info.mean, x_train.mean(axis=(0, 1, 2)), rtol=1e-5)
    batches = _epoch(splits["train"], info, global_batch_size=20, seed=0, epoch=0, train=False)
    x = _stack(batches, "image")
    np.testing.assert_allclose(x.mean(axis=(0, 1, 2)), 0.0, atol=1e-5)
    np.testing.assert_allclose(x.std(axis=(0, 1, 2)), 1.0, atol=1e-4)


def _good() -> dict[str, np.ndarray]:
    return {
        "x_train": np.zeros((6, 4, 4), np.uint8),
        "y_train": np.arange(6) % 2,
        "x_test": np.zeros((3, 4, 4), np.uint8),
        "y_test": np.arange(3) % 2,
    }


@pytest.mark.parametrize(
    ("key", "change"),
    [
        ("y_test", None),  # missing key
        ("y_train", np.arange(5)),  # length mismatch
        ("y_train", np.linspace(0, 1, 6)),  # non-integer labels
        ("y_train", np.zeros((6, 2), np.int64)),  # labels not 1-D
        ("y_train", -np.arange(6)),  # negative labels
        ("x_train", np.zeros((6, 16), np.uint8)),  # wrong ndim
        ("x_test", np.zeros((3, 4, 4, 1, 1), np.uint8)),  # wrong ndim
        ("x_train", np.zeros((6, 4, 4), np.int16)),  # wrong dtype
        ("x_test", np.zeros((3, 5, 4), np.uint8)),  # shape differs from x_train
    ],
)
def test_npz_malformed_names_key(tmp_path: Path, key: str, change: np.ndarray | None) -> None:
    arrays = _good()
    if change is None:
        del arrays[key]
    else:
        arrays[key] = change
    path = tmp_path / "bad.npz"
    spec = _save(path, **arrays)
    with pytest.raises(ValueError) as err:
        load_dataset(spec)
    assert key in str(err.value) and str(path) in str(err.value)


def test_npz_missing_or_unreadable_file(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="nope.npz"):
        load_dataset(f"npz:{tmp_path / 'nope.npz'}")
    junk = tmp_path / "junk.npz"
    junk.write_bytes(b"not a zip")
    with pytest.raises(ValueError, match="junk.npz"):
        load_dataset(f"npz:{junk}")


def test_unknown_spec_lists_forms() -> None:
    for spec in ("cifar10", "npz:", "tfds:", "hf:mnist"):
        with pytest.raises(ValueError, match="npz:<path>") as err:
            load_dataset(spec)
        assert "tfds:<name>" in str(err.value) and "mnist" in str(err.value)


def test_image_size_rejected_for_fixed_shape() -> None:
    with pytest.raises(ValueError, match="image_size"):
        load_dataset("mnist", image_size=64)


# ---------------------------------------------------------------- validation carve


def test_validation_carve_disjoint_sized_deterministic(tmp_path: Path) -> None:
    n = 200
    arrays = {
        "x_train": np.zeros((n, 2, 2), np.uint8),
        "y_train": np.arange(n),  # label == row id
        "x_test": np.zeros((10, 2, 2), np.uint8),
        "y_test": np.arange(10),
    }
    spec = _save(tmp_path / "ids.npz", **arrays)
    splits, info = load_dataset(spec, validation_fraction=0.25, validation_seed=3)
    train_ids = splits["train"].labels
    val_ids = splits["validation"].labels
    assert len(val_ids) == 50 and len(train_ids) == 150
    assert (info.num_train, info.num_validation, info.num_test) == (150, 50, 10)
    assert not set(train_ids) & set(val_ids)
    assert sorted({*train_ids, *val_ids}) == list(range(n))
    again, _ = load_dataset(spec, validation_fraction=0.25, validation_seed=3)
    np.testing.assert_array_equal(again["validation"].labels, val_ids)
    other, _ = load_dataset(spec, validation_fraction=0.25, validation_seed=4)
    assert not np.array_equal(other["validation"].labels, val_ids)
    sub, info = load_dataset(spec, validation_fraction=0.25, validation_seed=3, train_subset=20)
    np.testing.assert_array_equal(sub["train"].labels, train_ids[:20])
    np.testing.assert_array_equal(sub["validation"].labels, val_ids)
    assert info.num_train == 20
    with pytest.raises(ValueError, match="validation_fraction"):
        load_dataset(spec, validation_fraction=1.0)
    # eval_subset: the first rows of test and validation; train untouched
    ev, info = load_dataset(spec, validation_fraction=0.25, validation_seed=3, eval_subset=7)
    np.testing.assert_array_equal(ev["validation"].labels, val_ids[:7])
    np.testing.assert_array_equal(ev["test"].labels, splits["test"].labels[:7])
    np.testing.assert_array_equal(ev["train"].labels, train_ids)
    assert (info.num_train, info.num_validation, info.num_test) == (150, 7, 7)
    big, _ = load_dataset(spec, validation_fraction=0.25, validation_seed=3, eval_subset=1000)
    np.testing.assert_array_equal(big["test"].labels, splits["test"].labels)
    with pytest.raises(ValueError, match="eval_subset must be positive, got 0"):
        load_dataset(spec, eval_subset=0)


def test_eval_subset_config_is_checked_and_used() -> None:
    from helpers import tiny_config

    from bnnns.errors import ConfigError
    from bnnns.train.config_checks import validate_config
    from bnnns.train.train_lib import load_data

    with pytest.raises(ConfigError, match=r"config.eval_subset=-1 is not allowed"):
        validate_config(tiny_config(eval_subset=-1))
    splits, info = load_data(tiny_config(eval_subset=300, validation_fraction=0.1))
    assert (len(splits["test"]), len(splits["validation"]), info.num_test) == (300, 300, 300)
    full, _ = load_data(tiny_config(eval_subset=0))
    assert len(full["test"]) == 10000


# ---------------------------------------------------------------- tfds (mocked, TF-free)


@pytest.mark.parametrize(
    ("name", "image_size", "shape", "augment"),
    [
        ("mnist", None, (28, 28, 1), "none"),
        ("cifar10", None, (32, 32, 3), "cifar"),
        ("imagenet2012", 64, (64, 64, 3), "imagenet"),
    ],
)
def test_tfds_mock_data_source(
    name: str, image_size: int | None, shape: tuple[int, int, int], augment: str
) -> None:
    tfds = pytest.importorskip("tensorflow_datasets")
    with tfds.testing.mock_data(num_examples=12):
        splits, info = load_dataset(f"tfds:{name}", image_size=image_size, validation_fraction=0.25)
        assert info.image_shape == shape and info.augment == augment
        assert (info.num_train, info.num_validation, info.num_test) == (9, 3, 12)
        raw = tfds.data_source(name, split="train", download=False)
        expected = [int(raw[i]["label"]) for i in range(12)]
        all_ids = np.concatenate([splits["train"].labels, splits["validation"].labels])
        assert sorted(all_ids.tolist()) == sorted(expected)
        for train in (True, False):
            batches = _epoch(
                splits["train"], info, global_batch_size=4, seed=0, epoch=0, train=train
            )
            assert len(batches) == (2 if train else 3)
            for b in batches:
                assert b["image"].shape == (4, *shape) and b["image"].dtype == np.float32
                assert b["label"].dtype == np.int32 and b["mask"].dtype == np.float32
            x = _stack(batches, "image")
            assert np.isfinite(x).all()
        # Sharding is exact with the real (lazy) reader and its augmentation too.
        kw = dict(global_batch_size=4, seed=5, epoch=1, train=True)
        full = _epoch(splits["train"], info, **kw)
        halves = [
            _epoch(splits["train"], info, process_index=p, process_count=2, **kw) for p in (0, 1)
        ]
        for b, h0, h1 in zip(full, *halves, strict=True):
            for k in ("image", "label", "mask"):
                np.testing.assert_array_equal(b[k], np.concatenate([h0[k], h1[k]]))
    assert "tensorflow" not in sys.modules


def test_tfds_not_prepared_says_what_to_do(tmp_path: Path) -> None:
    pytest.importorskip("tensorflow_datasets")
    with pytest.raises(ValueError, match="array_record") as err:
        load_dataset("tfds:cifar10", data_dir=str(tmp_path))
    assert "tfds build" in str(err.value)
    with pytest.raises(ValueError, match="no_such_dataset_xyz"):
        load_dataset("tfds:no_such_dataset_xyz", data_dir=str(tmp_path))


# ---------------------------------------------------------------- batch_iterator


def test_steps_per_epoch() -> None:
    assert steps_per_epoch(10, 4, True) == 2
    assert steps_per_epoch(10, 4, False) == 3
    assert steps_per_epoch(8, 4, False) == 2
    assert steps_per_epoch(3, 4, True) == 0


def test_batch_iterator_rejects_bad_sharding() -> None:
    split, info = _cifar_like(16)
    kw = dict(seed=0, epoch=0, train=True)
    with pytest.raises(ValueError, match="divisible"):
        batch_iterator(split, info, global_batch_size=6, process_count=4, **kw)
    with pytest.raises(ValueError, match="process_index"):
        batch_iterator(split, info, global_batch_size=8, process_index=2, process_count=2, **kw)
    with pytest.raises(ValueError, match="start_step"):
        batch_iterator(split, info, global_batch_size=8, start_step=3, **kw)


def test_same_seed_epoch_same_batches_other_epoch_other_order() -> None:
    split, info = _cifar_like(40)
    kw = dict(global_batch_size=8, seed=7, train=True)
    a = _epoch(split, info, epoch=0, **kw)
    b = _epoch(split, info, epoch=0, num_threads=0, **kw)
    c = _epoch(split, info, epoch=1, **kw)
    assert len(a) == len(b) == len(c) == 5
    for x, y in zip(a, b, strict=True):
        for k in x:
            np.testing.assert_array_equal(x[k], y[k])
    assert not np.array_equal(_stack(a, "label"), _stack(c, "label"))
    assert sorted(_stack(a, "label")) == sorted(_stack(c, "label")) == list(range(40))


@FAST
@given(
    n=st.integers(1, 40),
    local=st.integers(1, 5),
    process_count=st.sampled_from([1, 2, 4]),
    seed=st.integers(0, 2**31 - 1),
    epoch=st.integers(0, 5),
    drop=st.booleans(),
    kind=st.sampled_from(["cifar", "imagenet"]),
)
def test_shards_concatenate_to_global_batch(
    n: int, local: int, process_count: int, seed: int, epoch: int, drop: bool, kind: str
) -> None:
    split, info = _cifar_like(n) if kind == "cifar" else _imagenet_like(n)
    g = local * process_count
    kw = dict(global_batch_size=g, seed=seed, epoch=epoch, train=True, drop_remainder=drop)
    full = _epoch(split, info, **kw)
    shards = [
        _epoch(split, info, process_index=p, process_count=process_count, **kw)
        for p in range(process_count)
    ]
    assert len(full) == steps_per_epoch(n, g, drop)
    for step, batch in enumerate(full):
        assert batch["image"].shape == (g, *info.image_shape)
        for k in ("image", "label", "mask"):
            joined = np.concatenate([s[step][k] for s in shards])
            np.testing.assert_array_equal(batch[k], joined)
    # Every example at most once per epoch (exactly once without drop_remainder).
    seen = _stack(full, "label")[_stack(full, "mask") == 1]
    assert len(set(seen.tolist())) == len(seen)
    assert len(seen) == ((n // g) * g if drop else n)


@FAST
@given(
    n=st.integers(1, 30),
    g=st.integers(1, 8),
    start=st.integers(0, 30),
    train=st.booleans(),
    kind=st.sampled_from(["cifar", "imagenet"]),
)
def test_start_step_yields_tail(n: int, g: int, start: int, train: bool, kind: str) -> None:
    split, info = _cifar_like(n) if kind == "cifar" else _imagenet_like(n)
    kw = dict(global_batch_size=g, seed=11, epoch=2, train=train)
    full = _epoch(split, info, **kw)
    start = min(start, len(full))
    tail = _epoch(split, info, start_step=start, **kw)
    assert len(tail) == len(full) - start
    for x, y in zip(full[start:], tail, strict=True):
        for k in x:
            np.testing.assert_array_equal(x[k], y[k])


@FAST
@given(n=st.integers(1, 30), local=st.integers(1, 6), process_count=st.sampled_from([1, 2, 3]))
def test_eval_covers_each_example_once(n: int, local: int, process_count: int) -> None:
    split, info = _cifar_like(n)
    g = local * process_count
    kw = dict(global_batch_size=g, seed=0, epoch=0, train=False)
    shards = [
        _epoch(split, info, process_index=p, process_count=process_count, **kw)
        for p in range(process_count)
    ]
    labels = np.concatenate([s[i]["label"] for i in range(len(shards[0])) for s in shards])
    masks = np.concatenate([s[i]["mask"] for i in range(len(shards[0])) for s in shards])
    assert all(len(s) == steps_per_epoch(n, g, False) for s in shards)
    np.testing.assert_array_equal(labels[masks == 1], np.arange(n))  # in order, once each
    assert masks.sum() == n
    images = np.concatenate([s[i]["image"] for i in range(len(shards[0])) for s in shards])
    expected = (split.images / 255.0 - 0.5).astype(np.float32)  # no augmentation in eval
    np.testing.assert_allclose(images[masks == 1], expected, atol=1e-6)


def test_train_augmentation_changes_images_and_keeps_shape() -> None:
    split, info = _cifar_like(16)
    kw = dict(global_batch_size=16, seed=0, train=True)
    b0 = _epoch(split, info, epoch=0, **kw)[0]
    b1 = _epoch(split, info, epoch=1, **kw)[0]
    order0, order1 = np.argsort(b0["label"]), np.argsort(b1["label"])
    assert not np.array_equal(b0["image"][order0], b1["image"][order1])
    assert b0["image"].shape == (16, 8, 8, 3)


# ---------------------------------------------------------------- transforms


def test_pad_crop_flip_matches_naive() -> None:
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(6, 5, 7, 3), dtype=np.uint8)
    params = transforms.cifar_params(rng, 6)
    out = transforms.pad_crop_flip(images, params)
    padded = np.pad(images, ((0, 0), (4, 4), (4, 4), (0, 0)))
    for i, (dy, dx, flip) in enumerate(params):
        crop = padded[i, dy : dy + 5, dx : dx + 7]
        np.testing.assert_array_equal(out[i], crop[:, ::-1] if flip else crop)


def test_imagenet_crops() -> None:
    rng = np.random.default_rng(0)
    boxes = np.array([transforms.random_resized_crop_box(30, 40, rng) for _ in range(500)])
    top, left, h, w = boxes.T
    assert (top >= 0).all() and (left >= 0).all()
    assert (top + h <= 30).all() and (left + w <= 40).all()
    assert (h * w >= 0.08 * 1200 * 0.8).all()  # rounding slack
    image = np.zeros((100, 300, 3), np.uint8)
    image[:, 150:] = 255
    out = transforms.imagenet_eval(image, 64)  # shorter side -> 73, centre 64x64
    assert out.shape == (64, 64, 3)
    assert out[:, :30].max() < 50 and out[:, 34:].min() > 200
    grey = rng.integers(0, 256, size=(9, 13, 1), dtype=np.uint8)
    assert transforms.imagenet_train(grey, 16, rng).shape == (16, 16, 1)
