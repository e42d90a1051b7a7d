# Paper Fig. 5 in miniature: Adam with β2 = 0.95 at every batch size (not rescaled), each with its LR tuned
# as in sweeps/fig1a.py, against fig1a's Adam with t2 fixed (β2 = 0.5^(B·T/t2)). Same model, tokens, t1;
# the best LR and one either side with seeds 1 and 2, as fig1a.
from sweep import grid  # noqa: F401 (a sweep file's helpers)

import importlib.util
_spec = importlib.util.spec_from_file_location("fig1a", "sweeps/fig1a.py")
fig1a = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(fig1a)

config = "configs/mini.py"
points = [dict(optimizer="adamw", batch_size=B, lr=lr, t1=fig1a.adam_betas(B)["t1"], b2=0.95, t2=None)
          for i in range(3) for B in fig1a.BATCH for lr in fig1a.lrs("adamw", B)[i:i + 1]]
tune = [dict(key="lr", factor=2, margin=1), dict(key="seed", around="lr", values=[1, 2], span=1)]
csv = "assets/sweeps/fig5.csv"
