"""figures.py on a hand-made sweep CSV: the best LR of each (optimizer, batch size) skips diverged points and
averages seeds, the claims table's numbers are the differences worked out by hand, every figure is written, and
in every panel each finite point lies inside the y limits while the diverged x's sit in a band above them."""
import csv
import math
from pathlib import Path

import numpy as np

import pytest

import figures

# (optimizer, batch size, lr, seed, status, loss)
RUNS = [("sgd", 1, 0.1, 0, "done", 3.0), ("sgd", 1, 0.2, 0, "done", 2.8), ("sgd", 1, 0.4, 0, "diverged", None),
        ("sgd", 4, 0.2, 0, "done", 3.5), ("sgd", 4, 0.4, 0, "done", 3.3), ("sgd", 4, 0.8, 0, "done", 3.4),
        ("adamw", 1, 1e-3, 0, "done", 2.60), ("adamw", 1, 2e-3, 0, "done", 2.50), ("adamw", 1, 2e-3, 1, "done", 2.54),
        ("adamw", 1, 4e-3, 0, "done", 2.55), ("adamw", 4, 2e-3, 0, "done", 2.9), ("adamw", 4, 4e-3, 0, "done", 2.7),
        ("adamw", 4, 8e-3, 0, "diverged", None), ("adamw", 1, 2e-3, 0, "done", 2.45, "t2", 50.0),
        ("adamw", 1, 2e-3, 0, "done", 2.6, "t2", 400.0)]
RUNS95 = [("adamw", 1, 1e-3, 0, "diverged", None), ("adamw", 1, 2e-3, 0, "diverged", None),
          ("adamw", 4, 2e-3, 0, "done", 2.8), ("adamw", 4, 4e-3, 0, "done", 2.75)]


def write(path, runs):
    cols = ["name", "variant", "optimizer", "batch_size", "lr", "seed", "t2", "status", "final_val_loss"]
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(cols)
        for o, B, lr, seed, status, loss, *var in runs:
            t2 = var[1] if var else 100.0
            name = f"optimizer={o},batch_size={B},lr={lr},seed={seed},t2={t2}"
            w.writerow([name, var[0] if var else "", o, B, lr, seed, t2, status, "" if loss is None else loss])
    return str(path)


def test_best_lr_skips_diverged_points_and_averages_seeds(tmp_path):
    rows = figures.read(write(tmp_path / "a.csv", RUNS))
    assert figures.by_lr(rows, "sgd", 1) == {0.1: 3.0, 0.2: 2.8, 0.4: math.inf}
    assert figures.best(rows, "sgd", 1) == (0.2, 2.8)
    assert figures.best(rows, "adamw", 1) == (0.002, pytest.approx(2.52))  # seeds 0 and 1: (2.50 + 2.54) / 2
    assert figures.best(rows, "adamw", 4) == (0.004, 2.7)
    assert figures.best(rows, "adamw", 1, spread=True) == (0.002, pytest.approx(2.52), pytest.approx(0.04 / 2 ** 0.5), 2)
    # t2 / 100 at the LR the variants ran at, against the grid point's seed 0 (the variants' seed): paired
    assert figures.t2_scan(rows, 1) == {0.5: 2.45, 1.0: 2.50, 4.0: 2.6}
    assert figures.best(figures.read(write(tmp_path / "b.csv", RUNS95)), "adamw", 1) is None  # every LR diverged


def test_claims_table_and_figures(tmp_path):
    a, b = write(tmp_path / "fig1a.csv", RUNS), write(tmp_path / "fig5.csv", RUNS95)
    lines = figures.claims(figures.read(a), figures.read(b))
    assert lines[2] == "| 1 | 2.800 (0.2) | 2.520 ± 0.028 (0.002) |"  # the mean ± std over seeds 0 and 1
    assert "(a) SGD: best at batch size 1; others minus it: B 4 +0.500" in lines
    assert "(b) SGD minus Adam: B 1: +0.280, B 4: +0.600" in lines
    assert "(c) B 1: Adam t2 fixed 2.520 ± 0.028 (0.002), β2 = 0.95 diverged at every LR tried" in lines
    assert "(c) B 4: Adam t2 fixed 2.700 (0.004), β2 = 0.95 2.750 (0.004): +0.050" in lines
    assert "(d) SGD B 1: loss - best at LR x0.5: +0.200, x2: div" in lines
    assert "(d) Adam B 1: loss - best at t2 x0.5: -0.050, x4: +0.100" in lines
    figures.main([a, b])
    for name in ("fig1a", "lr", "t2", "fig5"):
        assert (tmp_path / f"{name}.png").stat().st_size > 10_000


def test_a_difference_within_twice_the_seeds_spread_is_a_tie_and_one_seed_is_never_the_best(tmp_path):
    a, b = (1e-3, 2.53, 0.01, 3), (2e-3, 2.52, 0.02, 3)
    assert figures.versus(a, b) == "+0.010 (tie)"  # 0.01 < 2 x 0.02
    assert figures.versus((1e-3, 2.57, 0.01, 3), b) == "+0.050"
    assert figures.versus((1e-3, 2.53, 0.0, 1), b) == "+0.010 (tie)"  # one run against seeds: their spread
    assert figures.versus((1e-3, 2.53, 0.0, 1), (2e-3, 2.52, 0.0, 1)) == "+0.010"  # no spread to judge by
    # an LR run with one seed is not the best over an LR with three, however low its one loss
    runs = [("adamw", 1, 1e-3, 0, "done", 2.40)] + [("adamw", 1, 2e-3, k, "done", v) for k, v in enumerate((2.5, 2.6, 2.4))]
    rows = figures.read(write(tmp_path / "s.csv", runs))
    assert figures.best(rows, "adamw", 1, spread=True) == (2e-3, pytest.approx(2.5), pytest.approx(0.1), 3)


def test_budget_table_puts_each_batch_size_beside_its_fig1a_best_and_ranks_them(tmp_path):
    """figures.py --budget: 4x tokens beside fig1a at the batch sizes the control ran; per budget the batch sizes
    against the best (ties by the seeds' spread) and SGD minus Adam, worked out by hand."""
    rows2m = figures.read(write(tmp_path / "fig1a.csv", RUNS))  # batch 1: SGD 2.8, Adam 2.52 ± 0.028; batch 4: 3.3, 2.7
    runs = [("sgd", 1, 0.2, 0, "done", 2.5), ("sgd", 1, 0.4, 0, "done", 2.6), ("sgd", 4, 0.4, 0, "done", 2.4),
            ("adamw", 1, 2e-3, 0, "done", 2.2), ("adamw", 4, 4e-3, 0, "done", 2.3), ("adamw", 4, 8e-3, 0, "diverged", None)]
    rows = figures.read(write(tmp_path / "budget.csv", runs))
    for r in rows:
        r["n_steps"] = 64.0 / r["batch_size"]
    lines = figures.budget_table(rows, rows2m)
    assert lines[0] == "| batch size (steps at 4x) | SGD, fig1a | SGD, 4x tokens | Adam, fig1a | Adam, 4x tokens |"
    assert lines[2] == "| 1 (64) | 2.800 (0.2) | 2.500 (0.2) | 2.520 ± 0.028 (0.002) | 2.200 (0.002) |"
    assert lines[3] == "| 4 (16) | 3.300 (0.4) | 2.400 (0.4) | 2.700 (0.004) | 2.300 (0.004) |"
    assert "fig1a: SGD best at batch size 1; others minus it: B 4 +0.500" in lines
    assert "4x tokens: SGD best at batch size 4; others minus it: B 1 +0.100" in lines  # the ranking turned
    assert "4x tokens: SGD minus Adam: B 1: +0.300, B 4: +0.100" in lines
    figures.main(["--budget", str(tmp_path / "budget.csv"), str(tmp_path / "fig1a.csv")])
    assert (tmp_path / "budget.png").stat().st_size > 10_000


def test_finetune_table_averages_seeds_and_names_each_way(tmp_path):
    """figures.py --finetune: a way is (optimizer, batch size, LoRA, bf16); its best LR by mean exact match over
    seeds (ties: the lower loss), with its neighbours' exact match; ways best first."""
    cols = ["optimizer", "batch_size", "lora_rank", "param_dtype", "lr", "seed", "status", "final_val_loss",
            "final_val_accuracy", "peak_memory_mb", "wall_s"]
    runs = [("adamw", 1, "", "", 1e-3, 0, "done", 0.6, 0.30), ("adamw", 1, "", "", 1e-3, 1, "done", 0.5, 0.40),
            ("adamw", 1, "", "", 3e-3, 0, "done", 0.4, 0.34), ("adamw", 1, "", "", 3e-4, 0, "done", 0.9, 0.1),
            ("adamw", 1, 8, "bfloat16", 3e-3, 0, "done", 1.0, 0.05), ("adamw", 1, 8, "bfloat16", 9e-3, 0, "diverged", "", ""),
            ("adafactor", 1, "", "bfloat16", 3e-3, 0, "done", 0.5, 0.36), ("adafactor", 1, "", "bfloat16", 1e-2, 0, "done", 0.45, 0.36)]
    path = tmp_path / "ft.csv"
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(cols)
        w.writerows([*r, 100.0, 10.0] for r in runs)
    lines = figures.finetune_table(figures.read(str(path)))[2:]
    assert [line.split(" | ")[0] for line in lines] == ["| Adafactor, batch 1, bf16 + SR", "| Adam, batch 1",
                                                         "| LoRA r 8 (Adam), batch 1, bf16 base"]
    assert "| 0.01 | **36.0%** | 36.0% | - | 0.450 |" in lines[0]  # the tie goes to the lower loss
    assert "| 4 (0) | 0.001 | **35.0% (30.0%, 40.0%)** | 10.0% | 34.0% | 0.550 |" in lines[1]
    assert lines[2].startswith("| LoRA r 8 (Adam), batch 1, bf16 base | 2 (1) | 0.003 | **5.0%** | - | - |")


def drawn(ax):
    """(finite y of the data lines, y of the diverged x's) of a panel: every Line2D the panel holds."""
    data, div = [], []
    for line in ax.get_lines():
        y = np.asarray(line.get_ydata(), dtype=float)
        (div if line.get_gid() == "diverged" else data).extend(y[np.isfinite(y)])
    return data, div


def test_every_point_is_inside_its_panel_and_diverged_ones_above_the_data(tmp_path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    far = [("sgd", 16, 0.1, 0, "done", 5.5), ("sgd", 16, 0.2, 0, "done", 4.0), ("sgd", 16, 0.4, 0, "diverged", None),
           ("adamw", 16, 2e-3, 0, "done", 1.2), ("adamw", 1, 2e-3, 0, "diverged", None, "t2", 800.0)]
    rows = figures.read(write(tmp_path / "a.csv", RUNS + far))  # losses 1.2 .. 5.5 at batch sizes 1, 4, 16
    rows95 = figures.read(write(tmp_path / "b.csv", RUNS95))  # batch size 1 diverged at every LR
    names = {B: next(r["name"] for r in rows if r["optimizer"] == "adamw" and r["batch_size"] == B
                     and r["lr"] == figures.best(rows, "adamw", B)[0] and r["variant"] is None) for B in (1, 4, 16)}
    curves = [dict(name=names[B], tokens=t, train_loss=6.0 / (1 + t / 1000) + B / 100, val_loss=None)
              for B in names for t in range(0, 10_000, 1000)]
    axes = plt.subplots(1, 2)[1]
    figures.plot_lr(rows, axes)
    panels = [*axes]
    for draw in (lambda ax: figures.plot_t2(rows, ax), lambda ax: figures.plot_fig5(rows, rows95, ax),
                 lambda ax: figures.plot_fig1a(rows, ax)):
        draw(ax := plt.subplots()[1])
        panels.append(ax)
    figures.plot_curves(rows, curves, axes := plt.subplots(1, 2)[1])
    panels += [*axes]
    for i, ax in enumerate(panels):
        lo, hi = ax.get_ylim()
        data, div = drawn(ax)
        assert data and all(lo <= y <= hi for y in data), (i, ax.get_title(), (lo, hi), min(data), max(data))
        assert all(max(data) < y <= hi for y in div), (i, ax.get_title(), div)  # above the data, not on it
    assert [len(drawn(ax)[1]) for ax in panels[:4]] == [2, 1, 1, 1]  # SGD 0.4 (B 1, 16), Adam 8e-3, t2 x8, B 1
    assert "diverged (above the dotted line)" in [t.get_text() for t in panels[1].get_legend().get_texts()]
    plt.close("all")


def test_the_docs_claims_are_what_the_command_writes_from_the_committed_csvs(tmp_path):
    """README.md and docs/experiments.md are unchanged by `python figures.py assets/sweeps/fig1a.csv
    assets/sweeps/fig5.csv --docs` and `python figures.py --budget assets/sweeps/budget.csv assets/sweeps/fig1a.csv
    --docs` on the committed CSVs: every table and claims block in them is what the command prints."""
    root = Path(__file__).resolve().parents[1]
    for path in ("README.md", "docs/experiments.md"):
        (tmp_path / path).parent.mkdir(exist_ok=True)
        (tmp_path / path).write_text((root / path).read_text())
    fig1a, fig5 = figures.read(root / "assets/sweeps/fig1a.csv"), figures.read(root / "assets/sweeps/fig5.csv")
    lines = figures.claims(fig1a, fig5)
    figures.write_docs("claims table", [x for x in lines if x.startswith("|")], root=tmp_path)
    figures.write_docs("claims", [x for x in lines if not x.startswith("|")], root=tmp_path)
    figures.write_docs("budget", figures.budget_table(figures.read(root / "assets/sweeps/budget.csv"), fig1a),
                       root=tmp_path)
    for path in ("README.md", "docs/experiments.md"):
        assert (tmp_path / path).read_text() == (root / path).read_text(), f"{path}: run figures.py --docs"
    (tmp_path / "README.md").write_text("# no block here\n")
    with pytest.raises(SystemExit, match="README.md has no '<!-- figures.py claims table -->'"):
        figures.write_docs("claims table", ["| a |"], root=tmp_path)
    assert (tmp_path / "README.md").read_text() == "# no block here\n"
