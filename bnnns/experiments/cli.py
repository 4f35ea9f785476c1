"""The paper's ablations (Table 1, Figs. 3-5; method.md §5.1), run on a registered protocol.

    python -m bnnns.experiments ablation      [--seeds 5]   Table 1
    python -m bnnns.experiments flips         [--seeds 3]   Fig. 3 (a-c)
    python -m bnnns.experiments rho_sweep     [--seeds 3]   Fig. 5
    python -m bnnns.experiments alpha_sweep   [--seeds 3]   Fig. 4
    python -m bnnns.experiments flip_sources  [--seeds 1]   why LNS flips what it flips
    python -m bnnns.experiments all --jobs 2                all of them, 2 runs at a time
    python -m bnnns.experiments ablation --seeds-in-one-program   a row's seeds in one program

(the seeds shown are the MNIST protocol's defaults). ``--protocol`` picks the protocol
(default ``mnist``: ``configs/mnist_ablation.py``; ``cifar10``: ``configs/cifar10_cnn.py``, with
``--dataset folder:DIR``). ``--dataset`` replaces the protocol config's data set in every run.
Every run lives in its own workdir under
``--workdir`` (default ``runs/experiments``) and is skipped when its ``summary.json`` exists,
so an interrupted experiment resumes. Tables (JSON + Markdown) and PNG plots go to ``--out``
(default ``docs/results``).
"""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Sequence

from bnnns.experiments import runner, studies
from bnnns.experiments.protocol import EXPERIMENTS, get_protocol, protocol_names

__all__ = ["build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    """The command line of ``python -m bnnns.experiments``."""
    names = protocol_names()
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("name", choices=(*EXPERIMENTS, "all"))
    parser.add_argument(
        "--seeds",
        type=int,
        default=None,
        help=f"default: the protocol's ({dict(get_protocol('mnist').seeds)} for mnist)",
    )
    parser.add_argument("--workdir", default="runs/experiments")
    parser.add_argument("--out", default="docs/results")
    parser.add_argument(
        "--jobs", type=int, default=1, help="train missing runs this many at a time first"
    )
    parser.add_argument(
        "--seeds-in-one-program",
        action="store_true",
        help="train a row's missing seeds as one S-seed program (config.num_seeds) in "
        "<run>_seeds<a>-<b>/; finished runs of either layout are read (docs/scaling.md)",
    )
    parser.add_argument(
        "--protocol", default="mnist", help=f"the protocol to run, one of: {', '.join(names)}"
    )
    parser.add_argument(
        "--dataset",
        default=None,
        help="the data set of every run (config.dataset, e.g. folder:DIR); default: the config's",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> None:
    """Run the experiments the command line names."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        protocol = get_protocol(args.protocol)
    except ValueError as e:  # names the registered protocols
        parser.error(str(e))
    if args.dataset:
        protocol = dataclasses.replace(
            protocol, budget={**protocol.budget, "dataset": args.dataset}
        )
    names = list(protocol.seeds) if args.name == "all" else [args.name]
    if args.name != "all" and args.name not in protocol.seeds:
        parser.error(f"protocol {protocol.name!r} has no experiment {args.name!r}")
    seeds = {n: args.seeds or protocol.seeds[n] for n in names}
    one = args.seeds_in_one_program
    if args.jobs > 1:
        runner.run_in_parallel(protocol, args.workdir, names, seeds, args.jobs, one)
    for name in names:
        studies.run_experiment(protocol, name, args.workdir, args.out, seeds[name], one)
