"""The optimizer inside the backward pass: a train step that never holds the whole gradient (paper Sec. 5,
Fig. 7: at batch 1, SGD and Adafactor train a 13B model in about the memory of its 16-bit weights).

jax.value_and_grad returns every gradient before the optimizer runs, so step.py's step holds weights +
optimizer state + a whole gradient. The authors step each weight from a PyTorch hook as soon as its
gradient exists; this is that in JAX. The forward pass keeps each layer's residuals (its jax.vjp, less the
weights, which the stacks hold), as the unfused step does; with remat only each layer's input (per-block
checkpointing, the paper's accounting), and the backward pass runs the layer again. The backward pass is a
reverse lax.scan over the stacked layers that differentiates layer l, updates its weights and optimizer
state at once and writes them back into the stacks in place (the step donates both). The output embedding
is updated right after the loss's backward pass, the input embedding last. Peak: weights + optimizer state
+ one layer's gradient + activations (all layers', or with remat their inputs and one layer's).

Exact, because every optimizer in optim.py updates each weight (or each layer's block of a stacked one:
Adafactor's per-layer blocks, Muon's per-matrix orthogonalization) from its own gradient and state alone:
an update of a layer's slice is that slice of the whole update. Each part is updated from the same
state['step'], so the step counter advances once, and bf16 weights (and bf16 state, optim.stored) get the
noise the unfused step's whole-tree rounding gives them (rounding.apply_update with row0 = the layer). What couples
weights cannot be fused: see why_not.
"""
import jax
import jax.numpy as jnp

import model
import moe
import rounding
import sharding

def why_not(cfg, opt, abs_params, abs_opt):
    """None if the fused step equals step.py's unfused one for this run, else the reason in one line."""
    if cfg["grad_accum"] > 1:
        return "gradient accumulation sums whole gradients in a buffer before the update"
    if cfg["clip_norm"] > 0:
        return "global-norm clipping needs every gradient before the first update"
    if bad := [k for k, v in abs_opt.items() if k != "step" and not (isinstance(v, dict) and set(v) <= set(abs_params))]:
        return f"the optimizer's state {bad} is not kept per weight"
    # a layer's slice must be a block of the optimizer's: its state one slice per layer, as it is for one layer alone
    # (Adafactor factoring a stacked [L, D, E] router over (L, D) would fail this; its 128 floor keeps it unfactored)
    L = jax.tree.leaves(abs_params["blocks"])[0].shape[0]
    one_layer = {"blocks": jax.tree.map(lambda w: jax.ShapeDtypeStruct((1, *w.shape[1:]), w.dtype), abs_params["blocks"])}
    whole, one = (jax.tree.leaves(_part(s, ["blocks"], step=False)) for s in (abs_opt, jax.eval_shape(opt.init, one_layer)))
    if [x.shape for x in one] != [(1, *x.shape[1:]) for x in whole] or any(x.shape[0] != L for x in whole):
        return "the optimizer's state of a stacked weight is not one slice per layer"
    return None


def _without(vjp, w):
    """A layer's vjp (a pytree whose leaves are its residuals) -> (the residuals but the layer's weights w, a
    function (those residuals, w) -> the vjp). The weights are in the stacks already; kept as residuals too, the
    forward scan would copy every layer's weights."""
    leaves, tree = jax.tree.flatten(vjp)
    ws = jax.tree.leaves(w)
    which = [next((j for j, v in enumerate(ws) if leaf is v), None) for leaf in leaves]  # the same tracer: a weight
    res = [leaf if j is None else None for leaf, j in zip(leaves, which)]

    def rebuild(res, w):
        ws = jax.tree.leaves(w)
        return tree.unflatten([r if j is None else ws[j] for r, j in zip(res, which)])
    return res, rebuild


def _part(state, keys, step=True):
    """The optimizer state of the weights params[k], k in keys: every entry but 'step' is keyed like params."""
    return {k: v if k == "step" else {n: v[n] for n in keys if n in v} for k, v in state.items() if step or k != "step"}


def _merge(parts):
    """One optimizer state from the states of disjoint parts (their 'step's are equal: each took one step)."""
    out = {}
    for p in parts:
        for k, v in p.items():
            out[k] = v if k == "step" else {**out.get(k, {}), **v}
    return out


def _updater(cfg, opt, abs_params, abs_state, step):
    """(grads, state, params, row0) of one part -> (new params, new state) by rounding.apply_update, each leaf
    with the noise of its rows in the whole tree (row0: the part is rows row0.. of stacked leaves)."""
    keys = lambda path: tuple(k.key for k in path)
    index = lambda tree: {keys(p): i for i, (p, _) in enumerate(jax.tree_util.tree_flatten_with_path(tree)[0])}
    at = lambda whole, part: [whole[keys(p)] for p, _ in jax.tree_util.tree_flatten_with_path(part)[0]]
    i_params, i_state, noise = index(abs_params), index(abs_state), rounding.step_keys(cfg["seed"], step)

    def update(grads, state, params, row0=0):
        return rounding.apply_update(opt, grads, state, params, noise, cfg["rounding"],
                                     (at(i_params, params), at(i_state, state)), row0)
    return update


def train_step_fn(cfg, mcfg, opt, shard):
    """(params, opt_state, batch [B, T], step) -> (params, opt_state, loss), as step.make_train_step's step;
    the caller jits it with params and state donated."""
    ct = jnp.dtype(mcfg.compute_dtype)
    gather_l = sharding.gather_layer(shard, ct)
    gather = lambda name, w: sharding.gather_weights({"params": {name: shard["params"][name]}}, ct)({name: w})[name]
    moe_loss = lambda aux: moe.loss(mcfg, jax.tree.map(lambda a: a[None], aux)) if mcfg.n_experts else 0.0

    cast = lambda p_l: jax.tree.map(lambda w: w.astype(ct), gather_l(p_l))  # a layer's stored weights as computed with

    def layer(x, w, pos, seg):  # w: cast weights -> (the layer's output, its router losses (moe.py; 0 for a dense MLP))
        x, _, aux = model.block(mcfg, x, w, pos, None, seg)
        return x, jnp.asarray(moe_loss(aux), jnp.float32)
    mesh = shard["batch"].mesh  # an abstract mesh (a plan's lowering) has no devices: not TPU
    tpu = isinstance(mesh, jax.sharding.Mesh) and mesh.devices.flat[0].platform == "tpu"

    def train_step(params, opt_state, batch, step):
        update = _updater(cfg, opt, params, opt_state, step)
        tokens, seg, mask = model.batch_parts(batch)  # seg, mask: packed instruction data (else None)
        pos = jnp.arange(tokens.shape[1]) if seg is None else model.positions(seg)  # [T] or [B, T]
        # On TPU the stacks travel through both loops with their middle axes merged, [L, D, N, H] as [L, D·N, H]:
        # XLA:TPU lays a 4-axis stack out with N before D inside the loops, so it copies every stack into and
        # out of them (13B AdamW: 155 GB of temporaries); merged, the one layout is the stored one (the same
        # bytes, even in TPU's tiles of the last two axes), and a layer is reshaped inside, which moves one
        # layer at most. XLA:CPU keeps the stored layout anyway, and the reshapes cost it copies (+3 GB at 13B).
        S = _part(opt_state, ["blocks"], step=False)
        shapes = jax.tree.map(lambda w: w.shape[1:], (params["blocks"], S))
        P, S = jax.tree.map(lambda w: w.reshape(w.shape[0], -1, w.shape[-1]) if w.ndim > 3 and tpu else w,
                            (params["blocks"], S))
        at = lambda tree, sh, l, keep=False: jax.tree.map(
            lambda w, s: jax.lax.dynamic_slice_in_dim(w, l, 1).reshape((1,) * keep + s), tree, sh)
        # forward: each layer keeps what its backward pass needs, as the unfused step does, but for its weights
        # (read again from the stacks); under remat only each layer's input, x [B, T, D] (per-block checkpointing)
        x, embed_vjp = jax.vjp(lambda E: gather("embed", E).astype(ct)[tokens], params["embed"])  # [B, T, D]
        kept = {}
        def fwd(x, p_l):
            w = cast(jax.tree.map(jnp.reshape, p_l, shapes[0]))
            if mcfg.remat:
                y, r = layer(x, w, pos, seg)
                return y, (x, r)
            (y, r), vjp = jax.vjp(lambda x, w: layer(x, w, pos, seg), x, w)
            res, kept["vjp"] = _without(vjp, w)
            return y, (res, r)
        x, (res, router) = jax.lax.scan(fwd, x, P, unroll=mcfg.unroll and not mcfg.remat)  # res: stacked over L; router [L]: router losses
        head = lambda x, U: model.head_loss(model.rms_norm(x), gather("unembed", U), tokens, mcfg, mask)
        loss, head_vjp = jax.vjp(head, x, params["unembed"])
        dx, dU = head_vjp(jnp.ones_like(loss))  # dx [B, T, D]
        loss = loss + router.sum() if mcfg.n_experts else loss
        unembed, s_unembed = update({"unembed": dU}, _part(opt_state, ["unembed"]), {"unembed": params["unembed"]})

        def back(carry, inp):  # layer l: its gradient, then at once its new weights and state
            dx, P, S, done = carry
            P, S = put(P, S, *done)  # layer l + 1's, written before this layer is read (see put)
            l, res = inp
            w, cast_vjp = jax.vjp(cast, at(P, shapes[0], l))
            layer_vjp = (jax.vjp(lambda x, w: layer(x, w, pos, seg), res, w)[1] if mcfg.remat  # recomputed
                         else kept["vjp"](res, w))
            dx, dw = layer_vjp((dx, jnp.ones((), jnp.float32)))  # d(loss)/d(router loss) = 1
            (g,) = cast_vjp(dw)
            state = {"step": opt_state["step"], **at(S, shapes[1], l, keep=True)}
            new, state = update({"blocks": jax.tree.map(lambda g: g[None], g)}, state,
                                {"blocks": at(P, shapes[0], l, keep=True)}, l)
            return (dx, P, S, (new["blocks"], {k: v for k, v in state.items() if k != "step"}, l)), None

        def put(P, S, new, state, l):
            """Write layer l's new weights and state into the stacks. One iteration late, so that every read of
            the stacks in an iteration comes after its write: XLA can only update a buffer in place when all of
            its reads are ordered before the write, and the layer's backward pass reads its old weights in
            operations the update does not depend on; written in the same iteration, every stack is copied."""
            put1 = lambda tree, new: jax.tree.map(
                lambda w, n: jax.lax.dynamic_update_slice_in_dim(w, n.reshape(1, *w.shape[1:]), l, 0), tree, new)
            return put1(P, new), put1(S, state)

        L = router.shape[0]
        last = (at(P, shapes[0], L - 1, keep=True), at(S, shapes[1], L - 1, keep=True), L - 1)  # rewritten unchanged
        # never unrolled (mcfg.unroll is the forward's): unrolled, XLA:CPU copies every stack instead of updating it in
        # place (the 30M model at batch 1: 114 stack copies, 600 MB a step, -11% tokens/s)
        (dx, P, S, done), _ = jax.lax.scan(back, (dx, P, S, last), (jnp.arange(L), res), reverse=True)
        P, S = put(P, S, *done)
        blocks, s_blocks = jax.tree.map(lambda w, s: w.reshape(L, *s), (P, S), shapes)
        (dE,) = embed_vjp(dx)
        embed, s_embed = update({"embed": dE}, _part(opt_state, ["embed"]), {"embed": params["embed"]})
        new = {**embed, "blocks": blocks, **unembed}
        return new, _merge([s_embed, s_unembed, {"step": s_embed["step"], **s_blocks}]), loss
    return train_step
