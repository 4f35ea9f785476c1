"""orbax checkpoints of one training stage: the train state plus a small JSON of metadata.

Written collectively by every process (orbax coordinates multi-host saves); restored into
the shardings of the abstract state passed in, so a checkpoint written by N processes
restores under any other process count.
"""

from __future__ import annotations

import os
from typing import Any

import orbax.checkpoint as ocp

__all__ = ["StageCheckpointer"]


class StageCheckpointer:
    """Checkpoints of one stage under ``<workdir>/checkpoints/<stage>``; keeps the newest few."""

    def __init__(self, directory: str, max_to_keep: int = 2):
        self.directory = os.path.abspath(directory)
        options = ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True)
        self._manager = ocp.CheckpointManager(
            self.directory, options=options, item_names=("state", "meta")
        )

    def latest_step(self) -> int | None:
        return self._manager.latest_step()

    def save(self, step: int, state: Any, meta: dict) -> None:
        """Save asynchronously; :meth:`wait` (or the next save) finishes it."""
        self._manager.save(
            step,
            args=ocp.args.Composite(
                state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta)
            ),
            force=True,
        )

    def restore(self, abstract_state: Any, step: int | None = None) -> tuple[Any, dict]:
        """Restore ``step`` (default: latest) into the structure/shardings of ``abstract_state``."""
        step = self.latest_step() if step is None else step
        if step is None:
            raise FileNotFoundError(f"no checkpoint in {self.directory}")
        restored = self._manager.restore(
            step,
            args=ocp.args.Composite(
                state=ocp.args.StandardRestore(abstract_state), meta=ocp.args.JsonRestore()
            ),
        )
        return restored["state"], dict(restored["meta"])

    def restore_meta(self, step: int | None = None) -> dict | None:
        """Only the JSON metadata of ``step`` (default: latest), or None without checkpoints."""
        step = self.latest_step() if step is None else step
        if step is None:
            return None
        restored = self._manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))
        return dict(restored["meta"])

    def wait(self) -> None:
        self._manager.wait_until_finished()

    def close(self) -> None:
        self._manager.wait_until_finished()
        self._manager.close()
