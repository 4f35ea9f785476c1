"""Validation of a training config before anything runs: every error names the field, the
value and what is allowed.

Generic checks cover every field, including ones added later: no key unknown to
:func:`~bnnns.train.default_config.base_config` (or to the model's class, for ``model.*``; with a
"did you mean"), every value of its default's type, every number finite and ``>= 0``, every
``*dtype`` a floating-point dtype. Specific checks add each field's range.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import os
from collections.abc import Mapping

import jax.numpy as jnp
from ml_collections import ConfigDict

from bnnns.core.mapping import MAPPING_DTYPES
from bnnns.core.scaling import SCALE_MODES
from bnnns.errors import ConfigError
from bnnns.nn.layers import (
    ACTIVATION_ESTIMATORS,
    CLS_GRAD_PATHS,
    LABEL_SOURCES,
    REDUCTIONS,
    WEIGHT_STES,
)
from bnnns.nn.models import MODELS
from bnnns.train.optim import OPTIMIZERS, SCHEDULES, parse_lr_scale

__all__ = ["STAGES", "ConfigError", "parse_stages", "validate_config"]

STAGES = ("pretrain", "finetune", "lns")
# Model keyword arguments set by the trainer, not by config.model.
_MODEL_RESERVED = ("parent", "name", "num_classes", "binary", "dtype")
_SECTION = (Mapping, ConfigDict)  # a ConfigDict is not a Mapping


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


_DATASET_FORMS = "'mnist', 'tfds:<name>' (e.g. tfds:cifar10), 'npz:<path>' or 'folder:<dir>'"


def _check_dataset(spec: str) -> None:
    if not isinstance(spec, str) or not spec:
        _fail("dataset", spec, _DATASET_FORMS)
    if spec == "mnist" or (spec.startswith("tfds:") and len(spec) > 5):
        return
    if spec.startswith("npz:"):
        path = spec[4:]
        if not os.path.isfile(path):
            _fail("dataset", spec, f"npz file {path!r} does not exist")
        return
    if spec.startswith("folder:") and len(spec) > 7:
        path = spec[7:]
        if not os.path.isdir(path):
            what = "is not a folder" if os.path.exists(path) else "does not exist"
            _fail("dataset", spec, f"image folder {path!r} {what}")
        return
    _fail("dataset", spec, _DATASET_FORMS)


def _check_optimization(config: ConfigDict, stage: str) -> None:
    _one_of(config, f"{stage}.optimizer", OPTIMIZERS)
    if config[stage].optimizer == "bop":
        if stage == "lns":
            _fail(
                "lns.optimizer",
                "bop",
                "Bop flips stored binary weights; the LNS stage binarizes sign(f_theta(W)) "
                "(Eq. 4), so use 'sgd' or 'adam' there ('bop' is for pretrain and finetune)",
            )
        _number(config, f"{stage}.bop_tau", low=0, low_open=True)
        _number(config, f"{stage}.bop_gamma", low=0, high=1, low_open=True)
    _one_of(config, f"{stage}.schedule", SCHEDULES)
    _number(config, f"{stage}.epochs", low=0, low_open=True)
    _number(config, f"{stage}.learning_rate", low=0, low_open=True)
    _number(config, f"{stage}.momentum", low=0, high=1)
    _number(config, f"{stage}.weight_decay", low=0)
    _number(config, f"{stage}.decay_factor", low=0, low_open=True)
    _number(config, f"{stage}.warmup_epochs", low=0, high=float(config[stage].epochs))
    decay = config[stage].decay_epochs
    if not isinstance(decay, list | tuple) or not all(
        _is_number(e) and math.isfinite(e) and e >= 0 for e in decay
    ):
        _fail(f"{stage}.decay_epochs", decay, "must be a list of epoch numbers >= 0")


def _is_number(value) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _unknown(field: str, key: str, known) -> None:
    close = difflib.get_close_matches(key, list(known), n=1)
    hint = f"did you mean {close[0]!r}? " if close else ""
    raise ConfigError(
        f"config.{field} is not a config field: {hint}known fields here: {', '.join(sorted(known))}"
    )


def check_field(config: ConfigDict, key: str) -> None:
    """``key`` (``"lns.alpha"``) names a field of ``config``, as a ``--config.<key>`` flag of
    ``train.py`` must; else a :class:`ConfigError` with a "did you mean", as for a config
    file's unknown key."""
    node, path = config, []
    for part in key.split("."):
        if not isinstance(node, _SECTION):
            raise ConfigError(f"config.{'.'.join(path)} is a value, not a section: no {part!r}")
        if part not in node:
            _unknown(".".join([*path, part]), part, list(node.keys()))
        node = node[part]
        path.append(part)


def _same_kind(field: str, value, default) -> None:
    """``value`` must be of ``default``'s kind: bool, string, number, sequence or section."""
    kinds = (
        (bool, "a bool (True/False)"),
        (str, "a string"),
        (int | float, "a number"),
        (list | tuple, "a list"),
        (_SECTION, "a section (dict)"),
    )
    for kind, name in kinds:
        if isinstance(default, kind):
            ok = isinstance(value, kind) and not (kind is not bool and isinstance(value, bool))
            if not ok:
                _fail(field, value, f"must be {name}, like its default {default!r}")
            return


def _check_dtype(field: str, value) -> None:
    if value is None:
        return
    try:
        dtype = jnp.dtype(value)
    except (TypeError, ValueError):
        dtype = None
    if dtype is None or not jnp.issubdtype(dtype, jnp.floating):
        _fail(field, value, "must be a floating-point dtype such as 'float32' or 'bfloat16'")


_SIGNED = frozenset({"validation_seed"})  # -1 is a sentinel; its own check bounds it


def _check_generic(
    config: ConfigDict, defaults: ConfigDict, prefix: str = "", numbers: bool = False
) -> None:
    """Unknown keys and kinds (or, with ``numbers``, finiteness and sign) of every field below
    ``config`` (recursive); the sign pass runs last, after the fields' own range checks."""
    for key in config.keys():
        field = f"{prefix}{key}"
        value = config[key]
        if field.endswith("dtype"):
            _check_dtype(field, value)
            continue
        if field == "model":
            _check_model(value)
            continue
        if key not in defaults:
            _unknown(field, key, defaults.keys())
        default = defaults[key]
        _same_kind(field, value, default)
        if isinstance(default, _SECTION):
            _check_generic(value, default, f"{field}.", numbers)
        elif numbers and _is_number(value) and field not in _SIGNED and not value >= 0:
            _fail(field, value, "must be a finite number >= 0")
        elif numbers and _is_number(value) and not math.isfinite(value):
            _fail(field, value, "must be a finite number >= 0")


def _check_model(model: ConfigDict) -> None:
    """``model.name`` known, ``model.dtype`` a float dtype, the other keys fields of the model
    class, of their default's kind, positive where the default is a positive integer."""
    if "name" not in model:
        _fail("model", dict(model), "must set name, one of " + str(sorted(MODELS)))
    _one_of(ConfigDict({"model": dict(model)}), "model.name", sorted(MODELS))
    cls = MODELS[model["name"]]
    fields = {
        f.name: f.default
        for f in dataclasses.fields(cls)
        if f.name not in _MODEL_RESERVED and f.init
    }
    for key in model.keys():
        if key in ("name", "dtype"):
            if key == "dtype":
                _check_dtype("model.dtype", model[key])
            continue
        if key not in fields:
            _unknown(f"model.{key}", key, {*fields, "name", "dtype"})
        default, value = fields[key], model[key]
        if default is dataclasses.MISSING:
            continue
        _same_kind(f"model.{key}", value, default)
        if _is_number(default) and isinstance(default, int) and default >= 1:
            if not (isinstance(value, int) and value >= 1):
                _fail(f"model.{key}", value, "must be an integer >= 1")


def _check_running(config: ConfigDict) -> None:
    _number(config, "seed", low=0, integer=True)
    _number(config, "num_seeds", low=1, integer=True)
    _number(config, "train_subset", low=0, integer=True)
    _number(config, "eval_subset", low=0, integer=True)
    _number(config, "image_size", low=0, integer=True)
    _number(config, "data_threads", low=0, integer=True)
    _one_of(config, "data_loader", ("threads", "grain"))
    _number(config, "log_every_steps", low=1, integer=True)
    _number(config, "checkpoint_every_steps", low=0, integer=True)
    _number(config, "checkpoint_every_minutes", low=0)
    mesh = config.get("mesh_shape")
    if mesh is not None and not (
        isinstance(mesh, list | tuple)
        and mesh
        and all(
            isinstance(d, int) and not isinstance(d, bool) and (d >= 1 or d == -1) for d in mesh
        )
    ):
        _fail("mesh_shape", mesh, "must be a tuple of device counts >= 1 (one of them may be -1)")


def validate_config(config: ConfigDict, process_count: int = 1) -> list[str]:
    """Check ``config`` and return its stages; raise :class:`ConfigError` on the first problem."""
    from bnnns.train.default_config import base_config

    _check_generic(config, base_config())
    stages = parse_stages(config.stages)
    _check_dataset(config.dataset)
    _check_running(config)
    _number(config, "batch_size", low=1, integer=True)
    _number(config, "eval_batch_size", low=1, integer=True)
    if config.batch_size % process_count:
        _fail(
            "batch_size", config.batch_size, f"must be divisible by the {process_count} processes"
        )
    _number(config, "validation_fraction", low=0, high=0.5)
    _one_of(config, "binary.weight_scale", SCALE_MODES)
    _one_of(config, "binary.weight_ste", WEIGHT_STES)
    _one_of(config, "binary.weight_binarizer", ("sign", "real"))
    _one_of(config, "augment", ("", "none", "cifar", "imagenet"))
    _number(config, "validation_seed", low=-1, integer=True)
    _one_of(config, "binary.activation", ACTIVATION_ESTIMATORS)
    _number(config, "binary.weight_clip", low=0, low_open=True)
    _number(config, "binary.act_clip", low=0, low_open=True)
    if "swish_beta" in config.binary:
        _number(config, "binary.swish_beta", low=0, low_open=True)
    for stage in STAGES:  # unused stages too: a typo there fails now, not when it is used
        _check_optimization(config, stage)
    _number(config, "lns.warmup_lr", low=0, low_open=True)
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
        _one_of(config, "lns.cls_grad_to_w", CLS_GRAD_PATHS)
        _one_of(config, "lns.mapping_dtype", MAPPING_DTYPES)
        _number(config, "lns.warmup_steps", low=0, integer=True)
        _number(config, "lns.warmup_target", low=0, high=1)
        _number(config, "lns.warmup_tolerance", low=0)
        _number(config, "lns.warmup_lr", low=0, low_open=True)
        scale = config.lns.get("mapping_lr_scale", "1")
        if parse_lr_scale(scale) is None:
            _fail("lns.mapping_lr_scale", scale, "must be '1/N' or a number >= 0, as a string")
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
    _check_generic(config, base_config(), numbers=True)  # fields without a specific range
    return stages
