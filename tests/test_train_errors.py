"""Bad input to `python train.py` gives one clear `error: ...` line (exit 1), never a traceback wall.

Each case runs train.py in a subprocess, as a user would; all fail before training starts (most before
any data is read), so each costs about the JAX import. Run: python -m pytest -q tests/test_train_errors.py
"""
import os
import subprocess
import sys
import time
from pathlib import Path

import jax.numpy as jnp
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
import checkpoint  # noqa: E402
from test_checkpoint import T, V, make_tokens  # noqa: E402

TINY = ["--d_model=32", "--n_layers=1", "--head_dim=16", f"--seq_len={T}", f"--vocab_size={V}",
        f"--train_tokens={4 * T}", f"--eval_tokens={8 * T}", "--peak_flops=1e12"]


def run(*argv):
    t = time.perf_counter()
    p = subprocess.run([sys.executable, "train.py", *map(str, argv)], cwd=ROOT, capture_output=True, text=True,
                       timeout=120, env=dict(os.environ, JAX_PLATFORMS="cpu"))
    p.seconds = time.perf_counter() - t
    return p


def one_error(p, *fragments):
    """stderr is exactly one `error: ...` line holding every fragment; exit status 1."""
    assert p.returncode == 1 and "Traceback" not in p.stderr, p.stderr[-3000:]
    assert len(p.stderr.strip().splitlines()) == 1, p.stderr
    line = p.stderr.strip()
    assert line.startswith("error: ") and all(f in line for f in fragments), line
    return line


@pytest.fixture(scope="module")
def ds(tmp_path_factory):
    return make_tokens(tmp_path_factory.mktemp("errors") / "ds")


def test_unknown_key_names_the_closest_valid_keys():
    one_error(run("--lrr=1"), "unknown config key 'lrr'", "did you mean lr")
    one_error(run("--ckpt_evry=5"), "did you mean ckpt_every")


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


def test_token_id_not_below_vocab_size(tmp_path):
    bad = make_tokens(tmp_path / "bad", max_id=V + 44)
    one_error(run(*TINY, f"--out_dir={tmp_path / 'o'}", f"--data={bad}"), f"max token id {V + 44} >= vocab_size {V}")


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
    one_error(p, "h at 100% MFU", "--force=True")
    assert p.seconds < 60
