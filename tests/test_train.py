"""End to end: the README's commands. train.py at batch size 1 with each optimizer (Adam on the GPT-2-token tiny
config, then sample.py on the result; the others on the default byte config), the default byte-level config
and its sample."""
import json
import math
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run(args, cache=None, **kw):
    """A script in a subprocess; cache: jax's persistent compilation cache, shared by this file's runs (the tiny
    config's model init and eval step are the same programs for every optimizer: compiled once), as
    tests/test_checkpoint.py does."""
    env = dict(os.environ, **({"JAX_COMPILATION_CACHE_DIR": str(cache)} if cache else {}))
    return subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True, timeout=600, env=env, **kw)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("data")
    r = run(["data.py", "stdlib", f"--out_dir={d}"])
    assert r.returncode == 0, r.stderr
    return d


@pytest.fixture(scope="module")
def xla_cache(tmp_path_factory):
    return tmp_path_factory.mktemp("xla_cache")


# lr 0 takes optim.DEFAULT_LR (the paper's GPT-2 batch-1 values; Muon's blocks take DEFAULT_MUON_LR).
# Adafactor's LR multiplies the parameter RMS (0.07-0.09 for these models' embeddings), so its paper value
# is ~10x too slow for a run of 64-128 steps; 0.03 gives it an effective step size like Adam's. Adam runs on
# GPT-2 tokens (V 50257, the slow one: most of a step is its logits), the others on the default byte config.
@pytest.mark.parametrize("optimizer,lr,cfg", [("adamw", 0, "configs/tiny_gpt2.py"), ("sgd", 0, "configs/tiny.py"),
                                              ("adafactor", 0.03, "configs/tiny.py"), ("muon", 0, "configs/tiny.py")])
def test_tiny_config_trains_with_each_optimizer_at_batch_size_1(optimizer, lr, cfg, data_dir, xla_cache, tmp_path):
    out = tmp_path / optimizer
    r = run(["train.py", cfg, f"--optimizer={optimizer}", "--batch_size=1", f"--lr={lr}",
             "--train_tokens=16384", "--eval_tokens=4096", "--eval_every=8192", "--log_every=4096",
             f"--data_dir={data_dir}", f"--out_dir={out}"], cache=xla_cache)
    assert r.returncode == 0, r.stderr[-2000:]
    metrics = [json.loads(line) for line in open(out / "metrics.jsonl")]
    val = [m["val_loss"] for m in metrics if "val_loss" in m]
    train = [m["train_loss"] for m in metrics if "train_loss" in m]
    assert len(val) == 2 and len(train) == 4
    # GPT-2 tokens: from ln(50257) + 1/2 = 11.3 at init, Adam must have learned > 6.3 nats in 128 steps of one
    # 128-token sequence each (measured 3.86; SGD 4.55, near the 4.5-nat unigram entropy of the stdlib corpus,
    # Muon 3.73, Adafactor 3.71). Bytes: from ln 256 + 1/2 = 6.05, > 2.4 nats in 64 steps of 256 bytes
    # (measured: SGD 3.32, about the bytes' unigram entropy; Adafactor 2.93, Muon 2.96); still improving
    assert val[-1] < (5.0 if "gpt2" in cfg else 3.65) and val[-1] < val[0] and train[-1] < train[0] - 1.0
    cfg, run_ = json.load(open(out / "config.json")), json.load(open(out / "run.json"))
    assert cfg["optimizer"] == optimizer and run_["b1"] == (0.9 if optimizer in ("adamw", "muon") else 0.0)
    if optimizer == "muon":  # its own LR and momentum are printed beside Adam's (the embeddings')
        assert f"muon_lr {run_['muon_lr']:g}, muon_b1 0.95" in r.stdout and run_["muon_lr"] == 0.02
    if optimizer == "adamw":  # sample.py reads the run and writes text that continues the prompt
        s = run(["sample.py", f"--out_dir={out}", "--prompt=import os\n", "--max_new_tokens=20", "--seed=1"],
                cache=xla_cache)
        assert s.returncode == 0, s.stderr[-2000:]
        assert s.stdout.startswith("import os\n") and len(s.stdout) > len("import os\n") + 10


def test_default_byte_config_trains_logs_bits_per_byte_and_samples_text(data_dir, xla_cache, tmp_path):
    """The default config (configs/tiny.py: UTF-8 bytes, V 256) on a short budget: val loss in nats per
    byte falls from ln 256 + 1/2, bits per byte = nats / ln 2 (1 byte per token, but for document
    separators), and sample.py decodes the byte tokens back to text after the prompt."""
    out = tmp_path / "bytes"
    r = run(["train.py", "--train_tokens=16384", "--eval_tokens=4096", "--eval_every=8192", "--log_every=4096",
             f"--data_dir={data_dir}", f"--out_dir={out}"], cache=xla_cache)
    assert r.returncode == 0, r.stderr[-2000:]
    val = [m for m in map(json.loads, open(out / "metrics.jsonl")) if "val_loss" in m]
    assert len(val) == 2 and val[-1]["val_loss"] < val[0]["val_loss"] < 6.05
    for m in val:  # the stdlib's val split: one separator per document, ~1 in 16k bytes
        assert m["val_bpb"] == pytest.approx(m["val_loss"] / math.log(2), rel=2e-3)
    s = run(["sample.py", f"--out_dir={out}", "--prompt=def f(x):", "--max_new_tokens=40", "--seed=1"], cache=xla_cache)
    assert s.returncode == 0, s.stderr[-2000:]
    assert s.stdout.startswith("def f(x):") and 9 < len(s.stdout) <= 9 + 40 + 1  # 40 bytes: at most 40 characters


def test_cpu_mfu_is_against_the_peak_probed_around_each_log_window(tmp_path, monkeypatch, capsys):
    """A shared CPU's matmul speed drifts, so train.py measures the peak again during the run: each log
    window's MFU is against the better of the probes before and after it, and the summary against the
    time-weighted peak. Probe results are scripted here, so the expected numbers are exact."""
    sys.path.insert(0, ROOT)
    import numpy as np
    import plan
    import train
    probes = [100e9, 200e9, 50e9, 80e9, 60e9]  # the first is the start-up probe (device_peak)
    it = iter(probes)
    monkeypatch.setattr(plan, "probe_peak", lambda dtype, tries: next(it))
    monkeypatch.setattr(plan, "PROBE_EVERY_S", -1)  # probe at every log
    d, V, T = tmp_path / "ds", 256, 16
    d.mkdir()
    (np.arange(20_000) * 7 % V).astype(np.uint16).tofile(d / "tokens.u16")
    (d / "meta.json").write_text(json.dumps(dict(token_count=20_000, train_tokens=18_000, val_tokens=2_000,
                                                 max_token_id=V - 1, vocab_size=V)))
    cfg = train.main([f"--data={d}", f"--out_dir={tmp_path / 'out'}", "--d_model=32", "--n_layers=1",
                      "--head_dim=16", f"--seq_len={T}", f"--vocab_size={V}", "--batch_size=1",
                      f"--train_tokens={40 * T}", f"--log_every={10 * T}", "--eval_every=0", f"--eval_tokens={8 * T}",
                      "--peak_flops=0"])
    windows = [json.loads(line) for line in open(tmp_path / "out" / "metrics.jsonl")]
    windows = [m for m in windows if "train_loss" in m]
    assert [m["peak_flops"] for m in windows] == [max(a, b) for a, b in zip(probes, probes[1:])]
    for m in windows:
        assert m["mfu"] == pytest.approx(m["tokens_per_s"] * cfg["flops_per_token"] / m["peak_flops"], rel=1e-12)
    steady = windows[1:]  # the summary leaves out the first window (warm-up)
    dt = [10 * T / m["tokens_per_s"] for m in steady]
    tps = 30 * T / sum(dt)
    mfu = 30 * T * cfg["flops_per_token"] / sum(t * m["peak_flops"] for t, m in zip(dt, steady))
    out = capsys.readouterr().out
    assert f"trained {30 * T:,} tokens in" in out and f"{tps:,.0f} tokens/s, MFU {mfu:.1%} of the" in out


def test_wandb_gets_the_rows_of_metrics_jsonl(tmp_path):
    """--wandb_project: a stand-in wandb module (the real one is an optional extra, and logs over the network)
    records what train.py hands it: one init named after out_dir, the rows metrics.jsonl gets, a finish. Without
    wandb installed the key is refused in one line before the run starts."""
    import subprocess
    V, T, out, calls = 256, 16, tmp_path / "out", tmp_path / "calls.json"
    d = tmp_path / "ds"
    d.mkdir()
    import numpy as np
    (np.arange(20_000) * 7 % V).astype(np.uint16).tofile(d / "tokens.u16")
    (d / "meta.json").write_text(json.dumps(dict(token_count=20_000, train_tokens=18_000, val_tokens=2_000,
                                                 max_token_id=V - 1, vocab_size=V)))
    argv = [f"--data={d}", f"--out_dir={out}", "--d_model=32", "--n_layers=1", "--head_dim=16", f"--seq_len={T}",
            f"--vocab_size={V}", f"--train_tokens={20 * T}", f"--log_every={5 * T}", f"--eval_every={10 * T}",
            f"--eval_tokens={8 * T}", "--lr=1e-3", "--wandb_project=smallbatch-test"]
    fake = (f"import atexit, json, sys, types\ncalls = []\nw = types.ModuleType('wandb')\n"
            "class Run:\n    def log(self, row, step): calls.append(['log', row, step])\n"
            "    def finish(self): calls.append(['finish'])\n"
            "def init(**kw): calls.append(['init', {k: kw[k] for k in ('project', 'name', 'resume')}]); return Run()\n"
            f"w.init = init\nsys.modules['wandb'] = w\natexit.register(lambda: open({str(calls)!r}, 'w').write(json.dumps(calls)))\n"
            "import runpy; sys.argv = sys.argv[1:]; runpy.run_path('train.py', run_name='__main__')")
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    p = subprocess.run([sys.executable, "-c", fake, "train.py", *argv], cwd=ROOT, capture_output=True, text=True,
                       env=env, timeout=300)
    assert p.returncode == 0, p.stderr[-3000:]
    got = json.loads(calls.read_text())
    rows = [json.loads(line) for line in open(out / "metrics.jsonl")]
    assert got[0] == ["init", dict(project="smallbatch-test", name="out", resume="allow")]
    assert [c[1] for c in got[1:-1]] == rows and [c[2] for c in got[1:-1]] == [r["step"] for r in rows]
    assert got[-1] == ["finish"]
    try:
        import wandb  # noqa: F401
    except ImportError:
        p = subprocess.run([sys.executable, "train.py", *argv], cwd=ROOT, capture_output=True, text=True, env=env,
                           timeout=300)
        assert p.returncode == 1 and p.stderr.strip().splitlines() == [
            "error: wandb_project='smallbatch-test' needs wandb: pip install -e '.[wandb]'"], p.stderr
