"""``load_dataset``: spec parsing, validation carve, train subset and normalisation stats."""

from __future__ import annotations

import dataclasses

import numpy as np

from bnnns.data import folder, mnist, npz, tfds_source
from bnnns.data.split import AUGMENTS, DatasetInfo, RawDataset, Split

SPEC_FORMS = (
    '"mnist", "tfds:<name>" (e.g. "tfds:cifar10"), "npz:<path>" or "folder:<dir>" '
    "(one folder of images per class)"
)
DEFAULT_IMAGENET_SIZE = 224
STATS_SAMPLE = 2048  # images read to estimate mean/std of a lazy split with unknown stats


def _in_memory(
    name: str,
    arrays: dict[str, tuple[np.ndarray, np.ndarray]],
    mean: tuple[float, ...] | None = None,
    std: tuple[float, ...] | None = None,
) -> RawDataset:
    """Wraps ``{"train": (x, y), "test": (x, y)}`` numpy arrays as a :class:`RawDataset`."""
    train, test = (Split(*arrays[s]) for s in ("train", "test"))
    num_classes = int(max(np.max(train.labels), np.max(test.labels))) + 1
    shape = tuple(int(d) for d in arrays["train"][0].shape[1:])
    return RawDataset(name, train, test, num_classes, "none", shape, mean, std)


def _open(spec: str, data_dir: str | None) -> RawDataset:
    """Dispatches on the spec form."""
    kind, _, arg = spec.partition(":")
    if spec == "mnist":
        arrays = mnist.load_mnist(data_dir)
        return _in_memory("mnist", arrays, mnist.MEAN, mnist.STD)
    if kind == "npz" and arg:
        return _in_memory("npz", npz.load_npz(arg))
    if kind == "folder" and arg:
        arrays, _ = folder.load_folder(arg)
        return _in_memory("folder", arrays)
    if kind == "tfds" and arg:
        return tfds_source.load_tfds(arg, data_dir)
    raise ValueError(f"Unknown dataset spec {spec!r}; allowed: {SPEC_FORMS}.")


def _carve(train: Split, fraction: float, seed: int) -> tuple[Split, Split | None]:
    """Moves a fixed random ``fraction`` of ``train`` into a validation split."""
    if not 0.0 <= fraction < 1.0:
        raise ValueError(f"validation_fraction must be in [0, 1), got {fraction}.")
    if fraction == 0.0:
        return train, None
    n = len(train)
    num_val = max(1, int(round(fraction * n)))
    if num_val >= n:
        raise ValueError(f"validation_fraction {fraction} leaves no training rows (of {n}).")
    perm = np.random.default_rng(seed).permutation(n)
    val_rows, train_rows = np.sort(perm[:num_val]), np.sort(perm[num_val:])
    return train.take(train_rows), train.take(val_rows)


def _stats(raw: RawDataset, train: Split) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Known stats, else per-channel stats of the (carved) train split."""
    if raw.mean is not None and raw.std is not None:
        return raw.mean, raw.std
    if isinstance(train.images, np.ndarray):
        return npz.channel_stats(train.images)
    rows = np.unique(np.linspace(0, len(train) - 1, num=min(len(train), STATS_SAMPLE)).astype(int))
    return npz.channel_stats(np.asarray(train.get(rows)[0]))


def _head(split: Split, rows: int | None, name: str) -> Split:
    """The first ``rows`` rows of ``split`` (all of them when ``rows`` is None or larger)."""
    if rows is None:
        return split
    if rows <= 0:
        raise ValueError(f"{name} must be positive, got {rows}.")
    return split.take(np.arange(min(rows, len(split))))


def load_dataset(
    spec: str,
    *,
    data_dir: str | None = None,
    validation_fraction: float = 0.0,
    validation_seed: int = 0,
    train_subset: int | None = None,
    eval_subset: int | None = None,
    image_size: int | None = None,
    augment: str | None = None,
) -> tuple[dict[str, Split], DatasetInfo]:
    """Loads a dataset as random-access splits plus its metadata.

    Args:
        spec: ``"mnist"`` (shipped IDX files, md5-verified), ``"tfds:<name>"`` (TF-free
            ``tfds.data_source``), ``"npz:<path>"`` (``x_train, y_train, x_test, y_test``) or
            ``"folder:<dir>"`` (JPEG/PNG files, one folder per class; :mod:`bnnns.data.folder`).
        data_dir: For ``"mnist"``, a directory holding the four IDX files (default: the
            shipped copy); for ``"tfds:"``, the TFDS data directory; unused for ``"npz:"``
            and ``"folder:"``.
        validation_fraction: Fraction of the training rows moved into a ``"validation"``
            split, chosen by a permutation seeded with ``validation_seed``.
        validation_seed: Seed of the validation carve.
        train_subset: Keep only the first ``train_subset`` training rows (after the carve).
        eval_subset: Keep only the first ``eval_subset`` rows of the test and validation splits
            (smoke tests and quick runs: accuracies are then of that subset).
        image_size: Model input side for variable-size (imagenet-style) datasets, default 224.
            For fixed-shape datasets it must be ``None`` or equal to the stored square size.
        augment: The training augmentation, ``None`` for the data set's own (``"cifar"`` for
            CIFAR, ``"imagenet"`` for ImageNet-style sets, ``"none"`` otherwise, e.g. a folder);
            ``"none"`` or ``"cifar"`` (pad-4 random crop + horizontal flip) for a fixed-size
            set. ``"imagenet"`` is only the variable-size sets' own.

    Returns:
        ``(splits, info)``: ``splits`` has ``"train"``, ``"test"`` and, when
        ``validation_fraction > 0``, ``"validation"``.

    Raises:
        ValueError: Unknown spec, malformed data or arguments out of range.
        FileNotFoundError: A data file is missing.
    """
    raw = _open(spec, data_dir)
    if augment is not None and augment != raw.augment:
        if "imagenet" in (augment, raw.augment) or augment not in AUGMENTS:
            raise ValueError(
                f"augment={augment!r} is not available for {raw.name} (augment {raw.augment!r}): "
                f"a fixed-size data set takes 'none' or 'cifar'"
            )
        raw = dataclasses.replace(raw, augment=augment)
    train, validation = _carve(raw.train, validation_fraction, validation_seed)
    mean, std = _stats(raw, train)
    train = _head(train, train_subset, "train_subset")
    test = _head(raw.test, eval_subset, "eval_subset")
    if validation is not None:
        validation = _head(validation, eval_subset, "eval_subset")
    height, width, channels = raw.image_shape
    if raw.augment == "imagenet":
        size = image_size or DEFAULT_IMAGENET_SIZE
        if size <= 0:
            raise ValueError(f"image_size must be positive, got {size}.")
        image_shape = (size, size, channels)
    else:
        if image_size is not None and not image_size == height == width:
            raise ValueError(
                f"image_size={image_size} is only supported for variable-size (imagenet-style) "
                f"datasets; {raw.name} has fixed {height}x{width} images (use image_size=None)."
            )
        image_shape = (int(height), int(width), int(channels))
    splits = {"train": train, "test": test}
    if validation is not None:
        splits["validation"] = validation
    info = DatasetInfo(
        name=raw.name,
        image_shape=image_shape,
        num_classes=raw.num_classes,
        num_train=len(train),
        num_test=len(test),
        augment=raw.augment,
        num_validation=0 if validation is None else len(validation),
        mean=tuple(mean),
        std=tuple(std),
    )
    return splits, info
