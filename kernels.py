"""Fast paths: each function here equals a plain JAX expression (named in its docstring, and checked
against it in tests/test_kernels.py) and exists only for the speed it buys, measured on the 30M model's
train step on 2 CPU cores (A/B in one process). model.py calls them; a reader checking the model
against the paper can read each as its plain expression.

    causal_attention   jax.nn.dot_product_attention(q, k, v, is_causal=True)   3-5% (CPU; cuDNN's on a GPU)
    gelu               jax.nn.gelu(x, approximate=True)                        5%
    cross_entropy      l = h @ W: (logsumexp(l) - l[target], logsumexp(l))     the [M, V] logits are never
                       stored; in it: one-hot as a gather 4%, hᵀ copied 5% (11% at batch 4), chunks 3-9%
    keep_freed_memory  (no expression: glibc malloc settings)                  1.1-1.3x
"""
import ctypes
import math
from functools import partial

import jax
import jax.numpy as jnp


def attention_implementation(q, platform=None):
    """Which causal attention runs for q [B, T, N, H] on this platform (jax.default_backend() at trace time):
    'cudnn' (flash attention: the T x T scores never in memory) on an NVIDIA GPU when its limits allow it,
    fp16/bf16 and H a multiple of 8 up to 128 (256 from Hopper; 128 is safe everywhere); on CPU 'halves'
    (below) when T is even; else 'xla', which jax.nn.dot_product_attention picks by itself on every platform."""
    platform = platform or jax.default_backend()
    H = q.shape[-1]
    if platform in ("gpu", "cuda"):
        return "cudnn" if q.dtype in (jnp.bfloat16, jnp.float16) and H % 8 == 0 and H <= 128 else "xla"
    return "halves" if platform == "cpu" and q.shape[1] % 2 == 0 else "xla"


def causal_attention(q, k, v, implementation="auto"):
    """Causal self-attention of q, k, v [B, T, N, H]: jax.nn.dot_product_attention(q, k, v, is_causal=True) by
    the implementation named ('auto': attention_implementation's choice). 'halves' computes two query halves:
    the first sees only the first half of the keys, so the quarter of the T x T scores that the mask would
    zero is never made, which XLA's implementation makes (3-5% of the 30M model's step on CPU)."""
    impl = attention_implementation(q) if implementation == "auto" else implementation
    if impl == "halves" and q.shape[1] % 2:  # halves need an even T
        impl = "xla"
    if impl != "halves":
        return jax.nn.dot_product_attention(q, k, v, is_causal=True, implementation=impl)
    c = q.shape[1] // 2
    first = jax.nn.dot_product_attention(q[:, :c], k[:, :c], v[:, :c], is_causal=True)  # [B, T/2, N, H]
    mask = c + jnp.arange(c)[:, None] >= jnp.arange(2 * c)[None, :]  # [T/2, T]: query c + i sees keys <= c + i
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


def _column_chunks(V, c):
    c = c or V
    return [(i, min(c, V - i)) for i in range(0, V, c)]


@partial(jax.custom_vjp, nondiff_argnums=(3,))
def cross_entropy(h, W, targets, chunk):
    """nll [M] and logsumexp [M] (fp32) of the logits h @ W, h [M, D], W [D, V], targets [M].

    The [M, V] logits are never stored: they are made `chunk` vocabulary columns at a time (an online
    logsumexp across chunks) and made again in the backward pass. With V = 50257 the full logits
    are 200 kB per token; chunks stay in cache, where a memory-bound pass would not (and on an
    accelerator they would be the largest activation of all). 2048-column chunks: 3-9% over 8192."""
    return _ce_fwd(h, W, targets, chunk)[0]


def _ce_fwd(h, W, targets, chunk):
    f32 = jnp.promote_types(h.dtype, jnp.float32)  # fp32, or fp64 in the x64 gradient checks
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
    by chunk; the one-hot part touches one column per row, so it is a scatter of the rows whose target is in
    the chunk (the others dropped) instead of a compare-and-select over every [M, c] chunk (4%). Each chunk's
    dW is summed in fp32 and stored in W's dtype: no [D, V] fp32 gradient exists (1 GB at 13B, fused.py)."""
    h, W, targets, lse = res
    g_nll, g_lse = g  # [M] each
    f32 = jnp.promote_types(h.dtype, jnp.float32)
    dh, dW, hT = jnp.zeros(h.shape, f32), [], _materialized_T(h)  # hT [D, M]
    onehot = -(h.astype(f32) * g_nll[:, None]).T  # [D, M]: column targets[m] of dW gets onehot[:, m]
    for i, c in _column_chunks(W.shape[1], chunk):
        Wc = W[:, i:i + c]
        dl = jnp.exp(jnp.dot(h, Wc, preferred_element_type=f32) - lse[:, None]) * (g_nll + g_lse)[:, None]  # [M, c]
        col = jnp.where((targets >= i) & (targets < i + c), targets - i, c)  # c: out of the chunk, dropped
        dWc = jnp.dot(hT, dl.astype(h.dtype), preferred_element_type=f32).at[:, col].add(onehot, mode="drop")
        dW.append(dWc.astype(W.dtype))  # [D, c]
        dh += jnp.dot(dl.astype(h.dtype), Wc.T, preferred_element_type=f32)
    dW = jnp.concatenate(dW, axis=1)  # [D, V]
    dh -= g_nll[:, None] * W[:, targets].T.astype(f32)
    return dh.astype(h.dtype), dW, None


cross_entropy.defvjp(_ce_fwd, _ce_bwd)


def _materialized_T(x):
    """x.T as its own array. XLA folds a transpose into the dot that uses it, and XLA:CPU runs the
    resulting xᵀ·y (contracting both operands' leading axis) at ~60% of a plain product's speed for the
    cross-entropy's shapes; the barrier keeps the [D, M] copy (1 MB) and the fast form (5% at batch 1)."""
    return jax.lax.optimization_barrier(x.T) if jax.default_backend() == "cpu" else x.T


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
