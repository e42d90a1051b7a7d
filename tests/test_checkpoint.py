"""Checkpoints and exact resume (checkpoint.py, train.py): a killed run loses nothing.

The training tests run `python train.py` in subprocesses on a tiny model (D 32, L 1, H 16, T 16, V 256,
300 steps of one sequence) over a synthetic token file, logging every step, and compare runs bit for bit.
A persistent XLA cache (one per session) keeps every process after the first from recompiling.
Run: python -m pytest -q tests/test_checkpoint.py
"""
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
import checkpoint  # noqa: E402

V, T, STEPS, CKPT = 256, 16, 300, 50  # CKPT: checkpoint interval in steps
# Dies by SIGKILL (or another signal) when the training loop asks for the batch of step $KILL_AT: a kill at
# a chosen step, mid-loop, with no chance to clean up.
KILLER = ("import os, signal, sys, data, train; get = data.get_batch; at = int(os.environ['KILL_AT']); "
          "sig = getattr(signal, os.environ.get('KILL_SIG', 'SIGKILL')); "
          "data.get_batch = lambda *a, **k: os.kill(os.getpid(), sig) or get(*a, **k) if a[4] == at else get(*a, **k); "
          "train.main(sys.argv[1:])")


def make_tokens(d, n=20_000, max_id=None, seed=0):
    """A learnable synthetic stream (t_i = 7i + noise mod V) in data.load's format: tokens.u16 + meta.json."""
    d.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    t = ((np.arange(n) * 7 + rng.integers(0, 3, n)) % V).astype(np.uint16)
    if max_id is not None:
        t[n // 2] = max_id
    t.tofile(d / "tokens.u16")
    (d / "meta.json").write_text(json.dumps(dict(token_count=n, train_tokens=n - 2000, val_tokens=2000,
                                                 max_token_id=int(t.max()), vocab_size=V)))
    return d


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    w = tmp_path_factory.mktemp("ckpt")
    make_tokens(w / "ds")
    return w


def args(work, out, **kw):
    cfg = dict(out_dir=str(work / out), data=str(work / "ds"), d_model=32, n_layers=1, head_dim=16, seq_len=T,
               vocab_size=V, batch_size=1, train_tokens=STEPS * T, log_every=T, ckpt_every=CKPT * T,
               eval_every=10**9, eval_tokens=8 * T, lr=1e-2, t2=10_000, peak_flops=1e12, seed=0,
               fused_update=True)  # DEFAULTS' (the default config file, configs/tiny.py, turns it off)
    cfg.update(kw)
    return [f"--{k}={v}" for k, v in cfg.items()]


def train(work, argv, code=None, env=None, wait=True):
    cmd = [sys.executable] + (["-c", code] if code else ["train.py"]) + list(argv)
    env = dict(os.environ, JAX_PLATFORMS="cpu", JAX_COMPILATION_CACHE_DIR=str(work / "xla_cache"), **(env or {}))
    if not wait:
        return subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)


def ok(p):
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-3000:]
    return p


def metrics(out):
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


EXACT = ("train_loss", "val_loss", "b_simple")  # b_simple: the noise scale's EMAs must resume too


def losses(out):
    """(step, kind, value, lr) of every logged loss (and noise scale): what an exact resume reproduces bit for bit."""
    return [(m["step"], k, m[k], m.get("lr")) for m in metrics(out) for k in EXACT if k in m]


def arrays(ckpt):
    with np.load(ckpt / "arrays.npz") as z:
        return {k: z[k] for k in z.files}


def assert_same_run(ref, out):
    assert losses(out) == losses(ref)  # exact float equality: every step's loss, the LR, the final val loss
    steps = [m["step"] for m in metrics(out) if "train_loss" in m]
    assert steps == list(range(1, STEPS + 1))  # no duplicated or orphaned lines around the resume point
    a, b = arrays(ref / f"ckpt_{STEPS:09d}"), arrays(out / f"ckpt_{STEPS:09d}")
    assert a.keys() == b.keys() and len(a) > 3
    for k in a:  # params and optimizer state, bit for bit (bf16 is stored as its uint16 pattern)
        assert a[k].dtype == b[k].dtype and np.array_equal(a[k], b[k]), k


@pytest.mark.parametrize("dtype,corrupt", [("float32", False), ("bfloat16", True)])
def test_sigkill_then_resume_is_bitwise_exact(work, dtype, corrupt):
    """SIGKILL at a random step after a checkpoint, resume: same losses, same final params and optimizer
    state, bit for bit, in fp32 and in bf16 with stochastic rounding (its noise is keyed by (seed, step)).
    The bf16 case also truncates the newest checkpoint first: resume falls back to the one before, and
    measures the gradient noise scale every 16 steps (its EMAs are in the checkpoint)."""
    kw = dict(param_dtype=dtype, rounding="stochastic", **({"noise_every": 16 * T} if corrupt else {}))
    ref, out = work / f"ref_{dtype}", work / f"kill_{dtype}"
    ok(train(work, args(work, ref.name, **kw)))
    kill_at = int(np.random.default_rng(len(dtype)).integers(2 * CKPT + 5, STEPS - 5))  # 284 (fp32), 241 (bf16)
    p = train(work, args(work, out.name, **kw), code=KILLER, env=dict(KILL_AT=str(kill_at)))
    assert p.returncode == -signal.SIGKILL, p.stderr[-2000:]
    ckpts = checkpoint.list_checkpoints(out)
    newest = (kill_at - 1) // CKPT * CKPT  # steps 0..kill_at-1 ran before the kill
    assert [s for s, _ in ckpts] == [newest - CKPT, newest]  # keep_ckpts=2
    assert max(m["step"] for m in metrics(out)) > newest  # the log ran past the checkpoint: it must be cut back
    if corrupt:
        npz = Path(ckpts[-1][1]) / "arrays.npz"
        npz.write_bytes(npz.read_bytes()[: npz.stat().st_size // 2])
    p = ok(train(work, args(work, out.name, init_from="resume", **kw)))
    resumed = newest - CKPT if corrupt else newest
    assert f"resuming from {out / f'ckpt_{resumed:09d}'} (step {resumed})" in p.stdout
    assert ("warning: skipping" in p.stdout) == corrupt
    assert "train step: fused" in p.stdout  # the optimizer inside the backward pass (fused.py), the default
    assert_same_run(ref, out)
    assert corrupt == any("b_simple" in m for m in metrics(out))
    meta = checkpoint.read_meta(out / f"ckpt_{STEPS:09d}")
    assert meta["step"] == STEPS and meta["tokens"] == STEPS * T and meta["data"]["next_step"] == STEPS
    assert meta["config"]["param_dtype"] == dtype and meta["metrics"] == metrics(out)
    assert meta["rng"] == dict(seed=0, step=STEPS) and "code_version" in meta


@pytest.mark.parametrize("how", ["external SIGTERM", "SIGINT at step 8"])
def test_signal_checkpoints_at_the_next_step_and_resumes_exactly(work, how):
    """SIGTERM from outside at a random moment, or Ctrl-C (SIGINT) at a known step: checkpoint at the next
    step boundary, exit 0, resume exactly. The log covers 3 steps per line, so a stop inside a window (step 8
    surely) must carry that window's losses in the checkpoint to log the same line after the resume. The SIGINT
    case resumes as the interrupt tells the user to, with --out_dir and --init_from=resume alone: the run's
    config.json gives the rest (not configs/tiny.py, the default config file)."""
    kw = dict(log_every=3 * T, ckpt_every=0)
    ref, out = work / "ref_signal", work / how.replace(" ", "_")
    if not ref.exists():
        ok(train(work, args(work, ref.name, **kw)))
    if how.startswith("SIGINT"):
        p = train(work, args(work, out.name, **kw), code=KILLER, env=dict(KILL_AT="8", KILL_SIG="SIGINT"), wait=False)
    else:
        p = train(work, args(work, out.name, **kw), wait=False)
        deadline = time.time() + 120
        while not ((out / "metrics.jsonl").exists() and (out / "metrics.jsonl").read_text()) and p.poll() is None:
            assert time.time() < deadline
            time.sleep(0.01)
        p.send_signal(signal.SIGTERM)
    stdout, stderr = p.communicate(timeout=120)
    assert p.returncode == 130, stderr[-3000:]  # common.INTERRUPTED: stopped by a signal, checkpointed
    (step, path), = checkpoint.list_checkpoints(out)
    assert 0 < step < STEPS, "the run ended before the signal arrived"
    assert step == 8 or how.startswith("external")  # the signal came while step 8's batch was fetched
    assert f"{'SIGINT' if 'SIGINT' in how else 'SIGTERM'}: checkpoint written at step {step}" in stdout
    assert len(checkpoint.read_meta(path)["pending_losses"]) == step % 3
    alone = [f"--out_dir={out}", "--init_from=resume"]
    p = ok(train(work, alone if how.startswith("SIGINT") else args(work, out.name, init_from="resume", **kw)))
    assert "note:" not in p.stdout  # nothing differs from the run's config
    assert [m["step"] for m in metrics(out) if "train_loss" in m] == sorted({*range(3, STEPS + 1, 3), STEPS})
    assert losses(out) == losses(ref)
    a, b = arrays(ref / f"ckpt_{STEPS:09d}"), arrays(out / f"ckpt_{STEPS:09d}")
    assert all(np.array_equal(a[k], b[k]) for k in a) and a.keys() == b.keys()


def test_signal_without_a_writable_checkpoint_exits_nonzero(work):
    """SIGINT (Ctrl-C) when the checkpoint cannot be written (disk full): exit 1 with one error line."""
    code = ("import checkpoint, errno; checkpoint.save = lambda *a, **k: (_ for _ in ()).throw("
            "OSError(errno.ENOSPC, 'No space left on device')); " + KILLER)
    p = train(work, args(work, "full", ckpt_every=0), code=code, env=dict(KILL_AT="7", KILL_SIG="SIGINT"))
    assert p.returncode == 1
    assert p.stderr.strip().splitlines()[-1] == "error: could not write the checkpoint of step 7: [Errno 28] No space left on device"
    assert "Traceback" not in p.stderr


def test_nan_loss_stops_naming_the_step_and_keeps_the_last_good_checkpoint(work):
    """An absurd LR drives the weights to inf within a few steps. The run must stop (exit status 3, which
    sweep.py records as diverged) naming the step, keep the checkpoints written before, and never write one
    holding a non-finite value."""
    out = work / "nan"  # a checkpoint due every step, a log line every 4: the save itself must check
    p = train(work, args(work, out.name, lr=1e37, log_every=4 * T, ckpt_every=T, keep_ckpts=100))
    assert p.returncode == 3 and "Traceback" not in p.stderr
    err = p.stderr.strip().splitlines()[-1]
    assert err.startswith("error: ") and (" at step " in err or " after step " in err), err
    ckpts = checkpoint.list_checkpoints(out)
    assert ckpts, "the first steps are finite, so a checkpoint exists"
    for _, path in ckpts:
        assert all(np.isfinite(a.view(jnp.bfloat16) if a.dtype == np.uint16 else a).all() for a in arrays(Path(path)).values())
    assert all(np.isfinite(m["train_loss"]) for m in metrics(out) if "train_loss" in m)


def finished_ref(work):
    ref = work / "ref_float32"  # made by the SIGKILL test; again here when this test runs alone
    if not ref.exists():
        ok(train(work, args(work, ref.name)))
    return ref


def test_resume_refuses_a_changed_model_optimizer_or_budget(work):
    """A resume refuses a change of the model, the optimizer or the budget in one line that says what to do, with
    the original flags or with --out_dir and --init_from=resume alone (the run's config.json); a safe change is
    taken and said; a run directory without its config.json is refused."""
    ref = finished_ref(work)
    cases = [(dict(d_model=64), "d_model 32 -> 64"), (dict(optimizer="sgd"), "optimizer 'adamw' -> 'sgd'"),
             (dict(train_tokens=400 * T), "--allow_budget_change=True")]
    for kw, msg in cases:
        p = train(work, args(work, ref.name, init_from="resume", **kw))
        lines = p.stderr.strip().splitlines()
        assert p.returncode == 1 and len(lines) == 1 and lines[0].startswith("error: cannot resume") and msg in lines[0], p.stderr
    alone = [f"--out_dir={ref}", "--init_from=resume"]  # the saved config, and one flag that differs from it
    for flag, msg in [("--d_model=64", "(d_model 32 -> 64); drop --d_model to continue the run as it was, or start a "
                       f"new run from its weights with --init_from={ref / f'ckpt_{STEPS:09d}'} and another --out_dir"),
                      ("--t2=20000", "(b2 "), ("--train_tokens=6400", "train_tokens 4,800 -> 6,400 changes the run's "
                       "length and LR schedule; drop --train_tokens to continue the run as it was, or pass "
                       "--allow_budget_change=True")]:
        p = train(work, [*alone, flag])
        lines = p.stderr.strip().splitlines()
        assert p.returncode == 1 and len(lines) == 1 and lines[0].startswith("error: cannot resume") and msg in lines[0], p.stderr
        assert " = " not in p.stdout  # refused before the config is printed
    more = work / "more"  # asked for explicitly, a longer budget continues the finished run
    shutil.copytree(ref, more)
    p = ok(train(work, args(work, more.name, init_from="resume", train_tokens=(STEPS + 20) * T, allow_budget_change=True)))
    assert "note: train_tokens 4,800 -> 5,120: the cosine schedule now spans 320 steps" in p.stdout
    assert [m["step"] for m in metrics(more) if "train_loss" in m] == list(range(1, STEPS + 21))
    assert losses(more)[:STEPS] == losses(ref)[:STEPS]
    # safe keys are taken, each said in one line; the finished run has nothing left to train
    p = ok(train(work, [f"--out_dir={more}", "--init_from=resume", "--eval_every=1600", "--keep_ckpts=3"]))
    assert "note: resuming with eval_every 1000000000 -> 1600\nnote: resuming with keep_ckpts 2 -> 3\n" in p.stdout
    assert "nothing to train" in p.stdout and "note: train_tokens" not in p.stdout  # the new budget was saved
    saved = json.loads((more / "config.json").read_text())
    assert (saved["eval_every"], saved["train_tokens"], saved["allow_budget_change"]) == (1600, 5120, False)
    gone = work / "no_config"  # checkpoints, but the run's config.json lost: say so, train nothing
    shutil.copytree(ref, gone)
    (gone / "config.json").unlink()
    p = train(work, [f"--out_dir={gone}", "--init_from=resume"])
    assert p.returncode == 1 and p.stderr.strip().splitlines() == [
        f"error: cannot resume {gone / f'ckpt_{STEPS:09d}'}: {gone} holds no config.json, the run's config; restore it "
        f"(the checkpoint's meta.json holds it as 'config'), or start a new run from its weights with "
        f"--init_from={gone / f'ckpt_{STEPS:09d}'} and another --out_dir"], p.stderr


def test_init_from_a_checkpoint_loads_weights_with_a_fresh_optimizer(work):
    """Fine-tuning: params from the checkpoint, optimizer state new, step 0, constant LR. With LR 1e-12,
    20 Adam steps (each moves a weight by about LR at most) leave the weights equal to the checkpoint's to
    1e-9, far below their spacing of differences between runs (~1e-2), so they were loaded, not re-made."""
    ref = finished_ref(work)
    ft = work / "finetune"
    ok(train(work, args(work, ft.name, init_from=ref / f"ckpt_{STEPS:09d}", schedule="constant", lr=1e-12,
                        train_tokens=20 * T)))
    a, b = arrays(ref / f"ckpt_{STEPS:09d}"), arrays(ft / "ckpt_000000020")
    assert b["opt/step"] == 20 and a["opt/step"] == STEPS  # the optimizer counted from 0
    for k in (k for k in a if k.startswith("params/")):
        np.testing.assert_allclose(b[k], a[k], rtol=0, atol=1e-9)
    first = lambda out: next(m["train_loss"] for m in metrics(out) if "train_loss" in m)
    assert first(ft) < first(ref) - 1  # step 1 already has trained weights (an untrained model: ~ln V = 5.5)


# ---------------------------------------------------------------- checkpoint.py on its own, in process
def tree(x):
    return {"params": {"w": jnp.full((3, 4), x, jnp.float32), "b": jnp.arange(5, dtype=jnp.bfloat16) + x},
            "opt": {"step": jnp.int32(x), "m": {"w": jnp.zeros((3, 4))}}}


def test_save_load_roundtrip_keep_and_atomicity(tmp_path):
    for s in (10, 20, 30):
        checkpoint.save(str(tmp_path), s, tree(s), {"note": s}, keep=2)
    assert [s for s, _ in checkpoint.list_checkpoints(tmp_path)] == [20, 30]
    (tmp_path / "ckpt_000000040.tmp999").mkdir()  # a write killed before its rename: never a checkpoint
    (tmp_path / "ckpt_000000040.tmp999" / "arrays.npz").write_bytes(b"partial")
    assert checkpoint.latest_valid(str(tmp_path)) == str(tmp_path / "ckpt_000000030")
    out, meta = checkpoint.load(str(tmp_path / "ckpt_000000030"), jax.tree.map(jnp.zeros_like, tree(0)))
    assert meta["note"] == 30 and meta["step"] == 30
    for a, b in zip(jax.tree.leaves(out), jax.tree.leaves(tree(30))):
        assert a.dtype == b.dtype and np.array_equal(np.asarray(a), np.asarray(b))
    checkpoint.save(str(tmp_path), 40, tree(40), {}, keep=2)
    assert sorted(os.listdir(tmp_path)) == ["ckpt_000000030", "ckpt_000000040"]  # the leftover is gone too


@pytest.mark.parametrize("damage", ["truncate", "flip", "no_meta", "bad_meta", "no_arrays"])
def test_damaged_newest_checkpoint_falls_back_to_the_previous(tmp_path, damage):
    for s in (1, 2):
        checkpoint.save(str(tmp_path), s, tree(s), {}, keep=5)
    d = tmp_path / "ckpt_000000002"
    npz = (d / "arrays.npz").read_bytes()
    if damage == "truncate":
        (d / "arrays.npz").write_bytes(npz[:-100])
    elif damage == "flip":  # same size, one byte off: only the hash can tell
        i = len(npz) // 2
        (d / "arrays.npz").write_bytes(npz[:i] + bytes([npz[i] ^ 1]) + npz[i + 1:])
    elif damage == "no_meta":
        (d / "meta.json").unlink()
    elif damage == "bad_meta":
        (d / "meta.json").write_text((d / "meta.json").read_text()[:50])
    else:
        (d / "arrays.npz").unlink()
    warnings = []
    assert checkpoint.latest_valid(str(tmp_path), warnings.append) == str(tmp_path / "ckpt_000000001")
    assert len(warnings) == 1 and "ckpt_000000002" in warnings[0]
    with pytest.raises(checkpoint.CheckpointError):
        checkpoint.load(str(d), tree(0))
    (tmp_path / "ckpt_000000001" / "arrays.npz").write_bytes(b"")
    assert checkpoint.latest_valid(str(tmp_path), warnings.append) is None  # nothing valid: None, never garbage


def test_load_refuses_a_different_model_or_optimizer(tmp_path):
    checkpoint.save(str(tmp_path), 1, tree(1), {})
    path = str(tmp_path / "ckpt_000000001")
    wrong_shape = tree(1)
    wrong_shape["params"]["w"] = jnp.zeros((4, 4))
    with pytest.raises(checkpoint.CheckpointError, match=r"params/w' is float32\[3, 4\], the config needs float32\[4, 4\]"):
        checkpoint.load(path, wrong_shape)
    no_momentum = tree(1)
    del no_momentum["opt"]["m"]  # e.g. Adam's state offered to plain SGD: the extra arrays are an error
    with pytest.raises(checkpoint.CheckpointError, match="opt/m/w"):
        checkpoint.load(path, no_momentum)
    params_only = checkpoint.load(path, {"params": tree(0)["params"]})[0]  # fine-tuning reads params alone
    assert np.array_equal(params_only["params"]["w"], np.full((3, 4), 1.0))


def test_several_steps_per_call_train_like_one_and_resume_exactly(work):
    """steps_per_call=8 (a lax.scan over 8 steps per call; 300 = 37 x 8 + a call of 4): the losses of one step
    per call, log windows of 8 steps at the calls' ends, checkpoints at the first call end past each interval,
    and a SIGKILL then resume is bit for bit its uninterrupted run."""
    kw = dict(log_every=8 * T)
    one, eight, out = work / "spc1", work / "spc8", work / "spc8_kill"
    ok(train(work, args(work, one.name, **kw)))
    ok(train(work, args(work, eight.name, steps_per_call=8, **kw)))
    a, b = losses(one), losses(eight)
    assert [s for s, *_ in a] == [s for s, *_ in b] == [*range(8, 297, 8), 300, 300]  # 37 windows, the last, val
    # the same steps in one program: XLA may fuse them differently, a few fp32 ulps apart over 300 steps
    np.testing.assert_allclose([v for _, _, v, _ in b], [v for _, _, v, _ in a], rtol=1e-5)
    assert [s for s, _ in checkpoint.list_checkpoints(eight)] == [256, 300]  # keep_ckpts 2; 256 crossed 250
    p = train(work, args(work, out.name, steps_per_call=8, **kw), code=KILLER, env=dict(KILL_AT="130"))
    assert p.returncode == -signal.SIGKILL, p.stderr[-2000:]
    assert [s for s, _ in checkpoint.list_checkpoints(out)] == [56, 104]  # the calls that crossed 50 and 100
    ok(train(work, args(work, out.name, steps_per_call=8, init_from="resume", **kw)))
    assert losses(out) == losses(eight)
    x, y = arrays(eight / f"ckpt_{STEPS:09d}"), arrays(out / f"ckpt_{STEPS:09d}")
    assert x.keys() == y.keys() and all(np.array_equal(x[k], y[k]) for k in x)
