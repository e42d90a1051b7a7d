# GPT-2 small (124M active) on FineWeb, 2.5B tokens, batch size 1 (paper Table 1, Fig. 4):
# Adam LR 2.4e-3 with β2 0.9999 (t2 ≈ 7.1M tokens, the bs-512 β2 = 0.95 kept fixed in tokens).
# Paper's val loss ≈ 3.39 (Adam bs 1). Variants from paper.md:
#   --optimizer=sgd --lr=0.2 (≈ 3.53)   --optimizer=adafactor --lr=5e-3 (≈ 3.36)
#   bs-512 AdamW baseline: --batch_size=512 --grad_accum=... --lr=4.8e-3 --b2=0.95 --weight_decay=0.1 (≈ 3.42)
# The paper's FineWeb, also as pre-tokenized llm.c shards: --data='data/fineweb10B/fineweb_*.bin'.
out_dir = "out/gpt2"
data = "fineweb"  # HuggingFaceFW/fineweb sample-10BT, streamed (the paper: FineWeb, Table 1)
d_model = 768
n_layers = 12
head_dim = 128
seq_len = 1024
batch_size = 1
train_tokens = 2_500_000_000
eval_tokens = 10_000_000
eval_every = 250_000_000
log_every = 5_000_000
ckpt_every = 250_000_000
optimizer = "adamw"  # β1 defaults to 0.9 for adamw, 0 (no momentum) for sgd and adafactor
lr = 2.4e-3
b2 = 0.9999
compute_dtype = "float32"  # paper: fp32 activations; on GPUs --compute_dtype=bfloat16 is several times faster
# On one NVIDIA GPU (pip install -e '.[cuda]'), as nanoGPT trains GPT-2 small on one A100, at this file's batch 1:
#   python train.py configs/gpt2.py --compute_dtype=bfloat16 --steps_per_call=8
# bf16 matmuls (fp32 weights and optimizer), cuDNN's flash attention (attention='auto' picks it for bf16, H 128),
# 8 optimizer steps per jitted call so that batch 1 is not bound by dispatch; --matmul_dtype=float8 adds FP8
# block matmuls on Hopper. The paper's large-batch baseline is AdamW at batch 512, lr 4.8e-3, b2 0.95, weight
# decay 0.1 (≈ 3.42): --batch_size=512 --grad_accum=8 --lr=4.8e-3 --b2=0.95 --weight_decay=0.1 holds 64 x 1024
# tokens per micro-batch (the dry run estimates 30 GB of bf16 activations; --dry_run=True on the GPU compiles it
# and says what XLA needs; remat=True or a larger grad_accum on smaller GPUs).
# Measured tokens/s and MFU by batch size: python benchmarks/gpu.py (docs/speed.md), not yet run on a GPU.
