"""step.py: gradient accumulation over micro-batches equals one batch (and so gives the same update)."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import optim
import step
from test_optim import assert_trees_close


def tiny_lm_loss(params, tokens):
    """Next-token cross-entropy of a bigram MLP on int tokens [b, T], mean over all predicted positions."""
    h = jnp.tanh(params["embed"][tokens[:, :-1]] @ params["w1"])  # [b, T-1, 32]
    logits = h @ params["w2"]  # [b, T-1, V]
    logp = jax.nn.log_softmax(logits)
    return -jnp.mean(jnp.take_along_axis(logp, tokens[:, 1:, None], axis=-1))


def test_accumulate_grads_equals_full_batch():
    V, rng = 50, np.random.default_rng(0)
    normal = lambda *shape: jnp.asarray(rng.standard_normal(shape), jnp.float32)
    params = {"embed": normal(V, 16), "w1": normal(16, 32) / 4, "w2": normal(32, V) / 6}
    batch = jnp.asarray(rng.integers(0, V, (16, 12)), jnp.int32)  # [B, T]
    loss_full, g_full = jax.jit(jax.value_and_grad(tiny_lm_loss))(params, batch)
    loss_acc, g_acc = jax.jit(step.accumulate_grads, static_argnums=(0, 3))(tiny_lm_loss, params, batch, 4)
    # same sums in another order: fp32 reassociation error is a few ulps (~1e-7 relative)
    assert float(loss_acc) == pytest.approx(float(loss_full), rel=1e-6)
    assert all(g.dtype == jnp.float32 for g in jax.tree.leaves(g_acc))
    assert_trees_close(g_acc, g_full, rtol=1e-5)
    # hence the same optimizer update as one batch of 4 × 4 sequences
    update = jax.jit(optim.sgd(0.1, 0.9).update)
    state = optim.sgd(0.1, 0.9).init(params)
    assert_trees_close(update(g_acc, state, params)[0], update(g_full, state, params)[0], rtol=1e-5)
    loss_1, g_1 = step.accumulate_grads(tiny_lm_loss, params, batch, 1)
    assert float(loss_1) == pytest.approx(float(loss_full), rel=1e-6)  # eager vs jit: an ulp apart
    with pytest.raises(ValueError, match="divisible"):
        step.accumulate_grads(tiny_lm_loss, params, batch, 5)
    with pytest.raises(ValueError):
        step.accumulate_grads(tiny_lm_loss, params, batch, 0)
