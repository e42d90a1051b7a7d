"""Chinchilla scaling laws (Hoffmann et al. 2022): fit approaches 1, 2, 3 and allocate a compute budget.

    python scaling.py fit runs.csv [--boot 200] [--plots plots/]  # the law with 95% CIs; a, b per approach
    python scaling.py fit out/sweep/ [--csv runs.csv]              # a folder of train.py runs (saved as a CSV)
    python scaling.py optimal --flops 1e21 runs.csv                # N_opt, D_opt, loss (or --loss 2.0)
    python scaling.py bench                                        # time approach 3 on 250 synthetic runs
    python scaling.py isoflop --budgets 1e13 3e13 1e14 > sweep.sh  # the train.py commands of IsoFLOP profiles
    python scaling.py curves assets/sweeps/fig1a.csv               # predict final losses from the first 10-30%

CSV columns: N (parameters), D (training tokens), loss (final eval loss); optional C (FLOPs, else 6·N·D).
Rows sharing an N also form a training curve (loss vs D) for approach 1. A run folder holds one dir per
train.py run (config.json, run.json with the parameter counts, metrics.jsonl): final loss = the last val_loss;
curve = all val_loss lines (mid-run losses under a cosine schedule sit above those of runs that end there, so
approach 1 leans on the final points).
Which N (--params, run folders): default "active" = 12·L·D² + V·D, the paper's count. In a CPU-sized sweep
V·D is most of the parameters *and* of the FLOPs (the output projection), so only a count that includes it
keeps C = 6·N·D an honest compute count, which is what the allocation is about. The non-embedding count
(Kaplan et al. 2020) understates C ~10x at these sizes and bends the exponents (Pearce & Song 2024);
"total" adds the input embedding, a lookup that costs no FLOPs. Legend: N params, D tokens, C FLOPs.
numpy only at import: `isoflop` alone loads train.py's config and model (JAX) to count each run's parameters.
"""
import argparse, csv, math, os, time
import numpy as np
from tqdm import tqdm

from common import atomic_write, fail, read_run

NAMES = ("E", "A", "B", "alpha", "beta")
COUNTS = ("active", "nonembed", "total")

# ----------------------------------------------------------------------------- input
def check_runs(N, D, loss, where="runs", labels=None):
    N, D, loss = (np.asarray(x, dtype=np.float64) for x in (N, D, loss))
    for name, x in (("N", N), ("D", D), ("loss", loss)):
        if (bad := np.flatnonzero(~(np.isfinite(x) & (x > 0)))).size:
            at = labels[bad[0]] if labels else f"run {bad[0]}"
            raise ValueError(f"{where}: {name} must be finite and positive, got {x[bad[0]]} ({at})")
    return N, D, loss

def load_csv(path):
    """-> runs {N, D, loss, C} (arrays) and curves [(N, D[], loss[])], one curve per distinct N."""
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    cols = set(rows[0]) if rows else set()
    if missing := [c for c in ("N", "D", "loss") if c not in cols]:
        raise ValueError(f"{path}: missing column {missing[0]!r} (need N, D, loss; optional C)")
    try:
        N, D, loss, C = (np.array([float(r[c]) for r in rows]) for c in ("N", "D", "loss", "C" if "C" in cols else "N"))
    except ValueError as e:
        raise ValueError(f"{path}: {e}") from None
    N, D, loss = check_runs(N, D, loss, path, [f"line {i + 2}" for i in range(len(N))])
    if "C" in cols and not (C > 0).all():
        raise ValueError(f"{path}: C must be positive (line {np.flatnonzero(~(C > 0))[0] + 2})")
    curves = [(n, D[N == n][o := np.argsort(D[N == n])], loss[N == n][o]) for n in np.unique(N)]
    return dict(N=N, D=D, loss=loss, C=C if "C" in cols else 6 * N * D), curves

def load_runs(folder, params="active"):
    """A folder of train.py runs -> (runs, curves); N is run.json's params_<params>."""
    dirs = sorted(d for d in os.listdir(folder) if os.path.isfile(os.path.join(folder, d, "config.json")))
    if not dirs:
        raise FileNotFoundError(f"{folder}: no run directories with a config.json")
    N, D, loss, curves = [], [], [], []
    for d in dirs:
        run = read_run(os.path.join(folder, d))
        n = run["run"].get(f"params_{params}")  # run.json: train.py's derived values, the parameter counts among them
        val = [(m["tokens"], m["val_loss"]) for m in run["metrics"] if "val_loss" in m]
        if n is None or not val:
            why = "no val_loss in metrics.jsonl (unfinished?)" if n else f"no 'params_{params}' in run.json"
            raise ValueError(f"{os.path.join(folder, d)}: {why}")
        t, l = np.array(val, dtype=np.float64).T
        N.append(n); D.append(t[-1]); loss.append(l[-1]); curves.append((n, t[t > 0], l[t > 0]))
    N, D, loss = check_runs(N, D, loss, folder, dirs)
    return dict(N=N, D=D, loss=loss, C=6 * N * D, name=dirs), curves

def save_csv(runs, path):
    """The runs table (name, N, D, C, loss), written atomically: what `fit runs.csv` reads back."""
    rows = zip(runs.get("name", [f"run{i}" for i in range(len(runs["N"]))]), runs["N"], runs["D"], runs["C"], runs["loss"])
    table = [["name", "N", "D", "C", "loss"]] + [[n, int(N), int(D), f"{C:.6g}", f"{l:.5f}"]
                                                 for n, N, D, C, l in rows]
    atomic_write(path, lambda f: csv.writer(f).writerows(table))

# ----------------------------------------------------------------------------- approach 3: parametric fit
def law(p, N, D):
    return p["E"] + p["A"] / N ** p["alpha"] + p["B"] / D ** p["beta"]

def law_params(E, A, B, alpha, beta):
    """The law and its compute-optimal frontier (Hoffmann eq. 4): N_opt = G·(C/6)^a, D_opt = (C/6)^b / G."""
    G = (alpha * A / (beta * B)) ** (1 / (alpha + beta))
    return dict(E=E, A=A, B=B, alpha=alpha, beta=beta, a=beta / (alpha + beta), b=alpha / (alpha + beta), G=G)

def _huber(theta, logN, logD, logL, w, delta):
    """Weighted mean Huber(log L̂ − log L)/δ and its gradient; theta [S, 5] = (log A, log B, log E, α, β)."""
    a, b, e, al, be = (theta[:, i:i + 1] for i in range(5))  # [S, 1] each
    with np.errstate(over="ignore", invalid="ignore"):  # a wild line-search trial gives inf and is rejected
        tA, tB, tE = np.exp(a - al * logN), np.exp(b - be * logD), np.exp(e)  # [S, n] the law's three terms
        Lh = tA + tB + tE
        r = np.log(Lh) - logL  # log-sum-exp(a − α log N, b − β log D, e) − log L, App. D.2
        h = np.where(np.abs(r) <= delta, 0.5 * r * r, delta * (np.abs(r) - 0.5 * delta))
        wn = w / (w.sum(1, keepdims=True) * delta)  # /δ: the linear regime reads as mean |r|
        gr = wn * np.clip(r, -delta, delta) / Lh  # dHuber/dL̂
        gA, gB = gr * tA, gr * tB
        g = np.stack([gA.sum(1), gB.sum(1), gr.sum(1) * tE[:, 0], -gA @ logN, -gB @ logD], 1)
        return (wn * h).sum(1), g

def lbfgs(fg, x, iters=400, m=10, ftol=1e-12):
    """L-BFGS, Armijo backtracking, vectorised over S problems: fg(x [s, k], rows [s]) -> f [s], g [s, k]."""
    f, g = fg(x, np.arange(len(x)))
    S, k = x.shape
    hs, hy, rho = np.zeros((m, S, k)), np.zeros((m, S, k)), np.zeros((m, S))
    live = np.ones(S, bool)
    for it in range(iters):
        q, al = g.copy(), np.zeros((m, S))
        for j in [(it - 1 - i) % m for i in range(m)]:  # two-loop recursion, newest pair first
            al[j] = rho[j] * (hs[j] * q).sum(1)
            q -= al[j, :, None] * hy[j]
        j = (it - 1) % m  # initial Hessian: the usual s·y / y·y; at the first step, a unit max-norm step
        sy_yy = 1 / np.maximum(rho[j] * (hy[j] ** 2).sum(1), 1e-300)
        q *= np.where(rho[j] > 0, sy_yy, 1 / np.maximum(np.abs(g).max(1), 1e-300))[:, None]
        for j in [(it - m + i) % m for i in range(m)]:
            q += (al[j] - rho[j] * (hy[j] * q).sum(1))[:, None] * hs[j]
        d = np.where(((q * g).sum(1) > 0)[:, None], -q, -g)  # not a descent direction: steepest descent
        d /= np.maximum(1, np.abs(d).max(1, keepdims=True))  # move ≤ 1 per coordinate (log A, α, ...) a step
        t, todo, xn, fn, gn = np.ones(S), live.copy(), x.copy(), f.copy(), g.copy()
        for _ in range(40):  # backtrack only the problems still searching
            if not (i := np.flatnonzero(todo)).size:
                break
            fi, gi = fg(x[i] + t[i, None] * d[i], i)
            ok = fi <= f[i] + 1e-4 * t[i] * (g[i] * d[i]).sum(1)
            i_ok = i[ok]
            xn[i_ok], fn[i_ok], gn[i_ok], todo[i_ok] = x[i_ok] + t[i_ok, None] * d[i_ok], fi[ok], gi[ok], False
            t[i[~ok]] *= 0.5
        live &= ~todo & (f - fn > ftol * np.abs(f))  # converged, or a failed line search: no progress left
        j = it % m
        hs[j], hy[j] = xn - x, gn - g
        sy = (hs[j] * hy[j]).sum(1)
        rho[j] = np.where(sy > 1e-300, 1 / np.maximum(sy, 1e-300), 0)  # no curvature: the pair is ignored
        x, f, g = xn, fn, gn
        if not live.any():
            break
    return x, f

def init_grid():
    """Hoffmann et al. App. D.2: α, β ∈ {0, .5, .., 2}, e ∈ {-1, -.5, .., 1}, a, b ∈ {0, 5, .., 25}."""
    ab, e, ex = np.arange(0, 26, 5.0), np.arange(-1, 1.1, .5), np.arange(0, 2.1, .5)
    return np.stack(np.meshgrid(ab, ab, e, ex, ex, indexing="ij"), -1).reshape(-1, 5)  # [4500, 5] (a, b, e, α, β)

def fit_approach3(N, D, loss, delta=1e-3, boot=0, seed=0, warm=5, chunk=64):
    """Huber fit of L = E + A/N^α + B/D^β from the init grid, best kept; bootstrap CIs over resampled runs.
    Every start takes `warm` L-BFGS steps, then the best 5% run to convergence (~20x faster, same optimum)."""
    N, D, loss = check_runs(N, D, loss)
    if len(N) < 5:
        raise ValueError(f"approach 3 fits 5 parameters and needs at least 5 runs, got {len(N)}")
    logN, logD, logL = np.log(N), np.log(D), np.log(loss)
    fg = lambda w: lambda th, i: _huber(th, logN, logD, logL, w if len(w) == 1 else w[i], delta)
    x, f = lbfgs(fg(np.ones((1, len(N)))), init_grid(), iters=warm)
    x, f = lbfgs(fg(np.ones((1, len(N)))), x[np.argsort(f)[:len(x) // 20]])
    to_p = lambda th: law_params(math.exp(th[2]), math.exp(th[0]), math.exp(th[1]), float(th[3]), float(th[4]))
    p = to_p(best := x[np.argmin(f)])
    p["resid_std"] = float(np.std(np.log(law(p, N, D)) - logL))  # spread of log residuals ≈ relative error
    if boot:  # resample runs; weights = how often each run is drawn; warm-started from the full-data fit
        rng, thetas, bar = np.random.default_rng(seed), [], tqdm(total=boot, desc="bootstrap", unit="fit")
        for k in range(0, boot, chunk):
            idx = rng.integers(0, len(N), (min(chunk, boot - k), len(N)))
            w = np.stack([np.bincount(r, minlength=len(N)) for r in idx]).astype(np.float64)  # [chunk, n]
            thetas.append(lbfgs(fg(w), np.tile(best, (len(idx), 1)))[0])
            bar.update(len(idx))
        bar.close()
        ps = [to_p(th) for th in np.concatenate(thetas)]
        p["ci"] = {k: tuple(np.percentile([q[k] for q in ps], [2.5, 97.5])) for k in NAMES + ("a", "b", "G")}
    return p

# ----------------------------------------------------------------------------- approaches 1 and 2
def _frontier(C, Nopt, **extra):
    """N_opt = kN·C^a and D_opt = kD·C^b, each fitted by least squares in log space."""
    (a, log_kN), (b, log_kD) = np.polyfit(np.log(C), np.log(Nopt), 1), np.polyfit(np.log(C), np.log(C / (6 * Nopt)), 1)
    return dict(a=a, b=b, kN=np.exp(log_kN), kD=np.exp(log_kD), C=C, N=Nopt, D=C / (6 * Nopt), **extra)

def fit_approach2(N, D, loss, C=None, tol=0.05):
    """IsoFLOP profiles: runs whose log10 C lie within tol decades form a budget; a parabola in log N each."""
    N, D, loss = check_runs(N, D, loss)
    lc = np.log10(6 * N * D if C is None else C)
    o, profiles = np.argsort(lc), []
    for g in np.split(o, np.flatnonzero(np.diff(lc[o]) > tol) + 1):
        if len(g) >= 3:
            coef = np.polyfit(np.log(N[g]), loss[g], 2)
            xm = -coef[1] / (2 * coef[0])
            ok = coef[0] > 0 and np.log(N[g]).min() <= xm <= np.log(N[g]).max()  # bracketed, not extrapolated
            profiles.append(dict(C=10 ** lc[g].mean(), N=N[g], loss=loss[g], coef=coef, ok=ok, Nopt=np.exp(xm)))
    good = [p for p in profiles if p["ok"]]
    if len(good) < 2:
        return None  # fewer than two budgets with a bracketed minimum: no power law to fit
    return _frontier(np.array([p["C"] for p in good]), np.array([p["Nopt"] for p in good]), profiles=profiles)

def fit_approach1(curves, points=200):
    """Lower envelope of loss vs FLOPs (C = 6·N·D) over training curves: the model on it at C is N_opt(C)."""
    curves = [(n, d, l) for n, d, l in curves if len(d) >= 2]
    if len({n for n, _, _ in curves}) < 3:
        return None
    Ns, logC = np.array([c[0] for c in curves]), [np.log(6 * n * d) for n, d, _ in curves]
    grid = np.linspace(min(c[0] for c in logC), max(c[-1] for c in logC), points)
    L = np.array([np.interp(grid, c, cv[2], left=np.inf, right=np.inf) for c, cv in zip(logC, curves)])  # [curves, C]
    i, have = L.argmin(0), np.isfinite(L)
    # drop budgets won by the smallest or largest model that reaches them: the optimum may lie beyond
    inner = (Ns[i] > np.where(have, Ns[:, None], np.inf).min(0)) & (Ns[i] < np.where(have, Ns[:, None], 0).max(0))
    if inner.sum() < 2:
        return None
    return _frontier(np.exp(grid[inner]), Ns[i[inner]])

# ----------------------------------------------------------------------------- allocation
def optimal(fits, C):
    """Per approach: N_opt, D_opt, tokens per parameter, and approach 3's predicted loss at that allocation."""
    rows = {}
    for k, f in fits.items():
        if f is not None:
            N = f["G"] * (C / 6) ** f["a"] if k == 3 else f["kN"] * C ** f["a"]
            D = (C / 6) ** f["b"] / f["G"] if k == 3 else f["kD"] * C ** f["b"]
            rows[k] = dict(N=N, D=D, tpp=D / N, loss=law(fits[3], N, D) if fits.get(3) else np.nan)
    return rows

def flops_for_loss(p, target):
    """Smallest C whose compute-optimal loss (approach 3) reaches target: bisection in ln C."""
    if target <= p["E"]:
        raise ValueError(f"target loss {target} is not above the irreducible loss E = {p['E']:.4f}")
    lo, hi = 0.0, 300.0
    for _ in range(200):
        mid = (lo + hi) / 2
        N = p["G"] * (math.exp(mid) / 6) ** p["a"]
        lo, hi = (mid, hi) if law(p, N, math.exp(mid) / (6 * N)) > target else (lo, mid)
    return math.exp(hi)

# ----------------------------------------------------------------------------- plots
def plot(runs, fits, out):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    os.makedirs(out, exist_ok=True)
    figs = dict(optimal=plt.subplots(1, 2, figsize=(10, 4)), pred_vs_obs=plt.subplots(figsize=(4.5, 4.5)))
    if fits.get(2):
        figs["isoflop"] = fig_ax = plt.subplots(figsize=(6, 4))
        ax, prof = fig_ax[1], fits[2]["profiles"]
        for j, pr in enumerate(prof):
            col, x = plt.cm.viridis(j / max(1, len(prof) - 1)), np.log(np.geomspace(pr["N"].min(), pr["N"].max()))
            ax.scatter(pr["N"], pr["loss"], color=col, s=12, label=f"C = {pr['C']:.2g}")
            ax.plot(np.exp(x), np.polyval(pr["coef"], x), color=col)
            if pr["ok"]:
                ax.plot(pr["Nopt"], np.polyval(pr["coef"], np.log(pr["Nopt"])), "k*", ms=9)
        ax.set(xscale="log", xlabel="parameters N", ylabel="final loss", title="IsoFLOP profiles, minima (approach 2)")
        ax.legend(fontsize=7)
    Cg = np.geomspace(runs["C"].min(), runs["C"].max() * 100)
    for k, rows in optimal(fits, Cg).items():
        for ax, key in zip(figs["optimal"][1], "ND"):
            line, = ax.plot(Cg, rows[key], label=f"approach {k}: $C^{{{fits[k]['a' if key == 'N' else 'b']:.3f}}}$")
            if k != 3:
                ax.scatter(fits[k]["C"], fits[k][key], s=10, color=line.get_color())
            ax.set(xscale="log", yscale="log", xlabel="FLOPs C", ylabel=f"{key}_opt")
            ax.legend(fontsize=8)
    ax, pred = figs["pred_vs_obs"][1], law(fits[3], runs["N"], runs["D"])
    ax.scatter(runs["loss"], pred, s=10)
    ax.axline((pred.min(), pred.min()), slope=1, color="k", lw=.8)
    ax.set(xlabel="observed loss", ylabel="predicted loss (approach 3)",
           title=f"log residual std {fits[3]['resid_std']:.2%}")
    for name, (fig, _) in figs.items():
        fig.tight_layout()
        atomic_write(os.path.join(out, f"{name}.png"), lambda f: fig.savefig(f, dpi=120, format="png"), "wb")
        plt.close(fig)

# ----------------------------------------------------------------------------- IsoFLOP sweep commands
def isoflop(budgets, widths, aspect=64, head_dim=64, params="active", config="configs/tiny_gpt2.py", out="out/sweep",
            seq_len=None, flops_per_s=1e11, extra=()):
    """IsoFLOP profiles: the train.py command of every width D (depth L = D/aspect) at every budget C, with
    tokens = C/(6·N) and N model.py's count of the model that command trains (the config file and `extra`
    "key=value" settings, vocab_size included). The time estimate (seq_len: the config's unless given) assumes
    flops_per_s; the default 1e11 is configs/tiny_gpt2.py's on 2 idle cores."""
    import dataclasses
    from config import model_config, parse  # train.py's own checks, and JAX, for this command only
    from model import count_params, flops_per_token
    if bad := [d for d in widths if d % min(head_dim, d)]:  # a width below head_dim is one head of that width
        raise ValueError(f"width {bad[0]} is not a multiple of head_dim={head_dim}")
    rest, models = "".join(f" --{kv}" for kv in extra), {}
    for d in widths:
        size = f"--d_model={d} --n_layers={max(1, round(d / aspect))} --head_dim={min(head_dim, d)}"
        models[d] = size, model_config(parse([config, *size.split(), *(f"--{kv}" for kv in extra)]))
    cmds = []
    for C in budgets:
        for d, (size, m) in models.items():
            n = count_params(m)[params]
            tok = round(C / (6 * n))
            secs = tok * flops_per_token(dataclasses.replace(m, seq_len=seq_len or m.seq_len)) / flops_per_s
            name = f"C{C:.0e}".replace("e+", "e") + f"_D{d}_L{m.n_layers}"
            note = f"N={n:.3g} D/N={tok / n:.2g} ~{secs / 60:.1f} min at {flops_per_s:.0e} FLOP/s"
            cmds.append(f"python train.py {config} {size} --train_tokens={tok} --out_dir={out}/{name}{rest}  # {note}")
    return cmds

# ----------------------------------------------------------------------------- CLI
def fit_all(path, params="active", delta=1e-3, boot=0, seed=0):
    runs, curves = load_runs(path, params) if os.path.isdir(path) else load_csv(path)
    N, D, loss = runs["N"], runs["D"], runs["loss"]
    return runs, {3: fit_approach3(N, D, loss, delta, boot, seed), 2: fit_approach2(N, D, loss, runs["C"]),
                  1: fit_approach1(curves)}

# ----------------------------------------------------------------------------- learning curves: the early part predicts the end
CUTS = (0.1, 0.2, 0.3)  # fractions of a run the curve fit sees


def lr_area(steps, n_steps, warmup=0.05, schedule="cosine"):
    """S: the LR summed over the first `steps` steps (an array), in steps at the peak LR, under optim.py's schedule
    (linear warmup then cosine to 0, or constant). A loss curve is a power law in S rather than in steps: the
    cosine's shrinking steps move the loss less (Kaplan et al. 2020 fit steps at a fixed LR; Luo et al. 2025)."""
    if schedule == "constant":
        return np.asarray(steps, float)
    w, t = int(round(warmup * n_steps)), np.arange(n_steps)
    lr = np.where(t < w, t / max(w, 1), 0.5 * (1 + np.cos(np.pi * np.clip((t - w) / max(n_steps - w, 1), 0, 1))))
    return np.concatenate([[0.0], np.cumsum(lr)])[np.asarray(steps, int)]


def fit_curve(S, loss):
    """L(S) = A·S^-α, a straight line in log-log by least squares. -> dict(A, alpha, rms: the log residual).
    (E + A·S^-α, Chinchilla's form with a floor, fits the few early points of these short runs with E far too
    high: its predictions of the final loss were 0.25-0.5 nats too high, twice this form's error.)"""
    x, y = np.log(np.asarray(S, float)), np.log(np.asarray(loss, float))
    slope, icpt = np.polyfit(x, y, 1)
    return dict(A=math.exp(icpt), alpha=-slope, rms=float(np.sqrt(np.mean((icpt + slope * x - y) ** 2))))


def predict_final(tokens, losses, tokens_per_step, n_steps, cut, warmup=0.05, schedule="cosine"):
    """The final loss predicted from the train-loss log windows (each the mean over the tokens since the previous
    log line: `tokens` its end) that end by cut·(the run's tokens) and start after the warmup; None if fewer than 3.
    Each window is placed at the S of its middle step."""
    tokens, losses = np.asarray(tokens, float), np.asarray(losses, float)
    start = np.concatenate([[0.0], tokens[:-1]])
    keep = (tokens <= cut * n_steps * tokens_per_step + 1e-9) & (start >= warmup * n_steps * tokens_per_step)
    if keep.sum() < 3:
        return None
    mid = (start + tokens)[keep] / 2 / tokens_per_step
    p = fit_curve(lr_area(np.round(mid), n_steps, warmup, schedule), losses[keep])
    return p["A"] * lr_area([n_steps], n_steps, warmup, schedule)[0] ** -p["alpha"]


def extrapolation(points_csv, warmup=0.05, schedule="cosine", cuts=CUTS):
    """Every finished point of a sweep CSV (and its *_curves.csv) predicted from its first cut of the run, for each
    cut: rows of (cut, group: the point's keys but lr and seed, lr, predicted and actual final train loss (the last
    log window's; None if too short to fit), final val loss)."""
    with open(points_csv) as f:
        rows = list(csv.DictReader(f))
    cols = list(rows[0])
    keys = [k for k in cols[:cols.index("status")] if k not in ("name", "lr", "seed")]
    points = {r["name"]: r for r in rows if r["status"] == "done"}
    curves = {}
    with open(points_csv[:-4] + "_curves.csv") as f:
        for r in csv.DictReader(f):
            if r["train_loss"] and r["name"] in points:
                curves.setdefault(r["name"], []).append((float(r["tokens"]), float(r["train_loss"])))
    out = []
    for name, curve in curves.items():
        p = points[name]
        n, total = int(p["n_steps"]), float(p["train_tokens"])
        tokens, losses = map(np.array, zip(*sorted(curve)))
        for c in cuts:
            out.append(dict(cut=c, group=tuple(p[k] for k in keys), lr=float(p["lr"]), final=float(losses[-1]),
                            predicted=predict_final(tokens, losses, total / n, n, c, warmup, schedule),
                            val=float(p["final_val_loss"])))
    return out


def extrapolation_table(paths, warmup=0.05, schedule="cosine"):
    """Markdown rows: per sweep and cut, the error of the predicted final train loss (median and 90th percentile of
    |error|, mean signed) and in how many LR grids (groups of >= 3 points) the predicted best is the real best."""
    lines = ["| sweep | seen | points | median abs error | 90th pct | mean (signed) | best LR picked |",
             "|---|---|---|---|---|---|---|"]
    for path in paths:
        rows = extrapolation(path, warmup, schedule)
        for c in CUTS:
            at = [r for r in rows if r["cut"] == c and r["predicted"] is not None]
            if not at:
                lines.append(f"| {os.path.basename(path)} | {c:.0%} | 0 (too few windows after warmup) | | | | |")
                continue
            err = np.array([r["predicted"] - r["final"] for r in at])
            groups = {}
            for r in at:
                groups.setdefault(r["group"], []).append(r)
            grids = [g for g in groups.values() if len(g) >= 3]
            right = sum(min(g, key=lambda r: r["predicted"])["lr"] == min(g, key=lambda r: r["val"])["lr"] for g in grids)
            lines.append(f"| {os.path.basename(path)} | {c:.0%} | {len(at)} | {np.median(abs(err)):.3f} | "
                         f"{np.percentile(abs(err), 90):.3f} | {err.mean():+.3f} | {right} of {len(grids)} |")
    return lines


def report(runs, fits):
    p = fits[3]
    print(f"{len(runs['N'])} runs, C = {runs['C'].min():.3g} .. {runs['C'].max():.3g} FLOPs")
    for k in NAMES + ("a", "b", "G"):
        ci = f"   95% CI [{p['ci'][k][0]:.4g}, {p['ci'][k][1]:.4g}]" if "ci" in p else ""
        print(f"approach 3: {k:5s} = {p[k]:.4g}{ci}")
    print(f"approach 3: log residual std {p['resid_std']:.3%}")
    for k, f in ((2, fits[2]), (1, fits[1])):
        print(f"approach {k}: " + (f"a = {f['a']:.3f}, b = {f['b']:.3f} from {len(f['C'])} minima" if f else
                                   "skipped (needs bracketed minima at >= 2 budgets / curves of >= 3 sizes)"))

def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("path", help="runs.csv or a folder of train.py runs")
    common.add_argument("--params", default="active", choices=COUNTS, help="which count is N (run folders)")
    common.add_argument("--delta", type=float, default=1e-3, help="Huber δ on log-loss residuals")
    common.add_argument("--boot", type=int, default=0, help="bootstrap resamples for 95%% CIs (0: none)")
    common.add_argument("--seed", type=int, default=0)
    common.add_argument("--plots", help="folder for isoflop.png, optimal.png, pred_vs_obs.png")
    common.add_argument("--csv", help="also write the runs table (name, N, D, C, loss) to this CSV")
    sub.add_parser("fit", parents=[common])
    g = sub.add_parser("optimal", parents=[common]).add_mutually_exclusive_group(required=True)
    g.add_argument("--flops", type=float, help="compute budget C")
    g.add_argument("--loss", type=float, help="target loss: allocate the smallest budget that reaches it")
    sub.add_parser("bench").add_argument("--runs", type=int, default=250)
    c = sub.add_parser("curves", help="predict sweeps' final losses from their first 10/20/30%% (learning curves)")
    c.add_argument("csvs", nargs="+", help="sweep CSVs, each with its *_curves.csv")
    c.add_argument("--schedule", default="cosine", choices=("cosine", "constant"))
    c.add_argument("--warmup", type=float, default=0.05, help="the runs' warmup fraction")
    s = sub.add_parser("isoflop", help="print the train.py commands of IsoFLOP profiles")
    s.add_argument("--budgets", type=float, nargs="+", default=[1e13, 3e13, 1e14])
    s.add_argument("--widths", type=int, nargs="+", default=[64, 128, 192, 256, 384])
    s.add_argument("--aspect", type=int, default=64, help="depth rule: n_layers = d_model / aspect")
    s.add_argument("--head_dim", type=int, default=64, help="a narrower width gets one head of its width")
    s.add_argument("--params", default="active", choices=COUNTS, help="which count is N")
    s.add_argument("--config", default="configs/tiny_gpt2.py"), s.add_argument("--out", default="out/sweep")
    s.add_argument("--seq_len", type=int, help="for the time estimate only (default: the config's)")
    s.add_argument("--flops_per_s", type=float, default=1e11, help="for the time estimate only")
    s.add_argument("--set", nargs="+", default=[], metavar="KEY=VALUE", help="train.py settings for every run")
    a = ap.parse_args(argv)
    if a.cmd == "curves":
        print("\n".join(extrapolation_table(a.csvs, a.warmup, a.schedule)))
    elif a.cmd == "isoflop":
        print("\n".join(isoflop(a.budgets, a.widths, a.aspect, a.head_dim, a.params, a.config, a.out, a.seq_len,
                                a.flops_per_s, a.set)))
    elif a.cmd == "bench":  # the grid fit of approach 3 on noisy runs spanning N 1e7..1e10, D 1e8..1e12
        rng = np.random.default_rng(0)
        N, D = 10 ** rng.uniform(7, 10, a.runs), 10 ** rng.uniform(8, 12, a.runs)
        loss = law(law_params(1.69, 406.4, 410.7, .34, .28), N, D) * np.exp(.01 * rng.standard_normal(a.runs))
        t = time.perf_counter()
        p = fit_approach3(N, D, loss)
        print(f"approach 3, {a.runs} runs, {len(init_grid())} starts: {time.perf_counter() - t:.2f} s; "
              + ", ".join(f"{k} {p[k]:.4g}" for k in NAMES))
    else:
        runs, fits = fit_all(a.path, a.params, a.delta, a.boot, a.seed)
        report(runs, fits)
        if a.cmd == "optimal":
            C = a.flops or flops_for_loss(fits[3], a.loss)
            print(f"budget C = {C:.4g} FLOPs")
            for k, r in optimal(fits, C).items():
                print(f"approach {k}: N_opt {r['N']:.4g}  D_opt {r['D']:.4g}  D/N {r['tpp']:.1f}  loss {r['loss']:.4f}")
        if a.plots:
            plot(runs, fits, a.plots)
        if a.csv:
            save_csv(runs, a.csv)

if __name__ == "__main__":
    try:
        main()
    except (ValueError, FileNotFoundError) as e:
        fail(str(e))
