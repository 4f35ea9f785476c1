"""The deployed-model file format (``.bnn``): a JSON header plus raw arrays, checksummed.

Layout (all integers little-endian)::

    b"BNNNSART" | version: uint32 | header length: uint64 | header: UTF-8 JSON
    | body: the arrays' bytes, back to back | SHA-256 of everything before it (32 bytes)

The header describes the model (name, options, input shape, normalisation) and lists every
array as ``{"name", "dtype", "shape", "offset", "nbytes"}`` (offsets into the body). Binary
weights are stored as packed sign bits (:mod:`bnnns.core.packing`), real layers as float32. Files
are written to a temporary file in the target folder and renamed, so a crash never leaves a
half-written artifact; reading checks the magic, the version, every length and the checksum
and raises :class:`ArtifactError` naming what is wrong.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import struct
import tempfile
from typing import Any

import numpy as np

__all__ = [
    "Artifact",
    "ArtifactError",
    "FORMAT_VERSION",
    "MAGIC",
    "to_bytes",
    "from_bytes",
    "write",
    "read",
]

MAGIC = b"BNNNSART"
FORMAT_VERSION = 1
_PREFIX = struct.Struct("<8sIQ")  # magic, version, header length
_DIGEST = 32
DTYPES = ("float32", "int8", "uint8", "uint32", "int32")


class ArtifactError(ValueError):
    """A ``.bnn`` file that cannot be read: truncated, corrupted, or of another version."""


@dataclasses.dataclass(eq=False)
class Artifact:
    """A deployed model in memory: its ``header`` (JSON-able dict) and ``arrays`` by name."""

    header: dict[str, Any]
    arrays: dict[str, np.ndarray]
    cache: dict[str, Any] = dataclasses.field(default_factory=dict, repr=False, compare=False)

    @property
    def body_bytes(self) -> int:
        """Bytes of the arrays (the model's weights), without header and checksum."""
        return sum(int(a.nbytes) for a in self.arrays.values())


def to_bytes(artifact: Artifact) -> bytes:
    """Serialize (the header's ``arrays`` table is filled in here)."""
    table, chunks, offset = [], [], 0
    for name in sorted(artifact.arrays):
        a = np.asarray(artifact.arrays[name])
        if a.dtype.name not in DTYPES:
            raise ArtifactError(f"array {name!r}: dtype {a.dtype} not one of {DTYPES}")
        a = a.astype(a.dtype.newbyteorder("<"))
        table.append(
            {
                "name": name,
                "dtype": a.dtype.name,
                "shape": list(a.shape),
                "offset": offset,
                "nbytes": int(a.nbytes),
            }
        )
        chunks.append(a.tobytes())
        offset += a.nbytes
    header = dict(artifact.header, arrays=table, body_bytes=offset)
    head = json.dumps(header, sort_keys=True).encode("utf-8")
    data = _PREFIX.pack(MAGIC, FORMAT_VERSION, len(head)) + head + b"".join(chunks)
    return data + hashlib.sha256(data).digest()


def from_bytes(data: bytes, source: str = "artifact") -> Artifact:
    """Parse and verify; raises :class:`ArtifactError` naming the problem."""
    if len(data) < _PREFIX.size:
        raise ArtifactError(
            f"{source} is truncated: {len(data)} bytes, shorter than the {_PREFIX.size}-byte prefix"
        )
    magic, version, head_len = _PREFIX.unpack_from(data)
    if magic != MAGIC:
        raise ArtifactError(f"{source} is not a bnnns artifact (magic {magic!r}, want {MAGIC!r})")
    if version != FORMAT_VERSION:
        raise ArtifactError(
            f"{source} has format version {version}; this bnnns reads version {FORMAT_VERSION}"
        )
    head_end = _PREFIX.size + head_len
    if len(data) < head_end + _DIGEST:
        raise ArtifactError(
            f"{source} is truncated: {len(data)} bytes, the header alone needs {head_end + _DIGEST}"
        )
    try:
        header = json.loads(data[_PREFIX.size : head_end].decode("utf-8"))
        body_len = int(header["body_bytes"])
        table = header["arrays"]
    except (ValueError, KeyError, TypeError) as e:
        raise ArtifactError(f"{source} has a corrupted header ({e})") from e
    expected = head_end + body_len + _DIGEST
    if len(data) != expected:
        what = "truncated" if len(data) < expected else "longer than its header says"
        raise ArtifactError(f"{source} is {what}: {len(data)} bytes, expected {expected}")
    digest = hashlib.sha256(data[: head_end + body_len]).digest()
    if digest != data[head_end + body_len :]:
        raise ArtifactError(f"{source}: checksum mismatch (SHA-256), the file is corrupted")
    arrays = {}
    for entry in table:
        start = head_end + entry["offset"]
        a = np.frombuffer(
            data,
            np.dtype(entry["dtype"]).newbyteorder("<"),
            offset=start,
            count=int(np.prod(entry["shape"], dtype=np.int64)),
        )
        arrays[entry["name"]] = a.reshape(entry["shape"]).astype(entry["dtype"])
    header = {k: v for k, v in header.items() if k not in ("arrays", "body_bytes")}
    return Artifact(header, arrays)


def write(artifact: Artifact, path: str | os.PathLike) -> int:
    """Write atomically (temporary file in the same folder, then rename); returns the size."""
    data = to_bytes(artifact)
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".bnn-", dir=folder)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    return len(data)


def read(path: str | os.PathLike) -> Artifact:
    """Read and verify a ``.bnn`` file."""
    path = os.fspath(path)
    if os.path.isdir(path):
        raise FileNotFoundError(f"artifact {path!r} is a directory, not a .bnn file")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"artifact {path!r} does not exist")
    with open(path, "rb") as f:
        return from_bytes(f.read(), source=f"artifact {path!r}")
