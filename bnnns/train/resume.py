"""Where a stage starts, and what its checkpoints carry so that a resumed run ends where an
uninterrupted one ends.

Resume policy, in order, for every stage of ``config.stages`` (:func:`start`):
  1. its newest intact checkpoint says the stage is done: load it and move on;
  2. it has an intact checkpoint: restore it and continue from that step (data order and
     augmentation are functions of ``(seed, epoch, step)``, so the run ends where an
     uninterrupted one ends; a mid-epoch checkpoint also carries the train-metric sums of
     its epoch so far and the binary weights at the epoch's start, so that epoch's record is
     the one an uninterrupted run writes: :class:`EpochCarry`);
  3. otherwise start it fresh.
A checkpoint that fails to read or verify is reported and skipped
(:mod:`bnnns.train.checkpointing`).
"""

from __future__ import annotations

import base64
import dataclasses
import zlib
from typing import TYPE_CHECKING

import jax
import numpy as np
from absl import logging as absl_logging

from bnnns.train.epoch_record import host_sums
from bnnns.train.steps import TrainState

if TYPE_CHECKING:
    from bnnns.train.stage import Stage

__all__ = ["EpochCarry", "pack_weights", "start", "unpack_weights"]


def start(stage: Stage, pretrained: TrainState | None) -> tuple[TrainState, dict, bool]:
    """``stage``'s starting state and metadata by the policy above, and whether it is done.

    Records of ``metrics.jsonl`` after the step it starts from (of a run killed after writing
    them but before its next save) are dropped, so none is written twice."""
    run = stage.run
    restored = stage.checkpointer.restore_latest(stage.abstract_state)
    if restored is not None:
        state, meta = restored
        if int(state.step) >= stage.total_steps:
            return state, meta, True
        run.writer.truncate_after(stage.name, int(state.step))
        return state, meta, False
    run.writer.truncate_after(stage.name, 0)  # records of a run killed before a save
    state, extra = stage.initial_state(pretrained)
    meta = {"stage": stage.name, "done": False, "seconds": 0.0, "history": [], **extra}
    if "warm_start" in extra and run.is_main:
        ws = extra["warm_start"]
        print(
            f"[{stage.name}] warm start: {ws['steps']} steps "
            f"({'converged' if ws['converged'] else 'step cap'}), aux loss "
            f"{ws['aux_loss']:.5f} (excess {ws['excess_loss']:.2e}), min label "
            f"agreement {ws['min_agreement']:.4f}"
        )
    return state, meta, False


@dataclasses.dataclass
class EpochCarry:
    """What the current epoch's record needs of its steps before the last mid-epoch save (of
    this run or of the one resumed): the binary weights and ``sign(W)`` at the epoch's start
    (the flip rates' reference, :meth:`bnnns.train.stage.Stage.weight_signs`) and the
    train-metric sums (host floats, :func:`bnnns.train.epoch_record.host_sums`) and count."""

    reference: dict
    sums: dict | None = None
    count: int = 0
    pending: dict | None = None  # packed device sums of an unscheduled save (:meth:`take_pending`)

    @classmethod
    def at_resume(cls, stage: Stage, state: TrainState, meta: dict, step: int) -> EpochCarry:
        """The carry of a stage (re)started at ``step``: empty at an epoch boundary, else what
        the mid-epoch save of ``step`` stored in ``meta["partial_epoch"]``."""
        sums, count = _carried_sums(stage, meta, step)
        partial = meta.get("partial_epoch") or {}
        mid_epoch = step % stage.steps_per_epoch and partial.get("step") == step
        pending = partial.get("pending") if mid_epoch else None
        return cls(_epoch_reference(stage, state, meta, step), sums, count, pending)

    def take_pending(self, place) -> tuple[dict | None, int]:
        """The device sums and count that an unscheduled save (a preemption, a time-based
        save) stored without moving them to the host, as float32 device values again
        (``place``: put them where the step's metrics live), so the resumed run adds every
        later step to the same float32 partial sums as an uninterrupted run; then forgets them."""
        pending, self.pending = self.pending, None
        if pending is None:
            return None, 0
        sums = jax.tree.map(
            lambda v: place(np.asarray(v[0], v[1])), pending["sums"], is_leaf=_is_packed_scalar
        )
        return sums, int(pending["count"])

    def absorb(self, sums: dict | None, count: int) -> None:
        """Take the device ``sums`` of ``count`` steps (before a mid-epoch save)."""
        # The sums so far go to the host here in every run, resumed or not, so both add the
        # same float32 partial sums: identical epoch means.
        self.sums = host_sums(sums, self.sums)
        self.count += count

    def totals(self, sums: dict | None, count: int) -> tuple[dict | None, int]:
        """The epoch's sums and count: the carried ones plus ``sums`` of ``count`` steps."""
        return host_sums(sums, self.sums), count + self.count

    def partial_epoch(self, step: int, sums: dict | None = None, count: int = 0) -> dict:
        """``meta["partial_epoch"]`` of a mid-epoch save at ``step`` (read by
        :meth:`at_resume`), so a resumed epoch's record is the same. ``sums`` of ``count``
        steps: device sums not absorbed (an unscheduled save), stored exactly as ``pending``."""
        out = {
            "step": step,
            "count": self.count,
            "sums": self.sums,
            "flip_reference": {k: pack_weights(v) for k, v in self.reference.items()},
        }
        if sums is not None:
            packed = jax.tree.map(lambda x: [float(x), str(x.dtype)], jax.device_get(sums))
            out["pending"] = {"sums": packed, "count": count}
        return out


def _is_packed_scalar(x) -> bool:
    return isinstance(x, list) and len(x) == 2 and isinstance(x[1], str)


def _epoch_reference(stage: Stage, state: TrainState, meta: dict, step: int) -> dict:
    """The binary weights and ``sign(W)`` at the start of the current epoch: those of
    ``state`` at an epoch boundary, else those stored by the mid-epoch save."""
    partial = meta.get("partial_epoch") if step % stage.steps_per_epoch else None
    if partial is not None and partial["step"] == step and "flip_reference" in partial:
        return {k: unpack_weights(v) for k, v in partial["flip_reference"].items()}
    if step % stage.steps_per_epoch:
        absl_logging.warning(
            "[%s] resumed at step %d without the binary weights of its epoch's start: "
            "that epoch's flip rate counts only the flips after the resume",
            stage.name,
            step,
        )
    return stage.weight_signs(state)


def _carried_sums(stage: Stage, meta: dict, step: int) -> tuple[dict | None, int]:
    """The train-metric sums and count of the current epoch's steps done before a resume."""
    if step % stage.steps_per_epoch == 0:
        return None, 0
    partial = meta.get("partial_epoch")
    if partial is None or partial["step"] != step:
        absl_logging.warning(
            "[%s] resumed at step %d without the partial sums of its epoch: that epoch's "
            "train metrics average only the steps after the resume",
            stage.name,
            step,
        )
        return None, 0
    return partial["sums"], int(partial["count"])


def pack_weights(weights: dict) -> dict:
    """Binary weights (int8 arrays) as JSON: zlib-compressed, base64 bytes per layer."""
    return {
        name: {
            "shape": list(w.shape),
            "dtype": str(w.dtype),
            "data": base64.b64encode(zlib.compress(np.ascontiguousarray(w).tobytes())).decode(),
        }
        for name, w in weights.items()
    }


def unpack_weights(packed: dict) -> dict:
    """The inverse of :func:`pack_weights`."""
    return {
        name: np.frombuffer(zlib.decompress(base64.b64decode(p["data"])), p["dtype"]).reshape(
            p["shape"]
        )
        for name, p in packed.items()
    }
