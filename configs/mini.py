# The model of the paper's experiments in miniature (sweeps/*.py; docs/experiments.md): a byte-level
# model (V = 256) of the Python standard library, D 64, L 2, T 128, 131k parameters, 2M tokens (16 per
# parameter, about Chinchilla's 20). A run takes about a minute on one core at any batch size, so a sweep
# of ~150 runs fits in a few hours on 2 cores. 2M tokens are 16,384 steps at batch size 1 and 64 at 256,
# where the paper's 30M model has 1.2M and 290 (600M tokens, T 512).
out_dir = "out/mini"
data = "stdlib"
tokenizer = "bytes"
vocab_size = 256
d_model = 64
n_layers = 2
head_dim = 32
seq_len = 128
unroll = True
fused_update = False  # the fused step's per-layer updates are many small ops: slower at this size, and save ~0.5 MB
steps_per_call = 16  # one dispatch per 16 steps: 1.24x the tokens/s at batch size 1 (benchmarks/bench.py)
batch_size = 1
train_tokens = 2_097_152
eval_tokens = 131_072  # the same 1024 held-out sequences at every eval of every run: paired comparisons
eval_every = 524_288  # four evals, the last at the end
log_every = 65_536  # 32 train-loss windows per run: the loss curves
ckpt_every = 524_288  # a killed sweep loses at most a quarter of a run
keep_ckpts = 1
optimizer = "adamw"
lr = 4e-3
t2 = 200_000  # β2 half-life in tokens, 10% of the run (the paper's 10M is 1.7% of 600M; ours is longer
# because the largest batch, 32k tokens per step, would otherwise get β2 < 0.5)
