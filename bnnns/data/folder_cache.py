"""The on-disk cache of decoded image folders (:mod:`bnnns.data.folder`).

One uncompressed ``.npz`` per folder, named by a key: the SHA-256 of the cache format version
and every image file's relative name, size and ``mtime_ns``. Adding, removing, renaming or
rewriting any image gives another key, so a stale cache is never found. Where it lives:
``<dir>/.bnnns_cache/`` when that can be written, else
``$XDG_CACHE_HOME/bnnns/folder/<hash of dir's real path>/`` (default ``~/.cache/bnnns/...``); a
read looks in both, in that order.

A cache file is written to a temporary file in the same folder, flushed to disk and renamed, so a
reader never sees half a file; the previous cache files of the folder are then removed. A cache
file is never trusted: a read checks the stored key, the array names, dtypes and shapes, and that
the labels equal the ones the scan of the folder gives; anything else (a damaged zip, a bad
CRC-32, a missing array) warns with :class:`FolderCacheWarning` and the folder is decoded again.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import time
import warnings
from collections.abc import Iterable, Mapping
from pathlib import Path

import numpy as np

CACHE_VERSION = 1  # bump when the decode rules or the file layout change
IN_TREE = ".bnnns_cache"
PREFIX = "folder-"
_TMP_PREFIX = ".tmp-"
_TMP_MAX_AGE_S = 3600.0  # a temporary file older than this is left over from a killed writer


class FolderCacheWarning(UserWarning):
    """A cache file was unusable (and is rebuilt) or could not be written anywhere."""


def cache_key(files: Iterable[tuple[str, int, int]]) -> str:
    """SHA-256 hex digest of ``(relative name, size, mtime_ns)`` of every image, in order."""
    digest = hashlib.sha256(f"bnnns-folder-cache v{CACHE_VERSION}\n".encode())
    for name, size, mtime_ns in files:
        digest.update(f"{name}\0{size}\0{mtime_ns}\n".encode("utf-8", "surrogateescape"))
    return digest.hexdigest()


def cache_dirs(root: Path) -> list[Path]:
    """Where the cache of ``root`` may live, in the order they are tried."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    real = os.path.realpath(root).encode("utf-8", "surrogateescape")
    user = Path(base) / "bnnns" / "folder" / hashlib.sha256(real).hexdigest()[:16]
    return [root / IN_TREE, user]


def _file_name(key: str) -> str:
    return f"{PREFIX}{key[:32]}.npz"


def read(
    root: Path, key: str, classes: tuple[str, ...], labels: Mapping[str, np.ndarray]
) -> tuple[dict[str, np.ndarray], Path] | None:
    """Returns ``({"x_<split>": images}, path)`` from a valid cache file of ``root``, else None.

    Args:
        root: The image folder.
        key: :func:`cache_key` of its files.
        classes: Class names the scan found, in label order.
        labels: ``split -> int32 labels`` the scan gives; the cached labels must equal them.
    """
    for directory in cache_dirs(root):
        path = directory / _file_name(key)
        if not path.is_file():
            continue
        try:
            return _read_checked(path, key, classes, labels), path
        except Exception as err:  # noqa: BLE001 - any failure means "do not trust it"
            warnings.warn(
                f"{path}: unusable image-folder cache ({type(err).__name__}: {err}); "
                "decoding the images again.",
                FolderCacheWarning,
                stacklevel=3,
            )
    return None


def _read_checked(
    path: Path, key: str, classes: tuple[str, ...], labels: Mapping[str, np.ndarray]
) -> dict[str, np.ndarray]:
    """Loads every array of ``path`` and checks it against the scan; raises on any mismatch."""
    with np.load(path, allow_pickle=False) as npz:
        stored = {name: npz[name] for name in npz.files}  # reads all: a bad CRC-32 raises here
    expected = {"key", "classes"} | {f"{p}_{s}" for s in labels for p in ("x", "y")}
    if set(stored) != expected:
        raise ValueError(f"arrays {sorted(stored)}, expected {sorted(expected)}")
    if str(stored["key"]) != key:
        raise ValueError("stored key differs from the file name's")
    if tuple(str(c) for c in stored["classes"]) != classes:
        raise ValueError("class names differ from the folder's")
    images = {}
    for split, want in labels.items():
        x, y = stored[f"x_{split}"], stored[f"y_{split}"]
        if x.dtype != np.uint8 or x.ndim != 4 or len(x) != len(want) or x.shape[-1] not in (1, 3):
            raise ValueError(f"x_{split} has dtype {x.dtype} and shape {x.shape}")
        if y.dtype != np.int32 or not np.array_equal(y, want):
            raise ValueError(f"y_{split} differs from the folder's labels")
        images[f"x_{split}"] = x
    shapes = {x.shape[1:] for x in images.values()}
    if len(shapes) != 1:
        raise ValueError(f"splits have different image shapes {sorted(shapes)}")
    return images


def write(root: Path, key: str, arrays: Mapping[str, np.ndarray]) -> Path | None:
    """Writes ``arrays`` (plus ``key``) atomically to the first cache folder that takes it.

    Returns:
        The cache file's path, or None (with a :class:`FolderCacheWarning`) when no cache folder
        could be written; the data is still returned to the caller, only not cached.
    """
    problems = []
    for directory in cache_dirs(root):
        try:
            directory.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=_TMP_PREFIX, suffix=".npz", dir=directory)
        except OSError as err:
            problems.append(f"{directory}: {err}")
            continue
        path = directory / _file_name(key)
        try:
            with os.fdopen(fd, "wb") as f:
                np.savez(f, key=np.asarray(key), **arrays)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except OSError as err:  # e.g. disk full: try the next folder
            problems.append(f"{directory}: {err}")
            Path(tmp).unlink(missing_ok=True)
            continue
        _remove_old(directory, keep=path)
        return path
    warnings.warn(
        f"{root}: could not write the decoded-image cache ({'; '.join(problems)}); the next run "
        "decodes the images again.",
        FolderCacheWarning,
        stacklevel=3,
    )
    return None


def _remove_old(directory: Path, keep: Path) -> None:
    """Removes the folder's other cache files and temporary files left by killed writers."""
    now = time.time()
    for entry in directory.iterdir():
        try:
            if entry.name.startswith(PREFIX) and entry.suffix == ".npz" and entry != keep:
                entry.unlink()
            elif entry.name.startswith(_TMP_PREFIX):
                if now - entry.stat().st_mtime > _TMP_MAX_AGE_S:
                    entry.unlink()
        except OSError:
            pass  # another process removed it, or it is not ours to remove
