"""A workdir that cannot be written (full disk, read-only, no permission) as one clear error.

The trainer writes its workdir in many places: the lock, ``config.json``, ``metrics.jsonl``,
TensorBoard events and, from orbax's background threads, the checkpoints (where a full disk
arrives as a ``ValueError: RESOURCE_EXHAUSTED ... No space left on device`` of tensorstore).
:func:`workdir_write_errors` turns any of these into a :class:`~bnnns.errors.WorkdirError` of
one line that names the file, says what happened and what is still safe (docs/reliability.md);
the rerun after the disk is freed resumes from the newest intact checkpoint.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
from collections.abc import Iterator

from bnnns.errors import UserError, WorkdirError

__all__ = ["WRITE_ERRNOS", "saved_checkpoints", "workdir_write_error", "workdir_write_errors"]

# errno -> what it means for the run: a full disk is temporary, the others are not.
WRITE_ERRNOS = {
    errno.ENOSPC: "the disk is full",
    errno.EDQUOT: "the disk quota is exceeded",
    errno.EFBIG: "a file grew past the size limit",
    errno.EROFS: "the file system is read-only",
    errno.EACCES: "permission denied",
    errno.EPERM: "operation not permitted",
}
_FULL = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)
_QUOTED_PATH = re.compile(r'"(/[^"]+)"')


def _chain(error: BaseException) -> Iterator[BaseException]:
    seen = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        yield error
        error = error.__cause__ or error.__context__


def _errno_and_path(error: BaseException) -> tuple[int, str | None] | None:
    """The write errno and file of ``error`` (or one it was raised from), else None."""
    for e in _chain(error):
        if isinstance(e, OSError) and e.errno in WRITE_ERRNOS:
            return e.errno, e.filename if isinstance(e.filename, str) else None
        text = str(e)  # tensorstore (orbax) errors carry the OS error as text only
        for code in WRITE_ERRNOS:
            if os.strerror(code) in text or f"os_error_code='{code}'" in text:
                paths = _QUOTED_PATH.findall(text)
                return code, paths[-1] if paths else None
    return None


def saved_checkpoints(workdir: str) -> str:
    """``"pretrain step 8, lns step 3"``: the newest finished checkpoint of each stage."""
    root = os.path.join(workdir, "checkpoints")
    found = []
    for stage in ("pretrain", "finetune", "lns"):
        try:
            steps = [int(p) for p in os.listdir(os.path.join(root, stage)) if p.isdigit()]
        except OSError:
            continue
        if steps:
            found.append(f"{stage} step {max(steps)}")
    return ", ".join(found) or "none yet"


def workdir_write_error(error: BaseException, workdir: str) -> WorkdirError | None:
    """The one-line :class:`WorkdirError` for a failed write into ``workdir``, or None when
    ``error`` is no such failure (a bug or another user error: raised as it is)."""
    if isinstance(error, UserError):
        return None
    found = _errno_and_path(error)
    if found is None:
        return None
    code, path = found
    root = os.path.abspath(workdir)
    if path and os.path.commonpath([os.path.abspath(path), root]) != root:
        return None  # not a write into the workdir (e.g. an unreadable data file)
    where = f"writing {path}" if path else f"writing into {workdir}"
    saved = saved_checkpoints(workdir)
    if code in _FULL:
        advice = (
            f"everything saved before is kept (checkpoints: {saved}); free space and rerun the "
            "same command: it resumes from the newest intact checkpoint"
        )
    else:
        advice = f"use a writable workdir (checkpoints there so far: {saved})"
    return WorkdirError(f"workdir {workdir}: {WRITE_ERRNOS[code]} ({where}): {advice}")


@contextlib.contextmanager
def workdir_write_errors(workdir: str) -> Iterator[None]:
    """Raise a failed write into ``workdir`` as :func:`workdir_write_error`'s one line."""
    try:
        yield
    except Exception as e:  # noqa: BLE001 - only write failures are converted
        converted = workdir_write_error(e, workdir)
        if converted is None:
            raise
        raise converted from e
