"""Tests for the bf16 training path: step.make_train_step with param_dtype='bfloat16' computes each update in
fp32 from bf16 weights and fp32 optimizer state, then rounds back to bf16 (stochastically or to nearest) with
a key that is a pure function of (seed, step) (rounding.py; paper.md "Stochastic rounding").

A 1-layer D=32 model on synthetic tokens drawn uniformly from 16 of 256 ids: the initial loss is ≈ ln 256 =
5.55 and the best achievable is ln 16 = 2.77, so a working optimizer shows a large drop within 50 steps.
Each compiled step is cached and shared between tests (compiling dominates the run time on 2 cores).
Run: `python -m pytest -q tests/test_bf16_training.py`.
"""
from functools import lru_cache, partial
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
import pytest

import config
import model
import optim
import sharding
import step

B, T, V = 4, 16, 256
SHAPE = dict(d_model=32, n_layers=1, seq_len=T, vocab_size=V, head_dim=16)
# Constant LRs that learn the 16-token unigram within 50 steps (Adafactor's is relative to RMS(param)).
# AdamW's ±3e-4 steps are below half the bf16 spacing of every weight |w| >= 0.125 (2^-3·2^-8 = 4.9e-4),
# 36% of the weights at init: round-to-nearest discards those updates outright, stochastic rounding keeps
# them on average. One small LR for all AdamW tests keeps the compiles (most of this file's time) at six.
LR = {"sgd": 1.0, "adamw": 3e-4, "adafactor": 3e-2}


class Case(NamedTuple):
    step: Callable  # the compiled step.make_train_step
    params: dict  # initial weights and optimizer state, host numpy trees (the step donates its inputs)
    state: dict
    args: tuple  # make_train_step's (cfg, model config, optimizer, shardings)


def batches(n, seed=0):
    rng = np.random.default_rng(seed)
    ids = rng.choice(V, 16, replace=False)
    return [rng.choice(ids, (B, T)).astype(np.int32) for _ in range(n)]  # [B, T] each


@lru_cache(maxsize=None)
def init_fp32():
    """Initial fp32 weights; model.init draws in fp32 and casts, so its bf16 init is their RNE cast."""
    return jax.device_get(jax.jit(partial(model.init, model.Config(**SHAPE)))(jax.random.PRNGKey(0)))


def case(optimizer, param_dtype="bfloat16", rounding="stochastic", seed=0):
    """The train step of this optimizer, dtype, rounding and seed; the same init for all (the seed changes only
    the rounding noise). b1 0.9, so SGD and Adafactor keep an fp32 momentum too."""
    return _case(optimizer, param_dtype, rounding, seed)  # one cache key however the arguments are spelled


@lru_cache(maxsize=None)
def _case(optimizer, param_dtype, rounding, seed):
    cfg = dict(config.DEFAULTS, seed=seed, rounding=rounding, optimizer=optimizer)
    mcfg = model.Config(**SHAPE, param_dtype=param_dtype)
    opt = optim.build(optimizer, optim.constant(LR[optimizer]), 0.9, 0.99)
    params = jax.tree.map(lambda x: x.astype(jnp.dtype(param_dtype)), init_fp32())
    state = jax.device_get(opt.init(params))
    shard = sharding.shardings(params, state, sharding.make_mesh(cfg))  # one device here: all replicated
    return Case(step.make_train_step(cfg, mcfg, opt, shard), params, state, (cfg, mcfg, opt, shard))


def run(c, data, start=0, params=None, state=None):
    """Steps start, start+1, ... of case c on fresh copies of (params, state), the initial ones by default.
    Returns the final (params, state) as host trees, and the losses."""
    shard = c.args[3]  # inputs placed as the step returns them: its first and later calls share one compile
    params = jax.device_put(c.params if params is None else params, shard["params"])
    state = jax.device_put(c.state if state is None else state, shard["opt"])
    losses = []
    for i, batch in enumerate(data, start):
        params, state, loss = c.step(params, state, batch, np.int32(i))
        losses.append(loss)
    return jax.device_get(params), jax.device_get(state), np.asarray(jax.device_get(losses))


def same_bits(a, b):
    """Bitwise equality of two trees of arrays (bf16 as uint16, fp32 and int32 as uint32)."""
    view = lambda x: np.asarray(x).view(np.uint16 if x.dtype == ml_dtypes.bfloat16 else np.uint32)
    return all(np.array_equal(view(x), view(y)) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True))


@pytest.mark.parametrize("optimizer", list(LR))
def test_bf16_sr_step_keeps_dtypes_and_learns(optimizer):
    params, state, losses = run(case(optimizer), batches(50))
    assert all(x.dtype == jnp.bfloat16 for x in jax.tree.leaves(params))
    assert state["step"].dtype == np.int32 and state["step"] == 50
    moments = [x for k, v in state.items() if k != "step" for x in jax.tree.leaves(v)]
    assert moments and all(x.dtype == np.float32 for x in moments)  # fp32 state even with bf16 params
    # a frozen model stays at ln 256 = 5.55; the smallest measured drop of the last-10-step mean is 0.72
    # (AdamW at its small LR; SGD and Adafactor drop 2.6), so 0.5 separates learning from stalling
    first, last = losses[0], losses[-10:].mean()
    assert first > 5.0 and last < first - 0.5, (first, last)


def test_bf16_sr_tracks_fp32_where_nearest_stalls():
    """The same AdamW run (same init up to the bf16 cast, same batches) in fp32, bf16 + stochastic rounding,
    bf16 + nearest. SR adds zero-mean noise of at most one bf16 spacing (2^-8 to 2^-7 of |w|) per weight per step,
    which moves the loss far less than the 0.02 allowed (measured: 5e-4). Nearest drops the updates of the
    larger weights and learns visibly less: measured 4.84 (fp32), 4.84 (SR), 5.08 (nearest) from 5.55."""
    last = {k: run(case("adamw", *k), batches(50))[2][-10:].mean()
            for k in [("float32", "nearest"), ("bfloat16", "stochastic"), ("bfloat16", "nearest")]}
    fp32, sr, rn = last.values()
    assert abs(sr - fp32) < 0.02 and rn > fp32 + 0.1, last


def test_same_seed_is_bitwise_identical_and_resumes_exactly():
    c, data = case("adamw"), batches(6)
    a, b = run(c, data), run(c, data)
    assert same_bits(a, b)
    # stop after 3 steps keeping only host copies (as a checkpoint does), continue from step 3: the same run
    p3, s3, _ = run(c, data[:3])
    assert same_bits(a[:2], run(c, data[3:], 3, p3, s3)[:2])
    # the noise depends on the step and on the seed: another (seed, step) gives other weights
    one = run(c, data[:1])[0]
    assert not same_bits(one, run(c, data[:1], start=1)[0])
    assert not same_bits(one, run(case("adamw", seed=1), data[:1])[0])


def test_stochastic_step_differs_from_nearest_as_predicted():
    """One AdamW step from the same weights, state and batch. Reference: the fp32 target x = p + Δp from
    opt.update outside the train step, and its two bf16 neighbours lo <= |x| <= hi from the bit pattern."""
    c, batch = case("adamw"), batches(1)[0]
    flat = lambda tree: np.concatenate([np.asarray(x, np.float64).ravel() for x in jax.tree.leaves(tree)])
    sr = flat(run(c, [batch])[0])
    rn = flat(run(case("adamw", rounding="nearest"), [batch])[0])

    _, mcfg, opt, _ = c.args
    grad = jax.grad(partial(model.loss_fn, cfg=mcfg))
    updates = jax.jit(  # jitted: eager op-by-op compiles take twice as long
        lambda p, s, b: opt.update(grad(p, b), s, p)[0])(c.params, c.state, batch)
    p32 = np.concatenate([np.asarray(p, np.float32).ravel() for p in jax.tree.leaves(c.params)])
    x = p32 + np.concatenate([np.asarray(u).ravel() for u in jax.tree.leaves(updates)])  # fp32 targets
    mag = np.abs(x).view(np.uint32)
    lo = (mag & 0xFFFF0000).view(np.float32).astype(np.float64)  # bf16 magnitude at or below |x|
    hi = (mag & 0xFFFF0000).astype(np.uint64) + 0x10000
    spacing = hi.astype(np.uint32).view(np.float32).astype(np.float64) - lo
    p_up = (np.abs(x) - lo) / spacing  # stochastic rounding's chance of moving to hi (0 for exact bf16 values)
    # Both results are bf16 values next to x. The tolerance absorbs the fp32 rounding by which XLA's fused
    # update may differ from this eager one: a few ulps of the operands |p| + |Δp| (x may be their small
    # difference), far below the spacing a wrong neighbour would cost.
    tol = 4 * 2.0**-23 * (np.abs(p32) + np.abs(x - p32))
    assert np.all(np.abs(sr - x) <= spacing + tol)
    assert np.all(np.abs(rn - x) <= spacing / 2 + tol)
    # SR differs from nearest exactly where it picks the farther neighbour: probability min(p, 1-p) each,
    # independently. Expected count and its binomial spread from the reference; 5 sigma misses w.p. < 6e-7.
    p_far = np.minimum(p_up, 1 - p_up)
    n_diff, mean, sd = np.sum(sr != rn), p_far.sum(), np.sqrt(np.sum(p_far * (1 - p_far)))
    assert mean > 1000 and abs(n_diff - mean) < 5 * sd, (n_diff, mean, sd)
    # unbiased: the total rounding error sums zero-mean terms of variance (|x|-lo)(hi-|x|)
    z = np.sum(sr - x) / np.sqrt(np.sum((np.abs(x) - lo) * (spacing - np.abs(x) + lo)))
    assert abs(z) < 5, z
