"""One training stage: its model, optimizer and jitted steps, and the loop over its epochs.

The loop (:meth:`Stage.run_stage`) starts where :func:`bnnns.train.resume.start` says, writes
one record per epoch (:mod:`bnnns.train.epoch_record`) and saves a checkpoint at the end of
every epoch and every ``config.checkpoint_every_steps`` inside one (with the
:class:`~bnnns.train.resume.EpochCarry` of the epoch so far), plus, inside an epoch, one on a
stop request or after ``config.checkpoint_every_minutes`` (:mod:`bnnns.train.preemption`; on a
stop it then raises :class:`~bnnns.train.preemption.Preempted`). Every step checks on device that
its loss and state are finite; the host looks at that flag before each save and log, so a
non-finite state is never saved (docs/reliability.md).
"""

from __future__ import annotations

import dataclasses
import functools
import math
import os
import time
from collections.abc import Callable, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
from ml_collections import ConfigDict
from tqdm import tqdm

from bnnns import data as data_lib
from bnnns.errors import ConfigError, NonFiniteError
from bnnns.nn.models import BinaryOptions, create_model
from bnnns.train import resume, sharding
from bnnns.train.bop import binary_kernel_pattern
from bnnns.train.checkpointing import StageCheckpointer
from bnnns.train.epoch_record import epoch_record, latent_signs
from bnnns.train.metric_writer import MetricWriter
from bnnns.train.optim import make_optimizer, make_schedule, mapping_lr_scales, parse_lr_scale
from bnnns.train.preemption import Preempted, StopRequests
from bnnns.train.stage_init import fresh_state, transfer_pretrained, warm_start_mapping
from bnnns.train.steps import TrainState, binary_weights, eval_step, train_step

__all__ = ["Callback", "Run", "Stage", "build_model", "lns_lr_scales", "stage_seed_key"]

Callback = Callable[[dict], None]


def build_model(config: ConfigDict, num_classes: int, stage: str):
    """The model of ``config.model`` with the binarization of ``stage`` (sign or LNS)."""
    lns = stage == "lns"
    binary = BinaryOptions(
        weight_binarizer="lns" if lns else config.binary.get("weight_binarizer", "sign"),
        weight_scale=config.binary.weight_scale,
        weight_ste=config.lns.weight_ste if lns else config.binary.weight_ste,
        weight_clip=config.binary.weight_clip,
        activation=config.binary.activation,
        act_clip=config.binary.act_clip,
        swish_beta=float(config.binary.get("swish_beta", 5.0)),
        rho_pos=config.lns.rho_pos,
        rho_neg=config.lns.rho_neg,
        aux_reduction=config.lns.reduction,
        labels=config.lns.labels,
        residual_mapping=config.lns.residual,
        cls_grad_to_w=config.lns.get("cls_grad_to_w", "mapping"),
        mapping_dtype=config.lns.mapping_dtype,
    )
    kwargs = {k: v for k, v in config.model.to_dict().items() if k not in ("name", "dtype")}
    dtype = jnp.dtype(config.model.get("dtype", "float32"))
    return create_model(
        config.model.name, num_classes=num_classes, binary=binary, dtype=dtype, **kwargs
    )


def lns_lr_scales(config: ConfigDict, model: nn.Module, dummy_input: jax.Array) -> dict | None:
    """Per-parameter lr multipliers of ``model``'s LNS stage from ``lns.mapping_lr_scale`` (D15;
    :func:`bnnns.train.optim.mapping_lr_scales`), or None when the scale is 1 (Algorithm 1
    line 13)."""
    scale = parse_lr_scale(config.lns.get("mapping_lr_scale", "1"))
    if scale == 1.0:
        return None
    variables = jax.eval_shape(
        functools.partial(model.init, train=False), jax.random.key(0), dummy_input
    )
    return mapping_lr_scales(variables["params"], scale)


@dataclasses.dataclass
class Run:
    """What every stage of one run shares."""

    config: ConfigDict
    workdir: str
    splits: dict[str, data_lib.Split]
    info: data_lib.DatasetInfo
    mesh: jax.sharding.Mesh
    writer: MetricWriter
    callbacks: Sequence[Callback]
    stop: StopRequests = dataclasses.field(default_factory=StopRequests)

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
            loader=self.config.get("data_loader", "threads"),
        )
        for batch in it:
            yield sharding.global_batch(self.mesh, batch)

    def steps_per_epoch(self) -> int:
        return data_lib.steps_per_epoch(len(self.splits["train"]), self.config.batch_size, True)


def stage_seed_key(config: ConfigDict, stage: str) -> jax.Array:
    return jax.random.fold_in(
        jax.random.key(config.seed), ["pretrain", "finetune", "lns"].index(stage)
    )


@jax.jit
def _first_non_finite(first: jax.Array, finite: jax.Array, step: jax.Array) -> jax.Array:
    """The first step whose ``finite`` flag was false (-1: none yet); stays on device."""
    return jnp.where((first < 0) & ~finite, step, first)


class Stage:
    """One stage: builds its model, optimizer and jitted steps; runs its epochs."""

    def __init__(self, run: Run, name: str):
        self.run, self.name = run, name
        config = run.config
        self.opt = config[name]
        self.model = build_model(config, run.info.num_classes, name)
        self.steps_per_epoch = run.steps_per_epoch()
        self.total_steps = int(math.ceil(self.opt.epochs * self.steps_per_epoch))
        self.tx = make_optimizer(
            self.opt, self.steps_per_epoch, self._lr_scales(), self._bop_pattern()
        )
        self.schedule = make_schedule(self.opt, self.steps_per_epoch)
        self.alpha = float(config.lns.alpha) if name == "lns" else 0.0
        self.checkpointer = StageCheckpointer(os.path.join(run.workdir, "checkpoints", name))
        replicated = sharding.replicated(run.mesh)
        init = functools.partial(fresh_state, self.model, self.tx)
        self.init_fn = jax.jit(init, out_shardings=replicated)
        self.abstract_state = jax.eval_shape(init, stage_seed_key(config, name), run.dummy_input())
        self.abstract_state = sharding.with_shardings(self.abstract_state, replicated)
        split = functools.partial(  # LNS mapping nets split over the mesh (bnnns.train.sharding)
            sharding.with_split_mapping, mesh=run.mesh, enabled=config.get("split_mapping", True)
        )
        self.train_fn = jax.jit(
            split(
                functools.partial(
                    train_step,
                    model=self.model,
                    tx=self.tx,
                    alpha=self.alpha,
                    total_steps=self.total_steps,  # EDE's progress i / N (none: unused)
                )
            ),
            donate_argnums=(0,),
            out_shardings=replicated,
        )
        self.eval_fn = jax.jit(split(functools.partial(eval_step, model=self.model)))
        self.weights_fn = jax.jit(split(functools.partial(binary_weights, model=self.model)))

    def _bop_pattern(self) -> str | None:
        """The binary kernels Bop trains (``optimizer="bop"``), or None for other optimizers."""
        if self.opt.optimizer != "bop":
            return None
        return binary_kernel_pattern(self.model, self.run.dummy_input(), train=False)

    def _lr_scales(self) -> dict | None:
        """Per-parameter lr multipliers of the LNS stage (``lns.mapping_lr_scale``), or None."""
        if self.name != "lns":
            return None
        return lns_lr_scales(self.run.config, self.model, self.run.dummy_input())

    def initial_state(self, pretrained: TrainState | None) -> tuple[TrainState, dict]:
        """A fresh start: init, then (finetune, lns) the pretrained weights, then (lns) the
        warm start of the mapping networks; the extra metadata says how the warm start went."""
        run = self.run
        state = self.init_fn(stage_seed_key(run.config, self.name), run.dummy_input())
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
                tolerance=run.config.lns.get("warmup_tolerance", 0.0),
                learning_rate=run.config.lns.warmup_lr,
            )
            extra["warm_start"]["seconds"] = time.time() - t0
        return jax.device_put(state, sharding.replicated(run.mesh)), extra

    def run_stage(self, pretrained: TrainState | None) -> tuple[TrainState, dict]:
        run, config = self.run, self.run.config
        state, meta, done = resume.start(self, pretrained)
        if done:
            return state, meta
        step = int(state.step)
        carry = resume.EpochCarry.at_resume(self, state, meta, step)
        first_bad = jnp.asarray(-1, jnp.int32)  # first non-finite step on device (-1: none)
        bar = tqdm(
            total=self.total_steps,
            initial=step,
            desc=self.name,
            unit="step",
            disable=not (run.is_main and config.progress_bar),
            dynamic_ncols=True,
            mininterval=2.0,
        )
        t_stage = time.time() - meta["seconds"]
        replicated = sharding.replicated(run.mesh)
        sums, count = carry.take_pending(lambda x: jax.device_put(x, replicated))
        stopping = False
        while step < self.total_steps:
            epoch, offset = divmod(step, self.steps_per_epoch)
            for batch in run.batches("train", train=True, epoch=epoch, start_step=offset):
                state, metrics = self.train_fn(state, batch)
                first_bad = _first_non_finite(first_bad, metrics.pop("finite"), state.step)
                sums = metrics if sums is None else jax.tree.map(jnp.add, sums, metrics)
                count += 1
                step += 1
                bar.update(1)
                log_step = step % config.log_every_steps == 0 or step == self.total_steps
                if log_step:
                    self._check_finite(first_bad)
                    self._show(metrics, bar)
                stopping = run.stop.should_stop()  # every step, on every process
                if step >= self.total_steps:
                    break
                if step % self.steps_per_epoch == 0:
                    continue  # the epoch's end: saved below
                every = config.checkpoint_every_steps
                scheduled = bool(every) and step % every == 0
                if scheduled or stopping or run.stop.should_save(log_step):
                    self._check_finite(first_bad)  # never save a non-finite state
                    if scheduled:  # the same host sums in every run, resumed or not
                        carry.absorb(sums, count)
                        sums, count = None, 0
                    meta["seconds"] = time.time() - t_stage
                    # An unscheduled save keeps its device sums as they are (``pending``).
                    meta["partial_epoch"] = carry.partial_epoch(step, sums, count)
                    self.checkpointer.save(step, state, meta)  # mid-epoch: nothing lost on a crash
                    run.stop.saved()
                if stopping:
                    break
            if stopping and step < self.total_steps and step % self.steps_per_epoch:
                bar.close()
                self._leave(step)  # saved mid-epoch just above
            if count + carry.count == 0:
                raise ConfigError(
                    f"[{self.name}] the train split yields no batch of "
                    f"{config.batch_size}: lower config.batch_size"
                )
            self._check_finite(first_bad)  # before this epoch's record or checkpoint
            sums, count = carry.totals(sums, count)
            record = epoch_record(self, state, sums, count, epoch, step, carry.reference)
            sums, count = None, 0
            carry = resume.EpochCarry(self.weight_signs(state))  # the next epoch's: no sums yet
            meta.pop("partial_epoch", None)
            meta["history"].append(record)
            meta["seconds"] = record["seconds"] = time.time() - t_stage
            meta["done"] = step >= self.total_steps
            run.writer.write(record, tb_step=step)
            self.checkpointer.save(step, state, meta)
            run.stop.saved()
            for callback in run.callbacks:
                callback(record)
            if stopping:
                bar.close()
                self._leave(step)
        bar.close()
        self.checkpointer.wait()
        return state, meta

    def _leave(self, step: int) -> None:
        """The checkpoint of ``step`` was issued on a stop request: finish it and stop."""
        self.checkpointer.wait()
        raise Preempted(
            self.name, step, self.checkpointer.directory, self.run.stop.signal_name or "signal"
        )

    def weight_signs(self, state: TrainState) -> dict[str, dict]:
        """Host snapshot of every binary layer's binary weights and ``sign(W)`` (D12)."""
        binary = jax.device_get(self.weights_fn(state, self.run.dummy_input()))
        return {"binary": binary, "latent": latent_signs(jax.device_get(state.params), binary)}

    def _check_finite(self, first_bad: jax.Array) -> None:
        """Stop the run (nothing of the bad step on is saved) if a step was non-finite."""
        first = int(first_bad)
        if first < 0:
            return
        self.checkpointer.wait()  # the last save, of a checked state, completes
        saved = self.checkpointer.latest_step()
        kept = f"step {saved}" if saved is not None else "none yet"
        raise NonFiniteError(
            f"[{self.name}] step {first} gave a non-finite loss or state "
            f"(learning rate {float(self.schedule(first - 1)):.3g}, "
            f"config.{self.name}.learning_rate={self.opt.learning_rate}); the run stops before "
            f"saving anything from that step on (newest checkpoint: {kept}). A rerun repeats "
            "the same steps: lower the learning rate (or change the config and use a new workdir)"
        )

    def _show(self, metrics: dict, bar: tqdm) -> None:
        loss = float(metrics["loss"])
        bar.set_postfix(loss=f"{loss:.4f}", acc=f"{float(metrics['accuracy']):.3f}")
