"""Benchmarks: one module per benchmark, one command line (:mod:`bnnns.bench.cli`).

Modules:

- ``cli``: the argument parser and ``main`` of ``python -m bnnns.bench``.
- ``cases``: :class:`Case` (model x binarizer x size), the models' binarization options and
  sizes, and :func:`build`.
- ``step``: the train-step benchmark (``prepare``, ``run_cases``, ``run_models``, ``summary``).
- ``mapping_fn``: the mapping networks of an LNS step in isolation, and their analytic FLOPs.
- ``mapping_ab``: the mapping implementations side by side (``--mapping-ab``).
- ``costs``: the mapping networks' FLOP and time share per model (``--costs``).
- ``accelerator``: the birealnet18 ImageNet step on an accelerator (``--gpu-step``).
- ``peers``: bnnns beside Larq, PyTorch and naive JAX (``--peers``).
- ``deploy``: artifact size and ``predict`` speed (``--deploy``).
- ``stability``: is an LNS recipe stable? (``python -m bnnns.bench.stability``).
- ``timing``: interleaved timing, medians, peak RSS / device memory, XLA memory and FLOPs.
- ``process``: fresh child processes and the JSON lines they print.

Commands::

    python -m bnnns.bench [--quick]             # resnet20 + birealnet18: float / sign / lns
    python -m bnnns.bench --one M:B[,M:B...]    # cases in one process, interleaved
    python -m bnnns.bench --peers | --deploy | --mapping-ab | --costs | --gpu-step
    python -m bnnns.bench.stability --config configs/cifar10_resnet20_lns.py ...

docs/bench.md explains every output field. The float reference and the reference mapping
network are library options (``weight_binarizer="real"``, ``mapping_impl="reference"``);
nothing here patches the library.
"""

from bnnns.bench.cases import Case, build
from bnnns.bench.cli import main
from bnnns.bench.step import run_cases
from bnnns.core.mapping import ReferenceMappingNet  # its home before the layout (issue 16)

__all__ = ["Case", "ReferenceMappingNet", "build", "main", "run_cases"]
