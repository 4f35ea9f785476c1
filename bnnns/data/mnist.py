"""MNIST from the IDX files shipped in ``bnnns/data/mnist_idx`` (md5-verified on load).

Each file is read fully, gunzipped, and the md5 of the decompressed bytes is checked against
the values published with the data before the IDX header is parsed. Parsed arrays are cached
(keyed by path, size and mtime) and returned read-only.
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import zlib
from pathlib import Path

import numpy as np

DEFAULT_DIR = Path(__file__).resolve().parent / "mnist_idx"
MEAN = (0.1307,)
STD = (0.3081,)
NUM_CLASSES = 10

# (file stem, md5 of the decompressed file, IDX magic number)
FILES: dict[str, tuple[str, str, int]] = {
    "train_images": ("train-images-idx3-ubyte", "6bbc9ace898e44ae57da46a324031adb", 0x803),
    "train_labels": ("train-labels-idx1-ubyte", "a25bea736e30d166cdddb491f175f624", 0x801),
    "test_images": ("t10k-images-idx3-ubyte", "2646ac647ad5339dbf082846283269ea", 0x803),
    "test_labels": ("t10k-labels-idx1-ubyte", "27ae3e4e09519cfbb04c329615203637", 0x801),
}


def _locate(directory: Path, stem: str, md5: str) -> Path:
    """Returns ``<stem>.gz`` or, failing that, the uncompressed ``<stem>`` in ``directory``."""
    for candidate in (directory / f"{stem}.gz", directory / stem):
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(
        f"MNIST file {directory / (stem + '.gz')} not found (nor uncompressed {stem}): "
        f"expected md5 {md5} of the decompressed data, got no file. Point data_dir at a "
        f"directory holding the four MNIST IDX files (default: {DEFAULT_DIR})."
    )


def _read_verified(path: Path, md5: str) -> bytes:
    """Reads (and gunzips) ``path`` and checks the md5 of the decompressed bytes."""
    raw = path.read_bytes()
    if path.suffix == ".gz":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as err:
            raise ValueError(
                f"MNIST file {path} is corrupt: expected md5 {md5} of the decompressed data, "
                f"got an undecompressable gzip stream ({err})."
            ) from err
    got = hashlib.md5(raw).hexdigest()
    if got != md5:
        raise ValueError(
            f"MNIST file {path} failed its checksum: expected md5 {md5} of the decompressed "
            f"data, got {got}. Replace it with the original file."
        )
    return raw


def _parse_idx(data: bytes, path: Path, magic: int) -> np.ndarray:
    """Parses an IDX (uint8) payload into a read-only array."""
    got_magic = int.from_bytes(data[:4], "big")
    if got_magic != magic:
        raise ValueError(f"MNIST file {path}: IDX magic {got_magic:#x}, expected {magic:#x}.")
    ndim = data[3]
    dims = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    array = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim)
    if array.size != int(np.prod(dims)):
        raise ValueError(f"MNIST file {path}: {array.size} values, header says {dims}.")
    return array.reshape(dims)


@functools.lru_cache(maxsize=4)
def _load_cached(directory: str, _stamp: tuple[tuple[int, int], ...]) -> dict[str, np.ndarray]:
    """Loads all four files; ``_stamp`` (sizes, mtimes) only keys the cache."""
    out = {}
    for key, (stem, md5, magic) in FILES.items():
        path = _locate(Path(directory), stem, md5)
        out[key] = _parse_idx(_read_verified(path, md5), path, magic)
    return out


def load_mnist(data_dir: str | Path | None = None) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Loads MNIST from IDX files, verifying each file's md5.

    Args:
        data_dir: Directory with the four IDX files (``.gz`` or uncompressed). Defaults to the
            copy shipped in ``bnnns/data/mnist_idx``.

    Returns:
        ``{"train": (images, labels), "test": (images, labels)}`` with read-only uint8 images
        ``(N, 28, 28, 1)`` and int32 labels ``(N,)``.

    Raises:
        FileNotFoundError: A file is missing (the message names it and its expected md5).
        ValueError: A file is corrupt (the message names it, the expected and the got md5).
    """
    directory = Path(data_dir) if data_dir is not None else DEFAULT_DIR
    stamp = []
    for stem, md5, _ in FILES.values():
        stat = _locate(directory, stem, md5).stat()
        stamp.append((stat.st_size, stat.st_mtime_ns))
    arrays = _load_cached(str(directory.resolve()), tuple(stamp))
    result = {}
    for split in ("train", "test"):
        images = arrays[f"{split}_images"][..., None]
        labels = arrays[f"{split}_labels"].astype(np.int32)
        labels.flags.writeable = False
        if len(images) != len(labels):
            raise ValueError(f"MNIST {split}: {len(images)} images but {len(labels)} labels.")
        result[split] = (images, labels)
    return result
