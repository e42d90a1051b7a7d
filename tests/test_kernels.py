"""kernels.py: each fast path equals the plain JAX expression it replaces (values and gradients)."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import kernels
import model
from test_model import SMALL, params, tokens  # noqa: F401 (params is a fixture)


def plain_attention(q, k, v):
    """softmax(q kᵀ / √H, future keys masked) v in fp32, written out: the reference for every implementation."""
    q, k, v = (x.astype(jnp.float32) for x in (q, k, v))
    s = jnp.einsum("btnh,bsnh->bnts", q, k) / np.sqrt(q.shape[-1])
    T = q.shape[1]
    s = jnp.where(jnp.arange(T)[:, None] >= jnp.arange(T), s, -jnp.inf)
    return jnp.einsum("bnts,bsnh->btnh", jax.nn.softmax(s, axis=-1), v)


IMPLEMENTATIONS = ["auto", "xla", "halves"] + (["cudnn"] if jax.default_backend() == "gpu" else [])


TOL = {"float32": 1e-6, "bfloat16": 2e-2}


@pytest.mark.parametrize("impl,dtype,T", [(i, d, 16) for i in IMPLEMENTATIONS for d in TOL] +
                         [("halves", "float32", 2), ("halves", "float32", 3)])  # T 2: halves of one position each; 3: odd, XLA's
def test_causal_attention_equals_the_plain_expression(impl, dtype, T):
    """kernels.causal_attention by each implementation on this platform ('halves': two query halves, the
    masked quarter skipped; 'cudnn' only on a GPU) against the written-out softmax, values and gradients:
    fp32 within 1e-6 (only summation order differs), bf16 within 2e-2 (its inputs' rounding), relative to
    the largest value. bf16 and H 8 (a multiple of 8, <= 128) is what cuDNN takes."""
    q, k, v, w = (jax.random.normal(jax.random.PRNGKey(i), (2, T, 3, 8), dtype) for i in range(4))
    tol = TOL[dtype]
    @jax.jit  # one compile a case (eager, every op of the gradient compiles on its own: 3x slower)
    def both(q, k, v, w):
        got = jax.value_and_grad(lambda *a: jnp.vdot(kernels.causal_attention(*a, impl).astype(jnp.float32), w),
                                 argnums=(0, 1, 2))
        want = jax.value_and_grad(lambda *a: jnp.vdot(plain_attention(*a), w), argnums=(0, 1, 2))
        return kernels.causal_attention(q, k, v, impl), plain_attention(q, k, v), got(q, k, v)[1], want(q, k, v)[1]
    got, want, ga, gb = both(q, k, v, w.astype(jnp.float32))
    assert got.dtype == q.dtype
    close = lambda a, b: np.testing.assert_allclose(np.float32(a), b, atol=tol * float(jnp.abs(b).max()), rtol=0)
    close(got, want)
    for a, b in zip(ga, gb):
        close(a, b.astype(jnp.float32))


def test_attention_is_chosen_by_platform_dtype_and_head_size():
    """cuDNN's flash attention on a GPU where its limits allow (fp16/bf16, H a multiple of 8 up to 128), XLA's
    where not; on CPU the halves kernel for even T; XLA's on TPU (its own fused attention)."""
    x = lambda dtype, T=16, H=128: jax.ShapeDtypeStruct((1, T, 2, H), dtype)
    pick = kernels.attention_implementation
    assert pick(x(jnp.bfloat16), "gpu") == "cudnn" and pick(x(jnp.float16, H=64), "gpu") == "cudnn"
    assert pick(x(jnp.float32), "gpu") == "xla" and pick(x(jnp.bfloat16, H=160), "gpu") == "xla"
    assert pick(x(jnp.bfloat16, H=12), "gpu") == "xla"
    assert pick(x(jnp.float32), "cpu") == "halves" and pick(x(jnp.float32, T=15), "cpu") == "xla"
    assert pick(x(jnp.bfloat16), "tpu") == "xla"


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
