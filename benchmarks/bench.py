"""Throughput and memory of the train step (nanoGPT's bench.py, for this project): for one config,

1. tokens/s and MFU at batch sizes 1 ... 64: fp32, bf16 weights + stochastic rounding, and fp32 with the batch
   as micro-batches of one sequence (grad_accum = B), against the matmul peak probed in this run;
2. several optimizer steps per jitted call (lax.scan over steps) at batch size 1, against one per call;
3. peak memory at batch size 1 (RSS on CPU, the device's peak on GPU) of SGD, Adafactor, AdamW and AdamW with
   2 micro-batches, each in a process of its own, next to the accounting: weights + gradient + optim.state_bytes
   (+ the fp32 accumulation buffer), on a wider model whose arrays dwarf the runtime's own memory.

Steps run on a fixed random batch, timed after block_until_ready with compilation and two warm-up steps
excluded; every variant is timed in --rounds alternating rounds, and the median round counts.

    python benchmarks/bench.py [config.py] [--key=value ...] [--batches=1,4,16,64] [--rounds=3] [--seconds=1]

--sections=speed,steps,memory (the default) picks sections; also `finetune` (the fine-tuning comparison's memory)
`mup` (SP against μP at m = 2) and `moe` (dense against an MoE of the same active size), each side by side.
"""
import ctypes
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from functools import partial
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import common  # noqa: E402
import config  # noqa: E402
import kernels  # noqa: E402
import lora  # noqa: E402
import model  # noqa: E402
import optim  # noqa: E402
import plan  # noqa: E402
import sharding  # noqa: E402
import step as steps  # noqa: E402

MEMORY_MODEL = ["--d_model=768", "--n_layers=8", "--head_dim=64", "--unroll=False"]  # 57M parameters, 218 MiB fp32
MEMORY_RUNS = {"SGD": ["--optimizer=sgd"], "Adafactor": ["--optimizer=adafactor"], "AdamW": ["--optimizer=adamw"],
               "AdamW + 2 micro-batches": ["--optimizer=adamw", "--batch_size=2", "--grad_accum=2"]}
MEMORY_RUNS = {**{k: [*v, "--fused_update=False"] for k, v in MEMORY_RUNS.items()},  # the whole gradient first
               **{f"{k}, fused": [*v, "--fused_update=True"] for k, v in MEMORY_RUNS.items() if "micro" not in k}}
# the fine-tuning comparison's five ways (docs/finetuning.md), each at its own batch size and precision, with the
# optimizer inside the backward pass where exact and per-block checkpointing (the paper's accounting assumes it;
# LoRA needs it: it forms W + s·A·B per layer, which the backward pass would otherwise keep for every layer)
BF16 = ["--param_dtype=bfloat16", "--compute_dtype=bfloat16"]
FINETUNE_RUNS = {k: [*v, "--fused_update=True", "--remat=True"] for k, v in {
    "AdamW, batch 1, fp32": ["--optimizer=adamw"], "AdamW, batch 16, fp32": ["--optimizer=adamw", "--batch_size=16"],
    "Adafactor, batch 1, bf16 + SR": ["--optimizer=adafactor", *BF16], "SGD, batch 1, fp32": ["--optimizer=sgd"],
    "LoRA r 8 (AdamW), batch 1, bf16 base": ["--optimizer=adamw", "--lora_rank=8", *BF16]}.items()}
# XLA:CPU has no bf16 matmul: it converts bf16 weights to fp32 and hoists the conversion of every layer out of the
# loop over layers, a whole fp32 copy that a GPU or TPU never makes; the fine-tuning rows turn that pass off
# (as plan.compile_step does for its stand-in compile)
NO_HOIST = "--xla_disable_hlo_passes=while-loop-invariant-code-motion"


def build_opt(cfg):
    hp = optim.hyperparams(cfg, cfg["batch_size"] * cfg["seq_len"])
    return optim.from_config(dict(cfg, schedule="constant"), hp, 1)[0]


def build(cfg):
    """Compiled train step, fresh params and optimizer state, and the batch sharding, as train.main makes them.
    LoRA (lora_rank): the step trains the adapters (returned in place of params) with the base bound."""
    mcfg, key = config.model_config(cfg), jax.random.PRNGKey(cfg["seed"])
    opt = build_opt(cfg)
    abs_params = jax.eval_shape(partial(model.init, mcfg), key)
    abs_lora = jax.eval_shape(partial(lora.init, abs_params, cfg), key) if cfg["lora_rank"] else None
    abs_opt = jax.eval_shape(opt.init, abs_lora or abs_params)
    shard = sharding.shardings(abs_params, abs_opt, sharding.make_mesh(cfg), abs_lora)
    params = jax.jit(partial(model.init, mcfg), out_shardings=shard["params"])(key)
    compiled = steps.lower_train_step(cfg, mcfg, opt, shard, abs_params, abs_opt, abs_lora=abs_lora).compile()
    if abs_lora is None:
        return compiled, params, jax.jit(opt.init, out_shardings=shard["opt"])(params), shard["batch"]
    adapters = jax.jit(lambda p, k: lora.init(p, cfg, k), out_shardings=shard["lora"])(params, key)
    step = lambda a, s, b, i: compiled(a, s, b, i, params)
    step.memory_analysis, step.base = compiled.memory_analysis, params
    return step, adapters, jax.jit(opt.init, out_shardings=shard["opt"])(adapters), shard["batch"]


def scanned(cfg, k):
    """The train step with k optimizer steps per call (train.py's --steps_per_call), fresh params and state."""
    mcfg = config.model_config(cfg)
    opt, _ = optim.from_config(dict(cfg, schedule="constant"), optim.hyperparams(cfg, cfg["seq_len"]), 1)
    params = jax.jit(partial(model.init, mcfg))(jax.random.PRNGKey(0))
    shard = sharding.shardings(jax.eval_shape(lambda: params), jax.eval_shape(opt.init, params), sharding.make_mesh(cfg))
    return steps.make_train_step(cfg, mcfg, opt, shard, k), params, opt.init(params)


def timer(fn, args, tokens, seconds):
    """A callable that runs fn for about `seconds` and returns tokens/s; fn(*args) -> new leading args."""
    state = list(args)

    def run():
        n, t0 = 0, time.perf_counter()
        while n < 3 or time.perf_counter() - t0 < seconds:
            state[:2] = fn(*state)[:2]
            n += 1
        jax.block_until_ready(state[:2])
        return n * tokens / (time.perf_counter() - t0)
    for _ in range(2):  # compile-free warm-up: the first steps touch their memory for the first time
        state[:2] = fn(*state)[:2]
    jax.block_until_ready(state[:2])
    return run


def measure(timers, rounds):
    """{name: median tokens/s} over `rounds` rounds in which every variant runs once, in turn."""
    got = {k: [] for k in timers}
    for _ in range(rounds):
        for k, run in timers.items():
            got[k].append(run())
    return {k: statistics.median(v) for k, v in got.items()}


def speed(cfg, batches, rounds, seconds):
    peak = {d: plan.probe_peak(d, 5) for d in ("float32", "bfloat16")}
    fpt = model.flops_per_token(config.model_config(cfg))
    rng = np.random.default_rng(0)
    timers = {}
    for B in batches:
        for name, extra in (("fp32", {}), ("bf16+SR", dict(param_dtype="bfloat16", compute_dtype="bfloat16")),
                            ("fp32 accum", dict(grad_accum=B))):
            if name == "fp32 accum" and B == 1:
                continue
            c = dict(cfg, batch_size=B, **extra)
            step, params, state, sh = build(c)
            batch = jax.device_put(rng.integers(0, cfg["vocab_size"], (B, cfg["seq_len"]), dtype=np.int32), sh)
            timers[B, name] = timer(lambda p, s, b, i, f=step: f(p, s, b, i), (params, state, batch, np.int32(0)),
                                    B * cfg["seq_len"], seconds)
    tps = measure(timers, rounds)
    peak = {d: max(p, plan.probe_peak(d, 5)) for d, p in peak.items()}  # the better of before and after
    print(f"\n## tokens/s and MFU ({cfg['config_file']}: {model.count_params(config.model_config(cfg))['total']:,} "
          f"parameters, T {cfg['seq_len']}, {cfg['optimizer']}; matmul peak fp32 {peak['float32']:.3g}, "
          f"bf16 {peak['bfloat16']:.3g} FLOP/s)\n")
    print("| batch size | fp32 tokens/s | MFU | bf16 + SR tokens/s | MFU | fp32, B micro-batches of 1 | "
          "accumulation cost |")
    print("|---|---|---|---|---|---|---|")
    for B in batches:
        f, b, a = tps[B, "fp32"], tps[B, "bf16+SR"], tps.get((B, "fp32 accum"))
        print(f"| {B} | {f:,.0f} | {f * fpt / peak['float32']:.1%} | {b:,.0f} | {b * fpt / peak['bfloat16']:.1%} | "
              + (f"{a:,.0f} | {f / a:.2f}x |" if a else "– | – |"))


def steps_per_call(cfg, ks, rounds, seconds):
    c = dict(cfg, batch_size=1, grad_accum=1)
    rng = np.random.default_rng(0)
    timers = {}
    for k in ks:
        fn, params, state = scanned(c, k)
        shape = (k, 1, cfg["seq_len"]) if k > 1 else (1, cfg["seq_len"])  # k batches [k, B, T], or one [B, T]
        batches = jnp.asarray(rng.integers(0, cfg["vocab_size"], shape, dtype=np.int32))
        timers[k] = timer(lambda p, s, b, i, f=fn: f(p, s, b, i), (params, state, batches, np.int32(0)),
                          k * cfg["seq_len"], seconds)
    tps = measure(timers, rounds)
    print("\n## optimizer steps per jitted call at batch size 1\n")
    print("| steps per call | tokens/s | vs 1 per call |\n|---|---|---|")
    for k in ks:
        print(f"| {k} | {tps[k]:,.0f} | {tps[k] / tps[ks[0]]:.2f}x |")


# side-by-side sections: (title, config -> {name: overrides}); the second variant is timed against the first
PAIRS = {
    "mup": ("SP against μP at m = 2 (base width D/2: every weight group has a multiplier that is not 1); μP's "
            "per-weight LR multipliers are its only cost",
            lambda c: {"SP": {}, "μP": dict(parametrization="mup", base_width=c["d_model"] // 2)}),
    "moe": ("dense against MoE: 8 experts of F = mlp_ratio/2 x D, 2 a token (the same active parameters and FLOPs "
            "per token, 4x the MLP weights; moe.py)",
            lambda c: {"dense": {}, "MoE": dict(n_experts=8, top_k=2, mlp_ratio=c["mlp_ratio"] // 2)}),
}


def side_by_side(cfg, batches, rounds, seconds, section):
    """Two variants of the config (PAIRS[section]), each batch size, timed in alternating rounds."""
    title, make = PAIRS[section]
    ways, rng, timers = make(cfg), np.random.default_rng(0), {}
    for B in batches:
        for name, over in ways.items():
            step, params, state, sh = build(dict(cfg, batch_size=B, **over))
            batch = jax.device_put(rng.integers(0, cfg["vocab_size"], (B, cfg["seq_len"]), dtype=np.int32), sh)
            timers[B, name] = timer(lambda p_, s, b, i, f=step: f(p_, s, b, i), (params, state, batch, np.int32(0)),
                                    B * cfg["seq_len"], seconds)
    tps = measure(timers, rounds)
    a, b = ways
    print(f"\n## {title}; {cfg['optimizer']}, fused_update={cfg['fused_update']}\n")
    print(f"| batch size | {a} tokens/s | {b} tokens/s | {b} / {a} |\n|---|---|---|---|")
    for B in batches:
        print(f"| {B} | {tps[B, a]:,.0f} | {tps[B, b]:,.0f} | {tps[B, b] / tps[B, a]:.3f} |")


def _reset_peak_rss():
    """Linux: freed heap goes back to the system and the peak RSS (VmHWM) starts again from the current RSS,
    so compilation's own memory (LLVM, hundreds of MB) is not counted as the step's."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass


def _peak_rss():
    try:
        with open("/proc/self/status") as f:
            return next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmHWM:"))
    except (OSError, StopIteration):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # since the start, compilation included


def memory_child(argv, floor):
    """In a process of its own: 3 steps at batch size 1 (floor: only the weights), then the peak memory of the
    steps, XLA's own accounting of the compiled step, and ours. glibc's default malloc (not train.py's
    kernels.keep_freed_memory, which keeps freed memory for speed) so that RSS follows what is live."""
    cfg = config.parse(argv)
    if floor:  # the runtime and the weights, nothing else
        params = jax.jit(partial(model.init, config.model_config(cfg)))(jax.random.PRNGKey(0))
        jax.block_until_ready(params)
        _reset_peak_rss()
        xla = 0
    else:
        step, params, state, sh = build(cfg)
        batch = jax.device_put(np.zeros((cfg["batch_size"], cfg["seq_len"]), np.int32), sh)
        params, state, _ = step(params, state, batch, np.int32(0))  # the first step's allocations
        jax.block_until_ready(params)
        _reset_peak_rss()
        for i in range(1, 4):
            params, state, loss = step(params, state, batch, np.int32(i))
        jax.block_until_ready(params)
        m = step.memory_analysis()  # arguments (weights, state, batch) + temporaries - what is donated
        xla = m.argument_size_in_bytes + m.temp_size_in_bytes + m.output_size_in_bytes - m.alias_size_in_bytes
    stats = jax.local_devices()[0].memory_stats() or {}
    peak = stats.get("peak_bytes_in_use") or _peak_rss()
    trained, base = params, getattr(step, "base", params) if not floor else params  # LoRA: adapters, frozen base
    nbytes = lambda t: sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(t))
    P, weights = sum(x.size for x in jax.tree.leaves(base)), nbytes(base)
    fused = cfg["fused_update"] and steps.unfused_reason(cfg, config.model_config(cfg), build_opt(cfg)) is None
    grad = 0 if fused else nbytes(trained)  # fused: no whole gradient
    account = weights + (nbytes(trained) if trained is not base else 0) + grad + optim.state_bytes(
        cfg["optimizer"], trained, 0.9 if cfg["optimizer"] == "adamw" else 0.0)
    account += 4 * sum(x.size for x in jax.tree.leaves(trained)) if cfg["grad_accum"] > 1 else 0  # fp32 buffer
    print(json.dumps(dict(peak=peak, params=P, weights=weights, accounting=account, xla=xla,
                          device="peak_bytes_in_use" in stats)))


def memory(argv, runs=MEMORY_RUNS, title="memory at batch size 1", xla_flags=None):
    env = dict(os.environ, XLA_FLAGS=f"{os.environ.get('XLA_FLAGS', '')} {xla_flags}") if xla_flags else None

    def child(extra):
        r = subprocess.run([sys.executable, __file__, "--floor" if extra == ["--floor"] else "--memory_child", *argv,
                            *MEMORY_MODEL, *[e for e in extra if e != "--floor"]], capture_output=True, text=True, env=env)
        if r.returncode:
            common.fail(f"memory run {extra} failed: {r.stderr.strip().splitlines()[-1:]}")
        return json.loads(r.stdout.strip().splitlines()[-1])
    base = child(["--floor"])  # the runtime and the weights
    mib = lambda b: f"{b / 2**20:,.0f}"
    print(f"\n## {title} ({base['params']:,} parameters, {mib(base['weights'])} MiB of fp32 weights; "
          f"{'device peak' if base['device'] else 'peak RSS during steps 2-4'}; floor: the runtime and the weights = "
          f"{mib(base['peak'])} MiB)\n")
    print("| optimizer | peak (MiB) | peak - floor + weights | XLA: the compiled step's buffers | accounting: weights + "
          "gradient (not fused) + state (+ fp32 buffer) |\n|---|---|---|---|---|")
    for name, extra in runs.items():
        m = child(extra)
        print(f"| {name} | {mib(m['peak'])} | {mib(m['peak'] - base['peak'] + base['weights'])} | {mib(m['xla'])} | "
              f"{mib(m['accounting'])} |")


def main(argv):
    if argv and argv[0] in ("--memory_child", "--floor"):
        return memory_child(argv[1:], argv[0] == "--floor")
    kernels.keep_freed_memory()  # as train.main
    own = {"batches": "1,2,4,8,16,32,64", "rounds": "3", "seconds": "1.0", "steps_per_call": "1,4,16,64",
           "sections": "speed,steps,memory"}
    for a in [a for a in argv if a.split("=")[0][2:] in own]:
        own[a.split("=")[0][2:]] = a.split("=", 1)[1]
        argv.remove(a)
    cfg = config.parse(argv, default_file="configs/mini.py")
    rounds, seconds, sections = int(own["rounds"]), float(own["seconds"]), own["sections"].split(",")
    print(f"# benchmarks/bench.py on {jax.devices()[0].device_kind} x {jax.device_count()}, "
          f"{os.cpu_count()} CPU cores, jax {jax.__version__}")
    if "speed" in sections:
        speed(cfg, [int(b) for b in own["batches"].split(",")], rounds, seconds)
    if "steps" in sections:
        steps_per_call(cfg, [int(k) for k in own["steps_per_call"].split(",")], rounds, seconds)
    for section in (s for s in sections if s in PAIRS):
        side_by_side(cfg, [int(b) for b in own["batches"].split(",")], rounds, seconds, section)
    if "memory" in sections:
        memory(argv)
    if "finetune" in sections:  # the fine-tuning comparison's memory (docs/finetuning.md)
        memory(argv, FINETUNE_RUNS, "memory of the fine-tuning comparison's five ways", NO_HOIST)


if __name__ == "__main__":
    main(sys.argv[1:])
