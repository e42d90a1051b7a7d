"""Tests for toy_momentum.py: exact dynamics without noise, the noise scale, the paper's claim, the figure."""
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # repo root, so plain `pytest` finds the module
import toy_momentum as tm  # noqa: E402

KEY = jax.random.PRNGKey(0)
N = 1000  # seeds in every simulate call: with steps 10 or 100, jit compiles only two programs for the file
# float32 iteration vs float64 reference: ~2 roundings of unit roundoff 6e-8 per step on the scale of the
# path (|z| <= 1), <= 100 steps -> abs. error <= ~1.2e-5 (relative near a zero crossing would be unbounded)
RTOL, ATOL = 3e-5, 2e-5


@pytest.mark.parametrize("lr, steps", [(0.09, 10), (0.012, 100), (0.03, 100)])
def test_sgd_without_noise_is_the_closed_form(lr, steps):
    trajs = tm.simulate(KEY, np.inf, steps, lr, 0.0, seeds=N)  # b = inf: exact gradients
    assert trajs.shape == (N, steps + 1, 2)
    k = np.arange(steps + 1)
    ref = np.stack([-1.0 * (1 - 2 * lr) ** k, 1.0 * (1 - 20 * lr) ** k], -1)  # x_k, y_k of gradient descent
    np.testing.assert_allclose(trajs, np.broadcast_to(ref, trajs.shape), rtol=RTOL, atol=ATOL)  # every seed


def momentum_reference(lr, beta, h, z0, steps):
    """EMA momentum on 0.5·h·z² without the m variable: lr·m_k = z_{k-1} − z_k turns
    z_{k+1} = z_k − lr·(β·m_k + (1−β)·h·z_k) into z_{k+1} = (1 + β − a)·z_k − β·z_{k−1},
    a = lr·(1−β)·h, and m_0 = 0 gives z_1 = (1 − a)·z_0."""
    a = lr * (1 - beta) * h
    z = [z0, (1 - a) * z0]
    for _ in range(steps - 1):
        z.append((1 + beta - a) * z[-1] - beta * z[-2])
    return np.array(z[: steps + 1])


@pytest.mark.parametrize("lr, beta, steps", [(0.12, 0.4, 10), (0.012, 0.4, 100), (0.05, 0.9, 100)])
def test_momentum_without_noise_is_the_second_order_recurrence(lr, beta, steps):
    trajs = tm.simulate(KEY, np.inf, steps, lr, beta, seeds=N)
    ref = np.stack([momentum_reference(lr, beta, 2.0, -1.0, steps),  # x: f = x² -> h = 2
                    momentum_reference(lr, beta, 20.0, 1.0, steps)], -1)  # y: 10·y² -> h = 20
    np.testing.assert_allclose(trajs, np.broadcast_to(ref, trajs.shape), rtol=RTOL, atol=ATOL)
    # the recurrence is a real check: with beta = 0.4 the y path differs from SGD's by far more than RTOL
    assert np.abs(ref[2, 1] - (1 - 20 * lr) ** 2).max() > 1e-3


@pytest.mark.parametrize("b", [25.0, 1.0, 0.09])
def test_noise_has_std_norm_g_over_sqrt_b(b):
    n = 200_000
    p = jnp.tile(jnp.array([[-1.0, 1.0], [0.3, -0.2], [2.0, 0.0], [0.0, -0.5]]), (n // 4, 1))  # [n, 2]
    g = np.asarray(p) * np.array([2.0, 20.0])  # exact gradient of x² + 10·y²
    z = (np.asarray(tm.noisy_grad(KEY, p, b)) - g) / np.linalg.norm(g, axis=-1, keepdims=True)  # [n, 2] ~ N(0, I/b)
    sigma = 1 / np.sqrt(b)
    # 5 standard errors: SE(mean) = σ/√n, SE(std) ≈ σ/√(2n), SE(correlation) ≈ 1/√n
    np.testing.assert_allclose(z.mean(0), 0, atol=5 * sigma / np.sqrt(n))
    np.testing.assert_allclose(z.std(0), sigma, atol=5 * sigma / np.sqrt(2 * n))
    assert abs(np.corrcoef(z.T)[0, 1]) < 5 / np.sqrt(n)  # independent coordinates


def test_simulate_first_step_has_the_stated_noise():
    """The noise inside simulate, read off the first SGD step: (x0 − p1)/lr = g + |g|·ε/√b."""
    b, lr = 25.0, 0.09
    p1 = np.concatenate([tm.simulate(k, b, 10, lr, 0.0, seeds=N)[:, 1] for k in jax.random.split(KEY, 20)])
    n = len(p1)  # 20 keys x 1000 seeds = 20000 first steps
    g = np.array([-2.0, 20.0])  # ∇f at (−1, 1)
    z = ((np.array([-1.0, 1.0]) - p1) / lr - g) / np.linalg.norm(g)
    np.testing.assert_allclose(z.std(0), 1 / np.sqrt(b), atol=5 / np.sqrt(b) / np.sqrt(2 * n))  # 5 SE
    np.testing.assert_allclose(z.mean(0), 0, atol=5 / np.sqrt(b) / np.sqrt(n))


def test_median_ci_covers_the_true_median_95_percent():
    rng = np.random.default_rng(0)
    trials, n = 2000, 1000
    f = rng.lognormal(0.0, 2.0, (trials, n))  # heavy right tail like the final losses; true median 1
    traj = np.zeros((n, 1, 2))
    cover = 0
    for row in f:
        traj[:, 0, 0] = np.sqrt(row)  # loss = x² + 10·0² = row
        lo, hi = tm.final_loss_stats(traj)["ci"]
        cover += lo <= 1.0 <= hi
    # binomial SE of the coverage over 2000 trials is √(.95·.05/2000) ≈ 0.005: allow 4 SE
    assert abs(cover / trials - 0.95) < 0.02


@pytest.fixture(scope="module")
def paper_stats():
    """The four panels of Fig. 10 with the paper's knobs, 1000 seeds, one fixed key."""
    setts = [(25, 10, 0.09, 0.0), (25, 10, 0.12, 0.4), (0.09, 100, 0.012, 0.0), (0.09, 100, 0.012, 0.4)]
    return [tm.final_loss_stats(tm.simulate(KEY, *s, seeds=N)) for s in setts]


def test_momentum_helps_at_large_batch(paper_stats):
    sgd, mom = paper_stats[0], paper_stats[1]
    # "clearly": the 95% CIs of the two medians are disjoint, and the gap is > 5x (measured ~12x)
    assert mom["ci"][1] < sgd["ci"][0]
    assert mom["median"] < sgd["median"] / 5


def test_momentum_does_not_help_at_small_batch(paper_stats):
    sgd_l, mom_l, sgd, mom = paper_stats
    # "within noise": the 95% CIs of the two medians overlap (measured: medians 8.2e-3 vs 1.23e-2, each CI
    # spans about ×/÷1.4 around its median)
    assert mom["ci"][0] <= sgd["ci"][1] and sgd["ci"][0] <= mom["ci"][1]
    # and momentum gains nothing: it is not clearly better (median not below SGD's CI) ...
    assert mom["median"] >= sgd["ci"][0]
    # ... and the small-batch difference is small next to the large-batch effect (log ratio 0.4 vs 2.5)
    small, large = abs(np.log(mom["median"] / sgd["median"])), abs(np.log(mom_l["median"] / sgd_l["median"]))
    assert small < large / 3


def test_claim_survives_lr_tuning():
    """Best median over a log grid of LRs per setting (the --sweep_lr path)."""
    class A:  # the four settings as main builds them from its flags
        b_large, b_small, steps_large, steps_small, beta = 25.0, 0.09, 10, 100, 0.4
        lr_large_sgd = lr_large_mom = lr_small_sgd = lr_small_mom = 0.0  # unused by the sweep
    rows = tm.sweep_lr(KEY, tm.settings(A), N, np.geomspace(1e-3, 0.3, 16))
    (_, _, _, sgd_l, e0), (_, _, _, mom_l, e1), (_, _, _, sgd_s, e2), (_, _, _, mom_s, e3) = rows
    assert not any((e0, e1, e2, e3))  # every optimum is inside the grid
    assert mom_l < sgd_l / 3  # tuned momentum still clearly wins at large batch (measured ~6x)
    # tuned at small batch: the two stay within the run-to-run spread of a 1000-seed median, which is
    # 1.78x (max/min of SGD's median over 20 keys, python toy_momentum.py --keys 20); bound it by 2x
    assert 1 / 2 < mom_s / sgd_s < 2  # measured 1.5


def test_main_writes_figure_and_table(tmp_path, capsys):
    out = tmp_path / "sub" / "toy.png"  # directory does not exist yet
    tm.main(["--out", str(out), "--seeds", str(N), "--sweep_lr", "--lr_grid", "0.01", "0.2", "4"])
    data = out.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 20_000  # a real 2x2 plot is ~100 kB
    assert list(out.parent.iterdir()) == [out]  # no temp file left behind
    text = capsys.readouterr().out
    assert f"figure: {out}" in text
    for name in ("large batch, SGD ", "large batch, SGD + momentum", "small batch, SGD ", "best lr"):
        assert name in text


@pytest.mark.parametrize("kwargs", [dict(b=0.0), dict(lr=-0.1), dict(beta=1.0), dict(steps=0), dict(seeds=2.5)])
def test_bad_input_raises(kwargs):
    args = dict(key=KEY, b=1.0, steps=5, lr=0.1, beta=0.0, seeds=4) | kwargs
    with pytest.raises(ValueError):
        tm.simulate(**args)


def test_bad_output_path_raises(tmp_path):
    with pytest.raises(ValueError, match="png"):
        tm.main(["--out", str(tmp_path / "fig.pdf"), "--seeds", "10"])
