"""End to end: the README's commands. train.py on the default tiny config (stdlib corpus) with each
optimizer at batch size 1, then sample.py on the result."""
import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run(args, **kw):
    return subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True, timeout=600, **kw)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("data")
    r = run(["data.py", "stdlib", f"--out_dir={d}"])
    assert r.returncode == 0, r.stderr
    return d


# lr 0 takes optim.DEFAULT_LR (the paper's GPT-2 batch-1 values). Adafactor's LR multiplies the
# parameter RMS (0.09 for this D = 128 model's embedding), so its paper value is ~10x too slow for a
# run of 128 steps; 0.03 gives it an effective step size like Adam's.
@pytest.mark.parametrize("optimizer,lr", [("sgd", 0), ("adafactor", 0.03), ("adamw", 0)])
def test_tiny_config_trains_with_each_optimizer_at_batch_size_1(optimizer, lr, data_dir, tmp_path):
    out = tmp_path / optimizer
    r = run(["train.py", "configs/tiny.py", f"--optimizer={optimizer}", "--batch_size=1", f"--lr={lr}",
             "--train_tokens=16384", "--eval_tokens=4096", "--eval_every=8192", "--log_every=4096",
             f"--data_dir={data_dir}", f"--out_dir={out}"])
    assert r.returncode == 0, r.stderr[-2000:]
    metrics = [json.loads(line) for line in open(out / "metrics.jsonl")]
    val = [m["val_loss"] for m in metrics if "val_loss" in m]
    train = [m["train_loss"] for m in metrics if "train_loss" in m]
    assert len(val) == 2 and len(train) == 4
    # from ln(50257) = 10.8 at init, every optimizer must have learned > 2.8 nats in 128 steps of one
    # 128-token sequence each, and still be improving (SGD and Adam reach ~4.4, near the 4.5-nat unigram
    # entropy of the stdlib corpus; Adafactor, with no bias correction and update clipping, ~7)
    assert val[-1] < 8.0 and val[-1] < val[0] and train[-1] < train[0] - 1.0
    cfg = json.load(open(out / "config.json"))
    assert cfg["optimizer"] == optimizer and cfg["resolved_b1"] == (0.9 if optimizer == "adamw" else 0.0)
    if optimizer == "adamw":  # sample.py reads the run and writes text that continues the prompt
        s = run(["sample.py", f"--out_dir={out}", "--prompt=import os\n", "--max_new_tokens=20", "--seed=1"])
        assert s.returncode == 0, s.stderr[-2000:]
        assert s.stdout.startswith("import os\n") and len(s.stdout) > len("import os\n") + 10
