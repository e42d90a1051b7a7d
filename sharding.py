"""Sharding: the (data, model) device mesh over all hosts, which mesh axis splits each weight and its
optimizer state, where each process's batch rows go, and FSDP weight gathering.

Weights are fully sharded (FSDP) over 'data' on D (or F) and tensor-parallel over 'model' on heads, F
and V; optimizer state is split like its weight; batches are split over 'data'. XLA (GSPMD) inserts
every collective: nothing here moves data by hand.
"""
import functools
import math
import os

import jax
import jax.numpy as jnp
from jax.sharding import NamedSharding, PartitionSpec as P

import optim
from common import fail


# ---------------------------------------------------------------- processes, the (data, model) mesh, shardings
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


def local_mesh_like(mesh):
    """A mesh of this machine's devices in the shape of `mesh` (a planned, abstract one), or None if there are
    too few: plan.compile_step compiles the step on it, to count the planned step's memory."""
    if jax.device_count() < mesh.size:
        return None
    return jax.make_mesh(tuple(mesh.axis_sizes), mesh.axis_names, axis_types=(jax.sharding.AxisType.Auto,) * 2,
                         devices=jax.devices()[:mesh.size])


@functools.cache  # libtpu describes a topology once per process (a second call fails on its lockfile)
def _topology(name, bounds):
    from jax.experimental import topologies
    return topologies.get_topology_desc(name, "tpu", **({"chips_per_host_bounds": list(bounds)} if bounds else {}))


def compile_only_mesh(mesh, generation):
    """A mesh in the shape of `mesh` (a planned, abstract one) of compile-only TPU devices of `generation`
    ('v5p', 'v5e', 'v6e'): libtpu (the jax[tpu] extra) compiles for TPUs it does not have, so the planned
    step's memory is XLA:TPU's own count. -> (mesh, None), or (None, why not) in one line."""
    n = mesh.size
    if not generation or n & (n - 1):
        return None, f"no compile-only topology for {n} devices of this kind"
    dims = [1, 1] if generation in ("v5e", "v6e") else [1, 1, 1]  # chips along the torus axes, 2D or 3D
    while math.prod(dims) < n:
        dims[dims.index(min(dims))] *= 2
    bounds = () if n >= 4 else (*dims, 1, 1)[:3]  # one host of n < 4 chips (libtpu's default host is 2 x 2 x 1)
    try:
        from jax.experimental import mesh_utils
        topo = _topology(f"{generation}:{'x'.join(map(str, dims))}", bounds)
        devices = mesh_utils.create_device_mesh(tuple(mesh.axis_sizes), list(topo.devices))
    except Exception as e:  # libtpu absent (a plain jax install), or a topology it does not know
        if "not installed" in str(e):
            return None, "libtpu, which compiles for TPUs that are not here, is not installed (pip install 'jax[tpu]')"
        return None, f"no compile-only {generation} devices ({type(e).__name__}: {str(e).splitlines()[0][:120]})"
    return jax.sharding.Mesh(devices, mesh.axis_names, axis_types=(jax.sharding.AxisType.Auto,) * 2), None


# Which mesh axis shards each dimension of each weight: FSDP over 'data' on D (or F), tensor parallel over
# 'model' on heads, F and V (Megatron: q, k, v, up split by output; o, down by input, so each block needs
# one all-reduce per half). The embedding table is vocabulary-parallel like the output layer; no weight
# is replicated over 'data', so weights and optimizer state cost 1 / (data x model) of the model per device.
RULES = {"embed": ("model", "data"),  # [V, D]
         "q": (None, "data", "model", None), "k": (None, "data", "model", None), "v": (None, "data", "model", None),
         "o": (None, "model", None, "data"),  # [L, N, H, D]
         "up": (None, "data", "model"), "down": (None, "model", "data"),  # [L, D, F], [L, F, D]
         "router": (None, "data", None),  # [L, D, E] (moe.py)
         "unembed": ("data", "model")}  # [D, V]
# An MoE's experts (up [L, E, D, F], down [L, E, F, D]) are split over 'model' on E, expert parallelism in place of
# tensor parallelism: each device runs its own experts' slots on whole expert matrices, FSDP over 'data' on D.
EXPERT_RULES = {"up": (None, "model", "data", None), "down": (None, "model", None, "data")}


def rule(name, shape):
    """The mesh axis (or None) of each dimension of weight `name` of this shape."""
    return EXPERT_RULES[name] if name in EXPERT_RULES and len(shape) == 4 else RULES[name]


def param_spec(name, shape, mesh):
    # an axis that does not divide its dimension is dropped (replicated) rather than padded: jax.Arrays
    # must split evenly (GPT-2's V = 50257 is odd, so its embeddings are never split over V)
    return P(*[a if a and shape[i] % mesh.shape[a] == 0 else None for i, a in enumerate(rule(name, shape))])


def param_shardings(params, mesh):
    spec = lambda path, x: NamedSharding(mesh, param_spec(path[-1].key, x.shape, mesh))
    return jax.tree_util.tree_map_with_path(spec, params)


def like_shardings(state, params, p_shard, mesh):
    """Optimizer state is sharded like the parameter it belongs to: Adam's m, v (state[k][param path])
    exactly like it; Adafactor's row / column factors r, c (state['v'][param path]['r' | 'c']) like it
    with the averaged-over axis removed (optim.factor_axes). The step counter is replicated."""
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
            a, b = optim.factor_axes(shape, 0)
            gone = b if k[-1] == "r" else a  # r averages g^2 over axis b, c over axis a
            axes = axes[:gone] + axes[gone + 1:]
        return NamedSharding(mesh, P(*axes))
    return jax.tree_util.tree_map_with_path(spec, state)


def shardings(abs_params, abs_opt, mesh, abs_lora=None):
    """Where every array of the train step lives. Batches [B, T] are split over 'data' on B. With LoRA
    (abs_lora: the adapters, which the optimizer state is then keyed by), the adapters and their state
    are small and replicated."""
    p = param_shardings(abs_params, mesh)
    out = {"params": p, "batch": NamedSharding(mesh, P("data", None))}
    if abs_lora is None:
        return dict(out, opt=like_shardings(abs_opt, abs_params, p, mesh))
    rep = lambda tree: jax.tree.map(lambda _: NamedSharding(mesh, P()), tree)
    return dict(out, lora=rep(abs_lora), opt=rep(abs_opt))


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
    """This process's rows x [b, T] -> the global [B, T] batch, one jax.Array split over 'data'; x [k, b, T]
    (k steps' batches) -> [k, B, T] split the same way; a dict of such (instruct.py's batches), each."""
    if isinstance(x, dict):
        return {k: global_batch(v, batch_sharding, B) for k, v in x.items()}
    if x.ndim == 3:
        return jax.make_array_from_process_local_data(stacked(batch_sharding), x, (x.shape[0], B, x.shape[2]))
    return jax.make_array_from_process_local_data(batch_sharding, x, (B, x.shape[1]))


def stacked(batch_sharding):
    """The sharding of k batches [k, B, T] (several optimizer steps per call): each batch's rows as one batch's."""
    return NamedSharding(batch_sharding.mesh, P(None, *batch_sharding.spec))


def gather_weights(shard, compute_dtype):
    """params -> the weights each device computes with: cast to the compute dtype (when that is narrower)
    and gathered over 'data', so each device runs its own rows of the batch through whole (model-split)
    weights, and autodiff reduce-scatters the gradient back (FSDP spelled out). Left alone, GSPMD splits
    the matmuls' contraction over 'data' instead and all-reduces activations of the whole batch on every
    device (8 CPU devices, mesh (8, 1), D 256: 3.4x the temporary memory, 2.7x the bytes communicated)."""
    return _gather(shard["params"], compute_dtype, lambda spec: spec)


def gather_layer(shard, compute_dtype):
    """gather_weights for one layer of the stacked blocks: params['blocks'] indexed at a layer (fused.py)."""
    return _gather(shard["params"]["blocks"], compute_dtype, lambda spec: spec[1:])


def _gather(shardings, compute_dtype, spec_of):
    ct = jnp.dtype(compute_dtype)
    whole = jax.tree.map(lambda s: NamedSharding(s.mesh, P(*[None if a == "data" else a for a in spec_of(s.spec)])),
                         shardings)
    cast = lambda w: w.astype(ct) if ct.itemsize < w.dtype.itemsize else w
    return lambda params: jax.tree.map(lambda w, s: jax.lax.with_sharding_constraint(cast(w), s), params, whole)
