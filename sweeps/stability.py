# Stability in miniature (issue #28; docs/mup.md): Adam on configs/mini.py (fig1a's model and 2M tokens) at
# batch 1 and at batch 64, at 1x, 4x and 16x of fig1a's best LR for each, with qk-norm on / off and z-loss 0 /
# 1e-4, 2 seeds: divergences, loss spikes (a log window > 0.5 nats above the one before), final loss, and the
# largest attention and output logits the log saw. The paper's argument (Sec. 3): small batches take many small
# steps, so they should need these tricks less. figures.py mup draws assets/mup/stability.png.
import math

T = 128
BEST = {1: 0.002, 64: 0.016}  # fig1a's best Adam LR at these batch sizes (assets/sweeps/fig1a.csv)


def betas(B):
    return dict(t1=float(max(10_000, round(-B * T / math.log2(0.9)))), t2=200_000.0)  # as sweeps/fig1a.py


config = "configs/mini.py"
points = [dict(optimizer="adamw", batch_size=B, lr=BEST[B] * f, qk_norm=qk, z_loss=z, seed=s, **betas(B))
          for s in (0, 1) for f in (1, 4, 16) for B in BEST for qk in (True, False) for z in (0.0, 1e-4)]
csv = "assets/mup/stability.csv"
