"""Tests for sweep.py: tune rules on fake results, sweep file errors, the runner on a stand-in train.py (exit
statuses, bounded retries and the restart from scratch, one runner per sweep, a runner SIGKILLed mid-attempt), and
a 4-point sweep end to end (divergence, a kill and a resume, the CSV). The IsoFLOP generator is scaling.py's
(tests/test_scaling.py)."""
import csv
import json
import os
import signal
import subprocess
import sys
import time

import pytest

import common
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
    # a point of the grid unfinished again (a rerun): nothing new, but the points added before stay listed
    res = [(dict(opt="a", lr=1.0), 3.0), (dict(opt="a", lr=2.0), "todo"), (dict(opt="a", lr=0.5), 2.9),
           (dict(opt="a", lr=0.25), 2.95), (dict(opt="a", lr=4.0), "todo")]
    assert lr(res) == [0.25, 0.5, 1.0, 2.0]
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


def test_seed_rule_with_a_span_seeds_the_best_and_its_neighbours_and_follows_the_best_by_the_mean():
    lrs = [0.5, 1.0, 2.0, 4.0, 8.0]
    s = dict(points=[dict(lr=lr) for lr in lrs], tune=[dict(key="lr", factor=2, margin=1),
                                                       dict(key="seed", around="lr", values=[1, 2], span=1)])
    grid = dict(zip(lrs, [3.0, 2.1, 2.0, 2.2, 3.0]))  # seed 0: best at LR 2
    res = [(dict(lr=lr), v) for lr, v in grid.items()]
    seeded = lambda res: sorted({(p["lr"], p["seed"]) for p, v in sweep.expand(s, fake(res)) if v == "seed"})
    assert seeded(res) == [(lr, k) for lr in (1.0, 2.0, 4.0) for k in (1, 2)]  # the best and one LR either side
    # seeds 1 and 2 put LR 1 ahead on the mean (2.1, 1.9, 1.9 against 2.0, 2.2, 2.2): LR 0.5 gets seeds too
    more = {1.0: 1.9, 2.0: 2.2, 4.0: 2.3}
    res += [(dict(lr=lr, seed=k), more[lr]) for lr in (1.0, 2.0, 4.0) for k in (1, 2)]
    assert seeded(res) == [(lr, k) for lr in (0.5, 1.0, 2.0, 4.0) for k in (1, 2)]
    # while one seed is unfinished the best stays the grid's: nothing is added on a partial mean
    res[-1] = (dict(lr=4.0, seed=2), "todo")
    assert seeded(res) == [(lr, k) for lr in (1.0, 2.0, 4.0) for k in (1, 2)]
    # a diverged seed makes its LR's mean infinite
    res[-1] = (dict(lr=4.0, seed=2), 2.3)
    res[5] = (dict(lr=1.0, seed=1), "diverged")
    assert seeded(res) == [(lr, k) for lr in (1.0, 2.0, 4.0) for k in (1, 2)]


def test_restore_puts_a_committed_csv_back_so_a_sweep_extends_it_without_rerunning(tmp_path):
    (tmp_path / "s.py").write_text("config = 'configs/mini.py'\npoints = [dict(lr=1.0), dict(lr=2.0), dict(lr=4.0)]\n"
                                   f"root = {str(tmp_path / 'out')!r}\ntune = [dict(key='lr', factor=2, margin=1)]\n")
    s = sweep.load(str(tmp_path / "s.py"))
    for p, loss in [(dict(lr=1.0), 2.5), (dict(lr=2.0), 2.0)]:  # two finished runs, as train.py leaves them
        out = sweep.run_dir(s, p)
        os.makedirs(out)
        common.write_json(os.path.join(out, "metrics.jsonl"), [dict(step=8, tokens=1024, train_loss=loss + 0.5),
                                                                dict(step=16, tokens=2048, val_loss=loss)], lines=True)
        common.write_json(os.path.join(out, "result.json"), dict(status="done", final_val_loss=loss, n_steps=16))
    os.makedirs(out := sweep.run_dir(s, dict(lr=4.0)))
    common.write_json(os.path.join(out, "result.json"), dict(status="diverged", reason="train loss above ln V"))
    rows = sweep.collect(s, csv_path := str(tmp_path / "s.csv"))
    os.rename(tmp_path / "out", tmp_path / "old")  # a fresh clone: the CSVs and nothing else
    assert sweep.restore(s, csv_path) == 2
    assert sweep.restore(s, csv_path) == 0  # a result on disk is never overwritten
    points, results = sweep.known(s)
    assert [results[sweep.point_name(p)]["status"] for p, _ in points] == ["done", "done", "todo"]  # rerun: diverged
    again = sweep.collect(s, str(tmp_path / "again.csv"))
    assert [r["final_val_loss"] for r in again[:2]] == [r["final_val_loss"] for r in rows[:2]] == [2.5, 2.0]
    assert open(tmp_path / "again_curves.csv").read() == open(tmp_path / "s_curves.csv").read()


def test_collect_keeps_the_results_a_group_waiting_for_a_rerun_does_not_list(tmp_path):
    (tmp_path / "s.py").write_text("config = 'configs/mini.py'\npoints = [dict(lr=1.0), dict(lr=2.0), dict(lr=4.0)]\n"
                                   f"root = {str(tmp_path / 'out')!r}\ntune = [dict(key='lr', factor=2, margin=1), "
                                   "dict(key='seed', around='lr', values=[1, 2], span=1)]\n")
    s = sweep.load(str(tmp_path / "s.py"))
    losses = {(1.0, 0): 2.5, (2.0, 0): 2.0, (4.0, 0): 2.4, (0.25, 0): 3.5,  # 0.25: LR 0.5 (between) was never run
              **{(lr, k): 2.0 + lr / 10 + k / 100 for lr in (1.0, 2.0, 4.0) for k in (1, 2)}}
    for (lr, k), loss in losses.items():
        os.makedirs(out := sweep.run_dir(s, dict(lr=lr, **(dict(seed=k) if k else {}))))
        common.write_json(os.path.join(out, "result.json"), dict(status="done", final_val_loss=loss))
    settled = {(r["lr"], r["seed"] or 0): r["variant"] for r in sweep.collect(s, str(tmp_path / "a.csv"))}
    os.remove(os.path.join(sweep.run_dir(s, dict(lr=4.0)), "result.json"))  # LR 4 to be rerun: the group waits
    points, _ = sweep.known(s)
    assert sorted(p["lr"] for p, _ in points) == [1.0, 2.0, 4.0]  # its seeds (and LR 0.25) are not listed now
    waiting = {(r["lr"], r["seed"] or 0): (r["variant"], r["status"]) for r in sweep.collect(s, str(tmp_path / "b.csv"))}
    assert {k: v for k, (v, _) in waiting.items()} == {k: v for k, v in settled.items()} == {
        k: "seed" if k[1] else "" for k in losses}
    assert waiting[(4.0, 0)][1] == "todo" and all(st == "done" for k, (_, st) in waiting.items() if k != (4.0, 0))


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


SWEEP = """from sweep import grid
config = "configs/mini.py"
root = {root!r}
settings = dict(data_dir={data!r}, train_tokens=16384, eval_tokens=4096, eval_every=8192, log_every=2048,
                ckpt_every=4096, batch_size=1)
points = grid(optimizer=["adamw"], lr=[4e-3, 1e-2]) + [dict(optimizer="sgd", lr=1e30),
          dict(optimizer="adamw", lr=2e-3, train_tokens=49152, ckpt_every=8192)]
csv = {csv!r}
"""


def runner(args, cache=None, **kw):
    """`sweep.py` in a subprocess; cache: jax's persistent compilation cache for its train.py processes (as in
    tests/test_checkpoint.py): a resumed point and points of one model compile their shared programs once."""
    env = dict(os.environ, **({"JAX_COMPILATION_CACHE_DIR": str(cache)} if cache else {}))
    return subprocess.Popen([sys.executable, "sweep.py", *args], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, env=env, **kw)


def test_sweep_runs_records_divergence_resumes_after_a_kill_and_collects_a_csv(data_dir, tmp_path):
    """Four points, one process at a time: two finish, SGD at LR 1e30 diverges (NaN: train.py's exit status
    3), and the runner is killed (SIGTERM) while the longest point is between checkpoints. Restarted, it
    skips the finished points, resumes the killed one from its checkpoint, and the CSV has every point."""
    f, csv_path = tmp_path / "four.py", tmp_path / "four.csv"
    f.write_text(SWEEP.format(root=str(tmp_path / "runs"), data=str(data_dir), csv=str(csv_path)))
    long = tmp_path / "runs" / "four" / "optimizer=adamw,lr=0.002,train_tokens=49152,ckpt_every=8192"
    p = runner(["run", str(f), "--jobs=1"], cache=tmp_path / "xla_cache")
    deadline = time.time() + 300
    while not list(long.glob("ckpt_*")) and time.time() < deadline and p.poll() is None:
        time.sleep(0.05)  # the fourth point has written its first checkpoint
    p.send_signal(signal.SIGTERM)
    out = p.communicate(timeout=120)[0]
    assert p.returncode == 1 and "stopped by a signal: run the same command again" in out, out[-3000:]
    r = runner(["run", str(f), "--dry_run"]).communicate(timeout=120)[0]
    assert "4 points: 2 done, 1 diverged, 1 partial" in r, r
    out2 = runner(["run", str(f), "--jobs=1"], cache=tmp_path / "xla_cache").communicate(timeout=300)[0]
    assert "four: 3 done, 1 diverged" in out2, out2[-3000:]
    attempts = {d.name: [json.loads(x) for x in open(d / "attempts.jsonl")] for d in (tmp_path / "runs" / "four").iterdir()
                if d.is_dir()}
    assert sorted(sum("rc" in a for a in rows) for rows in attempts.values()) == [1, 1, 1, 2]  # none finished twice
    ends, starts = [[a for a in attempts[long.name] if k in a] for k in ("rc", "how")]
    assert ends[0]["rc"] in (0, common.INTERRUPTED) and starts[1]["how"] == "resume" and starts[1]["from_step"] > 0
    steps = [json.loads(x)["step"] for x in open(long / "metrics.jsonl") if "train_loss" in x]
    assert steps == list(range(16, 384 + 1, 16))  # every log window once: nothing lost, nothing twice
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


# -- the runner on a stand-in train.py: FAKE_PLAN lists what its successive calls on a point do ---------------------
FAKE = r'''import json, os, shutil, signal, sys, time
out = dict(a[2:].split("=", 1) for a in sys.argv[2:])["out_dir"]
with open(os.path.join(out, "calls.jsonl"), "a+") as f:  # every call: its arguments and when it started
    f.seek(0)
    act = os.environ["FAKE_PLAN"].split(",")[len(f.readlines())]
    f.write(json.dumps(dict(args=sys.argv[2:], start=time.time())) + "\n")
if "--overwrite=True" in sys.argv:
    [shutil.rmtree(os.path.join(out, d)) for d in os.listdir(out) if d.startswith("ckpt_")]
if act == "done":
    json.dump(dict(n_steps=4, train_tokens=64), open(os.path.join(out, "run.json"), "w"))
    open(os.path.join(out, "metrics.jsonl"), "a").write(json.dumps(dict(step=4, tokens=64, val_loss=1.5)) + "\n")
    sys.exit(0)
if act.startswith("error"):
    print(act, file=sys.stderr)
    sys.exit(3 if "nan" in act else 1)
os.makedirs(os.path.join(out, "ckpt_000000002"), exist_ok=True)
def stop(*_):  # SIGTERM: checkpoint (FAKE_STOP_S seconds), exit INTERRUPTED
    time.sleep(float(os.environ.get("FAKE_STOP_S", 0)))
    print("SIGTERM: checkpoint written at step 2", flush=True)
    open(os.path.join(out, "stopped"), "w").write(str(time.time()))
    sys.exit(130)
signal.signal(signal.SIGTERM, stop)
if act == "hang":
    open(os.path.join(out, "hanging"), "w").close()
    time.sleep(600)
sys.exit(130)  # act "130": as if stopped by a signal
'''


@pytest.fixture
def stand_in(tmp_path, monkeypatch):
    """A one-point sweep whose train.py is FAKE, run by the runner in this process (or by `runner_cmd` in another)."""
    (tmp_path / "fake_train.py").write_text(FAKE)
    (tmp_path / "one.py").write_text(f"config = 'configs/mini.py'\nroot = {str(tmp_path / 'runs')!r}\n"
                                     "points = [dict(lr=0.001)]\n")
    monkeypatch.setattr(sweep, "TRAIN", str(tmp_path / "fake_train.py"))
    monkeypatch.setattr(sweep, "POLL_S", 0.02)
    monkeypatch.setattr(sweep, "RETRY_S", 0.05)
    handlers = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}  # Runner.run sets its own
    yield tmp_path, tmp_path / "runs" / "one" / "lr=0.001"
    for s, h in handlers.items():
        signal.signal(s, h)


def run_fake(tmp_path, plan, monkeypatch, **kw):
    monkeypatch.setenv("FAKE_PLAN", plan)
    log, s = [], sweep.load(str(tmp_path / "one.py"))
    sweep.Runner(s, log=log.append, **kw).run(str(tmp_path / "one.csv"))
    return log


def read(point):
    rows = [json.loads(x) for x in open(point / "attempts.jsonl")]
    return (json.loads((point / "result.json").read_text()), [a for a in rows if "how" in a],
            [a for a in rows if "rc" in a], [json.loads(x) for x in open(point / "calls.jsonl")])


def runner_cmd(tmp_path):
    """`sweep.py run` of the stand-in's sweep, in a process of its own."""
    code = (f"import sweep; sweep.TRAIN = {str(tmp_path / 'fake_train.py')!r}; sweep.POLL_S = 0.02; "
            f"sweep.main(['run', {str(tmp_path / 'one.py')!r}, '--jobs=1'])")
    return [sys.executable, "-c", code]


@pytest.mark.parametrize("plan, status, rcs, how", [
    ("130,done", "done", [common.INTERRUPTED, 0], ["start", "resume"]),  # stopped by a signal: resumed, not failed
    ("error: out of memory,done", "done", [1, 0], ["start", "start"]),  # a failure is tried again
    ("error: loss is nan at step 3", "diverged", [common.DIVERGED], ["start"])])  # divergence is a result
def test_each_exit_status_of_train_py_is_resumed_retried_or_recorded(stand_in, monkeypatch, plan, status, rcs, how):
    tmp_path, point = stand_in
    log = run_fake(tmp_path, plan, monkeypatch)
    res, starts, ends, calls = read(point)
    assert res["status"] == status and [a["rc"] for a in ends] == rcs and res["attempts"] == len(rcs), log
    assert res["wall_s"] == pytest.approx(sum(a["seconds"] for a in ends))
    assert [a["how"] for a in starts] == how
    if status == "diverged":
        assert res["reason"] == "error: loss is nan at step 3"
    row, = csv.DictReader(open(tmp_path / "one.csv"))
    assert row["status"] == status and int(row["attempts"]) == len(rcs)


@pytest.mark.parametrize("scratch", ["error: disk full", "done"])
def test_a_point_whose_checkpoints_are_all_corrupt_is_tried_a_bounded_number_of_times_then_from_scratch_once(
        stand_in, monkeypatch, scratch):
    """The retry loop of a point whose only checkpoint is corrupt (it was endless under --retry_failed): resumed
    MAX_ATTEMPTS times with a doubling backoff, then run once with --overwrite=True; if that fails too, it is
    failed with the scratch run's reason, and this runner does not run it again even with --retry_failed."""
    tmp_path, point = stand_in
    (point / "ckpt_000000008").mkdir(parents=True)
    (point / "ckpt_000000008" / "meta.json").write_text("{not json")
    no_ckpt = f"error: init_from='resume' but {point} holds no valid checkpoint"
    log = run_fake(tmp_path, ",".join([no_ckpt] * sweep.MAX_ATTEMPTS + [scratch]), monkeypatch, retry_failed=True)
    res, starts, ends, calls = read(point)
    assert [a["how"] for a in starts] == ["resume"] * sweep.MAX_ATTEMPTS + ["overwrite"], log
    assert ["--init_from=resume" in c["args"] for c in calls] == [True] * sweep.MAX_ATTEMPTS + [False]
    assert "--overwrite=True" in calls[-1]["args"]
    gaps = [b["start"] - a["start"] for a, b in zip(calls, calls[1:])]
    assert all(g >= sweep.RETRY_S * 2 ** i for i, g in enumerate(gaps)), gaps  # 0.05, 0.1, 0.2 s at least
    assert res["attempts"] == sweep.MAX_ATTEMPTS + 1 and len(ends) == sweep.MAX_ATTEMPTS + 1
    if scratch == "done":
        assert res["status"] == "done" and not list(point.glob("ckpt_*"))
    else:
        assert res["status"] == "failed" and res["reason"] == "error: disk full"
        assert f"attempt {sweep.MAX_ATTEMPTS} failed ({no_ckpt}); again in 0.2 s from scratch: lr=0.001" in log


def test_a_second_runner_on_a_sweep_is_refused_naming_the_first(stand_in, capsys):
    """While one runner runs a sweep, a second is refused at once in one line naming its PID; --dry_run and
    collect still work. Stopped by SIGTERM, the first runner's train.py exits INTERRUPTED: partial, not failed."""
    tmp_path, point = stand_in
    env = dict(os.environ, FAKE_PLAN="hang")
    first = subprocess.Popen(runner_cmd(tmp_path), cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                             text=True)
    deadline = time.time() + 120
    while not (point / "hanging").exists() and time.time() < deadline and first.poll() is None:
        time.sleep(0.05)
    second = subprocess.run([sys.executable, "sweep.py", "run", str(tmp_path / "one.py")], cwd=ROOT,
                            capture_output=True, text=True, timeout=120)
    assert second.returncode != 0 and second.stdout == "", second
    assert second.stderr.strip().splitlines() == [
        f"error: sweep {tmp_path / 'runs' / 'one'} is in use by another process (PID {first.pid}; lock "
        f"{tmp_path / 'runs' / 'one' / 'sweep.lock'})"]
    sweep.main(["run", str(tmp_path / "one.py"), "--dry_run"])  # in this process: it would be refused a lock
    sweep.main(["collect", str(tmp_path / "one.py")])
    assert "1 points: 1 partial" in capsys.readouterr().out
    first.send_signal(signal.SIGTERM)
    out = first.communicate(timeout=120)[0]
    assert first.returncode == 1 and "stopped by a signal" in out and "interrupted: lr=0.001" in out, out
    assert not (point / "result.json").exists()
    assert [json.loads(x).get("rc") for x in open(point / "attempts.jsonl")] == [None, common.INTERRUPTED]


def test_a_runner_killed_mid_attempt_has_the_attempt_recorded_as_killed_on_restart(stand_in, monkeypatch):
    """SIGKILL the runner while its train.py runs: train.py gets SIGTERM and checkpoints (1 s). A runner started
    at once waits for it to exit, records the unfinished attempt as killed (up to its log's last line), resumes the
    point, and counts both attempts in `attempts` and `wall_s`."""
    tmp_path, point = stand_in
    env = dict(os.environ, FAKE_PLAN="hang,done", FAKE_STOP_S="1")
    first = subprocess.Popen(runner_cmd(tmp_path), cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while not (point / "hanging").exists() and time.time() < deadline and first.poll() is None:
        time.sleep(0.05)
    first.kill()
    first.wait()
    start = [json.loads(x) for x in open(point / "attempts.jsonl")]
    assert len(start) == 1 and "rc" not in start[0]  # started, never ended
    monkeypatch.setenv("FAKE_STOP_S", "0")
    log = run_fake(tmp_path, "hang,done", monkeypatch)  # this process: no start-up, so the old train.py still runs
    res, starts, ends, calls = read(point)
    assert calls[1]["start"] >= float((point / "stopped").read_text()), "two train.py processes on one point"
    assert [a["how"] for a in starts] == ["start", "resume"], log
    killed, done = ends
    assert killed["killed"] and killed["rc"] is None and killed["started"] == starts[0]["started"]
    assert killed["seconds"] >= 1  # it ran until its SIGTERM checkpoint (1 s) ended
    assert res["status"] == "done" and res["attempts"] == 2
    assert res["wall_s"] == pytest.approx(killed["seconds"] + done["seconds"])
