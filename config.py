"""Run configuration: DEFAULTS, `[config.py] [--key=value ...]` parsing, and every check of what the user
typed (types and values) before anything is printed or allocated. Config files are plain Python
assignments overriding DEFAULTS; `--key=value` overrides both. Everything is counted in tokens.
A config file may also hold a table `tuned = {batch_size: {key: value}}` (configs/lm30m.py): the row of
the run's batch size (the nearest, in log scale, when it has none) fills the keys the user did not set.
"""
import ast
import difflib
import math
import os

import data
import lora
import model
import optim
from common import fail

DEFAULTS = dict(
    # I/O
    out_dir="out/tiny",
    data="stdlib",  # a source name ('stdlib', 'fineweb-edu'), a dataset dir, text files, or .bin shards
    data_dir="data",  # where prepared token files live
    # fine-tuning (instruct.py): data = a .jsonl of {"prompt", "completion"} rows scores only the completions
    val_data="",  # its held-out .jsonl; '' holds out 5% of data's examples
    eval_examples=200,  # held-out prompts answered greedily at each eval: exact-match accuracy in metrics.jsonl
    answer_tokens=0,  # the longest answer generated; 0: the longest held-out reference + 1 (its <eot>)
    lora_rank=0, lora_alpha=0.0, lora_targets="q,k,v,o,up,down",  # LoRA (lora.py): rank 0 trains every weight
    tokenizer="gpt2",  # 'gpt2' (BPE, V 50257) | 'bytes' (UTF-8 bytes, V 256): data.TOKENIZERS
    init_from="scratch",  # 'scratch' | 'resume' (newest valid checkpoint in out_dir) | a checkpoint or run dir
    overwrite=False,  # start anew in an out_dir that holds another run's checkpoints (deletes them)
    allow_budget_change=False,  # resume with a different train_tokens (the cosine LR then follows the new length)
    # model (paper Table 1: D = d_model, L = n_layers, T = seq_len, H = head_dim); see model.Config
    d_model=384, n_layers=6, head_dim=128, mlp_ratio=4, seq_len=512, vocab_size=50257,
    param_dtype="float32", compute_dtype="float32",
    rounding="stochastic",  # how fp32 updates are cast back to bf16 weights: 'stochastic' | 'nearest'
    state_dtype="float32",  # the optimizer state's: 'bfloat16' halves it (paper Fig. 7), rounded back as `rounding`
    remat=False, unroll=False, z_loss=0.0,
    # the optimizer inside the backward pass (fused.py): each layer is updated as soon as its gradient exists,
    # so no whole gradient is held (paper Fig. 7). Where that is not exact (grad_accum > 1, clip_norm > 0)
    # the run says why and takes step.py's unfused step; the numbers are the same either way.
    fused_update=True,
    # budget and intervals, in tokens
    train_tokens=0,  # 0: 20 tokens per active parameter (Chinchilla)
    batch_size=1,  # sequences per optimizer step (global, across all devices)
    steps_per_call=1,  # optimizer steps per jitted call (a lax.scan over their batches): less dispatch per step,
    # 1.24x the tokens/s of configs/mini.py at batch size 1 on CPU at 16; at most a log window's steps; logs, evals
    # and checkpoints happen at the end of the call that reaches them
    grad_accum=1,  # micro-batches per step (Sec. 5: buys nothing on one accelerator; on CPU, micro-batches of
    # one sequence keep activations in cache: the 30M model at batch size 4 runs 15% faster as 4 x 1)
    eval_batch_size=0,  # 0: the micro-batch size, at least 8 (eval needs no gradients, so larger is cheap)
    eval_tokens=1_000_000, eval_every=10_000_000, log_every=1_000_000, ckpt_every=0, keep_ckpts=2,
    noise_every=0,  # measure the gradient noise scale every this many tokens (noise_scale.py); 0: off, no cost
    # optimizer (optim.from_config): give each beta or its half-life t in tokens, not both; None: the default
    optimizer="adamw", lr=0.0,  # lr 0: the optimizer's default for batch size 1 (optim.DEFAULT_LR)
    b1=None, b2=None, t1=None, t2=None, eps=1e-8, weight_decay=0.0, clip_norm=0.0,
    adafactor_decay="fixed",  # 'fixed': β2 from b2/t2 every step; 'power': the authors' 1 - (t+1)^-b2 (optim.adafactor)
    muon_lr=0.0, muon_b1=None, muon_t1=None,  # optimizer 'muon': the block weights' peak LR and momentum (0/None: default)
    schedule="cosine", warmup=0.05,  # 'cosine' (linear warmup then cosine to 0) | 'constant'
    # system
    seed=0, mesh_model=1,  # devices per tensor-parallel group; the rest of the devices do data parallel
    peak_flops=0.0,  # per-device peak for MFU; 0: from the device table, or measured on CPU
    max_hours=24.0,  # refuse to start a run projected to take longer at the measured peak (force=True to run)
    force=False, dry_run=False,
    # multi-host (one process per host): TPU pods, SLURM and Open MPI are detected by jax.distributed;
    # elsewhere (CPU) give all three. num_processes 0: detect, else one process; 1: never distributed.
    coordinator_address="", num_processes=0, process_id=-1,
    # --dry_run plans for hardware it need not have: plan_devices 0 = the devices present, plan_device
    # a plan.PEAKS name ('' = the present kind); plan_mfu the assumed model-FLOPs utilization for the wall time
    plan_devices=0, plan_device="", plan_mfu=0.4,
    plan_compile=True,  # and, when the planned mesh fits on this machine's devices, compile the step on them to count its memory
)
OPTIONAL_FLOAT = {"b1", "b2", "t1", "t2", "muon_b1", "muon_t1"}
# lower bounds of the run's keys (the model's sizes: model.Config checks them)
AT_LEAST = {1: ("batch_size", "grad_accum", "steps_per_call", "keep_ckpts", "eval_tokens"),
            0: ("train_tokens", "eval_batch_size", "eval_examples", "answer_tokens", "lora_rank", "lora_alpha", "eval_every", "log_every", "ckpt_every", "noise_every", "lr",
                "muon_lr", "eps",
                "weight_decay", "clip_norm", "z_loss", "seed", "mesh_model", "peak_flops", "plan_devices")}
CHOICES = {"rounding": ("stochastic", "nearest"), "state_dtype": ("float32", "bfloat16"), "schedule": tuple(optim.SCHEDULES), "optimizer": optim.OPTIMIZERS,
           "adafactor_decay": optim.ADAFACTOR_DECAYS, "tokenizer": tuple(data.TOKENIZERS)}


def parse(argv, defaults=DEFAULTS, default_file="configs/tiny.py"):
    """[config.py] [--key=value ...] -> the config dict (what the user typed over DEFAULTS, checked)."""
    args = list(argv)
    if {"-h", "--help"} & set(args):  # the keys, their defaults and what they mean: this file's DEFAULTS
        print(f"usage: [config.py (default {default_file})] [--key=value ...]; keys and defaults:\n" +
              "\n".join(f"  --{k}={v!r}" for k, v in defaults.items()) + f"\n(comments: {os.path.abspath(__file__)})")
        raise SystemExit(0)
    path = args.pop(0) if args and not args[0].startswith("--") else default_file
    if not os.path.isfile(path):
        fail(f"config file '{path}' not found")
    scope = {}
    try:
        exec(compile(open(path).read(), path, "exec"), scope)
    except Exception as e:  # a typo in the config file: one line, not a traceback
        fail(f"config file '{path}': {type(e).__name__}: {e}")
    tuned = scope.pop("tuned", {})
    given = {k: v for k, v in scope.items() if not k.startswith("_") and not callable(v) and not hasattr(v, "__spec__")}
    for a in args:
        if not a.startswith("--"):
            fail(f"expected --key=value, got '{a}'")
        k, eq, v = a[2:].partition("=")
        given[k] = _literal(v) if eq else True
    cfg = dict(defaults)
    for k, v in given.items():
        if k not in defaults:
            close = difflib.get_close_matches(k, defaults, n=3, cutoff=0.5)
            fail(f"unknown config key '{k}'" + (f"; did you mean {', '.join(close)}?" if close else ""))
        cfg[k] = _check_type(k, v, defaults[k])
    cfg, note = _apply_tuned(cfg, tuned, given)
    check_values(cfg)
    return dict(cfg, config_file=path, tuned=note)


def _apply_tuned(cfg, tuned, given):
    """cfg with the keys of its batch size's row of `tuned` that the user did not set; and a note saying so."""
    if not tuned:
        return cfg, ""
    if not isinstance(tuned, dict) or not all(isinstance(r, dict) and set(r) <= set(DEFAULTS) for r in tuned.values()):
        fail("config key 'tuned' must be {batch_size: {config key: value}}")
    B = cfg["batch_size"]
    row = B if B in tuned else min(tuned, key=lambda b: abs(math.log(b / max(B, 1))))
    filled = {k: _check_type(k, v, DEFAULTS[k]) for k, v in tuned[row].items() if k not in given}
    how = "its row" if row == B else f"no row for batch size {B}: the nearest, {row}"
    return dict(cfg, **filled), f"tuned table, {how}: " + (", ".join(f"{k}={v:g}" for k, v in filled.items()) or "all set by the user")


def _literal(v):
    try:
        return ast.literal_eval(v)
    except (ValueError, SyntaxError):
        return v  # a bare string such as --optimizer=sgd


def _check_type(k, v, default):
    want = type(default)
    if k in OPTIONAL_FLOAT and (v is None or isinstance(v, (int, float)) and not isinstance(v, bool)):
        return None if v is None else float(v)
    if want is float and isinstance(v, int) and not isinstance(v, bool):
        return float(v)
    if want is int and isinstance(v, float) and v.is_integer():
        return int(v)  # 2e6 tokens
    if type(v) is not want:
        fail(f"config key '{k}' must be {want.__name__}, got {type(v).__name__} {v!r}")
    return v


def check_values(cfg):
    """Ranges, choices and divisibility of the run's keys; the model's own are model.Config's."""
    for low, keys in AT_LEAST.items():
        for k in (k for k in keys if cfg[k] < low):
            fail(f"{k}={cfg[k]!r} must be >= {low}")
    for k, ok in CHOICES.items():
        if cfg[k] not in ok:
            fail(f"{k}={cfg[k]!r} must be one of {', '.join(map(repr, ok))}")
    for k in OPTIONAL_FLOAT:
        beta = k[-2] == "b"  # b1, b2, muon_b1; the rest are half-lives
        if cfg[k] is not None and not (0 <= cfg[k] < 1 if beta else cfg[k] > 0):
            fail(f"{k}={cfg[k]!r} must be " + ("in [0, 1)" if beta else "> 0 tokens"))
    if cfg["batch_size"] % cfg["grad_accum"]:
        fail(f"batch_size={cfg['batch_size']} is not divisible by grad_accum={cfg['grad_accum']}")
    if cfg["lora_rank"] and (not lora.targets(cfg) or set(lora.targets(cfg)) - set(lora.IN_AXES)):
        fail(f"lora_targets={cfg['lora_targets']!r} must name some of {', '.join(lora.IN_AXES)}, comma-separated")
    if not (0 <= cfg["warmup"] < 1 and 0 < cfg["plan_mfu"] <= 1 and cfg["max_hours"] > 0):
        fail(f"need 0 <= warmup < 1, 0 < plan_mfu <= 1 and max_hours > 0; got warmup={cfg['warmup']}, "
             f"plan_mfu={cfg['plan_mfu']}, max_hours={cfg['max_hours']}")
    model_config(cfg)


def model_config(cfg):
    """The model.Config of a run's config (a fail line for a bad size or dtype)."""
    try:
        return model.Config(**{k: cfg[k] for k in model.Config.RUN_KEYS})
    except ValueError as e:
        fail(str(e))
