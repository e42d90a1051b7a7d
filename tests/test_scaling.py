"""Tests for scaling.py: approaches 1-3 recover known Chinchilla parameters from synthetic runs, the published
compute-optimal numbers at Gopher's budget, bad input, the IsoFLOP generator (the train.py commands it prints
form IsoFLOP profiles: every width at every budget spends C = 6·N·D, N counted by model.py), and the train.py
run-folder path (runs faked from those commands).

Synthetic runs come from L = E + A/N^α + B/D^β with Hoffmann et al.'s rounded approach-3 values, so the
truth is known exactly: a = β/(α+β) = 0.4516 is what approaches 1 and 2 must find.
"""
import json, os, re, subprocess, sys

import numpy as np
import pytest

import model
import scaling

TRUE = dict(E=1.69, A=406.4, B=410.7, alpha=0.34, beta=0.28)
P = scaling.law_params(**TRUE)
TRUTH = np.array([np.log(406.4), np.log(410.7), np.log(1.69), 0.34, 0.28])  # θ = (log A, log B, log E, α, β)
HERE = os.path.dirname(os.path.abspath(__file__))


def random_runs(n=250, noise=0.0, seed=0, outliers=0):
    """Runs log-uniform over N 1e7..1e10, D 1e8..1e12 (the issue's ranges); multiplicative noise on loss."""
    rng = np.random.default_rng(seed)
    N, D = 10 ** rng.uniform(7, 10, n), 10 ** rng.uniform(8, 12, n)
    loss = scaling.law(P, N, D) * np.exp(noise * rng.standard_normal(n))
    loss[rng.choice(n, outliers, replace=False)] *= 1.3  # diverged / badly tuned runs
    return N, D, loss


def isoflop_runs(noise=0.0, seed=0, budgets=np.geomspace(1e17, 1e21, 7), per=25):
    """IsoFLOP profiles: per budget, N spans 1/10..10x the true optimum, shifted by up to ±0.3 decades at random
    so the grid is not centred on the optimum (a centred grid would hide the parabola's bias)."""
    rng = np.random.default_rng(seed)
    N = np.concatenate([P["G"] * (C / 6) ** P["a"] * 10 ** rng.uniform(-.3, .3) * np.geomspace(.1, 10, per)
                        for C in budgets])
    D = np.repeat(budgets, per) / (6 * N)
    return N, D, scaling.law(P, N, D) * np.exp(noise * rng.standard_normal(len(N)))


# ----------------------------------------------------------------------------- the optimiser

def test_huber_gradient_matches_central_differences():
    N, D, loss = random_runs(50, noise=0.05, seed=1)
    lN, lD, lL, delta = np.log(N), np.log(D), np.log(loss), 0.03
    theta = np.array([TRUTH, TRUTH + 0.05])  # two problems at once: the batched path
    w = np.random.default_rng(0).integers(0, 3, (2, 50)).astype(float)  # bootstrap-style weights
    f, g = scaling._huber(theta, lN, lD, lL, w, delta)
    r = np.log(scaling.law(P, N, D)) - lL
    assert (np.abs(r) < delta).any() and (np.abs(r) > delta).any()  # both Huber regimes are exercised
    h = 1e-6
    for k in range(5):
        e = np.zeros(5); e[k] = h
        f_plus, f_minus = (scaling._huber(theta + s * e, lN, lD, lL, w, delta)[0] for s in (1, -1))
        fd = (f_plus - f_minus) / (2 * h)
        np.testing.assert_allclose(g[:, k], fd, rtol=1e-5, atol=1e-9)  # truncation O(h²), roundoff ε·f/h ≈ 1e-10


def test_lbfgs_finds_rosenbrock_minimum_from_many_starts():
    def fg(x, i):  # f = (1 − x)² + 100 (y − x²)², minimum 0 at (1, 1)
        a, b = x[:, 0], x[:, 1]
        g = np.stack([-2 * (1 - a) - 400 * a * (b - a * a), 200 * (b - a * a)], 1)
        return (1 - a) ** 2 + 100 * (b - a * a) ** 2, g
    x0 = np.array([[-1.2, 1.0], [2.0, 2.0], [-1.0, -1.0], [0.0, 3.0]])
    x, f = scaling.lbfgs(fg, x0, iters=2000, ftol=0)
    np.testing.assert_allclose(x, 1.0, atol=1e-6)  # f ≈ 1e-14 near (1,1) ⇒ |x − 1| ≈ 1e-7


def test_approach3_is_a_minimum_scipy_cannot_improve():
    opt = pytest.importorskip("scipy.optimize")  # scipy ships with jax; an independent L-BFGS-B
    N, D, loss = random_runs(250, noise=0.01, seed=2)
    p = scaling.fit_approach3(N, D, loss)
    lN, lD, lL = np.log(N), np.log(D), np.log(loss)
    fun = lambda th: tuple(v[0] for v in scaling._huber(th[None], lN, lD, lL, np.ones((1, len(N))), 1e-3))
    ours = np.array([np.log(p["A"]), np.log(p["B"]), np.log(p["E"]), p["alpha"], p["beta"]])
    for x0 in (ours, TRUTH):
        res = opt.minimize(fun, x0, jac=True, method="L-BFGS-B", options=dict(maxiter=5000, ftol=1e-15, gtol=1e-12))
        assert fun(ours)[0] <= res.fun * (1 + 1e-6)  # ours is at least as low as scipy gets from ours or the truth


# ----------------------------------------------------------------------------- approach 3

def test_approach3_recovers_noise_free_parameters():
    p = scaling.fit_approach3(*random_runs(200, seed=1))
    for k, v in TRUE.items():
        assert abs(p[k] / v - 1) <= 1e-3, k  # the bound; the zero-residual optimum is the truth itself
    assert p["resid_std"] < 1e-8


@pytest.mark.parametrize("outliers", [0, 12])
def test_approach3_noisy_truth_inside_bootstrap_interval(outliers):
    N, D, loss = random_runs(250, noise=0.01, seed=0, outliers=outliers)  # 12 of 250 runs 30% too high
    p = scaling.fit_approach3(N, D, loss, boot=200, seed=0)
    for k, v in TRUE.items():
        lo, hi = p["ci"][k]
        assert lo <= v <= hi, (k, lo, v, hi)
    # ... and the intervals are informative, not vacuous (widths seen: α 0.03, β 0.015, E 0.06)
    assert p["ci"]["alpha"][1] - p["ci"]["alpha"][0] < 0.06 and p["ci"]["beta"][1] - p["ci"]["beta"][0] < 0.03
    assert p["ci"]["E"][1] - p["ci"]["E"][0] < 0.15
    assert 0.005 < p["resid_std"] < 0.05 + 0.1 * bool(outliers)  # ≈ the 1% noise (outliers widen it)


def test_approach3_needs_at_least_as_many_runs_as_parameters():
    N, D, loss = random_runs(4)
    with pytest.raises(ValueError, match="needs at least 5 runs, got 4"):
        scaling.fit_approach3(N, D, loss)


# ----------------------------------------------------------------------------- published compute-optimal check

@pytest.mark.parametrize("coef, N_opt, D_opt, rtol", [
    ((1.69, 406.4, 410.7, 0.34, 0.28), 32.2e9, 2.98e12, 2e-3),  # rounded approach 3 (3 significant digits)
    ((1.69, 406.401, 410.723, 0.33917, 0.28491), 40.4e9, 2.38e12, 2e-3),  # unrounded fit
    ((1.82, 482.0, 2085.4, 0.3478, 0.3658), 72e9, 1.33e12, 5e-3),  # paper.md's independent refit (2-3 digits)
])
def test_compute_optimal_at_gophers_budget(coef, N_opt, D_opt, rtol):
    C = 5.76e23
    r = scaling.optimal({3: scaling.law_params(*coef)}, C)[3]
    assert r["N"] == pytest.approx(N_opt, rel=rtol) and r["D"] == pytest.approx(D_opt, rel=rtol)
    assert 6 * r["N"] * r["D"] == pytest.approx(C, rel=1e-12)  # the allocation spends exactly C


def test_optimal_allocation_minimises_loss_and_target_loss_inverts_it():
    C = 1e21
    r = scaling.optimal({3: P}, C)[3]
    Ns = r["N"] * np.geomspace(0.5, 2, 101)  # along the IsoFLOP line, the loss is lowest at N_opt
    assert np.argmin(scaling.law(P, Ns, C / (6 * Ns))) == 50
    C2 = scaling.flops_for_loss(P, 2.0)
    assert scaling.optimal({3: P}, C2)[3]["loss"] == pytest.approx(2.0, abs=1e-9)
    with pytest.raises(ValueError, match="irreducible"):
        scaling.flops_for_loss(P, 1.5)


# ----------------------------------------------------------------------------- approaches 2 and 1

@pytest.mark.parametrize("noise", [0.0, 0.01])
def test_approach2_recovers_a(noise):
    f = scaling.fit_approach2(*isoflop_runs(noise, seed=0))
    assert len(f["profiles"]) == 7 and all(pr["ok"] for pr in f["profiles"])
    # noise-free error 1e-3 (the parabola's bias); at 1% noise the std over 20 seeds is 0.005, so 0.02 is 4σ
    assert abs(f["a"] - P["a"]) <= 0.02 and f["b"] == pytest.approx(1 - f["a"], abs=1e-9)


def test_approach2_skips_budgets_whose_minimum_is_not_bracketed():
    N, D, loss = isoflop_runs()
    small = N < P["G"] * (N * D) ** P["a"] / 2  # only runs left of each optimum (C/6 = N·D): loss still falling
    assert scaling.fit_approach2(N[small], D[small], loss[small]) is None


@pytest.mark.parametrize("noise", [0.0, 0.01])
def test_approach1_recovers_a_from_training_curves(noise):
    rng = np.random.default_rng(0)
    d = np.geomspace(1e8, 1e12, 200)
    curves = [(n, d, scaling.law(P, n, d) * np.exp(noise * rng.standard_normal(d.size)))
              for n in np.geomspace(1e7, 1e10, 20)]
    f = scaling.fit_approach1(curves)
    assert abs(f["a"] - P["a"]) <= 0.03  # seen: 0.003 noise-free (20 discrete sizes), 0.003 at 1% noise


# ----------------------------------------------------------------------------- CSV input and bad input

def write(path, text):
    path.write_text(text)
    return str(path)


@pytest.mark.parametrize("text, msg", [
    ("N,loss\n1e7,3.0\n", "missing column 'D'"),
    ("N,D,loss\n1e7,1e9,3.0\n0,1e9,3.0\n", r"N must be finite and positive, got 0.0 \(line 3\)"),
    ("N,D,loss\n1e7,-1e9,3.0\n", r"D must be finite and positive, got -1000000000.0 \(line 2\)"),
    ("N,D,loss\n1e7,1e9,nan\n", r"loss must be finite and positive, got nan \(line 2\)"),
    ("N,D,loss\n1e7,1e9,\n", "could not convert"),
])
def test_bad_csv_gives_one_clear_error(tmp_path, text, msg):
    with pytest.raises(ValueError, match=msg):
        scaling.load_csv(write(tmp_path / "runs.csv", text))


def test_cli_reports_bad_input_as_one_line(tmp_path):
    path = write(tmp_path / "runs.csv", "N,D,loss\n1e7,1e9,3.0\n2e7,1e9,2.9\n")
    out = subprocess.run([sys.executable, "scaling.py", "fit", path], capture_output=True, text=True,
                         cwd=os.path.dirname(HERE))
    assert out.returncode == 1
    assert out.stderr.strip() == "error: approach 3 fits 5 parameters and needs at least 5 runs, got 2"


def test_example_csv_fit_and_optimal_cli(tmp_path, capsys):
    csv_path = os.path.join(HERE, "chinchilla_synthetic.csv")  # 5 IsoFLOP budgets x 9 sizes from TRUE, 1% noise
    scaling.main(["optimal", "--flops", "5.76e23", csv_path, "--plots", str(tmp_path)])
    out = capsys.readouterr().out
    a2 = float(re.search(r"approach 2: a = ([\d.]+)", out)[1])
    assert abs(a2 - P["a"]) <= 0.02
    N3 = float(re.search(r"approach 3: N_opt (\S+)", out)[1])
    assert N3 == pytest.approx(32.2e9, rel=0.25)  # 45 noisy runs: the 5.76e23 extrapolation is good to ~15%
    for name in ("isoflop", "optimal", "pred_vs_obs"):
        assert (tmp_path / f"{name}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["isoflop.png", "optimal.png", "pred_vs_obs.png"]  # no temp left


# ----------------------------------------------------------------------------- IsoFLOP commands and run folders

def parse(cmd):
    return {k: v for k, v in re.findall(r"--(\w+)=(\S+)", cmd)}


def counts(d, L, head_dim=64, vocab_size=50257):
    return model.count_params(model.Config(d_model=d, n_layers=L, head_dim=head_dim, vocab_size=vocab_size))


def test_isoflop_commands_form_isoflop_profiles():
    cmds = scaling.isoflop([1e14], [128])
    assert cmds[0].startswith("python train.py configs/tiny_gpt2.py --d_model=128 --n_layers=2 --head_dim=64 "
                              "--train_tokens=2441605 --out_dir=out/sweep/C1e14_D128_L2")
    budgets = [1e13, 3e13, 1e14]
    for cmd in scaling.isoflop(budgets, [64, 128, 192, 256, 384]):
        a = parse(cmd)
        N = 12 * int(a["n_layers"]) * int(a["d_model"]) ** 2 + 50257 * int(a["d_model"])  # paper's active count
        assert int(a["n_layers"]) == max(1, int(a["d_model"]) // 64)
        C = float(re.search(r"C(\d+e\d+)_", a["out_dir"])[1])
        tok = int(a["train_tokens"])
        assert C in budgets and 6 * N * tok == pytest.approx(C, rel=1 / tok)  # tokens are rounded: ±½ token
    cmd = scaling.isoflop([1e12], [48], aspect=32, head_dim=16, extra=["eval_tokens=32768", "eval_every=0"])[0]
    assert parse(cmd)["n_layers"] == "2" and cmd.split("  #")[0].endswith(" --eval_tokens=32768 --eval_every=0")
    assert parse(scaling.isoflop([1e12], [8], head_dim=16)[0])["head_dim"] == "8"  # narrower than a head: one head
    with pytest.raises(ValueError, match="width 48 is not a multiple of head_dim=32"):
        scaling.isoflop([1e12], [64, 48], head_dim=32)  # train.py would refuse it only when that run starts


def test_isoflop_counts_the_model_each_command_trains():
    """N is model.py's count of the run's own model: a byte-level config's V 256, a setting given with --set."""
    a = parse(scaling.isoflop([1e12], [64], aspect=32, head_dim=32, config="configs/mini.py")[0])
    assert int(a["train_tokens"]) == round(1e12 / (6 * counts(64, 2, 32, vocab_size=256)["active"]))
    a = parse(scaling.isoflop([1e12], [64], params="total", extra=["vocab_size=1000"])[0])
    assert int(a["train_tokens"]) == round(1e12 / (6 * counts(64, 1, vocab_size=1000)["total"]))
    with pytest.raises(SystemExit, match="unknown config key 'vocab'"):  # train.py's own check, before any run
        scaling.isoflop([1e12], [64], extra=["vocab=1000"])


def test_isoflop_cli_prints_the_generators_commands(capsys):
    scaling.main(["isoflop", "--budgets", "1e12", "--widths", "48", "--aspect", "32", "--head_dim", "16",
                  "--set", "eval_tokens=32768", "eval_every=0"])
    out = capsys.readouterr().out
    assert out == "\n".join(scaling.isoflop([1e12], [48], aspect=32, head_dim=16,
                                            extra=["eval_tokens=32768", "eval_every=0"])) + "\n"


def fake_runs(root, cmds, law):
    """What train.py leaves per run: config.json (the user's config), run.json with the parameter counts,
    metrics.jsonl with val_loss lines."""
    for cmd in cmds:
        a = parse(cmd)
        d, L, tok = int(a["d_model"]), int(a["n_layers"]), int(a["train_tokens"])
        cfg = dict(d_model=d, n_layers=L, train_tokens=tok, vocab_size=50257)
        derived = {f"params_{k}": v for k, v in counts(d, L, int(a["head_dim"])).items()}
        run = root / os.path.basename(a["out_dir"])
        run.mkdir(parents=True)
        (run / "config.json").write_text(json.dumps(cfg))
        (run / "run.json").write_text(json.dumps(derived))
        n = derived["params_active"]
        lines = [dict(step=s, tokens=int(t), train_loss=9.0) for s, t in enumerate(np.linspace(0, tok, 9))]
        lines += [dict(step=s, tokens=int(t), val_loss=float(law(n, max(t, 1))))
                  for s, t in enumerate(np.linspace(0, tok, 5))]
        lines.sort(key=lambda m: m["tokens"])
        (run / "metrics.jsonl").write_text("".join(json.dumps(m) + "\n" for m in lines))


def test_fit_a_folder_of_train_runs(tmp_path, capsys):
    # A law whose optimum falls inside the CPU sweep's sizes (4x Hoffmann's A: N_opt 4M..12M at 1e13..1e14)
    p = scaling.law_params(1.69, 4 * 406.4, 410.7, 0.34, 0.28)
    cmds = scaling.isoflop([1e13, 3e13, 1e14], [64, 128, 192, 256, 384])
    fake_runs(tmp_path, cmds, lambda n, t: scaling.law(p, n, t))
    runs, curves = scaling.load_runs(str(tmp_path))
    a = parse(cmds[0])
    i = sorted(os.path.basename(parse(c)["out_dir"]) for c in cmds).index(os.path.basename(a["out_dir"]))
    assert runs["N"][i] == counts(64, 1)["active"] and runs["D"][i] == int(a["train_tokens"])  # last val_loss
    assert runs["loss"][i] == pytest.approx(scaling.law(p, runs["N"][i], runs["D"][i]))
    assert len(curves) == len(cmds) and all(len(c[1]) == 4 for c in curves)  # step 0 (tokens 0) is dropped
    nonembed, _ = scaling.load_runs(str(tmp_path), "nonembed")
    assert nonembed["N"][i] == 12 * 64 ** 2  # --params switches the count
    runs, fits = scaling.fit_all(str(tmp_path))
    assert len(fits[2]["profiles"]) == 3 and abs(fits[2]["a"] - p["a"]) < 0.02  # 5 sizes/budget: bias ≈ 0.004
    scaling.main(["fit", str(tmp_path), "--csv", str(tmp_path / "runs.csv")])
    assert "approach 2: a = 0.45" in capsys.readouterr().out
    back, _ = scaling.load_csv(str(tmp_path / "runs.csv"))  # the table round-trips (loss to 5 decimals)
    assert (back["N"] == runs["N"]).all() and (back["D"] == runs["D"]).all()
    assert np.allclose(back["loss"], runs["loss"], atol=5e-6) and np.allclose(back["C"], runs["C"], rtol=1e-5)


def test_unfinished_run_is_a_clear_error(tmp_path):
    fake_runs(tmp_path, scaling.isoflop([1e13], [64]), lambda n, t: 5.0)
    run = next(tmp_path.iterdir())
    (run / "metrics.jsonl").write_text(json.dumps(dict(step=1, tokens=10, train_loss=9.0)) + "\n")
    with pytest.raises(ValueError, match="no val_loss in metrics.jsonl"):
        scaling.load_runs(str(tmp_path))
    with pytest.raises(FileNotFoundError, match="no run directories"):
        scaling.load_runs(str(run))


def test_run_without_parameter_counts_is_a_clear_error(tmp_path):
    fake_runs(tmp_path, scaling.isoflop([1e13], [64]), lambda n, t: 5.0)
    run = next(tmp_path.iterdir())
    (run / "run.json").write_text("{}")
    with pytest.raises(ValueError, match="no 'params_active' in run.json"):
        scaling.load_runs(str(tmp_path))
    (run / "run.json").unlink()  # a run folder from before run.json: the same message
    with pytest.raises(ValueError, match="no 'params_total' in run.json"):
        scaling.load_runs(str(tmp_path), "total")


# ----------------------------------------------------------------------------- learning-curve extrapolation
def test_lr_area_sums_optims_schedule():
    import optim
    lr = np.asarray(optim.warmup_cosine(1.0, 1000, 0.05)(np.arange(1000)))
    np.testing.assert_allclose(scaling.lr_area([1, 50, 400, 1000], 1000), np.cumsum(lr)[[0, 49, 399, 999]], rtol=1e-5)
    assert list(scaling.lr_area([3, 7], 10, schedule="constant")) == [3.0, 7.0]


def test_curve_fit_recovers_a_known_power_law_in_summed_lr():
    """Log windows of a run whose loss is exactly A·S^-α (A 3, α 0.2; 4096 steps, cosine, windows of 128 steps):
    the fit on the first 30% recovers A and α and predicts the final loss; with 1% noise per window, α within 0.03."""
    n, tps = 4096, 128.0
    ends = np.arange(128, n + 1, 128)
    S = scaling.lr_area(ends - 64, n)  # each window at its middle step
    clean = 3.0 * S ** -0.2
    p = scaling.fit_curve(S[:10], clean[:10])
    assert p["A"] == pytest.approx(3.0, rel=1e-9) and p["alpha"] == pytest.approx(0.2, rel=1e-9)
    final = scaling.predict_final(ends * tps, clean, tps, n, 0.3)
    assert final == pytest.approx(3.0 * scaling.lr_area([n], n)[0] ** -0.2, rel=1e-9)
    noisy = clean * np.exp(0.01 * np.random.default_rng(0).standard_normal(len(clean)))
    assert scaling.fit_curve(S[2:12], noisy[2:12])["alpha"] == pytest.approx(0.2, abs=0.03)
    assert scaling.predict_final(ends * tps, clean, tps, n, 0.05) is None  # 1 window after warmup: too few


def test_docs_extrapolation_table_is_what_the_command_prints():
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    at = lambda p: os.path.join(root, p)
    want = scaling.extrapolation_table([at("assets/sweeps/fig1a.csv"), at("assets/sweeps/fig5.csv")]) + \
        scaling.extrapolation_table([at("assets/sweeps/finetune.csv")], warmup=0.0, schedule="constant")[2:]
    assert "\n".join(want) in open(at("docs/scaling.md")).read()
