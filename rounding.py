"""Stochastic rounding of fp32 values to bf16 (paper.md, "Stochastic rounding").

bf16 keeps 8 significand bits, so a weight near 1.0 can only move in steps of 2^-7 ≈ 0.0078. At batch
size 1 the per-step update is often ~1e-4 or smaller: below half that spacing, so round-to-nearest throws
every update away and the weight never moves. Stochastic rounding rounds up with probability equal to the
fractional distance to the upper bf16 neighbour, so the stored weight equals the fp32 result *on average*
and small updates survive. The paper keeps weights in bf16, computes each update in fp32, and rounds the
result back this way: apply_update, the one function every train step updates its weights with, does that
with round_like(new, params, step_key(seed, step), mode), and the same for optimizer state kept in bf16
(optim.stored).

Run `python rounding.py` for the demonstration: add 1e-4 to a weight of 1.0 ten thousand times.
"""
import jax
import jax.numpy as jnp

_SR_STREAM = 0x5352  # "SR": keeps rounding noise independent of other streams drawn from the same seed
_STATE_STREAM = 0x5354  # "ST": the optimizer state's noise (optim.stored), apart from the weights'


def _mix(h):  # murmur3's 32-bit finalizer: a bijection on uint32 with full avalanche
    h = (h ^ (h >> 16)) * jnp.uint32(0x85EBCA6B)
    h = (h ^ (h >> 13)) * jnp.uint32(0xC2B2AE35)
    return h ^ (h >> 16)


def noise16(key, shape, row0=0):
    """Uniform integers in [0, 2^16) (uint32), one per element: a counter-based hash of its index.
    row0: the array is rows row0, row0 + 1, ... of a larger one (of 2 or more axes), whose noise they get:
    noise16(key, (1, *s), l) == noise16(key, (L, *s))[l:l+1], so layer l of a stacked weight rounds alike
    alone (fused.py, which updates one layer at a time) or in the whole stack.

    Not jax.random.bits: threefry costs ~16 ns a value on a CPU core (stochastic rounding was 2.2× slower
    per step than nearest on configs/tiny_gpt2.py); this is a few integer ops XLA fuses into the update.
    SplitMix-style: _mix(index in row · golden ratio + k0), xored with the row index (leading axis, so no
    64-bit counter is needed) stepped and offset by k1, through _mix again; keep the top 16 bits. k0, k1
    come from threefry, so the noise differs per (seed, step, leaf), and it is the same on every mesh."""
    k0, k1 = jax.random.bits(key, (2,), jnp.uint32)
    iota = lambda a: jax.lax.broadcasted_iota(jnp.uint32, shape, a)  # stays elementwise on a sharded leaf
    first = 1 if len(shape) >= 2 else 0  # 0-d and 1-d leaves are a single row
    col, stride = jnp.zeros(shape, jnp.uint32), 1  # row-major index within the row
    for a in reversed(range(first, len(shape))):
        col, stride = col + iota(a) * jnp.uint32(stride), stride * shape[a]
    row = iota(0) + jnp.asarray(row0).astype(jnp.uint32) if first else jnp.zeros(shape, jnp.uint32)  # row0 may be traced
    h = _mix(col * jnp.uint32(0x9E3779B9) + k0)
    h = _mix(h ^ (row * jnp.uint32(0x7FEB352D) + k1))
    return h >> 16


def stochastic_round(x, key, row0=0):
    """fp32 -> bf16, rounding up (in magnitude) with probability = fractional distance to the upper neighbour.

    Bit trick (paper): add a uniform random integer in [0, 2^16) to the fp32 bit pattern, keep the top 16 bits.
    The low 16 bits are the position between the two bf16 neighbours, linear within a binade (subnormals
    too), so the carry happens with exactly that probability. fp32 is sign-magnitude, so for negative x this
    rounds the magnitude, which is the same thing mirrored. Exact bf16 values (low bits 0), ±0 and ±inf never
    carry and come back unchanged. A finite x <= bf16 max cannot carry into exponent 0xFF, so it never
    becomes inf; x in (bf16 max, fp32 max] rounds to bf16 max or to inf, inf standing for 2^128 as in IEEE
    overflow (x.astype(bf16) also sends x >= max + half a spacing to inf). NaN is passed through on its own:
    noise could carry a NaN payload into the sign bit, and a payload held only in the low bits would be
    cleared to inf.
    """
    x = jnp.asarray(x)
    if not jnp.issubdtype(x.dtype, jnp.floating):
        raise ValueError(f"stochastic_round expects a floating-point array, got dtype {x.dtype}")
    x = x.astype(jnp.float32)  # exact for bf16/fp16; float64 is rounded to nearest fp32 first
    bits = jax.lax.bitcast_convert_type(x, jnp.uint32)
    top = ((bits + noise16(key, x.shape, row0)) >> 16).astype(jnp.uint16)  # the top 16 bits of an fp32 *are* a bf16
    y = jax.lax.bitcast_convert_type(top, jnp.bfloat16)  # integer ops only: nothing flushes subnormals
    return jnp.where(jnp.isnan(x), jnp.bfloat16(jnp.nan), y)


def nearest_round(x):
    """fp32 -> bf16 round-to-nearest-even: a plain cast, which loses updates below half a spacing."""
    return jnp.asarray(x, jnp.float32).astype(jnp.bfloat16)


def round_tree(tree, key, mode):
    """Round every leaf of a pytree to bf16; leaf i gets its own noise from fold_in(key, i)."""
    round_leaf(jnp.zeros([]), key, 0, mode)  # a bad mode fails here, even for a tree without leaves
    leaves, treedef = jax.tree.flatten(tree)
    return jax.tree.unflatten(treedef, [round_leaf(x, key, i, mode) for i, x in enumerate(leaves)])


def round_leaf(x, key, i, mode, row0=0):
    """Leaf i of a tree as round_tree rounds it (row0: x is rows row0, ... of that leaf, see noise16)."""
    if mode == "nearest":
        return nearest_round(x)
    if mode != "stochastic":
        raise ValueError(f"rounding mode must be 'stochastic' or 'nearest', got {mode!r}")
    return stochastic_round(x, jax.random.fold_in(key, i), row0)


def step_key(seed, step, state=False):
    """Rounding key of one step, a pure function of (seed, step): a resumed run draws the same noise.
    state: the key of the optimizer state's leaves (kept in bf16, optim.stored), its own stream."""
    key = jax.random.fold_in(jax.random.fold_in(jax.random.key(seed), _SR_STREAM), step)
    return jax.random.fold_in(key, _STATE_STREAM) if state else key


def round_like(new, old, key, mode, index=None, row0=0):
    """Each leaf of `new` (fp32) back to the dtype of its leaf in `old`: bf16 leaves rounded as round_tree
    would (leaf i's noise; index: the leaves' positions in a larger tree whose noise they get, and row0 their
    first row, fused.py), the others cast."""
    leaves, treedef = jax.tree.flatten(new)
    index = range(len(leaves)) if index is None else index
    out = [round_leaf(x, key, i, mode, row0) if o.dtype == jnp.bfloat16 else x.astype(o.dtype)
           for x, o, i in zip(leaves, jax.tree.leaves(old), index)]
    return jax.tree.unflatten(treedef, out)


def apply_update(opt, grads, state, params, keys, mode, index=None, row0=0):
    """The one place a train step changes the weights (step.py's unfused and LoRA steps, fused.py's parts):
    the optimizer's update in fp32 added to the weights in fp32, then every leaf back to its stored dtype,
    bf16 by `mode` rounding with the step's noise (Sec. 6); the optimizer state likewise (bf16 state,
    optim.stored), from its own stream. keys: step_keys(seed, step). Returns (new params, new state).
    index, row0: `params` and `state` are a part of the whole trees, (params leaf positions, state leaf
    positions) in them and the first row of their stacked leaves (fused.py), so each leaf gets the noise the
    whole tree's rounding would give it."""
    updates, new_state = opt.update(grads, state, params)
    new = jax.tree.map(lambda p, u: p.astype(jnp.float32) + u, params, updates)
    i_params, i_state = index or (None, None)
    return (round_like(new, params, keys[0], mode, i_params, row0),
            round_like(new_state, state, keys[1], mode, i_state, row0))


def step_keys(seed, step):
    """(the weights' key, the optimizer state's key) of one step: apply_update's noise."""
    return step_key(seed, step), step_key(seed, step, state=True)


def demo(steps=10_000, update=1e-4, n=1, seed=0):
    """Add `update` to n weights starting at 1.0, `steps` times, keeping them in bf16 (nearest or
    stochastic rounding) or fp32. Returns the final weights, {mode: float32 [n]}."""
    def step(w, t):
        wn, ws, wf = w
        wn = nearest_round(wn.astype(jnp.float32) + update)  # 1 + 1e-4 is nearer 1 than 1 + 2^-7: lost
        ws = stochastic_round(ws.astype(jnp.float32) + update, step_key(seed, t))  # up w.p. ≈ 1e-4 / 2^-7
        return (wn, ws, wf + update), None

    one = jnp.ones(n, jnp.bfloat16)  # [n]
    (wn, ws, wf), _ = jax.lax.scan(step, (one, one, jnp.ones(n, jnp.float32)), jnp.arange(steps))
    return {"nearest": wn.astype(jnp.float32), "stochastic": ws.astype(jnp.float32), "fp32": wf}


if __name__ == "__main__":
    w = demo(n=1000)  # 1000 independent weights, to show the spread of stochastic rounding too
    s = w["stochastic"]
    print("weight 1.0, add 1e-4 ten thousand times (exact answer 2.0):")
    print(f"  fp32                      {float(w['fp32'][0]):.6f}")
    print(f"  bf16, round-to-nearest    {float(w['nearest'][0]):.6f}   every update rounded away")
    print(f"  bf16, stochastic rounding {float(s[0]):.6f}   (1000 weights: mean {float(s.mean()):.4f}, "
          f"std {float(s.std()):.4f})")
