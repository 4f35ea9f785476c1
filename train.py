"""Command line: ``python train.py --config configs/<name>.py --workdir DIR [--config.k=v ...]``.

Without flags it runs the default pipeline (``configs/mnist_lns.py``) in a fresh folder under
``runs/``. The loop itself is :func:`bnnns.train.train_lib.train_and_evaluate`.

User errors (:class:`bnnns.errors.UserError`: a bad config or data set, no intact checkpoint,
a workdir in use or trained with another config, a diverged run) print one line, without a
traceback, and exit with status 2; any other exception is a bug and keeps its traceback.
SIGTERM or SIGINT: the current step is finished and saved, one line says so, and the exit
status is 75 (``bnnns.train.preemption.PREEMPTED_EXIT_CODE``); rerun the command to resume.
"""

import datetime
import os
import sys

from absl import app, flags
from ml_collections import config_flags

HERE = os.path.dirname(os.path.abspath(__file__))
config_flags.DEFINE_config_file(
    "config", os.path.join(HERE, "configs", "mnist_lns.py"), "Experiment config file."
)
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
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    except Preempted as e:
        if jax.process_index() == 0:
            print(f"bnnns: {e}", flush=True)
        sys.exit(PREEMPTED_EXIT_CODE)


if __name__ == "__main__":
    app.run(main)
