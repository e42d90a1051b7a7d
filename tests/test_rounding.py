"""Tests for rounding.py against an independent numpy reference computed on bit patterns.

Outputs are read back as raw bf16 bits and widened with numpy (bits << 16 viewed as float32), so no XLA
float op (which may flush subnormals on CPU) sits between the function and the check. All randomness
uses fixed keys, so the tests are deterministic; the tolerances say why a correct implementation passes
for any key (5 standard errors: a two-sided miss has probability < 6e-7 per checked quantity).
"""
import functools
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from rounding import demo, nearest_round, noise16, round_leaf, round_tree, step_key, stochastic_round  # noqa: E402

BF16_MAX = 0x7F7F0000  # fp32 bit pattern of the largest finite bf16
F32_MAX = 0x7F7FFFFF


def f32(bits):
    return np.asarray(bits, np.uint32).view(np.float32)


def bf16_bits(y):
    """Raw uint16 patterns of a bf16 jax array."""
    y = np.asarray(y)
    assert y.dtype == ml_dtypes.bfloat16
    return y.view(np.uint16)


def widen(b16):
    """bf16 bit patterns -> exact float64 values, through numpy only."""
    return (np.asarray(b16, np.uint32) << 16).view(np.float32).astype(np.float64)


def neighbours(x):
    """Lower (toward zero) and upper (away from zero) bf16 neighbours of fp32 x, as bf16 bit patterns.

    Lower: truncate the fp32 bit pattern. Upper: ml_dtypes' nextafter away from zero, an independent
    bf16 implementation."""
    lo = (np.asarray(x, np.float32).view(np.uint32) >> 16).astype(np.uint16)
    lo_bf = lo.view(ml_dtypes.bfloat16)
    away = np.where(np.signbit(x), -np.inf, np.inf).astype(ml_dtypes.bfloat16)
    hi = np.nextafter(lo_bf, away).view(np.uint16)
    return lo, hi


def sample_values():
    """Values over many binades, both signs, subnormals and values below the smallest bf16 subnormal."""
    rng = np.random.default_rng(0)
    normal = rng.uniform(1, 2, 40) * 2.0 ** rng.integers(-30, 30, 40) * rng.choice([-1, 1], 40)
    sub = f32([0x00012345, 0x8003ABCD, 0x00003456, 0x80000001, 0x007FFFFF, 0x0000C000])
    exact = f32([0x3F800000, 0xC0490000])  # 1.0 and -3.140625: already bf16
    return np.concatenate([normal.astype(np.float32), sub, exact])


def test_noise_is_uniform_and_independent():
    """noise16 is a hash, not threefry, so check what rounding relies on: 16 uniform bits per element,
    independent of the neighbouring elements (in a row, across rows) and of the previous step. Bounds are
    5 standard errors: chi-square with 255 degrees of freedom has mean 255 and sd sqrt(510) ≈ 22.6; a
    correlation of n independent pairs has sd 1 / sqrt(n)."""
    a = np.asarray(noise16(step_key(0, 1), (1024, 1024)), np.int64)  # [rows, cols], 2^20 draws
    b = np.asarray(noise16(step_key(0, 2), (1024, 1024)), np.int64)  # next step
    assert a.dtype == np.int64 and a.min() >= 0 and a.max() < 2 ** 16
    chi2 = lambda counts: ((counts - counts.mean()) ** 2 / counts.mean()).sum()
    for v in (a >> 8, a & 255):  # top and bottom byte uniform
        assert chi2(np.bincount(v.ravel(), minlength=256)) < 255 + 5 * np.sqrt(510)
    for u, v in ((a[:, :-1], a[:, 1:]), (a[:-1], a[1:]), (a, b)):  # joint top nibbles: 256 cells
        assert chi2(np.bincount(((u >> 12) * 16 + (v >> 12)).ravel(), minlength=256)) < 255 + 5 * np.sqrt(510)
        assert abs(np.corrcoef(u.ravel(), v.ravel())[0, 1]) < 5 / np.sqrt(u.size)
    bits = (a.ravel()[:, None] >> np.arange(16)) & 1  # [n, 16]: every bit is a fair coin
    assert np.all(np.abs(bits.mean(0) - 0.5) < 5 * 0.5 / np.sqrt(a.size))
    # every leaf shape works; a 1-d leaf equals its own row-major flat index hash, whatever its length
    assert noise16(step_key(0, 1), ()).shape == () and noise16(step_key(0, 1), (2, 3, 4)).shape == (2, 3, 4)
    np.testing.assert_array_equal(noise16(step_key(0, 1), (5,)), noise16(step_key(0, 1), (9,))[:5])


def test_unbiased_and_two_neighbours():
    x = sample_values()  # [K]
    S = 8192
    y = bf16_bits(stochastic_round(jnp.broadcast_to(x, (S, x.size)), jax.random.key(1)))  # [S, K]
    lo, hi = neighbours(x)
    # every output is one of the two neighbours
    assert np.all((y == lo) | (y == hi))
    xv = x.astype(np.float64)
    lov, hiv = widen(lo), widen(hi)
    spacing = np.abs(hiv - lov)
    # mean: one sample is lo or hi, so its std is spacing*sqrt(p(1-p)) <= spacing/2; mean of S has <= that/sqrt(S)
    mean = widen(y).mean(axis=0)
    assert np.all(np.abs(mean - xv) <= 5 * spacing / (2 * np.sqrt(S))), np.abs(mean - xv) / spacing
    # P(up) = fractional distance, Binomial(S, p) frequency; the floor of 1/S covers p near 0 or 1
    p = (xv - lov) / (hiv - lov)
    freq = (y == hi).mean(axis=0)
    assert np.all(np.abs(freq - p) <= 5 * np.sqrt(p * (1 - p) / S) + 1 / S)
    # sanity of the reference itself: p in [0, 1), and exact inputs have p == 0 (so all outputs are x)
    assert np.all((p >= 0) & (p < 1))
    assert np.all(y[:, -2:] == lo[-2:])


def test_exact_bf16_unchanged():
    """Every finite bf16 value is returned as itself, whatever the noise."""
    b = np.arange(0, 1 << 16, dtype=np.uint32)
    b = b[(b & 0x7F80) != 0x7F80]  # drop inf / NaN patterns: finite values only, both signs, subnormals
    x = f32(b << 16)
    for i in range(4):
        y = bf16_bits(stochastic_round(x, jax.random.key(i)))
        np.testing.assert_array_equal(y, b.astype(np.uint16))


def test_special_values():
    x = f32([0x00000000, 0x80000000, 0x7F800000, 0xFF800000])  # +0, -0, +inf, -inf
    S = 4096
    y = bf16_bits(stochastic_round(jnp.broadcast_to(x, (S, 4)), jax.random.key(2)))
    np.testing.assert_array_equal(y, np.broadcast_to([0x0000, 0x8000, 0x7F80, 0xFF80], (S, 4)))


def test_nan_stays_nan():
    # quiet NaN, NaNs with payload only in the low 16 bits (would be cleared to inf), all-ones payload
    # (would carry into the sign bit and wrap to -0), and negative versions
    nan = f32([0x7FC00000, 0x7F800001, 0x7F80FFFF, 0x7FFFFFFF, 0xFF800001, 0xFFFFFFFF])
    y = np.asarray(stochastic_round(jnp.broadcast_to(nan, (4096, nan.size)), jax.random.key(3)))
    assert np.all(np.isnan(y.astype(np.float32)))


def test_bf16_max_never_overflows():
    """Finite x <= bf16 max never becomes inf; just above it, inf comes with the proportional probability."""
    x = f32([BF16_MAX, BF16_MAX - 1, BF16_MAX - 0x8000, BF16_MAX | 0x80000000])
    y = bf16_bits(stochastic_round(jnp.broadcast_to(x, (20000, 4)), jax.random.key(4)))
    assert not np.any((y & 0x7FFF) == 0x7F80)
    # in (bf16 max, fp32 max], inf stands for 2^128, the next value after max: P(inf) = (x - max) / (2^128 - max)
    S = 20000
    x = f32([BF16_MAX + 0x8000, F32_MAX, F32_MAX | 0x80000000])
    y = bf16_bits(stochastic_round(jnp.broadcast_to(x, (S, 3)), jax.random.key(5)))
    assert np.all((y & 0x7FFF) >= 0x7F7F) and np.all((y & 0x7FFF) <= 0x7F80)  # max or inf, nothing else
    xv, top = x.astype(np.float64), 2.0 ** 128
    p = (np.abs(xv) - widen(0x7F7F)) / (top - widen(0x7F7F))
    freq = ((y & 0x7FFF) == 0x7F80).mean(axis=0)
    assert np.all(np.abs(freq - p) <= 5 * np.sqrt(p * (1 - p) / S) + 1 / S), (freq, p)
    assert np.all((y[:, 2] >> 15) == 1)  # the negative one keeps its sign


def test_other_float_dtypes_and_ints():
    x = jnp.array([1.5, -2.25], jnp.bfloat16)  # exact in bf16 -> unchanged
    np.testing.assert_array_equal(bf16_bits(stochastic_round(x, jax.random.key(0))), bf16_bits(x))
    assert stochastic_round(jnp.float16(0.1), jax.random.key(0)).dtype == jnp.bfloat16
    with pytest.raises(ValueError, match="floating-point"):
        stochastic_round(jnp.arange(3), jax.random.key(0))


def test_nearest_is_round_to_nearest_even():
    """Against a numpy RNE on bit patterns: add 0x7FFF plus the lowest kept bit (ties to even), truncate."""
    rng = np.random.default_rng(1)
    b = rng.integers(0, 0x7F7F8000, 5000, dtype=np.uint32)  # finite, below the overflow threshold
    b = np.concatenate([b, [0x3F808000, 0x3F818000, 0x00018000, 0x7F7F7FFF]]).astype(np.uint32)  # ties
    b = np.concatenate([b, b | 0x80000000])
    ref = ((b + 0x7FFF + ((b >> 16) & 1)) >> 16).astype(np.uint16)
    np.testing.assert_array_equal(bf16_bits(nearest_round(f32(b))), ref)


def test_demo_numbers():
    w = demo(steps=10_000, update=1e-4, n=1000, seed=0)
    # nearest: 1 + 1e-4 is within half a spacing (2^-8) of 1.0, so every step rounds back to exactly 1.0
    assert np.all(np.asarray(w["nearest"]) == 1.0)
    # fp32: independent numpy float32 loop, same sequence of correctly rounded adds -> identical result;
    # each add is rounded to the fp32 grid (839 * 2^-23 per step below 2), so it ends ≈ 2.00017, not 2.0
    ref = np.float32(1.0)
    for _ in range(10_000):
        ref = np.float32(ref + np.float32(1e-4))
    assert np.all(np.asarray(w["fp32"]) == ref) and abs(ref - 2.0) < 1e-3
    # stochastic: w_{t+1} = SR(w_t + u_t), where u_t is 1e-4 rounded to the fp32 grid of w_t's binade
    # (w only grows, from 1 to ≈ 2, so the binade is [1, 2) or [2, 4)). SR is unbiased, so
    # E[w] = 1 + sum E[u_t], and each step adds variance u_t (s_t - u_t), s_t the bf16 spacing 2^-7 or 2^-6.
    u1 = float(np.float32(1.5) + np.float32(1e-4)) - 1.5  # 839 * 2^-23
    u2 = float(np.float32(3.0) + np.float32(1e-4)) - 3.0  # 419 * 2^-22
    mean_lo, mean_hi = 1 + 1e4 * min(u1, u2), 1 + 1e4 * max(u1, u2)
    sd_lo = np.sqrt(1e4 * min(u1, u2) * (2 ** -7 - max(u1, u2)))  # ≈ 0.0878
    sd_hi = np.sqrt(1e4 * max(u1, u2) * (2 ** -6 - min(u1, u2)))  # ≈ 0.1246
    s = np.asarray(w["stochastic"], np.float64)
    assert abs(s[0] - 2.0) <= 5 * sd_hi  # one weight (what `python rounding.py` prints)
    assert mean_lo - 5 * sd_hi / np.sqrt(s.size) <= s.mean() <= mean_hi + 5 * sd_hi / np.sqrt(s.size)
    # the sample std of n (near-normal) draws has standard error ≈ sd / sqrt(2n)
    se_sd = sd_hi / np.sqrt(2 * s.size)
    assert sd_lo - 5 * se_sd <= s.std() <= sd_hi + 5 * se_sd


def tree():
    x = np.float32(1 + 2 ** -9)  # a quarter of the way between bf16 neighbours 1 and 1 + 2^-7
    return {"a": jnp.full((3, 4), x), "b": {"c": jnp.full((500,), x), "d": jnp.full((500,), x)},
            "e": jnp.float32(-x)}


def test_round_tree_structure_jit_and_determinism():
    t = tree()
    f = jax.jit(functools.partial(round_tree, mode="stochastic"))
    k = step_key(0, 7)
    r1, r2 = f(t, k), f(t, k)
    assert jax.tree.structure(r1) == jax.tree.structure(t)
    for a, b, x in zip(jax.tree.leaves(r1), jax.tree.leaves(r2), jax.tree.leaves(t)):
        assert a.dtype == jnp.bfloat16 and a.shape == x.shape
        np.testing.assert_array_equal(bf16_bits(a), bf16_bits(b))  # same key -> same result
        lo, hi = neighbours(np.asarray(x))
        assert np.all((bf16_bits(a) == lo) | (bf16_bits(a) == hi))
    # same as eager
    for a, b in zip(jax.tree.leaves(r1), jax.tree.leaves(round_tree(t, k, "stochastic"))):
        np.testing.assert_array_equal(bf16_bits(a), bf16_bits(b))
    # equal leaves get different noise (fold_in per leaf); 500 draws at p = 1/4 agree by chance w.p. ~ 1e-80
    assert np.any(bf16_bits(r1["b"]["c"]) != bf16_bits(r1["b"]["d"]))
    # a different step gives a different draw
    r3 = f(t, step_key(0, 8))
    assert np.any(bf16_bits(r3["b"]["c"]) != bf16_bits(r1["b"]["c"]))


def test_round_tree_nearest_and_bad_mode():
    t = tree()
    r = round_tree(t, None, "nearest")  # nearest needs no key
    for a, x in zip(jax.tree.leaves(r), jax.tree.leaves(t)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(x).astype(ml_dtypes.bfloat16))
    with pytest.raises(ValueError, match="'stochastic' or 'nearest'"):
        round_tree(t, step_key(0, 0), "floor")


def test_step_key():
    """A pure function of (seed, step): another process (a resumed run) computes the same key."""
    import subprocess
    data = lambda k: np.asarray(jax.random.key_data(k))
    code = "import jax, numpy as np, rounding; print(np.asarray(jax.random.key_data(rounding.step_key(3, 5))).tolist())"
    out = subprocess.run([sys.executable, "-c", code], cwd=Path(__file__).resolve().parents[1], capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    np.testing.assert_array_equal(np.array(eval(out.stdout), dtype=data(step_key(3, 5)).dtype), data(step_key(3, 5)))
    # a traced step inside jit (as in a training loop) gives the same key as a Python int: resume is exact
    np.testing.assert_array_equal(data(jax.jit(lambda s: step_key(3, s))(jnp.int32(5))), data(step_key(3, 5)))
    keys = [data(step_key(3, 5)), data(step_key(3, 6)), data(step_key(4, 5)), data(jax.random.key(3))]
    assert len({k.tobytes() for k in keys}) == 4  # differs by step, by seed, and from the init stream


def test_rows_of_a_stacked_leaf_round_as_in_the_whole_leaf():
    """fused.py rounds layer l of a stacked weight [L, ...] alone, as rows l:l+1 with row0 = l (traced, inside
    a scan over layers); each must get exactly the noise of its rows in the whole leaf, so the fused step's
    bf16 weights are bit for bit the unfused step's."""
    k, x = step_key(0, 3), jnp.asarray(np.random.default_rng(0).normal(size=(5, 3, 4, 6)), jnp.float32)
    whole = bf16_bits(round_leaf(x, k, 2, "stochastic"))
    rows = jax.jit(lambda l: round_leaf(jax.lax.dynamic_slice_in_dim(x, l, 1), k, 2, "stochastic", row0=l))
    for l in range(5):
        np.testing.assert_array_equal(bf16_bits(rows(l)), whole[l:l + 1])
    np.testing.assert_array_equal(noise16(k, (1, 3, 4), 4), noise16(k, (5, 3, 4))[4:])
    assert np.any(np.asarray(noise16(k, (1, 3, 4), 4)) != np.asarray(noise16(k, (1, 3, 4), 3)))  # rows differ
    np.testing.assert_array_equal(bf16_bits(round_leaf(x, k, 2, "stochastic")),
                                  bf16_bits(round_tree([x, x, x], k, "stochastic")[2]))  # leaf i as in a tree


def test_apply_update_is_optax_adamw_added_in_fp32_then_rounded_to_the_stored_dtype():
    """rounding.apply_update, the one function every train step changes weights with: fp32 weights get exactly
    params + optax.adamw's update (1e-6); bf16 weights get that fp32 sum on one of its two bf16 neighbours, up
    with the probability of its fractional position (the count of round-ups is within 5 standard errors of
    the sum of those probabilities), or to the nearest with mode 'nearest'; the state stays fp32."""
    import optax
    import optim
    from rounding import apply_update, step_keys
    lr, b1, b2 = 1e-2, 0.9, 0.99
    opt, ref = optim.adamw(lr, b1, b2), optax.adamw(lr, b1, b2, eps=1e-8, weight_decay=0.0)
    rng = np.random.default_rng(0)
    w = rng.normal(size=(128, 128)).astype(np.float32)  # [16384]
    g = {"w": jnp.asarray(rng.normal(size=w.shape), jnp.float32)}
    u_ref, _ = ref.update(g, ref.init({"w": jnp.asarray(w)}), {"w": jnp.asarray(w)})
    exact = w.astype(np.float64) + np.asarray(u_ref["w"], np.float64)  # fp32 sum, widened
    w32 = {"w": jnp.asarray(w)}
    new, state = apply_update(opt, g, opt.init(w32), w32, step_keys(0, 3), "stochastic")
    np.testing.assert_allclose(np.asarray(new["w"]), exact, rtol=0, atol=1e-6)
    assert all(x.dtype == jnp.float32 for x in jax.tree.leaves(state["m"]))
    p16 = {"w": jnp.asarray(w, jnp.bfloat16)}
    u16, _ = ref.update(g, ref.init(p16), jax.tree.map(lambda x: x.astype(jnp.float32), p16))
    y = np.asarray(p16["w"], np.float32) + np.asarray(u16["w"], np.float32)  # the fp32 sum the step rounds
    trunc = y.view(np.uint32) >> 16 << 16  # the bf16 neighbour towards zero, and the next one away from it
    toward, away = trunc.view(np.float32), (trunc + (1 << 16)).astype(np.uint32).view(np.float32)
    got, _ = apply_update(opt, g, opt.init(p16), p16, step_keys(0, 3), "stochastic")
    x = np.asarray(got["w"], np.float32)
    assert got["w"].dtype == jnp.bfloat16 and np.all((x == toward) | (x == away))
    p_away = (y - toward) / (away - toward)  # the fractional position: the probability of rounding away
    ups = np.sum(x == away)
    assert abs(ups - p_away.sum()) < 5 * np.sqrt(np.sum(p_away * (1 - p_away))), (ups, p_away.sum())
    nearest, _ = apply_update(opt, g, opt.init(p16), p16, step_keys(0, 3), "nearest")
    np.testing.assert_array_equal(np.asarray(nearest["w"], np.float32), y.astype(ml_dtypes.bfloat16).astype(np.float32))
