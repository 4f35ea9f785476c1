"""The training loop as a library: ``train_and_evaluate(config, workdir)``.

Stages (method.md §3.2): ``pretrain`` (sign/STE BNN from scratch), ``finetune`` (plain
fine-tuning, the control of Table 1) and ``lns`` (warm start, D7, then joint fine-tuning of W,
theta and the rest on Eq. 21). ``finetune`` and ``lns`` start from the pretrain stage of this
run or, without one, from ``config.init_from`` (the workdir of a run that pretrained).

A workdir with checkpoints is resumed, stage by stage, by the policy of
:mod:`bnnns.train.resume` (done: load and move on; an intact checkpoint: continue from its
step, ending where an uninterrupted run ends; else start fresh).
Every step checks on device that its loss and state are finite; the host looks at that flag
before each save and log, so a non-finite state is never saved (docs/reliability.md).

Parallelism: one ``("data",)`` mesh over every device of every process; the global batch is
sharded over it, the state replicated; jit inserts the collectives (see
:mod:`bnnns.train.sharding`).

The pieces: :mod:`bnnns.train.stage` (a stage's model, optimizer, jitted steps and its loop),
:mod:`bnnns.train.epoch_record` (what an epoch writes), :mod:`bnnns.train.resume` (where a
stage starts, what its checkpoints carry). This module keeps the entry points.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Sequence
from typing import Any

import jax
import numpy as np
from absl import logging as absl_logging
from ml_collections import ConfigDict

from bnnns import data as data_lib
from bnnns.errors import ConfigError, DataError, WorkdirError
from bnnns.train import sharding
from bnnns.train.config_checks import validate_config
from bnnns.train.epoch_record import stage_summary
from bnnns.train.metric_writer import MetricWriter
from bnnns.train.preemption import StopRequests
from bnnns.train.seeds import train_seeds
from bnnns.train.stage import Callback, Run, Stage, build_model, lns_lr_scales
from bnnns.train.steps import TrainState
from bnnns.train.workdir import WorkdirLock, check_rerun_config, write_json_atomic
from bnnns.train.write_errors import workdir_write_errors

__all__ = [
    "train_and_evaluate",
    "restore_stage",
    "build_model",
    "lns_lr_scales",
    "load_data",
    "run_info",
    "Callback",
]


def load_data(config: ConfigDict) -> tuple[dict[str, data_lib.Split], data_lib.DatasetInfo]:
    """Load ``config.dataset``; errors name the config field."""
    try:
        return data_lib.load_dataset(
            config.dataset,
            data_dir=config.data_dir or None,
            validation_fraction=config.validation_fraction,
            validation_seed=_validation_seed(config),
            train_subset=config.train_subset or None,
            eval_subset=config.get("eval_subset", 0) or None,
            image_size=config.image_size or None,
            augment=config.get("augment", "") or None,
        )
    except (ValueError, FileNotFoundError, OSError) as e:
        raise DataError(f"config.dataset={config.dataset!r}: {e}") from e


def _validation_seed(config: ConfigDict) -> int:
    """The validation carve's seed: ``config.validation_seed``, or the run's seed when -1 (a
    protocol fixes it, so every fine-tuning seed holds out the pretrained BNN's split)."""
    seed = config.get("validation_seed", -1)
    return config.seed if seed == -1 else seed


DATASET_JSON = "dataset.json"  # the data set's DatasetInfo, written by every run


def run_info(config: ConfigDict, workdir: str) -> data_lib.DatasetInfo:
    """The data set's metadata of the run in ``workdir`` (shapes, classes, normalisation): from
    its ``dataset.json``, so that a run is exported or restored without its data (on another
    machine); a run written before that file existed loads ``config.dataset`` instead."""
    path = os.path.join(workdir, DATASET_JSON)
    if not os.path.isfile(path):
        return load_data(config)[1]
    with open(path) as f:
        fields = json.load(f)
    for key in ("image_shape", "mean", "std"):
        fields[key] = tuple(fields[key])
    return data_lib.DatasetInfo(**fields)


def _load_pretrained(run: Run, source_workdir: str) -> TrainState:
    """The final pretrain state of another run (``config.init_from``).

    Its optimizer state is shaped by *that* run's pretrain optimizer, which may differ from this
    config's (e.g. pretrained with SGD, this config's pretrain section says Adam): the stage is
    built with the pretrain section of the source run's ``config.json`` when there is one.
    """
    config = run.config
    stored = os.path.join(source_workdir, "config.json")
    if os.path.exists(stored):
        with open(stored) as f:
            source_pretrain = json.load(f).get("pretrain")
        if source_pretrain:
            config = ConfigDict(config.to_dict())
            config.pretrain.update(
                {k: v for k, v in source_pretrain.items() if k in config.pretrain}
            )
    source = dataclasses.replace(run, workdir=source_workdir, config=config)
    stage = Stage(source, "pretrain")
    state, meta = stage.checkpointer.restore(stage.abstract_state)
    stage.checkpointer.close()
    if not meta.get("done"):
        print(
            f"warning: the pretrain stage in {source_workdir} did not finish "
            f"(step {int(state.step)}); fine-tuning from it anyway"
        )
    return state


def restore_stage(config: ConfigDict, workdir: str, stage: str) -> tuple[TrainState, dict]:
    """The newest checkpoint of ``stage`` in ``workdir`` (state as host arrays, metadata); reads
    no data (:func:`run_info`)."""
    info = run_info(config, workdir)
    rows = np.zeros(info.num_train, np.uint8)  # no images: the stage only counts the rows
    splits = {"train": data_lib.Split(rows, rows.astype(np.int32))}
    run = Run(
        config,
        workdir,
        splits,
        info,
        sharding.make_mesh(config.get("mesh_shape")),
        MetricWriter(workdir, enabled=False),
        (),
    )
    st = Stage(run, stage)
    state, meta = st.checkpointer.restore(st.abstract_state)
    st.checkpointer.close()
    return jax.device_get(state), meta


def train_and_evaluate(
    config: ConfigDict, workdir: str, callbacks: Sequence[Callback] = ()
) -> dict[str, Any]:
    """Run every stage of ``config.stages`` in ``workdir`` and write ``summary.json``.

    Args:
      config: an experiment config (see ``configs/``); validated before anything runs.
      workdir: where checkpoints, ``metrics.jsonl``, TensorBoard events and the summary go;
        a workdir with checkpoints is resumed (the policy of :mod:`bnnns.train.resume`).
      callbacks: called with every epoch record, after its checkpoint is saved.

    Raises:
      bnnns.train.preemption.Preempted: on SIGTERM or SIGINT, once the current step is saved
        (:mod:`bnnns.train.preemption`); a rerun resumes from it.

    Returns:
      The summary: ``{"stages": [...], "test_accuracy": final, "config": {...}}``.
    """
    absl_logging.set_verbosity(absl_logging.WARNING)  # orbax logs every save at INFO
    stages = validate_config(config, jax.process_count())
    splits, info = load_data(config)
    _check_batch_fits(config, len(splits["train"]))
    mesh = sharding.make_mesh(config.get("mesh_shape"))
    try:
        sharding.check_batch_size(mesh, config.batch_size, "batch_size")
    except ValueError as e:
        raise ConfigError(str(e)) from e
    workdir = os.path.abspath(workdir)
    with workdir_write_errors(workdir):  # full disk, read-only: one line (docs/reliability.md)
        os.makedirs(workdir, exist_ok=True)
        lock = _lock_workdir(workdir)  # a second run on this workdir stops here
        try:
            check_rerun_config(config, workdir, stages)  # before anything is written
            stop = StopRequests(config.get("checkpoint_every_minutes", 0.0))
            with stop.installed():  # SIGTERM / SIGINT: save this step, raise Preempted
                return _train(config, workdir, stages, splits, info, mesh, callbacks, stop)
        finally:
            data_lib.close_worker_pools()  # grain's, kept across epochs (not across runs)
            lock.release()


def _lock_workdir(workdir: str) -> WorkdirLock:
    """Process 0 locks ``workdir``; every process raises if that failed."""
    lock, error = WorkdirLock(workdir), None
    if jax.process_index() == 0:
        try:
            lock.acquire()
        except WorkdirError as e:
            error = e
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        failed = int(multihost_utils.broadcast_one_to_all(np.int32(error is not None)))
        if failed and error is None:
            error = WorkdirError(f"workdir {workdir} is in use by another run (see process 0)")
    if error is not None:
        raise error
    return lock


def _check_batch_fits(config: ConfigDict, num_train: int) -> None:
    if config.batch_size > num_train:
        raise ConfigError(
            f"config.batch_size={config.batch_size} is larger than the {num_train} training "
            f"images (config.dataset={config.dataset!r}, config.train_subset="
            f"{config.train_subset}, config.validation_fraction={config.validation_fraction}): "
            "it must be at most the train split's size"
        )


def _train(config, workdir, stages, splits, info, mesh, callbacks, stop) -> dict[str, Any]:
    if config.get("num_seeds", 1) > 1:  # S replicas in one program (bnnns.train.seeds)
        return train_seeds(
            config,
            workdir,
            stages,
            splits,
            info,
            mesh,
            callbacks,
            stop,
            load_data,
            _load_pretrained,
        )
    run = Run(
        config,
        workdir,
        splits,
        info,
        mesh,
        MetricWriter(workdir, enabled=jax.process_index() == 0),
        callbacks,
        stop,
    )
    if run.is_main:
        write_json_atomic(os.path.join(workdir, "config.json"), config.to_dict())
        write_json_atomic(os.path.join(workdir, DATASET_JSON), dataclasses.asdict(info))
        print(
            f"bnnns: {config.dataset} ({info.num_train} train / {info.num_test} test), "
            f"model {config.model.name}, stages {stages}, {jax.device_count()} device(s), "
            f"{jax.process_count()} process(es), workdir {workdir}"
        )
    pretrained = None
    summaries = []
    try:
        for name in stages:
            if name != "pretrain" and pretrained is None:
                pretrained = _load_pretrained(run, config.init_from)
            stage = Stage(run, name)
            stage.checkpointer.remove_unfinished()  # of a run that stopped mid-save
            try:
                state, meta = stage.run_stage(pretrained)
            except BaseException:
                stage.checkpointer.close_after_error()  # before the workdir's lock is released
                raise
            stage.checkpointer.close()
            if name == "pretrain":
                pretrained = state
            summaries.append(stage_summary(name, state, meta))
    finally:
        run.writer.close()
    summary = {
        "stages": summaries,
        "test_accuracy": summaries[-1]["test_accuracy"],
        "config": config.to_dict(),
    }
    if run.is_main:
        write_json_atomic(os.path.join(workdir, "summary.json"), summary)
        for s in summaries:
            print(
                f"[{s['stage']}] final test accuracy {s['test_accuracy']:.4f} "
                f"(best {s['best_test_accuracy']:.4f}), {s['steps']} steps, {s['seconds']:.0f} s"
            )
    return summary
