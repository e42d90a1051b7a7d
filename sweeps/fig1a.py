# Paper Fig. 1a (and Fig. 3, robustness) in miniature: the best validation loss at each batch size, 1 to 256
# sequences, for SGD without momentum, Adafactor and Adam with β1 from t1 and β2 from a fixed t2, every run
# on the same 2M tokens (configs/mini.py). Each (optimizer, batch size) gets an LR grid in factors of 2
# that the tune rule widens until its best point has three neighbours on each side (LR ×1/8 … ×8 around
# the best at every batch size: the robustness experiment); Adam's t2 is then scaled ×1/8 … ×8 at the
# best LR at batch 1 and 256, and the best LR and one either side get seeds 1 and 2 (the best by the mean
# over seeds: a best that moves gets its new neighbours seeded). docs/experiments.md has the results;
# figures.py plots them.
from math import log2

from sweep import grid

BATCH = [1, 4, 16, 64, 256]
T = 128  # configs/mini.py's seq_len
# first LR guesses: lr at batch 1 × B^k (the paper: Adam's tuned LR grows far slower than √B), snapped to
# the grid 1e-3 · 2^n shared by every batch size
GUESS = {"sgd": (0.2, 0.5), "adafactor": (1.6e-2, 0.25), "adamw": (4e-3, 0.25)}


def lrs(opt, B):
    lr0, k = GUESS[opt]
    center = 1e-3 * 2 ** round(log2(lr0 * B ** k / 1e-3))
    return [center, center / 2, center * 2]  # the center first: early results already span every group


def adam_betas(B):
    """t1: 10k tokens (78 steps at batch 1, as the paper's tuned 40k of T 512), but at least β1 = 0.9's
    half-life at large batch (the paper's tuned t1 grows with the batch); t2 fixed (configs/mini.py)."""
    return dict(t1=float(max(10_000, round(-B * T / log2(0.9)))), t2=200_000.0)


config = "configs/mini.py"
points = [dict(optimizer=o, batch_size=B, lr=lr, **(adam_betas(B) if o == "adamw" else {}))
          for i in range(3) for o in GUESS for B in BATCH for lr in lrs(o, B)[i:i + 1]]
tune = [dict(key="lr", factor=2, margin=3),
        dict(key="t2", around="lr", factors=[1 / 8, 1 / 4, 1 / 2, 2, 4, 8],
             where=lambda p: p["optimizer"] == "adamw" and p["batch_size"] in (1, 256)),
        dict(key="seed", around="lr", values=[1, 2], span=1)]
csv = "assets/sweeps/fig1a.csv"
