"""Leaving on a preemption notice without losing a step, and time-based checkpoints.

Schedulers (SLURM, Kubernetes, TPU maintenance) send SIGTERM and expect the job to save and
leave; a user at a terminal sends SIGINT. During :func:`~bnnns.train.train_lib.train_and_evaluate`
either signal only asks the loop to stop: it finishes the current step, saves an exact-resume
checkpoint of that step (:mod:`bnnns.train.resume`), and raises :class:`Preempted`; ``train.py``
prints one line and exits with :data:`PREEMPTED_EXIT_CODE` (docs/reliability.md).

One process: Python handlers for both signals set a flag the loop reads after every step. A
second signal of the same kind restores the previous handler and re-delivers itself (so a
second Ctrl-C is a ``KeyboardInterrupt``, a second SIGTERM kills).

Several processes (``jax.distributed``): XLA's preemption notifier owns SIGTERM (its handler
only records the notice) and the processes must stop at the *same* step, since the save is
collective. Every process calls ``multihost_utils.reached_preemption_sync_point`` once per
step with a counter of the steps this process ran (the same on every process); after a notice
to any process it returns True on all of them at one agreed step. SIGINT is forwarded to that
notifier as a SIGTERM.

``config.checkpoint_every_minutes`` (0: off) adds a save whenever that much wall time passed
since the last save; with several processes, process 0's clock decides, read (one broadcast)
only at the steps that log (``log_every_steps``) so that all agree without a per-step collective.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time
from collections.abc import Iterator

import jax
import numpy as np

__all__ = ["PREEMPTED_EXIT_CODE", "Preempted", "StopRequests"]

# EX_TEMPFAIL of sysexits.h: "a temporary failure; the user is invited to retry". Distinct from
# 0 (done), 1 (a bug: traceback), 2 (a user error) and 128 + n (killed by signal n).
PREEMPTED_EXIT_CODE = 75
_SIGNALS = (signal.SIGTERM, signal.SIGINT)


class Preempted(Exception):
    """The run stopped on a signal after saving the checkpoint of ``step``; rerun to resume."""

    def __init__(self, stage: str, step: int, directory: str, signal_name: str):
        self.stage, self.step, self.directory = stage, step, directory
        super().__init__(
            f"preempted ({signal_name}): [{stage}] saved step {step} to {directory}; "
            "rerun the same command to resume from it"
        )


class StopRequests:
    """Whether the loop should stop now (a signal) or save now (``every_minutes``)."""

    def __init__(self, every_minutes: float = 0.0):
        self.every_s = 60.0 * float(every_minutes)
        self.signal_name: str | None = None
        self._ticks = 0  # steps run by this process: the preemption sync counter
        self._last_save = time.monotonic()
        self._multi = jax.distributed.is_initialized() and jax.process_count() > 1

    def _handler(self, previous: dict):
        def handle(signum, frame):
            name = signal.Signals(signum).name
            if self._multi:  # XLA's notifier (SIGTERM) tells every process
                self.signal_name = name
                os.kill(os.getpid(), signal.SIGTERM)
                return
            if self.signal_name is not None:  # asked twice: the previous behaviour
                signal.signal(signum, previous[signum])
                signal.raise_signal(signum)
                return
            self.signal_name = name

        return handle

    @contextlib.contextmanager
    def installed(self) -> Iterator[StopRequests]:
        """Handle the signals for the duration (only from the main thread: elsewhere Python
        cannot install handlers, and the signals keep their behaviour)."""
        if threading.current_thread() is not threading.main_thread():
            yield self
            return
        ours = (signal.SIGINT,) if self._multi else _SIGNALS
        previous = {s: signal.getsignal(s) for s in ours}
        handle = self._handler(previous)
        for s in ours:
            signal.signal(s, handle)
        try:
            yield self
        finally:
            for s in ours:
                signal.signal(s, previous[s])

    def should_stop(self) -> bool:
        """Call once per step on every process: True when the loop must save and stop."""
        self._ticks += 1
        if self._multi:
            from jax.experimental import multihost_utils

            try:
                reached = multihost_utils.reached_preemption_sync_point(self._ticks)
            except RuntimeError:  # jax_enable_preemption_service is off: no agreed stop
                return False
            if reached:
                self.signal_name = self.signal_name or "SIGTERM"
            return reached
        return self.signal_name is not None

    def should_save(self, log_step: bool) -> bool:
        """True when ``every_minutes`` passed since the last save (the same on all processes)."""
        if not self.every_s:
            return False
        due = time.monotonic() - self._last_save >= self.every_s
        if not self._multi:
            return due
        if not log_step:
            return False
        from jax.experimental import multihost_utils

        return bool(multihost_utils.broadcast_one_to_all(np.int32(due)))

    def saved(self) -> None:
        """A checkpoint was just saved: the time interval starts again."""
        self._last_save = time.monotonic()
