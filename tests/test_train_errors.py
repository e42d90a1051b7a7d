"""Bad input to `python train.py` gives one clear `error: ...` line (exit 1; a blown-up run exit 3), never a
traceback wall, and loses nothing.

Each case runs train.py in a subprocess, as a user would; most fail before training starts (most before any
data is read), so each costs about the JAX import. Run: python -m pytest -q tests/test_train_errors.py, or
`python tests/test_train_errors.py`: every bad input and the one line it gets, a line each.
"""
import os
import subprocess
import sys
import time
from pathlib import Path

import jax.numpy as jnp
import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
import checkpoint  # noqa: E402
from test_checkpoint import T, V, make_tokens  # noqa: E402

TINY = ["--d_model=32", "--n_layers=1", "--head_dim=16", f"--seq_len={T}", f"--vocab_size={V}",
        f"--train_tokens={4 * T}", f"--eval_tokens={8 * T}", "--peak_flops=1e12"]


def run(*argv, code=None):
    """train.py with argv in a subprocess; code: Python run first in that process (a simulated fault)."""
    t = time.perf_counter()
    pre = ["-c", f"{code}\nimport runpy, sys; sys.argv = sys.argv[1:]; runpy.run_path('train.py', run_name='__main__')",
           "train.py"] if code else ["train.py"]
    p = subprocess.run([sys.executable, *pre, *map(str, argv)], cwd=ROOT, capture_output=True, text=True,
                       timeout=120, env=dict(os.environ, JAX_PLATFORMS="cpu"))
    p.seconds = time.perf_counter() - t
    return p


def one_error(p, *fragments, before_dump=True, status=1):
    """stderr is exactly one `error: ...` line holding every fragment; exit status 1 (or `status`); with
    before_dump, it comes before the config dump and the plan (nothing of either on stdout)."""
    if os.environ.get("BAD_INPUTS_PRINT"):  # `python tests/test_train_errors.py`: the input and its line
        print(f"\n{' '.join(map(os.path.basename, map(str, p.args[1:2]))) + ' ' + ' '.join(map(str, p.args[2:]))}"
              f"\n    -> exit {p.returncode}: {p.stderr.strip().splitlines()[-1] if p.stderr.strip() else ''}")
    assert p.returncode == status and "Traceback" not in p.stderr, p.stderr[-3000:]
    if before_dump:
        assert " = " not in p.stdout and "plan:" not in p.stdout, p.stdout[-3000:]
    lines = p.stderr.strip().splitlines()  # after training started, the progress bar's lines come first
    assert len(lines) == 1 or not before_dump and sum(x.startswith("error:") for x in lines) == 1, p.stderr
    line = lines[-1]
    assert line.startswith("error: ") and all(f in line for f in fragments), line
    return line


@pytest.fixture(scope="module")
def ds(tmp_path_factory):
    return make_tokens(tmp_path_factory.mktemp("errors") / "ds")


def test_unknown_key_names_the_closest_valid_keys():
    one_error(run("--lrr=1"), "unknown config key 'lrr'", "did you mean lr")
    one_error(run("--ckpt_evry=5"), "did you mean ckpt_every")


def test_help_lists_every_key_and_exits_0():
    p = run("--help")
    assert p.returncode == 0 and p.stderr == "" and "--batch_size=1" in p.stdout and "--tokenizer='bytes'" in p.stdout


def test_wrong_type():
    one_error(run("--batch_size=abc"), "'batch_size' must be int", "'abc'")
    one_error(run("--force=yes"), "'force' must be bool")


def test_config_file_missing_or_broken(tmp_path):
    one_error(run("configs/nope.py"), "config file 'configs/nope.py' not found")
    (tmp_path / "typo.py").write_text("d_model = 64\nlearning_rate = 1e-3\n")
    one_error(run(tmp_path / "typo.py"), "unknown config key 'learning_rate'")
    (tmp_path / "broken.py").write_text("d_model = = 64\n")
    one_error(run(tmp_path / "broken.py"), "broken.py", "SyntaxError")


def test_missing_data(ds, tmp_path):
    one_error(run(*TINY, f"--out_dir={tmp_path / 'o1'}", f"--data={tmp_path / 'nowhere'}"), "nowhere")
    one_error(run(*TINY, f"--out_dir={tmp_path / 'o2'}", f"--data={tmp_path / 'nowhere'}/*.bin"), "no .bin shards")
    bare = tmp_path / "no_tokens"
    bare.mkdir()
    (bare / "meta.json").write_text((ds / "meta.json").read_text())  # the token file itself is missing
    one_error(run(*TINY, f"--out_dir={tmp_path / 'o3'}", f"--data={bare}"), "tokens.u16")


def test_empty_or_malformed_sources(tmp_path):
    """An empty text file, and a .jsonl whose first line is not JSON: one line naming the file, before the dump,
    and no prepared data directory left behind."""
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "a.txt").write_text("")
    one_error(run(*TINY, f"--out_dir={tmp_path / 'o1'}", f"--data={tmp_path / 'empty'}", f"--data_dir={tmp_path / 'd'}"),
              "no text in", "a.txt")
    (tmp_path / "bad.jsonl").write_text('{"prompt": "1+1=", "completion": "2"\n')
    one_error(run(*TINY, f"--out_dir={tmp_path / 'o2'}", f"--data={tmp_path / 'bad.jsonl'}",
                  f"--data_dir={tmp_path / 'd'}"), "bad.jsonl:1")
    assert not (tmp_path / "d").exists() or not any((tmp_path / "d").iterdir())


def test_token_id_not_below_vocab_size(tmp_path):  # found when the tokens are read, after the plan
    bad = make_tokens(tmp_path / "bad", max_id=V + 44)
    one_error(run(*TINY, f"--out_dir={tmp_path / 'o'}", f"--data={bad}"), f"max token id {V + 44} >= vocab_size {V}",
              before_dump=False)


@pytest.mark.parametrize("argv,fragments", [
    (["--batch_size=0"], ["batch_size=0 must be >= 1"]),
    (["--train_tokens=-5"], ["train_tokens=-5 must be >= 0"]),
    (["--train_tokens=5"], ["train_tokens=5 is less than one step", f"{T:,} tokens"]),
    (["--grad_accum=0"], ["grad_accum=0 must be >= 1"]),
    (["--batch_size=4", "--grad_accum=3"], ["batch_size=4 is not divisible by grad_accum=3"]),
    (["--d_model=40"], ["d_model=40 must be a multiple of head_dim=16"]),
    (["--head_dim=0"], ["head_dim=0", "must be >= 1"]),
    (["--seq_len=1"], ["seq_len=1 must be >= 2"]),
    (["--vocab_size=-1"], ["vocab_size=-1", "must be >= 1"]),
    (["--param_dtype=float16"], ["param_dtype='float16' must be one of"]),
    (["--optimizer=adam"], ["optimizer='adam' must be one of", "'adamw'"]),
    (["--schedule=linear"], ["schedule='linear' must be one of", "'cosine'"]),
    (["--rounding=up"], ["rounding='up' must be one of"]),
    (["--lr=-0.1"], ["lr=-0.1 must be >= 0"]),
    (["--b2=1.5"], ["b2=1.5 must be in [0, 1)"]),
    (["--t2=0"], ["t2=0.0 must be > 0 tokens"]),
    (["--b2=0.99", "--t2=1e6"], ["give b2 or t2, not both"]),
    (["--warmup=1.5"], ["warmup=1.5"]),
    (["--eval_tokens=0"], ["eval_tokens=0 must be >= 1"]),
    (["--log_every=-1"], ["log_every=-1 must be >= 0"]),
    (["--keep_ckpts=0"], ["keep_ckpts=0 must be >= 1"]),
    (["--mesh_model=3"], ["mesh_model=3 does not divide the 1 devices"]),
    (["--adafactor_decay=exp"], ["adafactor_decay='exp' must be one of"]),
    (["--optimizer=muon", "--muon_b1=1.2"], ["muon_b1=1.2 must be in [0, 1)"]),
    (["--optimizer=muon", "--muon_b1=0.9", "--muon_t1=1e3"], ["give muon_b1 or muon_t1, not both"]),
    (["--dry_run=True", "--plan_device=TPU v9", "--peak_flops=0"], ["plan_device='TPU v9' is not in the device table"]),
])
def test_bad_values_fail_in_one_line_before_anything_is_printed(ds, tmp_path, argv, fragments):
    one_error(run(*TINY, f"--out_dir={tmp_path / 'o'}", f"--data={ds}", *argv), *fragments)


def test_data_too_short_for_one_eval_batch(ds, tmp_path):  # found when the tokens are read, before training
    one_error(run(*TINY, f"--out_dir={tmp_path / 'o'}", f"--data={ds}", "--eval_batch_size=200"),  # 2,000 val tokens
              "val split", "2,000 tokens", "shorter than one eval batch of 200 x 16", before_dump=False)


def fake_run(out):
    """An out_dir as a run leaves it: two checkpoints (their contents do not matter here)."""
    out.mkdir()
    for s in (5, 10):
        checkpoint.save(str(out), s, {"params": {"w": jnp.ones(3)}}, {"config": {}}, keep=2)
    return out


def test_out_dir_holding_another_run(ds, tmp_path):
    out = fake_run(tmp_path / "run")
    for init in ("scratch", ds):  # a fresh run and a fine-tune both refuse to mix into it
        one_error(run(*TINY, f"--out_dir={out}", f"--data={ds}", f"--init_from={init}"),
                  "already holds another run's checkpoints", "--init_from=resume", "--overwrite=True")
    assert [s for s, _ in checkpoint.list_checkpoints(out)] == [5, 10]  # nothing was deleted


def test_corrupt_checkpoint(ds, tmp_path):
    out = fake_run(tmp_path / "run")
    for _, path in checkpoint.list_checkpoints(out):
        with open(Path(path) / "arrays.npz", "r+b") as f:
            f.truncate(10)
    one_error(run(*TINY, f"--out_dir={out}", f"--data={ds}", "--init_from=resume"),
              "init_from='resume'", "holds no valid checkpoint")
    one_error(run(*TINY, f"--out_dir={tmp_path / 'ft'}", f"--data={ds}", f"--init_from={out / 'ckpt_000000010'}"),
              "arrays.npz is missing, truncated or corrupt")
    one_error(run(*TINY, f"--out_dir={tmp_path / 'ft'}", f"--data={ds}", f"--init_from={tmp_path / 'nothing'}"),
              "is not 'scratch', 'resume', a checkpoint")


def test_gpt3_on_cpu_fails_fast_without_touching_data():
    """The paper's 1.3B config on this CPU: refused in seconds, before any download or allocation."""
    p = run("configs/gpt3.py")
    one_error(p)
    assert p.seconds < 60
    p = run("configs/gpt3.py", "--mesh_model=1")  # one device: the time estimate refuses it
    one_error(p, "h at 100% MFU", "--force=True", before_dump=False)  # the plan's time estimate refuses it
    assert p.seconds < 60


def test_sample_bad_input_is_one_line(tmp_path):
    """sample.py: no run in out_dir, a missing prompt file, and out-of-range settings, each one line."""
    def sample(*argv):
        return subprocess.run([sys.executable, "sample.py", *map(str, argv)], cwd=ROOT, capture_output=True, text=True,
                              timeout=120, env=dict(os.environ, JAX_PLATFORMS="cpu"))
    one_error(sample(f"--out_dir={tmp_path}"), "config.json in", "train a model there first")
    one_error(sample(f"--out_dir={tmp_path}", f"--prompt=@{tmp_path / 'nope.txt'}"), "prompt file", "not found")
    one_error(sample(f"--out_dir={tmp_path}", "--temperature=-1"), "temperature >= 0")
    one_error(sample(f"--out_dir={tmp_path}", "--max_new_tokens=0"), "max_new_tokens >= 1")


def test_two_runs_on_one_out_dir(ds, tmp_path):
    """A second train.py on a run directory in use is refused at once, naming the first's PID; the first runs on."""
    out = tmp_path / "run"
    first = subprocess.Popen([sys.executable, "train.py", *TINY, f"--train_tokens={4000 * T}", f"--out_dir={out}",
                              f"--data={ds}"], cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                             env=dict(os.environ, JAX_PLATFORMS="cpu"))
    try:
        deadline = time.time() + 60
        while not ((out / ".lock").exists() and (out / ".lock").read_text().strip()) and first.poll() is None:
            assert time.time() < deadline
            time.sleep(0.05)
        one_error(run(*TINY, f"--out_dir={out}", f"--data={ds}", "--init_from=resume"), "is in use by another process",
                  f"PID {first.pid}")
        assert first.poll() is None, first.stderr.read()
    finally:
        first.kill()
        first.wait()
    one_error(run(*TINY, f"--out_dir={out}", f"--data={ds}", "--train_tokens=-1"), "train_tokens=-1")  # SIGKILL: no stale lock
    p = run(*TINY, f"--out_dir={out}", f"--data={ds}", "--overwrite=True")
    assert p.returncode == 0, p.stderr[-2000:]


def test_out_dir_not_writable(ds, tmp_path):
    (tmp_path / "a_file").write_text("")
    one_error(run(*TINY, f"--out_dir={tmp_path / 'a_file' / 'run'}", f"--data={ds}"), "cannot write in", "a_file")
    if os.geteuid() != 0:  # root writes into a read-only directory anyway
        (tmp_path / "ro").mkdir(mode=0o555)
        one_error(run(*TINY, f"--out_dir={tmp_path / 'ro' / 'run'}", f"--data={ds}"), "cannot write in")


def test_full_disk_while_appending_metrics_leaves_whole_lines(ds, tmp_path):
    """The disk fills while a log window's line is appended: one error line, and metrics.jsonl holds whole lines."""
    out = tmp_path / "run"
    full = ("import builtins, errno\nopen0 = builtins.open\nn = [0]\nclass Full:\n"
            "    def __init__(self, f): self.f = f\n"
            "    def __getattr__(self, k): return getattr(self.f, k)\n"
            "    def __enter__(self): return self\n"
            "    def __exit__(self, *a): self.f.close()\n"
            "    def write(self, b): self.f.write(b[:7]); raise OSError(errno.ENOSPC, 'No space left on device')\n"
            "def fake(path, mode='r', *a, **k):\n"
            "    f = open0(path, mode, *a, **k)\n"
            "    if str(path).endswith('metrics.jsonl') and 'a' in mode:\n"
            "        n[0] += 1\n"
            "        return Full(f) if n[0] == 2 else f\n"
            "    return f\nbuiltins.open = fake")
    one_error(run(*TINY, f"--out_dir={out}", f"--data={ds}", f"--train_tokens={40 * T}", f"--log_every={4 * T}",
                  code=full), "could not append to", "metrics.jsonl", "No space left", before_dump=False)
    text = (out / "metrics.jsonl").read_text()
    assert text.endswith("\n") and len(text.splitlines()) == 1, text  # the first window's line, whole


def test_a_finite_blow_up_stops_the_run_as_diverged(ds, tmp_path):
    """--lr=1e6 keeps the loss finite but far above ln V (a uniform guess): the run stops with exit 3 after
    the warm-up, writes no summary, and names its last good checkpoint."""
    out = tmp_path / "run"
    one_error(run(*TINY, f"--out_dir={out}", f"--data={ds}", "--lr=1e6", f"--train_tokens={40 * T}",
                  f"--log_every={4 * T}", f"--ckpt_every={4 * T}"), "above ln V", "diverged",
              "last good checkpoint", before_dump=False, status=3)
    assert not (out / "summary.json").exists()


def test_divergence_needs_a_blow_up_sustained_over_8_steps(tmp_path):
    """Log windows of 2 steps (batch 256 at 65k tokens a window): one window far above ln V after windows near it is
    an oscillation, not a divergence; 8 steps of it are. Never within the first fifth of the run."""
    from types import SimpleNamespace
    import common
    import train
    job = SimpleNamespace(cfg=dict(out_dir=str(tmp_path), warmup=0.05), run=dict(n_steps=100),
                          mcfg=SimpleNamespace(vocab_size=256))  # ln V = 5.55
    rows = lambda losses: [dict(step=2 * (i + 1), train_loss=x) for i, x in enumerate(losses)]
    history = rows([5.0] * 20)
    train.check_loss(np.array([6.9, 6.9]), 42, job, history)  # 8 steps: (3 x 2 x 5.0 + 2 x 6.9) / 8 = 5.475
    with pytest.raises(common.Diverged, match="loss 7 of steps 35-42 is above ln V"):
        train.check_loss(np.array([7.0, 7.0]), 42, job, rows([5.0] * 17 + [7.0] * 3))
    with pytest.raises(common.Diverged):
        train.check_loss(np.array([9.0] * 8), 42, job, history)
    train.check_loss(np.array([9.0] * 8), 18, job, history[:5])  # the first fifth: a young model may recover


if __name__ == "__main__":
    raise SystemExit(subprocess.call([sys.executable, "-m", "pytest", "-q", "-s", "-n", "0", "-p", "no:cacheprovider",
                                      __file__], cwd=ROOT, env=dict(os.environ, BAD_INPUTS_PRINT="1")))
