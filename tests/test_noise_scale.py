"""noise_scale.py against closed forms: linear regression with Gaussian noise, where the true gradient and
the per-example gradient covariance are known exactly at any parameters."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import noise_scale

d, sigma = 8, 0.5  # x ~ N(0, I_d), y = x·w* + ε, ε ~ N(0, σ²), loss ½(x·w − y)² per example


def closed_form(delta):
    """δ = w − w*: G = E[x (x·δ − ε)] = δ, so |G|² = |δ|²; Σ = E[g gᵀ] − G Gᵀ = |δ|² I + δ δᵀ + σ² I
    (Gaussian fourth moments: E[x xᵀ A x xᵀ] = A + Aᵀ + tr(A) I), so tr(Σ) = (d + 1)|δ|² + d σ²."""
    n2 = float(delta @ delta)
    return n2, (d + 1) * n2 + d * sigma**2


def loss(w, batch):  # mean over the batch's examples, as the model's loss is a mean over its sequences
    x, y = batch
    return 0.5 * jnp.mean((x @ w - y) ** 2)


def samples(key, n, b, w_star):
    kx, ke = jax.random.split(key)
    x = jax.random.normal(kx, (n, 2, b, d))
    return x, x @ w_star + sigma * jax.random.normal(ke, (n, 2, b))


@pytest.mark.parametrize("b", [1, 4])
def test_two_batch_size_estimates_are_unbiased_and_recover_b_simple(b):
    w_star = jnp.linspace(-1, 1, d)
    w = w_star + 0.3 * jnp.cos(jnp.arange(d))  # any parameters: the closed forms hold everywhere
    G2_true, S_true = closed_form(np.asarray(w - w_star, np.float64))
    n = 20_000
    x, y = samples(jax.random.PRNGKey(0), n, b, w_star)
    small, big = jax.vmap(lambda xb, yb: noise_scale.grad_norms(loss, w, (xb, yb)))(x, y)
    G2, S = noise_scale.estimate(np.asarray(small, np.float64), np.asarray(big, np.float64), b, 2 * b)
    # unbiased: the means of the per-measurement estimates within 4 standard errors of the closed forms
    for est, true in ((G2, G2_true), (S, S_true)):
        assert abs(est.mean() - true) < 4 * est.std() / np.sqrt(n), (est.mean(), true, est.std() / np.sqrt(n))
    # the ratio of EMAs (what train.py logs) recovers B_simple = tr(Σ)/|G|² within 10%
    ema = noise_scale.NoiseScale(decay=0.9999)  # averages over ~all 20k measurements
    for g2, s in zip(G2, S):
        b_simple = ema.update(g2, s)
    assert abs(b_simple / (S_true / G2_true) - 1) < 0.10, (b_simple, S_true / G2_true)


def test_estimate_inverts_the_expectations():
    """E|g_b|² = |G|² + tr(Σ)/b: estimate() applied to exact expectations returns |G|² and tr(Σ) exactly."""
    G2, S = 0.7, 13.0
    for bs, bb in ((1, 2), (4, 8), (3, 12)):
        np.testing.assert_allclose(noise_scale.estimate(G2 + S / bs, G2 + S / bb, bs, bb), (G2, S), rtol=1e-12)


def test_plot_reads_a_runs_metrics(tmp_path):
    import json
    (tmp_path / "config.json").write_text(json.dumps(dict(batch_size=1, seq_len=128)))
    rows = [dict(step=s, tokens=128 * s, b_simple=10.0 + s) for s in (8, 16, 24)] + [dict(step=24, val_loss=3.0)]
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = noise_scale.plot(str(tmp_path))
    assert open(out, "rb").read(8) == b"\x89PNG\r\n\x1a\n"
    (tmp_path / "metrics.jsonl").write_text(json.dumps(dict(step=1, val_loss=3.0)) + "\n")
    with pytest.raises(SystemExit, match="no b_simple rows: train with --noise_every"):
        noise_scale.plot(str(tmp_path))
    (tmp_path / "config.json").unlink()
    with pytest.raises(SystemExit, match="no config.json in .*: not a train.py run directory"):
        noise_scale.plot(str(tmp_path))
