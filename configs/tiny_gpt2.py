# The previous default: a small GPT-2-token model (D 128, L 2, V 50257) of the stdlib source, 100k tokens
# in about 2 minutes of training on 2 cores (val loss about 3.2 nats per token). Batch size 1 with Adam
# and t2 in tokens, as the paper recommends (Sec. 4). Its samples are mostly whitespace at this budget:
# the tests and the optimizer comparisons of docs/authors_code.md use it (a GPT-2 model, cheap to train).
out_dir = "out/tiny_gpt2"
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
