"""Runs a protocol's training runs, each in its own workdir, resuming what is finished.

Every run of a :class:`~bnnns.experiments.protocol.Protocol` lives in a workdir under ``root``
named by its directory stem, the overrides that differ from the protocol's config, and its
seed; a workdir with a ``summary.json`` (or a recorded divergence) is read, not trained again,
after checking it was trained with this very config. The same run always lands in the same
directory, whichever experiment (Table 1, Figs. 3-5) asks for it.

With ``one_program`` (``--seeds-in-one-program``) a row's missing seeds ``a..b`` train as one
S-seed program (``config.num_seeds``, :mod:`bnnns.train.seeds`) in ``<stem>_seeds<a>-<b>/``,
seed ``s`` in its ``seed_<s-a>/``: exactly the workdir of the single run of seed ``s``. Results
are read per seed from either layout, the single run's ``<stem>_seed<s>/`` first, so finished
runs of either kind are never trained again (docs/scaling.md).
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from typing import Any, NamedTuple

from bnnns.experiments.protocol import SWEEPS, Protocol, Run, Sweep

__all__ = [
    "Planned",
    "Program",
    "check_same_config",
    "experiment_rows",
    "finetune_run",
    "finetune_seeds",
    "finetune_spec",
    "finished_workdir",
    "group_workdir",
    "load_config",
    "planned_runs",
    "pretrain",
    "pretrain_spec",
    "reference",
    "row_programs",
    "run_in_parallel",
    "run_one",
    "run_workdir",
    "sweep_point",
]

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


class Planned(NamedTuple):
    """One run an experiment reads: its row (a row name or a sweep value), the run, the seed."""

    label: str | float
    run: Run
    seed: int
    allow_divergence: bool


def load_config(protocol: Protocol, overrides: dict[str, Any], config: str | None = None):
    """The config file (``config``, else the protocol's) with the budget, then ``overrides``."""
    from bnnns.train.default_config import load_config_file

    path = os.path.join(REPO_ROOT, config or protocol.config)  # an absolute path stays
    return load_config_file(path, {**protocol.budget, **overrides})


def run_one(
    protocol: Protocol,
    workdir: str,
    overrides: dict[str, Any],
    allow_divergence: bool = False,
    config: str | None = None,
) -> dict[str, Any]:
    """Run (or load, when already finished) one training run; return its summary.

    With ``allow_divergence`` a run stopped by a non-finite loss is a result, not an error: it
    returns (and records in ``workdir/diverged.json``) ``{"diverged": message}``.
    """
    cfg = load_config(protocol, overrides, config)
    for name in ("summary.json", "diverged.json"):
        path = os.path.join(workdir, name)
        if os.path.exists(path):
            check_same_config(workdir, cfg)
            with open(path) as f:
                return json.load(f)
    from bnnns.train.train_lib import train_and_evaluate

    try:
        return train_and_evaluate(cfg, workdir)
    except FloatingPointError as e:
        if not allow_divergence:
            raise
        result = {"diverged": str(e)}
        with open(os.path.join(workdir, "diverged.json"), "w") as f:
            json.dump(result, f)
        return result


def check_same_config(workdir: str, config) -> None:
    """A finished run is reused only when it was trained with this very config (the protocol's
    defaults may have changed since): otherwise stop, naming the differing fields."""
    with open(os.path.join(workdir, "config.json")) as f:
        stored = json.load(f)
    wanted = json.loads(json.dumps(config.to_dict(), default=str))
    flat_a, flat_b = _flatten(stored), _flatten(wanted)
    # Fields only one side has were added to bnnns in between (with a default that keeps the
    # old behaviour); every field both have must agree, except the sections of stages this run
    # does not have (a pretrain run does not depend on the lns section).
    unused = tuple(f"{s}." for s in ("pretrain", "finetune", "lns") if s not in wanted["stages"])
    differ = sorted(
        k
        for k in flat_a.keys() & flat_b.keys()
        if flat_a[k] != flat_b[k] and not k.startswith(unused)
    )
    if differ:
        raise ValueError(
            f"{workdir} holds a finished run with another config ({', '.join(differ[:6])} "
            "differ): use another --workdir, or remove that run to retrain it"
        )


def _flatten(tree: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in tree.items():
        if isinstance(v, dict):
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = list(v) if isinstance(v, tuple) else v
    return out


def _lookup(config, key: str) -> Any:
    node = config
    for part in key.split("."):
        node = node[part]
    return node


def pretrain_spec(protocol: Protocol, root: str) -> tuple[str, dict[str, Any]]:
    """The workdir and overrides of the pretrained BNN (Table 1's baseline)."""
    row = protocol.pretrain
    return os.path.join(root, row.run), {"stages": row.stage, **row.overrides}


def pretrain(protocol: Protocol, root: str) -> tuple[str, dict[str, Any]]:
    """Train (or load) the pretrained BNN every row fine-tunes; its workdir and summary."""
    workdir, overrides = pretrain_spec(protocol, root)
    return workdir, run_one(protocol, workdir, overrides, config=protocol.pretrain.config)


def reference(protocol: Protocol, root: str) -> dict[str, Any] | None:
    """Train (or load) the protocol's float reference model; its last stage's summary, or None
    when the protocol has no reference."""
    row = protocol.reference
    if row is None:
        return None
    workdir = os.path.join(root, row.run)
    summary = run_one(protocol, workdir, {"stages": row.stage, **row.overrides}, config=row.config)
    return {"workdir": workdir, **summary["stages"][-1]}


def run_workdir(protocol: Protocol, root: str, run: Run, seed: int) -> tuple[str, dict]:
    """The directory of a fine-tuning run and its overrides less those equal to the protocol's
    defaults (the same run always lands in the same directory, whichever experiment asks)."""
    base = load_config(protocol, {}, run.config)
    extra = {k: v for k, v in run.overrides.items() if _lookup(base, k) != v}
    tag = "_".join(f"{k.split('.')[-1]}{v}".replace("/", "over") for k, v in extra.items())
    return os.path.join(root, f"{run.run}{'_' + tag if tag else ''}_seed{seed}"), extra


def finetune_spec(protocol: Protocol, root: str, run: Run, seed: int) -> tuple[str, dict]:
    """The workdir of a fine-tuning run and the overrides it trains with: its stage, from the
    pretrained BNN, its seed, and its overrides that differ from the protocol's defaults."""
    workdir, extra = run_workdir(protocol, root, run, seed)
    pre, _ = pretrain_spec(protocol, root)
    return workdir, {"stages": run.stage, "init_from": pre, "seed": seed, **extra}


def finetune_run(
    protocol: Protocol, root: str, run: Run, seed: int, allow_divergence: bool = False
) -> dict[str, Any]:
    """Train (or load) one fine-tuning run: its workdir, seed and last stage's summary (or
    ``diverged``, with ``allow_divergence``)."""
    return finetune_seeds(protocol, root, run, [seed], allow_divergence)[0]


class Program(NamedTuple):
    """One training program of a row: a single run (``seeds`` of one), or several seeds as one
    S-seed program (``config.num_seeds``) whose seed ``seeds[k]`` is ``<workdir>/seed_<k>``."""

    workdir: str
    overrides: dict[str, Any]
    seeds: tuple[int, ...]


def group_workdir(protocol: Protocol, root: str, run: Run, seeds: Sequence[int]) -> str:
    """The workdir of the S-seed program of ``run``'s seeds ``seeds[0] .. seeds[-1]``:
    ``<run's single-run directory less _seed<s>>_seeds<first>-<last>``."""
    single, _ = run_workdir(protocol, root, run, seeds[0])
    return f"{single[: -len(f'_seed{seeds[0]}')]}_seeds{seeds[0]}-{seeds[-1]}"


def finished_workdir(protocol: Protocol, root: str, run: Run, seed: int) -> str | None:
    """Where the finished run of ``seed`` is (its ``summary.json`` or ``diverged.json``): its
    own directory (``..._seed<s>``, the layout of single runs), else its ``seed_<k>`` in an
    S-seed program's directory (``..._seeds<a>-<b>``); None if it is not finished."""
    single, _ = run_workdir(protocol, root, run, seed)
    stem = single[: -len(f"_seed{seed}")]
    candidates = [single]
    parent = os.path.dirname(stem) or "."
    if os.path.isdir(parent):
        prefix = f"{os.path.basename(stem)}_seeds"
        for name in sorted(os.listdir(parent)):
            first, _, last = name[len(prefix) :].partition("-")
            if name.startswith(prefix) and first.isdigit() and last.isdigit():
                if int(first) <= seed <= int(last):
                    candidates.append(os.path.join(parent, name, f"seed_{seed - int(first)}"))
    for workdir in candidates:
        if any(os.path.exists(os.path.join(workdir, f)) for f in ("summary.json", "diverged.json")):
            return workdir
    return None


def row_programs(
    protocol: Protocol,
    root: str,
    run: Run,
    seeds: Sequence[int],
    allow_divergence: bool = False,
    one_program: bool = False,
) -> list[Program]:
    """The programs that train the seeds of ``run`` not finished yet: with ``one_program``,
    each run of consecutive missing seeds as one S-seed program (a single seed, or a row whose
    runs may diverge, as single runs: one replica's non-finite loss stops all)."""
    missing = [s for s in seeds if finished_workdir(protocol, root, run, s) is None]
    groups: list[list[int]] = []
    for s in missing:
        if one_program and not allow_divergence and groups and groups[-1][-1] == s - 1:
            groups[-1].append(s)
        else:
            groups.append([s])
    programs = []
    for group in groups:
        workdir, overrides = finetune_spec(protocol, root, run, group[0])
        if len(group) > 1:
            workdir = group_workdir(protocol, root, run, group)
            overrides = {**overrides, "num_seeds": len(group)}
        programs.append(Program(workdir, overrides, tuple(group)))
    return programs


def finetune_seeds(
    protocol: Protocol,
    root: str,
    run: Run,
    seeds: Sequence[int],
    allow_divergence: bool = False,
    one_program: bool = False,
) -> list[dict[str, Any]]:
    """Train (or load) the fine-tuning runs of ``seeds`` (:func:`row_programs`); each seed's
    workdir, seed and last stage's summary (or ``diverged``), read from its own directory in
    either layout, after checking it was trained with the single run's config."""
    for program in row_programs(protocol, root, run, seeds, allow_divergence, one_program):
        run_one(protocol, program.workdir, program.overrides, allow_divergence, run.config)
    results = []
    for seed in seeds:
        workdir = finished_workdir(protocol, root, run, seed)
        _, overrides = finetune_spec(protocol, root, run, seed)
        summary = run_one(protocol, workdir, overrides, allow_divergence, run.config)
        if "diverged" in summary:
            results.append({"workdir": workdir, "seed": seed, **summary})
        else:
            results.append({"workdir": workdir, "seed": seed, **summary["stages"][-1]})
    return results


def sweep_point(sweep: Sweep, value: float) -> Run:
    """The run of one point of a sweep (Figs. 4-5)."""
    overrides = {**sweep.fixed, sweep.param: value}
    overrides.update({k: value for k in sweep.tied})
    return Run(sweep.runs.get(value, sweep.run), sweep.stage, overrides)


def experiment_rows(protocol: Protocol, name: str) -> list[tuple[str | float, Run, bool]]:
    """The rows of experiment ``name``: ``(row name or sweep value, run, allow_divergence)``."""
    if name == "ablation":
        return [(n, r, False) for n, r in protocol.table1.items()]
    if name == "flips":
        return [(n, r, False) for n, r in protocol.fig3.items()]
    if name == "flip_sources":
        return [(n, r, True) for n, r in protocol.flip_sources.items()]
    if name in SWEEPS:
        sweep = protocol.sweeps[name]
        return [(v, sweep_point(sweep, v), False) for v in sweep.grid]
    raise ValueError(f"unknown experiment {name!r}")


def planned_runs(protocol: Protocol, name: str, seeds: int) -> list[Planned]:
    """The fine-tuning runs experiment ``name`` reads, in the order it runs them (row by row,
    seeds ``0 .. seeds-1`` each)."""
    return [
        Planned(label, run, s, div)
        for label, run, div in experiment_rows(protocol, name)
        for s in range(seeds)
    ]


def _run_program(job: tuple[Protocol, Program, bool, str | None]) -> str:
    protocol, program, allow_divergence, config = job
    run_one(protocol, program.workdir, program.overrides, allow_divergence, config)
    return program.workdir


def run_in_parallel(
    protocol: Protocol,
    root: str,
    names: Sequence[str],
    seeds: dict[str, int],
    jobs: int,
    one_program: bool = False,
) -> None:
    """Train the missing runs of experiments ``names``, ``jobs`` processes at a time (each
    program is one process of its own, as if trained alone: a run, or with ``one_program`` a
    row's seeds, :func:`row_programs`; a run two experiments share runs once)."""
    import multiprocessing

    pretrain(protocol, root)
    if "ablation" in names:
        reference(protocol, root)
    # By the run's directory: the most seeds any experiment asks for; it may diverge only if
    # every experiment that reads it allows that.
    rows: dict[str, tuple[Run, bool, int]] = {}
    for name in names:
        for _, run, div in experiment_rows(protocol, name):
            key = run_workdir(protocol, root, run, 0)[0]
            _, seen_div, seen_n = rows.get(key, (run, True, 0))
            rows[key] = (run, div and seen_div, max(seeds[name], seen_n))
    todo = [
        (protocol, program, div, run.config)
        for run, div, n in rows.values()
        for program in row_programs(protocol, root, run, range(n), div, one_program)
    ]
    context = multiprocessing.get_context("spawn")  # no fork of a process that imported jax
    with context.Pool(jobs, maxtasksperchild=1) as pool:
        for workdir in pool.imap_unordered(_run_program, todo):
            print(f"finished {workdir}", flush=True)
