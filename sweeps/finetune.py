# The paper's fine-tuning comparison in miniature (README "Fine-tuning"): configs/ft_base.py's model, pre-trained
# on the stdlib (out/ft_base), fine-tuned on 3-digit addition written as a Python session ('>>> 123 + 45\n' ->
# '168'; `python instruct.py arithmetic`: 20,000 examples, 500 held out) for 524k tokens (~1.5 epochs) with a
# constant LR, five ways, each over an LR grid in factors of 3 that the tune rule widens until its best val
# loss has a neighbour on each side, then its best LR again with seeds 1 and 2 (the data order, LoRA's init and
# the rounding noise). Scored by exact match of the greedy answers to all 500 held-out prompts.
from sweep import grid  # noqa: F401 (a sweep file's helpers)

config = "configs/ft_base.py"
settings = dict(init_from="out/ft_base", data="data/arith/train.jsonl", val_data="data/arith/val.jsonl",
                train_tokens=524_288, schedule="constant", warmup=0.0, eval_every=131_072, log_every=16_384,
                ckpt_every=131_072, eval_examples=500, fused_update=True, t2=200_000)  # b1: 0.9, as the authors fine-tune
BF16 = dict(param_dtype="bfloat16", compute_dtype="bfloat16")
WAYS = [  # (train.py keys, first LR guess): Adam at batch sizes 1 and 16, Adafactor in bf16 + SR, SGD, LoRA (Adam)
    (dict(optimizer="adamw", batch_size=1), 1e-3),
    (dict(optimizer="adamw", batch_size=16), 3e-3),
    (dict(optimizer="adafactor", batch_size=1, **BF16), 3e-3),
    (dict(optimizer="sgd", batch_size=1), 0.1),
    (dict(optimizer="adamw", batch_size=1, lora_rank=8, **BF16), 9e-3),  # rank 8 on every block weight, scale 1
]
points = [dict(**keys, lr=round(lr * f, 8)) for f in (1, 1 / 3, 3) for keys, lr in WAYS]  # the guesses first
tune = [dict(key="lr", factor=3, margin=1),
        dict(key="seed", around="lr", values=[1, 2])]  # once a way's LR grid is settled: two more seeds at its best
csv = "assets/sweeps/finetune.csv"
