# A 4-point sweep of the mini config at a tiny budget: the runner end to end in about a minute.
from sweep import grid

config = "configs/mini.py"
settings = dict(train_tokens=65_536, eval_every=32_768, eval_tokens=8192, log_every=8192, ckpt_every=16_384)
points = grid(optimizer=["adamw", "sgd"], lr=[2e-3, 8e-3])
