"""The jitted, sharded train and eval steps: loss -> gradients (optionally summed over micro-batches) ->
optimizer update in fp32 -> weights cast back to their dtype (stochastic rounding for bf16, Sec. 6).
Where it is exact (fused.why_not), the train step is fused.py's instead: the same numbers, with each
layer's update inside the backward pass, so no whole gradient is held. Used by train.py and the
benchmarks, so both time the same program.
"""
import dataclasses
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np

import fused as fused_lib
import lora
import model
import noise_scale
import rounding
import sharding


def loss_fn(mcfg, shard, adapt=None):
    """(params, batch) -> mean loss, with FSDP weight gathering on the run's mesh; a batch is tokens [B, T] or
    a packed dict (model.batch_parts). adapt: (adapters) -> model.hidden's adapt (LoRA, lora.adapt)."""
    gather = sharding.gather_weights(shard, mcfg.compute_dtype)
    if adapt is None:
        return lambda params, batch: model.loss_fn(gather(params), batch, mcfg)
    return lambda params, batch, adapters: model.loss_fn(gather(params), batch, mcfg, adapt(adapters))


def accumulate_grads(loss_fn, params, batch, n_micro: int):
    """Mean loss and grads of batch [B, T] as n_micro micro-batches of B/n_micro, summed in fp32 inside one
    jitted step. Same result as one batch of B (mean of equal-size means), but n_micro× the sequential
    steps; the paper finds it wasteful unless multi-device and bandwidth-bound (Sec. 5)."""
    B = jax.tree.leaves(batch)[0].shape[0]
    if n_micro < 1 or B % n_micro:
        raise ValueError(f"batch size {B} must be divisible by n_micro={n_micro} (>= 1)")
    if n_micro == 1:
        return jax.value_and_grad(loss_fn)(params, batch)
    micro = jax.tree.map(lambda x: x.reshape(n_micro, B // n_micro, *x.shape[1:]), batch)  # [n_micro, B/n_micro, T]

    def body(acc, mb):
        loss, grads = jax.value_and_grad(loss_fn)(params, mb)
        return jax.tree.map(lambda a, x: a + x.astype(jnp.float32), acc, (loss, grads)), None
    (loss, grads), _ = jax.lax.scan(body, (jnp.zeros([], jnp.float32), jax.tree.map(lambda p: jnp.zeros(p.shape, jnp.float32), params)), micro)
    return loss / n_micro, jax.tree.map(lambda g: g / n_micro, grads)


def unfused_reason(cfg, mcfg, opt):
    """None when the train step is fused.py's (config fused_update, where exact), else why not, in one line."""
    if cfg["lora_rank"]:
        return "LoRA: only the adapters have gradients, a small whole gradient"
    if not cfg["fused_update"]:
        return "fused_update=False"
    abs_params = jax.eval_shape(partial(model.init, mcfg), jax.random.PRNGKey(0))
    return fused_lib.why_not(cfg, opt, abs_params, jax.eval_shape(opt.init, abs_params))


def make_train_step(cfg, mcfg, opt, shard, k=1, fused=None):
    """(params, opt_state, batch [B, T], step) -> (params, opt_state, loss); params and state donated.
    k > 1: k optimizer steps in one call, (params, opt_state, batches [k, B, T], first step) -> (..., losses [k]).
    LoRA (cfg lora_rank): (adapters, opt_state, batch, step, base params) -> (adapters, opt_state, loss).
    fused: fused.py's step (the caller decided with unfused_reason), the unfused one, or None to decide here."""
    if cfg["lora_rank"]:
        train_step, trained, extra = lora_step(cfg, mcfg, opt, shard), shard["lora"], (shard["params"],)
    else:
        fused = unfused_reason(cfg, mcfg, opt) is None if fused is None else fused
        train_step = fused_lib.train_step_fn(cfg, mcfg, opt, shard) if fused else unfused_step(cfg, mcfg, opt, shard)
        trained, extra = shard["params"], ()
    fn, batch = (train_step, shard["batch"]) if k == 1 else (scan_steps(train_step, k), sharding.stacked(shard["batch"]))
    return jax.jit(fn, donate_argnums=(0, 1), in_shardings=(trained, shard["opt"], batch, None, *extra),
                   out_shardings=(trained, shard["opt"], None))


def lora_step(cfg, mcfg, opt, shard):
    """LoRA's train step: gradients of the adapters alone (the base is an input, never differentiated), the
    optimizer on them in fp32; the adapted weights are formed layer by layer inside the model (lora.adapt)."""
    s = lora.scale(cfg)
    loss = loss_fn(mcfg, shard, adapt=lambda a: lora.adapt(a, s))

    def train_step(adapters, opt_state, batch, step, base):
        loss_v, grads = accumulate_grads(lambda a, b: loss(base, b, a), adapters, batch, cfg["grad_accum"])
        keys = rounding.step_keys(cfg["seed"], step)
        return *rounding.apply_update(opt, grads, opt_state, adapters, keys, cfg["rounding"]), loss_v
    return train_step


def unfused_step(cfg, mcfg, opt, shard):
    """The train step as jax.value_and_grad gives it: every gradient first, then the optimizer (in fp32, the
    weights and state rounded back to their dtypes: rounding.apply_update)."""
    loss = loss_fn(mcfg, shard)

    def train_step(params, opt_state, batch, step):
        loss_v, grads = accumulate_grads(loss, params, batch, cfg["grad_accum"])
        keys = rounding.step_keys(cfg["seed"], step)
        return *rounding.apply_update(opt, grads, opt_state, params, keys, cfg["rounding"]), loss_v
    return train_step


def scan_steps(train_step, k):
    """k train steps as one program (a lax.scan over batches [k, B, T]): the host dispatches once per k steps.
    A small model at batch size 1 spends much of its step in dispatch on CPU: configs/mini.py runs 1.24x the
    tokens/s at k = 16 (benchmarks/bench.py). The same steps; XLA may fuse them differently (~1e-7 apart)."""
    def steps(params, opt_state, batches, step, *rest):
        def body(carry, xs):
            params, opt_state, loss = train_step(*carry, *xs, *rest)
            return (params, opt_state), loss
        (params, opt_state), losses = jax.lax.scan(body, (params, opt_state),
                                                   (batches, step + jnp.arange(k, dtype=jnp.int32)))
        return params, opt_state, losses  # losses [k]
    return steps


def lower_train_step(cfg, mcfg, opt, shard, abs_params, abs_opt, platform=None, k=1, packed=False, abs_lora=None,
                     fused=None):
    """The sharded train step (of k steps per call) lowered from abstract arguments (nothing is allocated);
    `platform` lowers for devices that are not here (an abstract mesh: --dry_run with plan_devices).
    packed: batches of instruction data (instruct.py); abs_lora: LoRA's adapters, trained instead of params;
    fused: as make_train_step."""
    place = lambda tree, sh: jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), tree, sh)
    B, T = cfg["batch_size"], cfg["seq_len"]
    shape, sh = ((B, T), shard["batch"]) if k == 1 else ((k, B, T), sharding.stacked(shard["batch"]))
    batch = jax.ShapeDtypeStruct(shape, jnp.int32, sharding=sh)
    if packed:
        batch = dict(tokens=batch, segments=batch, mask=jax.ShapeDtypeStruct(shape, jnp.bool_, sharding=sh))
    params = place(abs_params, shard["params"])
    args = (place(abs_lora, shard["lora"]), place(abs_opt, shard["opt"]), batch, np.int32(0), params) if abs_lora \
        else (params, place(abs_opt, shard["opt"]), batch, np.int32(0))
    traced = make_train_step(cfg, mcfg, opt, shard, k, fused).trace(*args)
    return traced.lower(lowering_platforms=(platform,)) if platform else traced.lower()


def make_eval_loss(cfg, mcfg, shard):
    """(trained, batch, *frozen) -> mean loss, the train step's arguments (lora.Split): (params, batch), or
    LoRA's (adapters, batch, base params). With experts, the loss without the router losses (moe.py), which
    are training's regularizers, not the model's cross-entropy: an MoE's val loss compares with a dense model's."""
    mcfg = dataclasses.replace(mcfg, router_aux_weight=0.0, router_z_loss=0.0)
    if cfg["lora_rank"]:
        s = lora.scale(cfg)
        loss = loss_fn(mcfg, shard, adapt=lambda a: lora.adapt(a, s))
        return jax.jit(lambda adapters, batch, base: loss(base, batch, adapters),
                       in_shardings=(shard["lora"], shard["batch"], shard["params"]))
    return jax.jit(loss_fn(mcfg, shard), in_shardings=(shard["params"], shard["batch"]))


STATS_ROWS = 8  # sequences of the log step's batch that the logit watch runs forward


def make_logit_stats(mcfg, shard):
    """(params, batch) -> model.watch of one forward pass over the batch's first STATS_ROWS sequences: the largest
    attention and output logits (and with experts the dropped fraction and the largest load), for the log line:
    at a log every 512 steps of 8 sequences or fewer, a forward pass in a thousand; the train step is left as it is."""
    gather = sharding.gather_weights(shard, mcfg.compute_dtype)

    def stats(params, batch):
        tokens = model.batch_parts(batch)[0]
        return model.watch(gather(params), tokens.reshape(-1, tokens.shape[-1])[:STATS_ROWS], mcfg)
    return jax.jit(stats)


def make_noise_norms(mcfg, shard):
    """(params, batch [2b, T]) -> the squared gradient norms at batch sizes b and 2b (noise_scale.py), with
    the run's sharding: the batch is split over 'data' like a training batch, nothing is updated."""
    loss = loss_fn(mcfg, shard)

    def norms(params, batch):
        return noise_scale.grad_norms(loss, params, batch.reshape(2, -1, batch.shape[-1]))  # [2, b, T]
    return jax.jit(norms, in_shardings=(shard["params"], shard["batch"]))
