"""The paper's transformer (Marek et al. 2025, Sec. 3 / App. A), pure JAX.

Pre-norm decoder: RMSNorm without scale (the model has no 1-D parameters at all), qk-norm over the
head dim before RoPE, GELU (tanh) MLP of width 4D, no biases, untied input/output embeddings, final
RMSNorm, fp32 cross-entropy with the last position of each sequence unscored. Parameters are a plain
nested dict; the L blocks are stacked on a leading axis and run with `lax.scan`, so 24 layers
compile as fast as 2.

Legend: B batch, T sequence, D width, L layers, H head dim, N heads (= D / H), V vocab, F MLP width.
"""
import math
from dataclasses import dataclass
from functools import partial

import jax
import jax.numpy as jnp


@dataclass(frozen=True)
class Config:
    d_model: int = 384  # D
    n_layers: int = 6  # L
    seq_len: int = 512  # T
    vocab_size: int = 50257  # V (GPT-2)
    head_dim: int = 128  # H; the paper uses 128 everywhere, N = D / H
    mlp_ratio: int = 4  # F = mlp_ratio * D
    param_dtype: str = "float32"
    compute_dtype: str = "float32"
    remat: bool = False  # recompute each block in the backward pass (per-block checkpointing)
    unroll: bool = False  # unroll the scan over layers: L x the compile time, no stacked per-layer buffers
    z_loss: float = 0.0  # weight of mean(logsumexp(logits)^2), keeps output logits from drifting
    rope_base: float = 10_000.0
    ce_chunk: int = 2048  # vocabulary columns per cross-entropy chunk (0: the whole vocabulary at once)

    def __post_init__(self):
        if self.d_model % self.head_dim:
            raise ValueError(f"d_model={self.d_model} must be a multiple of head_dim={self.head_dim}")

    @property
    def n_heads(self):
        return self.d_model // self.head_dim


def init(cfg: Config, key):
    """Projections xavier-uniform, embedding N(0, 1/D) (paper App. A). Blocks stacked on axis 0."""
    D, L, V, H, N, F = cfg.d_model, cfg.n_layers, cfg.vocab_size, cfg.head_dim, cfg.n_heads, cfg.mlp_ratio * cfg.d_model
    dt = jnp.dtype(cfg.param_dtype)

    def xavier(key, shape, fan_in, fan_out):
        lim = math.sqrt(6 / (fan_in + fan_out))
        return jax.random.uniform(key, shape, jnp.float32, -lim, lim).astype(dt)

    ks = jax.random.split(key, 8)
    return {
        "embed": (jax.random.normal(ks[0], (V, D), jnp.float32) / math.sqrt(D)).astype(dt),  # [V, D]
        "blocks": {
            "q": xavier(ks[1], (L, D, N, H), D, D),  # [L, D, N, H]
            "k": xavier(ks[2], (L, D, N, H), D, D),
            "v": xavier(ks[3], (L, D, N, H), D, D),
            "o": xavier(ks[4], (L, N, H, D), D, D),  # [L, N, H, D]
            "up": xavier(ks[5], (L, D, F), D, F),  # [L, D, F]
            "down": xavier(ks[6], (L, F, D), F, D),  # [L, F, D]
        },
        "unembed": xavier(ks[7], (D, V), D, V),  # [D, V]
    }


def rms_norm(x, eps=1e-6):
    """RMSNorm without a learned scale, computed in fp32 for stability."""
    x32 = x.astype(_f32(x))
    return (x32 * jax.lax.rsqrt(jnp.mean(x32 * x32, axis=-1, keepdims=True) + eps)).astype(x.dtype)


def _f32(x):
    """At least fp32 (bf16 -> fp32; fp64 stays fp64, so gradient checks in x64 mode are exact)."""
    return jnp.promote_types(x.dtype, jnp.float32)


def rope(x, pos, base):
    """Rotary embedding on [B, T, N, H] at integer positions pos [T] (half-split convention)."""
    H = x.shape[-1]
    freq = base ** (-jnp.arange(0, H // 2, dtype=jnp.float32) / (H // 2))  # [H/2]
    ang = pos[:, None] * freq.astype(_f32(x))  # [T, H/2]
    sin, cos = jnp.sin(ang)[None, :, None], jnp.cos(ang)[None, :, None]  # [1, T, 1, H/2]
    x1, x2 = jnp.split(x.astype(_f32(x)), 2, axis=-1)
    return jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1).astype(x.dtype)


def block(cfg: Config, x, p, pos, cache=None):
    """One pre-norm block. x [B, t, D]; pos [t] absolute positions; cache (k, v) [B, S, N, H] or None.

    Without a cache attention is causal over x itself (training). With a cache the new k, v are
    written at pos and queries attend to every cached key at a position <= their own (sampling)."""
    h = rms_norm(x)
    q = jnp.einsum("btd,dnh->btnh", h, p["q"])  # [B, t, N, H]
    k = jnp.einsum("btd,dnh->btnh", h, p["k"])
    v = jnp.einsum("btd,dnh->btnh", h, p["v"])
    q, k = rope(rms_norm(q), pos, cfg.rope_base), rope(rms_norm(k), pos, cfg.rope_base)  # qk-norm, then RoPE
    if cache is None:
        a = causal_attention(q, k, v)  # [B, t, N, H]
    else:
        k = jax.lax.dynamic_update_slice_in_dim(cache[0], k, pos[0], axis=1)  # [B, S, N, H]
        v = jax.lax.dynamic_update_slice_in_dim(cache[1], v, pos[0], axis=1)
        mask = pos[:, None] >= jnp.arange(k.shape[1])[None, :]  # [t, S]
        a = jax.nn.dot_product_attention(q, k, v, mask=mask[None, None])
        cache = (k, v)
    x = x + jnp.einsum("btnh,nhd->btd", a, p["o"])
    h = rms_norm(x)
    x = x + gelu(h @ p["up"]) @ p["down"]  # [B, t, D]
    return x, cache


def causal_attention(q, k, v):
    """Causal self-attention of q, k, v [B, T, N, H] in two query halves. The first half sees only the
    first half of the keys, so the quarter of the T x T scores that the mask would zero is never made;
    XLA's jax.nn.dot_product_attention makes all of them (3-5% of the 30M model's step on CPU)."""
    T = q.shape[1]
    if T % 2:
        return jax.nn.dot_product_attention(q, k, v, is_causal=True)
    c = T // 2
    first = jax.nn.dot_product_attention(q[:, :c], k[:, :c], v[:, :c], is_causal=True)  # [B, T/2, N, H]
    mask = c + jnp.arange(c)[:, None] >= jnp.arange(T)[None, :]  # [T/2, T]: query c + i sees keys <= c + i
    second = jax.nn.dot_product_attention(q[:, c:], k, v, mask=mask[None, None])
    return jnp.concatenate([first, second], axis=1)


@jax.custom_vjp
def gelu(x):
    """GELU, tanh form (= jax.nn.gelu(x, approximate=True)), with a hand-written derivative that reuses
    the forward's tanh. Autodiff's version recomputes it inside the [B, T, F] backward fusion, which XLA:CPU
    then also transposes: 5% of the 30M model's train step."""
    return _gelu_fwd(x)[0]


_C = math.sqrt(2 / math.pi)


def _gelu_fwd(x):
    t = jnp.tanh(_C * (x + 0.044715 * x**3))
    return 0.5 * x * (1 + t), (x, t)


def _gelu_bwd(res, g):
    x, t = res  # d/dx [x (1 + t) / 2] = (1 + t) / 2 + x (1 - t²) C (1 + 3·0.044715 x²) / 2
    return (g * 0.5 * (1 + t + x * (1 - t * t) * _C * (1 + 3 * 0.044715 * x * x)),)


gelu.defvjp(_gelu_fwd, _gelu_bwd)


def hidden(params, tokens, cfg: Config, cache=None, start=0):
    """tokens [B, t] int -> final normed hidden states [B, t, D] in the compute dtype (and the updated
    KV cache when one is given: {'k', 'v'} each [L, B, S, N, H]; start: position of tokens[:, 0])."""
    ct = jnp.dtype(cfg.compute_dtype)
    p = jax.tree.map(lambda w: w.astype(ct), params)  # weights may be stored in bf16 or fp32
    x = p["embed"][tokens]  # [B, t, D]
    pos = start + jnp.arange(tokens.shape[1])  # [t]

    def body(x, layer):
        p_l, c_l = layer
        return block(cfg, x, p_l, pos, c_l)

    if cfg.remat:
        body = jax.checkpoint(body, policy=jax.checkpoint_policies.nothing_saveable)
    xs = (p["blocks"], None if cache is None else (cache["k"], cache["v"]))
    x, new = jax.lax.scan(body, x, xs, unroll=cfg.unroll)  # unrolled, XLA:CPU runs the 30M model 4% faster
    return rms_norm(x), (None if cache is None else {"k": new[0], "v": new[1]})


def forward(params, tokens, cfg: Config, cache=None, start=0):
    """tokens [B, t] -> logits [B, t, V] in fp32 (and the new KV cache when one is given)."""
    h, cache_out = hidden(params, tokens, cfg, cache, start)
    logits = jnp.dot(h, params["unembed"].astype(h.dtype), preferred_element_type=_f32(h))  # [B, t, V]
    return logits if cache is None else (logits, cache_out)


def init_cache(cfg: Config, batch_size, max_len):
    shape = (cfg.n_layers, batch_size, max_len, cfg.n_heads, cfg.head_dim)  # [L, B, S, N, H]
    return {"k": jnp.zeros(shape, cfg.compute_dtype), "v": jnp.zeros(shape, cfg.compute_dtype)}


def loss_fn(params, tokens, cfg: Config):
    """Mean next-token cross-entropy over positions 0..T-2 of tokens [B, T] (last position unscored)."""
    h, _ = hidden(params, tokens, cfg)
    D = h.shape[-1]
    h = h[:, :-1].reshape(-1, D)  # [M, D], M = B·(T-1)
    nll, lse = cross_entropy(h, params["unembed"].astype(h.dtype), tokens[:, 1:].reshape(-1), cfg.ce_chunk)
    loss = nll.mean()
    if cfg.z_loss:
        loss = loss + cfg.z_loss * jnp.mean(lse**2)
    return loss


def _column_chunks(V, c):
    c = c or V
    return [(i, min(c, V - i)) for i in range(0, V, c)]


@partial(jax.custom_vjp, nondiff_argnums=(3,))
def cross_entropy(h, W, targets, chunk):
    """nll [M] and logsumexp [M] (fp32) of the logits h @ W, h [M, D], W [D, V], targets [M].

    The [M, V] logits are never stored: they are made `chunk` vocabulary columns at a time (an online
    logsumexp across chunks) and made again in the backward pass. With V = 50257 the full logits
    are 200 kB per token; chunks stay in cache, where a memory-bound pass would not (and on an
    accelerator they would be the largest activation of all)."""
    return _ce_fwd(h, W, targets, chunk)[0]


def _ce_fwd(h, W, targets, chunk):
    f32 = _f32(h)
    m = jnp.full(h.shape[:1], -jnp.inf, f32)  # running max [M]
    s = jnp.zeros(h.shape[:1], f32)  # running sum of exp(logit - m)
    for i, c in _column_chunks(W.shape[1], chunk):
        lg = jnp.dot(h, W[:, i:i + c], preferred_element_type=f32)  # [M, c]
        mn = jnp.maximum(m, lg.max(-1))
        s = s * jnp.exp(m - mn) + jnp.exp(lg - mn[:, None]).sum(-1)
        m = mn
    lse = m + jnp.log(s)
    tl = jnp.sum(h.astype(f32) * W[:, targets].T.astype(f32), -1)  # target logits from gathered columns
    return (lse - tl, lse), (h, W, targets, lse)


def _ce_bwd(chunk, res, g):
    """d nll / d logits = softmax - onehot and d lse / d logits = softmax. The softmax part is made chunk
    by chunk; the one-hot part touches one column per row, so it is a gather and a scatter at the end
    instead of a compare-and-select over every [M, c] chunk."""
    h, W, targets, lse = res
    g_nll, g_lse = g  # [M] each
    f32 = _f32(h)
    dh, dW, hT = jnp.zeros(h.shape, f32), [], _materialized_T(h)  # hT [D, M]
    for i, c in _column_chunks(W.shape[1], chunk):
        Wc = W[:, i:i + c]
        dl = jnp.exp(jnp.dot(h, Wc, preferred_element_type=f32) - lse[:, None]) * (g_nll + g_lse)[:, None]  # [M, c]
        dW.append(jnp.dot(hT, dl.astype(h.dtype), preferred_element_type=f32))  # [D, c]
        dh += jnp.dot(dl.astype(h.dtype), Wc.T, preferred_element_type=f32)
    dW = jnp.concatenate(dW, axis=1).at[:, targets].add(-(h.astype(f32) * g_nll[:, None]).T)  # [D, V]
    dh -= g_nll[:, None] * W[:, targets].T.astype(f32)
    return dh.astype(h.dtype), dW.astype(W.dtype), None


cross_entropy.defvjp(_ce_fwd, _ce_bwd)


def _materialized_T(x):
    """x.T as its own array. XLA folds a transpose into the dot that uses it, and XLA:CPU runs the
    resulting xᵀ·y (contracting both operands' leading axis) at ~60% of a plain product's speed for the
    cross-entropy's shapes; the barrier keeps the [D, M] copy (1 MB) and the fast form."""
    return jax.lax.optimization_barrier(x.T) if jax.default_backend() == "cpu" else x.T


def count_params(cfg: Config):
    """Paper Table 1 conventions: non-embedding 12·L·D² (for N·H = D, F = 4D); active adds one V·D
    embedding matrix; total counts both untied embeddings."""
    D, L, V, F = cfg.d_model, cfg.n_layers, cfg.vocab_size, cfg.mlp_ratio * cfg.d_model
    nonembed = L * (4 * D * cfg.n_heads * cfg.head_dim + 2 * D * F)
    return {"nonembed": nonembed, "active": nonembed + V * D, "total": nonembed + 2 * V * D}


def flops_per_token(cfg: Config):
    """Training FLOPs per token, 6·N + 12·L·T·D (PaLM App. B), N = non-embedding + output embedding.
    The input embedding is a gather, not a matmul, so it costs no FLOPs."""
    N = count_params(cfg)["active"]
    return 6 * N + 12 * cfg.n_layers * cfg.seq_len * cfg.d_model
