"""TFDS datasets as lazy random-access splits.

Primary path: ``tfds.data_source(name, split=..., data_dir=..., download=False)``, a TF-free
random-access reader over the ArrayRecord files of a prepared dataset; records are read and
decoded (numpy/PIL) only for the indices a batch asks for, so ImageNet never sits in memory.

Fallback: when the dataset is not prepared as ArrayRecord and ``tensorflow`` is importable,
fixed-shape (small) datasets are read whole with ``tfds.load(..., batch_size=-1)`` (tf.data)
into numpy. Otherwise a ``ValueError`` says how to prepare the data
(``tfds build --file_format=array_record <name>``).
"""

from __future__ import annotations

import copy
import importlib.util
from typing import Any

import numpy as np

from bnnns.data import mnist, transforms
from bnnns.data.split import RawDataset, Split

KNOWN_STATS: dict[str, tuple[tuple[float, ...], tuple[float, ...]]] = {
    "mnist": (mnist.MEAN, mnist.STD),
    "fashion_mnist": ((0.2860,), (0.3530,)),
    "cifar10": (transforms.CIFAR10_MEAN, transforms.CIFAR10_STD),
    "cifar100": (transforms.CIFAR100_MEAN, transforms.CIFAR100_STD),
    "imagenet2012": (transforms.IMAGENET_MEAN, transforms.IMAGENET_STD),
    "imagenet2012_subset": (transforms.IMAGENET_MEAN, transforms.IMAGENET_STD),
}
CIFAR_NAMES = frozenset({"cifar10", "cifar100"})
# Datasets whose labelled evaluation split is not called "test".
EVAL_SPLITS = {"imagenet2012": "validation", "imagenet2012_subset": "validation"}


def base_name(name: str) -> str:
    """Strips the config and version from a TFDS name (``"a/b:1.0.0"`` -> ``"a"``)."""
    return name.split("/")[0].split(":")[0]


class _TfdsColumn:
    """Shared row mapping and record reading for the TFDS columns."""

    def __init__(self, source: Any, rows: np.ndarray | None = None) -> None:
        self._source = source
        self._rows = rows

    def __len__(self) -> int:
        """Returns the number of rows."""
        return len(self._source) if self._rows is None else len(self._rows)

    def _records(self, indices: np.ndarray) -> list[dict[str, Any]]:
        """Reads and decodes the records at ``indices`` (one ``source[i]`` each)."""
        idx = np.asarray(indices, dtype=np.int64).reshape(-1)
        if self._rows is not None:
            idx = self._rows[idx]
        return [self._source[int(i)] for i in idx]

    def subset(self, rows: np.ndarray) -> _TfdsColumn:
        """Returns a lazy view of ``rows`` (positions in this column)."""
        rows = np.asarray(rows, dtype=np.int64)
        new_rows = rows if self._rows is None else self._rows[rows]
        clone = copy.copy(self)
        clone._rows = new_rows
        return clone

    def __array__(self, dtype: Any = None, copy: bool | None = None) -> np.ndarray:
        """Materialises the column (reads and decodes every record)."""
        return np.asarray(self[np.arange(len(self))], dtype=dtype)

    def __getitem__(self, indices: np.ndarray) -> np.ndarray:
        """Returns the rows at ``indices``."""
        raise NotImplementedError


class TfdsLabels(_TfdsColumn):
    """Lazy int32 label column of a TFDS data source."""

    def __getitem__(self, indices: np.ndarray) -> np.ndarray:
        """Returns int32 labels at ``indices``."""
        return np.asarray([r["label"] for r in self._records(indices)], dtype=np.int32)


class TfdsImages(_TfdsColumn):
    """Lazy image column of a TFDS data source.

    Args:
        source: A ``tfds.data_source`` split.
        image_shape: Feature shape ``(H, W, C)``; ``H``/``W`` ``None`` for variable size.
        rows: Optional row mapping (set by :meth:`subset`).
    """

    def __init__(
        self,
        source: Any,
        image_shape: tuple[int | None, int | None, int],
        rows: np.ndarray | None = None,
    ) -> None:
        super().__init__(source, rows)
        self._shape = image_shape

    def _stack(self, images: list[np.ndarray]) -> np.ndarray:
        """Stacks fixed-shape images, or packs variable-size ones in an object array."""
        channels = self._shape[2]
        images = [transforms.to_channels(np.asarray(im), channels) for im in images]
        if None not in self._shape:
            if not images:
                return np.zeros((0, *self._shape), dtype=np.uint8)
            return np.stack(images)
        packed = np.empty(len(images), dtype=object)
        for i, image in enumerate(images):
            packed[i] = image
        return packed

    def __getitem__(self, indices: np.ndarray) -> np.ndarray:
        """Returns the images at ``indices`` (see :attr:`bnnns.data.Split.images`)."""
        return self._stack([r["image"] for r in self._records(indices)])

    def get_with_labels(self, indices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Reads images and labels at ``indices`` with one record read each."""
        records = self._records(indices)
        labels = np.asarray([r["label"] for r in records], dtype=np.int32)
        return self._stack([r["image"] for r in records]), labels


def _not_prepared_error(
    builder: Any, name: str, data_dir: str | None, cause: Exception
) -> ValueError:
    """Builds the error raised when no TF-free reader is available."""
    if builder.is_prepared():
        problem = (
            f"it is prepared at {builder.data_dir} in a format without random access "
            f"({type(cause).__name__}: {cause})"
        )
    else:
        problem = f"it is not prepared at {builder.data_dir}"
    dir_flag = f" --data_dir={data_dir}" if data_dir else ""
    return ValueError(
        f"TFDS dataset '{name}' cannot be read with tfds.data_source: {problem}. bnnns reads "
        f"TFDS data TF-free from ArrayRecord files: prepare it once with "
        f"`tfds build --file_format=array_record{dir_flag} {name}` (ImageNet needs its tar "
        f"files in <data_dir>/downloads/manual first). For small fixed-shape datasets, "
        f"installing tensorflow enables a tf.data fallback instead."
    )


def _load_with_tf(name: str, splits: tuple[str, str], data_dir: str | None) -> list[Split]:
    """Reads whole splits into numpy with ``tfds.load(batch_size=-1)`` (needs tensorflow)."""
    import tensorflow_datasets as tfds

    loaded = tfds.as_numpy(tfds.load(name, split=list(splits), batch_size=-1, data_dir=data_dir))
    out = []
    for data in loaded:
        images = np.asarray(data["image"])
        out.append(Split(images, np.asarray(data["label"], dtype=np.int32)))
    return out


def load_tfds(name: str, data_dir: str | None = None) -> RawDataset:
    """Opens the train and evaluation splits of a TFDS image classification dataset.

    Args:
        name: TFDS name, optionally with config/version (``"cifar10"``, ``"imagenet2012"``).
        data_dir: TFDS data directory (``None``: the TFDS default).

    Returns:
        A :class:`RawDataset` with lazy splits (or in-memory ones via the tf.data fallback).

    Raises:
        ValueError: Unknown dataset, missing ``image``/``label`` features, or data not
            prepared in ArrayRecord format (with no usable fallback).
    """
    import tensorflow_datasets as tfds

    try:
        builder = tfds.builder(name, data_dir=data_dir)
    except tfds.core.registered.DatasetNotFoundError:
        raise ValueError(
            f"Unknown TFDS dataset '{name}' (spec 'tfds:{name}'); see `tfds.list_builders()`."
        ) from None
    features = builder.info.features
    if "image" not in features or "label" not in features:
        raise ValueError(
            f"TFDS dataset '{name}' has features {sorted(features.keys())}; bnnns needs "
            f"'image' and 'label'."
        )
    shape = tuple(features["image"].shape)
    image_shape = (shape[0], shape[1], shape[2] if len(shape) > 2 and shape[2] else 3)
    num_classes = int(features["label"].num_classes)
    base = base_name(name)
    available = set(builder.info.splits.keys())
    eval_split = EVAL_SPLITS.get(base, "test")
    if available and eval_split not in available and "validation" in available:
        eval_split = "validation"
    splits = ("train", eval_split)
    try:
        sources = [
            tfds.data_source(name, split=s, data_dir=data_dir, download=False) for s in splits
        ]
        train, test = (Split(TfdsImages(src, image_shape), TfdsLabels(src)) for src in sources)
    except (NotImplementedError, FileNotFoundError, ValueError, AssertionError) as err:
        has_tf = importlib.util.find_spec("tensorflow") is not None
        if not has_tf or None in image_shape:
            raise _not_prepared_error(builder, name, data_dir, err) from err
        train, test = _load_with_tf(name, splits, data_dir)
    if None in image_shape or base.startswith("imagenet"):
        augment = "imagenet"
    elif base in CIFAR_NAMES:
        augment = "cifar"
    else:
        augment = "none"
    mean, std = KNOWN_STATS.get(base, (None, None))
    if mean is None and augment == "imagenet":
        mean, std = transforms.IMAGENET_MEAN, transforms.IMAGENET_STD
    return RawDataset(base, train, test, num_classes, augment, image_shape, mean, std)
