"""Sweeps of train.py runs (docs/experiments.md). A sweep file sets `config` (a config file), `settings` (train.py
keys for every point), `points` (dicts of keys: grid() and zipped() build them), optionally `tune` (rules adding
points as results arrive: _extend, _apply), `root` (runs go to <root>/<name>/, default out/sweeps) and `csv`. The
runner runs the points as train.py processes, several at once, each pinned to its own cores, one runner per sweep;
kill and restart it at any moment. Every attempt is recorded; a diverged run (exit status 3) is a result.

    python sweep.py run sweeps/fig1a.py --jobs=2     # run what is not done yet; --dry_run lists the points
    python sweep.py collect sweeps/fig1a.py          # the CSV (run also writes it after every point)
    python sweep.py restore sweeps/fig1a.py          # a committed CSV's finished points back into out/ (to extend it)
"""
import argparse, contextlib, csv, ctypes, fcntl, itertools, math, os, re, signal, subprocess, sys, time

import checkpoint
import config
from common import (DIVERGED, INTERRUPTED, atomic_write, fail, lock, number, read_json, read_jsonl, read_run,
                    write_json)

POLL_S = 1.0  # how often the runner looks at its processes
MAX_ATTEMPTS, RETRY_S = 3, 5.0  # failed attempts of a point before it is failed; the wait after the first, doubling
TRAIN = "train.py"  # what a point runs (tests run a stand-in)
MAX_POINTS_PER_GROUP = 16  # a tuning rule stops extending a grid here (a loss that never turns)
FINAL = ("done", "diverged", "failed")
RESULT_KEYS = ("status final_val_loss best_val_loss final_val_bpb final_val_accuracy final_train_loss tokens_per_s mfu "
               "peak_memory_mb memory wall_s attempts train_tokens n_steps run_b1 run_b2 run_t1 run_t2 max_attn_logit "
               "max_logit loss_spikes dropped max_load reason").split()
SPIKE = 0.5  # nats: a log window's mean train loss this far above the window before it is a loss spike
CORES = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else list(range(os.cpu_count()))

def grid(**axes):
    """Every combination: grid(a=[1, 2], b=[3, 4]) -> [{a: 1, b: 3}, {a: 1, b: 4}, {a: 2, b: 3}, {a: 2, b: 4}]."""
    return [dict(zip(axes, vs)) for vs in itertools.product(*axes.values())]

def zipped(**axes):
    """Lists side by side: zipped(a=[1, 2], b=[3, 4]) -> [{a: 1, b: 3}, {a: 2, b: 4}] (ValueError if unequal)."""
    return [dict(zip(axes, vs)) for vs in zip(*axes.values(), strict=True)]

def load(path, root="out/sweeps"):
    """The sweep file at `path` as a dict: name, config, settings, points, tune, out (its runs), csv."""
    if not os.path.isfile(path):
        raise ValueError(f"sweep file '{path}' not found")
    try:
        exec(compile(open(path).read(), path, "exec"), scope := {})
    except Exception as e:
        raise ValueError(f"sweep file '{path}': {type(e).__name__}: {e}") from None
    name = os.path.splitext(os.path.basename(path))[0]
    out = os.path.join(scope.get("root", root), name)
    s = dict(name=name, config=scope.get("config"), settings=scope.get("settings", {}), points=scope.get("points"),
             tune=scope.get("tune", []), out=out, csv=scope.get("csv", os.path.join(out, name + ".csv")))
    if not isinstance(s["config"], str) or not isinstance(s["points"], list) or not s["points"]:
        raise ValueError(f"sweep file '{path}' must set config = 'configs/....py' and a non-empty list `points`")
    unknown = {k for r in s["tune"] for k in r} - {"key", "factor", "margin", "around", "factors", "values", "span", "where"}
    if unknown or any("key" not in r or ("around" in r) != ("factors" in r or "values" in r) for r in s["tune"]):
        raise ValueError(f"sweep file '{path}': a tune rule is dict(key=..., factor=2, margin=1, where=...) or "
                         "dict(key=..., around=..., factors=[...] or values=[...], span=1, where=...)" +
                         (f"; unknown {sorted(unknown)}" if unknown else ""))
    names = [point_name(p) for p in s["points"]]
    if len(set(names)) < len(names):
        raise ValueError(f"sweep file '{path}': point {next(n for n in names if names.count(n) > 1)} appears twice")
    return s

def check(sweep):
    """Every point's train.py config, checked before the sweep starts (train.py's own message, as one line)."""
    for p in sweep["points"]:
        config.parse([sweep["config"], *_args(sweep, p)])

def point_name(p):
    """The run directory of a point: its own keys in order, e.g. 'optimizer=adamw,batch_size=4,lr=0.004'."""
    return ",".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in p.items())

def run_dir(sweep, p):
    return os.path.join(sweep["out"], point_name(p))

def status(out):
    """A point's state from its directory: its result.json, else 'partial' (a checkpoint) or 'todo'."""
    return (read_json(os.path.join(out, "result.json"))
            or dict(status="partial" if checkpoint.list_checkpoints(out) else "todo"))

def finished(sweep):
    """{directory name: result} of every finished run in the sweep's directory, listed or not."""
    return {d: r for d in (os.listdir(sweep["out"]) if os.path.isdir(sweep["out"]) else [])
            if (r := read_json(os.path.join(sweep["out"], d, "result.json"))) and r.get("status") in FINAL}

def known(sweep, done=None):
    """(points, {name: result}) known now: the tune rules applied to the results on disk until nothing new.
    `done`: finished(sweep), where the caller has it already."""
    points, done = expand(sweep, {}), finished(sweep) if done is None else done
    while True:
        results = {point_name(p): status(run_dir(sweep, p)) for p, _ in points}
        if len(more := expand(sweep, dict(done, **results))) == len(points):  # done: what tune rules added before
            return points, results
        points = more

def tally(results):
    """'3 done, 1 diverged' of {name: result}."""
    n = {s: sum(r["status"] == s for r in results.values()) for s in (*FINAL, "partial", "todo")}
    return ", ".join(f"{k} {s}" for s, k in n.items() if k)

# -- tuning rules: more points from the results so far ------------------------------------------------------
def _groups(points, key):
    """Points that differ only in `key`: lists of points sorted by key."""
    groups = {}
    for p in points:
        if key not in p:
            raise ValueError(f"tune rule on '{key}': point {point_name(p)} does not set it")
        groups.setdefault(point_name({k: v for k, v in p.items() if k != key}), []).append(p)
    return [sorted(ps, key=lambda p: p[key]) for ps in groups.values()]

def _state(p, results):
    return results.get(point_name(p), {}).get("status", "todo")

def _best(ps, results):
    done = [p for p in ps if _state(p, results) == "done"]
    return min(done, key=lambda p: results[point_name(p)]["final_val_loss"], default=None)

def _round(v):
    return float(f"{v:.6g}")  # a value and its directory name stay one across restarts

def _extend(ps, rule, results):
    """New values of rule's key for one group, [] once its best point has `margin` points on either side
    (a diverged top point stops the climb: larger values diverge too), None while a point is unfinished."""
    key, factor, margin = rule["key"], rule.get("factor", 2), rule.get("margin", 1)
    margin = margin(ps[0]) if callable(margin) else margin
    if len(ps) >= MAX_POINTS_PER_GROUP:
        return []
    if any(_state(p, results) not in ("done", "diverged") for p in ps):
        return None
    if (best := _best(ps, results)) is None:  # everything diverged: go lower
        return [_round(ps[0][key] / factor)]
    i = ps.index(best)
    new = [ps[0][key] / factor ** j for j in range(1, margin - i + 1)]
    if _state(ps[-1], results) == "done":
        new += [ps[-1][key] * factor ** j for j in range(1, i + margin - len(ps) + 2)]
    return [_round(v) for v in new]

def _added(ps, rule, results):
    """The values of the rule's key it added to an unfinished group before, below and above it: the points next to
    the grid's ends that have results (a restarted runner; a restored CSV whose rerun points are not finished), so
    that a group waiting for one point does not drop them from the sweep and its CSV meanwhile."""
    key, factor, out = rule["key"], rule.get("factor", 2), []
    for v, step in ((ps[0][key], 1 / factor), (ps[-1][key], factor)):
        while _state(dict(ps[0], **{key: (v := _round(v * step))}), results) in FINAL:
            out.append(v)
    return out

def _apply(rule, rules, points, results):
    """The (point, variant) pairs one rule adds. Rules act on grid points only, not on another rule's variants."""
    where, key = rule.get("where", lambda p: True), rule["key"]
    grid_points = [p for p, variant in points if variant is None and where(p)]
    if "around" not in rule:  # extend each grid of `key`; while one is unfinished, keep what it had added
        out = []
        for ps in _groups(grid_points, key):
            values = _extend(ps, rule, results)
            out += [(dict(ps[0], **{key: v}), None) for v in (_added(ps, rule, results) if values is None else values)]
        return out
    tuner, new = next((r for r in rules if r["key"] == rule["around"] and "around" not in r), None), []
    for ps in _groups(grid_points, rule["around"]):  # once a group is tuned: its best point with other `key`s
        best = _best(ps, results)
        if best is None or (tuner and _extend(ps, tuner, results) != []):
            continue
        if "span" in rule:  # replicates (seeds) at the best by their mean and `span` points either side of it
            lo, hi = _span(ps, rule, results)
            new += [(dict(p, **{key: v}), key) for p in ps[lo:hi] for v in rule["values"] if p.get(key) != v]
            continue
        if "values" not in rule and key not in best:
            raise ValueError(f"tune rule on '{key}': point {point_name(best)} does not set it")
        values = rule["values"] if "values" in rule else [_round(best[key] * f) for f in rule["factors"]]
        new += [(dict(best, **{key: v}), key) for v in values if best.get(key) != v]
    return new

def _span(ps, rule, results):
    """The slice of ps (a tuned group) whose points get replicates (a rule's `values` of its key, e.g. seeds): the
    best grid point and `span` points either side, widened while the best by the mean over replicates (a diverged
    one makes a mean inf) is within `span` of an end of it, once all of them are finished. It only grows."""
    reps = lambda p: [p] + [dict(p, **{rule["key"]: v}) for v in rule["values"] if p.get(rule["key"]) != v]
    mean = lambda p: math.fsum(results[point_name(q)]["final_val_loss"] if _state(q, results) == "done" else math.inf
                               for q in reps(p)) / len(reps(p))
    i, w = ps.index(_best(ps, results)), rule["span"]
    lo, hi = max(0, i - w), min(len(ps), i + w + 1)
    while all(_state(q, results) in FINAL for p in ps[lo:hi] for q in reps(p)):
        c = lo + min(range(hi - lo), key=lambda j: (mean(ps[lo + j]), lo + j != i))
        if (lo, hi) == (lo := min(lo, max(0, c - w)), hi := max(hi, min(len(ps), c + w + 1))):
            break
    return lo, hi

def expand(sweep, results):
    """Every point known so far, as (point, variant) pairs: the file's points (variant None), then what the
    tune rules add given `results` ({name: result}); applied until nothing new (a restart finds many done). A
    point a rule adds goes right after the last point of its group, so the runner finishes a group before it
    starts the next, and a sweep stopped halfway has whole groups."""
    points = [(dict(p), None) for p in sweep["points"]]
    while True:
        names, new = {point_name(p) for p, _ in points}, {}
        for rule in sweep["tune"]:
            for p, v in _apply(rule, sweep["tune"], points, results):
                if point_name(p) not in names:
                    new.setdefault(point_name(p), (p, v, rule["key"]))
        if not new:
            return points
        for p, v, key in new.values():
            group = lambda q: point_name({k: x for k, x in q.items() if k != key})
            at = max((i for i, (q, _) in enumerate(points) if group(q) == group(p)), default=len(points) - 1)
            points.insert(at + 1, (p, v))

# -- running: train.py processes, each pinned to its own cores ----------------------------------------------
def _args(sweep, p):
    return [f"--{k}={v!r}" if isinstance(v, float) else f"--{k}={v}" for k, v in dict(sweep["settings"], **p).items()]

def _child(cores):
    """(preexec_fn, env) of a train.py process pinned to `cores` (two processes on two cores don't fight over
    one), with as many threads, and SIGTERM when the runner dies, even by SIGKILL (train.py then checkpoints)."""
    def setup():
        getattr(os, "sched_setaffinity", lambda *_: None)(0, cores)
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL(None).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG (Linux)
    flags, n = os.environ.get("XLA_FLAGS", ""), str(len(cores))
    if len(cores) == 1:  # XLA's CPU thread pool would otherwise start a thread per core of the machine
        flags += " --xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"
    return setup, dict(os.environ, XLA_FLAGS=flags.strip(), OMP_NUM_THREADS=n, OPENBLAS_NUM_THREADS=n,
                       MKL_NUM_THREADS=n, TF_CPP_MIN_LOG_LEVEL="2")

def record(out, **row):  # a line of a point's attempts.jsonl: an attempt's start (how, from_step) or end (seconds, rc)
    write_json(path := os.path.join(out, "attempts.jsonl"), read_jsonl(path) + [row], lines=True)

def unreadable(out):
    """Whether a run directory holds checkpoints but none that can be read (train.py cannot resume it)."""
    return bool(checkpoint.list_checkpoints(out)) and checkpoint.latest_valid(out, log=lambda _: None) is None

def result(out, rc):
    """The result.json of a point whose train.py exited with status rc; None if a signal stopped it: it resumes."""
    text = open(os.path.join(out, "train.log"), errors="replace").read()[-4000:]
    errors = re.findall(r"error: [^\r\n]*", text)  # train.py's one-line error, perhaps after a tqdm bar's \r
    err = errors[-1] if errors else text.strip().splitlines()[-1][-300:] if text.strip() else f"exit status {rc}"
    r, ended = read_run(out), [a for a in read_jsonl(os.path.join(out, "attempts.jsonl")) if "rc" in a]
    run, summ, vals = r["run"], r["summary"], [m for m in r["metrics"] if "val_loss" in m]
    final = vals[-1] if vals and vals[-1]["step"] == run.get("n_steps") else {}
    if rc == INTERRUPTED or rc == 0 and not final:  # (exit 0 without a final eval: train.py before INTERRUPTED)
        return None
    train, peak = [None] + [m["train_loss"] for m in r["metrics"] if "train_loss" in m], summ.get("peak_memory_bytes")
    top = lambda k: max((m[k] for m in r["metrics"] if k in m), default=None)  # the largest logits the log saw
    last = lambda k: next((m[k] for m in reversed(r["metrics"]) if k in m), None)
    return dict(status="diverged" if rc == DIVERGED else "failed" if rc else "done",
                reason=f"killed by {signal.Signals(-rc).name}" if rc < 0 else err if rc else "",
                **{f"final_{k}": final.get(k) for k in ("val_loss", "val_bpb", "val_accuracy")},
                final_train_loss=train[-1], best_val_loss=min((m["val_loss"] for m in vals), default=None),
                **{k: summ.get(k) for k in ("tokens_per_s", "mfu", "memory")}, peak_memory_mb=peak and peak / 2 ** 20,
                wall_s=sum(a["seconds"] for a in ended), attempts=len(ended), train_tokens=run.get("train_tokens"),
                n_steps=run.get("n_steps"), **{f"run_{k}": run.get(k) for k in ("b1", "b2", "t1", "t2")},  # as resolved
                max_attn_logit=top("max_attn_logit"), max_logit=top("max_logit"),
                **{k: last(k) for k in ("dropped", "max_load")},  # an MoE's routing in its last log window
                loss_spikes=sum(b - a > SPIKE for a, b in zip(train[1:], train[2:])))

class Runner:
    """Runs a sweep's unfinished points, `jobs` at a time, until all are finished or it is told to stop."""
    def __init__(self, sweep, jobs=1, log=print, retry_failed=False):
        self.sweep, self.jobs, self.log = sweep, jobs, log
        self.rerun = ("todo", "partial", "failed") if retry_failed else ("todo", "partial")
        per = max(1, len(CORES) // jobs)
        self.slots = [(CORES * jobs)[k * per:(k + 1) * per] for k in range(jobs)]
        self.running, self.stopping = {}, False  # slot -> (point name, process, out, start time)
        self.after, self.failed = {}, {}  # point name -> its next start (inf: running, or never again), failures

    def start(self, p, slot):
        """Point p's train.py on the slot's cores, resumed from its checkpoint (afresh once retry() found none can
        be read); not while a killed runner's train.py runs p: its attempt is recorded, lasting to its log's end."""
        name, out = point_name(p), run_dir(self.sweep, p)
        os.makedirs(out, exist_ok=True)
        hold = open(os.path.join(out, "attempt.lock"), "a")  # train.py inherits it: locked for as long as it runs
        try:
            fcntl.flock(hold, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:  # a killed runner's train.py, checkpointing before it exits: wait for it
            return hold.close()
        log, rows = os.path.join(out, "train.log"), read_jsonl(os.path.join(out, "attempts.jsonl"))
        for t in {a["started"] for a in rows} - {a["started"] for a in rows if "rc" in a}:  # killed with its runner
            record(out, started=t, seconds=max(0.0, os.path.getmtime(log) - t), rc=None, killed=True)
        ckpts, (setup, env) = checkpoint.list_checkpoints(out), _child(self.slots[slot])
        fresh = self.failed.get(name) == MAX_ATTEMPTS and unreadable(out)  # retry() allowed one more, from scratch
        how = "overwrite" if fresh else "resume" if ckpts else "start"
        cmd = [sys.executable, TRAIN, self.sweep["config"], *_args(self.sweep, p), f"--out_dir={out}",
               *dict(resume=["--init_from=resume"], overwrite=["--overwrite=True"]).get(how, [])]
        with hold, open(log, "a") as f:
            record(out, started=(t0 := time.time()), how=how, from_step=ckpts[-1][0] if how == "resume" else 0)
            proc = subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                    preexec_fn=setup, env=env, pass_fds=(hold.fileno(),))
        self.running[slot], self.after[name] = (name, proc, out, t0), math.inf

    def poll(self):
        """Ended processes -> attempts.jsonl, then result.json, a retry, or (interrupted) a resume. -> how many."""
        ended = [(slot, r) for slot, r in self.running.items() if r[1].poll() is not None]
        for slot, (name, proc, out, t0) in ended:
            del self.running[slot], self.after[name]
            record(out, started=t0, seconds=time.time() - t0, rc=proc.returncode)
            if (res := result(out, proc.returncode)) is None or self.stopping and res["status"] == "failed":
                self.log(f"interrupted: {name}")
            elif res["status"] != "failed" or not self.retry(name, out, res["reason"]):
                write_json(os.path.join(out, "result.json"), res)
                self.log(f"{res['status']}: {name}" + (f" ({res['reason']})" if res["reason"] else ""))
        return len(ended)

    def retry(self, name, out, why):
        """After a failed attempt: True to run it again after a backoff (MAX_ATTEMPTS in all), then once more, from
        scratch, if none of its checkpoints can be read; False once it has failed for good."""
        n = self.failed[name] = self.failed.get(name, 0) + 1
        again = n < MAX_ATTEMPTS or n == MAX_ATTEMPTS and unreadable(out)
        self.after[name] = time.time() + (wait := RETRY_S * 2 ** (n - 1)) if again else math.inf  # inf: never
        if again:
            self.log(f"attempt {n} failed ({why}); again in {wait:g} s{' from scratch' * (n == MAX_ATTEMPTS)}: {name}")
        return again

    def stop(self, *_):
        """SIGINT / SIGTERM: each process checkpoints and exits (train.py's own handling); the runner waits."""
        self.stopping = True
        for _, proc, *_ in self.running.values():
            proc.send_signal(signal.SIGTERM)

    def run(self, csv_path):
        """Until every point is finished or a signal stops it; the CSV after every point. -> known(sweep)."""
        from tqdm import tqdm
        signal.signal(signal.SIGTERM, self.stop), signal.signal(signal.SIGINT, self.stop)
        with tqdm(desc=self.sweep["name"], unit="run", dynamic_ncols=True, mininterval=1.0) as bar:
            now = None  # known(sweep), read again only after a process ends (hundreds of result files, each poll)
            while True:
                points, results = now = now or known(self.sweep)
                if (count := (len(points), sum(r["status"] in FINAL for r in results.values()))) != (bar.total, bar.n):
                    bar.total, bar.n = count
                    bar.refresh()
                todo = [p for p, _ in points if results[n := point_name(p)]["status"] in self.rerun
                        and self.after.get(n, 0) < math.inf]  # not running, not failed for good
                for p in [] if self.stopping else todo:
                    free = [s for s in range(self.jobs) if s not in self.running]
                    if free and self.after.get(point_name(p), 0) <= time.time():
                        self.start(p, free[0])
                if not self.running and (self.stopping or not todo):
                    break
                time.sleep(POLL_S)
                if self.poll():
                    collect(self.sweep, csv_path)
                    now = None
        collect(self.sweep, csv_path)
        return known(self.sweep)

def orphans(sweep, points, done):
    """The finished results on disk (`done`: finished(sweep)) that `points` do not list, as (point, variant) pairs,
    keys read from the directory name. A group waiting for a rerun lists only what its rules can reach from the grid (its seeds, and
    LRs beyond a gap, come back once it is settled); meanwhile the CSV keeps them. The variant: the key of the first
    `around` rule whose value no point of the sweep file has (e.g. a seed)."""
    names = {point_name(p) for p, _ in points}
    out = []
    for d in sorted(set(done) - names):
        p = {k: number(v) for k, _, v in (kv.partition("=") for kv in d.split(","))}
        if point_name(p) != d:  # not a point's directory
            continue
        variant = next((r["key"] for r in sweep["tune"] if "around" in r and r["key"] in p
                        and all(q.get(r["key"]) != p[r["key"]] for q in sweep["points"])), None)
        out.append((p, variant))
    return out

def collect(sweep, path):
    """One CSV row per known point (its keys, then RESULT_KEYS), then per result on disk no known point lists
    (orphans), and the loss curves beside it (*_curves.csv)."""
    points, results = known(sweep, done := finished(sweep))
    points += (more := orphans(sweep, points, done))
    results.update({point_name(p): done[point_name(p)] for p, _ in more})
    keys = list(dict.fromkeys(k for p, _ in points for k in p))
    rows, curves = [], []
    for p, variant in points:
        name, r = point_name(p), results[point_name(p)]
        row = dict(name=name, variant=variant or "", **{k: p.get(k, "") for k in keys})
        rows.append(dict(row, **{k: r.get(k, row.get(k, "")) for k in RESULT_KEYS}))  # a point's key keeps its column
        curves += [dict(name=name, tokens=m["tokens"], **{k: m.get(k, "") for k in ("train_loss", "val_loss")})
                   for m in read_jsonl(os.path.join(run_dir(sweep, p), "metrics.jsonl"))
                   if "train_loss" in m or "val_loss" in m]
    for table, to in ((rows, path), (curves, path[:-4] + "_curves.csv")):
        if table:
            os.makedirs(os.path.dirname(to) or ".", exist_ok=True)
            atomic_write(to, lambda f, t=table: _write_csv(f, t))
    return rows

def restore(sweep, path):
    """Each finished point of a committed CSV (and its curves) back into its run directory as result.json and
    metrics.jsonl, where the directory has no result: a clone can extend a sweep (more LRs, seeds) without
    rerunning it. Diverged and failed points are not restored: they run again, under today's divergence rule."""
    with open(path) as f:
        rows = list(csv.DictReader(f))
    curves = {}
    if os.path.exists(cpath := path[:-4] + "_curves.csv"):
        with open(cpath) as f:
            for c in csv.DictReader(f):
                curves.setdefault(c["name"], []).append({k: number(v) for k, v in c.items() if k != "name" and v != ""})
    n = 0
    for r in rows:
        out = os.path.join(sweep["out"], r["name"])
        if r["status"] != "done" or os.path.exists(os.path.join(out, "result.json")):
            continue
        os.makedirs(out, exist_ok=True)
        write_json(os.path.join(out, "metrics.jsonl"), curves.get(r["name"], []), lines=True)
        write_json(os.path.join(out, "result.json"), dict({k: number(r.get(k, "")) for k in RESULT_KEYS},
                                                          status="done", reason="", restored_from=path))
        n += 1
    return n

def _write_csv(f, rows):
    w = csv.DictWriter(f, fieldnames=list(rows[0]), lineterminator="\n")
    w.writeheader()
    w.writerows({k: "" if v is None else v for k, v in r.items()} for r in rows)

def dry_run(sweep, log=print):
    """List the points known so far and what is done; tune rules may add more as results arrive."""
    points, results = known(sweep)
    for p, variant in points:
        r = results[point_name(p)]
        loss = f"val {r['final_val_loss']:.4f}" if r.get("final_val_loss") is not None else ""
        log(f"{r['status']:>8} {loss:>11}  {point_name(p)}" + (f"  ({variant} around the best)" if variant else ""))
    more = f"; tune rules on {', '.join(r['key'] for r in sweep['tune'])} add more as results arrive"
    log(f"{len(points)} points: {tally(results)}" + (more if sweep["tune"] else ""))

def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    run = sub.add_parser("run", help="run the points not finished yet (resumable: kill and rerun at any time)")
    for s in (run, sub.add_parser("collect", help="write the sweep's CSV from what is on disk"),
              sub.add_parser("restore", help="the CSV's finished points back into their run directories (to extend "
                                             "a committed sweep without rerunning it)")):
        s.add_argument("sweep", help="a sweep file, e.g. sweeps/fig1a.py")
        s.add_argument("--csv", help="where the results go (default: the sweep file's `csv`)")
    run.add_argument("--jobs", type=int, default=len(CORES), help="train.py processes at once (default: one per core)")
    run.add_argument("--dry_run", action="store_true", help="list the points and what is done; run nothing")
    run.add_argument("--retry_failed", action="store_true", help="run failed points again (after fixing their cause)")
    a = ap.parse_args(argv)
    sweep = load(a.sweep)
    path = a.csv or sweep["csv"]
    if a.cmd == "restore":
        return print(f"{restore(sweep, path)} finished points of {path} -> {sweep['out']}/")
    if a.cmd == "collect":
        return print(f"{len(collect(sweep, path))} points -> {path}")
    if a.dry_run:
        return dry_run(sweep)
    if a.jobs < 1:
        raise ValueError(f"--jobs must be at least 1, got {a.jobs}")
    lock(os.path.join(sweep["out"], "sweep.lock"), f"sweep {sweep['out']}")  # one runner per sweep, for its life
    check(sweep)
    runner = Runner(sweep, a.jobs, retry_failed=a.retry_failed)
    print(f"{sweep['name']}: {tally(runner.run(path)[1])} -> {path}")
    if runner.stopping:  # a script running sweeps one after another stops here too
        raise SystemExit("stopped by a signal: run the same command again to continue")

if __name__ == "__main__":
    try:
        main()
    except ValueError as e:
        fail(str(e))
