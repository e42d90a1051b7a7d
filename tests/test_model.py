"""model.py: the paper's architecture, checked against Table 1 and against independent references."""
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import model

SMALL = model.Config(d_model=64, n_layers=2, seq_len=32, vocab_size=97, head_dim=16)


@pytest.fixture(scope="module")
def params():
    return model.init(SMALL, jax.random.PRNGKey(0))


def tokens(B=2, T=32, seed=1):
    return jax.random.randint(jax.random.PRNGKey(seed), (B, T), 0, SMALL.vocab_size)


@pytest.mark.parametrize("D,L,T,nonembed,active,total", [
    (384, 6, 512, 10_616_832, 29_915_520, 49_214_208),  # 30M: "30M active, 49M total"
    (768, 12, 1024, 84_934_656, 123_532_032, 162_129_408),  # GPT-2 small: 124M / 162M
    (2048, 24, 2048, 1_207_959_552, 1_310_885_888, 1_413_812_224),  # GPT-3 XL: 1.3B / 1.4B
])
def test_param_counts_match_table1_and_the_real_tree(D, L, T, nonembed, active, total):
    cfg = model.Config(d_model=D, n_layers=L, seq_len=T)
    c = model.count_params(cfg)
    assert (c["nonembed"], c["active"], c["total"]) == (nonembed, active, total)
    shapes = jax.eval_shape(lambda: model.init(cfg, jax.random.PRNGKey(0)))  # no allocation
    assert sum(x.size for x in jax.tree.leaves(shapes)) == total
    assert all(x.ndim > 1 for x in jax.tree.leaves(shapes))  # no 1-D params: no norm scales, no biases
    assert model.flops_per_token(cfg) == 6 * active + 12 * L * T * D


def test_shapes(params):
    D, L, V, H, N = 64, 2, 97, 16, 4
    assert params["embed"].shape == (V, D) and params["unembed"].shape == (D, V)
    assert params["blocks"]["q"].shape == (L, D, N, H) and params["blocks"]["o"].shape == (L, N, H, D)
    assert params["blocks"]["up"].shape == (L, D, 4 * D) and params["blocks"]["down"].shape == (L, 4 * D, D)
    assert model.forward(params, tokens(), SMALL).shape == (2, 32, V)


def test_init_matches_the_authors_distributions():
    """Each tensor's std against the closed form of the authors' rule (pretraining/model.py): embeddings
    N(0, 1/D) (jax variance_scaling(1, fan_in, normal) on [V, D]); kernels xavier-uniform on their shapes
    [3, N, D, H], [N, H, D], [D, F], [F, D], whose std jax's own initializer gives on those shapes.
    Samples of 0.1-0.5M values: the std's relative sampling error is <= 0.15% (uniform) / 0.3% (normal)."""
    cfg = model.Config(d_model=256, n_layers=2, seq_len=8, vocab_size=1000, head_dim=64)
    D, L, N, H, F = 256, 2, 4, 64, 1024
    p = model.init(cfg, jax.random.PRNGKey(0))
    xavier = jax.nn.initializers.xavier_uniform()
    theirs = {"q": (3, N, D, H), "k": (3, N, D, H), "v": (3, N, D, H), "o": (N, H, D), "up": (D, F), "down": (F, D)}
    closed = {"q": 2 / (3 * N * (D + H)), "o": 2 / (N * (H + D)), "up": 2 / (D + F), "down": 2 / (D + F)}
    for name, shape in theirs.items():
        want = math.sqrt(closed.get(name, closed["q"]))
        ref = float(xavier(jax.random.PRNGKey(1), shape, jnp.float32).std())  # jax's fan rule, their shape
        assert abs(ref / want - 1) < 0.01, (name, ref, want)
        w = p["blocks"][name]
        assert abs(float(w.std()) / want - 1) < 0.01, (name, float(w.std()), want)
        assert float(jnp.abs(w).max()) <= want * math.sqrt(3)  # uniform: bound = std·√3
    for name in ("embed", "unembed"):
        assert abs(float(p[name].std()) * math.sqrt(D) - 1) < 0.01 and abs(float(p[name].mean())) < 0.01 / math.sqrt(D)
    ref = jax.nn.initializers.variance_scaling(1.0, "fan_in", "normal", out_axis=0)(jax.random.PRNGKey(2), (1000, D))
    assert abs(float(ref.std()) * math.sqrt(D) - 1) < 0.01  # the authors' embedding rule is N(0, 1/D) on [V, D]


def test_causality(params):
    """Changing token t never changes the logits at positions < t."""
    x = tokens()
    base = model.forward(params, x, SMALL)
    for t in (0, 5, 31):
        y = x.at[:, t].set((x[:, t] + 1) % SMALL.vocab_size)
        out = model.forward(params, y, SMALL)
        np.testing.assert_array_equal(out[:, :t], base[:, :t])
        assert float(jnp.abs(out[:, t] - base[:, t]).max()) > 1e-4  # and it does change position t


def test_logits_and_loss_at_init_against_their_closed_form():
    """After the final RMSNorm |h|² = D, and the output embedding is N(0, 1/D), so each logit h·w_v is
    N(0, 1), independent across v: logits std 1, E[logsumexp] = ln(V·E[e^z]) = ln V + 1/2 (to O(1/V)),
    and the loss ln V + 1/2 minus the mean target logit (mean 0, std 1/√positions)."""
    cfg = model.Config(d_model=128, n_layers=2, seq_len=64, head_dim=64)
    p = model.init(cfg, jax.random.PRNGKey(0))
    x = jax.random.randint(jax.random.PRNGKey(1), (4, 64), 0, cfg.vocab_size)
    logits = model.forward(p, x, cfg)  # [4, 64, V]
    assert abs(float(logits.std()) - 1) < 0.01  # 13M logits, but only 256 h vectors: the std is ~0.2% noisy
    lse = jax.nn.logsumexp(logits[:, :-1], -1)
    assert abs(float(lse.mean()) - (math.log(50257) + 0.5)) < 0.01
    loss, n = float(model.loss_fn(p, x, cfg)), 4 * 63
    assert abs(loss - (math.log(50257) + 0.5)) < 4 / math.sqrt(n)


def test_loss_matches_numpy_cross_entropy_and_skips_last_position(params):
    x = tokens()
    logits = np.asarray(model.forward(params, x, SMALL), np.float64)[:, :-1]
    tgt = np.asarray(x)[:, 1:]
    lse = np.log(np.exp(logits - logits.max(-1, keepdims=True)).sum(-1)) + logits.max(-1)
    ref = (lse - np.take_along_axis(logits, tgt[..., None], -1)[..., 0]).mean()
    np.testing.assert_allclose(float(model.loss_fn(params, x, SMALL)), ref, rtol=1e-6)
    # z-loss adds exactly z * mean(lse^2)
    zcfg = model.Config(**{**SMALL.__dict__, "z_loss": 1e-4})
    np.testing.assert_allclose(float(model.loss_fn(params, x, zcfg)), ref + 1e-4 * (lse**2).mean(), rtol=1e-6)


def test_attention_matches_a_naive_reference(params):
    """One block against a loop-free numpy re-implementation of the paper's block (qk-norm, RoPE)."""
    p = jax.tree.map(lambda w: np.asarray(w[0], np.float64), params["blocks"])
    x = np.asarray(jax.random.normal(jax.random.PRNGKey(3), (1, 8, 64)), np.float64)
    rms = lambda v: v / np.sqrt((v**2).mean(-1, keepdims=True) + 1e-6)

    def rope(v):  # rotate pairs (i, i + H/2) by angle pos * base^(-i/(H/2))
        H = v.shape[-1]
        ang = np.arange(8)[:, None] * 10000.0 ** (-np.arange(H // 2) / (H // 2))
        c, s = np.cos(ang)[None, :, None], np.sin(ang)[None, :, None]
        return np.concatenate([v[..., :H // 2] * c - v[..., H // 2:] * s, v[..., H // 2:] * c + v[..., :H // 2] * s], -1)

    h = rms(x)
    q, k, v = (rope(rms(np.einsum("btd,dnh->btnh", h, p[n]))) if n != "v" else np.einsum("btd,dnh->btnh", h, p[n])
               for n in "qkv")
    s = np.einsum("bqnh,bknh->bnqk", q, k) / math.sqrt(16) + np.triu(np.full((8, 8), -np.inf), 1)
    a = np.exp(s - s.max(-1, keepdims=True))
    a = np.einsum("bnqk,bknh->bqnh", a / a.sum(-1, keepdims=True), v)
    y = x + np.einsum("btnh,nhd->btd", a, p["o"])
    g = rms(y) @ p["up"]
    ref = y + 0.5 * g * (1 + np.tanh(math.sqrt(2 / math.pi) * (g + 0.044715 * g**3))) @ p["down"]
    out, _, _ = model.block(SMALL, jnp.asarray(x, jnp.float32), jax.tree.map(lambda w: jnp.asarray(w, jnp.float32), p),
                         jnp.arange(8), None)
    np.testing.assert_allclose(np.asarray(out), ref, rtol=2e-4, atol=2e-5)


def test_gradient_matches_finite_differences(monkeypatch):
    """jax.grad of the loss against central differences in float64 along random directions.

    jax.nn.dot_product_attention does its softmax in fp32 even under x64, which would swamp the
    difference quotient, so attention is swapped for a plain float64 softmax attention here."""
    def attention(q, k, v, is_causal=False, mask=None):
        s = jnp.einsum("bqnh,bknh->bnqk", q, k) / math.sqrt(q.shape[-1])
        s = jnp.where(jnp.tril(jnp.ones((q.shape[1],) * 2, bool)) if is_causal else mask, s, -jnp.inf)
        return jnp.einsum("bnqk,bknh->bqnh", jax.nn.softmax(s, -1), v)

    monkeypatch.setattr(jax.nn, "dot_product_attention", attention)
    with jax.enable_x64(True):
        cfg = model.Config(d_model=32, n_layers=1, seq_len=8, vocab_size=31, head_dim=16, param_dtype="float64",
                           compute_dtype="float64")
        p = model.init(cfg, jax.random.PRNGKey(0))
        x = jax.random.randint(jax.random.PRNGKey(1), (2, 8), 0, 31)
        f = lambda q: model.loss_fn(q, x, cfg)
        g = jax.grad(f)(p)
        eps = 1e-6  # truncation O(eps^2) ~ 1e-12, rounding ~ 1e-16 / eps = 1e-10
        for i in range(3):
            d = jax.tree.map(lambda w, k=jax.random.PRNGKey(10 + i): jax.random.normal(k, w.shape, w.dtype), p)
            fd = (f(jax.tree.map(lambda w, u: w + eps * u, p, d)) - f(jax.tree.map(lambda w, u: w - eps * u, p, d))) / (2 * eps)
            an = sum(jnp.vdot(a, b) for a, b in zip(jax.tree.leaves(g), jax.tree.leaves(d)))
            np.testing.assert_allclose(float(an), float(fd), rtol=1e-7)


def test_remat_unroll_and_bf16_compute_agree_with_fp32(params):
    x = tokens()
    g = jax.grad(model.loss_fn)(params, x, SMALL)
    for change in ({"remat": True}, {"unroll": True}, {"remat": True, "unroll": True}):
        g2 = jax.grad(model.loss_fn)(params, x, model.Config(**{**SMALL.__dict__, **change}))
        for a, b in zip(jax.tree.leaves(g), jax.tree.leaves(g2)):  # the same math, fp32 reassociation only
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)
    bf = model.Config(**{**SMALL.__dict__, "compute_dtype": "bfloat16"})
    # bf16 has an 8-bit mantissa (relative error 2^-9 per op): the loss agrees to ~1%
    np.testing.assert_allclose(float(model.loss_fn(params, x, bf)), float(model.loss_fn(params, x, SMALL)), rtol=1e-2)


def test_kv_cache_decoding_equals_full_forward(params):
    x = tokens(B=2, T=20)
    full = model.forward(params, x, SMALL)
    cache = model.init_cache(SMALL, 2, 32)
    l1, cache = model.forward(params, x[:, :12], SMALL, cache=cache, start=0)
    steps = [l1]
    for t in range(12, 20):
        lt, cache = model.forward(params, x[:, t:t + 1], SMALL, cache=cache, start=t)
        steps.append(lt)
    np.testing.assert_allclose(np.concatenate(steps, 1), full, rtol=1e-5, atol=1e-5)


def test_head_dim_must_divide_width():
    with pytest.raises(ValueError, match="multiple of head_dim"):
        model.Config(d_model=100, head_dim=64)
