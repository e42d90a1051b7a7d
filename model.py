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

import jax
import jax.numpy as jnp

import fp8
import moe
import mup
from kernels import causal_attention, cross_entropy, gelu  # fast forms of plain expressions (kernels.py)

DTYPES = ("float32", "bfloat16", "float64")  # float64: gradient checks under jax.enable_x64
ATTENTION = ("auto", "xla", "cudnn", "halves")  # kernels.causal_attention's implementations


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
    qk_norm: bool = True  # RMSNorm of each head's q and k before RoPE (the paper's model): bounded attention logits
    parametrization: str = "sp"  # 'sp' (standard) | 'mup': init (and, in optim.py, LRs) scaled with width (mup.py)
    base_width: int = 0  # the width at which μP equals SP (0: d_model)
    n_experts: int = 0  # E: the MLP is a Mixture of Experts (moe.py) of E experts of width F; 0: one dense MLP
    top_k: int = 2  # k: experts per token
    capacity_factor: float = 1.25  # an expert takes at most capacity_factor·k·T/E tokens of a sequence (moe.capacity)
    router_aux_weight: float = 0.01  # weight of the load-balancing loss (Switch's α), per layer
    router_z_loss: float = 1e-3  # weight of the router's z-loss (ST-MoE), per layer
    rope_base: float = 10_000.0
    ce_chunk: int = 2048  # vocabulary columns per cross-entropy chunk (0: the whole vocabulary at once)
    attention: str = "auto"  # causal attention's implementation: 'auto' (kernels.attention_implementation) | 'xla' | 'cudnn' | 'halves'
    matmul_dtype: str = "compute"  # the block projections': 'compute' (compute_dtype) | 'float8' (fp8.py: per-tensor scaled)

    RUN_KEYS = ("d_model", "n_layers", "seq_len", "vocab_size", "head_dim", "mlp_ratio", "param_dtype",
                "compute_dtype", "remat", "unroll", "z_loss", "qk_norm", "parametrization", "base_width", "n_experts",
                "top_k", "capacity_factor", "router_aux_weight", "router_z_loss", "attention", "matmul_dtype")  # a run's

    def __post_init__(self):
        sizes = ("d_model", "n_layers", "seq_len", "vocab_size", "head_dim", "mlp_ratio")
        if bad := [f"{k}={getattr(self, k)}" for k in sizes if getattr(self, k) < 1]:
            raise ValueError(f"{', '.join(bad)}: model sizes must be >= 1")
        if self.seq_len < 2:  # the last position of a sequence is unscored: T 1 has no target
            raise ValueError(f"seq_len={self.seq_len} must be >= 2 (each position predicts the next token)")
        if self.d_model % self.head_dim or self.head_dim % 2:  # RoPE rotates pairs of the head dim
            raise ValueError(f"d_model={self.d_model} must be a multiple of head_dim={self.head_dim}, "
                             "and head_dim even")
        if bad := [f"{k}={getattr(self, k)!r}" for k in ("param_dtype", "compute_dtype") if getattr(self, k) not in DTYPES]:
            raise ValueError(f"{', '.join(bad)} must be one of {', '.join(map(repr, DTYPES))}")
        if self.attention not in ATTENTION or self.matmul_dtype not in ("compute", "float8"):
            raise ValueError(f"attention={self.attention!r}, matmul_dtype={self.matmul_dtype!r}: attention is one of "
                             f"{', '.join(map(repr, ATTENTION))}, matmul_dtype 'compute' or 'float8'")
        if self.z_loss < 0 or self.ce_chunk < 0:
            raise ValueError(f"z_loss={self.z_loss} and ce_chunk={self.ce_chunk} must be >= 0")
        if why := mup.check(self.parametrization, self.d_model, self.base_width):
            raise ValueError(why)
        if self.n_experts < 0 or self.n_experts and not (1 <= self.top_k <= self.n_experts and self.capacity_factor > 0
                                                         and min(self.router_aux_weight, self.router_z_loss) >= 0):
            raise ValueError(f"n_experts={self.n_experts}, top_k={self.top_k}, capacity_factor={self.capacity_factor}, "
                             f"router weights {self.router_aux_weight}, {self.router_z_loss}: need n_experts >= 0 and, "
                             "with experts, 1 <= top_k <= n_experts, capacity_factor > 0, router weights >= 0")

    @property
    def n_heads(self):
        return self.d_model // self.head_dim


def init(cfg: Config, key):
    """The authors' initialization (their pretraining/model.py), in our stacked layout [L, ...]:
    embeddings N(0, 1/D), input [V, D] and output [D, V] alike (so logits h·W start at std 1 after the
    final RMSNorm); every kernel xavier-uniform with jax's fan rule on the authors' kernel shapes, where
    the axes other than the last two are a receptive field that multiplies both fans:
      q, k, v: their [3, N, D, H] kernel: fan_in 3·N·D, fan_out 3·N·H   (ours: three [L, D, N, H])
      o:       their [N, H, D]:            fan_in N·H,   fan_out N·D     (ours: [L, N, H, D])
      up, down: [D, F] and [F, D]:         fan_in, fan_out = their two axes.
    MoE (moe.py): up [L, E, D, F] and down [L, E, F, D] hold E experts, each initialized as the dense MLP; the
    router [L, D, E] is a readout to E logits, N(0, 1/D) like the output embedding (logits of std ~1 at init).
    μP (mup.py): the fans are read at the base width (D0, N0 = D0 / H, F0) and each std is scaled by
    mup.init_scale (m^0, m^-1/2, m^-1 for embedding, hidden, readout); at m = 1 the same numbers as SP."""
    D, L, V, H, N, F = cfg.d_model, cfg.n_layers, cfg.vocab_size, cfg.head_dim, cfg.n_heads, cfg.mlp_ratio * cfg.d_model
    D0 = (cfg.base_width or D) if cfg.parametrization == "mup" else D  # the width the init formulas are read at
    N0, F0 = (N, F) if D0 == D else (D0 / H, cfg.mlp_ratio * D0)
    dt = jnp.dtype(cfg.param_dtype)
    s = lambda name: mup.init_scale(name, cfg.parametrization, D, cfg.base_width)

    def xavier(key, name, shape, fan_in, fan_out):  # U(-a, a), a = √(6 / (fan_in + fan_out)): variance 2 / (fan_in + fan_out)
        lim = math.sqrt(6 / (fan_in + fan_out)) * s(name)
        return jax.random.uniform(key, shape, jnp.float32, -lim, lim).astype(dt)

    def normal(key, name, shape):  # N(0, 1/D)
        return (jax.random.normal(key, shape, jnp.float32) / (math.sqrt(D0) / s(name))).astype(dt)

    ks, E = jax.random.split(key, 8), ((cfg.n_experts,) if cfg.n_experts else ())
    blocks = {
        "q": xavier(ks[1], "q", (L, D, N, H), 3 * N0 * D0, 3 * N0 * H),  # [L, D, N, H]
        "k": xavier(ks[2], "k", (L, D, N, H), 3 * N0 * D0, 3 * N0 * H),
        "v": xavier(ks[3], "v", (L, D, N, H), 3 * N0 * D0, 3 * N0 * H),
        "o": xavier(ks[4], "o", (L, N, H, D), N0 * H, N0 * D0),  # [L, N, H, D]
        "up": xavier(ks[5], "up", (L, *E, D, F), D0, F0),  # [L, D, F] or [L, E, D, F]
        "down": xavier(ks[6], "down", (L, *E, F, D), F0, D0),  # [L, F, D] or [L, E, F, D]
    }
    if cfg.n_experts:
        blocks["router"] = normal(jax.random.fold_in(key, 8), "router", (L, D, cfg.n_experts))  # [L, D, E]
    return {"embed": normal(ks[0], "embed", (V, D)), "blocks": blocks,  # [V, D]
            "unembed": normal(ks[7], "unembed", (D, V))}  # [D, V]


def rms_norm(x, eps=1e-6):
    """RMSNorm without a learned scale, computed in fp32 for stability."""
    x32 = x.astype(_f32(x))
    return (x32 * jax.lax.rsqrt(jnp.mean(x32 * x32, axis=-1, keepdims=True) + eps)).astype(x.dtype)


def _f32(x):
    """At least fp32 (bf16 -> fp32; fp64 stays fp64, so gradient checks in x64 mode are exact)."""
    return jnp.promote_types(x.dtype, jnp.float32)


def rope(x, pos, base):
    """Rotary embedding on [B, T, N, H] at integer positions pos [T], or [B, T] (each row its own: packed
    examples each start at 0, batched prompts of different lengths; half-split convention)."""
    H = x.shape[-1]
    freq = base ** (-jnp.arange(0, H // 2, dtype=jnp.float32) / (H // 2))  # [H/2]
    ang = jnp.atleast_2d(pos)[..., None] * freq.astype(_f32(x))  # [B or 1, T, H/2]
    sin, cos = jnp.sin(ang)[:, :, None], jnp.cos(ang)[:, :, None]  # [B or 1, T, 1, H/2]
    x1, x2 = jnp.split(x.astype(_f32(x)), 2, axis=-1)
    return jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1).astype(x.dtype)


def qkv(cfg: Config, h, p, pos):
    """A block's queries, keys and values [B, t, N, H] of its normed input h [B, t, D]: qk-norm (cfg.qk_norm),
    then RoPE on q and k."""
    einsum = fp8.einsum_for(cfg.matmul_dtype)  # jnp.einsum, or through FP8 (fp8.py)
    q = einsum("btd,dnh->btnh", h, p["q"])  # [B, t, N, H]
    k = einsum("btd,dnh->btnh", h, p["k"])
    v = einsum("btd,dnh->btnh", h, p["v"])
    norm = rms_norm if cfg.qk_norm else (lambda x: x)
    return rope(norm(q), pos, cfg.rope_base), rope(norm(k), pos, cfg.rope_base), v


def block(cfg: Config, x, p, pos, cache=None, segments=None):
    """One pre-norm block. x [B, t, D]; pos [t] or [B, t] positions; cache {'k', 'v'} [B, S, N, H] (and, with
    experts, 'route' [B, S, k]) or None; segments [B, t] int or None. -> (x, cache, aux: moe.mlp's, {} if dense).

    Without a cache attention is causal over x itself (training); with segments (packed examples,
    instruct.py) a query sees only the keys of its own segment. With a cache the new k, v are written at
    each row's pos and queries attend to every cached key at a position <= their own (sampling)."""
    q, k, v = qkv(cfg, rms_norm(x), p, pos)  # [B, t, N, H]
    if cache is not None:  # each row writes its t new keys at its own position: [B, S, N, H]
        pos = jnp.broadcast_to(jnp.atleast_2d(pos), x.shape[:2])  # [B, t]
        write = jax.vmap(lambda c, new, p0: jax.lax.dynamic_update_slice_in_dim(c, new, p0, axis=0))
        k, v = write(cache["k"], k, pos[:, 0]), write(cache["v"], v, pos[:, 0])
        mask = pos[:, :, None] >= jnp.arange(k.shape[1])  # [B, t, S]
        a = jax.nn.dot_product_attention(q, k, v, mask=mask[:, None])
        cache = dict(cache, k=k, v=v)
    elif segments is not None:  # causal within each packed example: [B, 1, t, t]
        same = segments[:, :, None] == segments[:, None, :]
        a = jax.nn.dot_product_attention(q, k, v, mask=same[:, None], is_causal=True)
    else:
        a = causal_attention(q, k, v, cfg.attention)  # [B, t, N, H]; = dot_product_attention(q, k, v, is_causal=True)
    einsum = fp8.einsum_for(cfg.matmul_dtype)
    x = x + einsum("btnh,nhd->btd", a, p["o"])
    h = rms_norm(x)
    if not cfg.n_experts:  # gelu = jax.nn.gelu(approximate=True); matmul: jnp.matmul, or through FP8 (fp8.py)
        matmul = fp8.matmul_for(cfg.matmul_dtype)
        return x + matmul(gelu(matmul(h, p["up"])), p["down"]), cache, {}  # [B, t, D]
    y, aux, routes = moe.mlp(cfg, h, p, None if cache is None else cache["route"], pos)
    return x + y, cache if cache is None else dict(cache, route=routes), aux


def hidden(params, tokens, cfg: Config, cache=None, start=0, segments=None, adapt=None):
    """tokens [B, t] int -> (final normed hidden states [B, t, D] in the compute dtype, the updated KV cache
    when one is given (init_cache), each layer's router aux {name: [L]} ({} if dense)); start: position of
    tokens[:, 0], an int or one per row [B]. segments [B, t]: packed examples (instruct.py), each attending only to itself,
    at positions from 0. adapt (lora.py): (weights of layer l, adapt['layers'] at l) -> the weights
    layer l computes with, applied inside the scan, so one layer's adapted weights exist at a time."""
    ct = jnp.dtype(cfg.compute_dtype)
    p = jax.tree.map(lambda w: w.astype(ct), params)  # weights may be stored in bf16 or fp32
    x = p["embed"][tokens]  # [B, t, D]
    pos = (positions(segments) if segments is not None else
           jnp.reshape(start, (-1, 1)) + jnp.arange(tokens.shape[1]))  # [B or 1, t]

    def body(x, layer):
        p_l, c_l, a_l = layer
        p_l = p_l if adapt is None else jax.tree.map(lambda w: w.astype(ct), adapt["fn"](p_l, a_l))
        x, c_l, aux = block(cfg, x, p_l, pos, c_l, segments)
        return x, (c_l, aux)

    if cfg.remat:
        body = jax.checkpoint(body, policy=jax.checkpoint_policies.nothing_saveable)
    xs = (p["blocks"], cache, None if adapt is None else adapt["layers"])
    # unrolled, XLA:CPU runs the 30M model 4% faster; not with remat, whose recomputation XLA then undoes (a D 256,
    # L 4 step unrolled kept 21 MB, in a loop 17)
    x, (cache, aux) = jax.lax.scan(body, x, xs, unroll=cfg.unroll and not cfg.remat)
    return rms_norm(x), cache, aux


def forward(params, tokens, cfg: Config, cache=None, start=0):
    """tokens [B, t] -> logits [B, t, V] in fp32 (and the new KV cache when one is given)."""
    h, cache_out, _ = hidden(params, tokens, cfg, cache, start)
    logits = jnp.dot(h, params["unembed"].astype(h.dtype), preferred_element_type=_f32(h))  # [B, t, V]
    return logits if cache is None else (logits, cache_out)


def attention_logits(cfg: Config, x, p_l, pos):
    """A block's attention logits q·k/√H [B, N, t, t] (fp32, future keys included) of its input x [B, t, D]."""
    q, k, _ = qkv(cfg, rms_norm(x), p_l, pos)
    return jnp.einsum("btnh,bsnh->bnts", q.astype(jnp.float32), k.astype(jnp.float32)) / math.sqrt(cfg.head_dim)


def layer_by_layer(params, tokens, cfg: Config, f):
    """A forward pass over tokens [B, T] that shows each layer: -> (the embedding output [B, T, D], the final normed
    hidden states, f(causal [T, T], the layer's input, its weights, pos, its output, its router aux) stacked over L)."""
    p = jax.tree.map(lambda w: w.astype(cfg.compute_dtype), params)
    x0 = p["embed"][tokens]  # [B, T, D]
    pos = jnp.arange(tokens.shape[1])
    causal = pos[:, None] >= pos  # [T, T]

    def body(x, p_l):
        y, _, aux = block(cfg, x, p_l, pos)
        return y, f(causal, x, p_l, pos, y, aux)
    x, out = jax.lax.scan(body, x0, p["blocks"])
    return x0, rms_norm(x), out


def activations(params, tokens, cfg: Config):
    """Every activation type of a forward pass over tokens [B, T] (benchmarks/coord_check.py): the embedding
    output [B, T, D], each block's attention logits [L, B, N, T, T] (0 at future keys) and output [L, B, T, D],
    the output logits [B, T, V]; fp32."""
    layer = lambda causal, x, p_l, pos, y, aux: (
        jnp.where(causal, attention_logits(cfg, x, p_l, pos), 0.0), y.astype(jnp.float32))
    x0, h, (attn, out) = layer_by_layer(params, tokens, cfg, layer)
    logits = jnp.dot(h, params["unembed"].astype(h.dtype), preferred_element_type=jnp.float32)  # [B, T, V]
    return dict(embed=x0.astype(jnp.float32), attn_logits=attn, blocks=out, logits=logits)


def watch(params, tokens, cfg: Config):
    """train.py's log-line watch on a forward pass over tokens [B, T], one layer's logits at a time: the largest
    attention logit and output logit (logit growth precedes a blow-up); with experts, the fraction of the choices
    dropped (mean over layers) and the busiest expert's load over the mean (the worst layer's)."""
    def layer(causal, x, p_l, pos, y, aux):
        top = jnp.max(jnp.where(causal, attention_logits(cfg, x, p_l, pos), -jnp.inf))
        return top, {k: aux[k] for k in ("dropped", "max_load") if k in aux}
    _, h, (top, aux) = layer_by_layer(params, tokens, cfg, layer)
    logits = jnp.dot(h, params["unembed"].astype(h.dtype), preferred_element_type=jnp.float32)  # [B, T, V]
    out = dict(max_attn_logit=jnp.max(top), max_logit=jnp.max(logits))
    return out if not aux else dict(out, dropped=aux["dropped"].mean(), max_load=aux["max_load"].max())


def init_cache(cfg: Config, batch_size, max_len):
    """The KV cache of L layers, B rows, S positions: k, v [L, B, S, N, H]; with experts also each position's
    experts [L, B, S, k] (-1: none yet), which moe.mlp counts for its capacity."""
    shape = (cfg.n_layers, batch_size, max_len, cfg.n_heads, cfg.head_dim)  # [L, B, S, N, H]
    cache = {"k": jnp.zeros(shape, cfg.compute_dtype), "v": jnp.zeros(shape, cfg.compute_dtype)}
    if cfg.n_experts:
        cache["route"] = jnp.full((cfg.n_layers, batch_size, max_len, cfg.top_k), -1, jnp.int32)
    return cache


def positions(segments):
    """segments [B, T] (packed examples: equal ids are one example) -> each token's position within its
    example [B, T], so a packed example is encoded as it would be alone (and as sampling encodes it)."""
    T = segments.shape[1]
    new = jnp.concatenate([jnp.ones_like(segments[:, :1], bool), segments[:, 1:] != segments[:, :-1]], axis=1)
    first = jax.lax.cummax(jnp.where(new, jnp.arange(T), 0), axis=1)  # [B, T] where each token's example starts
    return jnp.arange(T) - first


def batch_parts(batch):
    """A batch is tokens [B, T] (text: every next token scored) or a dict of tokens, segments and mask
    [B, T] (instruct.py: packed examples, only completion tokens scored) -> (tokens, segments, mask)."""
    if isinstance(batch, dict):
        return batch["tokens"], batch["segments"], batch["mask"]
    return batch, None, None


def loss_fn(params, batch, cfg: Config, adapt=None):
    """Mean next-token cross-entropy over positions 0..T-2 of tokens [B, T] (last position unscored); of a
    packed batch (batch_parts), the mean over the tokens its mask scores."""
    tokens, segments, mask = batch_parts(batch)
    h, _, aux = hidden(params, tokens, cfg, segments=segments, adapt=adapt)
    loss = head_loss(h, params["unembed"], tokens, cfg, mask)
    return loss + moe.loss(cfg, aux) if cfg.n_experts else loss  # + the router losses of every layer


def head_loss(h, unembed, tokens, cfg: Config, mask=None):
    """loss_fn after the final norm: the output embedding and the loss of final hidden states h [B, T, D].
    mask [B, T]: which tokens count as targets (position t predicts token t + 1); the loss is their mean
    over the whole batch (a token-weighted mean, as the authors fine-tune)."""
    D = h.shape[-1]
    h = h[:, :-1].reshape(-1, D)  # [M, D], M = B·(T-1)
    # nll = logsumexp(h @ W) - (h @ W)[target], made a chunk of vocabulary columns at a time (kernels.py)
    nll, lse = cross_entropy(h, unembed.astype(h.dtype), tokens[:, 1:].reshape(-1), cfg.ce_chunk)
    w = None if mask is None else mask[:, 1:].reshape(-1).astype(nll.dtype)  # [M]
    mean = (lambda x: x.mean()) if w is None else (lambda x: jnp.sum(x * w) / jnp.maximum(w.sum(), 1))
    loss = mean(nll)
    if cfg.z_loss:
        loss = loss + cfg.z_loss * mean(lse**2)
    return loss


def count_params(cfg: Config):
    """Paper Table 1 conventions: non-embedding 12·L·D² (for N·H = D, F = 4D); active adds one V·D
    embedding matrix; total counts both untied embeddings. With experts (moe.py) a token runs top_k of the E
    expert MLPs and the router D·E: non-embedding and active count those, total counts every expert."""
    D, L, V, F, E = cfg.d_model, cfg.n_layers, cfg.vocab_size, cfg.mlp_ratio * cfg.d_model, cfg.n_experts
    attn, mlp = 4 * D * cfg.n_heads * cfg.head_dim, 2 * D * F
    nonembed = L * (attn + (cfg.top_k * mlp + D * E if E else mlp))
    every = L * (attn + (E * mlp + D * E if E else mlp))
    return {"nonembed": nonembed, "active": nonembed + V * D, "total": every + 2 * V * D}


def flops_per_token(cfg: Config):
    """Training FLOPs per token, 6·N + 12·L·T·D (PaLM App. B), N = non-embedding + output embedding.
    The input embedding is a gather, not a matmul, so it costs no FLOPs. With experts N is the active count
    (top_k experts and the router); the dispatch's gathers and unused capacity slots are not counted."""
    N = count_params(cfg)["active"]
    return 6 * N + 12 * cfg.n_layers * cfg.seq_len * cfg.d_model
