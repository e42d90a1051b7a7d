"""Mixture of Experts MLP (issue #29, docs/moe.md): each token's MLP is top_k of E expert MLPs, chosen by a
router, so the model holds E experts' weights but runs top_k of them per token (Switch, GShard, ST-MoE).

Routing, per token, in fp32 (a bf16 router flips near-tied choices):
  logits r = h·W_r [E]; p = softmax(r); the top_k experts by p, weights w = their p renormalized to sum 1.
Capacity, per sequence: expert e takes at most C = ceil(capacity_factor · top_k · T / E) of a sequence's tokens
  (T = seq_len; C <= T), first come first served in order of position. A token's choice past C is dropped: that
  expert adds nothing to it, and a token all of whose choices are dropped passes through the residual alone.
  Counting in position order keeps the model causal: whether token t is dropped depends on tokens <= t only,
  so training, evaluation and sampling with a KV cache (which keeps each position's experts) route alike.
Dispatch with static shapes (so it runs inside lax.scan, on CPU, sharded): expert e has C slots per sequence;
  each kept choice gets the next free slot of its expert, the slots are filled by a gather of token rows, the
  experts run as one batched matmul [B, E, C, D] x [E, D, F], and each token gathers its k results back, weighted
  by w. Gathers move B·T·k rows instead of the B·T·E·C-long one-hot einsums of GShard's dispatch masks.
Losses (added to the training loss for each layer; their weights are config keys):
  balance = E · Σ_e f_e·P_e (Switch, eq. 4), f_e the share of the sequence's top_k·T choices that pick e (before
    capacity), P_e the mean of p_e over the sequence; 1 at uniform routing; mean over sequences, so a batch's loss
    is the mean of its sequences' (micro-batches and sharding change nothing). Weight router_aux_weight (~0.01).
  z = mean over tokens of logsumexp(r)² (ST-MoE eq. 5): keeps router logits small. Weight router_z_loss (1e-3).

Legend: B batch, t tokens in this call, S cache length, D width, F expert width, E experts, k top_k, C capacity.
"""
import math

import jax
import jax.numpy as jnp

import fp8
from kernels import gelu


def capacity(cfg):
    """C: the most tokens of one sequence an expert takes."""
    return min(cfg.seq_len, math.ceil(cfg.capacity_factor * cfg.top_k * cfg.seq_len / cfg.n_experts))


def route(cfg, h, router):
    """h [B, t, D] -> router logits [B, t, E] (at least fp32), probabilities, the top_k experts [B, t, k] (most
    probable first) and their renormalized weights [B, t, k]."""
    f32 = jnp.promote_types(h.dtype, jnp.float32)
    logits = jnp.einsum("btd,de->bte", h.astype(f32), router.astype(f32))
    probs = jax.nn.softmax(logits, axis=-1)
    w, experts = jax.lax.top_k(probs, cfg.top_k)
    return logits, probs, experts, w / w.sum(-1, keepdims=True)


def earlier(experts, E, routes=None, pos=None):
    """[B, t, E]: how many choices of each expert the sequence made before each token. Without a cache, by an
    exclusive cumulative sum over t; with one, from routes [B, S, k] (every position's experts, this call's
    already written; -1 where nothing is) at the positions before pos [B, t]."""
    if routes is None:
        a = jax.nn.one_hot(experts, E, dtype=jnp.int32).sum(-2)  # [B, t, E]
        return jnp.cumsum(a, axis=1) - a
    a = jax.nn.one_hot(routes, E, dtype=jnp.float32).sum(-2)  # [B, S, E]; one_hot(-1) is all zeros
    before = (jnp.arange(routes.shape[1]) < pos[..., None]).astype(jnp.float32)  # [B, t, S]
    return jnp.einsum("bts,bse->bte", before, a).astype(jnp.int32)  # counts < 2^24: exact in fp32


def mlp(cfg, h, p, routes=None, pos=None):
    """The MoE MLP of normed input h [B, t, D] with a layer's weights p (router [D, E], up [E, D, F], down
    [E, F, D]) -> (output [B, t, D], aux: this layer's balance and z losses, dropped fraction, max / mean load;
    routes [B, S, k] with this call's experts written at pos [B, t] when a cache's routes are given, else None)."""
    B, t, D = h.shape
    E, k, C = cfg.n_experts, cfg.top_k, capacity(cfg)
    logits, probs, experts, w = route(cfg, h, p["router"])  # [B, t, E], [B, t, E], [B, t, k], [B, t, k]
    if routes is not None:  # each row writes its t tokens' experts at its own position, as the KV cache
        write = jax.vmap(lambda r, new, p0: jax.lax.dynamic_update_slice_in_dim(r, new, p0, axis=0))
        routes = write(routes, experts, pos[:, 0])
    rank = jnp.take_along_axis(earlier(experts, E, routes, pos), experts, axis=-1)  # [B, t, k] place in its queue
    keep = rank < C  # [B, t, k]
    # slots: a call of t tokens fills at most min(C, t) of an expert's (sampling: t = 1, one slot, not C)
    Cc = min(C, t)
    chosen = jax.nn.one_hot(experts, E, dtype=jnp.int32) * keep[..., None]  # [B, t, k, E] kept choices
    n = chosen.sum(2)  # [B, t, E]
    free = jnp.take_along_axis(jnp.cumsum(n, axis=1) - n, experts, axis=-1)  # [B, t, k] the call's earlier keeps
    slot = jnp.where(keep, experts * Cc + free, E * Cc)  # [B, t, k]; E·Cc: no slot (dropped)
    rows = jnp.broadcast_to(jnp.arange(t)[:, None], (t, k))
    token = jax.vmap(lambda s: jnp.full(E * Cc, t).at[s.ravel()].set(rows.ravel(), mode="drop"))(slot)  # [B, E·Cc]
    x = jnp.take_along_axis(jnp.pad(h, ((0, 0), (0, 1), (0, 0))), token[..., None], axis=1)  # [B, E·Cc, D]; row t: 0
    x = x.reshape(B, E, Cc, D)
    einsum = fp8.einsum_for(cfg.matmul_dtype)  # jnp.einsum, or through FP8 (fp8.py)
    y = einsum("becf,efd->becd", gelu(einsum("becd,edf->becf", x, p["up"])), p["down"])  # [B, E, Cc, D]
    back = jnp.minimum(slot, E * Cc - 1).reshape(B, t * k, 1)  # each choice's slot (a dropped one's weight is 0)
    y = jnp.take_along_axis(y.reshape(B, E * Cc, D), back, axis=1).reshape(B, t, k, D)
    out = jnp.einsum("btk,btkd->btd", w * keep, y.astype(w.dtype)).astype(h.dtype)  # combined in fp32
    load = jax.nn.one_hot(experts, E, dtype=w.dtype).sum(-2)  # [B, t, E] choices before capacity
    aux = dict(balance=E * jnp.mean(jnp.sum(load.mean(1) / k * probs.mean(1), axis=-1)),
               z=jnp.mean(jax.nn.logsumexp(logits, axis=-1) ** 2),
               dropped=1 - keep.mean(), max_load=E * load.sum((0, 1)).max() / load.sum())
    return out, aux, routes


def loss(cfg, aux):
    """The router losses of the whole model: aux holds each layer's balance and z ([L] each)."""
    return cfg.router_aux_weight * jnp.sum(aux["balance"]) + cfg.router_z_loss * jnp.sum(aux["z"])
