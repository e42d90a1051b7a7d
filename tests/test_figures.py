"""figures.py on a hand-made sweep CSV: the best LR of each (optimizer, batch size) skips diverged points and
averages seeds, the claims table's numbers are the differences worked out by hand, and every figure is written."""
import csv
import math

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
    assert figures.t2_scan(rows, 1) == {0.5: 2.45, 1.0: pytest.approx(2.52), 4.0: 2.6}  # t2 / 100 at the best LR
    assert figures.best(figures.read(write(tmp_path / "b.csv", RUNS95)), "adamw", 1) is None  # every LR diverged


def test_claims_table_and_figures(tmp_path):
    a, b = write(tmp_path / "fig1a.csv", RUNS), write(tmp_path / "fig5.csv", RUNS95)
    lines = figures.claims(figures.read(a), figures.read(b))
    assert lines[2] == "| 1 | 2.800 (0.2) | 2.520 (0.002) |"
    assert "(a) SGD: best at batch size 1; batch 1 vs 4: 2.800 vs 3.300" in lines
    assert "(b) SGD minus Adam: B 1: +0.280, B 4: +0.600" in lines
    assert "(c) B 1: Adam t2 fixed 2.520, β2 = 0.95 diverged at every LR tried" in lines
    assert "(c) B 4: Adam t2 fixed 2.700, β2 = 0.95 2.750 (+0.050)" in lines
    assert "(d) SGD B 1: loss - best at LR x0.5: +0.200, x2: div" in lines
    assert "(d) Adam B 1: loss - best at t2 x0.5: -0.070, x4: +0.080" in lines
    figures.main([a, b])
    for name in ("fig1a", "lr", "t2", "fig5"):
        assert (tmp_path / f"{name}.png").stat().st_size > 10_000


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
