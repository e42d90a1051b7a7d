"""Sweeps of train.py runs. A sweep is a plain Python file (sweeps/*.py) naming a base config and the
points to run; the runner runs them as train.py processes, several at once, each pinned to its own cores;
it can be killed and restarted at any moment (a finished point is skipped, a killed one resumes from its
checkpoint), records a diverged run as a result, extends LR grids until their best point is inside, and
collects every point into one CSV (figures.py plots it). Also the IsoFLOP generator (`scaling.py fit`).

    python sweep.py run sweeps/fig1a.py --jobs=2     # run what is not done yet; --dry_run lists the points
    python sweep.py collect sweeps/fig1a.py          # the CSV (run also writes it after every point)
    python sweep.py isoflop --budgets 1e13 3e13 1e14 > isoflop.sh

A sweep file sets `config` (the base config file), `settings` (train.py keys for every point), `points`
(a list of dicts of train.py keys: grid() and zipped() build them), and optionally `tune`: rules that add
points as results arrive, e.g. dict(key="lr", factor=2, margin=1) extends each LR grid by factors of 2
until its best point has `margin` points on either side (a callable margin(point) may differ per point),
and dict(key="t2", around="lr", factors=[1/8, 8]) adds, once a group's LR is tuned, copies of its best
point with t2 scaled (values=[1, 2] instead of factors: with those values, e.g. more seeds). point with t2 scaled. A rule's `where(point)` limits it to some points. Runs go to out/sweeps/<name>/.
"""
import argparse
import csv
import ctypes
import itertools
import json
import math
import os
import re
import signal
import subprocess
import sys
import time

import checkpoint
from common import DIVERGED, fail
from config import parse as parse_config  # not `import config`: isoflop() has a `config` argument
from scaling import COUNTS, V

POLL_S = 1.0  # how often the runner looks at its processes
DIVERGED_AFTER = 0.2  # a train loss above ln V (a uniform guess) after this fraction of the tokens: diverged
MAX_POINTS_PER_GROUP = 16  # a tuning rule stops extending a grid here (a loss that never turns)
RESULT_KEYS = ["status", "final_val_loss", "best_val_loss", "final_val_bpb", "final_val_accuracy", "final_train_loss", "tokens_per_s",
               "mfu", "peak_memory_mb", "memory", "wall_s", "attempts", "train_tokens", "n_steps", "run_b1",
               "run_b2", "run_t1", "run_t2", "reason"]  # run_*: the betas and half-lives train.py resolved


def grid(**axes):
    """Every combination: grid(a=[1, 2], b=[3, 4]) -> [{a: 1, b: 3}, {a: 1, b: 4}, {a: 2, b: 3}, {a: 2, b: 4}]."""
    return [dict(zip(axes, vs)) for vs in itertools.product(*axes.values())]


def zipped(**axes):
    """Lists side by side: zipped(a=[1, 2], b=[3, 4]) -> [{a: 1, b: 3}, {a: 2, b: 4}]."""
    if len({len(v) for v in axes.values()}) > 1:
        raise ValueError(f"zipped() needs lists of one length, got {({k: len(v) for k, v in axes.items()})}")
    return [dict(zip(axes, vs)) for vs in zip(*axes.values())]


def load(path, root="out/sweeps"):
    """The sweep file at `path` as a dict: name, config, settings, points, tune, out."""
    if not os.path.isfile(path):
        raise ValueError(f"sweep file '{path}' not found")
    scope = {}
    try:
        exec(compile(open(path).read(), path, "exec"), scope)
    except Exception as e:
        raise ValueError(f"sweep file '{path}': {type(e).__name__}: {e}") from None
    name = os.path.splitext(os.path.basename(path))[0]
    s = dict(name=name, config=scope.get("config"), settings=scope.get("settings", {}), points=scope.get("points"),
             tune=scope.get("tune", []), out=os.path.join(scope.get("root", root), name))
    if not isinstance(s["config"], str) or not isinstance(s["points"], list) or not s["points"]:
        raise ValueError(f"sweep file '{path}' must set config = 'configs/....py' and a non-empty list `points`")
    unknown = {k for r in s["tune"] for k in r} - {"key", "factor", "margin", "around", "factors", "values", "where"}
    if unknown or any("key" not in r or ("around" in r) != ("factors" in r or "values" in r) for r in s["tune"]):
        raise ValueError(f"sweep file '{path}': a tune rule is dict(key=..., factor=2, margin=1, where=...) or "
                         "dict(key=..., around=..., factors=[...], where=...)" +
                         (f"; unknown {sorted(unknown)}" if unknown else ""))
    names = [point_name(p) for p in s["points"]]
    if len(set(names)) < len(names):
        raise ValueError(f"sweep file '{path}': point {next(n for n in names if names.count(n) > 1)} appears twice")
    s["csv"] = scope.get("csv", os.path.join(s["out"], name + ".csv"))
    return s


def check(sweep):
    """Every point's train.py config, parsed and checked here (an unknown key or a bad value stops the
    sweep before it starts, with train.py's own message)."""
    for p in sweep["points"]:
        parse_config([sweep["config"], *_args(sweep, p)])


def fmt(v):
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def point_name(p):
    """The run directory of a point: its own keys in order, e.g. 'optimizer=adamw,batch_size=4,lr=0.004'."""
    return ",".join(f"{k}={fmt(v)}" for k, v in p.items())


def status(out):
    """A point's state from its directory: its result.json, else 'partial' (a checkpoint) or 'todo'."""
    try:
        with open(os.path.join(out, "result.json")) as f:
            return json.load(f)
    except (OSError, ValueError):
        return dict(status="partial" if checkpoint.list_checkpoints(out) else "todo")


# -- tuning rules: more points from the results so far ------------------------------------------------------

def _groups(points, key):
    """Points that differ only in `key`: lists of points sorted by key."""
    groups = {}
    for p in points:
        if key not in p:
            raise ValueError(f"tune rule on '{key}': point {point_name(p)} does not set it")
        groups.setdefault(tuple((k, fmt(v)) for k, v in p.items() if k != key), []).append(p)
    return [sorted(ps, key=lambda p: p[key]) for ps in groups.values()]


def _result(p, results):
    return results.get(point_name(p), {"status": "todo"})


def _best(ps, results):
    done = [p for p in ps if _result(p, results)["status"] == "done"]
    return min(done, key=lambda p: _result(p, results)["final_val_loss"]) if done else None


def _extend(ps, rule, results):
    """New values of rule's key for one group, [] once its best point has `margin` points on either side
    (a diverged top point stops the climb: larger values diverge too), None while a point is unfinished."""
    key, factor, margin = rule["key"], rule.get("factor", 2), rule.get("margin", 1)
    margin = margin(ps[0]) if callable(margin) else margin
    if len(ps) >= MAX_POINTS_PER_GROUP:
        return []
    if any(_result(p, results)["status"] not in ("done", "diverged") for p in ps):
        return None
    best = _best(ps, results)
    if best is None:  # everything diverged: go lower
        return [_round(ps[0][key] / factor)]
    i = ps.index(best)
    new = [ps[0][key] / factor ** j for j in range(1, margin - i + 1)]
    if _result(ps[-1], results)["status"] == "done":
        new += [ps[-1][key] * factor ** j for j in range(1, i + margin - len(ps) + 2)]
    return [_round(v) for v in new]


def _round(v):
    return float(f"{v:.6g}")  # a value and its directory name stay one across restarts


def _apply(rule, rules, points, results):
    """The (point, variant) pairs one rule adds. Rules act on grid points only, not on another rule's variants."""
    where = rule.get("where", lambda p: True)
    grid_points = [p for p, variant in points if variant is None and where(p)]
    key, new = rule["key"], []
    if "around" not in rule:  # extend each grid of `key`
        for ps in _groups(grid_points, key):
            new += [(dict(ps[0], **{key: v}), None) for v in _extend(ps, rule, results) or []]
        return new
    tuner = next((r for r in rules if r["key"] == rule["around"] and "around" not in r), None)
    for ps in _groups(grid_points, rule["around"]):  # once a group is tuned: its best point with `key` scaled
        best = _best(ps, results)
        if best is None or (tuner and _extend(ps, tuner, results) != []):
            continue
        if "values" in rule:  # the best point with other values of `key` (seeds)
            new += [(dict(best, **{key: v}), key) for v in rule["values"] if best.get(key) != v]
            continue
        if key not in best:
            raise ValueError(f"tune rule on '{key}': point {point_name(best)} does not set it")
        new += [(dict(best, **{key: _round(best[key] * f)}), key) for f in rule["factors"] if f != 1]
    return new


def expand(sweep, results):
    """Every point known so far, as (point, variant) pairs: the file's points (variant None), then what the
    tune rules add given `results` ({name: result}); applied until nothing new (a restart finds many done)."""
    points = [(dict(p), None) for p in sweep["points"]]
    while True:
        names = {point_name(p) for p, _ in points}
        new = {}
        for rule in sweep["tune"]:
            for p, v in _apply(rule, sweep["tune"], points, results):
                if point_name(p) not in names:
                    new.setdefault(point_name(p), (p, v))
        if not new:
            return points
        points += new.values()
# -- running: train.py processes, each pinned to its own cores ----------------------------------------------

def command(sweep, p, out):
    """The train.py command of point p: the base config, the sweep's settings, the point's keys; a point
    with a checkpoint resumes from it (exactly: train.py's resume is bit for bit)."""
    resume = ["--init_from=resume"] if checkpoint.list_checkpoints(out) else []
    return [sys.executable, "train.py", sweep["config"], *_args(sweep, p), f"--out_dir={out}", *resume]


def _args(sweep, p):
    return [f"--{k}={v!r}" if isinstance(v, float) else f"--{k}={v}" for k, v in dict(sweep["settings"], **p).items()]


def _pin(cores):
    """Runs in the child before train.py: its own cores (two processes on two cores don't fight over one),
    and SIGTERM when the runner dies, even by SIGKILL (train.py then checkpoints and exits: Linux prctl)."""
    def setup():
        if hasattr(os, "sched_setaffinity"):
            os.sched_setaffinity(0, cores)
        try:
            ctypes.CDLL(None).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
        except (OSError, AttributeError):
            pass
    return setup


def _env(n_threads):
    flags = os.environ.get("XLA_FLAGS", "")
    if n_threads == 1:  # XLA's CPU thread pool would otherwise start a thread per core of the machine
        flags += " --xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"
    n = str(n_threads)
    return dict(os.environ, XLA_FLAGS=flags.strip(), OMP_NUM_THREADS=n, OPENBLAS_NUM_THREADS=n, MKL_NUM_THREADS=n,
                TF_CPP_MIN_LOG_LEVEL="2")


def _read_jsonl(path):
    rows = []
    try:
        with open(path) as f:
            for line in f:
                try:
                    rows.append(json.loads(line))
                except ValueError:  # a line being written
                    pass
    except OSError:
        pass
    return rows


def _read_json(path, default=None):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return default


def diverging(out):
    """Why the running point in `out` has diverged (a train loss above ln V, the loss of a uniform guess,
    after DIVERGED_AFTER of its tokens), or None."""
    run, cfg = _read_json(os.path.join(out, "run.json")), _read_json(os.path.join(out, "config.json"))
    if not run or not cfg:
        return None
    cap = math.log(cfg["vocab_size"])
    for m in _read_jsonl(os.path.join(out, "metrics.jsonl")):
        if "train_loss" in m and m["tokens"] > DIVERGED_AFTER * run["train_tokens"] and not m["train_loss"] <= cap:
            return f"train loss {m['train_loss']:.3f} > ln V = {cap:.3f} at {m['tokens']:,} tokens"
    return None


def summarize(out, state, reason=""):
    """A finished point's result.json fields from its run.json, metrics.jsonl, summary.json, attempts.jsonl."""
    run, summ = _read_json(os.path.join(out, "run.json"), {}), _read_json(os.path.join(out, "summary.json"), {})
    rows, attempts = _read_jsonl(os.path.join(out, "metrics.jsonl")), _read_jsonl(os.path.join(out, "attempts.jsonl"))
    vals = [m for m in rows if "val_loss" in m]
    train = [m["train_loss"] for m in rows if "train_loss" in m]
    final = vals[-1] if vals and vals[-1]["step"] == run.get("n_steps") else {}
    r = dict(status=state, reason=reason, final_val_loss=final.get("val_loss"), final_val_bpb=final.get("val_bpb"),
             final_val_accuracy=final.get("val_accuracy"),
             best_val_loss=min((m["val_loss"] for m in vals), default=None), final_train_loss=train[-1] if train else None,
             tokens_per_s=summ.get("tokens_per_s"), mfu=summ.get("mfu"), memory=summ.get("memory"),
             peak_memory_mb=summ["peak_memory_bytes"] / 2 ** 20 if "peak_memory_bytes" in summ else None,
             wall_s=sum(a["seconds"] for a in attempts), attempts=len(attempts), train_tokens=run.get("train_tokens"),
             n_steps=run.get("n_steps"), **{f"run_{k}": run.get(k) for k in ("b1", "b2", "t1", "t2")})
    cap = math.log(_read_json(os.path.join(out, "config.json"), {}).get("vocab_size", V))
    if state == "done" and not (r["final_val_loss"] is not None and r["final_val_loss"] <= cap):
        r.update(status="diverged", reason=f"final val loss {r['final_val_loss']} > ln V = {cap:.3f}")
    return r


def _outcome(out, rc):
    """(status, reason) of a train.py process that exited with rc; status None: interrupted, resume it."""
    text = open(os.path.join(out, "train.log"), errors="replace").read()[-4000:]
    errors = re.findall(r"error: [^\r\n]*", text)  # train.py's one-line error, perhaps after a tqdm bar's \r
    err = errors[-1] if errors else text.strip().splitlines()[-1][-300:] if text.strip() else ""
    if rc == DIVERGED:
        return "diverged", err
    if rc == 0:
        run, rows = _read_json(os.path.join(out, "run.json"), {}), _read_jsonl(os.path.join(out, "metrics.jsonl"))
        finished = any("val_loss" in m and m["step"] == run.get("n_steps") for m in rows)
        return ("done", "") if finished else (None, "")
    return (None, "") if rc < 0 else ("failed", err)  # rc < 0: killed by a signal (the runner stopping)


class Runner:
    """Runs a sweep's unfinished points, `jobs` at a time, until all are finished or it is told to stop."""

    def __init__(self, sweep, jobs=1, log=print, retry_failed=False):
        self.sweep, self.jobs, self.log = sweep, jobs, log
        self.rerun = ("todo", "partial", "failed") if retry_failed else ("todo", "partial")
        cores = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else list(range(os.cpu_count()))
        per = max(1, len(cores) // jobs)
        self.slots = [(cores * jobs)[k * per:(k + 1) * per] for k in range(jobs)]
        self.running, self.stopping = {}, False  # slot -> (point name, process, out, start time, from step)

    def out(self, p):
        return os.path.join(self.sweep["out"], point_name(p))

    def points(self):
        """(points, results) known now: tune rules see the results of the points before them."""
        points = expand(self.sweep, {})
        while True:
            results = {point_name(p): status(self.out(p)) for p, _ in points}
            more = expand(self.sweep, results)
            if len(more) == len(points):
                return points, results
            points = more

    def start(self, p, slot):
        out = self.out(p)
        os.makedirs(out, exist_ok=True)
        ckpts = checkpoint.list_checkpoints(out)
        with open(os.path.join(out, "train.log"), "a") as f:
            proc = subprocess.Popen(command(self.sweep, p, out), stdout=f, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL, preexec_fn=_pin(self.slots[slot]),
                                    env=_env(len(self.slots[slot])))
        self.running[slot] = (point_name(p), proc, out, time.time(), ckpts[-1][0] if ckpts else 0)

    def poll(self):
        """Ended processes -> result.json (a diverging one is stopped first). Returns how many ended."""
        ended = 0
        for slot, (name, proc, out, t0, step0) in list(self.running.items()):
            why = diverging(out) if proc.poll() is None and not self.stopping else None
            if why:
                proc.kill()
            elif proc.poll() is None:
                continue
            rc = proc.wait()
            del self.running[slot]
            ended += 1
            os.makedirs(out, exist_ok=True)  # the point's directory may have been deleted while it ran
            with open(os.path.join(out, "attempts.jsonl"), "a") as f:
                f.write(json.dumps(dict(started=t0, seconds=time.time() - t0, rc=rc, from_step=step0)) + "\n")
            state, reason = ("diverged", why) if why else _outcome(out, rc)
            if state:
                result = summarize(out, state, reason)
                checkpoint.atomic_write(os.path.join(out, "result.json"), lambda f: f.write(json.dumps(result, indent=1)))
                self.log(f"{result['status']}: {name}" + (f" ({result['reason']})" if result["reason"] else ""))
        return ended

    def stop(self, *_):
        """SIGINT / SIGTERM: each process checkpoints and exits (train.py's own handling); the runner waits."""
        self.stopping = True
        for _, proc, *_ in self.running.values():
            proc.send_signal(signal.SIGTERM)

    def run(self, csv_path=None):
        from tqdm import tqdm
        signal.signal(signal.SIGTERM, self.stop), signal.signal(signal.SIGINT, self.stop)
        bar = tqdm(desc=self.sweep["name"], unit="run", dynamic_ncols=True, mininterval=1.0)
        while True:
            points, results = self.points()
            progress = (len(points), sum(r["status"] in FINAL for r in results.values()))
            if progress != (bar.total, bar.n):
                bar.total, bar.n = progress
                bar.refresh()
            busy = {name for name, *_ in self.running.values()}
            todo = [p for p, _ in points if results[point_name(p)]["status"] in self.rerun and point_name(p) not in busy]
            for slot in [s for s in range(self.jobs) if s not in self.running][:len(todo)]:
                if not self.stopping:
                    self.start(todo.pop(0), slot)
            if not self.running and (self.stopping or not todo):
                break
            time.sleep(POLL_S)
            if self.poll() and csv_path:
                collect(self.sweep, csv_path)
        bar.close()
        if csv_path:
            collect(self.sweep, csv_path)
        return self.points()


FINAL = ("done", "diverged", "failed")


def collect(sweep, path):
    """One CSV row per known point (its keys, then RESULT_KEYS), and the loss curves beside it (*_curves.csv)."""
    runner = Runner(sweep)
    points, results = runner.points()
    keys = list(dict.fromkeys(k for p, _ in points for k in p))
    rows, curves = [], []
    for p, variant in points:
        r = results[point_name(p)]
        row = dict(name=point_name(p), variant=variant or "", **{k: p.get(k, "") for k in keys})
        rows.append(dict(row, **{k: r.get(k, row.get(k, "")) for k in RESULT_KEYS}))  # a point's key keeps its column
        for m in _read_jsonl(os.path.join(runner.out(p), "metrics.jsonl")):
            if "train_loss" in m or "val_loss" in m:
                curves.append(dict(name=point_name(p), tokens=m["tokens"], train_loss=m.get("train_loss", ""),
                                   val_loss=m.get("val_loss", "")))
    for table, to in ((rows, path), (curves, path[:-4] + "_curves.csv")):
        if table:
            os.makedirs(os.path.dirname(to) or ".", exist_ok=True)
            checkpoint.atomic_write(to, lambda f, t=table: _write_csv(f, t))
    return rows


def _write_csv(f, rows):
    w = csv.DictWriter(f, fieldnames=list(rows[0]), lineterminator="\n")
    w.writeheader()
    w.writerows({k: "" if v is None else v for k, v in r.items()} for r in rows)


def dry_run(sweep, log=print):
    """List the points known so far and what is done; tune rules may add more as results arrive."""
    points, results = Runner(sweep).points()
    for p, variant in points:
        r = results[point_name(p)]
        loss = f"val {r['final_val_loss']:.4f}" if r.get("final_val_loss") is not None else ""
        log(f"{r['status']:>8} {loss:>11}  {point_name(p)}" + (f"  ({variant} around the best)" if variant else ""))
    count = {s: sum(r["status"] == s for r in results.values()) for s in (*FINAL, "partial", "todo")}
    log(f"{len(points)} points: " + ", ".join(f"{n} {s}" for s, n in count.items() if n) +
        (f"; tune rules on {', '.join(r['key'] for r in sweep['tune'])} add more as results arrive"
         if sweep["tune"] else ""))
    return points, results


def param_count(d_model, n_layers, params="active", vocab=V):
    nonembed = 12 * n_layers * d_model ** 2  # attention 4·D² + MLP 8·D² per layer
    return {"nonembed": nonembed, "active": nonembed + vocab * d_model, "total": nonembed + 2 * vocab * d_model}[params]


def isoflop(budgets, widths, aspect=64, head_dim=64, params="active", config="configs/tiny_gpt2.py", out="out/sweep",
            vocab=V, seq_len=128, flops_per_s=1e11, extra=()):
    """IsoFLOP profiles: every width (depth L = D/aspect) at every budget C, with tokens = C/(6·N); extra
    "key=value" settings go to every run. The time estimate's 1e11 FLOP/s is configs/tiny_gpt2.py's on 2 idle cores."""
    if bad := [d for d in widths if d % min(head_dim, d)]:  # a width below head_dim is one head of that width
        raise ValueError(f"width {bad[0]} is not a multiple of head_dim={head_dim}")
    rest = "".join(f" --{kv}" for kv in extra)
    cmds = []
    for C in budgets:
        for d in widths:
            L = max(1, round(d / aspect))
            n = param_count(d, L, params, vocab)
            tok = round(C / (6 * n))
            secs = tok * (6 * param_count(d, L, "active", vocab) + 12 * L * seq_len * d) / flops_per_s  # PaLM App. B
            name = f"C{C:.0e}".replace("e+", "e") + f"_D{d}_L{L}"
            note = f"N={n:.3g} D/N={tok / n:.2g} ~{secs / 60:.1f} min at {flops_per_s:.0e} FLOP/s"
            cmds.append(f"python train.py {config} --d_model={d} --n_layers={L} --head_dim={min(head_dim, d)} "
                        f"--train_tokens={tok} --out_dir={out}/{name}{rest}  # {note}")
    return cmds


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("isoflop", help="print the train.py commands of IsoFLOP profiles")
    s.add_argument("--budgets", type=float, nargs="+", default=[1e13, 3e13, 1e14])
    s.add_argument("--widths", type=int, nargs="+", default=[64, 128, 192, 256, 384])
    s.add_argument("--aspect", type=int, default=64, help="depth rule: n_layers = d_model / aspect")
    s.add_argument("--head_dim", type=int, default=64, help="a narrower width gets one head of its width")
    s.add_argument("--params", default="active", choices=COUNTS)
    s.add_argument("--config", default="configs/tiny_gpt2.py"), s.add_argument("--out", default="out/sweep")
    s.add_argument("--seq_len", type=int, default=128, help="for the time estimate only")
    s.add_argument("--flops_per_s", type=float, default=1e11, help="for the time estimate only")
    s.add_argument("--set", nargs="+", default=[], metavar="KEY=VALUE", help="train.py settings for every run")
    for cmd, what in (("run", "run the points not finished yet (resumable: kill and rerun at any time)"),
                      ("collect", "write the sweep's CSV from what is on disk")):
        s = sub.add_parser(cmd, help=what)
        s.add_argument("sweep", help="a sweep file, e.g. sweeps/fig1a.py")
        s.add_argument("--csv", help="where the results go (default: the sweep file's `csv`, else out/sweeps/<name>.csv)")
        if cmd == "run":
            s.add_argument("--jobs", type=int, default=len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
                           else os.cpu_count(), help="train.py processes at once, each on cores of its own (default: "
                           "one per core)")
            s.add_argument("--dry_run", action="store_true", help="list the points and what is done; run nothing")
            s.add_argument("--retry_failed", action="store_true",
                           help="run failed points again (after fixing what failed them)")
    a = ap.parse_args(argv)
    if a.cmd in ("run", "collect"):
        sweep = load(a.sweep)
        path = a.csv or sweep["csv"]
        if a.cmd == "collect":
            print(f"{len(collect(sweep, path))} points -> {path}")
        elif a.dry_run:
            dry_run(sweep)
        else:
            if a.jobs < 1:
                raise ValueError(f"--jobs must be at least 1, got {a.jobs}")
            check(sweep)
            runner = Runner(sweep, a.jobs, retry_failed=a.retry_failed)
            points, results = runner.run(path)
            count = {s: sum(r["status"] == s for r in results.values()) for s in (*FINAL, "partial", "todo")}
            print(f"{sweep['name']}: " + ", ".join(f"{n} {s}" for s, n in count.items() if n) + f" -> {path}")
            if runner.stopping:  # a script running sweeps one after another stops here too
                raise SystemExit("stopped by a signal: run the same command again to continue")
    if a.cmd == "isoflop":
        print("\n".join(isoflop(a.budgets, a.widths, a.aspect, a.head_dim, a.params, a.config, a.out,
                                seq_len=a.seq_len, flops_per_s=a.flops_per_s, extra=a.set)))


if __name__ == "__main__":
    try:
        main()
    except ValueError as e:
        fail(str(e))
