"""The training loop as a library: ``train_and_evaluate(config, workdir)``.

Stages (method.md §3.2): ``pretrain`` (sign/STE BNN from scratch), ``finetune`` (plain
fine-tuning, the control of Table 1) and ``lns`` (warm start, D7, then joint fine-tuning of W,
theta and the rest on Eq. 21). ``finetune`` and ``lns`` start from the pretrain stage of this
run or, without one, from ``config.init_from`` (the workdir of a run that pretrained).

Resume policy, in order, for every stage of ``config.stages``:
  1. its newest intact checkpoint says the stage is done: load it and move on;
  2. it has an intact checkpoint: restore it and continue from that step (data order and
     augmentation are functions of ``(seed, epoch, step)``, so the run ends where an
     uninterrupted one ends; a mid-epoch checkpoint also carries the train-metric sums of
     its epoch so far and the binary weights at the epoch's start, so that epoch's record is
     the one an uninterrupted run writes);
  3. otherwise start it fresh.
A checkpoint that fails to read or verify is reported and skipped
(:mod:`bnnns.train.checkpointing`).
Every step checks on device that its loss and state are finite; the host looks at that flag
before each save and log, so a non-finite state is never saved (docs/reliability.md).

Parallelism: one ``("data",)`` mesh over every device of every process; the global batch is
sharded over it, the state replicated; jit inserts the collectives (see
:mod:`bnnns.train.sharding`).
"""

from __future__ import annotations

import base64
import dataclasses
import functools
import json
import math
import os
import time
import zlib
from collections.abc import Callable, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from absl import logging as absl_logging
from ml_collections import ConfigDict
from tqdm import tqdm

from bnnns import data as data_lib
from bnnns.errors import ConfigError, DataError, NonFiniteError, WorkdirError
from bnnns.nn.models import BinaryOptions, create_model
from bnnns.train import sharding
from bnnns.train.checkpointing import StageCheckpointer
from bnnns.train.config_checks import validate_config
from bnnns.train.metric_writer import MetricWriter
from bnnns.train.optim import make_optimizer, make_schedule, mapping_lr_scales, parse_lr_scale
from bnnns.train.stage_init import fresh_state, transfer_pretrained, warm_start_mapping
from bnnns.train.steps import TrainState, binary_weights, eval_step, train_step
from bnnns.train.workdir import WorkdirLock, check_rerun_config, write_json_atomic

__all__ = [
    "train_and_evaluate",
    "restore_stage",
    "build_model",
    "lns_lr_scales",
    "load_data",
    "Callback",
]

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
        cls_grad_to_w=config.lns.get("cls_grad_to_w", "mapping"),
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
        raise DataError(f"config.dataset={config.dataset!r}: {e}") from e


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


def latent_signs(params: Any, layers: dict) -> dict[str, np.ndarray]:
    """``{layer: sign(W)}`` (int8, D10) of the latent kernels of the binary ``layers``."""
    out = {}
    for name in layers:
        node = params
        for part in name.split("/"):
            node = node[part]
        out[name] = np.where(np.asarray(node["kernel"]) >= 0, 1, -1).astype(np.int8)
    return out


def _flip_stats(previous: dict, current: dict) -> dict[str, Any]:
    """Flip rates of the binary weights between two snapshots of :meth:`_Stage._weight_signs`
    (D12): pooled and per layer; also ``latent_flip_rate`` (``sign(W)`` changed) and
    ``flip_rate_with_latent`` (binary weight and ``sign(W)`` both changed). For sign models the
    three are equal; for LNS, ``flip_rate - flip_rate_with_latent`` is the share of flips made by
    the mapping alone, with ``sign(W)`` unchanged."""
    per_layer, flipped, latent, both, total = {}, 0, 0, 0, 0
    for name, now in current["binary"].items():
        changed = now != previous["binary"][name]
        latent_changed = current["latent"][name] != previous["latent"][name]
        per_layer[name] = float(np.mean(changed))
        flipped += int(np.sum(changed))
        latent += int(np.sum(latent_changed))
        both += int(np.sum(changed & latent_changed))
        total += now.size
    total = max(total, 1)
    return {
        "flip_rate": flipped / total,
        "flip_rate_per_layer": per_layer,
        "latent_flip_rate": latent / total,
        "flip_rate_with_latent": both / total,
    }


def _host_sums(sums: dict | None, carried: dict | None = None) -> dict | None:
    """Per-step metric sums on the host as floats, plus those ``carried`` from the epoch's
    steps before the last mid-epoch checkpoint (of this run or of the one resumed)."""
    if sums is None:
        return carried
    host = jax.tree.map(float, jax.device_get(sums))
    return host if carried is None else jax.tree.map(lambda a, b: a + b, host, carried)


@jax.jit
def _first_non_finite(first: jax.Array, finite: jax.Array, step: jax.Array) -> jax.Array:
    """The first step whose ``finite`` flag was false (-1: none yet); stays on device."""
    return jnp.where((first < 0) & ~finite, step, first)


def _pack_weights(weights: dict) -> dict:
    """Binary weights (int8 arrays) as JSON: zlib-compressed, base64 bytes per layer."""
    return {
        name: {
            "shape": list(w.shape),
            "dtype": str(w.dtype),
            "data": base64.b64encode(zlib.compress(np.ascontiguousarray(w).tobytes())).decode(),
        }
        for name, w in weights.items()
    }


def _unpack_weights(packed: dict) -> dict:
    return {
        name: np.frombuffer(zlib.decompress(base64.b64decode(p["data"])), p["dtype"]).reshape(
            p["shape"]
        )
        for name, p in packed.items()
    }


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
        self.tx = make_optimizer(self.opt, self.steps_per_epoch, self._lr_scales())
        self.schedule = make_schedule(self.opt, self.steps_per_epoch)
        self.alpha = float(config.lns.alpha) if name == "lns" else 0.0
        self.checkpointer = StageCheckpointer(os.path.join(run.workdir, "checkpoints", name))
        replicated = sharding.replicated(run.mesh)
        init = functools.partial(fresh_state, self.model, self.tx)
        self.init_fn = jax.jit(init, out_shardings=replicated)
        self.abstract_state = jax.eval_shape(init, _stage_seed_key(config, name), run.dummy_input())
        self.abstract_state = sharding.with_shardings(self.abstract_state, replicated)
        split = functools.partial(  # LNS mapping nets split over the mesh (bnnns.train.sharding)
            sharding.with_split_mapping, mesh=run.mesh, enabled=config.get("split_mapping", True)
        )
        self.train_fn = jax.jit(
            split(functools.partial(train_step, model=self.model, tx=self.tx, alpha=self.alpha)),
            donate_argnums=(0,),
            out_shardings=replicated,
        )
        self.eval_fn = jax.jit(split(functools.partial(eval_step, model=self.model)))
        self.weights_fn = jax.jit(split(functools.partial(binary_weights, model=self.model)))

    def _lr_scales(self) -> dict | None:
        """Per-parameter lr multipliers of the LNS stage (``lns.mapping_lr_scale``), or None."""
        if self.name != "lns":
            return None
        return lns_lr_scales(self.run.config, self.model, self.run.dummy_input())

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
                tolerance=run.config.lns.get("warmup_tolerance", 0.0),
                learning_rate=run.config.lns.warmup_lr,
            )
            extra["warm_start"]["seconds"] = time.time() - t0
        return jax.device_put(state, sharding.replicated(run.mesh)), extra

    # -- the loop ----------------------------------------------------------------------------
    def run_stage(self, pretrained: TrainState | None) -> tuple[TrainState, dict]:
        run, config = self.run, self.run.config
        restored = self.checkpointer.restore_latest(self.abstract_state)
        if restored is not None:
            state, meta = restored
            if int(state.step) >= self.total_steps:
                return state, meta
            run.writer.truncate_after(self.name, int(state.step))
        else:
            run.writer.truncate_after(self.name, 0)  # records of a run killed before a save
            state, extra = self.initial_state(pretrained)
            meta = {"stage": self.name, "done": False, "seconds": 0.0, "history": [], **extra}
            if "warm_start" in extra and run.is_main:
                ws = extra["warm_start"]
                print(
                    f"[{self.name}] warm start: {ws['steps']} steps "
                    f"({'converged' if ws['converged'] else 'step cap'}), aux loss "
                    f"{ws['aux_loss']:.5f} (excess {ws['excess_loss']:.2e}), min label "
                    f"agreement {ws['min_agreement']:.4f}"
                )
        start = int(state.step)
        carried_sums, carried_count = self._carried_sums(meta, start)
        reference = self._epoch_reference(state, meta, start)
        first_bad = jnp.asarray(-1, jnp.int32)  # first non-finite step on device (-1: none)
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
                first_bad = _first_non_finite(first_bad, metrics.pop("finite"), state.step)
                sums = metrics if sums is None else jax.tree.map(jnp.add, sums, metrics)
                count += 1
                step += 1
                bar.update(1)
                if step % config.log_every_steps == 0 or step == self.total_steps:
                    self._check_finite(first_bad)
                    self._show(metrics, bar)
                if step >= self.total_steps:
                    break
                every = config.checkpoint_every_steps
                if every and step % every == 0 and step % self.steps_per_epoch:
                    self._check_finite(first_bad)  # never save a non-finite state
                    # The sums so far go to the host here in every run, resumed or not, so
                    # both add the same float32 partial sums: identical epoch means.
                    carried_sums = _host_sums(sums, carried_sums)
                    carried_count += count
                    sums, count = None, 0
                    meta["seconds"] = time.time() - t_stage
                    meta["partial_epoch"] = {  # so a resumed epoch's record is the same
                        "step": step,
                        "count": carried_count,
                        "sums": carried_sums,
                        "flip_reference": {k: _pack_weights(v) for k, v in reference.items()},
                    }
                    self.checkpointer.save(step, state, meta)  # mid-epoch: nothing lost on a crash
            if count + carried_count == 0:
                raise ConfigError(
                    f"[{self.name}] the train split yields no batch of "
                    f"{config.batch_size}: lower config.batch_size"
                )
            self._check_finite(first_bad)  # before this epoch's record or checkpoint
            record = self._epoch_record(
                state, _host_sums(sums, carried_sums), count + carried_count, epoch, step, reference
            )
            reference = self._weight_signs(state)
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

    def _epoch_reference(self, state: TrainState, meta: dict, start: int) -> dict:
        """The binary weights and ``sign(W)`` at the start of the current epoch (the flip
        rates' reference, :meth:`_weight_signs`): those of ``state`` at an epoch boundary, else
        those stored by the mid-epoch save."""
        partial = meta.get("partial_epoch") if start % self.steps_per_epoch else None
        if partial is not None and partial["step"] == start and "flip_reference" in partial:
            return {k: _unpack_weights(v) for k, v in partial["flip_reference"].items()}
        if start % self.steps_per_epoch:
            absl_logging.warning(
                "[%s] resumed at step %d without the binary weights of its epoch's start: "
                "that epoch's flip rate counts only the flips after the resume",
                self.name,
                start,
            )
        return self._weight_signs(state)

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

    def _weight_signs(self, state: TrainState) -> dict[str, dict]:
        """Host snapshot of every binary layer's binary weights and ``sign(W)`` (D12)."""
        binary = jax.device_get(self.weights_fn(state, self.run.dummy_input()))
        return {"binary": binary, "latent": latent_signs(jax.device_get(state.params), binary)}

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
        record.update(_flip_stats(reference, self._weight_signs(state)))
        if run.is_main:
            extra = f" val {record['val_accuracy']:.4f}" if "val_accuracy" in record else ""
            tqdm.write(
                f"[{self.name}] epoch {epoch + 1}: loss {record['train_loss']:.4f} "
                f"train acc {record['train_accuracy']:.4f} test acc {record['test_accuracy']:.4f}"
                f"{extra} flip {record['flip_rate']:.5f}"
            )
        return record

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
    stage = _Stage(source, "pretrain")
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
    _check_batch_fits(config, len(splits["train"]))
    mesh = sharding.make_mesh(config.get("mesh_shape"))
    try:
        sharding.check_batch_size(mesh, config.batch_size, "batch_size")
    except ValueError as e:
        raise ConfigError(str(e)) from e
    workdir = os.path.abspath(workdir)
    os.makedirs(workdir, exist_ok=True)
    lock = _lock_workdir(workdir)  # a second run on this workdir stops here
    try:
        check_rerun_config(config, workdir, stages)  # before anything is written
        return _train(config, workdir, stages, splits, info, mesh, callbacks)
    finally:
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


def _train(config, workdir, stages, splits, info, mesh, callbacks) -> dict[str, Any]:
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
        write_json_atomic(os.path.join(workdir, "config.json"), config.to_dict())
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
        write_json_atomic(os.path.join(workdir, "summary.json"), summary)
        for s in summaries:
            print(
                f"[{s['stage']}] final test accuracy {s['test_accuracy']:.4f} "
                f"(best {s['best_test_accuracy']:.4f}), {s['steps']} steps, {s['seconds']:.0f} s"
            )
    return summary
