"""Validation of a training config before anything runs: every error names the field, the
value and what is allowed."""

from __future__ import annotations

import math
import os

from ml_collections import ConfigDict

from bnnns.layers import ACTIVATION_ESTIMATORS, LABEL_SOURCES, REDUCTIONS, WEIGHT_STES
from bnnns.mapping import MAPPING_DTYPES
from bnnns.models import MODELS
from bnnns.optim import OPTIMIZERS, SCHEDULES
from bnnns.scaling import SCALE_MODES

__all__ = ["STAGES", "ConfigError", "parse_stages", "validate_config"]

STAGES = ("pretrain", "finetune", "lns")


class ConfigError(ValueError):
    """A config value that is not allowed."""


def _fail(field: str, value, allowed: str) -> None:
    raise ConfigError(f"config.{field}={value!r} is not allowed: {allowed}")


def _one_of(config: ConfigDict, field: str, allowed) -> None:
    value = _get(config, field)
    if value not in allowed:
        _fail(field, value, f"must be one of {tuple(allowed)}")


def _get(config: ConfigDict, field: str):
    node = config
    for part in field.split("."):
        node = node[part]
    return node


def _number(
    config: ConfigDict,
    field: str,
    *,
    low: float,
    high: float = math.inf,
    low_open: bool = False,
    integer: bool = False,
) -> None:
    value = _get(config, field)
    ok = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
    if ok and integer:
        ok = float(value).is_integer()
    if ok:
        ok = (value > low if low_open else value >= low) and value <= high
    if not ok:
        kind = "an integer" if integer else "a finite number"
        bound = f"> {low}" if low_open else f">= {low}"
        _fail(
            field, value, f"must be {kind} {bound}" + (f" and <= {high}" if high < math.inf else "")
        )


def parse_stages(stages: str) -> list[str]:
    """``"pretrain,lns"`` -> ``["pretrain", "lns"]`` (order kept, checked against STAGES)."""
    names = [s.strip() for s in str(stages).split(",") if s.strip()]
    if not names or any(s not in STAGES for s in names) or len(set(names)) != len(names):
        _fail("stages", stages, f"a comma-separated list of distinct stages from {STAGES}")
    if "pretrain" in names and names[0] != "pretrain":
        _fail("stages", stages, "pretrain, when present, must come first")
    return names


def _check_dataset(spec: str) -> None:
    if not isinstance(spec, str) or not spec:
        _fail("dataset", spec, "'mnist', 'tfds:<name>' or 'npz:<path>'")
    if spec == "mnist" or (spec.startswith("tfds:") and len(spec) > 5):
        return
    if spec.startswith("npz:"):
        path = spec[4:]
        if not os.path.isfile(path):
            _fail("dataset", spec, f"npz file {path!r} does not exist")
        return
    _fail("dataset", spec, "'mnist', 'tfds:<name>' (e.g. tfds:cifar10) or 'npz:<path>'")


def _check_optimization(config: ConfigDict, stage: str) -> None:
    _one_of(config, f"{stage}.optimizer", OPTIMIZERS)
    _one_of(config, f"{stage}.schedule", SCHEDULES)
    _number(config, f"{stage}.epochs", low=0, low_open=True)
    _number(config, f"{stage}.learning_rate", low=0, low_open=True)
    _number(config, f"{stage}.momentum", low=0, high=1)
    _number(config, f"{stage}.weight_decay", low=0)


def validate_config(config: ConfigDict, process_count: int = 1) -> list[str]:
    """Check ``config`` and return its stages; raise :class:`ConfigError` on the first problem."""
    stages = parse_stages(config.stages)
    _check_dataset(config.dataset)
    _one_of(config, "model.name", sorted(MODELS))
    _number(config, "batch_size", low=1, integer=True)
    _number(config, "eval_batch_size", low=1, integer=True)
    if config.batch_size % process_count:
        _fail(
            "batch_size", config.batch_size, f"must be divisible by the {process_count} processes"
        )
    _number(config, "validation_fraction", low=0, high=0.5)
    _one_of(config, "binary.weight_scale", SCALE_MODES)
    _one_of(config, "binary.weight_ste", WEIGHT_STES)
    _one_of(config, "binary.activation", ACTIVATION_ESTIMATORS)
    _number(config, "binary.weight_clip", low=0, low_open=True)
    _number(config, "binary.act_clip", low=0, low_open=True)
    for stage in stages:
        _check_optimization(config, stage)
    if "lns" in stages:
        _number(config, "lns.alpha", low=0)
        _number(config, "lns.rho_pos", low=0, high=1)
        _number(config, "lns.rho_neg", low=0, high=1)
        if not config.lns.rho_pos + config.lns.rho_neg < 1:
            _fail(
                "lns.rho_pos",
                config.lns.rho_pos,
                f"rho_pos + rho_neg must be < 1 (Eqs. 8-9); rho_neg={config.lns.rho_neg!r}",
            )
        _one_of(config, "lns.labels", LABEL_SOURCES)
        _one_of(config, "lns.reduction", REDUCTIONS)
        _one_of(config, "lns.weight_ste", WEIGHT_STES)
        _one_of(config, "lns.mapping_dtype", MAPPING_DTYPES)
        _number(config, "lns.warmup_steps", low=0, integer=True)
        _number(config, "lns.warmup_target", low=0, high=1)
    if stages[0] != "pretrain":
        init_from = config.init_from
        if not init_from:
            _fail(
                "init_from",
                init_from,
                f"stage {stages[0]!r} fine-tunes a pretrained BNN: set config.init_from to the "
                "workdir of a run with a 'pretrain' stage",
            )
        if not os.path.isdir(os.path.join(init_from, "checkpoints", "pretrain")):
            _fail(
                "init_from",
                init_from,
                "no pretrain checkpoint found there (expected <init_from>/checkpoints/pretrain)",
            )
    return stages
