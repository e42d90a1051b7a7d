# The budget control of the batch-size claims (issue #31; docs/experiments.md): fig1a's miniature gives every
# batch size 2M tokens, so batch 256 takes 64 steps and every run is still falling steeply. Here Adam and SGD
# at batch 1, 16 and 256 get 4x the tokens (8M: 256 steps at batch 256), each LR grid started at fig1a's best
# (seed 0) and one step either side and widened until its best is inside. Adam's t1 as fig1a's; t2 = 1/60 of
# the run (140k tokens), the paper's fraction (10M of 600M tokens; fig1a's fixed 200k is 10% of its run).
# Does the ranking of batch sizes, and SGD's gap to Adam, hold when batch 256 gets 256 steps?
import importlib.util

_spec = importlib.util.spec_from_file_location("fig1a", "sweeps/fig1a.py")
fig1a = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(fig1a)

TOKENS = 4 * 2_097_152
BEST = {("sgd", 1): 0.256, ("sgd", 16): 0.512, ("sgd", 256): 0.256,  # assets/sweeps/fig1a.csv, seed 0
        ("adamw", 1): 0.002, ("adamw", 16): 0.016, ("adamw", 256): 0.004}

config = "configs/mini.py"
settings = dict(train_tokens=TOKENS, eval_every=TOKENS // 4, log_every=TOKENS // 32, ckpt_every=TOKENS // 8,
                t2=float(round(TOKENS / 60)))
points = [dict(optimizer=o, batch_size=B, lr=lr * f, **({"t1": fig1a.adam_betas(B)["t1"]} if o == "adamw" else {}))
          for f in (1, 0.5, 2) for (o, B), lr in BEST.items()]
tune = [dict(key="lr", factor=2, margin=1)]
csv = "assets/sweeps/budget.csv"
