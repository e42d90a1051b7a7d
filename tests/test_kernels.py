"""kernels.py: each fast path equals the plain JAX expression it replaces (values and gradients)."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import kernels
import model
from test_model import SMALL, params, tokens  # noqa: F401 (params is a fixture)


@pytest.mark.parametrize("T", [16, 2])  # 2: halves of one position each
def test_causal_attention_in_halves_equals_full_masked_attention(T):
    """kernels.causal_attention (two query halves, the masked quarter skipped) against
    jax.nn.dot_product_attention over the whole causal T x T, values and gradients. Only the
    summation order differs: fp32 agreement to ~1e-6 relative."""
    q, k, v = (jax.random.normal(jax.random.PRNGKey(i), (2, T, 3, 8)) for i in range(3))
    full = lambda q, k, v: jax.nn.dot_product_attention(q, k, v, is_causal=True)
    np.testing.assert_allclose(kernels.causal_attention(q, k, v), full(q, k, v), rtol=1e-5, atol=1e-6)
    w = jax.random.normal(jax.random.PRNGKey(3), (2, T, 3, 8))
    ga = jax.grad(lambda *a: jnp.vdot(kernels.causal_attention(*a), w), argnums=(0, 1, 2))(q, k, v)
    gb = jax.grad(lambda *a: jnp.vdot(full(*a), w), argnums=(0, 1, 2))(q, k, v)
    for a, b in zip(ga, gb):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("chunk", [0, 30, 97])  # whole vocab, uneven last chunk, one exact chunk
def test_chunked_cross_entropy_equals_materialized_logits(params, chunk):
    """kernels.cross_entropy (chunked, custom VJP) inside model.loss_fn against logsumexp over the full logits."""
    cfg = model.Config(**{**SMALL.__dict__, "ce_chunk": chunk, "z_loss": 1e-3})
    x = tokens()

    def reference(p):
        lg = model.forward(p, x, cfg)[:, :-1]
        lse = jax.nn.logsumexp(lg, -1)
        nll = lse - jnp.take_along_axis(lg, x[:, 1:, None], -1)[..., 0]
        return nll.mean() + 1e-3 * (lse**2).mean()

    np.testing.assert_allclose(float(model.loss_fn(params, x, cfg)), float(reference(params)), rtol=1e-6)
    g, g_ref = jax.grad(model.loss_fn)(params, x, cfg), jax.grad(reference)(params)
    for a, b in zip(jax.tree.leaves(g), jax.tree.leaves(g_ref)):  # fp32 sums in another order: ~1e-6
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6 * float(jnp.abs(b).max()))


def test_gelu_and_its_derivative_match_jax():
    """kernels.gelu's hand-written VJP against autodiff through jax.nn.gelu(approximate=True), in fp64 so
    that only the formula, not rounding, could make them differ."""
    with jax.enable_x64(True):
        x = jnp.linspace(-8, 8, 10_001, dtype=jnp.float64)
        np.testing.assert_allclose(kernels.gelu(x), jax.nn.gelu(x, approximate=True), rtol=1e-13, atol=1e-14)  # 1 + t cancels where t ≈ -1
        d = jax.vmap(jax.grad(kernels.gelu))(x)
        d_ref = jax.vmap(jax.grad(lambda v: jax.nn.gelu(v, approximate=True)))(x)
        np.testing.assert_allclose(d, d_ref, rtol=1e-13, atol=1e-14)
