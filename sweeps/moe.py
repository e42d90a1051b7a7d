# MoE against dense in miniature (issue #29; docs/moe.md): configs/mini.py's byte model (D 64, L 2, T 128, 2M
# tokens) with its dense MLP (F 4D = 256) against 8 experts of F 2D = 128, 2 a token: the same active parameters
# and FLOPs per token (+ a router of 64 x 8), 4x the MLP weights. Adam at batch 1 and at batch 64, each LR tuned on
# a grid of factors of 2 (started at fig1a's best LR, widened until the best has a neighbour on each side), 2 seeds:
# final val loss (the cross-entropy alone: eval leaves out the router losses), tokens/s, the dropped fraction and
# the busiest expert's load. figures.py --moe draws assets/moe/moe.png from the CSV.
import math

T = 128
BEST = {1: 0.002, 64: 0.016}  # fig1a's best Adam LR at these batch sizes (assets/sweeps/fig1a.csv)
MODELS = {"dense": dict(n_experts=0, mlp_ratio=4), "moe": dict(n_experts=8, top_k=2, mlp_ratio=2)}


def betas(B):
    return dict(t1=float(max(10_000, round(-B * T / math.log2(0.9)))), t2=200_000.0)  # as sweeps/fig1a.py


config = "configs/mini.py"
points = [dict(optimizer="adamw", batch_size=B, **MODELS[m], seed=s, lr=BEST[B] * f, **betas(B))
          for B in BEST for s in (0, 1) for m in MODELS for f in (1, 0.5, 2)]
tune = [dict(key="lr", factor=2, margin=1)]
csv = "assets/moe/moe.csv"
