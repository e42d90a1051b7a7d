"""Train a language model: `python train.py [config.py] [--key=value ...]`.

Config files are plain Python assignments overriding DEFAULTS below; `--key=value` overrides both.
Everything is counted in tokens (budgets, eval/log/checkpoint intervals, optimizer half-lives), as
the paper argues hyperparameters should be. Runs on CPU, GPU or a TPU pod with the same code: the
parameters are sharded over a (data, model) mesh and XLA (GSPMD) inserts the collectives.
"""
import difflib
import json
import math
import os
import signal
import sys
import time
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import NamedSharding, PartitionSpec as P
from tqdm import tqdm

import checkpoint
import data
import model
import optim
import rounding

DEFAULTS = dict(
    # I/O
    out_dir="out/tiny",
    data="stdlib",  # a source name ('stdlib', 'fineweb-edu'), a dataset dir, text files, or .bin shards
    data_dir="data",  # where prepared token files live
    init_from="scratch",  # 'scratch' | 'resume' (newest valid checkpoint in out_dir) | a checkpoint dir
    # model (paper Table 1 names: D = d_model, L = n_layers, T = seq_len, H = head_dim)
    d_model=384, n_layers=6, head_dim=128, mlp_ratio=4, seq_len=512, vocab_size=50257,
    param_dtype="float32", compute_dtype="float32",
    rounding="stochastic",  # how fp32 updates are cast back to bf16 weights: 'stochastic' | 'nearest'
    remat=False, z_loss=0.0,
    # budget and intervals, in tokens
    train_tokens=0,  # 0: 20 tokens per active parameter (Chinchilla)
    batch_size=1,  # sequences per optimizer step (global, across all devices)
    grad_accum=1,  # micro-batches per step; costs steps and memory, buys nothing on one device (Sec. 5)
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
)
OPTIONAL_FLOAT = {"b1", "b2", "t1", "t2"}
PEAKS = {"TPU v4": 275e12, "TPU v5 lite": 197e12, "TPU v5": 459e12, "A100": 312e12, "H100": 989e12, "H200": 989e12}


def fail(msg):
    """One clear line instead of a traceback wall."""
    raise SystemExit(f"error: {msg}")


def parse_config(argv):
    cfg, args = dict(DEFAULTS), list(argv)
    path = args.pop(0) if args and not args[0].startswith("--") else "configs/tiny.py"
    if not os.path.isfile(path):
        fail(f"config file '{path}' not found")
    scope = {}
    exec(compile(open(path).read(), path, "exec"), scope)
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
            "compute_dtype", "remat", "z_loss")
    try:
        return model.Config(**{k: cfg[k] for k in keys})
    except ValueError as e:
        fail(str(e))


# ---------------------------------------------------------------- sharding over the (data, model) mesh
def make_mesh(cfg):
    n, m = jax.device_count(), cfg["mesh_model"]
    if n % m:
        fail(f"mesh_model={m} does not divide the {n} devices")
    # Auto axes: GSPMD propagates shardings from the jit in/out shardings and inserts the collectives
    return jax.make_mesh((n // m, m), ("data", "model"), axis_types=(jax.sharding.AxisType.Auto,) * 2)


# Which mesh axis shards each dimension: FSDP over 'data' on D, tensor parallel over 'model' on heads/F/V.
RULES = {"embed": (None, "model"), "q": (None, "data", "model", None), "k": (None, "data", "model", None),
         "v": (None, "data", "model", None), "o": (None, "model", None, "data"), "up": (None, "data", "model"),
         "down": (None, "model", "data"), "unembed": ("data", "model")}


def param_shardings(params, mesh):
    def spec(path, x):
        axes = RULES[getattr(path[-1], "key", "")]
        # an axis that does not divide its dimension is dropped (replicated) rather than padded
        return NamedSharding(mesh, P(*[a if a and x.shape[i] % mesh.shape[a] == 0 else None for i, a in enumerate(axes)]))
    return jax.tree_util.tree_map_with_path(spec, params)


def like_shardings(tree, params, p_shard, mesh):
    """Optimizer state leaves shaped like a parameter are sharded like it; the rest are replicated."""
    by_shape = {x.shape: s for x, s in zip(jax.tree.leaves(params), jax.tree.leaves(p_shard))}
    return jax.tree.map(lambda x: by_shape.get(x.shape, NamedSharding(mesh, P())), tree)


# ---------------------------------------------------------------- MFU
def device_peak(cfg):
    """Dense peak FLOP/s of one device: the config's, the table's, or measured by a matmul probe (CPU)."""
    if cfg["peak_flops"]:
        return cfg["peak_flops"], "config"
    kind = jax.devices()[0].device_kind
    for name, peak in PEAKS.items():
        if name in kind:
            return peak, f"{kind} table (bf16 dense)"
    n, dt = 2048, jnp.dtype(cfg["compute_dtype"])
    a = jnp.ones((n, n), dt)
    f = jax.jit(lambda a: a @ a)
    f(a).block_until_ready()
    best = math.inf
    for _ in range(5):
        t = time.perf_counter()
        f(a).block_until_ready()
        best = min(best, time.perf_counter() - t)
    return 2 * n**3 / best, f"measured {n}x{n} {dt} matmul on {kind}"


# ---------------------------------------------------------------- training
def make_train_step(cfg, mcfg, opt, shard):
    loss = partial(model.loss_fn, cfg=mcfg)

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
    losses = []
    for x in data.eval_batches(val, cfg["eval_batch_size"], cfg["seq_len"], cfg["eval_tokens"],
                               jax.process_index(), jax.process_count()):
        losses.append(eval_loss(params, jax.make_array_from_process_local_data(batch_sharding, x)))
    return float(np.mean(jax.device_get(losses)))


def main(argv):
    cfg = parse_config(argv)
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
    mesh = make_mesh(cfg)
    if B % mesh.shape["data"]:
        fail(f"batch_size={B} must be divisible by the {mesh.shape['data']}-way data axis of the mesh")
    n_data = mesh.shape["data"]
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
    shard = {"params": param_shardings(abs_params, mesh)}
    shard["opt"] = like_shardings(abs_opt, abs_params, shard["params"], mesh)
    shard["batch"] = NamedSharding(mesh, P("data", None))
    peak, peak_src = device_peak(cfg)
    flops_step = cfg["flops_per_token"] * tokens_per_step
    hours = n_steps * flops_step / (peak * jax.device_count()) / 3600
    log(f"params: {counts['nonembed']:,} non-embedding, {counts['active']:,} active, {counts['total']:,} total; "
        f"optimizer state {optim.state_bytes(cfg['optimizer'], abs_params, b1) / 2**20:,.1f} MiB")
    log(f"{n_steps:,} steps x {tokens_per_step:,} tokens = {cfg['train_tokens']:,} tokens; {flops_step:.3g} FLOPs/step; "
        f"peak {peak:.3g} FLOP/s/device ({peak_src}); >= {hours:.2f} h at 100% MFU on {jax.device_count()} device(s)")
    if cfg["dry_run"]:
        return cfg
    if hours > cfg["max_hours"] and not cfg["force"]:
        fail(f"this run needs >= {hours:,.1f} h at 100% MFU on {jax.device_count()} x {jax.devices()[0].device_kind}; "
             f"pass --force=True to train anyway, or --dry_run=True to see the plan")

    tdata = load_data(cfg)
    os.makedirs(cfg["out_dir"], exist_ok=True)
    if master:
        with open(os.path.join(cfg["out_dir"], "config.json"), "w") as f:
            json.dump(cfg, f, indent=1)
    params = jax.jit(partial(model.init, mcfg), out_shardings=shard["params"])(key)
    opt_state = jax.jit(opt.init, out_shardings=shard["opt"])(params)
    step0, metrics_path = 0, os.path.join(cfg["out_dir"], "metrics.jsonl")
    if cfg["init_from"] != "scratch":
        path = (checkpoint.latest_valid(cfg["out_dir"], log) if cfg["init_from"] == "resume" else cfg["init_from"])
        if path is None:
            fail(f"init_from='resume' but {cfg['out_dir']} holds no valid checkpoint")
        try:
            trees, meta = checkpoint.load(path, {"params": params, "opt": opt_state}, shard)
        except checkpoint.CheckpointError as e:
            fail(str(e))
        params = trees["params"]
        if cfg["init_from"] == "resume":
            opt_state, step0 = trees["opt"], meta["step"]
        log(f"loaded {path} (step {meta['step']})")
    elif master and os.path.exists(metrics_path):
        os.remove(metrics_path)

    log(f"compiling the train step for {jax.device_count()} device(s), mesh {dict(mesh.shape)} ...")
    t0 = time.perf_counter()
    batch_abs = jax.ShapeDtypeStruct((B, T), jnp.int32, sharding=shard["batch"])
    train_step = make_train_step(cfg, mcfg, opt, shard).lower(params, opt_state, batch_abs, np.int32(0)).compile()
    eval_loss = jax.jit(partial(model.loss_fn, cfg=mcfg))
    log(f"compiled in {time.perf_counter() - t0:.1f} s")

    def get(step):
        x = data.get_batch(tdata.train, B, T, cfg["seed"], step, jax.process_index(), jax.process_count())
        return jax.make_array_from_process_local_data(shard["batch"], x)

    def record(m):
        if master:
            with open(metrics_path, "a") as f:
                f.write(json.dumps(m) + "\n")

    def save(step):
        checkpoint.save(cfg["out_dir"], step, {"params": params, "opt": opt_state},
                        {"tokens": step * tokens_per_step, "config": cfg}, cfg["keep_ckpts"])

    every = lambda n: max(1, n // tokens_per_step) if n else 0  # token interval -> steps
    log_every, eval_every, ckpt_every = every(cfg["log_every"]), every(cfg["eval_every"]), every(cfg["ckpt_every"])
    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append("SIGTERM"))
    bar = tqdm(range(step0, n_steps), initial=step0, total=n_steps, disable=not master, unit="step",
               dynamic_ncols=True, mininterval=1.0)
    pending, t_last, step_last, batch = [], time.perf_counter(), step0, get(step0)
    for step in bar:
        params, opt_state, loss = train_step(params, opt_state, batch, np.int32(step))
        pending.append(loss)
        if step + 1 < n_steps:
            batch = get(step + 1)  # fetched while the device computes (async dispatch)
        done = step + 1
        if done % log_every == 0 or done == n_steps or stop:
            losses = np.asarray(jax.device_get(pending))
            if not np.all(np.isfinite(losses)):
                bad = done - len(losses) + int(np.argmin(np.isfinite(losses)))
                fail(f"loss is {losses[~np.isfinite(losses)][0]} at step {bad}; stopping (last good checkpoint kept)")
            dt = time.perf_counter() - t_last
            tps = (done - step_last) * tokens_per_step / dt
            mfu = tps * cfg["flops_per_token"] / (peak * jax.device_count())
            record(dict(step=done, tokens=done * tokens_per_step, train_loss=float(losses.mean()),
                        tokens_per_s=tps, mfu=mfu, lr=float(sched(done - 1))))
            bar.set_postfix(loss=f"{losses.mean():.3f}", tok_s=f"{tps:,.0f}", mfu=f"{mfu:.1%}")
            pending, t_last, step_last = [], time.perf_counter(), done
        if (eval_every and done % eval_every == 0) or done == n_steps:
            val = evaluate(eval_loss, params, tdata.val, cfg, shard["batch"])
            record(dict(step=done, tokens=done * tokens_per_step, val_loss=val))
            bar.write(f"step {done}: val loss {val:.4f}") if master else None
            t_last = time.perf_counter()  # keep eval time out of tokens/s
        if (ckpt_every and done % ckpt_every == 0) or done == n_steps or stop:
            save(done)
            t_last = time.perf_counter()
        if stop:
            log(f"{stop[0]}: checkpoint written at step {done}; resume with --init_from=resume")
            break
    bar.close()
    return cfg


if __name__ == "__main__":
    main(sys.argv[1:])
