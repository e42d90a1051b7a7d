"""Tests for sweep.py: tune rules on fake results, sweep file errors, the divergence rule, and a 4-point sweep
end to end (divergence, a kill and a resume, the CSV). The IsoFLOP generator is scaling.py's (tests/test_scaling.py)."""
import csv
import json
import os
import signal
import subprocess
import sys
import time

import pytest

import sweep

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("data")
    r = subprocess.run([sys.executable, "data.py", "stdlib", "--tokenizer=bytes", f"--out_dir={d}"], cwd=ROOT,
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    return d


def fake(results):
    """{name: result} from {point: loss or 'diverged' or 'todo'}."""
    return {sweep.point_name(p): dict(status="todo") if v == "todo" else dict(status="diverged") if v == "diverged"
            else dict(status="done", final_val_loss=v) for p, v in results}


def test_tune_rule_extends_an_lr_grid_until_its_best_point_is_inside():
    s = dict(points=[dict(opt="a", lr=1.0), dict(opt="a", lr=2.0)], tune=[dict(key="lr", factor=2, margin=1)])
    pts = lambda res: [p for p, _ in sweep.expand(s, fake(res))]
    lr = lambda res: sorted(p["lr"] for p in pts(res))
    assert lr([]) == [1.0, 2.0]  # nothing finished: nothing to decide
    assert lr([(dict(opt="a", lr=1.0), 3.0), (dict(opt="a", lr=2.0), "todo")]) == [1.0, 2.0]  # one pending: wait
    assert lr([(dict(opt="a", lr=1.0), 3.0), (dict(opt="a", lr=2.0), 2.5)]) == [1.0, 2.0, 4.0]  # best at the top
    assert lr([(dict(opt="a", lr=1.0), 2.0), (dict(opt="a", lr=2.0), 2.5)]) == [0.5, 1.0, 2.0]  # at the bottom
    res = [(dict(opt="a", lr=1.0), 3.0), (dict(opt="a", lr=2.0), 2.5), (dict(opt="a", lr=4.0), 2.7)]
    assert lr(res) == [1.0, 2.0, 4.0]  # inside: done
    # a diverged top point stops the climb even when the best is next to it
    assert lr([(dict(opt="a", lr=1.0), 3.0), (dict(opt="a", lr=2.0), "diverged")]) == [0.5, 1.0, 2.0]
    assert lr([(dict(opt="a", lr=1.0), "diverged"), (dict(opt="a", lr=2.0), "diverged")]) == [0.5, 1.0, 2.0]
    # margin 3 (LR x1/8 ... x8 around the best): three more on the short side at once, per group
    s["tune"] = [dict(key="lr", factor=2, margin=lambda p: 3)]
    assert lr([(dict(opt="a", lr=1.0), 3.0), (dict(opt="a", lr=2.0), 2.5)]) == [0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0]


def test_tune_rule_around_scales_the_best_point_of_a_settled_group_only():
    s = dict(points=[dict(opt="a", lr=1.0, t2=100.0), dict(opt="a", lr=2.0, t2=100.0), dict(opt="a", lr=4.0, t2=100.0),
                     dict(opt="b", lr=1.0, t2=100.0)],
             tune=[dict(key="lr", factor=2, margin=1), dict(key="t2", around="lr", factors=[0.5, 2],
                                                             where=lambda p: p["opt"] == "a")])
    res = [(dict(opt="a", lr=1.0, t2=100.0), 3.0), (dict(opt="a", lr=2.0, t2=100.0), 2.0),
           (dict(opt="a", lr=4.0, t2=100.0), "todo"), (dict(opt="b", lr=1.0, t2=100.0), 1.0)]
    assert len(sweep.expand(s, fake(res))) == 4 + 2  # b's lone point gets neighbours; a is not settled
    res[2] = (dict(opt="a", lr=4.0, t2=100.0), 2.5)
    got = sweep.expand(s, fake(res))
    variants = [(p["lr"], p["t2"]) for p, v in got if v == "t2"]
    assert variants == [(2.0, 50.0), (2.0, 200.0)]  # at the best LR; the LR rule leaves variants alone
    assert sum(p["opt"] == "b" for p, _ in got) == 3
    s["tune"].append(dict(key="seed", around="lr", values=[1, 2], where=lambda p: p["opt"] == "a"))  # more seeds
    got = sweep.expand(s, fake(res))
    assert [(p["lr"], p["t2"], p["seed"]) for p, v in got if v == "seed"] == [(2.0, 100.0, 1), (2.0, 100.0, 2)]


def test_sweep_file_errors_are_one_line_and_name_the_problem(tmp_path):
    f = tmp_path / "bad.py"
    f.write_text("config = 'configs/mini.py'\npoints = [dict(lr=1.0), dict(lr=1.0)]\n")
    with pytest.raises(ValueError, match="point lr=1 appears twice"):
        sweep.load(str(f))
    f.write_text("config = 'configs/mini.py'\npoints = [dict(lr=1.0)]\ntune = [dict(key='lr', factr=2)]\n")
    with pytest.raises(ValueError, match="unknown \\['factr'\\]"):
        sweep.load(str(f))
    f.write_text("config = 'configs/mini.py'\npoints = [dict(lrr=1.0)]\n")
    with pytest.raises(SystemExit, match="unknown config key 'lrr'; did you mean lr"):  # train.py's own check
        sweep.check(sweep.load(str(f)))
    with pytest.raises(ValueError, match="not found"):
        sweep.load(str(tmp_path / "missing.py"))


def test_a_train_loss_above_ln_v_after_a_fifth_of_the_tokens_is_divergence(tmp_path):
    (tmp_path / "run.json").write_text(json.dumps(dict(train_tokens=1000)))
    (tmp_path / "config.json").write_text(json.dumps(dict(vocab_size=256)))
    rows = [dict(tokens=100, train_loss=6.0), dict(tokens=300, train_loss=5.0)]  # ln 256 = 5.545
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert sweep.diverging(str(tmp_path)) is None  # above ln V only at the start (the init's loss)
    rows.append(dict(tokens=400, train_loss=float("nan")))
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert sweep.diverging(str(tmp_path)) == "train loss nan > ln V = 5.545 at 400 tokens"


SWEEP = """from sweep import grid
config = "configs/mini.py"
root = {root!r}
settings = dict(data_dir={data!r}, train_tokens=16384, eval_tokens=4096, eval_every=8192, log_every=2048,
                ckpt_every=4096, batch_size=1)
points = grid(optimizer=["adamw"], lr=[4e-3, 1e-2]) + [dict(optimizer="sgd", lr=1e30),
          dict(optimizer="adamw", lr=2e-3, train_tokens=98304, ckpt_every=8192)]
csv = {csv!r}
"""


def runner(args, **kw):
    return subprocess.Popen([sys.executable, "sweep.py", *args], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, **kw)


def test_sweep_runs_records_divergence_resumes_after_a_kill_and_collects_a_csv(data_dir, tmp_path):
    """Four points, one process at a time: two finish, SGD at LR 1e30 diverges (NaN: train.py's exit status
    3), and the runner is killed (SIGTERM) while the longest point is between checkpoints. Restarted, it
    skips the finished points, resumes the killed one from its checkpoint, and the CSV has every point."""
    f, csv_path = tmp_path / "four.py", tmp_path / "four.csv"
    f.write_text(SWEEP.format(root=str(tmp_path / "runs"), data=str(data_dir), csv=str(csv_path)))
    long = tmp_path / "runs" / "four" / "optimizer=adamw,lr=0.002,train_tokens=98304,ckpt_every=8192"
    p = runner(["run", str(f), "--jobs=1"])
    deadline = time.time() + 300
    while not list(long.glob("ckpt_*")) and time.time() < deadline and p.poll() is None:
        time.sleep(0.05)  # the fourth point has written its first checkpoint
    p.send_signal(signal.SIGTERM)
    out = p.communicate(timeout=120)[0]
    assert p.returncode == 1 and "stopped by a signal: run the same command again" in out, out[-3000:]
    r = runner(["run", str(f), "--dry_run"]).communicate(timeout=120)[0]
    assert "4 points: 2 done, 1 diverged, 1 partial" in r, r
    out2 = runner(["run", str(f), "--jobs=1"]).communicate(timeout=300)[0]
    assert "four: 3 done, 1 diverged" in out2, out2[-3000:]
    attempts = {d.name: [json.loads(x) for x in open(d / "attempts.jsonl")] for d in (tmp_path / "runs" / "four").iterdir()
                if d.is_dir()}
    assert sorted(len(a) for a in attempts.values()) == [1, 1, 1, 2]  # nothing finished ran twice
    first, second = attempts[long.name]
    assert first["rc"] == 0 and second["from_step"] > 0  # the killed point resumed from its checkpoint
    steps = [json.loads(x)["step"] for x in open(long / "metrics.jsonl") if "train_loss" in x]
    assert steps == list(range(16, 768 + 1, 16))  # every log window once: nothing lost, nothing twice
    rows = list(csv.DictReader(open(csv_path)))
    assert list(rows[0]) == ["name", "variant", "optimizer", "lr", "train_tokens", "ckpt_every",
                             *[k for k in sweep.RESULT_KEYS if k != "train_tokens"]]
    by = {r["name"]: r for r in rows}
    bad = by["optimizer=sgd,lr=1e+30"]
    assert bad["status"] == "diverged" and bad["final_val_loss"] == "" and bad["reason"].startswith("error: loss is nan at step")
    for name, r in by.items():
        if r["status"] == "done":  # learned from ln 256 + 1/2 at init; speed and memory recorded
            assert float(r["final_val_loss"]) < 4.0 and float(r["tokens_per_s"]) > 0 and float(r["peak_memory_mb"]) > 50
    assert int(by[long.name]["attempts"]) == 2 and float(by[long.name]["wall_s"]) > 0
