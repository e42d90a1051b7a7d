# The paper's 30M model (Table 1): D 384, L 6, T 512, FineWeb-Edu, 600M tokens (20 per active
# parameter). Adam with the tuned batch-size-1 setting of paper.md: peak LR 0.0017, β1 0.9,
# t2 = 10M tokens (β2 = 0.999965 at B·T = 512). Expect val loss ≈ 3.69 on FineWeb-Edu (Fig. 1).
# Other batch sizes keep t2 fixed: --batch_size=64 --lr=0.003 gives β2 = 0.99773 (paper.md table).
# Without FineWeb (no network) use --data=stdlib to exercise the same model on local text.
out_dir = "out/lm30m"
data = "fineweb-edu"
d_model = 384
n_layers = 6
head_dim = 128
seq_len = 512
unroll = True  # 6 layers unrolled compile as fast and run 4% faster on CPU (no stacked per-layer buffers)
batch_size = 1
train_tokens = 600_000_000
eval_tokens = 10_000_000
eval_every = 50_000_000
log_every = 1_000_000
ckpt_every = 50_000_000
optimizer = "adamw"  # β1 defaults to 0.9 for adamw, 0 (no momentum) for sgd and adafactor
lr = 0.0017
t2 = 10_000_000
