"""μP's coordinate check (Yang et al. 2022, Tensor Programs V Sec. 5; microsoft/mup's coord_check): train models
of widths ×2 apart for a few steps on one fixed batch and watch the mean |x| of every activation type: the
embedding output, each block's attention logits and output, the output logits. Under μP (mup.py) none of them
may grow or shrink with width; under SP (the paper's parametrization) the updates grow with width, most of all in
the logits, which is why an LR tuned on a narrow model overshoots on a wide one.

    python benchmarks/coord_check.py                          # Adam, widths 32..512, SP next to μP: figure + CSV
    python benchmarks/coord_check.py --zero_readout           # the same with the readout started at 0
    python benchmarks/coord_check.py --optimizer=sgd --widths=32,64,128,256 --zero_readout   # any optimizer

It prints each activation type's slope (log mean|x| against log width, a least-squares fit over the widths) at
each step, writes them and the raw values to assets/mup/coord_check_<optimizer>.csv and draws
assets/mup/coord_check_<optimizer>.png. Step 1 is the init; steps 2..n follow 1..n-1 updates. A slope near 0
(|slope| <= 0.1 from step 2 on) is what μP promises; the tests (tests/test_mup.py) assert it.
"""
import argparse
import csv
import math
import os
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
import model  # noqa: E402
import mup  # noqa: E402
import optim  # noqa: E402

TYPES = ("embed", "attn_logits", "blocks", "logits")  # attn_logits and blocks: one per layer


def fixed_batch(B, T, seed=0):
    """B windows of T bytes of real text that no commit changes (V 256): the Zen of Python, Python's `this`."""
    import codecs
    import contextlib
    import io
    with contextlib.redirect_stdout(io.StringIO()):  # `import this` prints it
        import this
    text = codecs.decode(this.s, "rot13").encode()
    start = np.random.default_rng(seed).integers(0, len(text) - T, B)
    return jnp.asarray(np.frombuffer(text, np.uint8)[start[:, None] + np.arange(T)].astype(np.int32))  # [B, T]


def trajectories(D, parametrization, seeds=(0, 1), optimizer="adamw", lr=1e-2, steps=5, base_width=64, n_layers=2,
                 head_dim=16, T=64, B=8, zero_readout=False):
    """{type: [2, steps, layers]}: the mean |x| of each activation type (model.activations) on a fixed batch, and
    the mean |x - x_init| (the part the updates made), from the init (step 1) through steps-1 updates at a
    constant lr, of a byte model of width D; the mean over seeds (each its own init and batch). zero_readout:
    the output embedding starts at 0 (Tensor Programs V's advice; not SP's init), which removes the init's part
    of the logits, a term that fades as m^-1/2 and dominates the first steps at these widths."""
    cfg = model.Config(d_model=D, n_layers=n_layers, seq_len=T, vocab_size=256, head_dim=head_dim,
                       parametrization=parametrization, base_width=base_width)
    b1 = 0.0 if optimizer in ("sgd", "adafactor") else 0.9
    opt = optim.build(optimizer, lr, b1, 0.95, lr_scale=mup.lr_scales(parametrization, D, base_width, optimizer))
    causal = (T + 1) / (2 * T)  # the attention logits' share of causal entries

    @jax.jit
    def step(params, state, batch):
        grads = jax.grad(model.loss_fn)(params, batch, cfg)
        updates, state = opt.update(grads, state, params)
        return jax.tree.map(jnp.add, params, updates), state

    def mean_abs(x, t):  # per layer for the stacked types
        axes = tuple(range(1, x.ndim)) if t in ("attn_logits", "blocks") else None
        return jnp.atleast_1d(jnp.mean(jnp.abs(x), axis=axes) / (causal if t == "attn_logits" else 1))

    @jax.jit
    def sizes(params, batch, x0):  # (sizes, the activations: x0 at the init, where x0 is given as zeros)
        x = model.activations(params, batch, cfg)
        return {t: jnp.stack([mean_abs(x[t], t), mean_abs(x[t] - x0[t], t)]) for t in TYPES}, x  # [2, layers]

    out = []
    for seed in seeds:
        params, batch = model.init(cfg, jax.random.PRNGKey(seed)), fixed_batch(B, T, seed)
        if zero_readout:
            params["unembed"] = jnp.zeros_like(params["unembed"])
        state, x0 = opt.init(params), jax.tree.map(jnp.zeros_like, jax.eval_shape(
            lambda p: model.activations(p, batch, cfg), params))
        for i in range(steps):
            s, x = sizes(params, batch, x0)
            out.append({t: v * np.array([[1], [i > 0]]) for t, v in jax.device_get(s).items()})  # no change at the init
            x0 = x if i == 0 else x0
            params, state = step(params, state, batch)
    return {t: np.mean(np.stack([o[t] for o in out]).reshape(len(seeds), steps, *out[0][t].shape), axis=0)
            .transpose(1, 0, 2) for t in TYPES}


def measure(widths, parametrization, **kw):
    """{type: [2, len(widths), steps, layers]} (mean |x|, mean |x - x_init|)."""
    runs = [trajectories(D, parametrization, **kw) for D in widths]
    return {t: np.stack([r[t] for r in runs], axis=1) for t in TYPES}


def slopes(widths, values):
    """Least-squares slope of log mean|x| against log width: values [W, steps, layers] -> [steps, layers]
    (nan where a value is 0: the update's part at the init)."""
    x = np.log(np.asarray(widths, float))
    with np.errstate(divide="ignore"):
        y = np.log(values).reshape(len(widths), -1)
    ok = np.isfinite(y).all(axis=0)
    slope = np.full(y.shape[1], np.nan)
    slope[ok] = np.polyfit(x, y[:, ok], 1)[0]
    return slope.reshape(values.shape[1:])


MEASURES = ("x", "dx")  # mean |x|, and mean |x - x_init|


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--optimizer", default="adamw", choices=optim.OPTIMIZERS)
    ap.add_argument("--lr", type=float, default=None, help="default: 1e-2 (Adam, signum, Muon's embeddings), 0.5 "
                    "(SGD), 0.05 (Adafactor)")
    ap.add_argument("--widths", default="32,64,128,256,512")
    ap.add_argument("--base_width", type=int, default=64)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--batch", type=int, default=2, help="sequences in the fixed batch")
    ap.add_argument("--seq_len", type=int, default=32)
    ap.add_argument("--seeds", type=int, default=3, help="each its own init and batch; the sizes are averaged")
    ap.add_argument("--zero_readout", action="store_true", help="start the output embedding at 0 (see trajectories)")
    ap.add_argument("--out", default=str(ROOT / "assets" / "mup"))
    ap.add_argument("--plot_only", action="store_true", help="redraw the figure from the CSV this command wrote")
    a = ap.parse_args(argv)
    lr = a.lr or {"sgd": 0.5, "adafactor": 0.05}.get(a.optimizer, 1e-2)
    path = os.path.join(a.out, f"coord_check_{a.optimizer}{'_zero_readout' * a.zero_readout}.csv")
    title = f"{a.optimizer}, lr {lr:g}, base width {a.base_width}" + ", readout started at 0" * a.zero_readout
    if a.plot_only:
        return plot(*read_csv(path), path.replace(".csv", ".png"), title)
    widths = [int(w) for w in a.widths.split(",")]
    kw = dict(optimizer=a.optimizer, lr=lr, steps=a.steps, base_width=a.base_width, B=a.batch, T=a.seq_len,
              seeds=tuple(range(a.seeds)), zero_readout=a.zero_readout)
    res = {p: measure(widths, p, **kw) for p in mup.PARAMETRIZATIONS}
    os.makedirs(a.out, exist_ok=True)
    rows = []
    print(f"{a.optimizer}, lr {lr:g}, widths {widths}, base {a.base_width}: slope of log mean|x| against log width "
          "at steps 1..n (x: the activation, dx: its change since the init)")
    for p, vals in res.items():
        for t in TYPES:
            for mi, meas in enumerate(MEASURES):
                s = slopes(widths, vals[t][mi])  # [steps, layers]
                for layer in range(s.shape[1]):
                    name = t if s.shape[1] == 1 else f"{t}[{layer}]"
                    print(f"  {p:4s} {meas:2s} {name:15s} " + " ".join(f"{v:+.2f}" for v in s[:, layer]))
                    rows += [dict(parametrization=p, measure=meas, type=name, step=i + 1, slope=float(s[i, layer]),
                                  **{f"width_{w}": float(vals[t][mi, j, i, layer]) for j, w in enumerate(widths)})
                             for i in range(s.shape[0])]
    with open(path + ".tmp", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    os.replace(path + ".tmp", path)
    plot(*read_csv(path), path.replace(".csv", ".png"), title)
    print(f"wrote {path} and its .png")


def read_csv(path):
    """(widths, {parametrization: {type: [2, W, steps, layers]}}) back from a CSV that main wrote."""
    rows = list(csv.DictReader(open(path)))
    widths = [int(k[6:]) for k in rows[0] if k.startswith("width_")]
    steps = max(int(r["step"]) for r in rows)
    res = {}
    for t in TYPES:
        layers = sorted({r["type"] for r in rows if r["type"].split("[")[0] == t})
        for p in {r["parametrization"] for r in rows}:
            a = np.zeros((len(MEASURES), len(widths), steps, len(layers)))
            for r in rows:
                if r["parametrization"] == p and r["type"] in layers:
                    a[MEASURES.index(r["measure"]), :, int(r["step"]) - 1, layers.index(r["type"])] = \
                        [float(r[f"width_{w}"]) for w in widths]
            res.setdefault(p, {})[t] = a
    return widths, res


def plot(widths, res, path, title):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    panels = [(p, mi) for mi in range(len(MEASURES)) for p in res]
    fig, axes = plt.subplots(len(panels), len(TYPES), figsize=(3.1 * len(TYPES), 2.5 * len(panels)), sharex=True)
    for r, (p, mi) in enumerate(panels):
        for c, t in enumerate(TYPES):
            ax, v = axes[r, c], res[p][t][mi][..., -1]  # [W, steps]; the last layer's, for per-layer types
            for i in range(mi, v.shape[1]):  # the change since the init starts at step 2
                ax.plot(widths, v[:, i], "o-", ms=3, color=plt.cm.viridis(i / max(1, v.shape[1] - 1)), label=f"step {i + 1}")
            what = ("|x|" if mi == 0 else "|x - x_init|") + (", last layer" if res[p][t].shape[-1] > 1 else "")
            ax.set(xscale="log", yscale="log", title=f"{p.upper()} {t}: {what}")
            if (pos := v[:, mi:][v[:, mi:] > 0]).size:  # (a readout started at 0: logits 0 at step 1, off the axis)
                mid, half = math.sqrt(pos.min() * pos.max()), math.sqrt(max(pos.max() / pos.min(), 30))
                ax.set_ylim(mid / half, mid * half)  # at least 30x tall: flat looks flat
            ax.title.set_fontsize(8)
            ax.set_xticks(widths, [str(w) for w in widths])
            ax.minorticks_off()
            if r == len(panels) - 1:
                ax.set_xlabel("width D")
    axes[0, -1].legend(fontsize=7)
    fig.suptitle(f"coordinate check, mean over coordinates: {title}")
    fig.tight_layout()
    fig.savefig(path + ".tmp.png", dpi=100)
    os.replace(path + ".tmp.png", path)


if __name__ == "__main__":
    main()
