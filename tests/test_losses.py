"""Property tests of the loss-corrected estimator (Eqs. 7-18) and the metrics."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from absl.testing import parameterized
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import bnnns
from bnnns.core.losses import squared_loss

DTYPES = (jnp.float32, jnp.bfloat16)
TOL = {jnp.float32: 1e-4, jnp.bfloat16: 5e-2}

shapes = st.sampled_from([(5,), (3, 4), (3, 3, 2, 4)])
rhos = st.tuples(st.floats(0.0, 0.45), st.floats(0.0, 0.45))


@st.composite
def pred_and_labels(draw):
    shape = draw(shapes)
    q_hat = draw(
        hnp.arrays(np.float32, shape, elements=st.floats(-3, 3, width=32, allow_subnormal=False))
    )
    signs = draw(hnp.arrays(np.bool_, shape))
    return q_hat, np.where(signs, 1.0, -1.0).astype(np.float32)


def eq15_reference(q_hat, q_tilde, rho_pos, rho_neg):
    """Eqs. 13-14 written out separately for q~ = +1 and q~ = -1 (float64)."""
    q_hat = np.asarray(q_hat, np.float64)
    l_pos, l_neg = (q_hat - 1) ** 2, (q_hat + 1) ** 2
    denom = 1 - rho_pos - rho_neg
    lt_pos = ((1 - rho_neg) * l_pos - rho_pos * l_neg) / denom  # Eq. 13
    lt_neg = ((1 - rho_pos) * l_neg - rho_neg * l_pos) / denom  # Eq. 14
    return np.where(np.asarray(q_tilde) > 0, lt_pos, lt_neg)


class LossTest(chex.TestCase):
    @chex.variants(with_jit=True, without_jit=True)
    @parameterized.parameters(*DTYPES)
    def test_eq15_values(self, dtype):
        @given(pred_and_labels(), rhos)
        def check(pl, rho):
            q_hat, q_tilde = (jnp.asarray(a, dtype) for a in pl)
            rp, rn = rho
            got = self.variant(lambda a, b: bnnns.lns_loss(a, b, rp, rn, "none"))(q_hat, q_tilde)
            self.assertEqual(got.dtype, dtype)
            ref = eq15_reference(np.asarray(q_hat, np.float32), q_tilde, rp, rn)
            tol = TOL[dtype] * (1 + np.abs(ref).max())
            np.testing.assert_allclose(np.asarray(got, np.float64), ref, atol=tol)

        check()

    @chex.variants(with_jit=True, without_jit=True)
    def test_unbiasedness_eq10(self):
        """(1 - rho_q) l~(q^, q) + rho_q l~(q^, -q) == l(q^, q) for both clean labels q."""

        @given(pred_and_labels(), rhos)
        def check(pl, rho):
            q_hat, clean = pl
            rp, rn = rho
            rho_q = np.where(clean > 0, rp, rn)  # flip probability of the clean label
            lt = self.variant(lambda a, b: bnnns.lns_loss(a, b, rp, rn, "none"))
            expected = lt(q_hat, clean) * (1 - rho_q) + rho_q * lt(q_hat, -clean)
            tol = 1e-4 * (1 + np.abs(expected).max())
            np.testing.assert_allclose(expected, (q_hat - clean) ** 2, atol=tol)

        check()

    @chex.variants(with_jit=True, without_jit=True)
    @parameterized.parameters(*DTYPES)
    def test_gradient_is_eq18(self, dtype):
        @given(pred_and_labels(), rhos)
        def check(pl, rho):
            q_hat, q_tilde = (jnp.asarray(a, dtype) for a in pl)
            rp, rn = rho
            grad = self.variant(jax.grad(lambda a: bnnns.lns_loss(a, q_tilde, rp, rn, "sum")))
            got = np.asarray(grad(q_hat), np.float64)
            qh, qt = np.asarray(q_hat, np.float64), np.asarray(q_tilde, np.float64)
            rho_same = np.where(qt > 0, rp, rn)
            eq18 = 2 * (qh - qt) - 4 * rho_same * qt / (1 - rp - rn)
            np.testing.assert_allclose(got, eq18, atol=TOL[dtype] * (1 + np.abs(eq18).max()))

        check()

    @chex.variants(with_jit=True, without_jit=True)
    def test_symmetric_closed_form(self):
        """DERIVED (b): l~ = (q^ - q~/(1-2 rho))^2 + 1 - 1/(1-2 rho)^2 for symmetric rho."""

        @given(pred_and_labels(), st.floats(0.0, 0.45))
        def check(pl, rho):
            q_hat, q_tilde = pl
            got = self.variant(lambda a, b: bnnns.lns_loss(a, b, rho, rho, "none"))(q_hat, q_tilde)
            k = 1 / (1 - 2 * rho)
            ref = (q_hat.astype(np.float64) - q_tilde * k) ** 2 + 1 - k**2
            np.testing.assert_allclose(got, ref, atol=1e-4 * (1 + np.abs(ref).max()))

        check()

    @chex.variants(with_jit=True, without_jit=True)
    def test_rho_zero_is_plain_squared_loss(self):
        @given(pred_and_labels())
        def check(pl):
            q_hat, q_tilde = pl
            for reduction, reduce in (("sum", np.sum), ("mean", np.mean)):
                got = self.variant(lambda a, b, r=reduction: bnnns.lns_loss(a, b, 0.0, 0.0, r))(
                    q_hat, q_tilde
                )
                np.testing.assert_allclose(
                    got, reduce((q_hat - q_tilde) ** 2), rtol=1e-5, atol=1e-5
                )

        check()

    def test_generic_loss_fn(self):
        absolute = lambda p, y: jnp.abs(p - y)  # noqa: E731
        q_hat, q_tilde = jnp.array([0.3, -2.0]), jnp.array([1.0, 1.0])
        got = bnnns.unbiased_loss(absolute, q_hat, q_tilde, 0.1, 0.2)
        # Eq. 15 with q~ = +1: [(1 - rho_neg) l(q^, 1) - rho_pos l(q^, -1)] / (1 - 0.3)
        ref = ((1 - 0.2) * np.abs(q_hat - 1) - 0.1 * np.abs(q_hat + 1)) / 0.7
        np.testing.assert_allclose(got, ref, rtol=1e-6)
        np.testing.assert_allclose(squared_loss(q_hat, q_tilde), (q_hat - q_tilde) ** 2)

    @parameterized.parameters(
        (-0.1, 0.0, "rho_pos"),
        (0.0, -0.2, "rho_neg"),
        (0.5, 0.5, "rho_pos \\+ rho_neg"),
        (0.7, 0.4, "rho_pos=0.7, rho_neg=0.4"),
        (float("nan"), 0.0, "rho_pos"),
    )
    def test_bad_rho_raises(self, rp, rn, pattern):
        with pytest.raises(ValueError, match=pattern):
            bnnns.unbiased_loss(squared_loss, jnp.ones(2), jnp.ones(2), rp, rn)
        with pytest.raises(ValueError, match=pattern):
            bnnns.lns_loss(jnp.ones(2), jnp.ones(2), rp, rn)

    def test_bad_reduction(self):
        with pytest.raises(ValueError, match="reduction"):
            bnnns.lns_loss(jnp.ones(2), jnp.ones(2), 0.0, 0.0, "max")

    def test_traced_rho_allowed(self):
        f = jax.jit(lambda r: bnnns.lns_loss(jnp.zeros(3), jnp.ones(3), r, r))
        np.testing.assert_allclose(f(0.0), 1.0)  # mean of (0 - 1)^2 over 3 elements


class MetricTest(chex.TestCase):
    @chex.variants(with_jit=True, without_jit=True)
    def test_flip_rate(self):
        @given(
            hnp.arrays(
                np.float32, (4, 6), elements=st.floats(-2, 2, width=32, allow_subnormal=False)
            ),
            hnp.arrays(
                np.float32, (4, 6), elements=st.floats(-2, 2, width=32, allow_subnormal=False)
            ),
        )
        def check(a, b):
            got = self.variant(bnnns.flip_rate)(a, b)
            ref = np.mean(np.where(a >= 0, 1, -1) != np.where(b >= 0, 1, -1))
            np.testing.assert_allclose(got, ref, rtol=1e-6)
            np.testing.assert_allclose(self.variant(bnnns.flip_rate)(a, a), 0.0)

        check()

    def test_flip_rate_shape_mismatch(self):
        with pytest.raises(ValueError, match="shapes differ"):
            bnnns.flip_rate(jnp.ones(3), jnp.ones(4))


class LossFloorTest(chex.TestCase):
    """lns_target / lns_loss_floor (DERIVED (b), method.md §1.5): used by the D7 warm start."""

    @chex.variants(with_jit=True, without_jit=True)
    def test_target_zeroes_eq18_and_floor_is_the_minimum(self):
        @given(pred_and_labels(), rhos)
        def check(data, rho):
            q_hat, q_tilde = data
            rp, rn = rho
            if rp + rn >= 0.95:
                return
            target = self.variant(bnnns.core.losses.lns_target)(q_tilde, rp, rn)
            grad = jax.grad(lambda a: bnnns.lns_loss(a, q_tilde, rp, rn, "sum"))(target)
            np.testing.assert_allclose(grad, 0.0, atol=1e-4)  # Eq. 18 vanishes there
            for reduction in ("sum", "mean"):
                floor = self.variant(
                    lambda b, r=reduction: bnnns.core.losses.lns_loss_floor(b, rp, rn, r)
                )(q_tilde)
                loss = bnnns.lns_loss(q_hat, q_tilde, rp, rn, reduction)
                assert float(loss) >= float(floor) - 1e-4
                # the excess is the squared distance to the target, reduced alike
                excess = np.square(np.asarray(q_hat, np.float64) - np.asarray(target))
                expected = excess.sum() if reduction == "sum" else excess.mean()
                np.testing.assert_allclose(float(loss - floor), expected, rtol=1e-3, atol=1e-3)

        check()

    def test_symmetric_target_is_one_over_one_minus_two_rho(self):
        for rho in (0.0, 0.005, 0.1, 0.2):
            got = bnnns.core.losses.lns_target(jnp.array([1.0, -1.0]), rho, rho)
            np.testing.assert_allclose(got, [1 / (1 - 2 * rho), -1 / (1 - 2 * rho)], rtol=1e-6)
