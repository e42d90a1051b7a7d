"""Optimizers (SGD, AdamW, Adafactor, Muon, signum) and learning-rate schedules, in pure JAX.

The paper's central rule (Marek et al. 2025, "The central rule" in shared/paper.md): a decay β applied once
per step of B sequences × T tokens halves a gradient's weight after t = B·T·ln(0.5)/ln(β) tokens, so the
optimizer's memory is set in *tokens*, not steps:  β = 0.5^(B·T / t).  Keep t2 fixed when changing the
batch size (β2 0.95 at B=512 becomes 0.9999 at B=1); β2 0.95 kept at B=1 averages v over only ~14 sequences.

Every optimizer is an (init, update) pair over parameter pytrees. update returns fp32 *updates*, which the
caller adds to fp32 copies of the params (and may round back to bf16 stochastically, see rounding.py).
Run `python optim.py` to print the paper's 30M β2 table and the optimizer-state sizes of a GPT-2 matrix;
tests: `python -m pytest -q tests/test_optim.py`.
"""
import math
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

import mup

f32 = jnp.float32


class Optimizer(NamedTuple):
    init: Callable  # params -> state (a dict pytree holding an int32 'step')
    update: Callable  # (grads, state, params) -> (fp32 updates, new state); params_new = params + updates


# ---------------------------------------------------------------- betas as token half-lives ("The central rule")

def half_life_to_beta(t_tokens: float, tokens_per_step: float) -> float:
    """β = 0.5^(B·T / t): the per-step decay whose memory halves after t tokens."""
    if not (t_tokens > 0 and tokens_per_step > 0):
        raise ValueError(f"half-life and tokens per step must be > 0, got t={t_tokens}, B·T={tokens_per_step}")
    return 0.5 ** (tokens_per_step / t_tokens)


def beta_to_half_life(beta: float, tokens_per_step: float) -> float:
    """t = B·T·ln(0.5)/ln(β): tokens after which a gradient's weight in the EMA has halved (β=0 -> 0)."""
    if not (0 <= beta < 1 and tokens_per_step > 0):
        raise ValueError(f"need 0 <= beta < 1 and tokens per step > 0, got beta={beta}, B·T={tokens_per_step}")
    return 0.0 if beta == 0 else tokens_per_step * math.log(0.5) / math.log(beta)


def resolve_betas(b1, b2, t1, t2, tokens_per_step) -> tuple[float, float]:
    """Each moment is given as a β or as a half-life t in tokens, never both. Neither: b1=0.9, b2=0.95
    (GPT-3's AdamW betas); hyperparams() never leaves β2 to this default: it passes t2 = DEFAULT_T2."""
    out = []
    for i, b, t, default in ((1, b1, t1, 0.9), (2, b2, t2, 0.95)):
        if b is not None and t is not None:
            raise ValueError(f"give b{i} or t{i}, not both (got b{i}={b}, t{i}={t})")
        beta = default if b is None and t is None else b if t is None else half_life_to_beta(t, tokens_per_step)
        if not 0 <= beta < 1:
            raise ValueError(f"b{i} must be in [0, 1), got {beta}")
        out.append(float(beta))
    return out[0], out[1]


# ---------------------------------------------------------------- learning-rate schedules

def warmup_cosine(peak_lr: float, total_steps: int, warmup_frac: float = 0.05) -> Callable:
    """Linear warmup from 0 over the first warmup_frac of steps, then cosine decay to 0 (paper recipe).
    Equals optax.warmup_cosine_decay_schedule(0, peak_lr, round(warmup_frac·total_steps), total_steps)."""
    if total_steps < 1 or not 0 <= warmup_frac < 1 or peak_lr < 0:
        raise ValueError(f"need total_steps >= 1, 0 <= warmup_frac < 1, peak_lr >= 0; got "
                         f"{total_steps}, {warmup_frac}, {peak_lr}")
    w = int(round(warmup_frac * total_steps))

    def lr(step):
        s = jnp.asarray(step, f32)  # fp32 holds integers exactly up to 2^24 ≈ 16.8M steps
        frac = jnp.clip((s - w) / max(total_steps - w, 1), 0.0, 1.0)
        return jnp.where(s < w, peak_lr * s / max(w, 1), 0.5 * peak_lr * (1 + jnp.cos(jnp.pi * frac)))
    return lr


def constant(lr: float) -> Callable:
    """Constant LR (the paper's fine-tuning runs)."""
    return lambda step: jnp.asarray(lr, f32)


# ---------------------------------------------------------------- optimizers

def _lr(lr, step):
    return lr(step) if callable(lr) else jnp.asarray(lr, f32)


def _prepare(grads, clip_norm):
    """Grads to (at least) fp32, then optional global-norm clipping g <- g·min(1, c/|g|) (off in the paper)."""
    g = jax.tree.map(lambda x: x.astype(jnp.promote_types(x.dtype, f32)), grads)  # fp64 stays (x64 tests)
    if clip_norm > 0:
        norm = jnp.sqrt(sum(jnp.sum(x * x) for x in jax.tree.leaves(g)))
        g = jax.tree.map(lambda x: jnp.where(norm < clip_norm, x, x / norm * clip_norm), g)
    return g


def _mult(lr_scale, path):
    """The LR multiplier of the weight at `path` (lr_scale: {weight name: factor}, mup.lr_scales; None: 1)."""
    return 1.0 if lr_scale is None else lr_scale.get(str(getattr(path[-1], "key", path[-1])), 1.0)


def _each(lr_scale, f, *trees):
    """f(its LR multiplier, *leaves) for each weight: μP's per-weight LRs. The multiplier scales the step, not
    the decoupled weight decay (whose LR × weight_decay stays the base run's)."""
    return jax.tree_util.tree_map_with_path(lambda path, *x: f(_mult(lr_scale, path), *x), *trees)


def _times(s, x):
    return x if s == 1.0 else s * x  # 1.0 (SP): the very program without multipliers


def _zeros(params):
    return jax.tree.map(lambda p: jnp.zeros(p.shape, jnp.promote_types(p.dtype, f32)), params)  # bf16 -> fp32 state


def sgd(lr, b1: float = 0.0, weight_decay: float = 0.0, clip_norm: float = 0.0, lr_scale=None) -> Optimizer:
    """SGD, optionally with EMA momentum m = β1·m + (1−β1)·g (paper App. B). The EMA form keeps the step size
    independent of β1, unlike heavy-ball m = β·m + g. Without momentum the state is only the step count."""
    def init(params):
        state = {"step": jnp.zeros([], jnp.int32)}
        if b1 > 0:
            state["m"] = _zeros(params)
        return state

    def update(grads, state, params):
        g, eta = _prepare(grads, clip_norm), _lr(lr, state["step"])
        new = {"step": state["step"] + 1}
        if b1 > 0:
            g = new["m"] = jax.tree.map(lambda m, g: b1 * m + (1 - b1) * g, state["m"], g)
        # decoupled weight decay, multiplied by the LR as in optax.adamw: Δp = −η·(m + λ·p)
        return _each(lr_scale, lambda s, m, p: -eta * (_times(s, m) + weight_decay * p.astype(f32)), g, params), new
    return Optimizer(init, update)


def adamw(lr, b1=0.9, b2=0.95, eps=1e-8, weight_decay=0.0, clip_norm=0.0, lr_scale=None) -> Optimizer:
    """Adam with bias correction and decoupled weight decay (Loshchilov & Hutter 2019); equals optax.adamw.
    lr_scale (every optimizer here): {weight name: LR multiplier} (μP, mup.lr_scales), None: none."""
    def init(params):
        return {"step": jnp.zeros([], jnp.int32), "m": _zeros(params), "v": _zeros(params)}

    def update(grads, state, params):
        g, eta, t = _prepare(grads, clip_norm), _lr(lr, state["step"]), state["step"] + 1
        m = jax.tree.map(lambda m, g: b1 * m + (1 - b1) * g, state["m"], g)
        v = jax.tree.map(lambda v, g: b2 * v + (1 - b2) * g * g, state["v"], g)

        def step(s, m, v, p):  # m̂ = m/(1−β1^t), v̂ = v/(1−β2^t), Δp = −η·(s·m̂/(√v̂ + ε) + λ·p)
            m_hat, v_hat = m / (1 - b1 ** t), v / (1 - b2 ** t)
            return -eta * (_times(s, m_hat / (jnp.sqrt(v_hat) + eps)) + weight_decay * p.astype(f32))
        return _each(lr_scale, step, m, v, params), {"step": t, "m": m, "v": v}
    return Optimizer(init, update)


def factor_axes(shape, min_dim_size_to_factor):
    """(a, b): the second-largest and largest axes, if both are >= min_dim_size_to_factor; else None.
    Same rule as optax, so a stacked [L, D, F] weight is factored per layer over (D, F)."""
    if len(shape) < 2:
        return None
    a, b = (int(i) for i in np.argsort(shape)[-2:])
    return (a, b) if shape[a] >= min_dim_size_to_factor else None


def signum(lr, b1=0.9, weight_decay=0.0, clip_norm=0.0, lr_scale=None) -> Optimizer:
    """Signum (Bernstein et al. 2018): the sign of the EMA momentum, Δp = −η·(sign(m) + λ·p). The sign
    ignores the momentum's scale, so the authors' heavy-ball trace gives the same steps. b1 0: signSGD."""
    base = sgd(1.0, b1)  # its update with LR 1 is −m: the momentum, or the gradient when b1 = 0

    def update(grads, state, params):
        neg_m, new = base.update(_prepare(grads, clip_norm), state, params)
        eta = _lr(lr, state["step"])
        return _each(lr_scale, lambda s, n, p: -eta * (_times(s, jnp.sign(-n)) + weight_decay * p.astype(f32)),
                     neg_m, params), new
    return Optimizer(base.init, update)


NS_COEFFS = (3.4445, -4.7750, 2.0315)  # the quintic of Jordan et al. (2024), as the authors and optax use it


def newton_schulz(x, steps=5, eps=1e-8):
    """≈ U·Vᵀ of each matrix x [..., m, n] = U·S·Vᵀ, by 5 steps of the quintic X <- aX + (bA + cA²)X,
    A = X·Xᵀ, after scaling X to Frobenius norm 1 (so every singular value is <= 1). The coefficients trade
    exactness for speed: the singular values land near 1, in roughly [0.7, 1.2], not at 1."""
    a, b, c = NS_COEFFS
    wide = x.shape[-2] <= x.shape[-1]  # iterate on the wide form: A is the smaller Gram matrix
    x = x if wide else jnp.swapaxes(x, -2, -1)
    x = x / (jnp.linalg.norm(x, axis=(-2, -1), keepdims=True) + eps)
    for _ in range(steps):
        A = x @ jnp.swapaxes(x, -2, -1)  # [..., m, m]
        x = a * x + (b * A + c * A @ A) @ x
    return x if wide else jnp.swapaxes(x, -2, -1)


# The (fan-in, fan-out) axes of each stacked block weight: the matrices the authors orthogonalize are
# per layer and per head (their q/k/v kernel [3, N, D, H] and output [N, H, D] end in a head's matrix);
# ours put other axes last (q, k, v [L, D, N, H]), so each is moved to its place first. Counted from the
# end; every other weight (o [L, N, H, D], up [L, D, F], down [L, F, D]) has its matrix last already.
MUON_AXES = {"q": (-3, -1), "k": (-3, -1), "v": (-3, -1)}


def orthogonalize(x, axes):
    """Newton-Schulz on the (fan-in, fan-out) matrices of x [..., in, ..., out, ...], each scaled by
    √max(1, fan_out / fan_in) (Muon's width rule, as the authors and optax apply it)."""
    y = jnp.moveaxis(x, axes, (-2, -1))
    y = newton_schulz(y) * math.sqrt(max(1.0, y.shape[-1] / y.shape[-2]))
    return jnp.moveaxis(y, (-2, -1), axes)


def muon(lr, muon_lr, muon_b1=0.95, b1=0.9, b2=0.95, eps=1e-8, weight_decay=0.0, clip_norm=0.0,
         lr_scale=None) -> Optimizer:
    """Muon (Jordan et al. 2024) as the authors run it: every block weight (params['blocks']) follows the
    orthogonalized EMA momentum m = β·m + (1−β)·g (bias-corrected, no Nesterov) at LR muon_lr, with no
    weight decay; the embeddings take AdamW with the run's Adam settings (lr, b1, b2, eps, weight_decay).
    State: m for the blocks (4 bytes a weight), Adam's m and v for the embeddings."""
    adam = adamw(lr, b1, b2, eps, weight_decay, lr_scale=lr_scale)
    split = lambda t: ({k: v for k, v in t.items() if k == "blocks"}, {k: v for k, v in t.items() if k != "blocks"})

    def init(params):
        blocks, rest = split(params)
        return {"step": jnp.zeros([], jnp.int32), "mu": _zeros(blocks), **{k: v for k, v in adam.init(rest).items()
                                                                           if k != "step"}}

    def update(grads, state, params):
        (g, g_rest), t = split(_prepare(grads, clip_norm)), state["step"] + 1
        mu = jax.tree.map(lambda m, g: muon_b1 * m + (1 - muon_b1) * g, state["mu"], g)
        eta = _lr(muon_lr, state["step"])
        u = jax.tree_util.tree_map_with_path(  # m̂ = m / (1 − β^t): a scalar, kept to match optax's eps
            lambda path, m: -eta * _times(_mult(lr_scale, path), orthogonalize(
                m / (1 - muon_b1 ** t), MUON_AXES.get(path[-1].key, (-2, -1)))), mu)
        u_rest, s = adam.update(g_rest, {"step": state["step"], "m": state["m"], "v": state["v"]}, split(params)[1])
        return {**u, **u_rest}, {"step": t, "mu": mu, "m": s["m"], "v": s["v"]}
    return Optimizer(init, update)


ADAFACTOR_DECAYS = ("fixed", "power")  # β2 every step from t2 (ours) | 1 − (t+1)^(−b2) (the authors')


def layer_blocks(params, layers="blocks", fused=("q", "k", "v"), experts=("up", "down")):
    """Adafactor's blocks as the authors keep them (one weight per layer): each leaf of params[layers] is
    stacked [L, ...] and is L blocks, one per layer, and the `fused` leaves of a layer are one block (their
    q, k, v are one [3, N, D, H] kernel); an MoE's `experts` leaves [L, E, ...] are L·E blocks, one per expert
    matrix (moe.py); every other leaf is one block. A tree like params of (block name, leading axes: 0 the
    whole leaf, 1 per layer, 2 per layer and expert) pairs."""
    def name(path, x):
        keys = [str(getattr(k, "key", k)) for k in path]
        lead = (2 if keys[-1] in experts and x.ndim == 4 else 1) if keys[0] == layers and x.ndim > 1 else 0
        return ("/".join(keys[:-1] + ["+".join(fused)]) if lead and keys[-1] in fused else "/".join(keys)), lead
    return jax.tree_util.tree_map_with_path(name, params)


def block_rms(tree, blocks):
    """RMS of each block of tree (see layer_blocks), broadcast back to each leaf: [L, 1, ...], [L, E, 1, ...]
    or []."""
    if blocks is None:
        return jax.tree.map(lambda x: jnp.sqrt(jnp.mean(x * x)), tree)
    leaves, ids = jax.tree.leaves(tree), jax.tree.leaves(blocks, is_leaf=lambda b: isinstance(b, tuple))
    sums, counts = {}, {}
    for x, (b, lead) in zip(leaves, ids):
        axes = tuple(range(lead, x.ndim)) if lead else None  # per layer (and expert), or the whole leaf
        sums[b] = sums.get(b, 0.0) + jnp.sum(x * x, axis=axes, keepdims=bool(lead))
        counts[b] = counts.get(b, 0) + x.size // math.prod(x.shape[:lead])
    return jax.tree.unflatten(jax.tree.structure(tree), [jnp.sqrt(sums[b] / counts[b]) for b, _ in ids])


def adafactor(lr, b2=0.95, eps=(1e-30, 1e-3), clip_threshold=1.0, relative_step=False,
              min_dim_size_to_factor=128, b1=0.0, weight_decay=0.0, clip_norm=0.0, per_layer=False,
              decay="fixed", lr_scale=None) -> Optimizer:
    """Adafactor (Shazeer & Stern 2018): a rank-1 factored second moment V ≈ r·cᵀ/mean(r) for matrices, so the
    state of an R×C matrix is R + C floats; update RMS clipped to clip_threshold per block.
    eps = (ε1 added to g², ε2 the floor of RMS(param) when relative_step scales the LR by it).
    per_layer: clipping and RMS(param) are measured per block of layer_blocks (per layer, q, k, v as one
    block, as the authors' per-layer weights have it) instead of per leaf (optax's blocks).
    decay 'fixed' (default): β2 = b2 every step, set from t2 like Adam's (paper "Note on Adafactor").
    decay 'power': the authors' run, their "b2" passed to optax as the exponent c of β2_t = 1 − (t+1)^(−c)
    (t from 0), whose memory grows with the step count and is no fixed half-life in tokens.
    As in optax, no bias correction: while v is small the update is the bias-corrected one times
    1/√(1−β2^t), the same factor across a block, and clipping at RMS 1 (≈ the RMS of g/√E[g²]) removes it.
    Momentum (b1 > 0) is an EMA of the LR-scaled update, as in optax. Weight decay is decoupled and
    multiplied by the LR like AdamW's (optax.adafactor's is not)."""
    eps1, eps2 = eps
    if decay not in ADAFACTOR_DECAYS:
        raise ValueError(f"adafactor decay must be one of {ADAFACTOR_DECAYS}, got {decay!r}")

    def init(params):
        def leaf(p):
            ax = factor_axes(p.shape, min_dim_size_to_factor)
            if ax is None:
                return {"v": jnp.zeros(p.shape, f32)}
            return {"r": jnp.zeros(np.delete(p.shape, ax[1]), f32),  # mean of g² over the largest axis
                    "c": jnp.zeros(np.delete(p.shape, ax[0]), f32)}  # mean of g² over the other axis
        state = {"step": jnp.zeros([], jnp.int32), "v": jax.tree.map(leaf, params)}
        if b1 > 0:
            state["m"] = _zeros(params)
        return state

    def update(grads, state, params):
        g, eta = _prepare(grads, clip_norm), _lr(lr, state["step"])
        beta = b2 if decay == "fixed" else 1 - (state["step"] + 1.0) ** -b2

        def leaf(g, s):  # u = g / √V
            g2 = g * g + eps1
            ax = factor_axes(g.shape, min_dim_size_to_factor)
            if ax is None:
                s = {"v": beta * s["v"] + (1 - beta) * g2}
                return g * s["v"] ** -0.5, s
            a, b = ax
            s = {"r": beta * s["r"] + (1 - beta) * g2.mean(b), "c": beta * s["c"] + (1 - beta) * g2.mean(a)}
            a_r = a - 1 if a > b else a  # axis a inside r, whose axis b was reduced away
            row = (s["r"] / s["r"].mean(a_r, keepdims=True)) ** -0.5
            return g * jnp.expand_dims(row, b) * jnp.expand_dims(s["c"], a) ** -0.5, s

        blocks = layer_blocks(params) if per_layer else None
        leaves, tree = jax.tree.flatten(g)  # state["v"] holds a dict ({r, c} or {v}) where params hold a leaf
        out = [leaf(*x) for x in zip(leaves, tree.flatten_up_to(state["v"]))]
        u = tree.unflatten([o[0] for o in out])
        if clip_threshold:  # update clipping per block: u <- u / max(1, RMS(u)/d) (Shazeer & Stern Sec. 6)
            u = jax.tree.map(lambda u, r: u / jnp.maximum(1.0, r / clip_threshold), u, block_rms(u, blocks))
        if relative_step:  # the step in units of the block's RMS(param), floored at ε2
            scale = block_rms(jax.tree.map(lambda p: p.astype(f32), params), blocks)
            u = jax.tree.map(lambda u, r: u * eta * jnp.maximum(r, eps2), u, scale)
        else:
            u = jax.tree.map(lambda u: u * eta, u)
        u = _each(lr_scale, _times, u)  # μP: before the momentum, which averages the LR-scaled steps
        new = {"step": state["step"] + 1, "v": tree.unflatten([o[1] for o in out])}
        if b1 > 0:
            u = new["m"] = jax.tree.map(lambda m, u: b1 * m + (1 - b1) * u, state["m"], u)
        return jax.tree.map(lambda u, p: -(u + eta * weight_decay * p.astype(f32)), u, params), new
    return Optimizer(init, update)


def build(name: str, lr, b1, b2, eps=None, weight_decay=0.0, clip_norm=0.0, relative_step=True,
          adafactor_decay="fixed", muon_lr=None, muon_b1=None, lr_scale=None) -> Optimizer:
    """Optimizer by name, for model.py's parameter tree. SGD uses b1 (0 = no momentum), not b2 or eps. eps is
    Adam's ε (None -> 1e-8); Adafactor takes only an (ε1, ε2) pair, else its defaults (Adam's ε would floor g²
    far too high), and works per layer (layer_blocks) as the authors' does. relative_step=True (optax's
    default): the paper's Adafactor LRs (0.0032 GPT-3 XL, 5e-3 GPT-2) are in units of RMS(param). Muon takes
    muon_lr and muon_b1 for the blocks (None: DEFAULT_MUON_LR, DEFAULT_MUON_B1) and the rest for Adam.
    lr_scale: {weight name: LR multiplier} (μP: mup.lr_scales), None: every weight at the LR."""
    if name == "sgd":
        return sgd(lr, b1, weight_decay, clip_norm, lr_scale)
    if name == "signum":
        return signum(lr, b1, weight_decay, clip_norm, lr_scale)
    if name == "muon":
        return muon(lr, DEFAULT_MUON_LR if muon_lr is None else muon_lr, DEFAULT_MUON_B1 if muon_b1 is None else muon_b1,
                    b1, b2, 1e-8 if eps is None else eps, weight_decay, clip_norm, lr_scale)
    if name == "adamw":
        return adamw(lr, b1, b2, 1e-8 if eps is None else eps, weight_decay, clip_norm, lr_scale)
    if name == "adafactor":
        e = tuple(eps) if isinstance(eps, (tuple, list)) else (1e-30, 1e-3)
        return adafactor(lr, b2, e, relative_step=relative_step, b1=b1, weight_decay=weight_decay, clip_norm=clip_norm,
                         per_layer=True, decay=adafactor_decay, lr_scale=lr_scale)
    raise ValueError(f"unknown optimizer {name!r}; expected one of {', '.join(map(repr, OPTIMIZERS))}")


OPTIMIZERS = ("sgd", "adamw", "adafactor", "muon", "signum")
# GPT-2 small at batch 1 ("Training recipe"); Muon: its embeddings' Adam; signum: untuned, Adam's (a step of
# ±LR per weight, like Adam's at long β2)
DEFAULT_LR = {"sgd": 0.2, "adamw": 2.4e-3, "adafactor": 5e-3, "muon": 2.4e-3, "signum": 2.4e-3}
DEFAULT_B1 = {"sgd": 0.0, "adamw": 0.9, "adafactor": 0.0, "muon": 0.9, "signum": 0.9}  # no momentum: as the paper runs them
DEFAULT_MUON_LR, DEFAULT_MUON_B1 = 0.02, 0.95  # optax.contrib.muon's (Jordan et al.); the paper tunes both per batch size
DEFAULT_T2 = 10_000_000  # tokens, when neither b2 nor t2 is given: the authors' tuned 30M value at every batch
# size. β2 = 0.95 at every batch size is the setting the paper shows failing at batch 1 (GPT-2: 4.41 vs 3.39).
SCHEDULES = {"cosine": lambda lr, n, warmup: warmup_cosine(lr, n, warmup), "constant": lambda lr, n, warmup: constant(lr)}


def hyperparams(cfg, tokens_per_step) -> dict:
    """A run's optimizer settings with every default filled in: {'lr', 'b1', 'b2'} (betas per step of
    tokens_per_step tokens, from the config's betas or half-lives; see resolve_betas)."""
    name = cfg["optimizer"]
    if name not in OPTIMIZERS:
        raise ValueError(f"unknown optimizer {name!r}; expected one of {', '.join(map(repr, OPTIMIZERS))}")
    b1 = DEFAULT_B1[name] if cfg["b1"] is None and cfg["t1"] is None else cfg["b1"]
    t2 = DEFAULT_T2 if cfg["b2"] is None and cfg["t2"] is None else cfg["t2"]
    b1, b2 = resolve_betas(b1, cfg["b2"], cfg["t1"], t2, tokens_per_step)
    hp = dict(lr=cfg["lr"] or DEFAULT_LR[name], b1=b1, b2=b2)
    if name == "muon":  # its own momentum, as a β or a half-life in tokens
        if cfg["muon_b1"] is not None and cfg["muon_t1"] is not None:
            raise ValueError(f"give muon_b1 or muon_t1, not both (got {cfg['muon_b1']}, {cfg['muon_t1']})")
        b, t = cfg["muon_b1"], cfg["muon_t1"]
        hp.update(muon_lr=cfg["muon_lr"] or DEFAULT_MUON_LR,
                  muon_b1=half_life_to_beta(t, tokens_per_step) if t is not None else DEFAULT_MUON_B1 if b is None else b)
    return hp


def from_config(cfg, hp, n_steps):
    """(optimizer, LR schedule) of a run: cfg's optimizer / schedule / warmup / eps / weight_decay /
    clip_norm / adafactor_decay / state_dtype with the resolved hyperparams hp over n_steps steps (Muon's
    own peak LR on the same schedule), and μP's per-weight LR multipliers (mup.lr_scales; LoRA's adapters take
    the LR as it is)."""
    sched = SCHEDULES[cfg["schedule"]](hp["lr"], n_steps, cfg["warmup"])
    muon_lr = SCHEDULES[cfg["schedule"]](hp["muon_lr"], n_steps, cfg["warmup"]) if "muon_lr" in hp else None
    opt = build(cfg["optimizer"], sched, hp["b1"], hp["b2"], cfg["eps"], cfg["weight_decay"], cfg["clip_norm"],
                adafactor_decay=cfg["adafactor_decay"], muon_lr=muon_lr, muon_b1=hp.get("muon_b1"),
                lr_scale=None if cfg["lora_rank"] else
                mup.lr_scales(cfg["parametrization"], cfg["d_model"], cfg["base_width"], cfg["optimizer"]))
    return stored(opt, cfg["state_dtype"]), sched


def stored(opt, dtype="float32"):
    """The optimizer with its state kept in `dtype`: 'bfloat16' halves its memory (the paper's 16-bit state,
    Fig. 7). init casts the state; update reads it in fp32 and returns it in fp32, which the train step
    rounds back like the weights (stochastically by default: with β2 = 0.9999 at batch size 1, v moves by
    1e-4 of itself per step, far below half a bf16 spacing, so round-to-nearest would freeze it)."""
    if dtype == "float32":
        return opt
    each = lambda state, dt: {k: v if k == "step" else jax.tree.map(lambda x: x.astype(dt), v) for k, v in state.items()}
    return Optimizer(lambda params: each(opt.init(params), dtype),
                     lambda grads, state, params: opt.update(grads, each(state, f32), params))


def state_bytes(name: str, params, b1: float = 0.0) -> int:
    """Bytes of fp32 optimizer state for this param tree, not counting the 4-byte step counter: SGD 0
    (4·P with momentum, as signum), Adam 8·P, Adafactor 4·(R + C) per factored matrix, Muon 4·P of the
    blocks + Adam's 8·P of the embeddings. Leaves may be arrays or jax.ShapeDtypeStruct; nothing is
    allocated (jax.eval_shape)."""
    state = jax.eval_shape(build(name, 0.0, b1, 0.9).init, params)
    return sum(x.size * x.dtype.itemsize for k, v in state.items() if k != "step" for x in jax.tree.leaves(v))


if __name__ == "__main__":
    print("30M, t2 = 10M tokens, T = 512:", *(f"bs {b}: b2 = {half_life_to_beta(10e6, b * 512):.6g}"
                                              for b in (1, 4, 16, 64, 256, 1024, 4096)), sep="\n  ")
    print(f"b2 0.95 at bs 512 x T 1024 = half-life {beta_to_half_life(0.95, 512 * 1024) / 1e6:.2f}M tokens")
    w = {"unembed": jax.ShapeDtypeStruct((768, 50257), f32)}  # GPT-2 small's output embedding
    for opt, b1 in (("sgd", 0.0), ("adamw", 0.9), ("adafactor", 0.0)):
        print(f"{opt:9s} state for a 768 x 50257 matrix: {state_bytes(opt, w, b1) / 2**20:8.2f} MiB")
