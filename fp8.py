"""FP8 matmuls with per-tensor current scaling (FP8-LM, Peng et al. 2023; flax's fp8_ops): `matmul_dtype =
"float8"` runs each block's projections (q, k, v, o, the MLP's up and down, the experts') in FP8, everything
else (attention scores, norms, the output layer, the loss, the optimizer) as before.

Forward: both operands to float8_e4m3fn (3 mantissa bits, max 448), each scaled by its own amax so that its
largest element lands on 448 ("current" scaling: the scale of this very tensor, not a history's). Backward: the
output's gradient to float8_e5m2 (2 mantissa bits, max 57344: gradients need range more than precision), and
the two gradient matmuls take it against the saved e4m3 operands. The scales are fp32 scalars and the matmul
sees dequantized operands, convert(fp8) x scale, which is the pattern XLA:GPU rewrites into one cuBLASLt FP8
GEMM with the scales as its alpha (on Hopper and later; NVIDIA's JAX-Toolbox notes). Elsewhere (CPU, older
GPUs) the same expression runs in the compute dtype: every value is rounded to FP8 exactly as on a GPU, so a
CPU run shows FP8's numerics, not its speed.
"""
from functools import partial

import jax
import jax.numpy as jnp

E4M3, E5M2 = jnp.float8_e4m3fn, jnp.float8_e5m2
MAX = {E4M3: 448.0, E5M2: 57344.0}  # each format's largest finite value (e4m3fn has no inf: beyond it, NaN)


def quantize(x, dtype, scale=None):
    """x -> (x / scale in dtype, saturated at ±MAX, scale: an fp32 scalar). scale None: amax(|x|) / MAX (1 for
    an all-zero x), so the largest |x| is the format's largest value and nothing saturates."""
    if scale is None:
        amax = jnp.max(jnp.abs(x)).astype(jnp.float32)
        scale = jnp.where(amax > 0, amax / MAX[dtype], 1.0)
    return jnp.clip(x.astype(jnp.float32) / scale, -MAX[dtype], MAX[dtype]).astype(dtype), scale


def dequantize(q, scale, dtype):
    """q in FP8 -> q · scale in dtype (the form XLA:GPU folds into the FP8 GEMM)."""
    return q.astype(dtype) * scale.astype(dtype)


@partial(jax.custom_vjp, nondiff_argnums=(0,))
def einsum(eq, x, w):
    """jnp.einsum(eq, x, w) of two operands in one compute dtype, through FP8: e4m3 operands, e5m2 gradient."""
    return _fwd(eq, x, w)[0]


def _fwd(eq, x, w):
    (qx, sx), (qw, sw) = quantize(x, E4M3), quantize(w, E4M3)
    y = jnp.einsum(eq, dequantize(qx, sx, x.dtype), dequantize(qw, sw, w.dtype))
    return y, (qx, sx, qw, sw)  # the residuals in FP8: a quarter of fp32's bytes


def _bwd(eq, res, g):
    qx, sx, qw, sw = res
    x, w, g = dequantize(qx, sx, g.dtype), dequantize(qw, sw, g.dtype), dequantize(*quantize(g, E5M2), g.dtype)
    # einsum is linear in each operand: transposing it costs just the two gradient matmuls
    (dx,) = jax.linear_transpose(lambda x: jnp.einsum(eq, x, w), x)(g)
    (dw,) = jax.linear_transpose(lambda w: jnp.einsum(eq, x, w), w)(g)
    return dx, dw


einsum.defvjp(_fwd, _bwd)


def einsum_for(matmul_dtype):
    """The einsum a model config's block matmuls use: this file's for 'float8', else jnp.einsum."""
    return einsum if matmul_dtype == "float8" else jnp.einsum


def matmul_for(matmul_dtype):
    """x [..., K] @ w [K, N] as a model config's block matmuls run it: through FP8 for 'float8', else jnp.matmul
    (the MLP's `@`, so that the default model lowers to the very program it did before FP8 existed)."""
    return (lambda x, w: einsum("...k,kn->...n", x, w)) if matmul_dtype == "float8" else jnp.matmul
