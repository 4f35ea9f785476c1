"""The paper's CIFAR-10 LNS recipe is stable (issue 9; D3): SGD at lr 0.01, momentum 0.9,
rho 0.005, alpha 1 and 5, on resnet20 at its shipped width, from a briefly trained BNN and a
warm start, on mock data. With the summed auxiliary loss (Eq. 17, the old D3) the same recipe
fails the same criterion (``test_summed_loss_is_the_documented_negative_result``), so the
criterion is one that would have caught the sum."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bnnns.default_config import load_config_file
from bnnns.optim import make_optimizer
from bnnns.stage_init import fresh_state, transfer_pretrained, warm_start_mapping
from bnnns.steps import train_step
from bnnns.train_lib import build_model

# CIFAR-10's channels at 8x8 pixels (the mapping networks, where the sum diverged, see only the
# kernels: their size, and so the per-layer element counts, are the shipped ones).
BATCH, STEPS, IMAGE = 8, 30, (8, 8, 3)


def mock_batches(n, seed):
    """Fixed random CIFAR-shaped batches with learnable labels (a linear teacher)."""
    rng = np.random.default_rng(seed)
    teacher = rng.normal(size=(int(np.prod(IMAGE)), 10))
    for _ in range(n):
        x = rng.normal(size=(BATCH, *IMAGE)).astype(np.float32)
        y = np.argmax(x.reshape(BATCH, -1) @ teacher, -1).astype(np.int32)
        yield {"image": jnp.asarray(x), "label": jnp.asarray(y), "mask": jnp.ones(BATCH)}


def run(config, stage, state, steps, seed):
    model = build_model(config, 10, stage)
    alpha = float(config.lns.alpha) if stage == "lns" else 0.0
    tx = make_optimizer(config[stage], steps_per_epoch=1000)
    dummy = jnp.zeros((1, *IMAGE))
    if state is None:
        state = fresh_state(model, tx, jax.random.key(0), dummy)
    else:
        state = transfer_pretrained(
            fresh_state(model, tx, jax.random.key(1), dummy), state, model, tx, dummy
        )
    if stage == "lns":
        state, _ = warm_start_mapping(
            state, model, dummy, max_steps=300, target=0.995, learning_rate=1e-3, tolerance=0.01
        )
    step = jax.jit(functools.partial(train_step, model=model, tx=tx, alpha=alpha))
    history = []
    for batch in mock_batches(steps, seed):
        state, metrics = step(state, batch)
        history.append({k: float(metrics[k]) for k in ("loss", "ce", "aux")})
    return state, history


@pytest.fixture(scope="module")
def pretrained():
    config = load_config_file("configs/cifar10_resnet20_pretrain.py")
    state, history = run(config, "pretrain", None, 20, seed=0)
    assert np.isfinite(history[-1]["loss"])
    return state


def lns_recipe(alpha, reduction=None):
    config = load_config_file("configs/cifar10_resnet20_lns.py", {"lns.alpha": alpha})
    assert (config.lns.optimizer, config.lns.learning_rate, config.lns.momentum) == (
        "sgd",
        0.01,
        0.9,
    )
    assert config.lns.rho_pos == config.lns.rho_neg == 0.005
    if reduction:
        config.lns.reduction = reduction
    return config


@pytest.mark.slow
@pytest.mark.parametrize("alpha", [1.0, 5.0])
def test_cifar_lns_recipe_is_stable(pretrained, alpha):
    _, history = run(lns_recipe(alpha), "lns", pretrained, STEPS, seed=1)
    losses = np.array([h["loss"] for h in history])
    aux = np.array([h["aux"] for h in history])
    assert np.all(np.isfinite(losses)), losses
    # The auxiliary loss does not grow: its last steps are no higher than its first steps
    # plus a margin of 0.05 per layer-mean (18 binary layers; each mean is ~0 at the warm start).
    assert aux[-5:].mean() <= aux[:5].mean() + 0.05 * 18, aux
    assert np.abs(aux).max() < 18.0, aux  # each layer's mean squared loss stays O(1)


@pytest.mark.slow
def test_summed_loss_is_the_documented_negative_result(pretrained):
    """The same recipe with the sum of Eq. 17 (the old D3) fails the stability criterion."""
    _, history = run(lns_recipe(1.0, "sum"), "lns", pretrained, STEPS, seed=1)
    aux = np.array([h["aux"] for h in history])
    losses = np.array([h["loss"] for h in history])
    diverged = (not np.all(np.isfinite(losses))) or np.nanmax(np.abs(aux)) > 1e3 * 18
    assert diverged, aux
