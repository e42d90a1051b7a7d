# The default config: a small model on the Python standard library's own source code (about 6M
# GPT-2 tokens, prepared on first use, no download). Trains on 2 CPU cores in about 2 minutes (plus
# tokenizing on first use) with val loss falling from ln(50257) = 10.8 to about 3.5;
# `python sample.py --out_dir=out/tiny` then writes Python-looking text. Batch size 1 with Adam and
# t2 in tokens, as the paper recommends (Sec. 4).
out_dir = "out/tiny"
data = "stdlib"
d_model = 128
n_layers = 2
head_dim = 64
seq_len = 128
batch_size = 1
train_tokens = 100_000
eval_tokens = 16_384
eval_every = 50_000
log_every = 4_096
optimizer = "adamw"  # β1 defaults to 0.9 for adamw, 0 (no momentum) for sgd and adafactor
lr = 3e-3
t2 = 1_000_000  # β2 half-life in tokens: β2 = 0.5^(B·T/t2) ≈ 0.99991 at B·T = 128
