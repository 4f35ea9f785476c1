"""``train.py`` as separate processes, for the tests that need a real process (signals,
``jax.distributed``): launching one or two (processes 0 and 1 on loopback), waiting for them
with a deadline, and ``train.py`` with a hook at one train step (run this file as the script).

The hook (``python tests/train_process.py TRAIN_FLAGS`` with ``BNNNS_TEST_HOOK`` set to
``ACTION:STAGE:STEP:DIR``) acts right after the train step ``STEP`` of ``STAGE`` has run:

- ``sigterm``: the process sends itself a real SIGTERM (a scheduler's notice at a known step);
- ``notice``: every process writes ``DIR/at_step.<process index>`` and then holds that step until
  the preemption sync protocol of ``jax.distributed`` has taken every process's step counter.
  The test sends SIGTERM (to one process or to all) once it sees the file; the processes then
  agree to stop at exactly ``STEP``, however long the notice takes to arrive (XLA's notifier
  polls its SIGTERM flag once a second) and however loaded the machine is. Every process
  writes ``DIR/stopped.<process index>``, ``"<stage> <step>"``, where it stops.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TRAIN_PY = os.path.join(ROOT, "train.py")
HOOK_ENV = "BNNNS_TEST_HOOK"
TIMEOUT_S = 300  # a hang (e.g. a collective waiting for a dead peer) fails instead of blocking
# The sync protocol's per-process counters (XLA's preemption_sync_manager.cc).
COUNTER_DIR = "PREEMPTION_CURRENT_COUNTER/"


def train_env(**extra: str) -> dict:
    """The environment of a ``train.py`` test process: CPU, this checkout first on the path."""
    env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=ROOT, **extra)
    for var in ("JAX_NUM_CPU_DEVICES", "JAX_COORDINATOR_ADDRESS"):
        if var not in extra:
            env.pop(var, None)
    return env


def hook(action: str, stage: str, step: int, directory: str = "") -> dict:
    """The environment entry that makes this file's ``train.py`` act after ``stage``'s ``step``."""
    return {HOOK_ENV: f"{action}:{stage}:{step}:{directory}"}


def launch(args: list[str], log: str, env: dict, hooked: bool = False):
    """``train.py ARGS`` (this file's hooked one with ``hooked``), its output to ``log``;
    ``(process, log file)``, the file closed by :func:`wait_all`."""
    out = open(log, "w")
    program = os.path.abspath(__file__) if hooked else TRAIN_PY
    proc = subprocess.Popen(
        [sys.executable, program, *args], stdout=out, stderr=subprocess.STDOUT, env=env, cwd=ROOT
    )
    return proc, out


def launch_two(args: list[str], logs: list[str], env: dict, hooked: bool = False) -> list:
    """Processes 0 and 1 of a ``jax.distributed`` run of ``train.py ARGS`` on loopback."""
    import portpicker

    port = portpicker.pick_unused_port()
    flags = [f"--coordinator_address=127.0.0.1:{port}", "--num_processes=2"]
    return [launch([*args, *flags, f"--process_id={i}"], logs[i], env, hooked) for i in (0, 1)]


def wait_for_files(paths: list[str], procs: list, timeout_s: float = TIMEOUT_S) -> None:
    """Return once every file in ``paths`` exists; raise if a process ends or time runs out."""
    deadline = time.monotonic() + timeout_s
    while not all(os.path.exists(p) for p in paths):
        ended = [proc.poll() for proc, _ in procs if proc.poll() is not None]
        if ended or time.monotonic() > deadline:
            raise AssertionError(f"waiting for {paths}: exit codes {ended}, or {timeout_s} s")
        time.sleep(0.05)


def wait_all(procs: list, timeout_s: float = TIMEOUT_S) -> list:
    """The exit codes (``"timeout"`` for the first that hangs; all are ended then)."""
    codes, deadline = [], time.monotonic() + timeout_s
    try:
        for proc, _ in procs:
            codes.append(proc.wait(timeout=max(deadline - time.monotonic(), 1)))
    except subprocess.TimeoutExpired:
        codes.append("timeout")
    finally:
        for proc, out in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            out.close()
    return codes


def _hold_until_counters_taken(directory: str) -> None:
    """Mark this step, then wait until every process's sync counter is in the coordination
    service: each process's protocol thread then holds its counter (this step - 1) until the
    sync point (the next step of the fastest, i.e. this one) is set."""
    import jax
    from jax._src import distributed

    with open(os.path.join(directory, f"at_step.{jax.process_index()}"), "w") as f:
        f.write("")
    client, deadline = distributed.global_state.client, time.monotonic() + TIMEOUT_S
    while len(client.key_value_dir_get(COUNTER_DIR)) < jax.process_count():
        if time.monotonic() > deadline:
            raise RuntimeError(f"no preemption notice reached every process in {TIMEOUT_S} s")
        time.sleep(0.01)


def _run_hooked_train() -> None:
    import runpy

    import jax

    from bnnns.train import stage

    action, stage_name, step, directory = os.environ[HOOK_ENV].split(":", 3)
    original = stage.Stage.__init__

    def init(self, run, name):
        original(self, run, name)
        step_fn = self.train_fn

        def train_fn(state, batch):
            out = step_fn(state, batch)
            if name == stage_name and int(jax.device_get(out[0].step)) == int(step):
                if action == "sigterm":
                    os.kill(os.getpid(), signal.SIGTERM)
                elif action == "notice":
                    _hold_until_counters_taken(directory)
                else:
                    raise ValueError(f"{HOOK_ENV} action {action!r}: 'sigterm' or 'notice'")
            return out

        self.train_fn = train_fn

    stage.Stage.__init__ = init
    if action == "notice":  # every process records where it stopped: ``DIR/stopped.<index>``
        leave = stage.Stage._leave

        def record_leave(self, at: int) -> None:
            with open(os.path.join(directory, f"stopped.{jax.process_index()}"), "w") as f:
                f.write(f"{self.name} {at}")
            leave(self, at)

        stage.Stage._leave = record_leave
    sys.argv = [TRAIN_PY, *sys.argv[1:]]
    runpy.run_path(TRAIN_PY, run_name="__main__")


if __name__ == "__main__":
    sys.path.insert(0, ROOT)
    _run_hooked_train()
