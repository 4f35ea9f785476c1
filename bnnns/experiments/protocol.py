"""What an experiment protocol is: pure data, and a registry of protocols by name.

A :class:`Protocol` names everything the paper's ablations (Han et al. 2020: Table 1, Figs. 3,
4 and 5) need on one data set and model: the config file, the run that makes the shared
pretrained BNN, the rows of each experiment, the sweeps, the default seeds and the budget. The
runner (:mod:`bnnns.experiments.runner`) turns it into runs; it holds no code of its own.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = ["EXPERIMENTS", "Protocol", "Run", "Sweep", "get_protocol", "protocol_names", "register"]

Overrides = Mapping[str, Any]  # {"a.b": value}, as load_config_file takes them

# The experiments ``python -m bnnns.experiments`` knows, in the order ``all`` runs them.
EXPERIMENTS = ("ablation", "flip_sources", "flips", "rho_sweep", "alpha_sweep")
SWEEPS = ("rho_sweep", "alpha_sweep")  # Fig. 5 (rho) and Fig. 4 (alpha)


@dataclass(frozen=True)
class Run:
    """One training run of a protocol, before its seed is chosen.

    ``run`` is the run-directory stem: a fine-tuning run lives in
    ``<root>/<run>[_<overrides that differ from the config>]_seed<seed>``, the pretrained BNN in
    ``<root>/<run>``. ``stage`` is the config's ``stages`` (``pretrain``, ``finetune``, ``lns``),
    ``overrides`` change the config, ``config`` replaces the protocol's config file.
    """

    run: str
    stage: str
    overrides: Overrides = field(default_factory=dict)
    config: str | None = None


@dataclass(frozen=True)
class Sweep:
    """LNS against one hyper-parameter (Fig. 5: rho; Fig. 4: alpha), read on the validation split.

    Every ``grid`` point runs ``stage`` with ``{**fixed, param: value}`` and each of ``tied``
    set to the value too (``lns.rho_neg`` follows ``lns.rho_pos``), in the directory stem
    ``run``, or ``runs[value]`` for a point that is a Table 1 row under another stem (so the
    sweep reads that row's runs instead of training them again).
    """

    param: str
    grid: tuple[float, ...]
    fixed: Overrides = field(default_factory=dict)
    tied: tuple[str, ...] = ()
    run: str = "LNS"
    runs: Mapping[float, str] = field(default_factory=dict)
    stage: str = "lns"


@dataclass(frozen=True)
class Protocol:
    """The paper's ablations on one data set and model, as data.

    - ``config``: the config file (relative to the repository root, or absolute) that gives the
      data set, the model and the recipes; ``budget`` overrides it for every run (epochs etc.).
    - ``pretrain``: the one pretrained BNN every row fine-tunes (Table 1's baseline).
    - ``table1``: Table 1's rows after the baseline, by the paper's row name; ``paired``: the
      same-seed comparisons ``(a, b)`` reported as ``a - b``.
    - ``fig3``: the rows of Fig. 3 (train loss, test accuracy and flip rate per epoch).
    - ``flip_sources``: one row per reading of why LNS flips what it flips (each changes one
      thing); a run of these that diverges is a result.
    - ``sweeps``: Figs. 4 and 5 by experiment name (``rho_sweep``, ``alpha_sweep``).
    - ``seeds``: the default number of seeds (``0 .. n-1``) of each experiment the protocol has.
    - ``reference``: the same model in float (trained like ``pretrain``), reported beside Table 1
      so the cost of binarization shows; ``None`` when the protocol has none.
    - ``title``: the data set (and model) as plot titles name it.
    """

    name: str
    title: str
    config: str
    pretrain: Run
    table1: Mapping[str, Run]
    paired: tuple[tuple[str, str], ...]
    fig3: Mapping[str, Run]
    flip_sources: Mapping[str, Run]
    sweeps: Mapping[str, Sweep]
    seeds: Mapping[str, int]
    budget: Overrides = field(default_factory=dict)
    reference: Run | None = None

    def __post_init__(self) -> None:
        unknown = set(self.seeds) - set(EXPERIMENTS)
        if unknown:
            raise ValueError(f"protocol {self.name!r}: no experiment {sorted(unknown)}")
        missing = [n for n in SWEEPS if n in self.seeds and n not in self.sweeps]
        if missing:
            raise ValueError(f"protocol {self.name!r} has seeds but no sweep for {missing}")
        for a, b in self.paired:
            if a not in self.table1 or b not in self.table1:
                raise ValueError(f"protocol {self.name!r}: paired {(a, b)} names no Table 1 row")


# The paper's rows, shared by the protocols (each protocol's config gives their budget).
FINE_TUNE = Run("fine-tune", "finetune")
LNS = Run("LNS", "lns")  # alpha, rho, reduction and weight STE: the protocol config's
LNS_ALPHA0 = Run("LNSalpha0", "lns", {"lns.alpha": 0.0})
TABLE1 = {"fine-tune": FINE_TUNE, "LNS alpha=0": LNS_ALPHA0, "LNS": LNS}
# Fig. 3: LNS at lr 0.01; fine-tuning at 0.01, 0.001 and 0.0001 (method.md §5.1).
FIG3 = {
    "LNS": LNS,
    "fine-tune": FINE_TUNE,
    "fine-tune lr 0.001": Run("fine-tunelr0.001", "finetune", {"finetune.learning_rate": 0.001}),
    "fine-tune lr 0.0001": Run("fine-tunelr0.0001", "finetune", {"finetune.learning_rate": 0.0001}),
}

PROTOCOLS: dict[str, Protocol] = {}


def register(protocol: Protocol) -> Protocol:
    """Add ``protocol`` to the registry under its name (once); return it."""
    if PROTOCOLS.get(protocol.name, protocol) is not protocol:
        raise ValueError(f"a protocol named {protocol.name!r} is registered already")
    PROTOCOLS[protocol.name] = protocol
    return protocol


def _load_builtin() -> None:
    # The built-in protocols register themselves on import; imported here, not at the top,
    # because they import this module.
    importlib.import_module("bnnns.experiments.protocols")


def protocol_names() -> tuple[str, ...]:
    """The registered protocols' names, sorted."""
    _load_builtin()
    return tuple(sorted(PROTOCOLS))


def get_protocol(name: str) -> Protocol:
    """The registered protocol ``name``; a ValueError naming the registered ones otherwise."""
    names = protocol_names()
    if name not in PROTOCOLS:
        raise ValueError(f"unknown protocol {name!r}; the protocols are: {', '.join(names)}")
    return PROTOCOLS[name]
