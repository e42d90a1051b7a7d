"""μP (maximal update parametrization, Yang & Hu 2021; μTransfer, Yang et al. 2022, "Tensor Programs V"):
how each weight's init and learning rate scale with the model's width, so that an LR tuned on a narrow model
stays the best LR of a wide one. The whole rule is the table below; model.init reads its init column and
optim.py its LR column. With m = d_model / base_width, μP equals the standard parametrization (SP, the
paper's model) bit for bit at m = 1: base_width is the width the LRs were tuned at (configs/lm30m.py: 384).

Why per type: at width D a vector's coordinates should stay Θ(1) at init and move by Θ(1) per step. A hidden
matrix sums D inputs, so its init is ∝ 1/√D (std × m^-1/2 against the base), and an Adam step, which moves
every weight by ~η, moves its output by ~D·η once the update lines up with the input: LR × 1/m. The input
embedding is a lookup (no sum over D): init and Adam LR constant. The readout sums D Θ(1) features into a
logit that must stay Θ(1) after training, and starts o(1): init × 1/m and Adam LR × 1/m (Tensor Programs V
Table 3; its Table 8's forward multiplier 1/m on the logits is the same training dynamics for Adam, so this
model needs no forward multiplier at all: μP costs nothing per step). Width grows by heads N = D / H at a
fixed head width H, so the attention scale 1/√H is unchanged (with qk-norm the logits are bounded anyway).

Other optimizers (derived in docs/mup.md, checked by benchmarks/coord_check.py and tests/test_mup.py):
  SGD (Table 3): a step is η·gradient, and the backward signal at width D is Θ(1/D): embedding LR × m,
    hidden × 1, readout × 1/m.
  signum: a step of ±η per weight, like Adam's: Adam's column.
  Adafactor with relative_step (its step is η·RMS(W)·û, û of RMS ≤ 1): RMS(W) already scales as the init:
    hidden × m^-1/2 of the m^-1 needed, readout × m^-1 of m^-1 -> LR × m^-1/2 for hidden, × 1 elsewhere.
  Muon orthogonalizes q, k, v per head [D, H] and o per head [H, D], scaled by √max(1, fan_out/fan_in):
    a head's q changes by √(D/H)·η per coordinate (needs × m^-1/2); o's N heads' updates share their output
    direction (the same gradient dy) and add up N-fold (needs × 1/m); up [D, 4D] and down [4D, D] are
    whole matrices at a width-independent fan ratio: × 1. Its embeddings take AdamW: Adam's column.
Weight decay is not scaled: the decay per step, LR × weight_decay, stays the base run's (issue #28: AdamW
keeps LR × weight decay fixed).
"""
import math

PARAMETRIZATIONS = ("sp", "mup")
# the router [D, E] of an MoE (moe.py) is a readout: D Θ(1) features summed into E (fixed) logits, as unembed
GROUP = {"embed": "input", "unembed": "output", "router": "output",
         **dict.fromkeys(("q", "k", "v", "o", "up", "down"), "hidden")}

# init std against the base width's (SP's formula read at base_width), as a power of m
INIT_POWER = {"input": 0.0, "hidden": -0.5, "output": -1.0}
# LR multiplier as a power of m, per optimizer and weight ("hidden" rows of Muon are per weight name)
LR_POWER = {
    "adamw": {"input": 0.0, "hidden": -1.0, "output": -1.0},
    "signum": {"input": 0.0, "hidden": -1.0, "output": -1.0},
    "sgd": {"input": 1.0, "hidden": 0.0, "output": -1.0},
    "adafactor": {"input": 0.0, "hidden": -0.5, "output": 0.0},
    "muon": {"input": 0.0, "output": -1.0, "q": -0.5, "k": -0.5, "v": -0.5, "o": -1.0, "up": 0.0, "down": 0.0,
             "router": -0.5},  # the router [D, E] is orthogonalized like a head's q [D, H]: E fixed as H is
}


def width_mult(d_model, base_width):
    """m = D / base_width (base_width 0: the run's own width, m = 1)."""
    return d_model / (base_width or d_model)


def init_scale(name, parametrization, d_model, base_width):
    """The factor on weight `name`'s init std, against SP's formula read at the base width (1.0 under SP)."""
    return 1.0 if parametrization == "sp" else width_mult(d_model, base_width) ** INIT_POWER[GROUP[name]]


def lr_power(name, optimizer, relative_step=True):
    """The power of m in weight `name`'s LR multiplier for this optimizer (Adafactor without relative_step
    steps like Adam)."""
    table = LR_POWER["adamw" if optimizer == "adafactor" and not relative_step else optimizer]
    return table.get(name, table.get(GROUP[name]))


def lr_scales(parametrization, d_model, base_width, optimizer, relative_step=True):
    """{weight name: LR multiplier} for optim.py, or None under SP or at m = 1 (nothing to scale: the step
    lowers to exactly SP's program)."""
    m = width_mult(d_model, base_width)
    if parametrization == "sp" or m == 1:
        return None
    return {name: m ** lr_power(name, optimizer, relative_step) for name in GROUP}


def describe(cfg, lr, muon_lr=None):
    """Lines for the dry run: each weight group's init std factor and effective peak LR under cfg."""
    p, D, base, opt = cfg["parametrization"], cfg["d_model"], cfg["base_width"], cfg["optimizer"]
    m = width_mult(D, base)
    head = (f"parametrization {p}" + (f": width {D} = {m:g} x base_width {base or D}" if p == "mup" else
                                      " (standard: every LR is the run's)"))
    if p == "sp":
        return [head]
    lines = [head, "  weight    init std x   LR x      peak LR"]
    for name in (n for n in GROUP if n != "router" or cfg.get("n_experts")):
        peak = muon_lr if opt == "muon" and name not in ("embed", "unembed") else lr  # Muon: every block weight
        s = m ** lr_power(name, opt)
        lines.append(f"  {name:8s}  {init_scale(name, p, D, base):<10.4g}   {s:<8.4g}  {peak * s:.4g}")
    return lines


def check(parametrization, d_model, base_width):
    """A one-line reason this width / base pair is not usable, or None."""
    if parametrization not in PARAMETRIZATIONS:
        return f"parametrization={parametrization!r} must be one of {', '.join(map(repr, PARAMETRIZATIONS))}"
    if base_width < 0:
        return f"base_width={base_width} must be >= 0 (0: the run's own d_model)"
    return None


if __name__ == "__main__":  # the table at a few widths over base 384 (configs/lm30m.py)
    for D in (384, 768, 2048):
        print(f"d_model {D}, base 384, m = {width_mult(D, 384):g}:")
        for opt in LR_POWER:
            print(f"  {opt:9s} " + "  ".join(f"{n} {width_mult(D, 384) ** lr_power(n, opt):.3g}" for n in GROUP))
