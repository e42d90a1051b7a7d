"""Sharding: the (data, model) device mesh over all hosts, which mesh axis splits each weight, FSDP
weight gathering, and the plan of what a run costs per device (`python train.py <config> --dry_run=True`).

Weights are fully sharded (FSDP) over 'data' on D (or F) and tensor-parallel over 'model' on heads, F
and V; optimizer state is split like its weight; batches are split over 'data'. XLA (GSPMD) inserts
every collective: nothing here moves data by hand.
"""
import ctypes
import math
import os
import time

import jax
import jax.numpy as jnp
from jax.sharding import NamedSharding, PartitionSpec as P

import model
import optim


def fail(msg):
    """One clear line instead of a traceback wall."""
    raise SystemExit(f"error: {msg}")


PEAKS = {"TPU v4": 275e12, "TPU v5 lite": 197e12, "TPU v5": 459e12, "A100": 312e12, "H100": 989e12, "H200": 989e12}
HBM_GIB = {"TPU v4": 32, "TPU v5 lite": 16, "TPU v5": 95, "A100": 80, "H100": 80, "H200": 141}  # memory per device


# ---------------------------------------------------------------- processes, the (data, model) mesh, shardings
def keep_freed_memory():
    """Make glibc malloc keep freed memory for reuse (one arena, no mmap, no trimming). XLA:CPU allocates a
    step's large temporaries afresh; glibc serves those with mmap and unmaps them on free, so every step
    page-faults tens of MB of new pages (fresh pages write at 2 GB/s on this project's VM, reused ones at
    16). The 30M model's step gets ~1.2x faster. Call before JAX starts its threads; no-op without glibc."""
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return
    M_TRIM_THRESHOLD, M_MMAP_MAX, M_ARENA_MAX = -1, -4, -8  # <malloc.h>
    libc.mallopt(M_ARENA_MAX, 1), libc.mallopt(M_MMAP_MAX, 0), libc.mallopt(M_TRIM_THRESHOLD, 2**31 - 1)


def init_distributed(cfg):
    """Join the other processes of a multi-host run; must run before JAX touches a device. Without a
    coordinator (from the config or JAX_COORDINATOR_ADDRESS) jax.distributed looks for a TPU pod, SLURM
    or Open MPI job itself; finding none (or JAX already started in this process) leaves one process."""
    if cfg["num_processes"] == 1 or jax.distributed.is_initialized():
        return
    given = dict(coordinator_address=cfg["coordinator_address"] or None, num_processes=cfg["num_processes"] or None,
                 process_id=None if cfg["process_id"] < 0 else cfg["process_id"])
    explicit = any(v is not None for v in given.values()) or "JAX_COORDINATOR_ADDRESS" in os.environ
    jax.config.update("jax_cpu_collectives_implementation", "gloo")  # cross-process collectives on CPU
    try:
        jax.distributed.initialize(**given)
    except (ValueError, RuntimeError) as e:
        if explicit:
            args = ", ".join(f"{k}={v!r}" for k, v in given.items() if v is not None)
            fail(f"jax.distributed.initialize({args}): {e}")


def make_mesh(cfg):
    """The (data, model) mesh over every device of every process. A dry run with plan_devices gets an
    abstract mesh of that many devices instead: its program is lowered, never run, so they need not exist."""
    planned = cfg["dry_run"] and cfg["plan_devices"]
    n, m = cfg["plan_devices"] if planned else jax.device_count(), cfg["mesh_model"]
    if m < 1 or n % m:
        fail(f"mesh_model={m} does not divide the {n} devices")
    # Auto axes: GSPMD propagates shardings from the jit in/out shardings and inserts the collectives
    axes = dict(axis_names=("data", "model"), axis_types=(jax.sharding.AxisType.Auto,) * 2)
    return jax.sharding.AbstractMesh((n // m, m), **axes) if planned else jax.make_mesh((n // m, m), **axes)


# Which mesh axis shards each dimension of each weight: FSDP over 'data' on D (or F), tensor parallel over
# 'model' on heads, F and V (Megatron: q, k, v, up split by output; o, down by input, so each block needs
# one all-reduce per half). The embedding table is vocabulary-parallel like the output layer; no weight
# is replicated over 'data', so weights and optimizer state cost 1 / (data x model) of the model per device.
RULES = {"embed": ("model", "data"),  # [V, D]
         "q": (None, "data", "model", None), "k": (None, "data", "model", None), "v": (None, "data", "model", None),
         "o": (None, "model", None, "data"),  # [L, N, H, D]
         "up": (None, "data", "model"), "down": (None, "model", "data"),  # [L, D, F], [L, F, D]
         "unembed": ("data", "model")}  # [D, V]


def param_spec(name, shape, mesh):
    # an axis that does not divide its dimension is dropped (replicated) rather than padded: jax.Arrays
    # must split evenly (GPT-2's V = 50257 is odd, so its embeddings are never split over V)
    return P(*[a if a and shape[i] % mesh.shape[a] == 0 else None for i, a in enumerate(RULES[name])])


def param_shardings(params, mesh):
    spec = lambda path, x: NamedSharding(mesh, param_spec(path[-1].key, x.shape, mesh))
    return jax.tree_util.tree_map_with_path(spec, params)


def like_shardings(state, params, p_shard, mesh):
    """Optimizer state is sharded like the parameter it belongs to: Adam's m, v (state[k][param path])
    exactly like it; Adafactor's row / column factors r, c (state['v'][param path]['r' | 'c']) like it
    with the averaged-over axis removed (optim._factor_axes). The step counter is replicated."""
    keys = lambda path: tuple(k.key for k in path)
    by_path = {keys(path): (x.shape, tuple(s.spec) + (None,) * (x.ndim - len(s.spec)))
               for (path, x), s in zip(jax.tree_util.tree_flatten_with_path(params)[0], jax.tree.leaves(p_shard))}

    def spec(path, x):
        k = keys(path)[1:]  # drop the state's own key ('m', 'v', ...)
        if k in by_path:
            return NamedSharding(mesh, P(*by_path[k][1]))
        if k[:-1] not in by_path:
            return NamedSharding(mesh, P())
        shape, axes = by_path[k[:-1]]
        if k[-1] in ("r", "c"):
            a, b = optim._factor_axes(shape, 0)
            gone = b if k[-1] == "r" else a  # r averages g^2 over axis b, c over axis a
            axes = axes[:gone] + axes[gone + 1:]
        return NamedSharding(mesh, P(*axes))
    return jax.tree_util.tree_map_with_path(spec, state)


def shardings(abs_params, abs_opt, mesh):
    """Where every array of the train step lives. Batches [B, T] are split over 'data' on B."""
    p = param_shardings(abs_params, mesh)
    return {"params": p, "opt": like_shardings(abs_opt, abs_params, p, mesh),
            "batch": NamedSharding(mesh, P("data", None))}


def data_share(batch_sharding, B):
    """(index, count) for data.get_batch / eval_batches: the block of rows of a [B, T] batch that this
    process's devices hold. Processes whose devices share data shards (a model axis spanning hosts)
    read the same rows; a process never reads rows it does not hold."""
    rows = sorted({idx[0].indices(B)[:2] for idx in batch_sharding.addressable_devices_indices_map((B, 1)).values()})
    lo, hi = rows[0][0], rows[-1][1]
    if sum(b - a for a, b in rows) != hi - lo or B % (hi - lo) or lo % (hi - lo):
        fail(f"this process's devices hold batch rows {rows}, not one aligned block (a device order that "
             "jax.make_mesh does not make)")
    return lo // (hi - lo), B // (hi - lo)


def global_batch(x, batch_sharding, B):
    """This process's rows x [b, T] -> the global [B, T] batch, one jax.Array split over 'data'."""
    return jax.make_array_from_process_local_data(batch_sharding, x, (B, x.shape[1]))


# ---------------------------------------------------------------- MFU
def device_peak(cfg):
    """Dense peak FLOP/s of one device: the config's, the table's, or measured by a matmul probe (CPU)."""
    if cfg["peak_flops"]:
        return cfg["peak_flops"], "config"
    kind = jax.devices()[0].device_kind
    for name, peak in PEAKS.items():
        if name in kind:
            return peak, f"{kind} table (bf16 dense)"
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


def sharded_loss(mcfg, shard):
    """model.loss_fn with FSDP spelled out: every weight is cast to the compute dtype (when that is
    narrower) and gathered over 'data' before use, so each device runs its own rows of the batch through
    whole (model-split) weights, and autodiff reduce-scatters the gradient back. Left alone, GSPMD splits
    the matmuls' contraction over 'data' instead and all-reduces activations of the whole batch on every
    device (8 CPU devices, mesh (8, 1), D 256: 3.4x the temporary memory, 2.7x the bytes communicated)."""
    ct = jnp.dtype(mcfg.compute_dtype)
    whole = jax.tree.map(lambda s: NamedSharding(s.mesh, P(*[None if a == "data" else a for a in s.spec])),
                         shard["params"])

    def loss(params, tokens):
        cast = lambda w: w.astype(ct) if ct.itemsize < w.dtype.itemsize else w
        return model.loss_fn(jax.tree.map(lambda w, s: jax.lax.with_sharding_constraint(cast(w), s), params, whole),
                             tokens, mcfg)
    return loss


# ---------------------------------------------------------------- the plan: sizes, FLOPs, memory per device, time
def activation_bytes(cfg, mcfg, mesh):
    """Estimated bytes per device of what one micro-batch keeps for its backward pass: b = B / grad_accum /
    data rows, head and MLP tensors split over 'model' when it divides them, in the compute dtype.
    A block keeps 4 tensors [b, T, D] (its input, both norms, the mid residual), 6 head-width ones (q, k, v,
    then q, k after qk-norm and RoPE, the attention output), the attention probabilities (XLA's attention keeps
    them; 3/4 of [b, N, T, T]: model.causal_attention skips the masked quarter) and 2 [b, T, F] (the MLP
    before and after GELU). With remat only each block's input is kept and one block is recomputed at a time.
    The loss keeps the final hidden state and one chunk of logits [b·T, ce_chunk] in fp32, two while
    differentiating (model.cross_entropy)."""
    D, L, T, N, V = mcfg.d_model, mcfg.n_layers, mcfg.seq_len, mcfg.n_heads, mcfg.vocab_size
    F, m, c = mcfg.mlp_ratio * D, mesh.shape["model"], jnp.dtype(mcfg.compute_dtype).itemsize
    b = cfg["batch_size"] // cfg["grad_accum"] // mesh.shape["data"]
    split = lambda n: m if n % m == 0 else 1
    block = b * T * c * (4 * D + 6 * D / split(N) + 2 * F / split(F) + 0.75 * N * T / split(N))
    kept = L * b * T * D * c if mcfg.remat else (L - 1) * block
    return int(kept + block + b * T * D * c + 2 * b * T * min(mcfg.ce_chunk or V, V) * 4)


def memory_plan(cfg, mcfg, abs_params, abs_opt, shard):
    """Bytes per device, from the shard shapes the sharding rules give (works on an abstract mesh)."""
    mesh = shard["batch"].mesh
    per_device = lambda tree, sh, size=None: sum(math.prod(s.shard_shape(x.shape)) * (size or x.dtype.itemsize)
                                                 for x, s in zip(jax.tree.leaves(tree), jax.tree.leaves(sh)))
    ct = jnp.dtype(mcfg.compute_dtype).itemsize
    whole = [math.prod(x.shape) / math.prod(mesh.shape[a] for a in s.spec if a == "model") * min(ct, x.dtype.itemsize)
             for x, s in zip(jax.tree.leaves(abs_params), jax.tree.leaves(shard["params"]))]
    mem = {"params": per_device(abs_params, shard["params"]),
           "gradients": per_device(abs_params, shard["params"]),  # jax.grad returns them in the params' dtype
           "optimizer state": per_device(abs_opt, shard["opt"]),
           # optim.accumulate_grads sums micro-batch gradients in fp32
           "accumulation buffer": per_device(abs_params, shard["params"], 4) if cfg["grad_accum"] > 1 else 0,
           "gathered weights": int(sum(whole)) if mesh.shape["data"] > 1 else 0,  # sharded_loss, all layers
           "activations": activation_bytes(cfg, mcfg, mesh)}
    mem["total"] = sum(mem.values())
    return mem


def plan(cfg, mcfg, abs_params, abs_opt, shard, log, lower=None):
    """Print (and return) what the run will cost: sizes, FLOPs, bytes per device, hours. Abstract: on an
    abstract mesh (--dry_run with plan_devices) this plans for hardware that is not present."""
    mesh = shard["batch"].mesh
    n, planned = mesh.size, not isinstance(mesh, jax.sharding.Mesh)
    use_plan = cfg["dry_run"] and cfg["plan_device"]
    kind = cfg["plan_device"] if use_plan else jax.devices()[0].device_kind
    if cfg["peak_flops"] or not use_plan:
        peak, peak_src = device_peak(cfg)
    else:
        name = next((k for k in PEAKS if k in kind), None)
        if name is None:
            fail(f"plan_device={kind!r} is not in the device table ({', '.join(PEAKS)}); give --peak_flops")
        peak, peak_src = PEAKS[name], f"{name} table (bf16 dense)"
    stats = None if planned else jax.local_devices()[0].memory_stats()
    hbm = stats["bytes_limit"] if stats and "bytes_limit" in stats else next(
        (g * 2**30 for k, g in HBM_GIB.items() if k in kind), None)
    B, T, A = cfg["batch_size"], cfg["seq_len"], cfg["grad_accum"]
    flops_step = cfg["flops_per_token"] * B * T
    hours = cfg["n_steps"] * flops_step / (peak * n) / 3600
    mem = memory_plan(cfg, mcfg, abs_params, abs_opt, shard)
    gb = lambda x: f"{x / 1e9:9.3f} GB"
    log(f"plan: {n} x {kind} as mesh data {mesh.shape['data']} x model {mesh.shape['model']}"
        f"{' (planned: not present here)' if planned else ''}")
    log(f"  params     {cfg['params_nonembed']:,} non-embedding, {cfg['params_active']:,} active, "
        f"{cfg['params_total']:,} total (untied embeddings)")
    log(f"  FLOPs      {cfg['flops_per_token']:.3g} per token (6N + 12LTD), {flops_step:.3g} per step of {B * T:,} "
        f"tokens, {cfg['n_steps'] * flops_step:.3g} for {cfg['n_steps']:,} steps")
    log(f"  time       {hours:,.1f} h at 100% MFU ({peak / 1e12:.4g} TFLOP/s per device, {peak_src}); "
        f"{hours / cfg['plan_mfu']:,.1f} h at plan_mfu {cfg['plan_mfu']:.0%}")
    log(f"  memory per device: batch {B} = {A} micro-batch(es) x {B // A} sequences, "
        f"{B // A // mesh.shape['data']} per data shard, of {T} tokens")
    notes = {"params": mcfg.param_dtype, "gradients": mcfg.param_dtype, "optimizer state": f"{cfg['optimizer']}, fp32",
             "accumulation buffer": "fp32" if A > 1 else "grad_accum 1: none",
             "gathered weights": "FSDP: all layers, over 'data'" if mesh.shape["data"] > 1 else "data axis 1: none",
             "activations": f"estimate: {'remat, block inputs + 1 block' if mcfg.remat else 'every block'} + loss"}
    for k, v in mem.items():
        log(f"    {k:20s}{gb(v)}  {notes.get(k, '') if k != 'total' else ''}"
            f"{f'of {hbm / 1e9:.1f} GB ({kind})' if k == 'total' and hbm else ''}")
    if hbm and mem["total"] > hbm:
        log("  warning: the estimate exceeds the device memory; more devices, a larger mesh_model, remat=True "
            "or a larger grad_accum (smaller micro-batches) would fit")
    whole = [f"{p[-1].key} {list(x.shape)}" for (p, x), s in zip(jax.tree_util.tree_flatten_with_path(abs_params)[0],
             jax.tree.leaves(shard["params"])) if any(a is None for a, r in zip(s.spec, RULES[p[-1].key]) if r)]
    if whole:
        log(f"  not split over some mesh axis (it does not divide the dimension): {', '.join(whole)}")
    if cfg["dry_run"] and lower:  # build the sharded step for real, short of running it (lower(platform))
        t0 = time.perf_counter()
        platform = ("tpu" if "TPU" in kind else "cpu" if kind == "cpu" else "cuda") if planned else None
        lowered = lower(platform)
        log(f"  lowered the sharded train step for {n} x {kind} in {time.perf_counter() - t0:.1f} s")
        if not planned:  # the devices are here: XLA's own count of the compiled step's memory
            ma = lowered.compile().memory_analysis()
            xla = dict(arguments=ma.argument_size_in_bytes, temporaries=ma.temp_size_in_bytes)
            log(f"  XLA, compiled: arguments {gb(ma.argument_size_in_bytes).strip()} (params, optimizer state, batch), "
                f"temporaries {gb(ma.temp_size_in_bytes).strip()} per device")
    return dict(mem=mem, hours=hours, peak=peak, measured=peak_src.startswith("measured"), hbm=hbm,
                **({"xla": xla} if cfg["dry_run"] and not planned else {}))
