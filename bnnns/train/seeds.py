"""Many seeds in one program: ``config.num_seeds = S`` trains S independent replicas side by side.

Replica ``s`` is the run of ``config.seed + s``: its own init, mapping-network init and warm
start, data order and augmentation, BatchNorm statistics and optimizer state. One jitted train
step, ``jax.vmap`` of :func:`bnnns.train.steps.train_step` over a leading seed axis, trains all
S per call (the batches of the S data orders stacked, ``(S, B, ...)``, the batch axis sharded
over ``"data"``; the stacked state replicated), so a small model fills an accelerator S times
better than S separate runs.

Everything else is per seed and is the single run's own code: ``<workdir>/seed_<s>/`` is the
workdir the single run of seed ``config.seed + s`` writes (its ``config.json`` says that seed and
``num_seeds = 1``; checkpoints, ``metrics.jsonl``, TensorBoard, ``summary.json``), so export
(``--seed s``), ``init_from`` and :func:`~bnnns.train.train_lib.restore_stage` use it as such.
Evaluation, flip rates, records and checkpoints run per seed with the single run's programs.
``<workdir>/summary.json`` lists the per-seed summaries and the mean test accuracy.

Seed ``s`` equals the single run up to float32 round-off: the vmapped step batches S
convolutions into one, which may sum in another order (``tests/test_seeds.py``).
"""

from __future__ import annotations

import functools
import os
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec
from ml_collections import ConfigDict

from bnnns import data as data_lib
from bnnns.errors import CheckpointError, ConfigError
from bnnns.train import resume, sharding
from bnnns.train.epoch_record import epoch_record, stage_summary
from bnnns.train.metric_writer import MetricWriter
from bnnns.train.stage import Run, Stage, _first_non_finite
from bnnns.train.steps import TrainState, train_step
from bnnns.train.workdir import check_rerun_config, write_json_atomic

__all__ = ["SeedStages", "seed_config", "seed_workdir", "stack", "train_seeds", "unstack"]


def seed_config(config: ConfigDict, s: int) -> ConfigDict:
    """The single-run config of replica ``s``: ``seed = config.seed + s``, ``num_seeds = 1``."""
    out = ConfigDict(config.to_dict())
    out.seed = int(config.seed) + s
    out.num_seeds = 1
    return out


def seed_workdir(workdir: str, s: int) -> str:
    return os.path.join(workdir, f"seed_{s}")


def stack(trees: list) -> Any:
    """The trees of the S replicas as one tree with a leading seed axis."""
    return jax.tree.map(lambda *xs: jnp.stack(xs), *trees)


def unstack(tree: Any, s: int) -> Any:
    """Replica ``s`` of a stacked tree."""
    return jax.tree.map(lambda x: x[s], tree)


def multi_seed_step(
    state: TrainState, batch: dict, *, model, tx, alpha: float, total_steps: int = 0
):
    """:func:`~bnnns.train.steps.train_step` of every replica at once (leading seed axis of
    ``state``, ``batch`` and the metrics)."""
    step = functools.partial(train_step, model=model, tx=tx, alpha=alpha, total_steps=total_steps)
    return jax.vmap(step)(state, batch)


class SeedStages:
    """One stage of S replicas: S ordinary :class:`~bnnns.train.stage.Stage` objects (their
    checkpoints, records, evaluation) and one vmapped, jitted train step for all."""

    def __init__(self, runs: list[Run], name: str):
        self.runs, self.name = runs, name
        self.stages = [Stage(run, name) for run in runs]
        first = self.stages[0]
        for st in self.stages[1:]:  # the same model: share the compiled programs
            st.init_fn, st.eval_fn, st.weights_fn = first.init_fn, first.eval_fn, first.weights_fn
        mesh = runs[0].mesh
        self.batch_sharding = NamedSharding(mesh, PartitionSpec(None, sharding.DATA_AXIS))
        self.replicated = sharding.replicated(mesh)
        split = functools.partial(
            sharding.with_split_mapping,
            mesh=mesh,
            enabled=runs[0].config.get("split_mapping", True),
        )
        step = functools.partial(
            multi_seed_step,
            model=first.model,
            tx=first.tx,
            alpha=first.alpha,
            total_steps=first.total_steps,
        )
        self.train_fn = jax.jit(split(step), donate_argnums=(0,), out_shardings=self.replicated)

    def batches(self, epoch: int, start_step: int):
        """The S replicas' train batches of ``epoch``, stacked on a leading seed axis."""
        iterators = [
            data_lib.batch_iterator(
                run.splits["train"],
                run.info,
                global_batch_size=run.config.batch_size,
                seed=run.config.seed,
                epoch=epoch,
                train=True,
                process_index=jax.process_index(),
                process_count=jax.process_count(),
                start_step=start_step,
                num_threads=run.config.data_threads,
                loader=run.config.get("data_loader", "threads"),
            )
            for run in self.runs
        ]
        for local in zip(*iterators, strict=True):
            yield {
                k: jax.make_array_from_process_local_data(
                    self.batch_sharding, np.stack([b[k] for b in local])
                )
                for k in local[0]
            }

    def run_stage(self, pretrained: list | None) -> tuple[list, list]:
        """Train the stage of every replica; the per-seed final states and metadata."""
        first, stop = self.stages[0], self.runs[0].stop
        pretrained = pretrained or [None] * len(self.stages)
        starts = [resume.start(st, p) for st, p in zip(self.stages, pretrained, strict=True)]
        states, metas = [list(x) for x in zip(*[(s, m) for s, m, _ in starts], strict=True)]
        steps = sorted({int(s.step) for s in states})
        if len(steps) > 1:
            raise CheckpointError(
                f"[{self.name}] the seeds' newest checkpoints are at different steps {steps} "
                "(a run killed between the seeds' saves): move the newer ones away to resume"
            )
        if all(done for _, _, done in starts):
            return states, metas
        step = steps[0]
        carries = [
            resume.EpochCarry.at_resume(st, state, meta, step)
            for st, state, meta in zip(self.stages, states, metas, strict=True)
        ]
        pending = [c.take_pending(lambda x: x) for c in carries]
        sums, count = None, pending[0][1]
        if pending[0][0] is not None:
            sums = jax.device_put(stack([p[0] for p in pending]), self.replicated)
        state = jax.device_put(stack(states), self.replicated)
        t_stage = time.time() - metas[0]["seconds"]
        first_bad = jnp.asarray(-1, jnp.int32)
        config, spe, total = first.run.config, first.steps_per_epoch, first.total_steps
        stopping = False
        while step < total:
            epoch, offset = divmod(step, spe)
            for batch in self.batches(epoch, offset):
                state, metrics = self.train_fn(state, batch)
                finite = jnp.all(metrics.pop("finite"))
                first_bad = _first_non_finite(first_bad, finite, state.step[0])
                sums = metrics if sums is None else jax.tree.map(jnp.add, sums, metrics)
                count += 1
                step += 1
                log_step = step % config.log_every_steps == 0 or step == total
                if log_step:
                    first._check_finite(first_bad)
                stopping = stop.should_stop()
                if step >= total:
                    break
                if step % spe == 0:
                    continue
                every = config.checkpoint_every_steps
                scheduled = bool(every) and step % every == 0
                if scheduled or stopping or stop.should_save(log_step):
                    first._check_finite(first_bad)
                    for s, (st, carry, meta) in enumerate(
                        zip(self.stages, carries, metas, strict=True)
                    ):
                        if scheduled:
                            carry.absorb(unstack(sums, s), count)
                        kept = None if scheduled else unstack(sums, s)
                        meta["partial_epoch"] = carry.partial_epoch(step, kept, count)
                        meta["seconds"] = time.time() - t_stage
                        st.checkpointer.save(step, unstack(state, s), meta)
                    if scheduled:
                        sums, count = None, 0
                    stop.saved()
                if stopping:
                    break
            if stopping and step < total and step % spe:
                self._leave(step)
            if count + carries[0].count == 0:
                raise ConfigError(
                    f"[{self.name}] the train split yields no batch of "
                    f"{config.batch_size}: lower config.batch_size"
                )
            first._check_finite(first_bad)
            for s, st in enumerate(self.stages):
                state_s = unstack(state, s)
                sums_s, count_s = carries[s].totals(
                    None if sums is None else unstack(sums, s), count
                )
                record = epoch_record(
                    st, state_s, sums_s, count_s, epoch, step, carries[s].reference
                )
                carries[s] = resume.EpochCarry(st.weight_signs(state_s))
                meta = metas[s]
                meta.pop("partial_epoch", None)
                meta["history"].append(record)
                meta["done"] = step >= total
                meta["seconds"] = record["seconds"] = time.time() - t_stage
                st.run.writer.write(record, tb_step=step)
                st.checkpointer.save(step, state_s, meta)
                for callback in st.run.callbacks:
                    callback({**record, "seed": s})
            sums, count = None, 0
            stop.saved()
            if stopping:
                self._leave(step)
        for st in self.stages:
            st.checkpointer.wait()
        return [unstack(state, s) for s in range(len(self.stages))], metas

    def _leave(self, step: int) -> None:
        for st in self.stages[1:]:
            st.checkpointer.wait()
        self.stages[0]._leave(step)


def train_seeds(
    config, workdir, stages, splits, info, mesh, callbacks, stop, load_data, load_pretrained
) -> dict[str, Any]:
    """:func:`~bnnns.train.train_lib.train_and_evaluate` for ``config.num_seeds > 1``
    (``load_data``: reloads the splits of a seed when its validation split is seed-dependent;
    ``load_pretrained(run, init_from)``: the pretrained state every replica starts from when
    ``config.stages`` has no pretrain stage, as each single run does)."""
    num = int(config.num_seeds)
    main = jax.process_index() == 0
    for s in range(num):  # each seed's workdir is a single run's: the same rerun rules
        check_rerun_config(seed_config(config, s), seed_workdir(workdir, s), stages)
    runs = []
    for s in range(num):
        cfg, wd = seed_config(config, s), seed_workdir(workdir, s)
        os.makedirs(wd, exist_ok=True)
        own = load_data(cfg)[0] if s and config.validation_fraction else splits
        runs.append(Run(cfg, wd, own, info, mesh, MetricWriter(wd, enabled=main), callbacks, stop))
        if main:
            write_json_atomic(os.path.join(wd, "config.json"), cfg.to_dict())
    if main:
        write_json_atomic(os.path.join(workdir, "config.json"), config.to_dict())
        print(
            f"bnnns: {config.dataset} ({info.num_train} train / {info.num_test} test), "
            f"model {config.model.name}, stages {stages}, seeds {config.seed}..."
            f"{config.seed + num - 1} in one program, {jax.device_count()} device(s), "
            f"{jax.process_count()} process(es), workdir {workdir}"
        )
    pretrained, per_seed = None, [[] for _ in range(num)]
    try:
        for name in stages:
            if name != "pretrain" and pretrained is None:  # each replica loads it, as alone
                pretrained = [load_pretrained(run, config.init_from) for run in runs]
            group = SeedStages(runs, name)
            for st in group.stages:
                st.checkpointer.remove_unfinished()  # of a run that stopped mid-save
            try:
                states, metas = group.run_stage(pretrained)
            except BaseException:
                for st in group.stages:  # as train_lib._train: saves finish before the unlock
                    st.checkpointer.close_after_error()
                raise
            for st in group.stages:
                st.checkpointer.close()
            if name == "pretrain":
                pretrained = states
            for s in range(num):
                per_seed[s].append(stage_summary(name, states[s], metas[s]))
    finally:
        for run in runs:
            run.writer.close()
    summaries = []
    for s, run in enumerate(runs):
        summary = {
            "stages": per_seed[s],
            "test_accuracy": per_seed[s][-1]["test_accuracy"],
            "config": run.config.to_dict(),
        }
        summaries.append(summary)
        if main:
            write_json_atomic(os.path.join(run.workdir, "summary.json"), summary)
    accuracies = [s["test_accuracy"] for s in summaries]
    out = {
        "seeds": [int(config.seed) + s for s in range(num)],
        "per_seed": summaries,
        "test_accuracy": float(np.mean(accuracies)),
        "test_accuracy_per_seed": accuracies,
        "config": config.to_dict(),
    }
    if main:
        write_json_atomic(os.path.join(workdir, "summary.json"), out)
        print(
            f"final test accuracy per seed {[round(a, 4) for a in accuracies]}, "
            f"mean {out['test_accuracy']:.4f}"
        )
    return out
