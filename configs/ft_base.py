# The base model of the fine-tuning comparison (docs/finetuning.md, sweeps/finetune.py): configs/mini.py's
# byte-level model of the Python standard library made wider and deeper (D 128, L 4, T 128: 786k
# parameters), pre-trained on 2M tokens (~10 min on one core). `python train.py configs/ft_base.py` writes
# out/ft_base, whose weights every fine-tuning run of the comparison starts from.
exec(open("configs/mini.py").read())  # noqa: S102 (a config file is plain Python: mini's keys, then ours)
out_dir = "out/ft_base"
d_model = 128
n_layers = 4
lr = 2e-3
log_every = 262_144
