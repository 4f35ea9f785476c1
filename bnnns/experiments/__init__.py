"""The paper's ablations (Han et al. 2020: Table 1, Figs. 3, 4 and 5), run on a protocol:
``python -m bnnns.experiments {ablation,flips,flip_sources,rho_sweep,alpha_sweep,all}``.

Modules, one job each:

- :mod:`~bnnns.experiments.protocol`: what a protocol is (the :class:`Protocol` dataclass, pure
  data) and the registry of protocols by name.
- :mod:`~bnnns.experiments.protocols`: the built-in protocols; ``mnist`` (the default,
  ``configs/mnist_ablation.py``) is RESULTS.md's.
- :mod:`~bnnns.experiments.runner`: turns a protocol into training runs, one workdir each,
  resuming what is finished (and refusing a finished run trained with another config).
- :mod:`~bnnns.experiments.studies`: the experiments, one function each (Table 1, Fig. 3,
  Figs. 4-5, the flip sources): their runs aggregated over seeds.
- :mod:`~bnnns.experiments.report`: paired statistics, mean ± std, Markdown tables, the JSON
  and Markdown files; :mod:`~bnnns.experiments.plots`: the PNG plots;
  :mod:`~bnnns.experiments.paper`: the paper's own (CIFAR-10) numbers, for orientation.
- :mod:`~bnnns.experiments.cli`: the command line (``--protocol NAME``, default ``mnist``).

Adding a protocol (e.g. CIFAR-10 ResNet-20 from ``configs/cifar10_resnet20_*.py``): write
``bnnns/experiments/protocols/<name>.py`` holding one ``register(Protocol(...))`` with its
config file (``configs/cifar10_resnet20_lns.py``), its pretrained BNN (``Run("pretrain",
"pretrain", {"seed": 0}, config="configs/cifar10_resnet20_pretrain.py")``), its Table 1 rows
(a row may name its own config, e.g. ``configs/cifar10_resnet20_finetune.py``), Fig. 3 rows,
flip sources, sweeps, default seeds and budget overrides; import it in
``protocols/__init__.py``. ``--protocol <name>`` then runs it; nothing else changes. Run
directories are named by the rows' ``run`` stems, so keep those stable once runs exist.

Layering: this package may import anything in bnnns; nothing in bnnns imports it.
"""

from bnnns.experiments.cli import main

__all__ = ["main"]
