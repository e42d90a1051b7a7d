# GPT-3 XL (1.3B active) on FineWeb, 10B tokens (paper Table 1, Fig. 4): the Brown et al. baseline,
# AdamW at batch 512 x 2048 tokens, β1 0.9, β2 0.95, weight decay 0.1, LR 2e-4 (paper: val ≈ 2.97).
# The paper trained it on 4 TPU v4 chips with tensor parallelism (mesh_model = 4).
# Batch-size-1 variants from paper.md (all beat the baseline):
#   Adam:      --batch_size=1 --grad_accum=1 --lr=6.7e-5 --b2=0.9999 --weight_decay=0.0   (≈ 2.81)
#   Adafactor: --batch_size=1 --grad_accum=1 --optimizer=adafactor --lr=0.0032 --b2=0.9999 --weight_decay=0.0 (≈ 2.81)
#   SGD:       --batch_size=1 --grad_accum=1 --optimizer=sgd --lr=0.15 --b2=None --weight_decay=0.0 (≈ 3.01)
#   Adam with β2 0.95 not rescaled to bs 1: --batch_size=1 --grad_accum=1 --lr=6.7e-5 --weight_decay=0.0 (≈ 3.47)
out_dir = "out/gpt3"
data = "fineweb"  # HuggingFaceFW/fineweb sample-10BT, streamed (the paper: FineWeb, Table 1)
d_model = 2048
n_layers = 24
head_dim = 128
seq_len = 2048
batch_size = 512
grad_accum = 16  # 32 sequences per micro-batch on the 4-chip mesh
train_tokens = 10_000_000_000
eval_tokens = 20_000_000
eval_every = 1_000_000_000
log_every = 20_000_000
ckpt_every = 500_000_000
optimizer = "adamw"  # β1 defaults to 0.9 for adamw, 0 (no momentum) for sgd and adafactor
lr = 2e-4
b2 = 0.95
weight_decay = 0.1
compute_dtype = "float32"  # paper: fp32 activations; on GPUs --compute_dtype=bfloat16 is several times faster
remat = True
mesh_model = 4
plan_devices = 4  # --dry_run plans for the paper's 4 TPU v4 chips on any machine (a real run uses the devices present)
plan_device = "TPU v4"
