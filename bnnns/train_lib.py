"""The training loop as a library: ``train_and_evaluate(config, workdir)``.

Stages (method.md §3.2): ``pretrain`` (sign/STE BNN from scratch), ``finetune`` (plain
fine-tuning, the control of Table 1) and ``lns`` (warm start, D7, then joint fine-tuning of W,
theta and the rest on Eq. 21). ``finetune`` and ``lns`` start from the pretrain stage of this
run or, without one, from ``config.init_from`` (the workdir of a run that pretrained).

Resume policy, in order, for every stage of ``config.stages``:
  1. its newest checkpoint says the stage is done: load it and move on;
  2. it has a checkpoint: restore it and continue from that step (data order and
     augmentation are functions of ``(seed, epoch, step)``, so the run ends where an
     uninterrupted one ends; a mid-epoch checkpoint also carries the train-metric sums of
     its epoch so far, so that epoch's logged means cover all its steps);
  3. otherwise start it fresh.

Parallelism: one ``("data",)`` mesh over every device of every process; the global batch is
sharded over it, the state replicated; jit inserts the collectives (see :mod:`bnnns.sharding`).
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import os
import time
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging as absl_logging
from ml_collections import ConfigDict
from tqdm import tqdm

from bnnns import data as data_lib
from bnnns import sharding
from bnnns.checkpointing import StageCheckpointer
from bnnns.config_checks import validate_config
from bnnns.metric_writer import MetricWriter
from bnnns.models import BinaryOptions, create_model
from bnnns.optim import make_optimizer, make_schedule
from bnnns.stage_init import fresh_state, transfer_pretrained, warm_start_mapping
from bnnns.steps import TrainState, binary_weights, eval_step, train_step

__all__ = ["train_and_evaluate", "restore_stage", "build_model", "load_data", "Callback"]

Callback = Callable[[dict], None]


def build_model(config: ConfigDict, num_classes: int, stage: str):
    """The model of ``config.model`` with the binarization of ``stage`` (sign or LNS)."""
    lns = stage == "lns"
    binary = BinaryOptions(
        weight_binarizer="lns" if lns else "sign",
        weight_scale=config.binary.weight_scale,
        weight_ste=config.lns.weight_ste if lns else config.binary.weight_ste,
        weight_clip=config.binary.weight_clip,
        activation=config.binary.activation,
        act_clip=config.binary.act_clip,
        rho_pos=config.lns.rho_pos,
        rho_neg=config.lns.rho_neg,
        aux_reduction=config.lns.reduction,
        labels=config.lns.labels,
        residual_mapping=config.lns.residual,
        mapping_dtype=config.lns.mapping_dtype,
    )
    kwargs = {k: v for k, v in config.model.to_dict().items() if k not in ("name", "dtype")}
    dtype = jnp.dtype(config.model.get("dtype", "float32"))
    return create_model(
        config.model.name, num_classes=num_classes, binary=binary, dtype=dtype, **kwargs
    )


def load_data(config: ConfigDict) -> tuple[dict[str, data_lib.Split], data_lib.DatasetInfo]:
    """Load ``config.dataset``; errors name the config field."""
    try:
        return data_lib.load_dataset(
            config.dataset,
            data_dir=config.data_dir or None,
            validation_fraction=config.validation_fraction,
            validation_seed=config.seed,
            train_subset=config.train_subset or None,
            image_size=config.image_size or None,
        )
    except (ValueError, FileNotFoundError, OSError) as e:
        raise type(e)(f"config.dataset={config.dataset!r}: {e}") from e


@dataclasses.dataclass
class _Run:
    """What every stage of one run shares."""

    config: ConfigDict
    workdir: str
    splits: dict[str, data_lib.Split]
    info: data_lib.DatasetInfo
    mesh: jax.sharding.Mesh
    writer: MetricWriter
    callbacks: Sequence[Callback]

    @property
    def is_main(self) -> bool:
        return jax.process_index() == 0

    def dummy_input(self) -> jax.Array:
        return jnp.zeros((1, *self.info.image_shape), jnp.float32)

    def batches(self, split: str, *, train: bool, epoch: int = 0, start_step: int = 0):
        if train:
            batch_size = self.config.batch_size
        else:  # padded and masked anyway: round up to fill every device
            batch_size = sharding.round_up_batch(self.mesh, self.config.eval_batch_size)
        it = data_lib.batch_iterator(
            self.splits[split],
            self.info,
            global_batch_size=batch_size,
            seed=self.config.seed,
            epoch=epoch,
            train=train,
            process_index=jax.process_index(),
            process_count=jax.process_count(),
            start_step=start_step,
            num_threads=self.config.data_threads,
        )
        for batch in it:
            yield sharding.global_batch(self.mesh, batch)

    def steps_per_epoch(self) -> int:
        return data_lib.steps_per_epoch(len(self.splits["train"]), self.config.batch_size, True)


def _stage_seed_key(config: ConfigDict, stage: str) -> jax.Array:
    return jax.random.fold_in(
        jax.random.key(config.seed), ["pretrain", "finetune", "lns"].index(stage)
    )


def _evaluate(run: _Run, state: TrainState, eval_fn, split: str) -> dict[str, float]:
    totals = None
    for batch in run.batches(split, train=False):
        out = eval_fn(state, batch)
        totals = out if totals is None else jax.tree.map(jnp.add, totals, out)
    totals = jax.tree.map(float, jax.device_get(totals))
    count = max(totals["count"], 1.0)
    return {"accuracy": totals["correct"] / count, "loss": totals["loss"] / count}


def _flip_stats(previous: dict, current: dict) -> dict[str, Any]:
    """Pooled and per-layer flip rate of the binary weights between two snapshots (D12)."""
    per_layer, flipped, total = {}, 0, 0
    for name, now in current.items():
        before = previous[name]
        changed = int(np.sum(now != before))
        per_layer[name] = changed / now.size
        flipped += changed
        total += now.size
    return {"flip_rate": flipped / max(total, 1), "flip_rate_per_layer": per_layer}


def _host_sums(sums: dict, carried: dict | None = None) -> dict:
    """Per-step metric sums on the host as floats, plus those ``carried`` over a resume."""
    host = jax.tree.map(float, jax.device_get(sums))
    return host if carried is None else jax.tree.map(lambda a, b: a + b, host, carried)


def _mean_metrics(sums: dict, count: int) -> dict[str, Any]:
    """Epoch means of the per-step train metrics (``sums`` from :func:`_host_sums`)."""
    out = {k: float(v) / count for k, v in sums.items() if k != "layers"}
    layers = sums.get("layers", {})
    if layers:
        out["label_agreement"] = {k: float(v["label_agreement"]) / count for k, v in layers.items()}
        out["aux_loss_per_layer"] = {k: float(v["aux_loss"]) / count for k, v in layers.items()}
    return out


class _Stage:
    """One stage: builds its model, optimizer and jitted steps; runs its epochs."""

    def __init__(self, run: _Run, name: str):
        self.run, self.name = run, name
        config = run.config
        self.opt = config[name]
        self.model = build_model(config, run.info.num_classes, name)
        self.steps_per_epoch = run.steps_per_epoch()
        self.total_steps = int(math.ceil(self.opt.epochs * self.steps_per_epoch))
        self.tx = make_optimizer(self.opt, self.steps_per_epoch)
        self.schedule = make_schedule(self.opt, self.steps_per_epoch)
        self.alpha = float(config.lns.alpha) if name == "lns" else 0.0
        self.checkpointer = StageCheckpointer(os.path.join(run.workdir, "checkpoints", name))
        replicated = sharding.replicated(run.mesh)
        init = functools.partial(fresh_state, self.model, self.tx)
        self.init_fn = jax.jit(init, out_shardings=replicated)
        self.abstract_state = jax.eval_shape(init, _stage_seed_key(config, name), run.dummy_input())
        self.abstract_state = sharding.with_shardings(self.abstract_state, replicated)
        split = functools.partial(  # LNS mapping nets split over the mesh (bnnns.sharding)
            sharding.with_split_mapping, mesh=run.mesh, enabled=config.get("split_mapping", True)
        )
        self.train_fn = jax.jit(
            split(functools.partial(train_step, model=self.model, tx=self.tx, alpha=self.alpha)),
            donate_argnums=(0,),
            out_shardings=replicated,
        )
        self.eval_fn = jax.jit(split(functools.partial(eval_step, model=self.model)))
        self.weights_fn = jax.jit(split(functools.partial(binary_weights, model=self.model)))

    # -- starting points -------------------------------------------------------------------
    def initial_state(self, pretrained: TrainState | None) -> tuple[TrainState, dict]:
        run = self.run
        state = self.init_fn(_stage_seed_key(run.config, self.name), run.dummy_input())
        extra: dict[str, Any] = {}
        if self.name == "pretrain":
            return state, extra
        state = transfer_pretrained(state, pretrained, self.model, self.tx, run.dummy_input())
        if self.name == "lns" and run.config.lns.warmup_steps > 0:
            t0 = time.time()
            state, extra["warm_start"] = warm_start_mapping(
                state,
                self.model,
                run.dummy_input(),
                max_steps=run.config.lns.warmup_steps,
                target=run.config.lns.warmup_target,
                learning_rate=run.config.lns.warmup_lr,
            )
            extra["warm_start"]["seconds"] = time.time() - t0
        return jax.device_put(state, sharding.replicated(run.mesh)), extra

    # -- the loop ----------------------------------------------------------------------------
    def run_stage(self, pretrained: TrainState | None) -> tuple[TrainState, dict]:
        run, config = self.run, self.run.config
        meta = self.checkpointer.restore_meta()
        if meta is not None:
            state, meta = self.checkpointer.restore(self.abstract_state)
            if int(state.step) >= self.total_steps:
                return state, meta
            run.writer.truncate_after(self.name, int(state.step))
        else:
            state, extra = self.initial_state(pretrained)
            meta = {"stage": self.name, "done": False, "seconds": 0.0, "history": [], **extra}
            if "warm_start" in extra and run.is_main:
                print(
                    f"[{self.name}] warm start: {extra['warm_start']['steps']} steps, "
                    f"min label agreement {extra['warm_start']['min_agreement']:.4f}"
                )
        start = int(state.step)
        carried_sums, carried_count = self._carried_sums(meta, start)
        reference = jax.device_get(self.weights_fn(state, run.dummy_input()))
        bar = tqdm(
            total=self.total_steps,
            initial=start,
            desc=self.name,
            unit="step",
            disable=not (run.is_main and config.progress_bar),
            dynamic_ncols=True,
            mininterval=2.0,
        )
        t_stage = time.time() - meta["seconds"]
        step = start
        while step < self.total_steps:
            epoch, offset = divmod(step, self.steps_per_epoch)
            sums, count = None, 0
            for batch in run.batches("train", train=True, epoch=epoch, start_step=offset):
                state, metrics = self.train_fn(state, batch)
                sums = metrics if sums is None else jax.tree.map(jnp.add, sums, metrics)
                count += 1
                step += 1
                bar.update(1)
                if step % config.log_every_steps == 0 or step == self.total_steps:
                    self._check_and_show(metrics, step, bar)
                if step >= self.total_steps:
                    break
                every = config.checkpoint_every_steps
                if every and step % every == 0 and step % self.steps_per_epoch:
                    meta["seconds"] = time.time() - t_stage
                    meta["partial_epoch"] = {  # so a resumed epoch still averages all its steps
                        "step": step,
                        "count": count + carried_count,
                        "sums": _host_sums(sums, carried_sums),
                    }
                    self.checkpointer.save(step, state, meta)  # mid-epoch: nothing lost on a crash
            if count == 0:
                raise ValueError(
                    f"[{self.name}] the train split yields no batch of "
                    f"{config.batch_size}: lower config.batch_size"
                )
            record = self._epoch_record(
                state, _host_sums(sums, carried_sums), count + carried_count, epoch, step, reference
            )
            reference = jax.device_get(self.weights_fn(state, run.dummy_input()))
            meta.pop("partial_epoch", None)
            carried_sums, carried_count = None, 0  # only the epoch resumed in carries sums
            meta["history"].append(record)
            meta["seconds"] = record["seconds"] = time.time() - t_stage
            meta["done"] = step >= self.total_steps
            run.writer.write(record, tb_step=step)
            self.checkpointer.save(step, state, meta)
            for callback in run.callbacks:
                callback(record)
        bar.close()
        self.checkpointer.wait()
        return state, meta

    def _carried_sums(self, meta: dict, start: int) -> tuple[dict | None, int]:
        """The train-metric sums and count of the current epoch's steps done before a resume."""
        if start % self.steps_per_epoch == 0:
            return None, 0
        partial = meta.get("partial_epoch")
        if partial is None or partial["step"] != start:
            absl_logging.warning(
                "[%s] resumed at step %d without the partial sums of its epoch: that epoch's "
                "train metrics average only the steps after the resume",
                self.name,
                start,
            )
            return None, 0
        return partial["sums"], int(partial["count"])

    def _epoch_record(self, state, sums, count, epoch, step, reference) -> dict[str, Any]:
        run = self.run
        train = _mean_metrics(sums, count)
        record: dict[str, Any] = {
            "stage": self.name,
            "epoch": epoch + 1,
            "step": step,
            "learning_rate": float(self.schedule(step - 1)),
            **{
                f"train_{k}": v
                for k, v in train.items()
                if k not in ("label_agreement", "aux_loss_per_layer")
            },
        }
        if "label_agreement" in train:
            record["label_agreement"] = train["label_agreement"]
            record["aux_loss_per_layer"] = train["aux_loss_per_layer"]
        test = _evaluate(run, state, self.eval_fn, "test")
        record.update(test_accuracy=test["accuracy"], test_loss=test["loss"])
        if "validation" in run.splits:
            val = _evaluate(run, state, self.eval_fn, "validation")
            record.update(val_accuracy=val["accuracy"], val_loss=val["loss"])
        current = jax.device_get(self.weights_fn(state, run.dummy_input()))
        record.update(_flip_stats(reference, current))
        if run.is_main:
            extra = f" val {record['val_accuracy']:.4f}" if "val_accuracy" in record else ""
            tqdm.write(
                f"[{self.name}] epoch {epoch + 1}: loss {record['train_loss']:.4f} "
                f"train acc {record['train_accuracy']:.4f} test acc {record['test_accuracy']:.4f}"
                f"{extra} flip {record['flip_rate']:.5f}"
            )
        return record

    def _check_and_show(self, metrics: dict, step: int, bar: tqdm) -> None:
        loss = float(metrics["loss"])
        if not math.isfinite(loss):
            raise FloatingPointError(f"[{self.name}] non-finite loss {loss} at step {step}")
        bar.set_postfix(loss=f"{loss:.4f}", acc=f"{float(metrics['accuracy']):.3f}")


def _stage_summary(name: str, state: TrainState, meta: dict) -> dict[str, Any]:
    history = meta.get("history", [])
    tests = [r["test_accuracy"] for r in history]
    summary = {
        "stage": name,
        "test_accuracy": tests[-1] if tests else None,
        "best_test_accuracy": max(tests) if tests else None,
        "steps": int(state.step),
        "seconds": meta.get("seconds"),
        "epochs": len(history),
    }
    vals = [r["val_accuracy"] for r in history if "val_accuracy" in r]
    if vals:
        best = int(np.argmax(vals))
        summary.update(
            val_accuracy=vals[-1],
            best_val_accuracy=vals[best],
            test_accuracy_at_best_val=tests[best],
        )
    flips = [r["flip_rate"] for r in history]
    if flips:
        summary["flip_rate_per_epoch"] = flips
    if "warm_start" in meta:
        summary["warm_start"] = meta["warm_start"]
    if history and "label_agreement" in history[-1]:
        summary["label_agreement"] = history[-1]["label_agreement"]
    return summary


def _load_pretrained(run: _Run, source_workdir: str) -> TrainState:
    """The final pretrain state of another run (``config.init_from``)."""
    stage = _Stage(dataclasses.replace(run, workdir=source_workdir), "pretrain")
    state, meta = stage.checkpointer.restore(stage.abstract_state)
    stage.checkpointer.close()
    if not meta.get("done"):
        print(
            f"warning: the pretrain stage in {source_workdir} did not finish "
            f"(step {int(state.step)}); fine-tuning from it anyway"
        )
    return state


def restore_stage(config: ConfigDict, workdir: str, stage: str) -> tuple[TrainState, dict]:
    """The newest checkpoint of ``stage`` in ``workdir`` (state as host arrays, metadata)."""
    splits, info = load_data(config)
    run = _Run(
        config,
        workdir,
        splits,
        info,
        sharding.make_mesh(config.get("mesh_shape")),
        MetricWriter(workdir, enabled=False),
        (),
    )
    st = _Stage(run, stage)
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
        a workdir with checkpoints is resumed (see the module docstring).
      callbacks: called with every epoch record, after its checkpoint is saved.

    Returns:
      The summary: ``{"stages": [...], "test_accuracy": final, "config": {...}}``.
    """
    absl_logging.set_verbosity(absl_logging.WARNING)  # orbax logs every save at INFO
    stages = validate_config(config, jax.process_count())
    splits, info = load_data(config)
    workdir = os.path.abspath(workdir)
    os.makedirs(workdir, exist_ok=True)
    mesh = sharding.make_mesh(config.get("mesh_shape"))
    sharding.check_batch_size(mesh, config.batch_size, "batch_size")
    run = _Run(
        config,
        workdir,
        splits,
        info,
        mesh,
        MetricWriter(workdir, enabled=jax.process_index() == 0),
        callbacks,
    )
    if run.is_main:
        with open(os.path.join(workdir, "config.json"), "w") as f:
            json.dump(config.to_dict(), f, indent=2, default=str)
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
            stage = _Stage(run, name)
            state, meta = stage.run_stage(pretrained)
            stage.checkpointer.close()
            if name == "pretrain":
                pretrained = state
            summaries.append(_stage_summary(name, state, meta))
    finally:
        run.writer.close()
    summary = {
        "stages": summaries,
        "test_accuracy": summaries[-1]["test_accuracy"],
        "config": config.to_dict(),
    }
    if run.is_main:
        with open(os.path.join(workdir, "summary.json"), "w") as f:
            json.dump(summary, f, indent=2, default=str)
        for s in summaries:
            print(
                f"[{s['stage']}] final test accuracy {s['test_accuracy']:.4f} "
                f"(best {s['best_test_accuracy']:.4f}), {s['steps']} steps, {s['seconds']:.0f} s"
            )
    return summary
