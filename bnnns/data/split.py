"""Random-access split container and dataset metadata.

A :class:`Split` pairs an image column with a label column. A column is either an in-memory
``np.ndarray`` or a lazy object with ``__len__`` and ``__getitem__(indices: np.ndarray)``
(for example :class:`bnnns.data.tfds_source.TfdsImages`), so a split never needs to hold the
whole dataset in memory.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Protocol

import numpy as np

AUGMENTS = ("none", "cifar", "imagenet")


class Column(Protocol):
    """A random-access column: ``column[indices]`` returns the rows at ``indices``."""

    def __len__(self) -> int:
        """Returns the number of rows."""
        ...

    def __getitem__(self, indices: np.ndarray) -> Any:
        """Returns the rows at a 1-D integer array of indices."""
        ...


class IndexedView:
    """Lazy row subset of a column that cannot subset itself.

    Args:
        base: The column to view.
        rows: Row numbers of ``base`` that make up the view, in order.
    """

    def __init__(self, base: Column, rows: np.ndarray) -> None:
        self._base = base
        self._rows = np.asarray(rows, dtype=np.int64)

    def __len__(self) -> int:
        """Returns the number of rows in the view."""
        return len(self._rows)

    def __getitem__(self, indices: np.ndarray) -> Any:
        """Returns the rows at ``indices`` (positions inside the view)."""
        return self._base[self._rows[np.asarray(indices, dtype=np.int64)]]

    def __array__(self, dtype: Any = None, copy: bool | None = None) -> np.ndarray:
        """Materialises the whole view (reads every row)."""
        return np.asarray(self[np.arange(len(self))], dtype=dtype)


def take_rows(column: Column | np.ndarray, rows: np.ndarray) -> Column | np.ndarray:
    """Returns the rows ``rows`` of a column, lazily when the column is lazy.

    Args:
        column: An ``np.ndarray`` (copied by fancy indexing), an object with a ``subset(rows)``
            method (asked to subset itself) or any other column (wrapped in
            :class:`IndexedView`).
        rows: 1-D integer row numbers.

    Returns:
        A column of ``len(rows)`` rows.
    """
    rows = np.asarray(rows, dtype=np.int64)
    if isinstance(column, np.ndarray):
        return column[rows]
    subset = getattr(column, "subset", None)
    if callable(subset):
        return subset(rows)
    return IndexedView(column, rows)


@dataclasses.dataclass(frozen=True)
class Split:
    """One split of a dataset, held as a random-access source.

    Attributes:
        images: Image column. ``images[idx]`` gives ``(n, H, W, C)`` uint8 or float rows for a
            fixed-shape dataset, or a 1-D object array of ``(H_i, W_i, C)`` uint8 arrays for a
            variable-size one (e.g. ImageNet from TFDS).
        labels: Integer label column of the same length: an int32 ``np.ndarray`` for in-memory
            datasets; for TFDS a lazy column (``np.asarray(split.labels)`` reads every record).
    """

    images: Column | np.ndarray
    labels: Column | np.ndarray

    def __post_init__(self) -> None:
        """Checks that the two columns have the same length."""
        if len(self.images) != len(self.labels):
            raise ValueError(
                f"Split images and labels differ in length: {len(self.images)} images vs "
                f"{len(self.labels)} labels."
            )

    def __len__(self) -> int:
        """Returns the number of examples."""
        return len(self.labels)

    def get(self, indices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Reads the examples at ``indices``.

        Args:
            indices: 1-D integer array of row numbers in ``[0, len(self))``.

        Returns:
            ``(images, labels)``: images as described for :attr:`images`, labels int32 ``(n,)``.

        Raises:
            IndexError: If an index is out of range.
        """
        idx = np.asarray(indices, dtype=np.int64).reshape(-1)
        if idx.size and (idx.min() < 0 or idx.max() >= len(self)):
            raise IndexError(f"Split index out of range [0, {len(self)}): {idx}")
        reader = getattr(self.images, "get_with_labels", None)
        if callable(reader):
            images, labels = reader(idx)
        else:
            images, labels = self.images[idx], self.labels[idx]
        return images, np.asarray(labels, dtype=np.int32)

    def take(self, rows: np.ndarray) -> Split:
        """Returns the sub-split made of ``rows`` (in that order).

        Args:
            rows: 1-D integer row numbers.

        Returns:
            A new :class:`Split`; lazy columns stay lazy.
        """
        return Split(take_rows(self.images, rows), take_rows(self.labels, rows))


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
    """Metadata the model and the input pipeline need.

    Attributes:
        name: Dataset name, e.g. ``"mnist"`` or ``"cifar10"``.
        image_shape: ``(H, W, C)`` of the model input after preprocessing.
        num_classes: Number of label classes.
        num_train: Examples in the returned ``"train"`` split (after carve and subset).
        num_test: Examples in the ``"test"`` split.
        augment: ``"none"``, ``"cifar"`` or ``"imagenet"``.
        num_validation: Examples in the ``"validation"`` split (0 when none).
        mean: Per-channel (or one shared) mean, subtracted after scaling uint8 to ``[0, 1]``.
        std: Per-channel (or one shared) standard deviation, divided out after the mean.
    """

    name: str
    image_shape: tuple[int, int, int]
    num_classes: int
    num_train: int
    num_test: int
    augment: str
    num_validation: int = 0
    mean: tuple[float, ...] = (0.0,)
    std: tuple[float, ...] = (1.0,)

    def __post_init__(self) -> None:
        """Validates ``augment`` and the normalisation statistics."""
        if self.augment not in AUGMENTS:
            raise ValueError(f"augment must be one of {AUGMENTS}, got {self.augment!r}.")
        channels = self.image_shape[2]
        lengths_ok = all(len(v) in (1, channels) for v in (self.mean, self.std))
        if not lengths_ok or any(s <= 0 for s in self.std):
            raise ValueError(
                f"mean and std need 1 or {channels} (channels) entries and std > 0, got "
                f"mean={self.mean}, std={self.std}."
            )


@dataclasses.dataclass(frozen=True)
class RawDataset:
    """What a source loader returns before the validation carve and subsetting.

    Attributes:
        name: Dataset name.
        train: Full training split.
        test: Evaluation split.
        num_classes: Number of classes.
        augment: ``"none"``, ``"cifar"`` or ``"imagenet"``.
        image_shape: Stored ``(H, W, C)``; ``H``/``W`` are ``None`` for variable-size images.
        mean: Known per-channel mean, or ``None`` to compute it from the training split.
        std: Known per-channel std, or ``None`` to compute it from the training split.
    """

    name: str
    train: Split
    test: Split
    num_classes: int
    augment: str
    image_shape: tuple[int | None, int | None, int]
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
