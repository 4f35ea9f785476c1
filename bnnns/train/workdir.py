"""A workdir belongs to one run (docs/reliability.md).

* :class:`WorkdirLock`: process 0 of a run holds an exclusive ``flock`` on
  ``<workdir>/bnnns.lock`` (which names the holder's pid and host); a second run on the same
  workdir is refused. The kernel drops the lock when its holder dies, so a lock file left by a
  killed run is stale and simply taken over.
* :func:`check_rerun_config`: a rerun on a workdir that holds checkpoints compares its config
  with the stored ``config.json`` before anything is written, and refuses every difference
  except :data:`SAFE_FIELDS` and longer schedules (``<stage>.epochs`` growing).
"""

from __future__ import annotations

import datetime
import errno
import fcntl
import json
import os
import socket
from typing import Any

from ml_collections import ConfigDict

from bnnns.errors import WorkdirError

__all__ = ["SAFE_FIELDS", "WorkdirLock", "check_rerun_config", "config_diff", "write_json_atomic"]

LOCK_NAME = "bnnns.lock"
STAGE_SECTIONS = ("pretrain", "finetune", "lns")
# Fields a rerun may change: how the run is logged, checkpointed, fed and laid out on the
# devices, never what it computes.
SAFE_FIELDS = (
    "log_every_steps",
    "progress_bar",
    "checkpoint_every_steps",
    "checkpoint_every_minutes",
    "data_threads",
    "data_loader",
    "eval_batch_size",
    "mesh_shape",
    "split_mapping",
    "stages",
)


def write_json_atomic(path: str, obj: Any) -> None:
    """Write ``obj`` as JSON to ``path`` via a temporary file and a rename (never half-written)."""
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w") as f:
        json.dump(obj, f, indent=2, default=str)
    os.replace(tmp, path)


class WorkdirLock:
    """An exclusive, non-blocking lock of one workdir, held until :meth:`release`."""

    def __init__(self, workdir: str):
        self.workdir = workdir
        self.path = os.path.join(workdir, LOCK_NAME)
        self._fd: int | None = None

    def acquire(self) -> None:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            if e.errno not in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                os.close(fd)  # no flock on this file system: run unlocked, but say so
                print(f"warning: cannot lock {self.path} ({e}); not guarding against a second run")
                return
            holder = os.pread(fd, 512, 0).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise WorkdirError(
                f"workdir {self.workdir} is in use by another run ({holder}; lock {self.path}): "
                "wait for it to finish, stop it, or use another workdir"
            ) from None
        stamp = datetime.datetime.now().isoformat(timespec="seconds")
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()} on {socket.gethostname()} since {stamp}\n".encode(), 0)
        self._fd = fd

    def release(self) -> None:
        """Unlock (the file stays: removing it would let two later runs lock two files)."""
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        os.ftruncate(fd, 0)
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


def _flatten(tree: dict, prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}``."""
    out: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, dict) and value:
            out.update(_flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def _as_json(config: ConfigDict | dict) -> dict:
    data = config.to_dict() if isinstance(config, ConfigDict) else config
    return json.loads(json.dumps(data, default=str))


def _has_checkpoints(workdir: str, stage: str) -> bool:
    directory = os.path.join(workdir, "checkpoints", stage)
    return os.path.isdir(directory) and any(p.isdigit() for p in os.listdir(directory))


def config_diff(stored: dict, current: ConfigDict, trained_stages: list[str]) -> list[str]:
    """The differences between a stored and a current config that a rerun may not make.

    A stage's own section counts only if that stage has checkpoints; ``<stage>.epochs`` may
    grow; :data:`SAFE_FIELDS` may change; a field the stored config lacks (added to bnnns
    since) must keep its default.
    """
    from bnnns.train.default_config import base_config

    old, new = _flatten(_as_json(stored)), _flatten(_as_json(current))
    defaults = _flatten(_as_json(base_config()))
    problems = []
    for key in sorted(new):
        section = key.split(".")[0]
        if key in SAFE_FIELDS or (section in STAGE_SECTIONS and section not in trained_stages):
            continue
        if key not in old:
            if key in defaults and new[key] != defaults[key]:
                problems.append(f"{key}: not recorded (default {defaults[key]!r}) -> {new[key]!r}")
            continue
        if new[key] == old[key]:
            continue
        if key.endswith(".epochs") and section in STAGE_SECTIONS:
            if isinstance(new[key], int | float) and new[key] > old[key]:
                continue  # a longer schedule resumes where the shorter one stopped
            problems.append(f"{key}: {old[key]!r} -> {new[key]!r} (epochs may only grow)")
            continue
        problems.append(f"{key}: {old[key]!r} -> {new[key]!r}")
    return problems


def check_rerun_config(config: ConfigDict, workdir: str, stages: list[str]) -> None:
    """Refuse a rerun whose config differs from the stored one in a field that matters.

    Nothing is compared when the workdir holds no checkpoint (nothing trained yet to be
    inconsistent with) or no ``config.json``.
    """
    del stages  # every stage with checkpoints counts, listed in config.stages or not
    path = os.path.join(workdir, "config.json")
    trained = [s for s in STAGE_SECTIONS if _has_checkpoints(workdir, s)]
    if not trained or not os.path.isfile(path):
        return
    try:
        with open(path) as f:
            stored = json.load(f)
    except (OSError, ValueError) as e:
        raise WorkdirError(
            f"{path} cannot be read ({e}); the workdir holds checkpoints of {trained}: "
            "restore that file or use another workdir"
        ) from None
    problems = config_diff(stored, config, trained)
    if problems:
        raise WorkdirError(
            f"workdir {workdir} holds a run with another config; changed: "
            + "; ".join(problems)
            + f". A rerun may change only {', '.join(SAFE_FIELDS)} and grow <stage>.epochs: "
            "use another workdir (or the stored config)"
        )
