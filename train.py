"""Train a language model: `python train.py [config.py] [--key=value ...]`.

Config files are plain Python assignments overriding DEFAULTS below; `--key=value` overrides both.
Everything is counted in tokens (budgets, eval/log/checkpoint intervals, optimizer half-lives), as
the paper argues hyperparameters should be. Runs on CPU, GPU or a TPU pod with the same code: the
parameters are sharded over a (data, model) mesh and XLA (GSPMD) inserts the collectives.
"""
import difflib
import json
import os
import shutil
import signal
import sys
import time
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import multihost_utils
from tqdm import tqdm

import checkpoint
import data
import model
import optim
import rounding
import sharding
from sharding import data_share, global_batch, sharded_loss

DEFAULTS = dict(
    # I/O
    out_dir="out/tiny",
    data="stdlib",  # a source name ('stdlib', 'fineweb-edu'), a dataset dir, text files, or .bin shards
    data_dir="data",  # where prepared token files live
    init_from="scratch",  # 'scratch' | 'resume' (newest valid checkpoint in out_dir) | a checkpoint or run dir
    overwrite=False,  # start anew in an out_dir that holds another run's checkpoints (deletes them)
    allow_budget_change=False,  # resume with a different train_tokens (the cosine LR then follows the new length)
    # model (paper Table 1 names: D = d_model, L = n_layers, T = seq_len, H = head_dim)
    d_model=384, n_layers=6, head_dim=128, mlp_ratio=4, seq_len=512, vocab_size=50257,
    param_dtype="float32", compute_dtype="float32",
    rounding="stochastic",  # how fp32 updates are cast back to bf16 weights: 'stochastic' | 'nearest'
    remat=False, unroll=False, z_loss=0.0,
    # budget and intervals, in tokens
    train_tokens=0,  # 0: 20 tokens per active parameter (Chinchilla)
    batch_size=1,  # sequences per optimizer step (global, across all devices)
    grad_accum=1,  # micro-batches per step (Sec. 5: buys nothing on one accelerator; on CPU, micro-batches of
    # one sequence keep activations in cache: the 30M model at batch size 4 runs 15% faster as 4 x 1)
    eval_batch_size=0,  # 0: the micro-batch size, at least 8 (eval needs no gradients, so larger is cheap)
    eval_tokens=1_000_000, eval_every=10_000_000, log_every=1_000_000, ckpt_every=0, keep_ckpts=2,
    # optimizer: give each beta or its half-life t in tokens, not both
    optimizer="adamw", lr=0.0,  # lr 0: the optimizer's default for batch size 1 (optim.DEFAULT_LR)
    b1=None, b2=None, t1=None, t2=None, eps=1e-8, weight_decay=0.0, clip_norm=0.0,
    schedule="cosine", warmup=0.05,  # 'cosine' (linear warmup then cosine to 0) | 'constant'
    # system
    seed=0, mesh_model=1,  # devices per tensor-parallel group; the rest of the devices do data parallel
    peak_flops=0.0,  # per-device peak for MFU; 0: from the device table, or measured on CPU
    max_hours=24.0,  # refuse to start a run projected to take longer at the measured peak (force=True to run)
    force=False, dry_run=False,
    # multi-host (one process per host): TPU pods, SLURM and Open MPI are detected by jax.distributed;
    # elsewhere (CPU) give all three. num_processes 0: detect, else one process; 1: never distributed.
    coordinator_address="", num_processes=0, process_id=-1,
    # --dry_run plans for hardware it need not have: plan_devices 0 = the devices present, plan_device
    # a PEAKS name ('' = the present kind); plan_mfu the assumed model-FLOPs utilization for the wall time
    plan_devices=0, plan_device="", plan_mfu=0.4,
)
OPTIONAL_FLOAT = {"b1", "b2", "t1", "t2"}
PROBE_EVERY_S = 30  # on CPU the matmul peak is measured again at the first log this long after the last


fail = sharding.fail  # one clear line instead of a traceback wall


def parse_config(argv):
    cfg, args = dict(DEFAULTS), list(argv)
    path = args.pop(0) if args and not args[0].startswith("--") else "configs/tiny.py"
    if not os.path.isfile(path):
        fail(f"config file '{path}' not found")
    scope = {}
    try:
        exec(compile(open(path).read(), path, "exec"), scope)
    except Exception as e:  # a typo in the config file: one line, not a traceback
        fail(f"config file '{path}': {type(e).__name__}: {e}")
    given = {k: v for k, v in scope.items() if not k.startswith("_") and not callable(v) and not hasattr(v, "__spec__")}
    for a in args:
        if not a.startswith("--"):
            fail(f"expected --key=value, got '{a}'")
        k, eq, v = a[2:].partition("=")
        given[k] = _literal(v) if eq else True
    for k, v in given.items():
        if k not in DEFAULTS:
            close = difflib.get_close_matches(k, DEFAULTS, n=3, cutoff=0.5)
            fail(f"unknown config key '{k}'" + (f"; did you mean {', '.join(close)}?" if close else ""))
        cfg[k] = _check_type(k, v)
    cfg["config_file"] = path
    return cfg


def _literal(v):
    import ast
    try:
        return ast.literal_eval(v)
    except (ValueError, SyntaxError):
        return v  # a bare string such as --optimizer=sgd


def _check_type(k, v):
    want = type(DEFAULTS[k])
    if k in OPTIONAL_FLOAT and (v is None or isinstance(v, (int, float)) and not isinstance(v, bool)):
        return None if v is None else float(v)
    if want is float and isinstance(v, int) and not isinstance(v, bool):
        return float(v)
    if want is int and isinstance(v, float) and v.is_integer():
        return int(v)  # 2e6 tokens
    if type(v) is not want:
        fail(f"config key '{k}' must be {want.__name__}, got {type(v).__name__} {v!r}")
    return v


def model_config(cfg):
    keys = ("d_model", "n_layers", "seq_len", "vocab_size", "head_dim", "mlp_ratio", "param_dtype",
            "compute_dtype", "remat", "unroll", "z_loss")
    try:
        return model.Config(**{k: cfg[k] for k in keys})
    except ValueError as e:
        fail(str(e))


# ---------------------------------------------------------------- training
def make_train_step(cfg, mcfg, opt, shard):
    loss = sharded_loss(mcfg, shard)

    def step(params, opt_state, batch, step):
        loss_v, grads = optim.accumulate_grads(loss, params, batch, cfg["grad_accum"])
        updates, opt_state = opt.update(grads, opt_state, params)
        new = jax.tree.map(lambda p, u: p.astype(jnp.float32) + u, params, updates)  # update in fp32
        if mcfg.param_dtype == "bfloat16":  # cast back with the chosen rounding (rounding.py, Sec. 6)
            new = rounding.round_tree(new, rounding.step_key(cfg["seed"], step), cfg["rounding"])
        else:
            new = jax.tree.map(lambda n, p: n.astype(p.dtype), new, params)
        return new, opt_state, loss_v

    return jax.jit(step, donate_argnums=(0, 1), in_shardings=(shard["params"], shard["opt"], shard["batch"], None),
                   out_shardings=(shard["params"], shard["opt"], None))


def lower_train_step(cfg, mcfg, opt, shard, abs_params, abs_opt, platform=None):
    """The sharded train step lowered from abstract arguments (nothing is allocated); `platform` lowers
    for devices that are not here (an abstract mesh: --dry_run with plan_devices)."""
    place = lambda tree, sh: jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), tree, sh)
    batch = jax.ShapeDtypeStruct((cfg["batch_size"], cfg["seq_len"]), jnp.int32, sharding=shard["batch"])
    traced = make_train_step(cfg, mcfg, opt, shard).trace(
        place(abs_params, shard["params"]), place(abs_opt, shard["opt"]), batch, np.int32(0))
    return traced.lower(lowering_platforms=(platform,)) if platform else traced.lower()


def make_eval_loss(mcfg, shard):
    return jax.jit(sharded_loss(mcfg, shard), in_shardings=(shard["params"], shard["batch"]))


def load_data(cfg):
    """Token data for the run. Process 0 prepares it (tokenizing on first use) while the other hosts
    wait, then they read the same files. A streamed source is cut at what the run will read."""
    spec, d = cfg["data"], cfg["data_dir"]
    cap = int(cfg["train_tokens"] * 1.05) + cfg["eval_tokens"] if spec == "fineweb-edu" else None  # +5% held out
    load = lambda: data.load(data.prepare(spec, d, max_tokens=cap) if cap else spec, d, cfg["vocab_size"])
    try:
        tdata = load() if jax.process_index() == 0 else None
        if jax.process_count() > 1:
            multihost_utils.sync_global_devices("data prepared")
        return tdata if tdata is not None else load()
    except (OSError, ValueError) as e:
        fail(str(e))


def evaluate(eval_loss, params, val, cfg, batch_sharding):
    B = cfg["eval_batch_size"]
    losses = []
    for x in data.eval_batches(val, B, cfg["seq_len"], cfg["eval_tokens"], *data_share(batch_sharding, B)):
        losses.append(eval_loss(params, global_batch(x, batch_sharding, B)))
    return float(np.mean(jax.device_get(losses)))


SHAPE_KEYS = ("d_model", "n_layers", "head_dim", "mlp_ratio", "vocab_size", "param_dtype")
# a resumed run continues the same optimization: same model, optimizer, and tokens per step
RESUME_KEYS = SHAPE_KEYS + ("seq_len", "batch_size", "optimizer", "resolved_lr", "resolved_b1", "resolved_b2",
                            "eps", "weight_decay", "clip_norm", "schedule", "warmup")
FREE_KEYS = {"init_from", "out_dir", "overwrite", "allow_budget_change", "force", "dry_run", "max_hours", "train_tokens",
             "coordinator_address", "num_processes", "process_id", "plan_devices", "plan_device", "plan_mfu"}


def start_point(cfg, log):
    """(checkpoint, its meta) the run starts from, (None, None) for scratch. Reads no arrays. Refuses a
    checkpoint that does not fit the config, and an out_dir holding another run's checkpoints."""
    out, init = cfg["out_dir"], cfg["init_from"]
    ckpts = checkpoint.list_checkpoints(out)
    if init == "resume":
        path = checkpoint.latest_valid(out, log)
        if path is None:
            fail(f"init_from='resume' but {out} holds no valid checkpoint" + (" (see the warnings above)" if ckpts else ""))
        meta = checkpoint.read_meta(path, verify=False)  # latest_valid has just verified it
        check_resume(cfg, meta, path, log)
        return path, meta
    if ckpts and not cfg["overwrite"]:
        fail(f"{out} already holds another run's checkpoints ({os.path.basename(ckpts[-1][1])}): continue it with "
             "--init_from=resume, replace it with --overwrite=True, or choose another --out_dir")
    path = meta = None
    if init != "scratch":  # fine-tuning: a checkpoint, or a run directory (its newest valid checkpoint)
        path = init if os.path.exists(os.path.join(init, "meta.json")) else checkpoint.latest_valid(init, log)
        if path is None:
            fail(f"init_from={init!r} is not 'scratch', 'resume', a checkpoint, or a directory holding a valid one")
        try:
            meta = checkpoint.read_meta(path)
        except checkpoint.CheckpointError as e:
            fail(str(e))
        saved = meta.get("config", {})
        diff = [f"{k} {saved.get(k)!r} vs {cfg[k]!r}" for k in SHAPE_KEYS if saved.get(k) != cfg[k]]
        if diff:
            fail(f"init_from={path}: the checkpoint's model differs from the config's ({'; '.join(diff)})")
        if ckpts and os.path.abspath(path).startswith(os.path.abspath(out) + os.sep):
            fail(f"init_from={path} lies in out_dir {out}, whose checkpoints --overwrite=True would delete")
    if ckpts and jax.process_index() == 0:
        log(f"overwrite: deleting the {len(ckpts)} checkpoint(s) of the previous run in {out}")
        for _, p in ckpts:
            shutil.rmtree(p)
    return path, meta


def check_resume(cfg, meta, path, log):
    """Refuse to resume into a different model, optimizer or step size; a different token budget only
    when asked (a cosine schedule then follows the new length from the resume point on)."""
    old = meta.get("config", {})
    if not {"metrics", "pending_losses", "data"} <= set(meta):
        fail(f"cannot resume {path}: written by an older train.py; start from its weights with --init_from={path}")
    diff = [f"{k} {old.get(k)!r} -> {cfg[k]!r}" for k in RESUME_KEYS if old.get(k) != cfg[k]]
    if diff:
        fail(f"cannot resume {path}: the config changes the model or optimizer ({'; '.join(diff)}); "
             f"start a new run from its weights with --init_from={path} instead")
    if old.get("train_tokens") != cfg["train_tokens"]:
        if not cfg["allow_budget_change"]:
            fail(f"cannot resume {path}: train_tokens {old.get('train_tokens', 0):,} -> {cfg['train_tokens']:,} changes the "
                 f"run's length and LR schedule; pass --allow_budget_change=True to continue with the new budget")
        if meta["step"] > cfg["n_steps"]:
            fail(f"cannot resume {path}: it is at step {meta['step']:,}, past the new budget's {cfg['n_steps']:,} steps")
        if cfg["schedule"] == "cosine":
            log(f"note: train_tokens {old['train_tokens']:,} -> {cfg['train_tokens']:,}: the cosine schedule now spans "
                f"{cfg['n_steps']:,} steps, so the LR from step {meta['step']:,} on differs from the original run's")
    changed = [f"{k} {old.get(k)!r} -> {v!r}" for k, v in cfg.items()
               if k in DEFAULTS and k not in FREE_KEYS and k not in RESUME_KEYS and old.get(k) != v]
    if changed:
        log(f"note: resuming with changed settings: {'; '.join(changed)}")


def write_lines(path, rows):
    """metrics.jsonl, rewritten atomically: one JSON object per line."""
    with open(path + ".tmp", "w") as f:
        f.writelines(json.dumps(r) + "\n" for r in rows)
    os.replace(path + ".tmp", path)


def main(argv):
    sharding.keep_freed_memory()
    cfg = parse_config(argv)
    sharding.init_distributed(cfg)
    mcfg = model_config(cfg)
    counts = model.count_params(mcfg)
    B, T = cfg["batch_size"], cfg["seq_len"]
    tokens_per_step = B * T
    train_tokens = cfg["train_tokens"] or 20 * counts["active"]
    n_steps = max(1, train_tokens // tokens_per_step)
    if B % cfg["grad_accum"]:
        fail(f"batch_size={B} is not divisible by grad_accum={cfg['grad_accum']}")
    try:
        no_momentum = cfg["optimizer"] != "adamw" and cfg["b1"] is None and cfg["t1"] is None
        b1, b2 = optim.resolve_betas(0.0 if no_momentum else cfg["b1"], cfg["b2"], cfg["t1"], cfg["t2"], tokens_per_step)
        lr = cfg["lr"] or optim.DEFAULT_LR[cfg["optimizer"]]
        sched = (optim.warmup_cosine(lr, n_steps, cfg["warmup"]) if cfg["schedule"] == "cosine"
                 else optim.constant(lr) if cfg["schedule"] == "constant" else fail(f"unknown schedule '{cfg['schedule']}'"))
        opt = optim.build(cfg["optimizer"], sched, b1, b2, cfg["eps"], cfg["weight_decay"], cfg["clip_norm"])
    except (ValueError, KeyError) as e:
        fail(str(e).strip("'"))
    cfg.update(resolved_lr=lr, resolved_b1=b1, resolved_b2=b2, n_steps=n_steps, train_tokens=n_steps * tokens_per_step,
               params_nonembed=counts["nonembed"], params_active=counts["active"], params_total=counts["total"],
               flops_per_token=model.flops_per_token(mcfg))
    mesh = sharding.make_mesh(cfg)
    n_data = mesh.shape["data"]
    if B // cfg["grad_accum"] % n_data:  # each micro-batch is split over the data axis
        fail(f"the micro-batch batch_size / grad_accum = {B // cfg['grad_accum']} must be divisible by the "
             f"{n_data}-way data axis of the mesh")
    cfg["eval_batch_size"] = cfg["eval_batch_size"] or -(-max(8, B // cfg["grad_accum"]) // n_data) * n_data
    if cfg["eval_batch_size"] % n_data:
        fail(f"eval_batch_size={cfg['eval_batch_size']} must be divisible by the {n_data}-way data axis of the mesh")
    master = jax.process_index() == 0
    log = print if master else (lambda *a, **k: None)
    for k, v in cfg.items():
        log(f"{k:>16} = {v!r}")
    log(f"optimizer {cfg['optimizer']}: lr {lr:g}, b1 {b1:.6g} (t1 {optim.beta_to_half_life(b1, tokens_per_step) if b1 else 0:,.0f} tokens),"
        f" b2 {b2:.6g} (t2 {optim.beta_to_half_life(b2, tokens_per_step):,.0f} tokens), {tokens_per_step} tokens/step")

    # abstract shapes first: nothing is allocated until we know it fits (and dry_run stops here)
    key = jax.random.PRNGKey(cfg["seed"])
    abs_params = jax.eval_shape(partial(model.init, mcfg), key)
    abs_opt = jax.eval_shape(opt.init, abs_params)
    shard = sharding.shardings(abs_params, abs_opt, mesh)
    report = sharding.plan(cfg, mcfg, abs_params, abs_opt, shard, log,
                           partial(lower_train_step, cfg, mcfg, opt, shard, abs_params, abs_opt))
    if cfg["dry_run"]:
        return dict(cfg, plan=report)
    peak, hours = report["peak"], report["hours"]
    if hours > cfg["max_hours"] and not cfg["force"]:
        fail(f"this run needs >= {hours:,.1f} h at 100% MFU on {jax.device_count()} x {jax.devices()[0].device_kind}; "
             f"pass --force=True to train anyway, or --dry_run=True to see the plan")

    start, meta = start_point(cfg, log)  # before the data is read: a refused start fails fast
    resume = cfg["init_from"] == "resume"
    tdata = load_data(cfg)
    if resume and meta["data"]["train_tokens"] != len(tdata.train) and not cfg["allow_budget_change"]:
        fail(f"cannot resume {start}: its data had {meta['data']['train_tokens']:,} training tokens, {cfg['data']!r} "
             f"has {len(tdata.train):,}, so the batches after step {meta['step']:,} would differ")
    os.makedirs(cfg["out_dir"], exist_ok=True)
    if master:
        with open(os.path.join(cfg["out_dir"], "config.json"), "w") as f:
            json.dump(cfg, f, indent=1)
    try:  # only the arrays the run uses are created: a resumed run does not also initialize a model
        if resume:
            trees = checkpoint.load(start, {"params": abs_params, "opt": abs_opt}, shard)[0]
            params, opt_state = trees["params"], trees["opt"]
        else:  # scratch, or fine-tuning from a checkpoint's weights with a fresh optimizer at step 0
            params = (checkpoint.load(start, {"params": abs_params}, shard)[0]["params"] if start else
                      jax.jit(partial(model.init, mcfg), out_shardings=shard["params"])(key))
            opt_state = jax.jit(opt.init, out_shardings=shard["opt"])(params)
    except checkpoint.CheckpointError as e:
        fail(str(e))
    # The run's history is the checkpoint's: metrics.jsonl is cut back to it (a killed run may have logged
    # past its last checkpoint), and the losses of a half-done log window carry over, so the resumed log
    # is line for line the uninterrupted one.
    step0 = meta["step"] if resume else 0
    history, pending = (meta["metrics"], [np.float32(x) for x in meta["pending_losses"]]) if resume else ([], [])
    metrics_path = os.path.join(cfg["out_dir"], "metrics.jsonl")
    if master:
        write_lines(metrics_path, history)
    if start:
        log(f"{'resuming from' if resume else 'weights from'} {start} (step {meta['step']:,})")

    log(f"compiling the train step for {jax.device_count()} device(s), mesh {dict(mesh.shape)} ...")
    t0 = time.perf_counter()
    train_step = lower_train_step(cfg, mcfg, opt, shard, abs_params, abs_opt).compile()
    eval_loss = make_eval_loss(mcfg, shard)
    log(f"compiled in {time.perf_counter() - t0:.1f} s")

    share = data_share(shard["batch"], B)  # this process reads only the rows its devices hold

    def get(step):
        return global_batch(data.get_batch(tdata.train, B, T, cfg["seed"], step, *share), shard["batch"], B)

    def record(m):
        history.append(m)
        if master:
            with open(metrics_path, "a") as f:
                f.write(json.dumps(m) + "\n")

    def check_finite(losses, done):  # losses of the len(losses) steps ending at step `done`
        if not np.all(np.isfinite(losses)):
            i, last = int(np.argmin(np.isfinite(losses))), checkpoint.list_checkpoints(cfg["out_dir"])
            fail(f"loss is {losses[i]} at step {done - len(losses) + i + 1:,}; stopped without saving "
                 f"(last good checkpoint: {last[-1][1] if last else 'none'})")

    all_finite = jax.jit(lambda t: jnp.all(jnp.stack([jnp.isfinite(x).all() for x in jax.tree.leaves(t)])))
    version = checkpoint.code_version()

    def save(done, pending):
        losses = np.asarray(jax.device_get(pending), np.float32)  # the current log window's losses so far
        check_finite(losses, done)
        if not all_finite({"params": params, "opt": opt_state}):  # a finite loss can precede non-finite weights
            fail(f"parameters or optimizer state are not finite after step {done:,}; stopped without saving")
        meta = dict(tokens=done * tokens_per_step, config=cfg, metrics=history, pending_losses=losses.tolist(),
                    # the next batch is data.get_batch(seed, step) and the bf16 rounding noise
                    # rounding.step_key(seed, step): the random state is (seed, step)
                    data=dict(spec=cfg["data"], train_tokens=len(tdata.train), seed=cfg["seed"], next_step=done),
                    rng=dict(seed=cfg["seed"], step=done), code_version=version)
        try:
            checkpoint.save(cfg["out_dir"], done, {"params": params, "opt": opt_state}, meta, cfg["keep_ckpts"])
        except OSError as e:
            fail(f"could not write the checkpoint of step {done:,}: {e}")

    stop = []

    def on_signal(sig, frame):  # finish this step, checkpoint, exit 0; a second Ctrl-C interrupts at once
        stop.append(signal.Signals(sig).name)
        signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    every = lambda n: max(1, n // tokens_per_step) if n else 0  # token interval -> steps
    log_every, eval_every, ckpt_every = every(cfg["log_every"]), every(cfg["eval_every"]), every(cfg["ckpt_every"])
    if step0 >= n_steps:
        log(f"{start} already ends the run ({n_steps:,} steps); nothing to train")
    bar = tqdm(range(step0, n_steps), initial=step0, total=n_steps, disable=not master, unit="step",
               dynamic_ncols=True, mininterval=1.0)
    t_last, step_last, batch = time.perf_counter(), step0, get(step0)
    timed, skipped = [0.0, 0, 0.0], False  # seconds, tokens, peak FLOPs of training alone (no compile/eval/ckpt)
    t_probe = time.perf_counter()

    def sync():  # the steps still in flight count as training; eval and checkpoint time after them does not
        jax.block_until_ready(params)
        return time.perf_counter()
    for step in bar:
        params, opt_state, loss = train_step(params, opt_state, batch, np.int32(step))
        pending.append(loss)
        if step + 1 < n_steps:
            batch = get(step + 1)  # fetched while the device computes (async dispatch)
        done = step + 1
        if done % log_every == 0 or done == n_steps:  # not on a signal: log windows stay the uninterrupted run's
            losses = np.asarray(jax.device_get(pending))
            check_finite(losses, done)
            dt = time.perf_counter() - t_last
            tps = (done - step_last) * tokens_per_step / dt
            window_peak = peak
            if report["measured"] and time.perf_counter() - t_probe > PROBE_EVERY_S:  # a shared CPU drifts: MFU of
                sync()  # a window is against the better of the probes before and after it (time not counted)
                p = sharding.probe_peak(mcfg.compute_dtype, 3)
                window_peak, peak, t_probe = max(peak, p), p, time.perf_counter()
            if step_last == step0 and done < n_steps:  # the summary leaves out the first window: it warms
                skipped = True  # up (first touch of the step's memory; the first steps are 1.5x slower on CPU)
            else:
                timed = [timed[0] + dt, timed[1] + (done - step_last) * tokens_per_step, timed[2] + dt * window_peak]
            mfu = tps * cfg["flops_per_token"] / (window_peak * jax.device_count())
            record(dict(step=done, tokens=done * tokens_per_step, train_loss=float(losses.mean()),
                        tokens_per_s=tps, mfu=mfu, peak_flops=window_peak, lr=float(sched(done - 1))))
            bar.set_postfix(loss=f"{losses.mean():.3f}", tok_s=f"{tps:,.0f}", mfu=f"{mfu:.1%}")
            pending, t_last, step_last = [], time.perf_counter(), done
        if (eval_every and done % eval_every == 0) or done == n_steps:
            t0 = sync()
            val = evaluate(eval_loss, params, tdata.val, cfg, shard["batch"])
            record(dict(step=done, tokens=done * tokens_per_step, val_loss=val))
            bar.write(f"step {done}: val loss {val:.4f}") if master else None
            t_last += time.perf_counter() - t0  # keep eval time out of tokens/s
        halt = bool(stop)
        if jax.process_count() > 1:  # all hosts must stop at the same step: they agree at log steps (a sync)
            halt = done % log_every == 0 and bool(multihost_utils.process_allgather(np.int32(halt)).any())
        if (ckpt_every and done % ckpt_every == 0) or done == n_steps or halt:
            t0 = sync()
            save(done, pending)
            t_last += time.perf_counter() - t0
        if halt:
            log(f"{stop[0] if stop else 'signal on another host'}: checkpoint written at step {done:,}; "
                f"resume with --init_from=resume")
            break
    bar.close()
    if timed[0]:
        tps, mean_peak = timed[1] / timed[0], timed[2] / timed[0]
        log(f"trained {timed[1]:,} tokens in {timed[0]:.1f} s: {tps:,.0f} tokens/s, MFU "
            f"{tps * cfg['flops_per_token'] / (mean_peak * jax.device_count()):.1%} of the {mean_peak:.3g} FLOP/s/device "
            f"peak {'measured around the log windows' if report['measured'] else 'above'}"
            f"{' (after the first log window: warm-up)' if skipped else ''}")
    return cfg


if __name__ == "__main__":
    try:
        main(sys.argv[1:])
    except KeyboardInterrupt:  # Ctrl-C before training started, or a second one: nothing new was saved
        fail("interrupted; progress since the last checkpoint is lost")
