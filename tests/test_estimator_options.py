"""The estimators chosen by config: IR-Net's EDE with its (t, k) schedule over a training run
(the progress enters the jitted step as an array), SwishSign's beta, and their config errors."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx
from helpers import tiny_config

import bnnns
from bnnns.core.estimators import sign
from bnnns.core.losses import cross_entropy
from bnnns.deploy import export
from bnnns.errors import ConfigError
from bnnns.train.config_checks import validate_config
from bnnns.train.stage import build_model
from bnnns.train.steps import TrainState, train_step


def _ref_ede(x, t, k):
    """Forward sign(x), gradient d/dx k tanh(t x) = k t (1 - tanh^2(t x)): IR-Net's formula,
    written without ede_sign's custom_vjp."""
    soft = k * jnp.tanh(t * x)
    return jax.lax.stop_gradient(sign(x) - soft) + soft


class Tiny(nn.Module):
    """A real stem, then a binary dense with EDE on its inputs and on its weights."""

    @nn.compact
    def __call__(self, x, train=False):
        h = nn.Dense(4, use_bias=False, name="stem")(x)
        layer = bnnns.BinaryDense(
            3, activation="ede_sign", weight_ste="ede", weight_scale="none", name="binary"
        )
        return layer(h)


def test_ede_schedule_moves_over_a_training_run_without_recompiling():
    model, total = Tiny(), 4
    x = jax.random.normal(jax.random.key(0), (8, 5))
    batch = {"image": x, "label": jnp.arange(8) % 3, "mask": jnp.ones(8)}
    variables = jax.jit(model.init)(jax.random.key(1), x)
    params = variables.pop("params")
    tx = optax.sgd(1.0)  # the update is minus the gradient the step used
    state = TrainState(jnp.zeros((), jnp.int32), params, dict(variables), tx.init(params))
    step = jax.jit(lambda s, b: train_step(s, b, model=model, tx=tx, alpha=0.0, total_steps=total))

    def ref_loss(params, t, k):
        h = x @ params["stem"]["kernel"]
        logits = _ref_ede(h, t, k) @ _ref_ede(params["binary"]["kernel"], t, k)
        return cross_entropy(logits, batch["label"], batch["mask"])

    ref_grad = jax.jit(jax.grad(ref_loss))
    seen_t = []
    for i in range(total):
        before = state.params
        state, _ = step(state, batch)
        used = jax.tree.map(jnp.subtract, before, state.params)
        t = 0.1 * 10 ** (2.0 * i / total)  # IR-Net: T_min 10^(i/N log10(T_max / T_min))
        k = max(1.0 / t, 1.0)
        want = ref_grad(before, jnp.float32(t), jnp.float32(k))
        np.testing.assert_allclose(state.model_state["progress"]["binary"]["progress"], i / total)
        for name in ("stem", "binary"):  # EDE on the activations (stem) and on the weights
            np.testing.assert_allclose(
                used[name]["kernel"], want[name]["kernel"], rtol=2e-4, atol=1e-6
            )
        seen_t.append(t)
    assert len(set(seen_t)) == total and seen_t[0] == pytest.approx(0.1)
    assert step._cache_size() == 1  # the progress is an array of the step, not a constant


def test_only_ede_layers_have_a_progress_and_the_step_needs_the_total():
    layer = bnnns.BinaryDense(3)
    shapes = jax.eval_shape(layer.init, jax.random.key(0), jnp.ones((1, 2)))
    assert "progress" not in shapes
    model = Tiny()
    x = jnp.ones((2, 5))
    variables = jax.jit(model.init)(jax.random.key(0), x)
    params = variables.pop("params")
    state = TrainState(
        jnp.zeros((), jnp.int32), params, dict(variables), optax.sgd(1.0).init(params)
    )
    batch = {"image": x, "label": jnp.zeros(2, jnp.int32), "mask": jnp.ones(2)}
    with pytest.raises(ValueError, match="total_steps >= 1, got 0"):
        train_step(state, batch, model=model, tx=optax.sgd(1.0), alpha=0.0)
    deployable = export.deployable_variables(model, {"params": params, **variables}, x, "none")
    assert "progress" not in deployable  # training only: never in an artifact


def test_nnx_ede_layer_reads_its_progress_like_linen():
    layer = nnx.jit(
        lambda: bnnns.nnx.BinaryDense(
            3, 2, activation="ede_sign", weight_ste="ede", weight_scale="none", rngs=nnx.Rngs(0)
        )
    )()
    x = jax.random.normal(jax.random.key(1), (4, 3))
    twin = bnnns.BinaryDense(2, activation="ede_sign", weight_ste="ede", weight_scale="none")

    @nnx.jit
    def grads(layer, x, progress):
        bnnns.nnx.set_progress(layer, progress)
        return nnx.grad(lambda layer, x: jnp.sum(layer(x) ** 2), argnums=(0, 1))(layer, x)

    linen_grads = jax.jit(jax.grad(lambda v, x: jnp.sum(twin.apply(v, x) ** 2), argnums=(0, 1)))
    for progress in (0.0, 0.7):
        g_layer, g_x = grads(layer, x, jnp.float32(progress))
        variables = bnnns.nnx.to_linen_variables(layer)
        np.testing.assert_allclose(variables["progress"]["progress"], progress)
        want = linen_grads(variables, x)
        np.testing.assert_allclose(g_x, want[1], rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(
            g_layer["kernel"][...], want[0]["params"]["kernel"], rtol=1e-5, atol=1e-6
        )


def test_swish_beta_is_an_option_of_the_layers_and_the_config():
    x = jax.random.normal(jax.random.key(0), (4, 3))
    w = jax.random.normal(jax.random.key(1), (3, 2))
    options = {"weight_binarizer": "real", "activation": "swish_sign"}
    for beta in (2.0, 7.5):
        linen = bnnns.BinaryDense(2, swish_beta=beta, **options)
        apply = lambda x, linen=linen: jnp.sum(linen.apply({"params": {"kernel": w}}, x))
        got = jax.jit(jax.grad(apply))(x)
        bx = np.asarray(beta * x, np.float64)  # Larq's SwishSign gradient at this beta
        surrogate = beta * (2 - bx * np.tanh(bx / 2)) / (1 + np.cosh(bx))
        np.testing.assert_allclose(got, surrogate * np.sum(w, 1), rtol=1e-5, atol=1e-6)
        layer = nnx.jit(
            lambda b=beta: bnnns.nnx.BinaryDense(3, 2, swish_beta=b, rngs=nnx.Rngs(0), **options)
        )()
        layer.kernel[...] = w
        grad = nnx.jit(nnx.grad(lambda layer, x: jnp.sum(layer(x)), argnums=1))(layer, x)
        np.testing.assert_allclose(grad, got, rtol=1e-6)
    model = build_model(tiny_config(**{"binary.swish_beta": 2.0}), 10, "pretrain")
    assert model.binary.swish_beta == 2.0
    conv = model.binary.conv(4)  # the model's binary layers take it from the options
    assert conv.swish_beta == 2.0
    with pytest.raises(ValueError, match="BinaryDense.swish_beta must be > 0"):
        bnnns.nnx.BinaryDense(2, 2, activation="swish_sign", swish_beta=-1.0, rngs=nnx.Rngs(0))
    bad = bnnns.BinaryDense(2, activation="swish_sign", swish_beta=0.0)
    with pytest.raises(ValueError, match="BinaryDense.swish_beta must be > 0 .*got 0.0"):
        jax.eval_shape(bad.init, jax.random.key(0), x)


@pytest.mark.parametrize(
    "field,value,message",
    [
        ("binary.swish_beta", 0.0, r"config.binary.swish_beta=0.0 is not allowed: .*> 0"),
        ("binary.activation", "ede", r"config.binary.activation='ede' .*'ede_sign'"),
        ("binary.weight_ste", "ede_sign", r"config.binary.weight_ste='ede_sign' .*'ede'"),
        ("lns.weight_ste", "edee", r"config.lns.weight_ste='edee' .*'ede'"),
    ],
)
def test_config_errors_name_the_bad_estimator_value(field, value, message):
    with pytest.raises(ConfigError, match=message):
        validate_config(tiny_config(**{field: value}))


def test_ede_and_swish_are_valid_config_choices():
    for overrides in (
        {"binary.activation": "ede_sign", "binary.weight_ste": "ede", "lns.weight_ste": "ede"},
        {"binary.activation": "swish_sign", "binary.swish_beta": 2.5},
    ):
        validate_config(tiny_config(**overrides))
