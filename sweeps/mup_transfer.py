# μTransfer in miniature (issue #28; docs/mup.md): does the best LR stay put across width under μP (mup.py) and
# drift under SP? Byte models of width 32, 64, 128, 256 (8x; heads of 16, so 2 to 16 heads) at depth 2, T 128,
# 512k tokens each, base width 64 (where μP is SP); Adam at batch 1 and at batch 16, Adafactor and SGD at batch 1;
# 2 seeds. Each (optimizer, batch, parametrization, width, seed) gets an LR grid in factors of 2, started at the
# same LRs for every width and widened by the tune rule until its best has a neighbour on each side.
# figures.py mup draws assets/mup/transfer.png from the CSV.
import math

WIDTHS = [32, 64, 128, 256]
T = 128  # configs/mini.py's seq_len
GROUPS = [("adamw", 1, 4e-3), ("adamw", 16, 1.6e-2), ("adafactor", 1, 1.6e-2), ("sgd", 1, 0.256)]  # first LR guesses


def betas(opt, B):
    """Adam's t1: 2.5k tokens (20 steps at batch 1; configs/mini.py's 10k scaled to this 4x shorter run), at least
    β1 = 0.9's half-life at batch 16; t2 50k tokens (10% of the run, as mini's 200k of 2M) for every β2."""
    return dict(t1=float(max(2_500, round(-B * T / math.log2(0.9))))) if opt == "adamw" else {}


config = "configs/mini.py"
settings = dict(head_dim=16, base_width=64, train_tokens=524_288, eval_tokens=65_536, eval_every=131_072,
                log_every=16_384, ckpt_every=131_072, t2=50_000)
# one group after another (Adam at batch 1 first), each seed's grid whole before the next: a sweep stopped early
# holds whole groups
points = [dict(optimizer=o, batch_size=B, parametrization=p, d_model=D, seed=s, lr=lr * f, **betas(o, B))
          for o, B, lr in GROUPS for s in (0, 1) for p in ("sp", "mup") for D in WIDTHS for f in (1, 0.5, 2)]
tune = [dict(key="lr", factor=2, margin=1)]
csv = "assets/mup/transfer.csv"
