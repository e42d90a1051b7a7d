# Fine-tune the default model (configs/tiny.py's, trained by `python train.py` into out/tiny) on a JSONL of
# {"prompt": ..., "completion": ...} rows: only the completions are scored, examples are packed into rows
# without seeing each other (instruct.py), and at each eval the held-out prompts are answered greedily and
# scored by exact match (val_accuracy in metrics.jsonl). The paper's fine-tuning recipe: batch size 1,
# Adafactor with bf16 weights and stochastic rounding, a constant LR (docs/finetuning.md).
#   python instruct.py arithmetic                                  # a generated task: data/arith/{train,val}.jsonl
#   python train.py configs/finetune.py [--data=my.jsonl [--val_data=my_val.jsonl]] [--lora_rank=8]
#   python sample.py --out_dir=out/finetune --prompt_file=data/arith/val.jsonl
exec(open("configs/tiny.py").read())  # noqa: S102 (the base model's shape: init_from must match it)
out_dir = "out/finetune"
init_from = "out/tiny"
data = "data/arith/train.jsonl"
val_data = ""  # '': 5% of data's examples held out; for this arithmetic file, its val.jsonl (instruct.val_source)
train_tokens = 0  # one epoch of the packed rows
optimizer = "adafactor"
param_dtype = "bfloat16"  # 2 bytes per weight, updated with stochastic rounding (rounding.py)
lr = 3e-3
t2 = 200_000
schedule = "constant"
warmup = 0.0
eval_every = 131_072
log_every = 16_384
eval_examples = 200
fused_update = True  # the optimizer inside the backward pass: no whole gradient held (fused.py)
