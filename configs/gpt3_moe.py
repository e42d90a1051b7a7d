# GPT-3 XL as a Mixture of Experts (moe.py, docs/moe.md): each MLP is 8 experts of width 2D (F 4096), a token
# runs 2 of them, so a token's FLOPs are the dense GPT-3 XL's (1.3B active parameters) while the model holds 4x
# its MLP weights (3.7B in all). configs/gpt3.py's run otherwise; the experts split over the 4-chip mesh's 'model'
# axis (expert parallelism, sharding.EXPERT_RULES). `python train.py configs/gpt3_moe.py --dry_run=True` prints
# active and total parameters and FLOPs, and compiles the step for the planned chips.
exec(open("configs/gpt3.py").read())  # noqa: S102 (a config file is plain Python: gpt3's keys, then ours)
out_dir = "out/gpt3_moe"
n_experts = 8
top_k = 2
mlp_ratio = 2  # each expert's F = 2D: top_k x F = the dense model's 4D
grad_accum = 32  # 16 sequences per micro-batch: the experts hold 2.4 GB more per chip than the dense model
