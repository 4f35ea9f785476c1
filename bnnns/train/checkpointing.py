"""orbax checkpoints of one training stage: the train state plus a small JSON of metadata.

Written collectively by every process (orbax coordinates multi-host saves); restored into
the shardings of the abstract state passed in, so a checkpoint written by N processes
restores under any other process count.

Integrity (docs/reliability.md): every checkpoint's metadata carries a SHA-256 of the state's
arrays (:func:`state_checksum`). A restore re-hashes what it read and checks that it is
finite; a checkpoint that cannot be read, does not match its checksum or holds non-finite
values is reported in one line and moved aside to ``<dir>.corrupt/``, and the newest intact
older one is used. Only when no intact checkpoint is left does the restore fail, with a
:class:`~bnnns.errors.CheckpointError` naming the directory (nothing is moved then).
"""

from __future__ import annotations

import hashlib
import os
import shutil
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp

from bnnns.errors import CheckpointError

__all__ = ["StageCheckpointer", "state_checksum"]

CHECKSUM_KEY = "state_checksum"


def _host_leaf(leaf: Any) -> np.ndarray:
    """A host copy of one (replicated) state leaf; any process's local replica will do."""
    if isinstance(leaf, jax.Array) and not leaf.is_fully_addressable:
        return np.asarray(leaf.addressable_shards[0].data)
    return np.asarray(leaf)


def state_checksum(state: Any) -> str:
    """SHA-256 over every leaf of ``state``: its tree path, dtype, shape and bytes.

    Example:
        >>> import numpy as np
        >>> zeros, ones = np.zeros(3, np.float32), np.ones(3, np.float32)
        >>> state_checksum({"w": zeros}) == state_checksum({"w": zeros.copy()})
        True
        >>> state_checksum({"w": zeros}) == state_checksum({"w": ones})
        False
    """
    digest = hashlib.sha256()
    for path, leaf in jax.tree_util.tree_flatten_with_path(state)[0]:
        array = np.ascontiguousarray(_host_leaf(leaf))
        digest.update(f"{jax.tree_util.keystr(path)}|{array.dtype}|{array.shape}|".encode())
        digest.update(array.tobytes())
    return digest.hexdigest()


def _non_finite_count(state: Any) -> int:
    count = 0
    for leaf in jax.tree_util.tree_leaves(state):
        array = _host_leaf(leaf)
        if np.issubdtype(array.dtype, np.inexact):
            count += int(array.size - np.count_nonzero(np.isfinite(array)))
    return count


def _one_line(error: BaseException, limit: int = 160) -> str:
    text = (str(error).strip().splitlines() or [""])[0]
    text = f"{type(error).__name__}: {text}" if text else type(error).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


class _Manager(ocp.CheckpointManager):
    """orbax's manager, kept off JAX's preemption sync point.

    Under ``jax.distributed`` the sync point has one call counter per process: the last value
    passed in, and the agreed stop is the next value after the largest. bnnns calls it once per
    train step with its own count (:mod:`bnnns.train.preemption`); orbax would also call it,
    in ``save`` and in its background finalize thread, with the checkpoint's step, so the
    agreed stop came a step late (measured) or, were every process's last value orbax's, at a
    count bnnns never passes. The loop saves on a stop itself; orbax need not know.
    """

    def reached_preemption(self, step: int) -> bool:
        return False


class StageCheckpointer:
    """Checkpoints of one stage under ``<workdir>/checkpoints/<stage>``; keeps the newest few."""

    def __init__(self, directory: str, max_to_keep: int = 2):
        self.directory = os.path.abspath(directory)
        options = ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True)
        self._manager = _Manager(self.directory, options=options, item_names=("state", "meta"))

    def latest_step(self) -> int | None:
        return self._manager.latest_step()

    def all_steps(self) -> list[int]:
        return sorted(self._manager.all_steps())

    def save(self, step: int, state: Any, meta: dict) -> None:
        """Save asynchronously (with the checksum of ``state``); :meth:`wait` (or the next
        save) finishes it."""
        meta = {**meta, CHECKSUM_KEY: state_checksum(state)}
        self._manager.save(
            step,
            args=ocp.args.Composite(
                state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta)
            ),
            force=True,
        )

    def _read(self, step: int, abstract_state: Any) -> tuple[Any, dict]:
        """Restore ``step`` and verify it; any failure raises (orbax raises many types)."""
        restored = self._manager.restore(
            step,
            args=ocp.args.Composite(
                state=ocp.args.StandardRestore(abstract_state), meta=ocp.args.JsonRestore()
            ),
        )
        state, meta = restored["state"], dict(restored["meta"])
        expected = meta.pop(CHECKSUM_KEY, None)
        if expected is not None and state_checksum(state) != expected:
            raise CheckpointError("its arrays do not match the checksum saved with them")
        bad = _non_finite_count(state)
        if bad:
            raise CheckpointError(f"it holds {bad} non-finite values")
        return state, meta

    def restore_latest(
        self, abstract_state: Any, set_aside: bool = True
    ) -> tuple[Any, dict] | None:
        """The newest intact checkpoint (state, metadata), or None if there is no checkpoint.

        Newer checkpoints that fail to read or verify are reported (one line each) and, with
        ``set_aside``, moved to ``<dir>.corrupt/`` (so the resumed run can save those steps
        again); raises :class:`CheckpointError` when none is intact.
        """
        steps = sorted(self._manager.all_steps(), reverse=True)
        if not steps:
            return None
        failed: list[tuple[int, str]] = []
        for step in steps:
            try:
                state, meta = self._read(step, abstract_state)
            except Exception as e:  # noqa: BLE001 - any failed read means: not intact
                failed.append((step, _one_line(e)))
                continue
            moved = f"moved to {self.directory}.corrupt, " if set_aside else ""
            for bad_step, reason in failed:
                print(
                    f"warning: checkpoint {os.path.join(self.directory, str(bad_step))} is "
                    f"unusable ({reason}); {moved}using step {step}"
                )
            if failed and set_aside:
                self._set_aside([s for s, _ in failed])
            return state, meta
        details = "; ".join(f"step {s}: {r}" for s, r in failed)
        raise CheckpointError(
            f"no intact checkpoint left in {self.directory} ({details}); move that directory "
            "away to restart the stage from scratch"
        )

    def restore(self, abstract_state: Any, step: int | None = None) -> tuple[Any, dict]:
        """Restore ``step`` (default: the newest intact one, see :meth:`restore_latest`; nothing
        is moved) into the structure/shardings of ``abstract_state``; read-only."""
        if step is None:
            found = self.restore_latest(abstract_state, set_aside=False)
            if found is None:
                raise CheckpointError(f"no checkpoint in {self.directory}")
            return found
        try:
            return self._read(step, abstract_state)
        except Exception as e:  # noqa: BLE001
            raise CheckpointError(
                f"checkpoint {os.path.join(self.directory, str(step))} is unusable: {_one_line(e)}"
            ) from e

    def restore_meta(self, step: int | None = None) -> dict | None:
        """Only the JSON metadata of ``step`` (default: latest), or None without checkpoints."""
        step = self.latest_step() if step is None else step
        if step is None:
            return None
        restored = self._manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))
        meta = dict(restored["meta"])
        meta.pop(CHECKSUM_KEY, None)
        return meta

    def _set_aside(self, steps: list[int]) -> None:
        """Move the checkpoints of ``steps`` to ``<dir>.corrupt/`` (process 0) and rescan."""
        multi = jax.process_count() > 1
        if multi:
            from jax.experimental import multihost_utils

            multihost_utils.sync_global_devices("bnnns_checkpoint_set_aside_start")
        if jax.process_index() == 0:
            target = self.directory + ".corrupt"
            os.makedirs(target, exist_ok=True)
            for step in steps:
                source = os.path.join(self.directory, str(step))
                if not os.path.exists(source):
                    continue
                dest, n = os.path.join(target, str(step)), 1
                while os.path.exists(dest):
                    dest, n = os.path.join(target, f"{step}.{n}"), n + 1
                shutil.move(source, dest)
        if multi:
            multihost_utils.sync_global_devices("bnnns_checkpoint_set_aside_done")
        self._manager.reload()

    def remove_unfinished(self) -> list[str]:
        """Delete saves that were cut off (a full disk, a kill) before orbax finished them,
        ``<step>.orbax-checkpoint-tmp*``; returns their names. Process 0 does it; call it only
        under the workdir's lock: a live run's save in progress looks the same."""
        if jax.process_index() != 0 or not os.path.isdir(self.directory):
            return []
        names = sorted(n for n in os.listdir(self.directory) if ".orbax-checkpoint-tmp" in n)
        for name in names:
            shutil.rmtree(os.path.join(self.directory, name), ignore_errors=True)
        return names

    def wait(self) -> None:
        self._manager.wait_until_finished()

    def close(self) -> None:
        self._manager.wait_until_finished()
        self._manager.close()

    def close_after_error(self) -> None:
        """:meth:`close` on the way out of a stage that raised: the save in flight finishes
        and orbax's threads stop before the run releases its workdir. Without it a rerun in
        the same process (a notebook, a retry loop, the tests) listed a step that the failed
        run's manager was deleting (``FileNotFoundError`` from orbax), and its
        :meth:`remove_unfinished` could delete a save still being written. A failure of that
        save is printed, not raised over the error that ended the stage. With several
        processes it does nothing: the other processes may never reach orbax's barriers, and
        a hang must not hide the error."""
        if jax.process_count() > 1:
            return
        try:
            self.close()
        except Exception as e:  # noqa: BLE001  (the stage's own error is the one to raise)
            print(
                f"warning: the checkpoint save in flight in {self.directory} failed as well: "
                f"{_one_line(e)}",
                flush=True,
            )
