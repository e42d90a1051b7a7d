"""Train a language model: `python train.py [config.py] [--key=value ...]` (keys: config.DEFAULTS).

Everything is counted in tokens (budgets, eval/log/checkpoint intervals, optimizer half-lives), as the
paper argues hyperparameters should be. Runs on CPU, GPU or a TPU pod with the same code: the parameters
are sharded over a (data, model) mesh and XLA (GSPMD) inserts the collectives (sharding.py).

main reads as the run: set up (a checked config, the mesh, the plan, the data) -> restore or init -> the
training loop (step, log, eval, noise scale, checkpoint, stop) -> finish.
"""
import hashlib
import json
import math
import os
import shutil
import signal
import sys
import time
from functools import partial
from types import SimpleNamespace

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import multihost_utils
from tqdm import tqdm

import checkpoint
import common
import config
import data
import instruct
import kernels
import lora
import model
import mup
import noise_scale
import optim
import plan
import sample
import sharding
import step as steps
from common import fail


def derive(cfg, mcfg, n_data, packed=None):
    """The run's derived record (saved as run.json beside config.json, never mixed into it): steps, the
    optimizer's resolved settings, parameter counts, FLOPs per token, the eval batch. packed: instruction
    data's (train, val) rows (instruct.py), whose budget train_tokens 0 is one epoch."""
    counts = model.count_params(mcfg)
    B, T, A = cfg["batch_size"], cfg["seq_len"], cfg["grad_accum"]
    if 0 < cfg["train_tokens"] < B * T:
        fail(f"train_tokens={cfg['train_tokens']:,} is less than one step of batch_size x seq_len = {B * T:,} tokens")
    epoch = packed and len(packed[0].tokens) * T  # fine-tuning: one pass over the packed rows by default
    n_steps = (cfg["train_tokens"] or epoch or 20 * counts["active"]) // (B * T)
    if (B // A) % n_data:  # each micro-batch is split over the data axis
        fail(f"the micro-batch batch_size / grad_accum = {B // A} must be divisible by the {n_data}-way data axis "
             "of the mesh")
    eval_B = cfg["eval_batch_size"] or math.ceil(max(8, B // A) / n_data) * n_data
    if packed and not cfg["eval_batch_size"]:  # a small held-out file: at most its rows, in whole data shards
        eval_B = max(n_data, min(eval_B, len(packed[1].tokens) // n_data * n_data))
    if eval_B % n_data:
        fail(f"eval_batch_size={eval_B} must be divisible by the {n_data}-way data axis of the mesh")
    noise_b = max(1, B // 2)  # the noise scale's two batch sizes: b and 2b sequences of their own draw
    if cfg["noise_every"] and (packed or cfg["lora_rank"]):
        fail("noise_every measures pre-training gradients: not with instruction data or LoRA")
    if cfg["noise_every"] and noise_b % n_data:
        fail(f"noise_every: its half batch max(1, batch_size // 2) = {noise_b} must be divisible by the {n_data}-way "
             "data axis of the mesh")
    try:
        hp = optim.hyperparams(cfg, B * T)
    except ValueError as e:
        fail(str(e))
    half_life = lambda b: optim.beta_to_half_life(b, B * T)
    if "muon_b1" in hp:
        hp["muon_t1"] = half_life(hp["muon_b1"])
    return dict(tokens_per_step=B * T, n_steps=n_steps, train_tokens=n_steps * B * T, **hp,
                t1=half_life(hp["b1"]), t2=half_life(hp["b2"]), eval_batch_size=eval_B, noise_batch=noise_b,
                **{f"params_{k}": v for k, v in counts.items()}, flops_per_token=model.flops_per_token(mcfg))


def set_up(argv):
    """Everything the user typed, checked before anything is printed or allocated: the config, the mesh, the
    run's derived record, the optimizer, where the run starts; then printed, with the train step decided."""
    cfg = config.parse(argv)
    sharding.init_distributed(cfg)
    mcfg, mesh = config.model_config(cfg), sharding.make_mesh(cfg)
    log = print if jax.process_index() == 0 else (lambda *a, **k: None)
    packed = instruct.from_config(cfg, log) if instruct.is_instruct(cfg["data"]) else None  # fine-tuning data (small)
    run = derive(cfg, mcfg, mesh.shape["data"], packed)
    opt, sched = optim.from_config(cfg, run, run["n_steps"])
    plan.check(cfg)
    if cfg["wandb_project"]:
        try:
            import wandb  # noqa: F401 (an optional extra)
        except ImportError:
            fail(f"wandb_project={cfg['wandb_project']!r} needs wandb: pip install -e '.[wandb]'")
    start, meta, stale = None, None, []
    if not cfg["dry_run"]:  # a refused start (in use, not writable, bad checkpoint, missing data): one line, here
        if jax.process_index() == 0:  # one run per directory, for this process's life (the OS releases it)
            common.lock(os.path.join(cfg["out_dir"], ".lock"), f"run directory {cfg['out_dir']!r}")
        start, meta, stale = checkpoint.start_point(cfg, run, log)
        data.check(cfg["data"], cfg["data_dir"], cfg["vocab_size"])  # missing, empty or malformed: one line
    for k, v in cfg.items():
        log(f"{k:>19} = {v!r}")
    for k, v in run.items():
        log(f"{k:>19} : {v:,}" if isinstance(v, int) else f"{k:>19} : {v:.6g}")
    log(f"optimizer {cfg['optimizer']}: lr {run['lr']:g}, b1 {run['b1']:.6g} (t1 {run['t1']:,.0f} tokens), "
        f"b2 {run['b2']:.6g} (t2 {run['t2']:,.0f} tokens), {run['tokens_per_step']} tokens/step" +
        (f"; the blocks: muon_lr {run['muon_lr']:g}, muon_b1 {run['muon_b1']:.6g} (muon_t1 {run['muon_t1']:,.0f} "
         "tokens), the embeddings: AdamW with the above" if "muon_lr" in run else ""))
    if cfg["parametrization"] == "mup" and not cfg["lora_rank"]:  # each weight group's init and peak LR (mup.py)
        for line in mup.describe(cfg, run["lr"], run.get("muon_lr")):
            log(line)
    why = steps.unfused_reason(cfg, mcfg, opt)  # decided once: the plan, the dry run and the run all use it
    log("train step: fused, each layer updated inside the backward pass (fused.py), "
        + ("its forward recomputed (remat)" if mcfg.remat else "its forward's residuals kept") if why is None else
        f"train step: unfused, the whole gradient first ({why})")
    return SimpleNamespace(cfg=cfg, mcfg=mcfg, mesh=mesh, log=log, packed=packed, run=run, opt=opt, sched=sched,
                           start=start, meta=meta, stale=stale, fused=why is None, master=jax.process_index() == 0)


def make_plan(job):
    """Abstract shapes and shardings (nothing is allocated until we know it fits) and the printed plan; adds
    job.abs (params, opt, lora), job.shard, job.lower(shard, **kw) -> the lowered train step, job.report."""
    cfg, key = job.cfg, jax.random.PRNGKey(job.cfg["seed"])
    abs_params = jax.eval_shape(partial(model.init, job.mcfg), key)
    abs_lora = jax.eval_shape(partial(lora.init, abs_params, cfg), key) if cfg["lora_rank"] else None
    abs_opt = jax.eval_shape(job.opt.init, abs_lora or abs_params)  # LoRA: the optimizer sees only the adapters
    job.abs = SimpleNamespace(params=abs_params, opt=abs_opt, lora=abs_lora)
    job.shard = sharding.shardings(abs_params, abs_opt, job.mesh, abs_lora)
    job.report = plan.report(cfg, job.run, job.mcfg, abs_params, abs_opt, job.shard, job.log, abs_lora, job.fused)
    if cfg["lora_rank"]:
        job.log(f"LoRA: {lora.count(abs_params, cfg):,} trained numbers (rank {cfg['lora_rank']}, scale "
                f"{lora.scale(cfg):g}, on {cfg['lora_targets']}); the {job.run['params_total']:,} weights are frozen")
    job.lower = lambda shard, **kw: steps.lower_train_step(cfg, job.mcfg, job.opt, shard, abs_params, abs_opt,
                                                           packed=bool(job.packed), abs_lora=abs_lora,
                                                           fused=job.fused, **kw)
    if job.report["hours"] > cfg["max_hours"] and not cfg["force"] and not cfg["dry_run"]:
        fail(f"this run needs >= {job.report['hours']:,.1f} h at 100% MFU on {jax.device_count()} x "
             f"{jax.devices()[0].device_kind}; pass --force=True to train anyway, or --dry_run=True to see the plan")


def dry_run(job):
    """--dry_run: build the sharded step for real (for the planned devices), short of running it."""
    lower_on = lambda m, **kw: job.lower(sharding.shardings(job.abs.params, job.abs.opt, m, job.abs.lora), **kw)
    return dict(job.run, config=job.cfg, plan=plan.compile_step(job.report, job.cfg, job.mesh, lower_on, job.log))


def load_data(job):
    """(train, val) splits behind one batch interface (data.Stream, instruct.Packed), checked to hold a batch.
    Token data: process 0 prepares it (tokenizing on first use) while the other hosts wait, then they read the
    same files; a streamed source is cut at what the run will read."""
    cfg, T = job.cfg, job.cfg["seq_len"]
    if job.packed:
        train, val = job.packed
    else:
        spec, d, tok = cfg["data"], cfg["data_dir"], cfg["tokenizer"]
        cap = int(cfg["train_tokens"] * 1.05) + cfg["eval_tokens"] if spec in data.STREAMED else None  # +5% held out
        load = lambda: data.load(data.prepare(spec, d, max_tokens=cap, tokenizer=tok) if cap else spec, d,
                                 cfg["vocab_size"], tok)
        try:
            tdata = load() if jax.process_index() == 0 else None
            if jax.process_count() > 1:
                multihost_utils.sync_global_devices("data prepared")
            train, val = (tdata if tdata is not None else load()).streams(T)
        except (OSError, ValueError) as e:
            fail(str(e))
    if train.n_tokens < T:
        fail(f"the train split of {cfg['data']!r} ({train.n_tokens:,} tokens) holds no sequence of {T} tokens")
    if val.n_tokens < job.run["eval_batch_size"] * T:  # found now, not at the first eval
        fail(f"the val split of {cfg['data']!r} ({val.n_tokens:,} tokens) is shorter than one eval batch of "
             f"{job.run['eval_batch_size']} x {T} tokens; lower eval_batch_size or seq_len")
    return train, val


def restore_or_init(job, n_train):
    """The run's state: weights (lora.Split), optimizer state and history, from its checkpoint (a resumed run
    continues bit for bit) or new (scratch, or a checkpoint's weights with a fresh optimizer at step 0).
    The history is the checkpoint's: metrics.jsonl is cut back to it (a killed run may have logged past its last
    checkpoint), and the losses of a half-done log window carry over, so the resumed log is the uninterrupted one."""
    cfg, meta, start, key = job.cfg, job.meta, job.start, jax.random.PRNGKey(job.cfg["seed"])
    resume, shard = cfg["init_from"] == "resume", job.shard
    if job.stale and job.master:
        job.log(f"overwrite: deleting the {len(job.stale)} checkpoint(s) of the previous run in {cfg['out_dir']}")
        for p in job.stale:
            shutil.rmtree(p)
    if resume and meta["data"]["train_tokens"] != n_train and not cfg["allow_budget_change"]:
        fail(f"cannot resume {start}: its data had {meta['data']['train_tokens']:,} training tokens, {cfg['data']!r} "
             f"has {n_train:,}, so the batches after step {meta['step']:,} would differ")
    os.makedirs(cfg["out_dir"], exist_ok=True)
    if job.master:
        common.write_json(os.path.join(cfg["out_dir"], "config.json"), cfg)
        common.write_json(os.path.join(cfg["out_dir"], "run.json"), job.run)
    try:  # only the arrays the run uses are created: a resumed run does not also initialize a model
        if resume:
            like = {"params": job.abs.params, "opt": job.abs.opt, **({"lora": job.abs.lora} if job.abs.lora else {})}
            trees = checkpoint.load(start, like, shard)[0]
        else:
            params = (checkpoint.load_weights(start, meta, job.mcfg, key, shard) if start else
                      jax.jit(partial(model.init, job.mcfg), out_shardings=shard["params"])(key))
            trees = {"params": params}
            if job.abs.lora:
                trees["lora"] = jax.jit(lambda p, k: lora.init(p, cfg, k), out_shardings=shard["lora"])(
                    params, jax.random.fold_in(key, 1))
            trees["opt"] = jax.jit(job.opt.init, out_shardings=shard["opt"])(trees.get("lora", params))
    except checkpoint.CheckpointError as e:
        fail(str(e))
    state = SimpleNamespace(split=lora.Split.of(trees, cfg), opt=trees["opt"], step0=meta["step"] if resume else 0,
                            history=meta["metrics"] if resume else [], noise=noise_scale.NoiseScale(),
                            pending=[np.float32(x) for x in meta["pending_losses"]] if resume else [])
    if resume:  # the EMAs of |G|² and tr(Σ) continue where the checkpoint left them
        vars(state.noise).update(meta.get("noise", {}))
    if job.master:
        common.write_json(os.path.join(cfg["out_dir"], "metrics.jsonl"), state.history, lines=True)
    state.track = tracker(job)
    if start:
        job.log(f"{'resuming from' if resume else 'weights from'} {start} (step {meta['step']:,})")
    return state


def tracker(job):
    """wandb_project: the rows metrics.jsonl gets, also to Weights & Biases, in a run named after out_dir whose id
    is out_dir's, so a resumed run continues it. None when off (or on another host than process 0)."""
    if not job.cfg["wandb_project"] or not job.master:
        return None
    import wandb
    out = os.path.abspath(job.cfg["out_dir"])
    return wandb.init(project=job.cfg["wandb_project"], name=os.path.basename(out), resume="allow",
                      id=hashlib.sha1(out.encode()).hexdigest()[:16], config=dict(job.cfg, **job.run))


def compile_steps(job, step0):
    """The train step for the calls this run makes (k steps per call, at most a log window's; the last call
    takes the remainder), the eval loss and the noise-scale norms; adds job.k."""
    cfg, n_steps, t0 = job.cfg, job.run["n_steps"], time.perf_counter()
    job.log(f"compiling the train step for {jax.device_count()} device(s), mesh {dict(job.mesh.shape)} ...")
    job.k = k = min(cfg["steps_per_call"], max(1, cfg["log_every"] // job.run["tokens_per_step"]))
    calls = {min(k, n_steps - step0), (n_steps - step0) % k or k}
    out = SimpleNamespace(train={n: job.lower(job.shard, k=n).compile() for n in calls if n > 0},
                          eval_loss=steps.make_eval_loss(cfg, job.mcfg, job.shard),
                          logit_stats=steps.make_logit_stats(job.mcfg, job.shard),
                          noise_norms=steps.make_noise_norms(job.mcfg, job.shard) if cfg["noise_every"] else None)
    job.log(f"compiled in {time.perf_counter() - t0:.1f} s")
    return out


def batch_reader(job, src):
    """get(s, n): the global batch of steps s .. s+n-1 (n > 1: stacked [n, B, T]), of which this process reads
    only the rows its devices hold."""
    B, shard = job.cfg["batch_size"], job.shard["batch"]
    share = sharding.data_share(shard, B)
    rows = lambda s: src.batch(B, job.cfg["seed"], s, *share)  # [b, T]: this process's rows

    def get(s, n):
        x = rows(s) if n == 1 else jax.tree.map(lambda *xs: np.stack(xs), *[rows(s + j) for j in range(n)])
        return sharding.global_batch(x, shard, B)
    return get


def evaluate(job, fns, split, val):
    """The eval row: the mean loss over the first eval_tokens of the validation split (the same batches every
    time; instruction data: its held-out rows, each batch's mean over its completion tokens), what it means
    (bits per byte), and the exact-match accuracy of greedy answers where the split has prompts."""
    cfg, B = job.cfg, job.run["eval_batch_size"]
    batches = val.eval_batches(B, cfg["eval_tokens"], *sharding.data_share(job.shard["batch"], B))
    losses = [fns.eval_loss(split.trained, sharding.global_batch(x, job.shard["batch"], B), *split.frozen)
              for x in batches]
    loss = float(np.mean(jax.device_get(losses)))
    row = dict(val_loss=loss, **val.scores(loss))
    if val.examples and cfg["eval_examples"]:
        row["val_accuracy"] = sample.accuracy(split.weights(), job.mcfg, val, cfg, B)
    return row


def eval_line(row):
    return (f"step {row['step']}: val loss {row['val_loss']:.4f}" +
            (f", {row['val_bpb']:.3f} bits per byte" if "val_bpb" in row else "") +
            (f", exact match {row['val_accuracy']:.1%}" if "val_accuracy" in row else ""))


class Interrupt:
    """SIGINT / SIGTERM: finish this step, checkpoint, exit 0; a second Ctrl-C interrupts at once."""

    def __init__(self):
        self.name = None
        signal.signal(signal.SIGTERM, self.handle)
        signal.signal(signal.SIGINT, self.handle)

    def handle(self, sig, frame):
        self.name = signal.Signals(sig).name
        signal.signal(signal.SIGINT, signal.default_int_handler)

    def agreed(self, at_log):
        """All hosts must stop at the same step: they agree at log steps (an all-gather, so a sync)."""
        if jax.process_count() == 1:
            return self.name is not None
        return at_log and bool(multihost_utils.process_allgather(np.int32(self.name is not None)).any())


SUSTAINED = 8  # steps: a blow-up is the mean train loss over at least this many


def check_loss(losses, done, job, history=None):
    """The one divergence rule (the sweep runner relies on its exit status): losses of the len(losses) steps
    ending at step `done` stop the run, with status DIVERGED and nothing saved, when one is not finite, or when the
    mean of at least the last SUSTAINED steps (this log window and those before it) is above ln V (a uniform
    guess) and above the first window's (an init may start above ln V) once past the warm-up and the first fifth
    of the run (a young model may spike and recover). history: the run's metrics rows, for a log window (None:
    the half-done window at a checkpoint, checked for finiteness)."""
    def stop(why):
        last = checkpoint.list_checkpoints(job.cfg["out_dir"])
        fail(f"{why}; stopped without saving (last good checkpoint: {last[-1][1] if last else 'none'})", diverged=True)
    if not np.all(np.isfinite(losses)):
        i = int(np.argmin(np.isfinite(losses)))
        stop(f"loss is {losses[i]} at step {done - len(losses) + i + 1:,}")
    rows = [(m["step"], m["train_loss"]) for m in history or [] if "train_loss" in m]
    cap = max(math.log(job.mcfg.vocab_size), rows[0][1] if rows else math.inf)
    # sustained: the mean over this window and the ones before it that make SUSTAINED steps (at batch 256 a window
    # of 65k tokens is 2 steps, and a large batch's loss may oscillate for a few steps and recover)
    n, total = len(losses), float(np.sum(losses))
    for (s0, _), (s1, loss) in zip(reversed([(0, None)] + rows[:-1]), reversed(rows)):
        if n >= SUSTAINED:
            break
        n, total = n + s1 - s0, total + (s1 - s0) * loss
    if history is not None and len(losses) and done > max(job.cfg["warmup"], 0.2) * job.run["n_steps"] \
            and n >= SUSTAINED and total / n > cap:
        stop(f"the train loss {total / n:.4g} of steps {done - n + 1:,}-{done:,} is above ln V = "
             f"{math.log(job.mcfg.vocab_size):.4g} (a uniform guess) and the first log window's past the warm-up: "
             "diverged")


def flat(pending):
    """The losses of the steps since the last log, one per step: scalars, and [n] from n steps per call."""
    return np.concatenate([np.ravel(x) for x in jax.device_get(pending)]).astype(np.float32) if pending else \
        np.zeros(0, np.float32)


_all_finite = jax.jit(lambda t: jnp.all(jnp.stack([jnp.isfinite(x).all() for x in jax.tree.leaves(t)])))


def train_loop(job, fns, state, train, val):
    """Train from state.step0 to the budget's end, or to a stop signal; returns the last step done."""
    cfg, run, n_steps, k, tps = job.cfg, job.run, job.run["n_steps"], job.k, job.run["tokens_per_step"]
    every = lambda n: max(1, n // tps) if n else 0  # token interval -> steps
    log_every, eval_every, ckpt_every, noise_every = (every(cfg[f"{x}_every"]) for x in ("log", "eval", "ckpt",
                                                                                         "noise"))
    get, split, metrics_path = batch_reader(job, train), state.split, os.path.join(cfg["out_dir"], "metrics.jsonl")
    if state.step0 >= n_steps:
        job.log(f"{job.start} already ends the run ({n_steps:,} steps); nothing to train")
    interrupt, meter = Interrupt(), plan.Meter(job.report, run["flops_per_token"], tps, state.step0,
                                               job.mcfg.compute_dtype)
    bar = tqdm(initial=state.step0, total=n_steps, disable=not job.master, unit="step", dynamic_ncols=True,
               mininterval=1.0)
    n = min(k, n_steps - state.step0)
    batch, done, halt = get(state.step0, n) if n > 0 else None, state.step0, False
    try:  # the bar is closed before an error line, which stays the last line printed
        for i in range(state.step0, n_steps, k):
            # 1. n optimizer steps (one, or steps_per_call) on B sequences each; the host runs ahead while the
            #    device computes (async dispatch)
            split.trained, state.opt, loss = fns.train[n](split.trained, state.opt, batch, np.int32(i), *split.frozen)
            trained_on = batch
            state.pending.append(loss)
            done = i + n
            bar.update(n)
            hit = lambda every: every and done // every > i // every  # an interval's step was among these n
            at, rows = dict(step=done, tokens=done * tps), []
            # 2. the next batch, read while the device works
            if done < n_steps:
                n = min(k, n_steps - done)
                batch = get(done, n)
            # 3. a log window ends: mean train loss, tokens/s and MFU since the last (not on a signal: log
            #    windows stay those of the uninterrupted run)
            if hit(log_every) or done == n_steps:
                losses, state.pending = flat(state.pending), []
                check_loss(losses, done, job, state.history)
                window = meter.window(done, n_steps, split.trained)
                with meter.paused(split.trained):  # the largest attention and output logits: a forward pass, untimed
                    watch = jax.device_get(fns.logit_stats(split.weights(), trained_on))
                rows.append(dict(at, train_loss=float(losses.mean()), **window, lr=float(job.sched(done - 1)),
                                 **{k: float(v) for k, v in watch.items()}))
                bar.set_postfix(loss=f"{rows[-1]['train_loss']:.3f}", tok_s=f"{rows[-1]['tokens_per_s']:,.0f}",
                                mfu=f"{rows[-1]['mfu']:.1%}")
            # 4. eval on the held-out split, at its interval and at the end
            if hit(eval_every) or done == n_steps:
                with meter.paused(split.trained):
                    rows.append(dict(at, **evaluate(job, fns, split, val)))
                bar.write(eval_line(rows[-1])) if job.master else None
            # 5. the gradient noise scale, on 2b sequences of its own (a stream apart from the training batches)
            if hit(noise_every):
                with meter.paused(split.trained):
                    rows.append(dict(at, **measure_noise(job, fns, state, train, done)))
            state.history += rows  # this step's metrics lines, also appended to metrics.jsonl (whole lines only)
            if job.master and rows:
                common.append_lines(metrics_path, [json.dumps(m) for m in rows])
                for m in rows if state.track else ():
                    state.track.log(m, step=m["step"])
            # 6. checkpoint at its interval, at the end, or when asked to stop; 7. stop
            halt = interrupt.agreed(hit(log_every))
            if hit(ckpt_every) or done == n_steps or halt:
                with meter.paused(split.trained):
                    save(job, state, done, train.n_tokens)
            if halt:
                job.log(f"{interrupt.name or 'signal on another host'}: checkpoint written at step {done:,}; resume "
                        f"with: python train.py --out_dir={cfg['out_dir']} --init_from=resume")
                break
    finally:
        bar.close()
    return done, meter, halt


def measure_noise(job, fns, state, train, done):
    """One gradient-noise-scale measurement (noise_scale.py) after step `done`, on 2b sequences drawn with
    seed + noise_scale.SEED: updates the EMAs in state.noise and returns the metrics row's fields."""
    t0, b, shard, noise = time.perf_counter(), job.run["noise_batch"], job.shard["batch"], state.noise
    x = train.batch(2 * b, job.cfg["seed"] + noise_scale.SEED, done, *sharding.data_share(shard, 2 * b))
    small, big = map(float, fns.noise_norms(state.split.trained, sharding.global_batch(x, shard, 2 * b)))
    G2, S = noise_scale.estimate(small, big, b, 2 * b)
    noise.update(G2, S)
    return dict(grad_sq_small=small, grad_sq_big=big, noise_G2=G2, noise_trS=S, b_simple=noise.b_simple,
                b_simple_tokens=noise.b_simple * job.cfg["seq_len"], noise_seconds=time.perf_counter() - t0)


def save(job, state, done, n_train):
    """Checkpoint after step `done`: the weights and optimizer state, and what an exact resume needs
    (the metrics so far, the losses of the half-done log window, the data and random state)."""
    cfg, losses = job.cfg, flat(state.pending)
    trees = {**state.split.trees(), "opt": state.opt}
    check_loss(losses, done, job)  # the half-done window's
    if not _all_finite(trees):  # a finite loss can precede non-finite weights
        fail(f"parameters or optimizer state are not finite after step {done:,}; stopped without saving",
             diverged=True)
    # the next batch is batch(seed, step) and the bf16 rounding noise rounding.step_key(seed, step): the random
    # state is (seed, step)
    meta = dict(tokens=done * job.run["tokens_per_step"], config=cfg, run=job.run, metrics=state.history,
                pending_losses=losses.tolist(), rng=dict(seed=cfg["seed"], step=done),
                data=dict(spec=cfg["data"], train_tokens=n_train, seed=cfg["seed"], next_step=done),
                noise=vars(state.noise), code_version=checkpoint.code_version())
    try:
        checkpoint.save(cfg["out_dir"], done, trees, meta, cfg["keep_ckpts"])
    except OSError as e:
        fail(f"could not write the checkpoint of step {done:,}: {e}")


def finish(job, state, done, meter):
    """The run's speed and memory (summary.json, for sweep.py), the noise scale's advice, and a LoRA run's
    weights merged into a normal run in <out_dir>/merged (sample.py and a later --init_from read it)."""
    cfg, ended = job.cfg, done == job.run["n_steps"] > state.step0
    if summary := meter.summary():
        job.log(summary)
    if job.master and ended:
        mem, kind = plan.peak_memory()  # of this process
        common.write_json(os.path.join(cfg["out_dir"], "summary.json"), dict(
            meter.totals() or {}, peak_memory_bytes=mem, memory=kind, steps_this_process=done - state.step0))
    if state.track:
        state.track.finish()
    if state.noise.n:
        job.log(noise_scale.advice(state.noise.b_simple, cfg["batch_size"], cfg["seq_len"]))
    if state.split.base is not None and ended:
        new = lora.merged_config(cfg)
        os.makedirs(new["out_dir"], exist_ok=True)
        if job.master:
            common.write_json(os.path.join(new["out_dir"], "config.json"), new)
        try:
            checkpoint.save(new["out_dir"], done, {"params": state.split.weights()},
                            dict(config=new, run=job.run, merged_from=cfg["out_dir"]), keep=1)
        except OSError as e:
            fail(f"could not write the merged weights to {new['out_dir']}: {e}")
        job.log(f"LoRA: the adapters merged into the weights, a normal run in {new['out_dir']}")


def main(argv):
    # -- set up: the checked config, the mesh and the plan (a dry run stops there), then the data
    kernels.keep_freed_memory()
    job = set_up(argv)
    make_plan(job)
    if job.cfg["dry_run"]:
        return dry_run(job)
    train, val = load_data(job)
    # -- restore or init: a resumed run continues bit for bit where its checkpoint left off
    state = restore_or_init(job, train.n_tokens)
    fns = compile_steps(job, state.step0)
    # -- the training loop, then what the run leaves besides its checkpoints
    done, meter, stopped = train_loop(job, fns, state, train, val)
    if stopped:  # by a signal, after its checkpoint: not a finished run, and the exit status says so
        raise SystemExit(common.INTERRUPTED)
    finish(job, state, done, meter)
    return dict(job.run, config=job.cfg)


if __name__ == "__main__":
    try:
        main(sys.argv[1:])
    except KeyboardInterrupt:  # Ctrl-C before training started, or a second one: nothing new was saved
        print("error: interrupted; progress since the last checkpoint is lost", file=sys.stderr)
        raise SystemExit(common.INTERRUPTED)
    except common.Diverged as e:  # its own exit status: sweep.py tells a diverged run from a broken one
        print(e, file=sys.stderr)
        raise SystemExit(common.DIVERGED)
