"""LoRA (Hu et al. 2021), the fine-tuning baseline the paper compares against (its fine-tuning section:
Gemma 3 4B on MATH, LoRA ≈ 17.0% against ≈ 18.5% for full fine-tuning at batch size 1).

Each targeted block weight W [L, in..., out...] gets two trained factors per layer, A [L, in, r] and
B [L, r, out], and the layer computes with W + (alpha / r)·A·B; W stays frozen (fp32 or bf16). B starts at
zero, so the adapted model starts as the base model. Only A and B have gradients and optimizer state:
at rank r a D x D matrix trains 2·D·r numbers instead of D². The embeddings are not adapted (as the
authors' qwix set-up adapts the linear layers).

A LoRA run's checkpoints hold the frozen base ('params') and the adapters ('lora'); sample.py merges them
on load, and train.py writes the merged weights as a normal run in <out_dir>/merged at the end.

Memory: the adapted weights are made one layer at a time, but autodiff keeps each layer's W + s·A·B for the
backward pass, a copy of every adapted weight, unless the blocks are recomputed: with remat=True (per-block
checkpointing, which the paper's memory accounting assumes) a LoRA step holds the frozen weights, the
adapters, their gradient and state, and activations (benchmarks/bench.py --sections=finetune).
"""
import math
import os

import jax
import jax.numpy as jnp

IN_AXES = {"q": 1, "k": 1, "v": 1, "o": 2, "up": 1, "down": 1}  # the input axes of each block weight after L


def targets(cfg):
    """The block weights cfg['lora_targets'] names ('q,k,v,o,up,down' or a subset)."""
    return [t.strip() for t in cfg["lora_targets"].split(",") if t.strip()]


def scale(cfg):
    """alpha / r, the factor on A·B (lora_alpha 0: alpha = r, a factor of 1)."""
    return (cfg["lora_alpha"] or cfg["lora_rank"]) / cfg["lora_rank"]


def split(shape, name):
    """(fan in, fan out) of one layer's slice of a stacked block weight [L, in..., out...]."""
    a = IN_AXES[name]
    return math.prod(shape[1:1 + a]), math.prod(shape[1 + a:])


def init(params, cfg, key):
    """The adapters of params' targeted block weights: {'blocks': {name: {'a': [L, in, r], 'b': [L, r, out]}}},
    fp32. A ~ U(±1/√in) (peft's default), B = 0: the adapted model equals the base model at step 0."""
    r, out = cfg["lora_rank"], {}
    for name, key in zip(targets(cfg), jax.random.split(key, len(targets(cfg)))):
        w = params["blocks"][name]
        n_in, n_out = split(w.shape, name)
        bound = 1 / math.sqrt(n_in)
        out[name] = {"a": jax.random.uniform(key, (w.shape[0], n_in, r), jnp.float32, -bound, bound),  # [L, in, r]
                     "b": jnp.zeros((w.shape[0], r, n_out), jnp.float32)}  # [L, r, out]
    return {"blocks": out}


def delta(w, ab, s):
    """s·A·B shaped like w: one layer's (w [in..., out...], ab {'a' [in, r], 'b' [r, out]}) or a stack's."""
    return (s * jnp.matmul(ab["a"], ab["b"])).reshape(w.shape)


def adapt(adapters, s):
    """model.hidden's `adapt`: layer l computes with W + s·A·B, formed inside the scan one layer at a time
    (the stacked merged weights never exist; the backward pass forms one layer's dW at a time)."""
    fn = lambda p_l, a_l: {k: w + delta(w, a_l[k], s).astype(w.dtype) if k in a_l else w for k, w in p_l.items()}
    return {"fn": fn, "layers": adapters["blocks"]}


def merge(params, adapters, s):
    """A plain parameter tree: every adapted W replaced by W + s·A·B (in fp32, cast to W's dtype)."""
    blocks = {k: (w.astype(jnp.float32) + delta(w, adapters["blocks"][k], s)).astype(w.dtype)
              if k in adapters["blocks"] else w for k, w in params["blocks"].items()}
    return {**params, "blocks": blocks}


class Split:
    """What a run's optimizer trains and what it holds fixed: every weight (a plain run: base None), or LoRA's
    adapters over the frozen base weights. The train and eval steps take (trained, ..., *frozen)."""

    def __init__(self, trained, base=None, s=None):
        self.trained, self.base, self.s = trained, base, s

    @classmethod
    def of(cls, trees, cfg):
        """From a checkpoint's (or a fresh init's) trees: {'params'} or LoRA's {'params', 'lora'}."""
        return cls(trees["lora"], trees["params"], scale(cfg)) if "lora" in trees else cls(trees["params"])

    @property
    def frozen(self):
        return () if self.base is None else (self.base,)

    def weights(self):
        """A plain parameter tree: the weights, with LoRA's adapters merged in."""
        return self.trained if self.base is None else merge(self.base, self.trained, self.s)

    def trees(self):
        """What a checkpoint holds beside the optimizer state."""
        return {"params": self.trained} if self.base is None else {"params": self.base, "lora": self.trained}


def merged_config(cfg):
    """The config of a LoRA run's merged weights: a normal run in <out_dir>/merged, from the LoRA run."""
    return dict(cfg, out_dir=os.path.join(cfg["out_dir"], "merged"), lora_rank=0, init_from=cfg["out_dir"])


def count(abs_params, cfg):
    """Trained numbers of the adapters: sum over targets of L·r·(in + out)."""
    ws = abs_params["blocks"]
    return sum(ws[n].shape[0] * cfg["lora_rank"] * sum(split(ws[n].shape, n)) for n in targets(cfg))
