"""The paper's toy example (App. B, Fig. 10): momentum helps at a large batch size, not at a small one.

Loss f(x, y) = x² + 10·y², started at (−1, 1). A minibatch gradient at batch size b, measured in units of
the critical batch (where the gradient's signal-to-noise ratio is 1), is g + |g|·ε/√b with ε ~ N(0, I).
SGD is compared with SGD + EMA momentum (m = β·m + (1−β)·g, p = p − lr·m, m starts at 0) at a large batch
(few steps) and a small batch (many steps). At a large batch the noise is small, SGD's step along the steep
y axis overshoots and oscillates, and momentum damps that; at a small batch the LR must be small for the
noise anyway, no step overshoots, and momentum (whose EMA weights sum to 1) has nothing to damp: no gain.

    python toy_momentum.py               # figure -> out/toy_momentum.png, table of final losses
    python toy_momentum.py --sweep_lr    # also: best median final loss over a log grid of LRs per setting
"""
import argparse
import os
import time
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np

from common import atomic_write, fail

H = (2.0, 20.0)  # Hessian diagonal of f: ∇f(x, y) = (2x, 20y)
X0 = (-1.0, 1.0)


def loss(p):  # p: [..., 2] -> [...]
    return p[..., 0] ** 2 + 10 * p[..., 1] ** 2


def noisy_grad(key, p, b):
    """App. B minibatch gradient at p [..., 2]: each coordinate gets noise of std |g|/√b. b=inf: exact."""
    g = jnp.asarray(H) * p  # [..., 2]
    eps = jax.random.normal(key, p.shape)  # [..., 2]
    return g + jnp.linalg.norm(g, axis=-1, keepdims=True) * eps / jnp.sqrt(b)


@partial(jax.jit, static_argnames=("steps", "seeds"))
def _simulate(key, b, steps, lr, beta, seeds, x0):
    def run(key):  # one seed: lax.scan over the steps
        def step(carry, key):
            p, m = carry  # [2], [2]
            m = beta * m + (1 - beta) * noisy_grad(key, p, b)
            p = p - lr * m
            return (p, m), p
        _, ps = jax.lax.scan(step, (x0, jnp.zeros_like(x0)), jax.random.split(key, steps))  # ps: [steps, 2]
        return jnp.concatenate([x0[None], ps])  # [steps+1, 2]
    return jax.vmap(run)(jax.random.split(key, seeds))  # [seeds, steps+1, 2]


def simulate(key, b, steps, lr, beta, seeds=1000, x0=X0):
    """Trajectories [seeds, steps+1, 2] (row 0 is x0). beta=0 is plain SGD; b=inf gives exact gradients."""
    if not b > 0:
        raise ValueError(f"batch size b must be > 0 (inf = exact gradients), got {b}")
    if int(steps) != steps or steps < 1 or int(seeds) != seeds or seeds < 1:
        raise ValueError(f"steps and seeds must be positive integers, got steps={steps}, seeds={seeds}")
    if not lr > 0 or not 0 <= beta < 1:
        raise ValueError(f"need lr > 0 and 0 <= beta < 1, got lr={lr}, beta={beta}")
    x0 = jnp.asarray(x0, jnp.float32)
    return np.asarray(_simulate(key, float(b), int(steps), float(lr), float(beta), int(seeds), x0))


def final_losses(trajs):
    """Final loss per seed [seeds], sorted; a diverged run (inf / nan) counts as inf."""
    f = loss(trajs[:, -1])
    return np.sort(np.where(np.isfinite(f), f, np.inf))


def final_loss_stats(trajs):
    """Median, IQR and a distribution-free 95% CI of the median of the final loss over seeds."""
    f = final_losses(trajs)
    n = len(f)  # the rank of the sample median is ~ Binomial(n, 1/2): order stats n/2 ± 1.96·√n/2 bracket it
    lo, hi = int(np.floor(n / 2 - 0.98 * np.sqrt(n))), int(np.ceil(n / 2 + 0.98 * np.sqrt(n)))
    q25, q75 = np.quantile(f, (0.25, 0.75), method="nearest")  # no interpolation: stays finite-safe with inf
    return dict(median=np.median(f), q25=q25, q75=q75, ci=(f[max(lo, 0)], f[min(hi, n - 1)]))


def settings(args):
    """(row, column, b, steps, lr, beta) of the four panels of Fig. 10."""
    return [("large batch", "SGD", args.b_large, args.steps_large, args.lr_large_sgd, 0.0),
            ("large batch", "SGD + momentum", args.b_large, args.steps_large, args.lr_large_mom, args.beta),
            ("small batch", "SGD", args.b_small, args.steps_small, args.lr_small_sgd, 0.0),
            ("small batch", "SGD + momentum", args.b_small, args.steps_small, args.lr_small_mom, args.beta)]


def plot(trajs, setts, path):
    """2x2 panels over the loss contours: per-coordinate median path with 25-75% ranges as error bars."""
    import matplotlib
    matplotlib.use("Agg")  # headless: only writes files
    import matplotlib.pyplot as plt
    fig, axs = plt.subplots(2, 2, figsize=(10, 6), layout="constrained", sharex=True, sharey=True)
    xs, ys = np.meshgrid(np.linspace(-2, 0.6, 261), np.linspace(-1.3, 1.3, 261))  # covers the 25-75% bars
    for ax, tr, (row, col, b, steps, lr, beta) in zip(axs.flat, trajs, setts):
        ax.contourf(xs, ys, np.log10(loss(np.stack([xs, ys], -1)) + 1e-3), levels=20, cmap="Blues_r")
        (x, y), (x25, y25), (x75, y75) = (np.quantile(tr, q, axis=0).T for q in (0.5, 0.25, 0.75))
        ax.errorbar(x, y, xerr=[x - x25, x75 - x], yerr=[y - y25, y75 - y], color="#B85C5C", lw=2, elinewidth=1,
                    capsize=3, marker="o", ms=3, errorevery=max(1, steps // 10))  # <= ~10 bars per panel
        ax.plot(0, 0, "k*", ms=10)
        ax.set_title(f"{row}, {col}: b={b:g}, {steps} steps, lr={lr:g}" + (f", β={beta:g}" if beta else ""),
                     fontsize=9)
    for ax, row in zip(axs[:, 0], ("Large batch size", "Small batch size")):
        ax.set_ylabel(f"{row}\ny", fontsize=12)
    for ax in axs[1]:
        ax.set_xlabel("x")
    fig.suptitle("f = x² + 10·y² from (−1, 1): median path and 25–75% range over seeds (paper Fig. 10)")
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    atomic_write(path, lambda f: fig.savefig(f, dpi=120, format="png"), "wb")  # never half a PNG
    plt.close(fig)


def sweep_lr(key, setts, seeds, grid):
    """Best median final loss over the LR grid for each setting (same noise for every LR)."""
    rows = []
    for row, col, b, steps, _, beta in setts:
        meds = [np.median(final_losses(simulate(key, b, steps, lr, beta, seeds))) for lr in grid]
        i = int(np.argmin(meds))
        rows.append((row, col, grid[i], meds[i], i in (0, len(grid) - 1)))
    return rows


def medians_over_keys(seed, setts, seeds, n_keys):
    """Median final loss [n_keys, 4] of each setting for n_keys independent PRNG keys (seed, seed+1, ...)."""
    return np.array([[np.median(final_losses(simulate(jax.random.PRNGKey(seed + k), b, steps, lr, beta, seeds)))
                      for _, _, b, steps, lr, beta in setts] for k in range(n_keys)])


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--b_large", type=float, default=25.0, help="large batch, in units of the critical batch")
    p.add_argument("--b_small", type=float, default=0.09)
    p.add_argument("--steps_large", type=int, default=10)
    p.add_argument("--steps_small", type=int, default=100)
    p.add_argument("--lr_large_sgd", type=float, default=0.09)
    p.add_argument("--lr_large_mom", type=float, default=0.12)
    p.add_argument("--lr_small_sgd", type=float, default=0.012)
    p.add_argument("--lr_small_mom", type=float, default=0.012)
    p.add_argument("--beta", type=float, default=0.4, help="EMA momentum coefficient")
    p.add_argument("--seeds", type=int, default=1000)
    p.add_argument("--seed", type=int, default=0, help="PRNG seed; all four settings share the same noise")
    p.add_argument("--keys", type=int, default=1, help="if > 1, also rerun the table on this many PRNG keys")
    p.add_argument("--out", default="out/toy_momentum.png", help="path of the PNG figure (the committed one: --out=assets/toy_momentum.png)")
    p.add_argument("--sweep_lr", action="store_true", help="also tune the LR per setting on a log grid")
    p.add_argument("--lr_grid", type=float, nargs=3, default=(1e-3, 0.3, 31), metavar=("MIN", "MAX", "N"))
    args = p.parse_args(argv)
    if not args.out.endswith(".png"):
        raise ValueError(f"--out must be a .png path, got {args.out}")
    lo, hi, n = args.lr_grid
    if not 0 < lo < hi or int(n) != n or n < 2:
        raise ValueError(f"--lr_grid needs 0 < MIN < MAX and integer N >= 2, got {args.lr_grid}")
    t0 = time.time()
    key, setts = jax.random.PRNGKey(args.seed), settings(args)
    trajs = [simulate(key, b, steps, lr, beta, args.seeds) for _, _, b, steps, lr, beta in setts]
    print(f"final loss over {args.seeds} seeds (median, 25-75% range, 95% CI of the median):")
    print(f"{'setting':<28} {'b':>6} {'steps':>5} {'lr':>7} {'median':>9} {'IQR':>21} {'95% CI':>21}")
    for (row, col, b, steps, lr, beta), tr in zip(setts, trajs):
        s = final_loss_stats(tr)
        print(f"{row + ', ' + col:<28} {b:>6g} {steps:>5} {lr:>7g} {s['median']:>9.2e} "
              f"[{s['q25']:.2e}, {s['q75']:.2e}] [{s['ci'][0]:.2e}, {s['ci'][1]:.2e}]")
    plot(trajs, setts, args.out)
    print(f"figure: {args.out}")
    if args.sweep_lr:
        grid = np.geomspace(lo, hi, int(n))
        print(f"LR sweep: {int(n)} LRs log-spaced in [{lo:g}, {hi:g}]; best median final loss per setting:")
        for row, col, lr, med, edge in sweep_lr(key, setts, args.seeds, grid):
            print(f"{row + ', ' + col:<28} best lr {lr:<8.3g} median {med:.2e}" + ("  (grid edge!)" if edge else ""))
    if args.keys > 1:
        med = medians_over_keys(args.seed, setts, args.seeds, args.keys)  # [keys, 4]
        print(f"over {args.keys} PRNG keys: momentum/SGD ratio of median final losses (min / median / max),")
        print("and the run-to-run spread of SGD's median (max / min over keys) as the yardstick of noise:")
        for j, name in ((0, "large batch"), (2, "small batch")):
            r = med[:, j + 1] / med[:, j]
            print(f"{name}: ratio {r.min():.3f} / {np.median(r):.3f} / {r.max():.3f}; "
                  f"SGD spread {med[:, j].max() / med[:, j].min():.2f}x")
    print(f"done in {time.time() - t0:.1f}s")


if __name__ == "__main__":
    try:
        main()
    except ValueError as e:  # a bad --out or --lr_grid: one line, not a traceback
        fail(str(e))
