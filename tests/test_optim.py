"""Tests for optim.py: optimizers against optax, the token half-life rule against the paper's numbers,
state sizes against closed forms, and gradient accumulation against a full-batch value_and_grad."""
import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import optim

# fp32 has eps ≈ 1.2e-7; our updates follow optax's equations op for op, so after 20 steps the two differ by
# a few ulps of reassociation at most. 1e-6 relative (to each tensor's scale) is the brief's bound.
RTOL = 1e-6


def random_tree(seed, dtype=jnp.float32):
    """Small pytree with a [128, 256] matrix (factored by Adafactor), a [64, 200] one (not: 64 < 128),
    a stacked [3, 160, 128] weight (factored per layer, like model.py's blocks) and a vector."""
    shapes = {"w": (128, 256), "narrow": (64, 200), "blocks": {"up": (3, 160, 128)}, "vec": (7,)}
    leaves, tree = jax.tree.flatten(shapes, is_leaf=lambda x: isinstance(x, tuple))
    rng = np.random.default_rng(seed)  # numpy, not jax.random: eager jax ops each compile, slow on 2 cores
    return tree.unflatten([jnp.asarray(0.05 * rng.standard_normal(s), dtype) for s in leaves])


def assert_trees_close(a, b, rtol=RTOL):
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
        np.testing.assert_allclose(x, y, rtol=rtol, atol=rtol * np.abs(y).max())


def run_both(ours, ref, steps=20, seed=0):
    """Apply ours and the optax reference to the same random grads for `steps` steps; compare each step."""
    params = random_tree(seed)
    p_ours, p_ref = params, params
    s_ours, s_ref = ours.init(params), ref.init(params)
    # eager, not jitted: op-by-op compiles are cached across tests, cheaper here than one jit per test
    for i in range(steps):
        grads = jax.tree.map(lambda g: (1 + i) * g, random_tree(1000 + i))  # growing norm: 16 at i=0 to 330
        u_ours, s_ours = ours.update(grads, s_ours, p_ours)
        u_ref, s_ref = ref.update(grads, s_ref, p_ref)
        assert all(u.dtype == jnp.float32 for u in jax.tree.leaves(u_ours))
        assert_trees_close(u_ours, u_ref)
        p_ours = jax.tree.map(lambda p, u: p + u, p_ours, u_ours)
        p_ref = optax.apply_updates(p_ref, u_ref)
    assert_trees_close(p_ours, p_ref)
    assert int(s_ours["step"]) == steps


# ---------------------------------------------------------------- half-life rule (paper "The central rule")

def test_half_life_of_gpt3_beta2():
    # β2 = 0.95 at batch 512 × T 1024: t = 524288·ln 0.5/ln 0.95 ≈ 7.08M tokens ("≈ 7.1M")
    t = optim.beta_to_half_life(0.95, 512 * 1024)
    assert t == pytest.approx(512 * 1024 * math.log(0.5) / math.log(0.95), rel=1e-12)
    assert round(t / 1e6, 1) == 7.1
    assert optim.half_life_to_beta(t, 512 * 1024) == pytest.approx(0.95, rel=1e-12)


@pytest.mark.parametrize("bs_from, bs_to, expected", [(512, 1, 0.9999), (16, 1, 0.997)])
def test_fixed_t2_rescales_beta2(bs_from, bs_to, expected):
    T = 1024  # the result is independent of T: β2* = β2^(B*/B)
    t2 = optim.beta_to_half_life(0.95, bs_from * T)
    beta = optim.half_life_to_beta(t2, bs_to * T)
    assert beta == pytest.approx(0.95 ** (bs_to / bs_from), rel=1e-12)
    assert round(beta, len(str(expected)) - 2) == expected  # the paper's quoted digits


TABLE_30M = {1: "0.999965", 4: "0.99986", 16: "0.99943", 64: "0.99773", 256: "0.99096", 1024: "0.96431",
             4096: "0.8647"}


@pytest.mark.parametrize("bs", TABLE_30M)
def test_30m_beta2_table(bs):
    # paper.md: 30M, t2 = 10M tokens, T = 512; match to half a unit of the last printed digit
    printed = TABLE_30M[bs]
    digits = len(printed) - 2
    assert abs(optim.half_life_to_beta(10e6, bs * 512) - float(printed)) <= 0.5 * 10 ** -digits


def test_resolve_betas():
    assert optim.resolve_betas(None, None, None, None, 512) == (0.9, 0.95)
    b1, b2 = optim.resolve_betas(0.8, None, None, 10e6, 4 * 512)
    assert (b1, b2) == (0.8, pytest.approx(0.99986, abs=5e-6)) and type(b2) is float
    b1, _ = optim.resolve_betas(None, None, optim.beta_to_half_life(0.9, 512), None, 512)
    assert b1 == pytest.approx(0.9, rel=1e-12)
    with pytest.raises(ValueError, match="b2.*t2"):
        optim.resolve_betas(None, 0.99, None, 10e6, 512)
    with pytest.raises(ValueError, match="b1.*t1"):
        optim.resolve_betas(0.9, None, 1e6, None, 512)
    with pytest.raises(ValueError):
        optim.resolve_betas(1.0, None, None, None, 512)
    with pytest.raises(ValueError):
        optim.half_life_to_beta(0, 512)
    assert optim.beta_to_half_life(0.0, 512) == 0.0  # no memory: SGD without momentum


# ---------------------------------------------------------------- schedules

def test_warmup_cosine_matches_optax():
    total, peak = 200, 3e-3
    ours = optim.warmup_cosine(peak, total)  # 5% warmup = 10 steps
    ref = optax.warmup_cosine_decay_schedule(0.0, peak, 10, total, 0.0)
    steps = jnp.arange(total + 5)
    np.testing.assert_allclose(jax.vmap(ours)(steps), jax.vmap(ref)(steps), rtol=1e-6, atol=1e-6 * peak)
    assert float(ours(0)) == 0.0 and float(ours(10)) == pytest.approx(peak) and float(ours(total)) == 0.0
    assert float(optim.warmup_cosine(peak, total, warmup_frac=0.0)(0)) == pytest.approx(peak)
    assert float(optim.constant(1e-4)(12345)) == pytest.approx(1e-4)
    with pytest.raises(ValueError):
        optim.warmup_cosine(peak, 0)


# ---------------------------------------------------------------- optimizers vs optax

@pytest.mark.parametrize("wd, clip", [(0.1, 0.0), (0.1, 20.0)])
def test_adamw_matches_optax(wd, clip):
    lr = optim.warmup_cosine(1e-2, 20, 0.2)
    ref = optax.adamw(lr, b1=0.9, b2=0.99, eps=1e-8, weight_decay=wd)
    if clip:  # grad norms grow from 16 to 330 over the 20 steps, so clip=20 is off at step 0, on after
        ref = optax.chain(optax.clip_by_global_norm(clip), ref)
    run_both(optim.adamw(lr, 0.9, 0.99, 1e-8, wd, clip), ref)


@pytest.mark.parametrize("b1, wd, clip", [(0.0, 0.0, 0.0), (0.7, 0.1, 0.0), (0.7, 0.1, 20.0)])
def test_sgd_matches_optax(b1, wd, clip):
    lr = optim.warmup_cosine(0.05, 20, 0.2)
    chain = [optax.clip_by_global_norm(clip)] if clip else []
    chain += [optax.ema(b1, debias=False)] if b1 else []  # EMA momentum m = β1·m + (1−β1)·g
    ref = optax.chain(*chain, optax.add_decayed_weights(wd), optax.scale_by_learning_rate(lr))
    run_both(optim.sgd(lr, b1, wd, clip), ref)


def optax_adafactor(lr, b2, relative_step, clip, b1, wd_times_lr=0.0):
    """optax's Adafactor pieces (the order optax.adafactor chains them) with a constant decay β2."""
    tx = [optax.scale_by_factored_rms(decay_rate=b2, decay_rate_fn=lambda step, rate: jnp.asarray(rate)),
          optax.clip_by_block_rms(clip), optax.scale_by_learning_rate(lr, flip_sign=False)]
    if relative_step:
        tx.append(optax.scale_by_param_block_rms(1e-3))
    if b1:
        tx.append(optax.ema(b1, debias=False))
    return optax.chain(*tx, optax.add_decayed_weights(wd_times_lr), optax.scale(-1.0))


@pytest.mark.parametrize("relative_step, clip, b1", [(False, 1.0, 0.0), (True, 1.0, 0.9), (False, 1e9, 0.0)])
def test_adafactor_matches_optax(relative_step, clip, b1):
    # β2 = 0.99 without bias correction leaves v small for ~100 steps: the unclipped update RMS is 10
    # (= 1/√(1−β2)) at step 0 and stays above 2 for the 20 steps, so clip=1 acts on every step, 1e9 never
    lr = optim.warmup_cosine(1e-2, 20, 0.2)
    ours = optim.adafactor(lr, b2=0.99, clip_threshold=clip, relative_step=relative_step, b1=b1)
    run_both(ours, optax_adafactor(lr, 0.99, relative_step, clip, b1))


def model_like_tree(seed, L=3, D=256, N=2, H=128, F=512, V=160):
    """model.py's layout: stacked blocks [L, ...] whose layers have weight RMS 1 : 2 : 4, and an embedding."""
    rng = np.random.default_rng(seed)
    scale = (2.0 ** np.arange(L)).reshape(L, 1, 1, 1)
    blocks = {k: 0.02 * scale * rng.standard_normal((L, D, N, H)) for k in ("q", "k", "v")}
    blocks["o"] = 0.02 * scale * rng.standard_normal((L, N, H, D))
    blocks["up"] = 0.02 * scale[..., 0] * rng.standard_normal((L, D, F))
    tree = {"blocks": blocks, "embed": 0.05 * rng.standard_normal((V, D))}
    return jax.tree.map(lambda x: jnp.asarray(x, jnp.float32), tree)


def per_layer(tree, l):
    """Layer l as the authors hold it: one q/k/v kernel (stacked on a new leading axis, their [3, ...]),
    o and up of that layer alone."""
    b = tree["blocks"]
    return {"qkv": jnp.stack([b["q"][l], b["k"][l], b["v"][l]]), "o": b["o"][l], "up": b["up"][l]}


@pytest.mark.parametrize("decay", ["power", "fixed"])
def test_adafactor_per_layer_equals_optax_on_each_layer(decay):
    """Adafactor on the stacked tree with per_layer=True equals optax.adafactor run on each layer's weights
    separately (q, k, v as one kernel) and on the embedding: clipping and the parameter-RMS scale are per
    layer. 'power' is the authors' own run (optax.adafactor's decay 1 − (t+1)^(−c)); 'fixed' the same
    optax pieces with a constant β2. Layers with weight RMS 1 : 2 : 4 get update RMS 1 : 2 : 4."""
    L, c, lr, steps = 3, 0.8, 1e-2, 6
    if decay == "power":
        ref_opt = lambda: optax.adafactor(lr, decay_rate=c)
    else:
        ref_opt = lambda: optax_adafactor(lr, 0.99, True, 1.0, 0.0)
    ours = optim.adafactor(lr, b2=c if decay == "power" else 0.99, relative_step=True, per_layer=True, decay=decay)
    params = model_like_tree(0)
    refs = [ref_opt() for _ in range(L + 1)]  # one per layer, and the embedding's
    ref_params = [per_layer(params, l) for l in range(L)] + [{"embed": params["embed"]}]
    ref_state = [o.init(p) for o, p in zip(refs, ref_params)]
    state = ours.init(params)
    for i in range(steps):
        grads = jax.tree.map(lambda g: (1 + i) * g, model_like_tree(100 + i))
        u, state = ours.update(grads, state, params)
        ref_grads = [per_layer(grads, l) for l in range(L)] + [{"embed": grads["embed"]}]
        for l in range(L + 1):
            ru, ref_state[l] = refs[l].update(ref_grads[l], ref_state[l], ref_params[l])
            mine = per_layer(u, l) if l < L else {"embed": u["embed"]}
            assert_trees_close(mine, ru)
            ref_params[l] = optax.apply_updates(ref_params[l], ru)
        params = jax.tree.map(lambda p, d: p + d, params, u)
    rms = [float(jnp.sqrt(jnp.mean(u["blocks"]["up"][l] ** 2))) for l in range(L)]
    np.testing.assert_allclose(np.array(rms) / rms[0], [1, 2, 4], rtol=0.05)


def test_adafactor_per_leaf_clipping_would_differ():
    """The per-layer blocks matter: over the whole stacked leaf (optax's per-leaf blocks) every layer gets
    the same update RMS whatever its weight RMS, not 1 : 2 : 4."""
    params, grads = model_like_tree(0), model_like_tree(1)
    u = optim.adafactor(1e-2, b2=0.99, relative_step=True).update(grads, optim.adafactor(1e-2).init(params), params)[0]
    rms = [float(jnp.sqrt(jnp.mean(u["blocks"]["up"][l] ** 2))) for l in range(3)]
    np.testing.assert_allclose(np.array(rms) / rms[0], [1, 1, 1], rtol=0.05)


def test_adafactor_weight_decay_and_clip_norm_match_optax():
    # decoupled wd multiplied by the LR: with a constant LR that is optax's add_decayed_weights(lr·wd)
    lr, wd = 1e-2, 0.1
    ref = optax.chain(optax.clip_by_global_norm(20.0), optax_adafactor(lr, 0.9, True, 1.0, 0.5, lr * wd))
    run_both(optim.adafactor(lr, b2=0.9, relative_step=True, b1=0.5, weight_decay=wd, clip_norm=20.0), ref)


def test_bf16_params_give_fp32_state_and_updates():
    params, grads = random_tree(0, jnp.bfloat16), random_tree(1, jnp.bfloat16)
    for opt in (optim.sgd(0.1, 0.9), optim.adamw(1e-3), optim.adafactor(1e-3, b1=0.9)):
        updates, state = jax.jit(lambda g, p: opt.update(g, opt.init(p), p))(grads, params)
        assert state["step"].dtype == jnp.int32
        assert all(x.dtype == jnp.float32 for k in state if k != "step" for x in jax.tree.leaves(state[k]))
        assert all(u.dtype == jnp.float32 and np.isfinite(u).all() for u in jax.tree.leaves(updates))


def test_bf16_state_is_optax_adamw_on_the_stored_state_rounded_without_bias():
    """optim.stored(adamw, 'bfloat16'): the state is kept in bf16; each update is optax.adamw's from that state
    read in fp32 (1e-6), and the train step's rounding (rounding.round_like, stochastic) puts each new moment
    on one of its two bf16 neighbours, without bias: over ~5e4 moments the mean rounding error in spacings is
    0 within 4 standard errors (a uniform fraction rounded up with its own probability has sd <= 1/2)."""
    import rounding
    lr, b1, b2 = 1e-3, 0.9, 0.99  # b2 0.999: 1 - b2^t in fp32 loses digits, eager and jitted differ by 1e-5
    opt, ref = optim.stored(optim.adamw(lr, b1, b2), "bfloat16"), optax.adamw(lr, b1, b2, eps=1e-8, weight_decay=0.0)
    params = random_tree(0)
    state = opt.init(params)
    assert all(x.dtype == jnp.bfloat16 for k in ("m", "v") for x in jax.tree.leaves(state[k]))
    errors = []
    for i in range(5):
        grads = random_tree(100 + i)
        u, new = opt.update(grads, state, params)
        f32 = lambda t: jax.tree.map(lambda x: x.astype(jnp.float32), t)
        ref_state = ref.init(params)
        ref_state = (ref_state[0]._replace(count=state["step"], mu=f32(state["m"]), nu=f32(state["v"])), *ref_state[1:])
        u_ref, ref_new = ref.update(grads, ref_state, params)
        assert_trees_close(u, u_ref)
        assert_trees_close((new["m"], new["v"]), (ref_new[0].mu, ref_new[0].nu))
        rounded = rounding.round_like(new, state, rounding.step_key(0, i, state=True), "stochastic")
        for x, y in zip(jax.tree.leaves((rounded["m"], rounded["v"])), jax.tree.leaves((new["m"], new["v"]))):
            x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
            spacing = 2.0 ** (np.floor(np.log2(np.abs(y))) - 7)  # of bf16 (8 significant bits) around y
            err = (x - y) / spacing  # in spacings: x is the bf16 number just below or just above y
            below, above = np.floor(y / spacing) * spacing, np.ceil(y / spacing) * spacing
            assert np.all((x == below) | (x == above)) and np.all(np.abs(err) < 1)
            errors.append(err.ravel())
        params, state = jax.tree.map(lambda p, u: p + u, params, u), rounded
    errors = np.concatenate(errors)
    assert abs(errors.mean()) < 4 * 0.5 / np.sqrt(errors.size), (errors.mean(), errors.size)


def test_hyperparams_fill_the_paper_defaults_and_build_matches_optax():
    """optim.hyperparams: no momentum for SGD and Adafactor, β1 0.9 for Adam, β2 from t2 = 10M tokens when
    neither b2 nor t2 is given (closed form 0.5^(B·T/t2)), the batch-1 LRs; betas from half-lives; and the
    optimizer from_config builds equals optax's AdamW with those settings."""
    import config
    cfg = dict(config.DEFAULTS)
    for name, b1 in (("sgd", 0.0), ("adafactor", 0.0), ("adamw", 0.9)):
        hp = optim.hyperparams(dict(cfg, optimizer=name), 128)
        assert hp == dict(lr=optim.DEFAULT_LR[name], b1=b1, b2=pytest.approx(0.5 ** (128 / 10e6), rel=1e-15))
    hp = optim.hyperparams(dict(cfg, t1=40e3, b2=0.95), 512)
    assert hp["b1"] == pytest.approx(0.5 ** (512 / 40e3), rel=1e-15) and hp["b2"] == 0.95
    with pytest.raises(ValueError, match="give b2 or t2, not both"):
        optim.hyperparams(dict(cfg, b2=0.9, t2=1e6), 128)
    with pytest.raises(ValueError, match="unknown optimizer 'lion'"):
        optim.hyperparams(dict(cfg, optimizer="lion"), 128)
    hp = optim.hyperparams(dict(cfg, weight_decay=0.1), 128)
    opt, sched = optim.from_config(dict(cfg, weight_decay=0.1, warmup=0.2), hp, 20)
    ref = optax.adamw(optax.warmup_cosine_decay_schedule(0, hp["lr"], 4, 20), hp["b1"], hp["b2"], 1e-8, weight_decay=0.1)
    run_both(opt, ref)


# ---------------------------------------------------------------- optimizer state size

def nbytes(init, params):
    state = jax.eval_shape(init, params)
    return sum(x.size * x.dtype.itemsize for k in state if k != "step" for x in jax.tree.leaves(state[k]))


def test_state_sizes():
    params = random_tree(0)
    P = sum(x.size for x in jax.tree.leaves(params))
    state = optim.sgd(0.1).init(params)
    assert list(state) == ["step"] and len(jax.tree.leaves(state)) == 1  # only the int32 step count
    assert optim.state_bytes("sgd", params) == 0
    assert optim.state_bytes("sgd", params, b1=0.9) == 4 * P == nbytes(optim.sgd(0.1, 0.9).init, params)
    assert optim.state_bytes("adamw", params) == 8 * P == nbytes(optim.adamw(1e-3).init, params)
    # Adafactor: [128, 256] -> 128 + 256; [64, 200] full (64 < 128); [3, 160, 128] -> 3·(160 + 128); [7] full
    floats = (128 + 256) + 64 * 200 + 3 * (160 + 128) + 7
    assert optim.state_bytes("adafactor", params) == 4 * floats == nbytes(optim.adafactor(1e-3).init, params)
    assert optim.state_bytes("adafactor", params, b1=0.9) == 4 * (floats + P)


def test_adafactor_state_of_large_matrix_is_rows_plus_cols():
    w = {"w": jax.ShapeDtypeStruct((2048, 8192), jnp.bfloat16)}  # abstract: nothing allocated
    assert optim.state_bytes("adafactor", w) == 4 * (2048 + 8192)
    shapes = jax.eval_shape(optim.adafactor(1e-3).init, w)["v"]["w"]
    assert {k: v.shape for k, v in shapes.items()} == {"r": (2048,), "c": (8192,)}
    assert optim.state_bytes("adamw", w) == 2 * 4 * 2048 * 8192


# ---------------------------------------------------------------- sanity: optimizers reduce a least-squares loss

@pytest.mark.parametrize("name, lr, b1", [("sgd", 0.5, 0.0), ("sgd", 0.5, 0.9), ("adamw", 0.05, 0.9),
                                          ("adafactor", 0.05, 0.0)])
def test_least_squares_loss_decreases(name, lr, b1):
    rng = np.random.default_rng(0)
    X = jnp.asarray(rng.standard_normal((512, 128)), jnp.float32)  # [n, 128]; XᵀX/n eigenvalues ≈ [0.25, 2.25]
    Y = X @ jnp.asarray(rng.standard_normal((128, 128)), jnp.float32)  # [n, 128]
    loss = jax.jit(lambda p: 0.5 * jnp.mean(jnp.sum((X @ p["w"] - Y) ** 2, axis=-1)))
    opt = optim.build(name, optim.warmup_cosine(lr, 300), b1, 0.99, None, 0.0, 0.0, relative_step=False)
    params = {"w": jnp.zeros((128, 128))}  # [128, 128]: factored by Adafactor

    @jax.jit
    def step(params, state):
        updates, state = opt.update(jax.grad(loss)(params), state, params)
        return jax.tree.map(lambda p, u: p + u, params, updates), state
    state, start = opt.init(params), float(loss(params))
    for _ in range(300):
        params, state = step(params, state)
    assert float(loss(params)) < 0.1 * start  # well-tuned runs get far below; 10× is a robust floor


# ---------------------------------------------------------------- Muon and signum

def test_newton_schulz_singular_values_near_one():
    """5 steps of the quintic from Frobenius norm 1, on random matrices of the block shapes (a head's
    D x H of the 30M and tiny models, the MLP's D x F, batched heads): every singular value of the result
    lies in the quintic's band (Jordan et al. 2024: roughly [0.7, 1.2]; measured here 0.68-1.20), and the
    singular vectors are the input's (the iteration is an odd polynomial in X: U·p(S)·Vᵀ). A square
    random matrix can have a singular value too small for 5 steps to lift (0.56 seen at 64 x 64)."""
    rng = np.random.default_rng(0)
    for shape in ((384, 128), (128, 384), (384, 1536), (1536, 384), (128, 64), (64, 128), (2, 3, 384, 128)):
        x = jnp.asarray(rng.standard_normal(shape), jnp.float32)
        y = np.asarray(optim.newton_schulz(x), np.float64).reshape(-1, *shape[-2:])
        for xi, yi in zip(np.asarray(x, np.float64).reshape(-1, *shape[-2:]), y):
            s = np.linalg.svd(yi, compute_uv=False)
            assert 0.65 < s.min() and s.max() < 1.25, (shape, s.min(), s.max())
            u, _, vt = np.linalg.svd(xi, full_matrices=False)
            np.testing.assert_allclose(u.T @ yi @ vt.T, np.diag(np.diag(u.T @ yi @ vt.T)), atol=2e-4)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_muon_on_a_matrix_equals_optax_contrib_muon(dtype):
    """One 2-D block weight: optim.muon equals optax.contrib.muon (same coefficients, β, no Nesterov) over
    steps of a warmup-cosine LR: to 1e-6 in fp64, where only the algorithm could differ. In fp32 the two
    sum their matmuls in another order (optax vmaps the iteration) and 5 steps of a polynomial of slope up
    to 3.4 amplify that: measured 1.0e-6 of the update's norm, so 1e-5 there."""
    rtol = 1e-6 if dtype == "float64" else 1e-5
    with jax.enable_x64(dtype == "float64"):
        lr = optim.warmup_cosine(0.02, 10, 0.2)
        ours = optim.muon(1e-3, lr, muon_b1=0.9)
        ref = optax.contrib.muon(lr, beta=0.9, nesterov=False)
        rng = np.random.default_rng(0)
        params = {"blocks": {"up": jnp.asarray(0.05 * rng.standard_normal((96, 160)), dtype)}}
        s, r = ours.init(params), ref.init(params)
        for i in range(10):
            g = {"blocks": {"up": jnp.asarray((1 + i) * rng.standard_normal((96, 160)), dtype)}}
            u, s = ours.update(g, s, params)
            ru, r = ref.update(g, r, params)
            assert u["blocks"]["up"].dtype == jnp.dtype(dtype)
            a, b = np.asarray(u["blocks"]["up"], np.float64), np.asarray(ru["blocks"]["up"], np.float64)
            assert np.linalg.norm(a - b) <= rtol * np.linalg.norm(b), np.linalg.norm(a - b) / np.linalg.norm(b)
            assert_trees_close(u, ru, rtol=rtol)
            params = optax.apply_updates(params, u)


def test_muon_orthogonalizes_each_layer_and_head_of_the_stacked_leaves():
    """q [L, D, N, H]: the update of layer l, head n is newton_schulz of that D x H matrix alone (times
    √max(1, H/D)); o [L, N, H, D]: of each H x D matrix (times √(D/H)); up [L, D, F] per layer (times
    √(F/D)). The embeddings get exactly AdamW's update with the run's Adam settings."""
    L, D, N, H, F, V = 2, 64, 2, 32, 128, 50
    rng = np.random.default_rng(1)
    shapes = {"embed": (V, D), "unembed": (D, V),
              "blocks": {"q": (L, D, N, H), "o": (L, N, H, D), "up": (L, D, F)}}
    tree = lambda: jax.tree.map(lambda s: jnp.asarray(rng.standard_normal(s), jnp.float32), shapes,
                                is_leaf=lambda s: isinstance(s, tuple))
    params, g = tree(), tree()
    opt = optim.muon(1e-3, 0.02, muon_b1=0.5, b1=0.8, b2=0.99, weight_decay=0.1)
    u, _ = opt.update(g, opt.init(params), params)
    q, o, up = (g["blocks"][k] for k in ("q", "o", "up"))  # the first step's m̂ is g itself
    for l in range(L):
        np.testing.assert_allclose(u["blocks"]["up"][l], -0.02 * math.sqrt(F / D) * optim.newton_schulz(up[l]),
                                   rtol=1e-5, atol=1e-7)
        for n in range(N):
            np.testing.assert_allclose(u["blocks"]["q"][l, :, n, :], -0.02 * optim.newton_schulz(q[l, :, n, :]),
                                       rtol=1e-5, atol=1e-7)
            np.testing.assert_allclose(u["blocks"]["o"][l, n], -0.02 * math.sqrt(D / H) * optim.newton_schulz(o[l, n]),
                                       rtol=1e-5, atol=1e-7)
    emb = {k: params[k] for k in ("embed", "unembed")}
    ref, _ = optax.adamw(1e-3, 0.8, 0.99, 1e-8, weight_decay=0.1).update({k: g[k] for k in emb}, optax.adamw(1e-3).init(emb), emb)
    assert_trees_close({k: u[k] for k in emb}, ref)


def test_muon_momentum_from_its_half_life_and_state_bytes():
    import config
    hp = optim.hyperparams(dict(config.DEFAULTS, optimizer="muon", muon_t1=20_000.0), 512)
    assert hp["muon_b1"] == pytest.approx(0.5 ** (512 / 20_000), rel=1e-15)
    assert hp["muon_lr"] == optim.DEFAULT_MUON_LR and hp["b1"] == 0.9
    params = {"embed": jax.ShapeDtypeStruct((50, 64), jnp.float32), "unembed": jax.ShapeDtypeStruct((64, 50), jnp.float32),
              "blocks": {"up": jax.ShapeDtypeStruct((2, 64, 128), jnp.float32)}}
    assert optim.state_bytes("muon", params) == 4 * 2 * 64 * 128 + 8 * 2 * 50 * 64  # m for blocks; m, v for embeddings
    assert optim.state_bytes("muon", params) == nbytes(optim.muon(1e-3, 0.02).init, params)


@pytest.mark.parametrize("b1", [0.0, 0.9])
def test_signum_matches_optax(b1):
    """Signum: −η·sign(momentum); optax: the sign of a trace (heavy ball) has the same sign as the EMA."""
    lr = optim.warmup_cosine(1e-2, 20, 0.2)
    chain = [optax.trace(decay=b1)] if b1 else []
    run_both(optim.signum(lr, b1), optax.chain(*chain, optax.scale_by_sign(), optax.scale_by_learning_rate(lr)))
