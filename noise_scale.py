"""The gradient noise scale of a run (McCandlish et al. 2018): B_simple = tr(Σ) / |G|², the batch size (in
sequences) around which larger batches stop buying fewer steps. Σ is the per-sequence gradient covariance
and G the true gradient; both come from gradient norms at two batch sizes on the same parameters
(App. A.1), |G|² and tr(Σ) each smoothed by an EMA before the ratio is taken (a ratio of averages, not an
average of ratios). The paper argues language models train far below it, where the smallest batch that
keeps the hardware busy is best.

    python train.py --noise_every=8192            # measure every 8192 tokens; metrics.jsonl gets b_simple
    python noise_scale.py plot out/tiny           # B_simple over training -> out/tiny/noise_scale.png
"""
import argparse
import os
import sys

import jax
import jax.numpy as jnp

from common import atomic_write, fail, read_run

SEED = 0x4E53  # "NS": the measurement's batches are drawn with seed + SEED, a stream apart from training's


def grad_norms(loss_fn, params, batch):
    """Squared gradient norms at two batch sizes from one set of gradients: batch [2, b, ...] is two
    halves of b sequences; returns (mean of the halves' |g_b|², |g_2b|² of their mean), in fp32. On a
    sharded mesh each sum of squares is reduced where the gradient lies: only scalars cross devices."""
    sq = lambda t: sum(jnp.sum(jnp.square(x.astype(jnp.float32))) for x in jax.tree.leaves(t))
    g0, g1 = (jax.grad(loss_fn)(params, jax.tree.map(lambda x: x[i], batch)) for i in (0, 1))
    return (sq(g0) + sq(g1)) / 2, sq(jax.tree.map(lambda a, b: (a.astype(jnp.float32) + b) / 2, g0, g1))


def estimate(small, big, b_small, b_big):
    """Unbiased |G|² and tr(Σ) from E|g_b|² = |G|² + tr(Σ)/b at two batch sizes (McCandlish App. A.1)."""
    G2 = (b_big * big - b_small * small) / (b_big - b_small)
    S = (small - big) / (1 / b_small - 1 / b_big)
    return G2, S


class NoiseScale:
    """EMAs of |G|² and tr(Σ); B_simple is their ratio (the EMAs' zero-start bias is the same factor in
    both, so it cancels)."""

    def __init__(self, decay=0.9):
        self.decay, self.G2, self.S, self.n = decay, 0.0, 0.0, 0

    def update(self, G2, S):
        self.G2 = self.decay * self.G2 + (1 - self.decay) * G2
        self.S = self.decay * self.S + (1 - self.decay) * S
        self.n += 1
        return self.b_simple

    @property
    def b_simple(self):  # in sequences; |G|² <= 0 (all noise so far): no finite batch is critical
        return self.S / self.G2 if self.G2 > 0 else float("inf")


def advice(b_simple, B, T):
    """The end-of-run line: the measured critical batch against the batch used, and what the paper says."""
    head = (f"gradient noise scale: B_simple = {b_simple:,.1f} sequences ({b_simple * T:,.0f} tokens) at the end of "
            f"training, {b_simple / B:.3g}x batch_size {B}: ")
    if b_simple >= B:
        return head + ("the batch is below the critical batch, where the paper (Sec. 4) finds the smallest batch "
                       "that keeps the hardware busy trains best per token")
    return head + "the batch is above the critical batch: a smaller one would reach the same loss in fewer tokens"


def plot(run_dir, out=None):
    """B_simple (sequences and tokens) over training from <run_dir>/metrics.jsonl, as a PNG."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    run = read_run(run_dir)
    cfg, rows = run["config"], [m for m in run["metrics"] if "b_simple" in m]
    if not cfg:
        fail(f"no config.json in {run_dir!r}: not a train.py run directory")
    if not rows:
        fail(f"{os.path.join(run_dir, 'metrics.jsonl')} has no b_simple rows: train with --noise_every=<tokens>")
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot([m["tokens"] for m in rows], [m["b_simple"] for m in rows], marker=".")
    ax.axhline(cfg["batch_size"], color="k", ls="--", lw=0.8, label=f"batch size used ({cfg['batch_size']})")
    ax.set(xlabel="tokens trained", ylabel="B_simple (sequences of %d tokens)" % cfg["seq_len"], yscale="log",
           title=f"gradient noise scale, {cfg.get('config_file', run_dir)}, batch size {cfg['batch_size']}")
    ax.legend()
    fig.tight_layout()
    out = out or os.path.join(run_dir, "noise_scale.png")
    atomic_write(out, lambda f: fig.savefig(f, dpi=120, format="png"), "wb")
    plt.close(fig)
    return out


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description="Plot a run's gradient noise scale (B_simple) over training.")
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("plot")
    p.add_argument("run_dir")
    p.add_argument("--out", help="PNG path (default <run_dir>/noise_scale.png)")
    a = ap.parse_args(sys.argv[1:])
    print(plot(a.run_dir, a.out))
