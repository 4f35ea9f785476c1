"""Image classification data from a ``.npz`` file with ``x_train, y_train, x_test, y_test``.

Images are ``N x H x W`` or ``N x H x W x C``, uint8 or floating point; labels are 1-D
non-negative integers. 2-D images get a channel axis. Every malformed input raises a
``ValueError`` (or ``FileNotFoundError``) naming the path, the offending key and what is allowed;
non-finite pixels raise :class:`~bnnns.errors.DataError` (a ``ValueError``) with their count,
and labels that imply far more classes than occur (a stray 999) warn with a
:class:`SparseLabelsWarning`.
"""

from __future__ import annotations

import warnings
import zipfile
from pathlib import Path

import numpy as np

from bnnns.errors import DataError

KEYS = ("x_train", "y_train", "x_test", "y_test")
_ALLOWED_IMAGES = "uint8 or floating-point arrays of shape (N, H, W) or (N, H, W, C)"
_ALLOWED_LABELS = "1-D integer arrays of non-negative class ids, one per image"


class SparseLabelsWarning(UserWarning):
    """Labels imply many more classes than occur: the model gets a head that large."""


def _check_images(path: Path, key: str, x: np.ndarray) -> np.ndarray:
    """Validates one image array and returns it as ``(N, H, W, C)``."""
    if x.ndim not in (3, 4):
        raise ValueError(
            f"{path}: '{key}' has ndim {x.ndim} (shape {x.shape}); allowed: {_ALLOWED_IMAGES}."
        )
    if x.dtype != np.uint8 and not np.issubdtype(x.dtype, np.floating):
        raise ValueError(f"{path}: '{key}' has dtype {x.dtype}; allowed: {_ALLOWED_IMAGES}.")
    if x.shape[0] == 0 or 0 in x.shape[1:]:
        raise ValueError(f"{path}: '{key}' is empty (shape {x.shape}); allowed: {_ALLOWED_IMAGES}.")
    if x.dtype != np.uint8:
        bad = int(x.size - np.count_nonzero(np.isfinite(x)))
        if bad:
            rows = np.unique(np.nonzero(~np.isfinite(x.reshape(len(x), -1)))[0])
            raise DataError(
                f"{path}: '{key}' has {bad} non-finite pixel value(s) (NaN or inf) in "
                f"{len(rows)} image(s), first row {int(rows[0])}; every pixel must be finite."
            )
    return x[..., None] if x.ndim == 3 else x


def _check_labels(path: Path, key: str, y: np.ndarray, num_images: int) -> np.ndarray:
    """Validates one label array against its image count and returns it as int32."""
    if y.ndim != 1 or not np.issubdtype(y.dtype, np.integer):
        raise ValueError(
            f"{path}: '{key}' has dtype {y.dtype} and shape {y.shape}; allowed: {_ALLOWED_LABELS}."
        )
    if len(y) != num_images:
        raise ValueError(
            f"{path}: '{key}' has {len(y)} labels but the images have {num_images} rows; "
            f"lengths must match."
        )
    if y.min() < 0 or y.max() > np.iinfo(np.int32).max:
        raise ValueError(
            f"{path}: '{key}' has labels in [{y.min()}, {y.max()}]; allowed: {_ALLOWED_LABELS}."
        )
    return y.astype(np.int32)


def load_npz(path: str | Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Loads and validates an ``.npz`` classification dataset.

    Args:
        path: File holding ``x_train, y_train, x_test, y_test``.

    Returns:
        ``{"train": (images, labels), "test": (images, labels)}``, images ``(N, H, W, C)`` in
        their stored dtype, labels int32.

    Raises:
        FileNotFoundError: If ``path`` does not exist.
        ValueError: If the file is not an npz, a key is missing, or an array is malformed.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"npz file {path} not found; expected a .npz holding arrays {', '.join(KEYS)}."
        )
    try:
        npz = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as err:
        raise ValueError(
            f"{path}: cannot read as an .npz archive of {', '.join(KEYS)} ({err})."
        ) from err
    if not isinstance(npz, np.lib.npyio.NpzFile):
        raise ValueError(f"{path}: holds a single array, not an .npz archive of {', '.join(KEYS)}.")
    with npz:
        missing = [k for k in KEYS if k not in npz.files]
        if missing:
            raise ValueError(
                f"{path}: missing key(s) {', '.join(missing)}; the npz must hold "
                f"{', '.join(KEYS)} (x_*: {_ALLOWED_IMAGES}; y_*: {_ALLOWED_LABELS})."
            )
        try:
            arrays = {k: npz[k] for k in KEYS}
        except (OSError, ValueError, EOFError, zipfile.BadZipFile) as err:
            raise ValueError(
                f"{path}: cannot read the arrays ({err}); allowed: x_*: {_ALLOWED_IMAGES}; "
                f"y_*: {_ALLOWED_LABELS}."
            ) from err
    out = {}
    for split in ("train", "test"):
        images = _check_images(path, f"x_{split}", arrays[f"x_{split}"])
        labels = _check_labels(path, f"y_{split}", arrays[f"y_{split}"], len(images))
        out[split] = (images, labels)
    _warn_sparse_labels(path, out["train"][1], out["test"][1])
    if out["train"][0].shape[1:] != out["test"][0].shape[1:]:
        raise ValueError(
            f"{path}: 'x_train' rows have shape {out['train'][0].shape[1:]} but 'x_test' rows "
            f"have {out['test'][0].shape[1:]}; they must match."
        )
    if out["train"][0].dtype != out["test"][0].dtype:
        raise ValueError(
            f"{path}: 'x_train' is {out['train'][0].dtype} but 'x_test' is "
            f"{out['test'][0].dtype}; they must have the same dtype."
        )
    return out


def _warn_sparse_labels(path: Path, y_train: np.ndarray, y_test: np.ndarray) -> None:
    """Warn when the largest label implies more than twice the classes that occur."""
    distinct = len(np.union1d(np.unique(y_train), np.unique(y_test)))
    implied = int(max(y_train.max(), y_test.max())) + 1
    if implied <= 2 * distinct:
        return
    for key, y in (("y_train", y_train), ("y_test", y_test)):
        stray = int(np.count_nonzero(y >= distinct))
        if stray:
            warnings.warn(
                f"{path}: '{key}' has {stray} label(s) >= {distinct} (largest {int(y.max())}): "
                f"the labels imply {implied} classes but only {distinct} distinct values occur, "
                f"so the model gets a {implied}-way head; relabel to 0..{distinct - 1} if "
                "these are stray values.",
                SparseLabelsWarning,
                stacklevel=3,
            )


def channel_stats(
    images: np.ndarray, chunk: int = 4096
) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and std of ``(N, H, W, C)`` images, uint8 scaled to ``[0, 1]``.

    Args:
        images: Image array; uint8 values are divided by 255, floats are used as they are.
        chunk: Rows per step (bounds the float64 temporaries).

    Returns:
        ``(mean, std)`` tuples of length C; a zero std is replaced by 1.
    """
    scale = 1.0 / 255.0 if images.dtype == np.uint8 else 1.0
    channels = images.shape[-1]
    total = np.zeros(channels)
    total_sq = np.zeros(channels)
    count = 0
    for start in range(0, len(images), chunk):
        block = images[start : start + chunk].reshape(-1, channels).astype(np.float64) * scale
        total += block.sum(axis=0)
        total_sq += np.square(block).sum(axis=0)
        count += len(block)
    mean = total / count
    std = np.sqrt(np.maximum(total_sq / count - np.square(mean), 0.0))
    std = np.where(std > 1e-12, std, 1.0)
    return tuple(float(m) for m in mean), tuple(float(s) for s in std)
