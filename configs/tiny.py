# The default config: a byte-level model (one token per UTF-8 byte, V = 256) of the Python standard
# library's own source (about 12M bytes, prepared in seconds on first use, no download). Trains on 2 CPU
# cores in under 5 minutes; `python sample.py --out_dir=out/tiny` then writes Python-looking text
# (README "Set up" shows a sample and the times). A byte model is several times cheaper per token than
# GPT-2's 50k vocabulary (whose output layer would be most of a model this small), and learns indentation
# and keywords fast, as nanoGPT's shakespeare_char does. Batch size 1 with Adam and t2 in tokens, as the
# paper recommends (Sec. 4). Losses are in nats per byte; train.py also logs bits per byte (val_bpb).
out_dir = "out/tiny"
data = "stdlib"
tokenizer = "bytes"
vocab_size = 256
d_model = 192
n_layers = 4
head_dim = 64
seq_len = 256
fused_update = False  # the optimizer-in-backward step saves ~7 MB here, and its per-layer updates are small ops
unroll = True  # 4 layers unrolled: 1.2x the tokens/s of the scan on 2 cores (5,979 vs 4,895, one run each)
batch_size = 1
train_tokens = 1_179_648  # 4608 steps of 256 tokens
eval_tokens = 32_768
eval_every = 393_216  # every 1536 steps: three evals, the last at the end
log_every = 16_384
optimizer = "adamw"
lr = 6e-3
t2 = 1_000_000  # β2 half-life in tokens: β2 = 0.5^(B·T/t2) ≈ 0.99982 at B·T = 256
