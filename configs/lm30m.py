# The paper's 30M model (Table 1): D 384, L 6, T 512, FineWeb-Edu, 600M tokens (20 per active
# parameter). Adam with t2 = 10M tokens at every batch size, and the authors' tuned peak LR and β1
# half-life t1 per batch size (their lm11m_fwedu_adam.yaml; paper.md): `tuned` below fills lr and t1
# for the run's batch size unless you set them (--batch_size=64 gets lr 0.003, t1 200k tokens; a batch
# size between rows gets the nearest row, and the printed config says which). Expect val loss ≈ 3.69
# at batch size 1 on FineWeb-Edu (Fig. 1). Without FineWeb (no network) use --data=stdlib to exercise
# the same model on local text.
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
optimizer = "adamw"
t2 = 10_000_000  # β2 = 0.999965 at B·T = 512, 0.99773 at B·T = 64·512
tuned = {  # batch size: peak LR and β1 half-life in tokens (β1 = 0.991 at batch 1, not 0.9)
    1: dict(lr=0.0017, t1=40_000), 4: dict(lr=0.002, t1=40_000), 16: dict(lr=0.002, t1=60_000),
    64: dict(lr=0.003, t1=200_000), 256: dict(lr=0.005, t1=1_000_000), 1024: dict(lr=0.005, t1=3_000_000),
    4096: dict(lr=0.0025, t1=6_000_000),
}
