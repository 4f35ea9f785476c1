"""The D7 warm start (:func:`bnnns.train.stage_init.warm_start_mapping`) as a stage calls it: its
step cap holds when it is not a multiple of the convergence check, and a state placed on a mesh
(what ``Stage.init_fn`` returns) compiles the warm-start step once, not once per placement of
Adam's state."""

import logging

import jax
import jax.numpy as jnp
from helpers import tiny_config

from bnnns.train import sharding
from bnnns.train.optim import make_optimizer
from bnnns.train.stage_init import fresh_state, warm_start_mapping
from bnnns.train.train_lib import build_model


def _lns_state():
    config = tiny_config()
    dummy = jnp.zeros((1, 28, 28, 1))
    model = build_model(config, 10, "lns")
    tx = make_optimizer(config.lns, 10)
    init = jax.jit(
        lambda k: fresh_state(model, tx, k, dummy),
        out_shardings=sharding.replicated(sharding.make_mesh((1,))),
    )
    return init(jax.random.key(0)), model, dummy


def test_step_cap_below_the_check_interval_is_honoured():
    state, model, dummy = _lns_state()
    for cap in (3, 27):  # below one check interval (25), and one step past it
        _, info = warm_start_mapping(
            state, model, dummy, max_steps=cap, target=1.1, learning_rate=1e-3
        )  # target 1.1: never met, so the cap ends it
        assert info["steps"] == cap and not info["converged"], info


def test_mesh_placed_state_compiles_the_step_once(caplog):
    state, model, dummy = _lns_state()
    with jax.log_compiles(True), caplog.at_level(logging.WARNING, logger="jax"):
        warm_start_mapping(state, model, dummy, max_steps=30, target=1.1, learning_rate=1e-3)
    compiled = [r for r in caplog.records if "Finished XLA compilation of jit(step)" in r.message]
    assert len(compiled) == 1, [r.message for r in compiled]
