"""Run configuration: DEFAULTS, `[config.py] [--key=value ...]` parsing, and every check of what the user
typed (types and values) before anything is printed or allocated. Config files are plain Python
assignments overriding DEFAULTS; `--key=value` overrides both. Everything is counted in tokens.
A config file may also hold a table `tuned = {batch_size: {key: value}}` (configs/lm30m.py): the row of
the run's batch size (the nearest, in log scale, when it has none) fills the keys the user did not set.
init_from='resume' starts from the run's config.json instead of DEFAULTS and the default config file.
`--help` prints every key, the value it would run with and its comment in DEFAULTS (read from this source);
an unknown key is answered with the keys it likely means, by spelling and by SYNONYMS.
"""
import ast
import difflib
import io
import math
import os
import sys
import tokenize

import data
import lora
import model
import mup
import optim
from common import fail, read_json

# One key a line. Its comment is its line in `python train.py --help` (keep it to one line; more-indented comment
# lines below it are detail for the reader), and a comment line at the keys' indent heads the keys below it.
DEFAULTS = dict(
    # I/O
    out_dir="out/tiny",  # the run directory: config.json, run.json, metrics.jsonl, summary.json, checkpoints
    data="stdlib",  # a source name ('stdlib', 'fineweb', 'fineweb-edu'), a dataset dir, text files, or .bin shards
    data_dir="data",  # where prepared token files live
    tokenizer="gpt2",  # 'gpt2' (BPE, V 50257) | 'bytes' (UTF-8 bytes, V 256): data.TOKENIZERS
    wandb_project="",  # also log metrics.jsonl's rows to this Weights & Biases project (pip install wandb); '': off
    # fine-tuning (instruct.py, lora.py): data = a .jsonl of {"prompt", "completion"} rows scores only the completions
    val_data="",  # its held-out .jsonl; '' holds out 5% of data's examples
    eval_examples=200,  # held-out prompts answered greedily at each eval: exact-match accuracy in metrics.jsonl
    answer_tokens=0,  # the longest answer generated; 0: the longest held-out reference + 1 (its <eot>)
    lora_rank=0,  # LoRA adapters' rank (lora.py); 0: full fine-tuning, every weight trained
    lora_alpha=0.0,  # LoRA's alpha: the adapters are scaled by alpha / rank; 0: alpha = rank
    lora_targets="q,k,v,o,up,down",  # the block weights that get LoRA adapters, comma-separated
    # where the run starts (docs/checkpoints.md)
    init_from="scratch",  # 'scratch' | 'resume' (out_dir's run, from its config.json) | a checkpoint or run dir
    overwrite=False,  # start anew in an out_dir that holds another run's checkpoints (deletes them)
    allow_budget_change=False,  # resume with a different train_tokens (the cosine LR then follows the new length)
    # model (paper Table 1: D = d_model, L = n_layers, T = seq_len, H = head_dim); see model.Config
    d_model=384,  # D, the model width
    n_layers=6,  # L, transformer blocks
    head_dim=128,  # H, the width of an attention head (the paper's 128); heads = d_model / head_dim
    mlp_ratio=4,  # the MLP's width F = mlp_ratio x D
    seq_len=512,  # T, tokens per sequence (the context length)
    vocab_size=50257,  # V: 50257 for tokenizer 'gpt2', 256 for 'bytes'
    param_dtype="float32",  # the weights': 'float32' | 'bfloat16' (updates in fp32, rounded back as `rounding`)
    compute_dtype="float32",  # the matmuls' inputs: 'float32' | 'bfloat16'
    rounding="stochastic",  # how fp32 updates are cast back to bf16 weights: 'stochastic' | 'nearest'
    state_dtype="float32",  # the optimizer state's: 'bfloat16' halves it (paper Fig. 7), rounded back as `rounding`
    remat=False,  # recompute each block in the backward pass (per-block checkpointing): less activation memory
    unroll=False,  # unroll the scan over layers: faster on CPU for a few layers, L x the compile time
    attention="auto",  # causal attention: 'auto' (cuDNN's flash attention on a GPU where it can, 'halves' on CPU,
        # else XLA's; kernels.attention_implementation) | 'xla' | 'cudnn' | 'halves' (kernels.causal_attention)
    matmul_dtype="compute",  # the block projections: 'compute' (in compute_dtype) | 'float8' (e4m3 operands,
        # e5m2 gradients, per-tensor current scaling: fp8.py, docs/speed.md); the rest stays in compute_dtype
    z_loss=0.0,  # weight of mean(logsumexp(logits)^2), keeps the output logits from drifting; 0: off
    qk_norm=True,  # RMSNorm of each head's q and k before RoPE (the paper's model): bounds the attention logits
    parametrization="sp",  # 'sp' (standard, the paper's) | 'mup': init and per-weight LRs scaled with width (docs/mup.md)
    base_width=0,  # under 'mup': the width the LR was tuned at, where μP equals SP (0: d_model)
    n_experts=0,  # E: each MLP a Mixture of Experts of E experts of width mlp_ratio x D (moe.py, docs/moe.md); 0: dense
    top_k=2,  # experts per token (MoE): the active MLP width is top_k x mlp_ratio x D
    capacity_factor=1.25,  # an expert takes at most capacity_factor x top_k x seq_len / E tokens of a sequence (MoE)
    router_aux_weight=0.01,  # the load-balancing loss's weight per layer (Switch's α; MoE)
    router_z_loss=1e-3,  # the router z-loss's weight per layer (ST-MoE; MoE)
    # the step (docs/memory_and_sharding.md)
    fused_update=True,  # the optimizer inside the backward pass (fused.py): no whole gradient held (paper Fig. 7)
        # each layer is updated as soon as its gradient exists. Where that is not exact (grad_accum > 1,
        # clip_norm > 0) the run says why and takes step.py's unfused step; the numbers are the same either way.
    # budget and intervals, in tokens
    train_tokens=0,  # the run's length, in tokens (steps x batch_size x seq_len); 0: 20 per active parameter
    batch_size=1,  # sequences per optimizer step (global, across all devices)
    steps_per_call=1,  # optimizer steps per jitted call (a lax.scan over their batches): less dispatch per step
        # 1.24x the tokens/s of configs/mini.py at batch size 1 on CPU at 16; at most a log window's steps; logs,
        # evals and checkpoints happen at the end of the call that reaches them
    grad_accum=1,  # micro-batches per step, their gradients summed (Sec. 5: buys nothing on one accelerator)
        # on CPU, micro-batches of one sequence keep activations in cache: the 30M model at batch size 4 runs
        # 15% faster as 4 x 1
    eval_batch_size=0,  # sequences per eval batch; 0: the micro-batch size, at least 8 (no gradients: larger is cheap)
    eval_tokens=1_000_000,  # validation tokens per eval (the same batches every time)
    eval_every=10_000_000,  # tokens between evals (and one at the end)
    log_every=1_000_000,  # tokens between log lines: mean train loss, tokens/s, MFU, LR
    ckpt_every=0,  # tokens between checkpoints; 0: only at the end and on SIGTERM / Ctrl-C
    keep_ckpts=2,  # how many of the newest checkpoints to keep
    noise_every=0,  # measure the gradient noise scale every this many tokens (noise_scale.py); 0: off, no cost
    # optimizer (optim.from_config): give each beta or its half-life t in tokens, not both; None: the default
    optimizer="adamw",  # 'adamw' | 'sgd' | 'adafactor' | 'muon' | 'signum'
    lr=0.0,  # peak learning rate; 0: the optimizer's default for batch size 1 (optim.DEFAULT_LR)
    b1=None,  # β1 per step (momentum); None: from t1, else 0.9 for Adam, none for SGD and Adafactor
    b2=None,  # β2 per step; None: from t2, else t2 = 10M tokens
    t1=None,  # β1's half-life in tokens: β1 = 0.5^(batch_size x seq_len / t1)
    t2=None,  # β2's half-life in tokens: keep it fixed when changing the batch size (the paper's rule)
    eps=1e-8,  # Adam's epsilon
    weight_decay=0.0,  # decoupled weight decay, times the LR
    clip_norm=0.0,  # clip the gradient's global norm to this; 0: off
    adafactor_decay="fixed",  # 'fixed': β2 from b2/t2 every step; 'power': the authors' 1 - (t+1)^-b2 (optim.adafactor)
    muon_lr=0.0,  # optimizer 'muon': the block weights' peak LR; 0: 0.02 (its embeddings: AdamW with lr)
    muon_b1=None,  # optimizer 'muon': the block weights' momentum β; None: from muon_t1, else 0.95
    muon_t1=None,  # optimizer 'muon': muon_b1's half-life in tokens
    schedule="cosine",  # 'cosine' (linear warmup then cosine to 0) | 'constant' (fine-tuning)
    warmup=0.05,  # the cosine schedule's linear warmup, a fraction of the run's steps
    # system
    seed=0,  # the initial weights, the batch order and the stochastic rounding noise
    mesh_model=1,  # devices per tensor-parallel group; the rest of the devices do data parallel
    peak_flops=0.0,  # per-device peak for MFU; 0: from the device table, or measured on CPU
    max_hours=24.0,  # refuse to start a run projected to take longer at the measured peak (force=True to run)
    force=False,  # train even when the plan says the run takes longer than max_hours
    dry_run=False,  # print the plan (parameters, FLOPs, memory, hours) and allocate nothing
    # multi-host, one process per host (TPU pods, SLURM, Open MPI: detected by jax.distributed; elsewhere give all three)
    coordinator_address="",  # host:port of process 0
    num_processes=0,  # 0: detect, else one process; 1: never distributed
    process_id=-1,  # this process's index; -1: detect
    # --dry_run plans for hardware it need not have
    plan_devices=0,  # the devices to plan for; 0: the devices present
    plan_device="",  # their kind, a plan.PEAKS name; '': the present kind
    plan_mfu=0.4,  # the model-FLOPs utilization assumed for the plan's wall time
    plan_compile=True,  # compile the step on the planned mesh to count its memory, when it fits on the devices here
)
OPTIONAL_FLOAT = {"b1", "b2", "t1", "t2", "muon_b1", "muon_t1"}
# lower bounds of the run's keys (the model's sizes: model.Config checks them)
AT_LEAST = {1: ("batch_size", "grad_accum", "steps_per_call", "keep_ckpts", "eval_tokens"),
            0: ("train_tokens", "eval_batch_size", "eval_examples", "answer_tokens", "lora_rank", "lora_alpha", "eval_every", "log_every", "ckpt_every", "noise_every", "lr",
                "muon_lr", "eps",
                "weight_decay", "clip_norm", "z_loss", "base_width", "n_experts", "router_aux_weight", "router_z_loss", "seed", "mesh_model", "peak_flops", "plan_devices")}
CHOICES = {"rounding": ("stochastic", "nearest"), "state_dtype": ("float32", "bfloat16"), "schedule": tuple(optim.SCHEDULES), "optimizer": optim.OPTIMIZERS,
           "adafactor_decay": optim.ADAFACTOR_DECAYS, "parametrization": mup.PARAMETRIZATIONS, "tokenizer": tuple(data.TOKENIZERS)}


# keys that say how this command starts, not what the run is: a resume takes them from the command line (or
# DEFAULTS), never from the run's config.json (a permission such as allow_budget_change is given once)
PER_INVOCATION = ("init_from", "overwrite", "allow_budget_change", "dry_run", "coordinator_address", "num_processes",
                  "process_id")
# what a key is called elsewhere (nanoGPT, Hugging Face, optax) -> its name here, or (its name, what differs)
IN_TOKENS = "the run's length, counted in tokens: steps x batch_size x seq_len"
SYNONYMS = {
    "learning_rate": "lr", "peak_lr": "lr", "max_lr": "lr", "beta1": "b1", "beta2": "b2", "momentum": "b1",
    "adam_beta1": "b1", "adam_beta2": "b2", "epsilon": "eps", "adam_epsilon": "eps", "wd": "weight_decay",
    "grad_clip": "clip_norm", "max_grad_norm": "clip_norm", "optim": "optimizer", "opt": "optimizer",
    "lr_schedule": "schedule", "scheduler": "schedule", "decay_lr": "schedule",
    "warmup_steps": ("warmup", "a fraction of the run's steps, e.g. 0.05"),
    "warmup_iters": ("warmup", "a fraction of the run's steps, e.g. 0.05"),
    "n_embd": "d_model", "hidden_size": "d_model", "dim": "d_model", "n_layer": "n_layers", "num_layers": "n_layers",
    "n_head": ("head_dim", "heads = d_model / head_dim"), "num_heads": ("head_dim", "heads = d_model / head_dim"),
    "block_size": "seq_len", "context_length": "seq_len", "max_seq_len": "seq_len", "n_ctx": "seq_len",
    "vocab": "vocab_size", "batch": "batch_size", "gradient_accumulation_steps": "grad_accum",
    "steps": ("train_tokens", IN_TOKENS), "max_iters": ("train_tokens", IN_TOKENS),
    "max_steps": ("train_tokens", IN_TOKENS), "iters": ("train_tokens", IN_TOKENS),
    "eval_interval": ("eval_every", "in tokens"), "log_interval": ("log_every", "in tokens"),
    "save_every": ("ckpt_every", "in tokens"), "eval_iters": ("eval_tokens", "in tokens"),
    "output_dir": "out_dir", "dataset": "data", "resume": ("init_from", "--init_from=resume"),
    "mup": "parametrization", "mup_base_width": "base_width", "qk_layernorm": "qk_norm", "qk_layer_norm": "qk_norm",
    "num_experts": "n_experts", "moe_num_experts": "n_experts", "num_experts_per_tok": "top_k",
    "moe_top_k": "top_k", "experts_per_token": "top_k", "router_aux_loss_coef": "router_aux_weight",
    "load_balance_loss_weight": "router_aux_weight", "aux_loss_alpha": "router_aux_weight",
    "router_z_loss_coef": "router_z_loss",
    "dtype": "param_dtype", "gradient_checkpointing": "remat", "tensor_parallel": "mesh_model", "lora_r": "lora_rank",
}


def parse(argv, defaults=DEFAULTS, default_file="configs/tiny.py"):
    """[config.py] [--key=value ...] -> the config dict: DEFAULTS, then the config file's assignments, then the
    flags, checked. init_from='resume' continues out_dir's run: its config.json takes the place of DEFAULTS and
    of the default config file (a config file named on the command line, and the flags, still apply over it;
    checkpoint.check_resume says which changes a resume takes). -h / --help prints every key with the value
    this command line would run with, where that value comes from, and the key's comment in DEFAULTS."""
    args = [a for a in argv if a not in ("-h", "--help")]
    show_help, named = len(args) < len(argv), args.pop(0) if args and not args[0].startswith("--") else None
    path = named or default_file
    flags = {}
    for a in args:
        if not a.startswith("--"):
            fail(f"expected --key=value, got '{a}'")
        k, eq, v = a[2:].partition("=")
        flags[k] = _literal(v) if eq else True
    in_file, tuned = read_config_file(path)
    given, origin = {**in_file, **flags}, {**{k: "file" for k in in_file}, **{k: "flag" for k in flags}}
    for k in (k for k in given if k not in defaults):
        fail(f"unknown config key '{k}'" + ((s := suggest(k, defaults)) and f"; did you mean {s}?") +
             " (--help lists every key)")
    given = {k: _check_type(k, v, defaults[k]) for k, v in given.items()}
    base, saved = dict(defaults), None
    if given.get("init_from") == "resume":
        out = given.get("out_dir", defaults["out_dir"])
        saved = read_saved_config(out)
    if saved is not None:  # the run's config; a config file counts only where the command line names one
        if named is None:
            given, origin, tuned = {k: given[k] for k in flags}, {k: "flag" for k in flags}, {}
        kept = [k for k in defaults if k in saved and k not in PER_INVOCATION]
        base.update({k: _check_type(k, saved[k], defaults[k]) for k in kept}, out_dir=out)
        origin = {**dict.fromkeys(kept, "saved"), **origin}
    cfg, note, filled = _apply_tuned({**base, **given}, tuned, given)
    origin.update(dict.fromkeys(filled, "tuned"))
    if saved is not None and named is None:  # the run's own config file and tuned-table note
        path, note = saved.get("config_file", path), saved.get("tuned", "")
    if show_help:
        try:
            print(help_text(cfg, origin, path, named is None and saved is None), flush=True)
        except BrokenPipeError:  # `--help | head`: the reader has what it wanted
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        raise SystemExit(0)
    check_values(cfg)
    return dict(cfg, config_file=path, tuned=note)


def read_config_file(path):
    """({key: value} of a config file's assignments, its `tuned` table or {})."""
    if not os.path.isfile(path):
        fail(f"config file '{path}' not found")
    scope = {}
    try:
        exec(compile(open(path).read(), path, "exec"), scope)
    except Exception as e:  # a typo in the config file: one line, not a traceback
        fail(f"config file '{path}': {type(e).__name__}: {e}")
    tuned = scope.pop("tuned", {})
    return {k: v for k, v in scope.items() if not k.startswith("_") and not callable(v) and not hasattr(v, "__spec__")}, tuned


def read_saved_config(out_dir):
    """The config.json of the run in out_dir, which init_from='resume' continues; None when out_dir holds
    checkpoints without one (checkpoint.start_point then says what is wrong), and a fail line when it holds no run."""
    path = os.path.join(out_dir, "config.json")
    saved = read_json(path) if os.path.isfile(path) else None
    if isinstance(saved, dict):
        return saved
    if os.path.isfile(path):
        fail(f"init_from='resume': {path} is not a readable config (a JSON object); restore it from a checkpoint's "
             "meta.json 'config', or start anew with --init_from=scratch")
    if not any(d.startswith("ckpt_") for d in (os.listdir(out_dir) if os.path.isdir(out_dir) else [])):
        fail(f"init_from='resume' but {out_dir} holds no run to continue (no config.json there): give the run's "
             "--out_dir, or start one with --init_from=scratch")
    return None


def suggest(k, keys=DEFAULTS):
    """The valid keys closest to an unknown one, by meaning (SYNONYMS: another codebase's name for a key) or by
    spelling (of the keys and of the synonyms): 'lr' for --learning_rate, 'lr (learning_rate)' for --learnig_rate;
    '' when none is close."""
    name = k.lower().replace("-", "_")
    if name in SYNONYMS:  # its meaning is known: that key alone
        return _synonym(name, None)
    score = lambda c: difflib.SequenceMatcher(None, name, c).ratio()
    close = sorted([(score(c), c) for c in keys if score(c) >= 0.5] +
                   [(score(c), c) for c in SYNONYMS if score(c) >= 0.7], reverse=True)
    found = {}
    for _, c in (x for x in close if x[0] >= close[0][0] - 0.15):  # the closest, and those nearly as close
        key = c if c in keys else _synonym(c, None).split(" ")[0]
        found.setdefault(key, key if c in keys else _synonym(c, None if score(key) >= 0.7 else c))
    return ", ".join(list(found.values())[:3])


def _synonym(name, shown):
    """'train_tokens (max_iters: counted in tokens ...)': the key SYNONYMS names for `name`, the synonym shown
    (when it is not what the user typed) and what differs."""
    key, note = (SYNONYMS[name], None) if isinstance(SYNONYMS[name], str) else SYNONYMS[name]
    inside = ": ".join(x for x in (shown, note) if x)
    return f"{key} ({inside})" if inside else key


def describe(path=__file__):
    """{key: (heading, comment)} of DEFAULTS, read from this file's source: the comment on each key's line, and
    the comment line(s) at the keys' indent above its group."""
    src = open(path).read()
    call = next(n.value for n in ast.parse(src).body if isinstance(n, ast.Assign)
                and [getattr(t, "id", None) for t in n.targets] == ["DEFAULTS"])
    comments = {t.start[0]: (t.start[1], t.line[:t.start[1]].strip() == "", t.string.lstrip("#").strip())
                for t in tokenize.generate_tokens(io.StringIO(src).readline) if t.type == tokenize.COMMENT}
    out, heading, prev = {}, "", call.lineno
    for kw in call.keywords:
        above = [text for line in range(prev + 1, kw.lineno) if line in comments
                 for col, own, text in [comments[line]] if own and col == kw.col_offset]
        heading = " ".join(above) or heading
        col, own, text = comments.get(kw.value.end_lineno, (0, True, ""))
        out[kw.arg], prev = (heading, "" if own else text), kw.value.end_lineno
    return out


def help_text(cfg, origin, path, default_file):
    """--help: every key as --key=value (the value this command line runs with), where that value comes from, and
    its comment, under the headings of DEFAULTS."""
    what, heading = describe(), None
    resumed, prog = "saved" in origin.values(), os.path.basename(sys.argv[0])
    lines = [f"usage: python {prog if prog.endswith('.py') else 'train.py'} [config.py] [--key=value ...] [--help]",
             f"config file: {path}" + (" (the default)" if default_file else "") +
             (f"; resuming the run in {cfg['out_dir']}: its config.json is the base" if resumed else ""),
             "Every key with the value this command line runs with, where that comes from (file: the config file, "
             "flag: the\ncommand line, tuned: the file's tuned table, saved: the run's config.json; blank: DEFAULTS), "
             "and what it means:"]
    width = min(40, max(len(f"--{k}={v!r}") for k, v in cfg.items()))
    for k, v in cfg.items():
        head, text = what.get(k, ("", ""))
        if head != heading:
            lines.append(f"\n{head}" if head else "")
            heading = head
        lines.append(f"  {f'--{k}={v!r}':<{width}}  {origin.get(k, ''):<5}  {text}".rstrip())
    return "\n".join(lines)


def _apply_tuned(cfg, tuned, given):
    """(cfg with the keys of its batch size's row of `tuned` that the user did not set, a note saying so, those keys)."""
    if not tuned:
        return cfg, "", {}
    if not isinstance(tuned, dict) or not all(isinstance(r, dict) and set(r) <= set(DEFAULTS) for r in tuned.values()):
        fail("config key 'tuned' must be {batch_size: {config key: value}}")
    B = cfg["batch_size"]
    row = B if B in tuned else min(tuned, key=lambda b: abs(math.log(b / max(B, 1))))
    filled = {k: _check_type(k, v, DEFAULTS[k]) for k, v in tuned[row].items() if k not in given}
    how = "its row" if row == B else f"no row for batch size {B}: the nearest, {row}"
    return dict(cfg, **filled), f"tuned table, {how}: " + (", ".join(f"{k}={v:g}" for k, v in filled.items()) or
                                                            "all set by the user"), filled


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
    if cfg["lora_rank"] and cfg["n_experts"] and {"up", "down"} & set(lora.targets(cfg)):
        fail(f"lora_targets={cfg['lora_targets']!r}: LoRA adapts an MoE's dense weights only, not its experts' up "
             "and down: --lora_targets=q,k,v,o")
    F = cfg["mlp_ratio"] * cfg["d_model"]
    if cfg["optimizer"] == "adafactor" and cfg["n_experts"] >= min(cfg["d_model"], F) > 0:
        fail(f"n_experts={cfg['n_experts']} >= min(d_model, mlp_ratio x d_model) = {min(cfg['d_model'], F)}: "
             "Adafactor factors each weight over its two largest axes, which must be an expert's own [D, F]")
    if not (0 <= cfg["warmup"] < 1 and 0 < cfg["plan_mfu"] <= 1 and cfg["max_hours"] > 0):
        fail(f"need 0 <= warmup < 1, 0 < plan_mfu <= 1 and max_hours > 0; got warmup={cfg['warmup']}, "
             f"plan_mfu={cfg['plan_mfu']}, max_hours={cfg['max_hours']}")
    model_config(cfg)


def model_config(cfg):
    """The model.Config of a run's config (a fail line for a bad size or dtype)."""
    try:
        return model.Config(**{k: cfg.get(k, DEFAULTS[k]) for k in model.Config.RUN_KEYS})  # an older run lacks newer keys
    except ValueError as e:
        fail(str(e))
