"""What a run costs before it runs (`python train.py <config> --dry_run=True`): parameters, FLOPs, bytes per
device and hours on the planned hardware; the device peak FLOP/s that MFU is measured against (a table for
accelerators, a matmul probe on CPU), and beside it the run's meters: tokens/s and MFU (Meter), peak memory.
"""
import math
import re
import resource
import time
from contextlib import contextmanager

import jax
import jax.numpy as jnp

import moe
import sharding
from common import fail

PEAKS = {"TPU v4": 275e12, "TPU v5 lite": 197e12, "TPU v5": 459e12, "TPU v6 lite": 918e12, "A100": 312e12,
         "H100": 989e12, "H200": 989e12}
HBM_GIB = {"TPU v4": 32, "TPU v5 lite": 16, "TPU v5": 95, "TPU v6 lite": 32, "A100": 80, "H100": 80, "H200": 141}
# libtpu's names for the TPU generations it compiles for without the hardware (sharding.compile_only_mesh); v4's
# compile-only devices are its two cores, not the one megacore device a v4 chip is, so it plans on a stand-in
TOPOLOGY = {"TPU v5 lite": "v5e", "TPU v5": "v5p", "TPU v6 lite": "v6e"}


def table_name(kind):
    """The PEAKS / HBM_GIB entry of a device kind ('TPU v5 lite' before 'TPU v5'), or None."""
    return next((k for k in PEAKS if k in kind), None)


def check(cfg):
    """Before anything is printed: a planned device kind must be in the table (or its peak given)."""
    if cfg["dry_run"] and cfg["plan_device"] and not cfg["peak_flops"] and not table_name(cfg["plan_device"]):
        fail(f"plan_device={cfg['plan_device']!r} is not in the device table ({', '.join(PEAKS)}); give --peak_flops")


def device_peak(cfg):
    """Dense peak FLOP/s of one device: the config's, the table's, or measured by a matmul probe (CPU)."""
    if cfg["peak_flops"]:
        return cfg["peak_flops"], "config"
    kind = jax.devices()[0].device_kind
    if name := table_name(kind):
        return PEAKS[name], f"{kind} table (bf16 dense)"
    dt = jnp.dtype(cfg["compute_dtype"])
    return probe_peak(dt, 10), f"measured 2048x2048 {dt} matmul on {kind}"


def probe_peak(dtype, tries):
    """FLOP/s of the fastest of `tries` 2048 x 2048 matmuls (after one to compile). The best, not the mean: a
    shared machine's speed drifts, and a low peak would flatter MFU."""
    n = 2048
    a = jnp.ones((n, n), dtype)
    _matmul(a).block_until_ready()
    best = math.inf
    for _ in range(tries):
        t = time.perf_counter()
        _matmul(a).block_until_ready()
        best = min(best, time.perf_counter() - t)
    return 2 * n**3 / best


_matmul = jax.jit(lambda a: a @ a)

PROBE_EVERY_S = 30  # on CPU the matmul peak is measured again at the first log this long after the last


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
            p = probe_peak(self.dtype, 3)
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


def activation_bytes(cfg, mcfg, mesh):
    """Estimated bytes per device of what one micro-batch keeps for its backward pass: b = B / grad_accum /
    data rows, head and MLP tensors split over 'model' when it divides them, in the compute dtype.
    A block keeps 4 tensors [b, T, D] (its input, both norms, the mid residual), 6 head-width ones (q, k, v,
    then q, k after qk-norm and RoPE, the attention output), the attention probabilities (XLA's attention keeps
    them; 3/4 of [b, N, T, T]: model.causal_attention skips the masked quarter) and 2 [b, T, F] (the MLP
    before and after GELU; an MoE's expert slots instead). With remat (in the fused step too) only each
    block's input is kept and one block is recomputed at a time.
    The loss keeps the final hidden state and one chunk of logits [b·T, ce_chunk] in fp32, two while
    differentiating (kernels.cross_entropy)."""
    D, L, T, N, V = mcfg.d_model, mcfg.n_layers, mcfg.seq_len, mcfg.n_heads, mcfg.vocab_size
    F, m, c = mcfg.mlp_ratio * D, mesh.shape["model"], jnp.dtype(mcfg.compute_dtype).itemsize
    b = cfg["batch_size"] // cfg["grad_accum"] // mesh.shape["data"]
    split = lambda n: m if n % m == 0 else 1
    E = mcfg.n_experts  # experts: the MLP's tensors are its E·C slots per sequence [b, E, C, F or D] (moe.py)
    mlp = 2 * F / split(F) if not E else (2 * F + 2 * D) * E * moe.capacity(mcfg) / T / split(E)
    block = b * T * c * (4 * D + 6 * D / split(N) + mlp + 0.75 * N * T / split(N))
    kept = L * b * T * D * c if mcfg.remat else (L - 1) * block
    return int(kept + block + b * T * D * c + 2 * b * T * min(mcfg.ce_chunk or V, V) * 4)


def memory_plan(cfg, mcfg, abs_params, abs_opt, shard, abs_lora=None, fused=False):
    """Bytes per device, from the shard shapes the sharding rules give (works on an abstract mesh). LoRA
    (abs_lora): the base is frozen, so gradients, optimizer state and the accumulation buffer are the
    adapters' (fp32), which add their own bytes. fused (fused.py's step): no whole gradient, only the
    largest of one layer's gradient and an embedding's, and the activations of per-block checkpointing."""
    mesh = shard["batch"].mesh
    per_device = lambda tree, sh, size=None: sum(math.prod(s.shard_shape(x.shape)) * (size or x.dtype.itemsize)
                                                 for x, s in zip(jax.tree.leaves(tree), jax.tree.leaves(sh)))
    ct = jnp.dtype(mcfg.compute_dtype).itemsize
    whole = [math.prod(x.shape) / math.prod(mesh.shape[a] for a in s.spec if a == "model") * min(ct, x.dtype.itemsize)
             for x, s in zip(jax.tree.leaves(abs_params), jax.tree.leaves(shard["params"]))]
    trained, t_shard = (abs_params, shard["params"]) if abs_lora is None else (abs_lora, shard["lora"])
    mem = {"params": per_device(abs_params, shard["params"]),
           **({} if abs_lora is None else {"lora adapters": per_device(abs_lora, shard["lora"])}),
           "gradients": per_device(trained, t_shard),  # jax.grad returns them in the params' dtype
           **({} if not fused else {"gradients": largest_part(abs_params, shard["params"], per_device)}),
           "optimizer state": per_device(abs_opt, shard["opt"]),
           # step.accumulate_grads sums micro-batch gradients in fp32
           "accumulation buffer": per_device(trained, t_shard, 4) if cfg["grad_accum"] > 1 else 0,
           "gathered weights": int(sum(whole)) if mesh.shape["data"] > 1 else 0,  # gather_weights, all layers
           "activations": activation_bytes(cfg, mcfg, mesh)}
    mem["total"] = sum(mem.values())
    return mem


def largest_part(abs_params, shard, per_device):
    """Bytes per device of the largest gradient the fused step holds at once: one layer's slice of the
    stacked blocks, or one embedding's."""
    L = jax.tree.leaves(abs_params["blocks"])[0].shape[0]
    layer = per_device(abs_params["blocks"], shard["blocks"]) / L
    return int(max(layer, *(per_device(abs_params[k], shard[k]) for k in abs_params if k != "blocks")))


def report(cfg, run, mcfg, abs_params, abs_opt, shard, log, abs_lora=None, fused=False):
    """Print (and return) what the run will cost: sizes, FLOPs, bytes per device, hours. Abstract: on an
    abstract mesh (--dry_run with plan_devices) this plans for hardware that is not present. `run` is
    the run's derived record (train.derive: steps, parameter counts, FLOPs per token); fused: the train step is
    fused.py's (the table shows what that step holds)."""
    mesh = shard["batch"].mesh
    n, planned = mesh.size, not isinstance(mesh, jax.sharding.Mesh)
    use_plan = cfg["dry_run"] and cfg["plan_device"]
    kind = cfg["plan_device"] if use_plan else jax.devices()[0].device_kind
    name = table_name(kind)  # a planned kind is in the table: check() made sure
    peak, peak_src = device_peak(cfg) if cfg["peak_flops"] or not use_plan else (PEAKS[name], f"{name} table (bf16 dense)")
    stats = None if planned else jax.local_devices()[0].memory_stats()
    hbm = stats["bytes_limit"] if stats and "bytes_limit" in stats else HBM_GIB[name] * 2**30 if name else None
    B, T, A = cfg["batch_size"], cfg["seq_len"], cfg["grad_accum"]
    flops_step = run["flops_per_token"] * B * T
    hours = run["n_steps"] * flops_step / (peak * n) / 3600
    mem = memory_plan(cfg, mcfg, abs_params, abs_opt, shard, abs_lora, fused)
    gb = lambda x: f"{x / 1e9:9.3f} GB"
    log(f"plan: {n} x {kind} as mesh data {mesh.shape['data']} x model {mesh.shape['model']}"
        f"{' (planned: not present here)' if planned else ''}")
    E, k = mcfg.n_experts, mcfg.top_k
    moe_note = (f" (MoE: a token runs {k} of {E} experts; the active count has {k}, FLOPs and MFU count active "
                "weights)") if E else ""
    log(f"  params     {run['params_nonembed']:,} non-embedding, {run['params_active']:,} active, "
        f"{run['params_total']:,} total (untied embeddings){moe_note}")
    log(f"  FLOPs      {run['flops_per_token']:.3g} per token (6N + 12LTD{', N active' if E else ''}), "
        f"{flops_step:.3g} per step of {B * T:,} "
        f"tokens, {run['n_steps'] * flops_step:.3g} for {run['n_steps']:,} steps")
    log(f"  time       {hours:,.1f} h at 100% MFU ({peak / 1e12:.4g} TFLOP/s per device, {peak_src}); "
        f"{hours / cfg['plan_mfu']:,.1f} h at plan_mfu {cfg['plan_mfu']:.0%}")
    log(f"  memory per device: batch {B} = {A} micro-batch(es) x {B // A} sequences, "
        f"{B // A // mesh.shape['data']} per data shard, of {T} tokens")
    lora_note = f"rank {cfg['lora_rank']} on {cfg['lora_targets']}, fp32"
    notes = {"params": mcfg.param_dtype + (", frozen" if abs_lora else ""), "lora adapters": lora_note,
             "gradients": "of the adapters, fp32" if abs_lora else
             f"fused step: one layer's or an embedding's at a time, {mcfg.param_dtype}" if fused else mcfg.param_dtype,
             "optimizer state": f"{cfg['optimizer']}, {'bf16' if cfg['state_dtype'] == 'bfloat16' else 'fp32'}" +
                                (", of the adapters" if abs_lora else ""),
             "accumulation buffer": "fp32" if A > 1 else "grad_accum 1: none",
             "gathered weights": "FSDP: all layers, over 'data'" if mesh.shape["data"] > 1 else "data axis 1: none",
             "activations": "estimate: " + ("remat, block inputs + 1 block recomputed" if mcfg.remat else "every block")
                           + " + loss"}
    for k, v in mem.items():
        log(f"    {k:20s}{gb(v)}  {notes.get(k, '') if k != 'total' else ''}"
            f"{f'of {hbm / 1e9:.1f} GB ({kind})' if k == 'total' and hbm else ''}")
    if hbm and mem["total"] > hbm:
        log("  warning: the estimate exceeds the device memory; more devices, a larger mesh_model, remat=True "
            "or a larger grad_accum (smaller micro-batches) would fit")
    whole = [f"{p[-1].key} {list(x.shape)}" for (p, x), s in zip(jax.tree_util.tree_flatten_with_path(abs_params)[0],
             jax.tree.leaves(shard["params"])) if any(a is None for a, r in zip(s.spec, sharding.rule(p[-1].key, x.shape)) if r)]
    if whole:
        log(f"  not split over some mesh axis (it does not divide the dimension): {', '.join(whole)}")
    return dict(mem=mem, hours=hours, peak=peak, measured=peak_src.startswith("measured"), hbm=hbm, kind=kind,
                devices=n, planned=planned)


def lowering_platform(plan):
    """The platform to lower the train step for: None for the devices present, else the planned kind's."""
    kind = plan["kind"]
    return ("tpu" if "TPU" in kind else "cpu" if kind == "cpu" else "cuda") if plan["planned"] else None


def compile_step(plan, cfg, mesh, lower_on, log):
    """--dry_run: lower the sharded train step for the run's mesh (lower_on(mesh, platform=...) -> lowered) and
    compile it, to add XLA's own count of the compiled step's memory per device to the plan. Planned devices
    that are not here (plan_compile) are compiled for in one of two ways:
      - compile-only TPU devices of the planned kind, when libtpu (the jax[tpu] extra) is installed: the
        count is XLA:TPU's own, for the planned device;
      - else as many of this machine's CPU devices in the same mesh shape, a stand-in. XLA:CPU has no bf16
        matmul: it computes them in fp32 and keeps fp32 copies of one layer's weights and gradients, which
        a bf16 device does not; and it would hoist the fp32 copy of every layer's weights out of the loop
        over layers, a pass turned off here."""
    t0 = time.perf_counter()
    lowered = lower_on(mesh, platform=lowering_platform(plan))
    log(f"  lowered the sharded train step for {plan['devices']} x {plan['kind']} in {time.perf_counter() - t0:.1f} s")
    if plan["planned"] and not cfg["plan_compile"]:
        return plan
    t0, where, options, target = time.perf_counter(), "", None, None
    if plan["planned"]:
        target, why = sharding.compile_only_mesh(mesh, TOPOLOGY.get(table_name(plan["kind"])))
        on = target or sharding.local_mesh_like(mesh)
        if on is None:
            log(f"  not compiled: {why}, and this machine has fewer than {plan['devices']} devices for a stand-in")
            return plan
        where = f"for {plan['devices']} compile-only {plan['kind']} devices (libtpu)" if target else \
            f"on {jax.devices()[0].device_kind} devices in the planned mesh shape, a stand-in: {why}"
        options = None if target else {"xla_disable_hlo_passes": "while-loop-invariant-code-motion"}
        lowered = lower_on(on)
    try:
        ma = lowered.compile(compiler_options=options).memory_analysis()
    except Exception as e:  # XLA:TPU refuses a program larger than the device's memory, saying by how much
        if "RESOURCE_EXHAUSTED" not in str(e):
            raise
        plan["xla"] = dict(error=str(e).splitlines()[0])
        if need := re.search(r"total memory required for \D*\(([\d.]+)G\)", str(e)):  # XLA:TPU's GiB, all told
            plan["xla"]["needs"] = float(need[1]) * 2**30
        log(f"  XLA, compiled{' ' + where if where else ''}: does not fit: {plan['xla']['error']}")
        return plan
    # XLA:TPU reports its own peak of the program; XLA:CPU's is the arguments alone, so there it is added up:
    # arguments + outputs not written over donated arguments + the temporaries' allocation
    summed = ma.argument_size_in_bytes + ma.output_size_in_bytes - ma.alias_size_in_bytes + ma.temp_size_in_bytes
    on_tpu = target is not None or not plan["planned"] and "TPU" in jax.devices()[0].device_kind
    peak = ma.peak_memory_in_bytes if on_tpu and ma.peak_memory_in_bytes else summed
    plan["xla"] = dict(arguments=ma.argument_size_in_bytes, temporaries=ma.temp_size_in_bytes, peak=peak, tpu=on_tpu)
    log(f"  XLA, compiled{' ' + where if where else ''} in {time.perf_counter() - t0:.0f} s: arguments "
        f"{ma.argument_size_in_bytes / 1e9:.3f} GB (params, optimizer state, batch), temporaries "
        f"{ma.temp_size_in_bytes / 1e9:.3f} GB, peak {peak / 1e9:.3f} GB per device"
        f"{' (XLA:TPU’s own peak)' if on_tpu else ''}")
    log(f"  paper's accounting (16-bit optimizer state and accumulation buffer, no gradient): {paper(plan, cfg) / 1e9:.3f} GB")
    return plan


def paper(plan, cfg):
    """Bytes per device as the paper's Fig. 7 counts them: weights, 16-bit optimizer state and accumulation
    buffer, activations with per-block checkpointing; no stored gradient."""
    mem = plan["mem"]
    state16 = mem["optimizer state"] / (1 if cfg["state_dtype"] == "bfloat16" else 2)
    return mem["params"] + mem.get("lora adapters", 0) + state16 + mem["accumulation buffer"] / 2 + mem["activations"]
