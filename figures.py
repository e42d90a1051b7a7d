"""The paper's batch-size figures, from the CSVs that sweep.py writes, and the numbers behind its claims.

    python figures.py assets/sweeps/fig1a.csv assets/sweeps/fig5.csv
    python figures.py --finetune assets/sweeps/finetune.csv
    python figures.py --budget assets/sweeps/budget.csv assets/sweeps/fig1a.csv
    python figures.py assets/sweeps/fig1a.csv assets/sweeps/fig5.csv --docs   # and writes them into the docs

writes next to the first CSV: fig1a.png (best val loss by batch size, per optimizer: paper Fig. 1a),
lr.png (val loss against LR at each batch size: Fig. 3's robustness), t2.png (Adam's loss against t2
around its best), fig5.png (β2 = 0.95 at every batch size against t2 fixed: Fig. 5) and curves.png
(train loss against tokens of each batch size's best run, and its difference from the smallest batch's),
and prints the claims table (README). Every finite point lies inside its panel; a point that diverged is an
x in a band above the data, past a dotted line. Where a sweep has seeds, a loss is their mean, the best LR
the lowest mean among the LRs with the most seeds, error bars and '±' their standard deviation, and a
difference within twice that a tie.
--docs: also writes the tables and claims into the README and docs/experiments.md, between their
`<!-- figures.py NAME -->` and `<!-- end -->` lines (tests/test_figures.py checks they are what this prints).
--budget: the budget control (sweeps/budget.py: 4x the tokens) beside fig1a: budget.png and its table.
--finetune: the fine-tuning comparison (sweeps/finetune.py): finetune.png (exact match against LR, per way)
and its table (README "Fine-tuning").
--mup: μP's experiments (sweeps/mup_transfer.py, sweeps/stability.py; docs/mup.md): transfer.png (val loss
against LR at each width, SP above μP) and stability.png, and their tables.
"""
import argparse
import csv
import math
import os
from collections import defaultdict
from common import atomic_write, fail, number

OPTIMIZERS = {"sgd": "SGD", "adafactor": "Adafactor", "adamw": "Adam", "muon": "Muon", "signum": "Signum"}
DIVERGED = dict(ms=7, mew=1.5, gid="diverged")  # a diverged point: an x (fmt "x") in the band above the data


def read(path):
    """Rows of a sweep CSV with numbers as floats (None where empty)."""
    with open(path) as f:
        return [{k: number(v, ints=False) for k, v in r.items()} for r in csv.DictReader(f)]


def seeds(rows, opt, B):
    """{lr: [final val loss of each seed (inf: diverged)]} of the grid points of (optimizer, batch size) and their
    seeds (sweep.py's seed rule marks them variant "seed")."""
    losses = defaultdict(list)
    for r in rows:
        if (r["optimizer"], r["batch_size"]) == (opt, B) and r["variant"] in (None, "seed") \
                and r["status"] in ("done", "diverged"):
            losses[r["lr"]].append(r["final_val_loss"] if r["status"] == "done" else math.inf)
    return dict(sorted(losses.items()))


def mean_std(v):
    """(mean, sample standard deviation (0 for one seed), number of seeds) of a list of losses."""
    m = math.fsum(v) / len(v)
    return m, math.sqrt(math.fsum((x - m) ** 2 for x in v) / (len(v) - 1)) if len(v) > 1 and m < math.inf else 0.0, len(v)


def by_lr(rows, opt, B):
    """{lr: mean final val loss over seeds (inf: a seed diverged)} of (optimizer, batch size)."""
    return {lr: mean_std(v)[0] for lr, v in seeds(rows, opt, B).items()}


def best(rows, opt, B, spread=False):
    """(lr, mean loss) of the best LR of (optimizer, batch size) by the mean over seeds, among the LRs with the
    most seeds (an LR run once is not compared with three seeds' mean); (lr, mean, std, n) with spread=True.
    None if nothing finished."""
    s = {lr: mean_std(v) for lr, v in seeds(rows, opt, B).items()}
    n = max((x[2] for x in s.values() if x[0] < math.inf), default=0)
    done = {lr: x for lr, x in s.items() if x[0] < math.inf and x[2] == n}
    if any(r["status"] not in ("done", "diverged", "failed") for r in rows if (r["optimizer"], r["batch_size"]) ==
           (opt, B) and r["variant"] == "seed"):  # seeds still running: choose on seed 0, as the sweep does
        grid = {r["lr"]: r["final_val_loss"] for r in rows if (r["optimizer"], r["batch_size"], r["variant"]) ==
                (opt, B, None) and r["status"] == "done" and not r.get("seed")}
        done = {lr: s[lr] for lr in sorted(grid, key=grid.get)[:1]}
    lr = min(done, key=lambda lr: done[lr][0], default=None)
    return None if lr is None else (lr, *done[lr]) if spread else (lr, done[lr][0])


def versus(a, b):
    """a's mean minus b's, each (lr, mean, std, n): '+0.031', or '+0.004 (tie)' when the difference is smaller
    than twice the larger of the seeds' standard deviations (of the side that has seeds, where one has only one
    run: a single run is as noisy as one seed of the other). Neither side with seeds: no spread to judge by."""
    d, tie = a[1] - b[1], max(a[3], b[3]) > 1 and abs(a[1] - b[1]) < 2 * max(a[2], b[2])
    return f"{d:+.3f}" + " (tie)" * tie


def cell(b):
    """A table cell of a best (lr, mean, std, n): '1.600 ± 0.008 (0.002)', the ± where there are seeds."""
    return (f"{b[1]:.3f} ± {b[2]:.3f}" if b[3] > 1 else f"{b[1]:.3f}") + f" ({b[0]:.3g})" if b else "–"


def batch_sizes(rows):
    return sorted({int(r["batch_size"]) for r in rows})


def optimizers(rows):
    return [o for o in OPTIMIZERS if any(r["optimizer"] == o for r in rows)]


def line(ax, pts, fmt, **kw):
    """ax.plot of (x, y) pairs; nothing for none (ax.plot would draw the format string as data)."""
    return ax.plot(*zip(*pts), fmt, **kw)[0] if pts else None


def y_range(ax, losses):
    """y limits showing every finite loss; if some are inf (diverged), a band above them, past a dotted line,
    where the x's go. Returns the band's y."""
    finite = [v for v in losses if v < math.inf] or [0.0]
    lo, hi = min(finite), max(finite)
    pad = 0.05 * (hi - lo) or 0.05
    if any(v == math.inf for v in losses):
        ax.axhline(hi + 2 * pad, color="0.6", ls=":", lw=0.8)
        ax.set_ylim(lo - pad, hi + 4.5 * pad)
    else:
        ax.set_ylim(lo - pad, hi + pad)
    return hi + 3.2 * pad


def legend(axes, **kw):
    """One legend for the panels (on the last), with an entry for the x's when a panel has any."""
    entries = {h.get_label(): h for ax in axes for h in ax.get_legend_handles_labels()[0]}
    if any(line.get_gid() == "diverged" for ax in axes for line in ax.get_lines()):
        entries["diverged (above the dotted line)"] = axes[-1].plot([], [], "x", color="0.3", **DIVERGED)[0]
    axes[-1].legend(entries.values(), entries.keys(), **kw)


def errorbars(ax, pts, **kw):
    """The std bars of (x, mean, std) points that have seeds, with no line of their own (the line is line()'s)."""
    if pts := [p for p in pts if p[2] > 0]:
        ax.errorbar(*zip(*pts), fmt="none", capsize=3, **kw)


def plot_fig1a(rows, ax):
    for i, o in enumerate(optimizers(rows)):
        pts = [(B, b[1], b[2]) for B in batch_sizes(rows) if (b := best(rows, o, B, spread=True))]
        line(ax, [p[:2] for p in pts], "o-", color=f"C{i}", label=OPTIMIZERS[o])
        errorbars(ax, pts, color=f"C{i}")
    ax.set(xscale="log", xlabel="batch size (sequences)", ylabel="best val loss (nats/byte)",
           title="Best loss by batch size (Fig. 1a; bars: ± std over seeds)")
    ax.set_xticks(batch_sizes(rows), batch_sizes(rows))
    ax.legend()


def plot_lr(rows, axes):
    from matplotlib.ticker import NullFormatter
    for ax, o in zip(axes, optimizers(rows)):
        curves = {B: d for B in batch_sizes(rows) if (d := by_lr(rows, o, B))}
        top = y_range(ax, [v for d in curves.values() for v in d.values()])
        for B, d in curves.items():
            color = f"C{batch_sizes(rows).index(B)}"
            line(ax, [(lr, v) for lr, v in d.items() if v < math.inf], "o-", ms=3, color=color, label=f"B {B}")
            line(ax, [(lr, top) for lr, v in d.items() if v == math.inf], "x", color=color, **DIVERGED)
        ax.set(xscale="log", xlabel="peak LR", title=f"{OPTIMIZERS[o]}: loss vs LR (Fig. 3)")
        ax.xaxis.set_minor_formatter(NullFormatter())  # 2x10^-1, 3x10^-1, ... overlap on a narrow panel
    axes[0].set_ylabel("final val loss")
    legend(axes, fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1))  # beside the panels: over no data


def t2_scan(rows, B):
    """{t2 / t2 of the grid: loss} of Adam at batch size B at the LR its t2 variants were run at (the sweep's
    best seed-0 LR), the grid point's loss at seed 0, as the variants'."""
    pts = [r for r in rows if r["optimizer"] == "adamw" and r["batch_size"] == B and r["variant"] == "t2"
           and r["status"] in ("done", "diverged")]
    grid = [r for r in rows if pts and (r["optimizer"], r["batch_size"], r["lr"], r["variant"]) ==
            ("adamw", B, pts[0]["lr"], None) and r["status"] in ("done", "diverged") and not r.get("seed")]
    losses = defaultdict(list)
    for r in pts + grid if grid else []:
        losses[r["t2"] / grid[0]["t2"]].append(r["final_val_loss"] if r["status"] == "done" else math.inf)
    return {f: sum(v) / len(v) for f, v in sorted(losses.items())}


def plot_t2(rows, ax):
    from matplotlib.ticker import NullFormatter
    scans = {B: t2_scan(rows, B) for B in sorted({min(batch_sizes(rows)), max(batch_sizes(rows))})}
    top = y_range(ax, [v for d in scans.values() for v in d.values()])
    for i, (B, d) in enumerate(scans.items()):
        line(ax, [(f, v) for f, v in d.items() if v < math.inf], "o-", color=f"C{i}", label=f"B {B}")
        line(ax, [(f, top) for f, v in d.items() if v == math.inf], "x", color=f"C{i}", **DIVERGED)
    factors = sorted({f for d in scans.values() for f in d})
    ax.set(xscale="log", xlabel="t2 / grid t2 (at the best LR)", ylabel="final val loss", title="Adam: loss vs t2")
    ax.set_xticks(factors, [f"1/{1 / f:g}" if f < 1 else f"{f:g}" for f in factors])  # the factors tried, by name
    ax.xaxis.set_minor_formatter(NullFormatter())  # matplotlib's own labels of a 2-decade axis overlap
    legend([ax])


def plot_fig5(rows, rows95, ax):
    sets = (rows, "t2 fixed"), (rows95, "β2 = 0.95 at every batch size")
    bests = [{B: (b[1:3] if (b := best(rs, "adamw", B, spread=True)) else (math.inf, 0.0)) for B in batch_sizes(rs)
              if by_lr(rs, "adamw", B)} for rs, _ in sets]
    top = y_range(ax, [v for d in bests for v, _ in d.values()])
    for i, (d, (_, label)) in enumerate(zip(bests, sets)):
        line(ax, [(B, v) for B, (v, _) in d.items() if v < math.inf], "o-", color=f"C{i}", label=label)
        errorbars(ax, [(B, v, s) for B, (v, s) in d.items() if v < math.inf], color=f"C{i}")
        line(ax, [(B, top) for B, (v, _) in d.items() if v == math.inf], "x", color=f"C{i}", **DIVERGED)
    ax.set(xscale="log", xlabel="batch size (sequences)", ylabel="best val loss",
           title="Adam: β2 fixed vs t2 fixed (Fig. 5)")
    ax.set_xticks(batch_sizes(rows), batch_sizes(rows))
    legend([ax])


def plot_curves(rows, curves, axes, opt="adamw"):
    """Left: train loss against tokens of each batch size's best run, all of it (log y); right: each run's loss
    minus the smallest batch's at the same tokens (symlog y: linear within ±0.02), where curves that the left
    panel draws on top of each other come apart. Styles differ per batch size; smaller batches are on top."""
    import numpy as np
    from matplotlib.ticker import ScalarFormatter
    runs = {}
    for B in batch_sizes(rows):
        if b := best(rows, opt, B):
            name = next(r["name"] for r in rows if r["optimizer"] == opt and r["batch_size"] == B and r["lr"] == b[0]
                        and r["variant"] is None)
            pts = [(c["tokens"], c["train_loss"]) for c in curves if c["name"] == name and c["train_loss"] is not None]
            if pts:
                runs[B] = b[0], np.array(pts).T
    if not runs:
        return
    B0, (_, (t0, l0)) = next(iter(runs.items()))
    diffs = [0.0]
    for i, (B, (lr, (t, loss))) in enumerate(runs.items()):
        style = dict(color=f"C{i}", ls=("-", "--", "-.", ":")[i % 4], marker="os^vD"[i % 5], ms=3, zorder=10 - i,
                     label=f"B {B}, lr {lr:g}")
        axes[0].plot(t, loss, **style)
        inside = (t >= t0.min()) & (t <= t0.max())
        axes[1].plot(t[inside], d := loss[inside] - np.interp(t[inside], t0, l0), **style)
        diffs += list(d)
    axes[0].set(xlabel="tokens", ylabel="train loss (window mean)", yscale="log",
                title=f"{OPTIMIZERS[opt]}: best run of each batch size")
    axes[0].yaxis.set_major_formatter(ScalarFormatter())  # 2, 3, 4 rather than 2x10^0, ...
    axes[0].yaxis.set_minor_formatter(ScalarFormatter())
    axes[1].axhline(0, color="0.6", lw=0.8)
    axes[1].set_yscale("symlog", linthresh=0.02)
    axes[1].set_ylim(min(2 * min(diffs), -0.02), max(2 * max(diffs), 0.02))  # every point, past the edges
    axes[1].set(xlabel="tokens", ylabel=f"train loss − B {B0}'s", title=f"difference from batch size {B0}")
    axes[0].legend(fontsize=7)


def claims(rows, rows95=None):
    """The README's table: the paper's claims (a)-(d) next to what the sweeps show, as markdown lines. A loss
    is the mean over seeds ± their standard deviation; a difference within twice that is a tie (versus)."""
    Bs, opts = batch_sizes(rows), optimizers(rows)
    bests = {(o, B): best(rows, o, B, spread=True) for o in opts for B in Bs}
    out = ["| batch size | " + " | ".join(f"{OPTIMIZERS[o]} best (LR)" for o in opts) + " |",
           "|---" * (len(opts) + 1) + "|"]
    out += [f"| {B} | " + " | ".join(cell(bests[o, B]) for o in opts) + " |" for B in Bs]
    for o in opts:  # (a)
        b = {B: x for B in Bs if (x := bests[o, B])}
        if b:
            top = min(b, key=lambda B: b[B][1])
            out.append(f"(a) {OPTIMIZERS[o]}: best at batch size {top}; others minus it: " +
                       ", ".join(f"B {B} {versus(b[B], b[top])}" for B in Bs if B != top and B in b))
    if {"sgd", "adamw"} <= set(opts):  # (b)
        gap = [f"B {B}: {versus(bests['sgd', B], bests['adamw', B])}" for B in Bs
               if bests["sgd", B] and bests["adamw", B]]
        out.append("(b) SGD minus Adam: " + ", ".join(gap))
    if rows95:  # (c)
        for B in Bs:
            fixed, b95 = bests.get(("adamw", B)), best(rows95, "adamw", B, spread=True)
            if fixed and by_lr(rows95, "adamw", B):
                out.append(f"(c) B {B}: Adam t2 fixed {cell(fixed)}, β2 = 0.95 " +
                           (f"{cell(b95)}: {versus(b95, fixed)}" if b95 else "diverged at every LR tried"))
    for o in opts:  # (d)
        for B in (Bs[0], Bs[-1]):
            b, d = bests[o, B], by_lr(rows, o, B)
            if b:
                ex = [f"x{lr / b[0]:g}: " + ("div" if v == math.inf else f"{v - b[1]:+.3f}") for lr, v in d.items()
                      if lr != b[0] and 1 / 8.01 < lr / b[0] < 8.01]
                out.append(f"(d) {OPTIMIZERS[o]} B {B}: loss - best at LR " + ", ".join(ex))
    for B in (Bs[0], Bs[-1]):
        if d := t2_scan(rows, B):
            out.append(f"(d) Adam B {B}: loss - best at t2 " + ", ".join(
                f"x{f:g}: " + ("div" if v == math.inf else f"{v - d[1.0]:+.3f}") for f, v in sorted(d.items()) if f != 1))
    return out


def budget_table(rows, rows2m):
    """The budget control (sweeps/budget.py, 4x tokens) beside fig1a at the same batch sizes: each (optimizer,
    batch size)'s best at both budgets, then per budget the batch sizes best first and SGD minus Adam."""
    Bs, opts = batch_sizes(rows), [o for o in optimizers(rows) if o in optimizers(rows2m)]
    sets = [(rows2m, "fig1a"), (rows, "4x tokens")]
    bests = {(o, B, k): best(rs, o, B, spread=True) for o in opts for B in Bs for k, (rs, _) in enumerate(sets)}
    out = ["| batch size (steps at 4x) | " + " | ".join(f"{OPTIMIZERS[o]}, {name}" for o in opts for _, name in sets)
           + " |", "|---" * (1 + 2 * len(opts)) + "|"]
    steps = {int(r["batch_size"]): int(r["n_steps"]) for r in rows if r.get("n_steps")}
    out += [f"| {B} ({steps.get(B, '?')}) | " + " | ".join(cell(bests[o, B, k]) for o in opts for k in range(2)) + " |"
            for B in Bs]
    for k, (_, name) in enumerate(sets):
        for o in opts:
            b = {B: x for B in Bs if (x := bests[o, B, k])}
            if len(b) > 1:
                top = min(b, key=lambda B: b[B][1])
                out.append(f"{name}: {OPTIMIZERS[o]} best at batch size {top}; others minus it: " +
                           ", ".join(f"B {B} {versus(b[B], b[top])}" for B in Bs if B != top and B in b))
        if {"sgd", "adamw"} <= set(opts):
            out.append(f"{name}: SGD minus Adam: " + ", ".join(
                f"B {B}: {versus(bests['sgd', B, k], bests['adamw', B, k])}" for B in Bs
                if bests["sgd", B, k] and bests["adamw", B, k]))
    return out


def plot_budget(rows, rows2m, ax):
    """Best loss against batch size per optimizer: fig1a's budget dashed, 4x tokens solid."""
    for i, o in enumerate(o for o in optimizers(rows) if o in optimizers(rows2m)):
        for rs, ls, name in ((rows2m, "--", "fig1a"), (rows, "-", "4x tokens")):
            pts = [(B, b[1], b[2]) for B in batch_sizes(rows) if (b := best(rs, o, B, spread=True))]
            line(ax, [p[:2] for p in pts], "o" + ls, color=f"C{i}", label=f"{OPTIMIZERS[o]}, {name}")
            errorbars(ax, pts, color=f"C{i}")
    ax.set(xscale="log", xlabel="batch size (sequences)", ylabel="best val loss (nats/byte)",
           title="Budget control: 2M vs 8M tokens")
    ax.set_xticks(batch_sizes(rows), batch_sizes(rows))
    ax.legend(fontsize=7)


def way(r):
    """The fine-tuning comparison's name of a row of sweeps/finetune.py's CSV."""
    bf16 = ", bf16 + SR" if r.get("param_dtype") == "bfloat16" else ""
    if r.get("lora_rank"):
        return f"LoRA r {int(r['lora_rank'])} ({OPTIMIZERS[r['optimizer']]}), batch {int(r['batch_size'])}" + \
            (", bf16 base" if bf16 else "")
    return f"{OPTIMIZERS[r['optimizer']]}, batch {int(r['batch_size'])}{bf16}"


def finetune_by_lr(rows):
    """{way: [(lr, mean exact match, mean val loss, rows)] by LR}: seeds averaged, finished runs only."""
    groups = defaultdict(list)
    for r in rows:
        if r["status"] == "done" and r.get("final_val_accuracy") is not None:
            groups[way(r), r["lr"]].append(r)
    out = defaultdict(list)
    for (w, lr), rs in sorted(groups.items(), key=lambda x: x[0][1]):
        out[w].append((lr, sum(r["final_val_accuracy"] for r in rs) / len(rs),
                       sum(r["final_val_loss"] for r in rs) / len(rs), rs))
    return out


def finetune_table(rows):
    """The README's table: each way's best LR by mean exact match (ties: the lower val loss), the exact match
    of each seed there and at the LRs a factor ~3 below and above, its val loss and memory; best first."""
    out = ["| way | runs (diverged) | best LR | exact match (seeds) | at LR ÷3 | at LR ×3 | val loss | "
           "peak RSS (MiB) | wall (s) |", "|---|---|---|---|---|---|---|---|---|"]
    def pct(g):  # mean exact match (each seed's, when there are several)
        seeds = ", ".join(f"{r['final_val_accuracy']:.1%}" for r in g[3]) if g and len(g[3]) > 1 else ""
        return f"{g[1]:.1%}" + (f" ({seeds})" if seeds else "") if g else "-"
    table = {w: max(gs, key=lambda g: (g[1], -g[2])) for w, gs in finetune_by_lr(rows).items()}
    for w, b in sorted(table.items(), key=lambda x: -x[1][1]):
        gs = finetune_by_lr(rows)[w]
        below = next((g for g in reversed(gs) if 0.2 < g[0] / b[0] < 0.9), None)
        above = next((g for g in gs if 1.1 < g[0] / b[0] < 5), None)
        n_div = sum(way(r) == w and r["status"] == "diverged" for r in rows)
        runs = sum(len(g[3]) for g in gs) + n_div
        mem = sum(r["peak_memory_mb"] for r in b[3]) / len(b[3])
        out.append(f"| {w} | {runs} ({n_div}) | {b[0]:.2g} | **{pct(b)}** | {pct(below)} | {pct(above)} | "
                   f"{b[2]:.3f} | {mem:,.0f} | {sum(r['wall_s'] for r in b[3]) / len(b[3]):.0f} |")
    return out


def plot_finetune(rows, ax):
    for w, gs in finetune_by_lr(rows).items():
        ax.plot([g[0] for g in gs], [100 * g[1] for g in gs], "o-", label=w)
    ax.set(xscale="log", xlabel="learning rate (constant)", ylabel="exact match on 500 held-out prompts (%)",
           title="fine-tuning in miniature: 3-digit addition (seeds averaged)")
    ax.legend(fontsize=8)


def mean_by(rows, key, match):
    """{rows' key value: (mean final val loss over seeds, inf if any diverged, or None while unfinished; n)} of
    the rows matching `match` (a dict of column values)."""
    out = defaultdict(list)
    for r in rows:
        if all(r.get(k) == v for k, v in match.items()) and r["status"] in ("done", "diverged"):
            out[r[key]].append(r["final_val_loss"] if r["status"] == "done" else math.inf)
    return {k: (sum(v) / len(v), len(v)) for k, v in sorted(out.items())}


def transfer_groups(rows):
    return sorted({(r["optimizer"], int(r["batch_size"])) for r in rows}, key=lambda g: (g[0] != "adamw", g))


def plot_transfer(rows, axes):
    """axes [2, groups]: val loss (seeds averaged) against LR, a line per width; SP above, μP below."""
    widths = sorted({int(r["d_model"]) for r in rows})
    for c, (o, B) in enumerate(transfer_groups(rows)):
        for r, p in enumerate(("sp", "mup")):
            ax, losses = axes[r][c], []
            curves = {D: mean_by(rows, "lr", dict(optimizer=o, batch_size=B, parametrization=p, d_model=D)) for D in widths}
            losses = [v for cur in curves.values() for v, _ in cur.values()]
            band = y_range(ax, losses)
            for i, (D, cur) in enumerate(curves.items()):
                color = f"C{i}"
                line(ax, [(lr, v) for lr, (v, _) in cur.items() if v < math.inf], "o-", color=color, ms=3, label=f"D {D}")
                line(ax, [(lr, band) for lr, (v, _) in cur.items() if v == math.inf], "x", color=color, **DIVERGED)
                if (b := min(((v, lr) for lr, (v, _) in cur.items()), default=None)) and b[0] < math.inf:
                    ax.plot(b[1], b[0], "*", color=color, ms=11, mec="k", mew=0.5)
            ax.set(xscale="log", title=f"{p.upper()}: {OPTIMIZERS[o]}, batch {B}", xlabel="peak LR (at the base width)")
            if c == 0:
                ax.set_ylabel("final val loss (nats/byte)")
    legend([a for row in axes for a in row], fontsize=7)


def transfer_table(rows):
    """Per group and parametrization: each width's best LR (seeds averaged), its drift in grid steps (x2)
    from the narrowest to the widest, and the loss at the base width's best LR at every width."""
    widths = sorted({int(r["d_model"]) for r in rows})
    out = ["| optimizer, batch | param | best LR at D " + " / ".join(map(str, widths)) +
           " | spread (x2 steps) | val loss at D 64's best LR, by width |", "|---|---|---|---|---|"]
    for o, B in transfer_groups(rows):
        for p in ("sp", "mup"):
            curves = {D: mean_by(rows, "lr", dict(optimizer=o, batch_size=B, parametrization=p, d_model=D)) for D in widths}
            bests = {D: min(((v, lr) for lr, (v, _) in c.items() if v < math.inf), default=(None, None)) for D, c in curves.items()}
            found = [lr for _, lr in bests.values() if lr]
            spread = f"{math.log2(max(found) / min(found)):.0f}" if len(found) == len(widths) else "-"
            lr64 = bests.get(64, (None, None))[1]
            at = [curves[D].get(lr64, (None, 0))[0] for D in widths]
            out.append(f"| {OPTIMIZERS[o]}, {B} | {p.upper()} | " + " / ".join(f"{lr:g}" if lr else "-" for _, lr in bests.values()) +
                       f" | {spread} | " + " / ".join("-" if v is None else "div." if v == math.inf else f"{v:.3f}" for v in at) + " |")
    return out


def stability_table(rows):
    """Per batch size, LR multiple and (qk_norm, z_loss): diverged runs, loss spikes, mean final val loss,
    the largest attention and output logits any seed's log saw."""
    out = ["| batch | LR (x best) | qk-norm | z-loss | diverged | loss spikes | final val loss | max attn logit | max logit |",
           "|---|---|---|---|---|---|---|---|---|"]
    for B in batch_sizes(rows):
        base = min(r["lr"] for r in rows if r["batch_size"] == B)
        for f in sorted({round(r["lr"] / base) for r in rows if r["batch_size"] == B}):
            for qk in (True, False):
                for z in (0.0, 1e-4):
                    rs = [r for r in rows if r["batch_size"] == B and round(r["lr"] / base) == f and
                          str(r["qk_norm"]) == str(qk) and r["z_loss"] == z and r["status"] in ("done", "diverged")]
                    if not rs:
                        continue
                    done = [r["final_val_loss"] for r in rs if r["status"] == "done"]
                    top = lambda k: max((r[k] for r in rs if r.get(k) is not None), default=None)
                    fmt = lambda v: "-" if v is None else f"{v:.1f}"
                    out.append(f"| {B} | {f} | {'on' if qk else 'off'} | {z:g} | {len(rs) - len(done)}/{len(rs)} | "
                               f"{sum(int(r['loss_spikes'] or 0) for r in rs)} | "
                               f"{(sum(done) / len(done)) if done else math.inf:.3f} | {fmt(top('max_attn_logit'))} | "
                               f"{fmt(top('max_logit'))} |")
    return out


def plot_stability(rows, axes):
    """axes [batch sizes]: final val loss (seeds averaged) against the LR's multiple of the best, a line per
    (qk-norm, z-loss)."""
    for ax, B in zip(axes, batch_sizes(rows)):
        sub = [r for r in rows if r["batch_size"] == B]
        base = min(r["lr"] for r in sub)
        curves = {(qk, z): mean_by([dict(r, mult=r["lr"] / base) for r in sub], "mult", dict(qk_norm=qk, z_loss=z))
                  for qk in (True, False) for z in (0.0, 1e-4)}
        band = y_range(ax, [v for c in curves.values() for v, _ in c.values()])
        for i, ((qk, z), c) in enumerate(curves.items()):
            label = f"qk-norm {'on' if qk else 'off'}, z-loss {z:g}"
            line(ax, [(m, v) for m, (v, _) in c.items() if v < math.inf], "o-", color=f"C{i}", label=label)
            line(ax, [(m, band) for m, (v, _) in c.items() if v == math.inf], "x", color=f"C{i}", **DIVERGED)
        ax.set(xscale="log", xlabel="LR / best LR", ylabel="final val loss (nats/byte)", title=f"Adam, batch {B}")
        ax.set_xticks([1, 4, 16], ["1", "4", "16"])
        ax.minorticks_off()
    legend(list(axes), fontsize=7)


def main_mup(paths, plt):
    for path in paths:
        rows, d = read(path), os.path.dirname(path)
        for r in rows:  # True/False as read from the CSV
            r["qk_norm"] = {"True": True, "False": False}.get(r.get("qk_norm"), r.get("qk_norm", True))
        if "d_model" in rows[0]:
            fig_axes = plt.subplots(2, len(transfer_groups(rows)), figsize=(4 * len(transfer_groups(rows)), 7),
                                    squeeze=False)[1]
            plot_transfer(rows, fig_axes)
            save(plt, os.path.join(d, "transfer.png"))
            print("\n".join(transfer_table(rows)))
        else:
            plot_stability(rows, plt.subplots(1, len(batch_sizes(rows)), figsize=(5 * len(batch_sizes(rows)), 4),
                                              squeeze=False)[1][0])
            save(plt, os.path.join(d, "stability.png"))
            print("\n".join(stability_table(rows)))
        plt.close("all")


def moe_name(r):
    return "MoE 8 experts, top 2" if int(r.get("n_experts") or 0) else "dense"


def moe_table(rows):
    """Per batch size and model: the best LR (seeds averaged), its val loss per seed and mean, tokens/s at it, and
    the MoE's dropped fraction and busiest expert's load (max / mean) at the end of the run."""
    out = ["| batch | model | best LR | val loss (seeds) | mean | tokens/s | dropped | max / mean load |",
           "|---|---|---|---|---|---|---|---|"]
    for B in batch_sizes(rows):
        for name in sorted({moe_name(r) for r in rows}, key=lambda n: n != "dense"):
            sub = [dict(r, model=moe_name(r)) for r in rows if r["batch_size"] == B and moe_name(r) == name]
            cur = {lr: v for lr, (v, _) in mean_by(sub, "lr", {}).items() if v < math.inf}
            if not cur:
                continue
            lr = min(cur, key=cur.get)
            at = [r for r in sub if r["lr"] == lr and r["status"] == "done"]
            mean = lambda k: sum(float(r[k]) for r in at) / len(at) if all(r.get(k) not in (None, "") for r in at) else None
            fmt = lambda v, f: "-" if v is None else format(v, f)
            out.append(f"| {B} | {name} | {lr:g} | " + " / ".join(f"{r['final_val_loss']:.4f}" for r in at) +
                       f" | {cur[lr]:.4f} | {fmt(mean('tokens_per_s'), ',.0f')} | {fmt(mean('dropped'), '.3f')} | "
                       f"{fmt(mean('max_load'), '.2f')} |")
    return out


def plot_moe(rows, axes):
    """axes [batch sizes]: final val loss (seeds averaged) against LR, dense next to MoE."""
    for ax, B in zip(axes, batch_sizes(rows)):
        sub = [dict(r, model=moe_name(r)) for r in rows if r["batch_size"] == B]
        curves = {m: mean_by(sub, "lr", dict(model=m)) for m in sorted({r["model"] for r in sub}, key=lambda n: n != "dense")}
        band = y_range(ax, [v for c in curves.values() for v, _ in c.values()])
        for i, (m, c) in enumerate(curves.items()):
            line(ax, [(lr, v) for lr, (v, _) in c.items() if v < math.inf], "o-", color=f"C{i}", label=m)
            line(ax, [(lr, band) for lr, (v, _) in c.items() if v == math.inf], "x", color=f"C{i}", **DIVERGED)
        ax.set(xscale="log", xlabel="peak LR", ylabel="final val loss (nats/byte)", title=f"Adam, batch {B}")
    legend(list(axes), fontsize=8)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("csv", help="the fig1a sweep's CSV (optimizers x batch sizes x LR)")
    ap.add_argument("csv95", nargs="?", help="the fig5 sweep's CSV (Adam, β2 = 0.95 at every batch size)")
    ap.add_argument("--finetune", action="store_true", help="csv is sweeps/finetune.py's: its figure and table")
    ap.add_argument("--mup", action="store_true", help="the CSVs are sweeps/mup_transfer.py's and/or stability.py's")
    ap.add_argument("--moe", action="store_true", help="csv is sweeps/moe.py's: MoE against dense")
    ap.add_argument("--budget", action="store_true", help="csv is sweeps/budget.py's, the second fig1a's: 4x tokens")
    ap.add_argument("--docs", action="store_true", help="also write the tables and claims into README.md and "
                                                        "docs/experiments.md (fig1a + fig5, or --budget)")
    a = ap.parse_args(argv)
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    if a.mup:
        return main_mup([a.csv] + ([a.csv95] if a.csv95 else []), plt)
    if a.moe:
        rows = read(a.csv)
        plot_moe(rows, plt.subplots(1, len(batch_sizes(rows)), figsize=(5 * len(batch_sizes(rows)), 4), squeeze=False)[1][0])
        save(plt, os.path.join(os.path.dirname(a.csv), "moe.png"))
        return print("\n".join(moe_table(rows)))
    if a.budget:
        rows, rows2m = read(a.csv), read(a.csv95)
        plot_budget(rows, rows2m, plt.subplots(figsize=(6, 4))[1])
        save(plt, os.path.join(os.path.dirname(a.csv), "budget.png"))
        lines = budget_table(rows, rows2m)
        if a.docs:
            write_docs("budget", lines)
        return print("\n".join(lines))
    if a.finetune:
        plot_finetune(read(a.csv), plt.subplots(figsize=(6, 4))[1])
        save(plt, os.path.join(os.path.dirname(a.csv), "finetune.png"))
        return print("\n".join(finetune_table(read(a.csv))))
    rows, rows95 = read(a.csv), read(a.csv95) if a.csv95 else None
    curves = read(a.csv[:-4] + "_curves.csv") if os.path.exists(a.csv[:-4] + "_curves.csv") else []
    d = os.path.dirname(a.csv)
    figs = {"fig1a": lambda: plot_fig1a(rows, plt.subplots(figsize=(5, 4))[1]),
            "t2": lambda: plot_t2(rows, plt.subplots(figsize=(5, 4))[1]),
            "lr": lambda: plot_lr(rows, plt.subplots(1, len(optimizers(rows)), figsize=(4.5 * len(optimizers(rows)), 4),
                                                     sharey=False, squeeze=False)[1][0]),
            "curves": lambda: plot_curves(rows, curves, plt.subplots(1, 2, figsize=(11, 4))[1]) if curves else None,
            "fig5": lambda: plot_fig5(rows, rows95, plt.subplots(figsize=(5, 4))[1]) if rows95 else None}
    for name, draw in figs.items():
        if draw() is None and plt.get_fignums():
            save(plt, os.path.join(d, name + ".png"))
        plt.close("all")
    lines = claims(rows, rows95)
    if a.docs:
        write_docs("claims table", [x for x in lines if x.startswith("|")])
        write_docs("claims", [x for x in lines if not x.startswith("|")])
    print("\n".join(lines))


ROOT = os.path.dirname(os.path.abspath(__file__))
DOCS = {"claims table": ("README.md", "docs/experiments.md"), "claims": ("docs/experiments.md",),
        "budget": ("docs/experiments.md",)}  # the blocks that --docs writes, and where they are


def block(text, name):
    """(start, end) of the lines between '<!-- figures.py NAME -->' and the next '<!-- end -->' in text."""
    i = text.find(start := f"<!-- figures.py {name} -->\n")
    j = text.find("<!-- end -->", i)
    return None if i < 0 or j < 0 else (i + len(start), j)


def write_docs(name, lines, root=ROOT):
    """Replace block `name` (DOCS) in each of its files by `lines`: the table lines, then the others (claims) in a
    ``` block, blank lines around each (markdown would read a line right after a table as one of its rows)."""
    table, rest = [x for x in lines if x.startswith("|")], [x for x in lines if not x.startswith("|")]
    body = "".join("\n" + "\n".join(part) + "\n" for part in (table, ["```", *rest, "```"] if rest else []) if part)
    body += "\n"
    for path in DOCS[name]:
        with open(p := os.path.join(root, path)) as f:
            text = f.read()
        if (at := block(text, name)) is None:
            fail(f"{path} has no '<!-- figures.py {name} -->' ... '<!-- end -->' block to write")
        atomic_write(p, lambda f: f.write(text[:at[0]] + body + text[at[1]:]))
        print(f"wrote {name} into {path}")


def save(plt, path):
    plt.tight_layout()
    plt.savefig(path + ".tmp.png", dpi=110)
    os.replace(path + ".tmp.png", path)  # atomic: a figure is either the old one or the new one
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
