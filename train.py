"""Command line: ``python train.py --config configs/<name>.py --workdir DIR [--config.k=v ...]``.

Without flags it runs the default pipeline (``configs/mnist_lns.py``) in a fresh folder under
``runs/``. The loop itself is :func:`bnnns.train.train_lib.train_and_evaluate`.

User errors (:class:`bnnns.errors.UserError`: a bad config or data set, a ``--config.`` flag
naming no field, no intact checkpoint, a workdir in use, trained with another config, full or
read-only, a diverged run) print one line, without a traceback, and exit with status 2; any other
exception is a bug and keeps its traceback (docs/reliability.md).
SIGTERM or SIGINT: the current step is finished and saved, one line says so, and the exit
status is 75 (``bnnns.train.preemption.PREEMPTED_EXIT_CODE``); rerun the command to resume.
"""

import datetime
import logging
import os
import sys
import threading
import traceback

from absl import app, flags
from ml_collections import config_flags

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_CONFIG = os.path.join(HERE, "configs", "mnist_lns.py")


def check_config_flags(argv: list[str]) -> None:
    """Every ``--config.<field>`` flag names a field of the config file (ml_collections would
    stop with tracebacks and a bare ``AttributeError``): one line with a "did you mean"."""
    path, fields = DEFAULT_CONFIG, []
    args = iter(argv[1:])
    for arg in args:
        if arg == "--":
            break
        if arg == "--config":
            path = next(args, path)
        elif arg.startswith("--config="):
            path = arg.split("=", 1)[1]
        elif arg.startswith("--config."):
            fields.append(arg[len("--config.") :].split("=", 1)[0])
    if not fields:
        return
    from bnnns.errors import ConfigError
    from bnnns.train.config_checks import check_field
    from bnnns.train.default_config import load_config_file

    try:
        config = load_config_file(path)
    except Exception:  # noqa: BLE001 - absl reports a config file that does not load
        return
    for field in fields:
        try:
            check_field(config, field)
        except ConfigError as e:
            print(f"error: --config.{field} (config file {path}): {e}", file=sys.stderr)
            sys.exit(2)


class HeldBackgroundErrors(logging.Filter):
    """A failed asynchronous save (a full disk) is reported many times over: orbax logs it
    with tracebacks (from its threads and its ``wait_until_finished``), tensorstore's threads
    print "Event loop is closed" tracebacks, then the error is raised in the main thread, where
    :mod:`bnnns.train.write_errors` makes it one line. These reports are held back and shown
    (:meth:`release`) only when the run ends otherwise: with a bug, or without an error."""

    LOGGERS = ("absl", "asyncio")  # orbax logs through absl; asyncio its lost futures

    def __init__(self) -> None:
        super().__init__()
        self.held: list[logging.LogRecord | str] = []
        self._excepthook = sys.excepthook

    def install(self) -> None:
        for name in self.LOGGERS:
            logging.getLogger(name).addFilter(self)
        sys.excepthook = self._hook
        threading.excepthook = self._thread_hook
        sys.unraisablehook = self._unraisable_hook

    def filter(self, record: logging.LogRecord) -> bool:
        source = record.name == "asyncio" or f"{os.sep}orbax{os.sep}" in record.pathname
        if source and record.levelno >= logging.ERROR:
            self.held.append(record)
            return False
        return True

    def _hook(self, kind, value, tb) -> None:
        if threading.current_thread() is threading.main_thread():
            self._excepthook(kind, value, tb)
        else:  # printed from a C++ thread through sys.excepthook (PyErr_Print)
            self.held.append("".join(traceback.format_exception(kind, value, tb)))

    def _thread_hook(self, args) -> None:  # an exception that ended a Python thread
        text = traceback.format_exception(args.exc_type, args.exc_value, args.exc_traceback)
        self.held.append(f"Exception in thread {getattr(args.thread, 'name', '?')}:\n")
        self.held.append("".join(text))

    def _unraisable_hook(self, args) -> None:  # tensorstore's callbacks on a closed loop
        text = traceback.format_exception(args.exc_type, args.exc_value, args.exc_traceback)
        self.held.append(f"Exception ignored in: {args.object!r}\n{''.join(text)}")

    def release(self) -> None:
        for name in self.LOGGERS:
            logging.getLogger(name).removeFilter(self)
        for item in self.held:
            if isinstance(item, str):
                print(item, file=sys.stderr, end="")
            else:
                logging.getLogger(item.name).handle(item)
        self.held = []


HELD = HeldBackgroundErrors()


if __name__ == "__main__":  # before the config flag parses the default file with the flags
    check_config_flags(sys.argv)
config_flags.DEFINE_config_file("config", DEFAULT_CONFIG, "Experiment config file.")
flags.DEFINE_string("workdir", None, "Output folder; default: a fresh folder under runs/.")
flags.DEFINE_string("coordinator_address", None, "Multi-host: HOST:PORT of process 0.")
flags.DEFINE_integer("num_processes", None, "Multi-host: number of processes.")
flags.DEFINE_integer("process_id", None, "Multi-host: index of this process.")
FLAGS = flags.FLAGS


def main(argv):
    del argv
    import jax

    # Cross-process collectives of the CPU backend: gloo over TCP. The default of jax 0.10;
    # explicit for older versions. JAX_CPU_COLLECTIVES_IMPLEMENTATION (e.g. mpi) overrides.
    if "JAX_CPU_COLLECTIVES_IMPLEMENTATION" not in os.environ:
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
    multi = (FLAGS.coordinator_address, FLAGS.num_processes, FLAGS.process_id)
    if any(v is not None for v in multi):
        if any(v is None for v in multi):
            sys.exit("--coordinator_address, --num_processes and --process_id go together")
        jax.distributed.initialize(
            coordinator_address=FLAGS.coordinator_address,
            num_processes=FLAGS.num_processes,
            process_id=FLAGS.process_id,
        )
    else:
        # TPU pods, SLURM, Open MPI, ...: JAX detects the cluster itself. Only "no cluster
        # found" means one process; any other failure is raised, never turned into N
        # independent single-process runs writing to one workdir.
        try:
            jax.distributed.initialize()
        except ValueError as e:
            if "coordinator_address" not in str(e):
                raise
    from bnnns.deploy.summary import format_summary, summarize_config
    from bnnns.errors import UserError
    from bnnns.train.config_checks import validate_config
    from bnnns.train.preemption import PREEMPTED_EXIT_CODE, Preempted
    from bnnns.train.train_lib import train_and_evaluate

    workdir = FLAGS.workdir or os.path.join(
        "runs", datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    )
    try:
        validate_config(FLAGS.config, jax.process_count())  # before the summary builds a model
        if jax.process_index() == 0:
            print(format_summary(summarize_config(FLAGS.config)))
        train_and_evaluate(FLAGS.config, workdir)
    except UserError as e:  # its one line says it all: the held reports stay held
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    except Preempted as e:
        if jax.process_index() == 0:
            print(f"bnnns: {e}", flush=True)
        sys.exit(PREEMPTED_EXIT_CODE)
    except BaseException:
        HELD.release()  # a bug: everything orbax and its threads reported, then the traceback
        raise
    HELD.release()


if __name__ == "__main__":
    HELD.install()
    app.run(main)
