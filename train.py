"""Train a language model: `python train.py [config.py] [--key=value ...]` (keys: config.DEFAULTS).

Everything is counted in tokens (budgets, eval/log/checkpoint intervals, optimizer half-lives), as the
paper argues hyperparameters should be. Runs on CPU, GPU or a TPU pod with the same code: the parameters
are sharded over a (data, model) mesh and XLA (GSPMD) inserts the collectives (sharding.py).
"""
import json
import math
import os
import resource
import shutil
import signal
import sys
import time
from contextlib import contextmanager
from functools import partial

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
import noise_scale
import optim
import plan
import sample
import sharding
import step as steps
from common import fail

PROBE_EVERY_S = 30  # on CPU the matmul peak is measured again at the first log this long after the last


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


def load_data(cfg):
    """Token data for the run. Process 0 prepares it (tokenizing on first use) while the other hosts
    wait, then they read the same files. A streamed source is cut at what the run will read."""
    spec, d = cfg["data"], cfg["data_dir"]
    cap = int(cfg["train_tokens"] * 1.05) + cfg["eval_tokens"] if spec in data.STREAMED else None  # +5% held out
    tok = cfg["tokenizer"]
    source = lambda: data.prepare(spec, d, max_tokens=cap, tokenizer=tok) if cap else spec
    load = lambda: data.load(source(), d, cfg["vocab_size"], tok)
    try:
        tdata = load() if jax.process_index() == 0 else None
        if jax.process_count() > 1:
            multihost_utils.sync_global_devices("data prepared")
        return tdata if tdata is not None else load()
    except (OSError, ValueError) as e:
        fail(str(e))


def evaluate(eval_loss, model_args, val, cfg, B, batch_sharding):
    """Mean loss over the first eval_tokens of the validation split (the same batches every time); of
    instruction data (instruct.Packed), over its held-out rows, each batch's mean over its completion tokens."""
    share = sharding.data_share(batch_sharding, B)
    batches = (instruct.eval_batches(val, B, cfg["eval_tokens"], *share) if isinstance(val, instruct.Packed) else
               data.eval_batches(val, B, cfg["seq_len"], cfg["eval_tokens"], *share))
    losses = [eval_loss(*model_args(sharding.global_batch(x, batch_sharding, B))) for x in batches]
    return float(np.mean(jax.device_get(losses)))


class Meter:
    """Tokens/s and MFU of training alone: compilation, eval, checkpoints and peak probes are excluded.
    On a CPU the matmul peak drifts, so it is probed again every PROBE_EVERY_S and each log window's MFU
    is against the better of the probes before and after it. The summary leaves out the first window
    (the first steps touch their memory for the first time and run ~1.5x slower on CPU)."""

    def __init__(self, report, flops_per_token, tokens_per_step, step0, compute_dtype):
        self.peak, self.probing, self.dtype = report["peak"], report["measured"], compute_dtype
        self.flops_per_token, self.tokens_per_step, self.step0 = flops_per_token, tokens_per_step, step0
        self.t_last = self.t_probe = time.perf_counter()
        self.step_last, self.seconds, self.tokens, self.peak_seconds, self.skipped = step0, 0.0, 0, 0.0, False

    def window(self, done, n_steps, params):
        """Speed of the steps since the last window, which ended at step `done` (their losses are fetched)."""
        dt = time.perf_counter() - self.t_last
        tokens = (done - self.step_last) * self.tokens_per_step
        peak = self.peak
        if self.probing and time.perf_counter() - self.t_probe > PROBE_EVERY_S:
            jax.block_until_ready(params)
            p = plan.probe_peak(self.dtype, 3)
            peak, self.peak, self.t_probe = max(self.peak, p), p, time.perf_counter()
        if self.step_last == self.step0 and done < n_steps:
            self.skipped = True  # the warm-up window
        else:
            self.seconds, self.tokens = self.seconds + dt, self.tokens + tokens
            self.peak_seconds += dt * peak
        self.t_last, self.step_last = time.perf_counter(), done
        return dict(tokens_per_s=tokens / dt, mfu=tokens / dt * self.flops_per_token / (peak * jax.device_count()),
                    peak_flops=peak)

    @contextmanager
    def paused(self, params):
        """Time spent inside (eval, checkpoint) is not training; the steps still in flight are."""
        jax.block_until_ready(params)
        t0 = time.perf_counter()
        yield
        self.t_last += time.perf_counter() - t0

    def totals(self):
        """Tokens/s and MFU of the whole run but its warm-up window (None before a second window)."""
        if not self.seconds:
            return None
        tps, peak = self.tokens / self.seconds, self.peak_seconds / self.seconds
        return dict(tokens=self.tokens, seconds=self.seconds, tokens_per_s=tps, peak_flops=peak,
                    mfu=tps * self.flops_per_token / (peak * jax.device_count()))

    def summary(self):
        if not (t := self.totals()):
            return None
        return (f"trained {t['tokens']:,} tokens in {t['seconds']:.1f} s: {t['tokens_per_s']:,.0f} tokens/s, MFU "
                f"{t['mfu']:.1%} of the {t['peak_flops']:.3g} FLOP/s/device peak "
                f"{'measured around the log windows' if self.probing else 'above'}"
                f"{' (after the first log window: warm-up)' if self.skipped else ''}")


def peak_memory():
    """(bytes, what): the device's peak allocation where it reports one (GPU, TPU), else this process's
    peak resident set (CPU: weights, state, activations and the Python/XLA runtime)."""
    stats = jax.local_devices()[0].memory_stats() or {}
    if "peak_bytes_in_use" in stats:
        return stats["peak_bytes_in_use"], "device"
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024, "rss"  # Linux reports KiB


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


def measure_noise(noise, norms, params, train, cfg, b, batch_sharding, done):
    """One gradient-noise-scale measurement (noise_scale.py) after step `done`, on 2b sequences drawn with
    seed + noise_scale.SEED: updates the EMAs in `noise` and returns the metrics row's fields."""
    t0 = time.perf_counter()
    x = data.get_batch(train, 2 * b, cfg["seq_len"], cfg["seed"] + noise_scale.SEED, done,
                       *sharding.data_share(batch_sharding, 2 * b))
    small, big = map(float, norms(params, sharding.global_batch(x, batch_sharding, 2 * b)))
    G2, S = noise_scale.estimate(small, big, b, 2 * b)
    noise.update(G2, S)
    return dict(grad_sq_small=small, grad_sq_big=big, noise_G2=G2, noise_trS=S, b_simple=noise.b_simple,
                b_simple_tokens=noise.b_simple * cfg["seq_len"], noise_seconds=time.perf_counter() - t0)


def check_finite(losses, done, out_dir):
    """losses of the len(losses) steps ending at step `done`: stop at a NaN, keeping the last good checkpoint."""
    if not np.all(np.isfinite(losses)):
        i, last = int(np.argmin(np.isfinite(losses))), checkpoint.list_checkpoints(out_dir)
        fail(f"loss is {losses[i]} at step {done - len(losses) + i + 1:,}; stopped without saving "
             f"(last good checkpoint: {last[-1][1] if last else 'none'})", diverged=True)


def flat(pending):
    """The losses of the steps since the last log, one per step: scalars, and [n] from n steps per call."""
    return np.concatenate([np.ravel(x) for x in jax.device_get(pending)]).astype(np.float32) if pending else \
        np.zeros(0, np.float32)


_all_finite = jax.jit(lambda t: jnp.all(jnp.stack([jnp.isfinite(x).all() for x in jax.tree.leaves(t)])))


def save(cfg, run, done, trees, history, pending, n_train, noise):
    """Checkpoint after step `done`: the weights and optimizer state, and what an exact resume needs
    (the metrics so far, the losses of the half-done log window, the data and random state)."""
    losses = flat(pending)
    check_finite(losses, done, cfg["out_dir"])
    if not _all_finite(trees):  # a finite loss can precede non-finite weights
        fail(f"parameters or optimizer state are not finite after step {done:,}; stopped without saving",
             diverged=True)
    # the next batch is data.get_batch(seed, step) and the bf16 rounding noise rounding.step_key(seed, step):
    # the random state is (seed, step)
    meta = dict(tokens=done * run["tokens_per_step"], config=cfg, run=run, metrics=history,
                pending_losses=losses.tolist(), rng=dict(seed=cfg["seed"], step=done),
                data=dict(spec=cfg["data"], train_tokens=n_train, seed=cfg["seed"], next_step=done),
                noise=vars(noise), code_version=checkpoint.code_version())
    try:
        checkpoint.save(cfg["out_dir"], done, trees, meta, cfg["keep_ckpts"])
    except OSError as e:
        fail(f"could not write the checkpoint of step {done:,}: {e}")


def main(argv):
    # -- set-up: everything the user typed is checked before anything is printed or allocated
    kernels.keep_freed_memory()
    cfg = config.parse(argv)
    sharding.init_distributed(cfg)
    mcfg = config.model_config(cfg)
    mesh = sharding.make_mesh(cfg)
    master = jax.process_index() == 0
    log = print if master else (lambda *a, **k: None)
    packed = instruct.from_config(cfg, log) if instruct.is_instruct(cfg["data"]) else None  # fine-tuning data (small)
    run = derive(cfg, mcfg, mesh.shape["data"], packed)
    B, T, n_steps, tokens_per_step = cfg["batch_size"], cfg["seq_len"], run["n_steps"], run["tokens_per_step"]
    opt, sched = optim.from_config(cfg, run, n_steps)
    plan.check(cfg)
    if not cfg["dry_run"]:  # a refused start (bad checkpoint, missing data) fails here, in one line
        start, meta, stale = checkpoint.start_point(cfg, run, log)
        try:
            data.check(cfg["data"], cfg["data_dir"])
        except FileNotFoundError as e:
            fail(str(e))
    for k, v in cfg.items():
        log(f"{k:>19} = {v!r}")
    for k, v in run.items():
        log(f"{k:>19} : {v:,}" if isinstance(v, int) else f"{k:>19} : {v:.6g}")
    log(f"optimizer {cfg['optimizer']}: lr {run['lr']:g}, b1 {run['b1']:.6g} (t1 {run['t1']:,.0f} tokens), "
        f"b2 {run['b2']:.6g} (t2 {run['t2']:,.0f} tokens), {tokens_per_step} tokens/step" +
        (f"; the blocks: muon_lr {run['muon_lr']:g}, muon_b1 {run['muon_b1']:.6g} (muon_t1 {run['muon_t1']:,.0f} "
         "tokens), the embeddings: AdamW with the above" if "muon_lr" in run else ""))

    why = steps.unfused_reason(cfg, mcfg, opt)
    log("train step: fused, each layer updated inside the backward pass (fused.py)" if why is None else
        f"train step: unfused, the whole gradient first ({why})")

    # -- the plan: abstract shapes first, nothing is allocated until we know it fits (dry_run stops here)
    key = jax.random.PRNGKey(cfg["seed"])
    abs_params = jax.eval_shape(partial(model.init, mcfg), key)
    abs_lora = jax.eval_shape(partial(lora.init, abs_params, cfg), key) if cfg["lora_rank"] else None
    abs_opt = jax.eval_shape(opt.init, abs_lora or abs_params)  # LoRA: the optimizer sees only the adapters
    shard = sharding.shardings(abs_params, abs_opt, mesh, abs_lora)
    report = plan.report(cfg, run, mcfg, abs_params, abs_opt, shard, log, abs_lora)
    if cfg["lora_rank"]:
        log(f"LoRA: {lora.count(abs_params, cfg):,} trained numbers (rank {cfg['lora_rank']}, scale "
            f"{lora.scale(cfg):g}, on {cfg['lora_targets']}); the {run['params_total']:,} weights are frozen")
    lower = lambda shard, **kw: steps.lower_train_step(cfg, mcfg, opt, shard, abs_params, abs_opt, packed=bool(packed),
                                                       abs_lora=abs_lora, **kw)
    if cfg["dry_run"]:  # build the sharded step for real, short of running it
        lower_on = lambda m, **kw: lower(sharding.shardings(abs_params, abs_opt, m, abs_lora), **kw)
        return dict(run, config=cfg, plan=plan.compile_step(report, cfg, mesh, lower_on, log))
    if report["hours"] > cfg["max_hours"] and not cfg["force"]:
        fail(f"this run needs >= {report['hours']:,.1f} h at 100% MFU on {jax.device_count()} x "
             f"{jax.devices()[0].device_kind}; pass --force=True to train anyway, or --dry_run=True to see the plan")

    # -- data, state, history: a resumed run continues bit for bit where its checkpoint left off
    resume = cfg["init_from"] == "resume"
    if stale and master:
        log(f"overwrite: deleting the {len(stale)} checkpoint(s) of the previous run in {cfg['out_dir']}")
        for p in stale:
            shutil.rmtree(p)
    if packed:  # packed rows of instruction data, or a token stream
        train_src, val_src = packed
        n_train, val_tokens = train_src.tokens.size, val_src.tokens.size
    else:
        tdata = load_data(cfg)
        train_src, val_src, n_train, val_tokens = tdata.train, tdata.val, len(tdata.train), len(tdata.val)
    if n_train < T:
        fail(f"the train split of {cfg['data']!r} ({n_train:,} tokens) holds no sequence of {T} tokens")
    if val_tokens < run["eval_batch_size"] * T:  # found now, not at the first eval
        fail(f"the val split of {cfg['data']!r} ({val_tokens:,} tokens) is shorter than one eval batch of "
             f"{run['eval_batch_size']} x {T} tokens; lower eval_batch_size or seq_len")
    if resume and meta["data"]["train_tokens"] != n_train and not cfg["allow_budget_change"]:
        fail(f"cannot resume {start}: its data had {meta['data']['train_tokens']:,} training tokens, {cfg['data']!r} "
             f"has {n_train:,}, so the batches after step {meta['step']:,} would differ")
    os.makedirs(cfg["out_dir"], exist_ok=True)
    if master:
        common.write_json(os.path.join(cfg["out_dir"], "config.json"), cfg)
        common.write_json(os.path.join(cfg["out_dir"], "run.json"), run)
    try:  # only the arrays the run uses are created: a resumed run does not also initialize a model
        if resume:
            trees = checkpoint.load(start, {"params": abs_params, "opt": abs_opt,
                                            **({"lora": abs_lora} if abs_lora else {})}, shard)[0]
            params, opt_state, adapters = trees["params"], trees["opt"], trees.get("lora")
        else:  # scratch, or fine-tuning from a checkpoint's weights with a fresh optimizer at step 0
            params = (checkpoint.load_weights(start, meta, mcfg, key, shard) if start else
                      jax.jit(partial(model.init, mcfg), out_shardings=shard["params"])(key))
            adapters = jax.jit(lambda p, k: lora.init(p, cfg, k), out_shardings=shard["lora"])(
                params, jax.random.fold_in(key, 1)) if abs_lora else None
            opt_state = jax.jit(opt.init, out_shardings=shard["opt"])(params if adapters is None else adapters)
    except checkpoint.CheckpointError as e:
        fail(str(e))
    # what the optimizer trains (the weights, or LoRA's adapters), and the rest of the model's arguments
    trained, frozen = (params, ()) if adapters is None else (adapters, (params,))
    weights = lambda trained: trained if adapters is None else lora.merge(params, trained, lora.scale(cfg))
    # The run's history is the checkpoint's: metrics.jsonl is cut back to it (a killed run may have logged
    # past its last checkpoint), and the losses of a half-done log window carry over, so the resumed log
    # is line for line the uninterrupted one.
    step0 = meta["step"] if resume else 0
    history, pending = (meta["metrics"], [np.float32(x) for x in meta["pending_losses"]]) if resume else ([], [])
    metrics_path = os.path.join(cfg["out_dir"], "metrics.jsonl")
    if master:
        common.write_json(metrics_path, history, lines=True)
    if start:
        log(f"{'resuming from' if resume else 'weights from'} {start} (step {meta['step']:,})")

    log(f"compiling the train step for {jax.device_count()} device(s), mesh {dict(mesh.shape)} ...")
    t0 = time.perf_counter()
    k = min(cfg["steps_per_call"], max(1, cfg["log_every"] // tokens_per_step))  # steps per call, at most a log
    # window's (the last call takes the remainder)
    train_steps = {n: lower(shard, k=n).compile() for n in {min(k, n_steps - step0), (n_steps - step0) % k or k} if n > 0}
    eval_loss = steps.make_eval_loss(cfg, mcfg, shard)
    model_args = lambda b: (trained, b) if adapters is None else (params, b, trained)  # eval_loss's arguments
    noise_norms = steps.make_noise_norms(mcfg, shard) if cfg["noise_every"] else None
    log(f"compiled in {time.perf_counter() - t0:.1f} s")

    # -- the training loop
    share = sharding.data_share(shard["batch"], B)  # this process reads only the rows its devices hold
    rows_of = ((lambda s: instruct.get_batch(train_src, B, cfg["seed"], s, *share)) if packed else
               (lambda s: data.get_batch(train_src, B, T, cfg["seed"], s, *share)))  # [b, T]: this process's rows
    stack = lambda xs: {k: np.stack([x[k] for x in xs]) for k in xs[0]} if packed else np.stack(xs)
    get = lambda s, n: sharding.global_batch(rows_of(s) if n == 1 else stack([rows_of(s + j) for j in range(n)]),
                                             shard["batch"], B)  # the batches of steps s .. s+n-1
    every = lambda n: max(1, n // tokens_per_step) if n else 0  # token interval -> steps
    log_every, eval_every, ckpt_every = every(cfg["log_every"]), every(cfg["eval_every"]), every(cfg["ckpt_every"])
    noise_every, nb = every(cfg["noise_every"]), run["noise_batch"]
    noise = noise_scale.NoiseScale()
    if resume:  # the EMAs of |G|² and tr(Σ) continue where the checkpoint left them
        vars(noise).update(meta.get("noise", {}))
    if step0 >= n_steps:
        log(f"{start} already ends the run ({n_steps:,} steps); nothing to train")
    interrupt = Interrupt()
    meter = Meter(report, run["flops_per_token"], tokens_per_step, step0, mcfg.compute_dtype)
    bar = tqdm(initial=step0, total=n_steps, disable=not master, unit="step", dynamic_ncols=True, mininterval=1.0)
    n = min(k, n_steps - step0)
    batch, done = get(step0, n) if n > 0 else None, step0
    try:  # the bar is closed before an error line, which stays the last line printed
        for i in range(step0, n_steps, k):
            # 1. n optimizer steps (one, or steps_per_call) on B sequences each; the host runs ahead while the
            #    device computes (async dispatch)
            trained, opt_state, loss = train_steps[n](trained, opt_state, batch, np.int32(i), *frozen)
            pending.append(loss)
            done = i + n
            bar.update(n)
            hit = lambda every: every and done // every > i // every  # an interval's step was among these n
            rows, at = [], dict(step=done, tokens=done * tokens_per_step)
            # 2. the next batch, read while the device works
            if done < n_steps:
                n = min(k, n_steps - done)
                batch = get(done, n)
            # 3. a log window ends: mean train loss, tokens/s and MFU since the last (not on a signal: log
            #    windows stay those of the uninterrupted run)
            if hit(log_every) or done == n_steps:
                losses = flat(pending)
                check_finite(losses, done, cfg["out_dir"])
                m = dict(at, train_loss=float(losses.mean()), **meter.window(done, n_steps, trained),
                         lr=float(sched(done - 1)))
                rows.append(m)
                bar.set_postfix(loss=f"{m['train_loss']:.3f}", tok_s=f"{m['tokens_per_s']:,.0f}", mfu=f"{m['mfu']:.1%}")
                pending = []
            # 4. eval on the held-out split, at its interval and at the end
            if hit(eval_every) or done == n_steps:
                with meter.paused(trained):
                    val = evaluate(eval_loss, model_args, val_src, cfg, run["eval_batch_size"], shard["batch"])
                    acc = sample.accuracy(weights(trained), mcfg, val_src, cfg, run["eval_batch_size"]) \
                        if packed and cfg["eval_examples"] else None
                if packed:  # instruction data: the loss of the completions, and answers right
                    rows.append(dict(at, val_loss=val, **({} if acc is None else {"val_accuracy": acc})))
                    bar.write(f"step {done}: val loss {val:.4f}" + (f", exact match {acc:.1%}" if acc is not None
                                                                     else "")) if master else None
                else:
                    bpb = val / math.log(2) / tdata.meta["val_bytes_per_token"]  # bits per byte: across tokenizers
                    rows.append(dict(at, val_loss=val, val_bpb=bpb))
                    bar.write(f"step {done}: val loss {val:.4f}, {bpb:.3f} bits per byte") if master else None
            # 5. the gradient noise scale, on 2b sequences of its own (a stream apart from the training batches)
            if hit(noise_every):
                with meter.paused(trained):
                    rows.append(dict(at, **measure_noise(noise, noise_norms, trained, train_src, cfg, nb, shard["batch"],
                                                         done)))
            history += rows  # this step's metrics lines, also appended to metrics.jsonl
            if master and rows:
                with open(metrics_path, "a") as f:
                    f.writelines(json.dumps(m) + "\n" for m in rows)
            # 6. checkpoint at its interval, at the end, or when asked to stop; 7. stop
            halt = interrupt.agreed(hit(log_every))
            if hit(ckpt_every) or done == n_steps or halt:
                with meter.paused(trained):
                    trees = {"params": trained, "opt": opt_state} if adapters is None else \
                        {"params": params, "lora": trained, "opt": opt_state}
                    save(cfg, run, done, trees, history, pending, n_train, noise)
            if halt:
                log(f"{interrupt.name or 'signal on another host'}: checkpoint written at step {done:,}; "
                    "resume with --init_from=resume")
                break
    finally:
        bar.close()
    if summary := meter.summary():
        log(summary)
    if master and done == n_steps > step0:  # the run's speed and memory (of this process), for sweep.py
        mem, kind = peak_memory()
        common.write_json(os.path.join(cfg["out_dir"], "summary.json"),
                   dict(meter.totals() or {}, peak_memory_bytes=mem, memory=kind, steps_this_process=done - step0))
    if noise.n:
        log(noise_scale.advice(noise.b_simple, B, T))
    if adapters is not None and done == n_steps > step0:  # the adapters merged: a normal run that needs no lora.py
        checkpoint.write_merged(cfg, run, done, weights(trained), log)
    return dict(run, config=cfg)


if __name__ == "__main__":
    try:
        main(sys.argv[1:])
    except KeyboardInterrupt:  # Ctrl-C before training started, or a second one: nothing new was saved
        fail("interrupted; progress since the last checkpoint is lost")
    except common.Diverged as e:  # its own exit status: sweep.py tells a diverged run from a broken one
        print(e, file=sys.stderr)
        raise SystemExit(common.DIVERGED)
