"""One prepared GPU benchmark, run once on an NVIDIA H200 (7 minutes: --budget_s 420 plus the last row); its
output file is committed as docs/gpu.md. Sections, most valuable first: 0 the environment and the measured bf16
matmul peak (8192^3) that MFU is taken against, next to the spec's; 1 GPT-2 small (configs/gpt2.py, bf16 compute,
T 1024) train-step tokens/s and MFU at batch 1-64, 1 and 8 steps per call; 1c the model with FP8 block matmuls
and with XLA's attention instead of cuDNN's, and whether the FP8 step's HLO has FP8 GEMMs; 2 attention at its shapes, forward +
backward: jax.nn.dot_product_attention's cudnn / xla / default and kernels.causal_attention (what the model runs);
3 FP8 (e4m3, per-tensor current scaling) vs bf16 matmuls, and whether XLA made a cuBLASLt FP8 GEMM of it; 4 the
batch-1 step's memory by optimizer, fused and unfused (XLA's accounting, and the device's peak for one);
1b fused vs unfused step speed; 5 configs/lm30m.py at batch 1 vs 64 and 256.

Each row is printed and appended to --out as soon as it is measured; a failing row or section records its error and
the next runs; after --budget_s no new row starts ("skipped: budget"). Random token batches: no data files, no
`datasets`. Timed after block_until_ready, compilation and 2 warm-up calls excluded, the median of --reps repeats.

    PYTHONUNBUFFERED=1 PYTHONPATH=. python benchmarks/gpu.py --out $OUT/gpu.md
    python benchmarks/gpu.py --smoke --out /tmp/gpu.md    # the same code at toy size on CPU, about a minute

A second run for what the budget skipped: --sections=4,1b,5 --out $OUT/gpu2.md (on the same, still warm machine its
compilation cache in out/jax_cache skips the compiles already done).
"""
import time

T0 = time.perf_counter()  # the budget counts from here: the device's start-up is part of the run's wall clock
import argparse  # noqa: E402
import os
import re
import statistics
import sys
from functools import partial
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec as P

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
import config  # noqa: E402
import fp8  # noqa: E402
import kernels  # noqa: E402
import model  # noqa: E402
import optim  # noqa: E402
import sharding  # noqa: E402
import step as steps  # noqa: E402

NOMINAL = {"H200": 989e12, "H100": 989e12}  # bf16 dense FLOP/s, SXM spec sheets
f32, bf16 = jnp.float32, jnp.bfloat16
NO_AUTOTUNE = {"xla_gpu_autotune_level": 0}  # memory rows: buffers, not kernel speed
COMMON = ["--compute_dtype=bfloat16", "--unroll=False"]  # scan over layers: one layer's compile
TOY = ["--d_model=64", "--n_layers=2", "--head_dim=32", "--seq_len=64", "--vocab_size=512"]
GPT2, LM30M = str(ROOT / "configs" / "gpt2.py"), str(ROOT / "configs" / "lm30m.py")
FULL = dict(gpt2=[GPT2], batches=[1, 4, 16, 64], ks=[1, 8], attn=(16, 1024, 6, 128),  # B, T, N, H
            mlp=(16384, 768, 3072), square=8192, peak=8192, lm30m=[LM30M], lm_batches=[1, 64, 256],
            memory=[(o, f) for o in ("sgd", "adafactor", "adamw") for f in (True, False)], more_ks=[1, 8], fp8_batch=16)
# smoke: every code path once, few compiles (each ~5 s on 2 busy CPU cores): the memory rows and 1b reuse section 1's
SMOKE = dict(gpt2=[GPT2, *TOY], batches=[1, 2], ks=[1, 2], attn=(2, 64, 2, 32), mlp=(256, 64, 128),
             square=256, peak=512, lm30m=[LM30M, *TOY], lm_batches=[1, 4],
             memory=[("adamw", True), ("adamw", False)], more_ks=[1], fp8_batch=2)


class Report:
    """Markdown to stdout and to --out a line at a time, so a run cut short keeps every row so far."""

    def __init__(self, path, budget_s):
        self.path, self.budget, self.cols = path, budget_s, None
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        open(path, "w").close()

    def line(self, s=""):
        s = re.sub(r"(?<![0-9A-Za-z_])(?=[0-9a-f]*[a-f])(?=[0-9a-f]*\d)[0-9a-f]{7,40}(?![0-9A-Za-z_])", "<hex>", s)
        print(s, flush=True)  # ^ no commit-hash look-alikes in docs/ (tests/test_docs.py)
        with open(self.path, "a") as f:
            f.write(s + "\n")

    def table(self, *cols):
        self.cols = cols
        self.line("| " + " | ".join(cols) + " |\n|" + "---|" * len(cols))

    def row(self, *cells):
        cells = [str(c).replace("|", "/").replace("\n", " ") for c in cells]
        self.line("| " + " | ".join(cells + [""] * (len(self.cols) - len(cells))) + " |")

    def elapsed(self):
        return time.perf_counter() - T0

    def each(self, items):
        """Rows [(first cells, fn -> the other cells)]: each in its own try, none once the budget is spent."""
        for head, fn in items:
            if self.elapsed() > self.budget:
                self.row(*head, "skipped: budget")
                continue
            try:
                self.row(*head, *fn())
            except (Exception, SystemExit) as e:  # config.parse exits on a bad value
                self.row(*head, error(e))


def error(e):
    return f"error: {type(e).__name__}: {str(e).strip().splitlines()[0][:300] if str(e).strip() else ''}"


def per_call(call, seconds, reps, stat=statistics.median):
    """Seconds per call of call() (-> what to block on): 2 warm-up calls (the second timed, to pick how many calls
    fill `seconds`), then `reps` repeats of that many back-to-back calls, blocked once at the end (async dispatch,
    as training runs), summarized by `stat`: the median, or min for a peak (a low peak would flatter MFU)."""
    jax.block_until_ready(call())
    t = time.perf_counter()
    jax.block_until_ready(call())
    n = int(min(max(1, seconds / max(time.perf_counter() - t, 1e-6)), 10_000))
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        for _ in range(n):
            out = call()
        jax.block_until_ready(out)
        times.append((time.perf_counter() - t) / n)
    return stat(times)


def compiled_step(ctx, argv, k, options=None):
    """(compiled train step of k steps per call, compile s, cfg, mcfg, fresh () -> (params, state), batch
    sharding) as train.py makes it (step.lower_train_step), cached by config: sections share compiles.
    options: XLA compiler options (memory rows: no autotuning)."""
    cfg = config.parse(argv)
    key = (repr(sorted(cfg.items())), k, repr(options))
    if key not in ctx["steps"]:
        mcfg, pkey = config.model_config(cfg), jax.random.PRNGKey(cfg["seed"])
        hp = optim.hyperparams(cfg, cfg["batch_size"] * cfg["seq_len"])
        opt = optim.from_config(dict(cfg, schedule="constant"), hp, 1)[0]
        abs_params = jax.eval_shape(partial(model.init, mcfg), pkey)
        abs_opt = jax.eval_shape(opt.init, abs_params)
        shard = sharding.shardings(abs_params, abs_opt, sharding.make_mesh(cfg))
        t = time.perf_counter()
        compiled = steps.lower_train_step(cfg, mcfg, opt, shard, abs_params, abs_opt, k=k).compile(options)
        seconds = time.perf_counter() - t
        if mcfg not in ctx["init"]:  # one init program per model, not per variant
            ctx["init"][mcfg] = jax.jit(partial(model.init, mcfg), out_shardings=shard["params"])
        init, opt_init = ctx["init"][mcfg], jax.jit(opt.init, out_shardings=shard["opt"])

        def fresh():
            params = init(pkey)
            return params, opt_init(params)
        ctx["steps"][key] = (compiled, seconds, cfg, mcfg, fresh, shard["batch"])
    return ctx["steps"][key]


def train_speed(ctx, argv, k):
    """(tokens/s, seconds per optimizer step, compile s, mcfg) of the train step on a fixed random batch."""
    compiled, comp_s, cfg, mcfg, fresh, bsh = compiled_step(ctx, argv, k)
    B, T = cfg["batch_size"], cfg["seq_len"]
    shape, spec = ((B, T), bsh.spec) if k == 1 else ((k, B, T), P(None, *bsh.spec))  # one batch, or k [k, B, T]
    tokens = np.random.default_rng(0).integers(0, cfg["vocab_size"], shape, dtype=np.int32)
    batch, state = jax.device_put(tokens, NamedSharding(bsh.mesh, spec)), list(fresh())

    def call():
        state[0], state[1], loss = compiled(state[0], state[1], batch, np.int32(0))  # params, state donated
        return loss
    sec = per_call(call, ctx["args"].seconds, ctx["args"].reps)
    if "first_step" not in ctx:  # the process's first steps: the device's peak so far is theirs (section 4)
        ctx["first_step"] = compiled, (jax.local_devices()[0].memory_stats() or {}).get("peak_bytes_in_use")
    return k * B * T / sec, sec / k, comp_s, mcfg


def mfu(ctx, tps, mcfg):
    flops = model.flops_per_token(mcfg) * tps
    return tuple(f"{flops / p:.1%}" if p else "n/a" for p in (ctx["peak"], ctx["nominal"]))


def env(R, ctx):
    import jaxlib
    dev = jax.devices()[0]
    R.table("what", "value")
    R.row("jax / jaxlib", f"{jax.__version__} / {jaxlib.__version__}")
    R.row("device", f"{dev.device_kind} x {jax.device_count()} ({jax.default_backend()}), {os.cpu_count()} CPU cores")
    limit = (dev.memory_stats() or {}).get("bytes_limit")
    R.row("device memory for arrays (bytes_limit)", f"{limit / 2**30:.1f} GiB" if limit else "n/a")
    n = ctx["size"]["peak"]
    a, b = (jax.random.normal(jax.random.PRNGKey(i), (n, n), bf16) for i in (0, 1))
    mm = jax.jit(jnp.matmul)
    ctx["peak"] = 2 * n**3 / per_call(lambda: mm(a, b), 0.005, 10, min)  # a few ms: 3 calls a repeat on an H200
    R.row(f"measured bf16 matmul peak ({n}^3, best of 10 repeats)", f"{ctx['peak'] / 1e12:.1f} TFLOP/s")
    R.row("nominal bf16 dense peak", f"{ctx['nominal'] / 1e12:.0f} TFLOP/s (spec of {ctx['kind_name']})"
          if ctx["nominal"] else f"n/a (no spec for {dev.device_kind!r})")
    R.row("MFU columns", "measured: vs the measured peak above (the headline); nominal: vs the spec")
    R.row("compilation cache", ctx["cache"])


def speed_table(R, ctx, argv, heads, variants):
    """A table of train-step speed, a row per variant [(first cells, extra argv, steps per call k)]."""
    R.table(*heads, "tokens/s", "MFU (measured peak)", "MFU (nominal)", "ms per step", "vs first row", "compile s")
    base = []

    def row(extra, k):
        tps, sec, comp, mcfg = train_speed(ctx, [*argv, *extra], k)
        base.append(tps)
        return f"{tps:,.0f}", *mfu(ctx, tps, mcfg), f"{sec * 1e3:.2f}", f"{tps / base[0]:.2f}x", f"{comp:.1f}"
    R.each([(head, partial(row, extra, k)) for head, extra, k in variants])


def gpt2_speed(R, ctx):
    argv = [*ctx["size"]["gpt2"], *COMMON]
    cfg = config.parse(argv)
    mcfg = config.model_config(cfg)
    why = getattr(steps, "unfused_reason", lambda *a: None)(cfg, mcfg, optim.from_config(
        dict(cfg, schedule="constant"), optim.hyperparams(cfg, cfg["seq_len"]), 1)[0])
    R.line(f"{model.count_params(mcfg)['total']:,} parameters, T {cfg['seq_len']}, {cfg['optimizer']}, fp32 weights, "
           f"bf16 compute, {model.flops_per_token(mcfg) / 1e6:.0f} MFLOP per token; fused_update="
           f"{cfg['fused_update']} (" + (f"unfused: {why}" if why else "the fused step") + ")\n")
    speed_table(R, ctx, argv, ("batch", "steps per call"),
                [((B, k), [f"--batch_size={B}"], k) for B in ctx["size"]["batches"] for k in ctx["size"]["ks"]])


def attention(R, ctx):
    B, T, N, H = ctx["size"]["attn"]
    q, k, v, g = (jax.random.normal(jax.random.PRNGKey(i), (B, T, N, H), bf16) for i in range(4))  # [B, T, N, H]
    flops = 7 * B * N * T * T * H  # causal: half of 4·B·N·T²·H forward, backward 2.5x the forward
    R.line(f"B {B}, T {T}, N {N}, H {H}, bf16, causal; forward + backward (jax.vjp with a random cotangent); "
           f"TFLOP/s counts the causal half only ({flops / 1e9:.1f} GFLOP)\n")
    R.table("implementation", "fwd+bwd ms", "TFLOP/s", "vs xla", "max abs diff / max abs of xla's (out, dq, dk, dv)",
            "compile s")
    dpa = partial(jax.nn.dot_product_attention, is_causal=True)
    impls = {"xla": partial(dpa, implementation="xla"), "cudnn": partial(dpa, implementation="cudnn"),
             "default (implementation=None)": dpa, "kernels.causal_attention (the model's)": kernels.causal_attention}
    ref = {}

    def row(name):
        if name == "cudnn" and not ctx["gpu"]:
            return ("n/a (no cuDNN on " + jax.default_backend() + ")",)

        def f(q, k, v, g):
            out, vjp = jax.vjp(impls[name], q, k, v)
            return (out, *vjp(g))
        t = time.perf_counter()
        fn = jax.jit(f).lower(q, k, v, g).compile()
        comp = time.perf_counter() - t
        outs = fn(q, k, v, g)
        ref.setdefault("xla", outs)
        diff = max(float(jnp.max(jnp.abs(a.astype(f32) - b.astype(f32))) / jnp.max(jnp.abs(b.astype(f32))))
                   for a, b in zip(outs, ref["xla"]))  # relative to the largest: bf16's spacing grows with |x|
        ok = "ok" if diff <= 2e-2 else "MISMATCH"
        sec = per_call(lambda: fn(q, k, v, g), ctx["args"].seconds / 2, ctx["args"].reps)
        vs = ref.setdefault("sec", sec) / sec
        return (f"{sec * 1e3:.3f}", f"{flops / sec / 1e12:.1f}", f"{vs:.2f}x", f"{diff:.2e} ({ok}, tol 2e-2)",
                f"{comp:.1f}")
    R.each([((name,), partial(row, name)) for name in impls])


quantize = partial(fp8.quantize, dtype=fp8.E4M3)  # (e4m3, scale): per-tensor current scaling, amax -> 448


def fp8_direct(a, sa, b, sb):
    """The dot on the fp8 operands, scales applied to its bf16 output (a cuBLASLt FP8 GEMM's alpha)."""
    y = jax.lax.dot_general(a, b, (((1,), (0,)), ((), ())), preferred_element_type=bf16)  # [M, N]
    return (y * (sa * sb).astype(bf16)).astype(bf16)


def fp8_dequant(a, sa, b, sb):
    """flax's fp8_ops form: dequantize to bf16, then a bf16 dot, which XLA:GPU rewrites into the FP8 GEMM."""
    return jnp.dot(fp8.dequantize(a, sa, bf16), fp8.dequantize(b, sb, bf16), preferred_element_type=bf16)


def fp8_gemm_in(hlo):
    """What the compiled HLO made of the fp8 dot: the first kind found, its line shortened."""
    types = dict(re.findall(r"%([\w.-]+) = (\w+)\[", hlo))  # instruction -> element type (operands print bare)
    f8_in = lambda ln, op: (m := re.search(rf" {op}\(([^)]*)\)", ln)) and any(
        types.get(n, "").startswith("f8") for n in re.findall(r"%([\w.-]+)", m.group(1)))
    triton = ", in a Triton GEMM fusion" if "__triton_gemm" in hlo else ""  # fused computations print their dots
    kinds = {"cuBLASLt FP8 GEMM": lambda ln: re.search(r'custom_call_target="__cublas[^"]*f8', ln),
             f"dot on f8 operands{triton}": lambda ln: f8_in(ln, "dot"),
             "FP8 custom call": lambda ln: f8_in(ln, "custom-call")}
    for what, hit in kinds.items():
        if found := [ln.strip() for ln in hlo.splitlines() if hit(ln)]:
            op = re.sub(r", (metadata|backend_config|frontend_attributes)=\{.*", "", found[0])  # the op, its operands
            return f"{what}: `{op[:160]}{'...' if len(op) > 160 else ''}`"
    return "no: f8 converted before the dot (no FP8 GEMM)"


def fp8_matmuls(R, ctx):
    M, D, F = ctx["size"]["mlp"]
    n = ctx["size"]["square"]
    shapes = {"up": (M, D, F), "down": (M, F, D), "square": (n, n, n)}  # MLP up; down = up's input gradient
    R.line("e4m3 operands, per-tensor current scaling (amax / 448, computed in the timed call), bf16 output; "
           "'GEMM only' takes operands quantized beforehand; rel err = max |y - y_fp32| / max |y_fp32|; "
           f"compiled HLO of each fp8 GEMM written next to the output as fp8_*.hlo.txt\n")
    R.table("shape M x K x N", "form", "bf16 ms (TFLOP/s)", "fp8 GEMM only ms (TFLOP/s)", "speedup GEMM only",
            "fp8 incl. quantize ms", "speedup incl. quantize", "rel err bf16 / fp8", "fp8 GEMM in compiled HLO")
    out_dir, bf16_ref = Path(ctx["args"].out).parent, {}
    sec = lambda fn, *a: per_call(lambda: fn(*a), ctx["args"].seconds / 4, ctx["args"].reps)

    def row(name, form):
        m, kk, nn = shapes[name]
        x = jax.random.normal(jax.random.PRNGKey(0), (m, kk), bf16)  # activations [M, K]
        w = (0.02 * jax.random.normal(jax.random.PRNGKey(1), (kk, nn), f32)).astype(bf16)  # weights [K, N]
        ref = jnp.dot(x.astype(f32), w.astype(f32), precision=jax.lax.Precision.HIGHEST)  # not TF32
        err = lambda y: float(jnp.max(jnp.abs(y.astype(f32) - ref)) / jnp.max(jnp.abs(ref)))
        if name not in bf16_ref:
            mm = jax.jit(lambda x, w: jnp.dot(x, w, preferred_element_type=bf16))
            bf16_ref[name] = sec(mm, x, w), err(mm(x, w))
        t_bf16, e_bf16 = bf16_ref[name]
        gemm = {"direct": fp8_direct, "dequant": fp8_dequant}[form]
        (a, sa), (b, sb) = quantize(x), quantize(w)
        lowered = jax.jit(gemm).lower(a, sa, b, sb).compile()
        hlo = lowered.as_text()
        (out_dir / f"fp8_{name}_{form}.hlo.txt").write_text(hlo)
        t_gemm = sec(lowered, a, sa, b, sb)
        full = jax.jit(lambda x, w: gemm(*quantize(x), *quantize(w)))
        t_full = sec(full, x, w)
        tf = lambda t: f"{t * 1e3:.3f} ({2 * m * kk * nn / t / 1e12:.0f})"
        return (tf(t_bf16), tf(t_gemm), f"{t_bf16 / t_gemm:.2f}x", f"{t_full * 1e3:.3f}", f"{t_bf16 / t_full:.2f}x",
                f"{e_bf16:.1e} / {err(full(x, w)):.1e}", fp8_gemm_in(hlo))
    R.each([((f"{name}: {' x '.join(map(str, shapes[name]))}", form), partial(row, name, form))
            for name in shapes for form in ("direct", "dequant")])


def memory(R, ctx):
    argv = [*ctx["size"]["gpt2"], *COMMON, "--batch_size=1"]
    mcfg = config.model_config(config.parse(argv))
    mib = lambda b: f"{b / 2**20:,.0f}" if b is not None else "n/a"
    R.line(f"batch 1, GPT-2 small as in section 1: {model.count_params(mcfg)['total']:,} parameters = "
           f"{mib(4 * model.count_params(mcfg)['total'])} MiB of fp32 weights. MiB of the compiled step's "
           "memory_analysis, not run: total = argument + output + temp - alias (what is donated); compiled without "
           "autotuning (xla_gpu_autotune_level 0: faster, the same buffers but for a kernel's workspace), and the "
           "step section 1 ran first, with the device's peak while it ran\n")
    R.table("optimizer", "fused_update", "argument", "output", "alias", "temp", "total", "XLA peak_memory",
            "compile s", "device peak_bytes_in_use")

    def row(opt, fused, autotune=False):  # on CPU the option does nothing: share the compiles of section 1 and 1b
        options = None if autotune or not ctx["gpu"] else NO_AUTOTUNE
        compiled, comp, *_ = compiled_step(ctx, [*argv, f"--optimizer={opt}", f"--fused_update={fused}"], 1, options)
        m = compiled.memory_analysis()
        total = m.argument_size_in_bytes + m.output_size_in_bytes + m.temp_size_in_bytes - m.alias_size_in_bytes
        return (mib(m.argument_size_in_bytes), mib(m.output_size_in_bytes), mib(m.alias_size_in_bytes),
                mib(m.temp_size_in_bytes), mib(total), mib(getattr(m, "peak_memory_in_bytes", None)), f"{comp:.1f}")

    def ran():
        compiled, peak = ctx.get("first_step", (None, None))
        same = compiled is compiled_step(ctx, [*argv, "--optimizer=adamw", "--fused_update=True"], 1)[0]
        return (*row("adamw", True, autotune=True), mib(peak) if peak and same else
                "n/a: no memory_stats, or not the process's first step")
    R.each([*[((opt, fused), partial(row, opt, fused)) for opt, fused in ctx["size"]["memory"]],
            (("adamw, as run in section 1", True), ran)])


def fused_vs_unfused(R, ctx):
    R.line("GPT-2 small as in section 1 at its smallest batch. Fused: the optimizer inside the backward pass "
           "(fused.py), each layer's forward residuals kept as the unfused step keeps them; a variant compiled "
           "before shows that compile's seconds\n")
    argv = [*ctx["size"]["gpt2"], *COMMON, f"--batch_size={ctx['size']['batches'][0]}"]
    speed_table(R, ctx, argv, ("fused_update", "steps per call"),
                [((f, k), [f"--fused_update={f}"], k) for k in ctx["size"]["more_ks"] for f in (True, False)])


def fp8_and_attention(R, ctx):
    B = ctx["size"]["fp8_batch"]
    R.line(f"GPT-2 small as in section 1 at batch {B}: the block projections in FP8 (matmul_dtype float8: e4m3 "
           "operands, e5m2 gradients, per-tensor current scaling, fp8.py) against bf16, and XLA's attention against "
           "the default (cuDNN's flash attention where it can run, kernels.attention_implementation); MFU counts "
           "the same FLOPs (against the bf16 peak)\n")
    argv = [*ctx["size"]["gpt2"], *COMMON, f"--batch_size={B}"]
    variants = {"bf16, attention auto": [], "bf16, attention xla": ["--attention=xla"],
                "float8, attention auto": ["--matmul_dtype=float8"]}
    speed_table(R, ctx, argv, ("variant", "steps per call"), [((name, 1), extra, 1) for name, extra in variants.items()])
    hlo = compiled_step(ctx, [*argv, "--matmul_dtype=float8"], 1)[0].as_text()
    (Path(ctx["args"].out).parent / "fp8_step.hlo.txt").write_text(hlo)
    n = len(re.findall(r'custom_call_target="__cublas[^"]*f8', hlo))
    R.line(f"\nthe float8 step's compiled HLO (fp8_step.hlo.txt): {fp8_gemm_in(hlo)}; {n} cuBLASLt FP8 GEMM calls")


def lm30m(R, ctx):
    R.line("the paper's 30M model (configs/lm30m.py with its tuned LR row per batch size), bf16 compute, fused step: "
           "batch 1 vs large batches on one GPU\n")
    B1, *large = ctx["size"]["lm_batches"]
    speed_table(R, ctx, [*ctx["size"]["lm30m"], *COMMON], ("batch", "steps per call"),
                [((B, k), [f"--batch_size={B}"], k) for B, k in [*[(B1, k) for k in ctx["size"]["more_ks"]],
                                                                 *[(B, 1) for B in large]]])


SECTIONS = [("0. environment", env), ("1. GPT-2 small train step: tokens/s and MFU by batch size", gpt2_speed),
            ("1c. GPT-2 small: FP8 block matmuls, cuDNN vs XLA attention", fp8_and_attention),
            ("2. attention at GPT-2 small's shapes", attention), ("3. FP8 vs bf16 matmuls", fp8_matmuls),
            ("4. memory of the batch-1 step by optimizer, fused vs unfused", memory),
            ("1b. GPT-2 small: fused vs unfused step at batch 1", fused_vs_unfused),
            ("5. lm30m: batch 1 vs large batches", lm30m)]


def main(argv):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default="out/gpu.md")
    ap.add_argument("--budget_s", type=float, default=420.0, help="no new row starts after this many seconds")
    ap.add_argument("--seconds", type=float, default=None, help="length of one timed repeat (default 1, smoke 0.1)")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--sections", default="0,1,1c,2,3,4,1b,5", help="which to run (0 always: the peak)")
    ap.add_argument("--smoke", action="store_true", help="toy sizes, for CPU: the same code path in under a minute")
    ap.add_argument("--cache_dir", default=None, help="jax's persistent compilation cache ('' off; default "
                    "out/jax_cache, a second run on the same machine then skips most compiles; smoke: off)")
    args = ap.parse_args(argv)
    args.seconds = args.seconds or (0.1 if args.smoke else 1.0)
    cache = args.cache_dir if args.cache_dir is not None else "" if args.smoke else str(ROOT / "out" / "jax_cache")
    if args.smoke:  # CPU: a smoke run checks the code path, not speed; XLA's cheap compiles, ~1.7x faster
        jax.config.update("jax_disable_most_optimizations", True)
    if cache:
        n = len(list(Path(cache).glob("*"))) if Path(cache).is_dir() else 0
        jax.config.update("jax_compilation_cache_dir", cache)
        cache = f"{os.path.relpath(cache, ROOT)} ({n} entries at the start" + ("; compile s below may be cache hits)" if n else ")")
    kind = jax.devices()[0].device_kind
    name = next((k for k in NOMINAL if k in kind), None)
    ctx = dict(args=args, size=SMOKE if args.smoke else FULL, gpu=jax.default_backend() == "gpu", steps={}, init={},
               nominal=NOMINAL.get(name), kind_name=name, cache=cache or "off", peak=None)
    R = Report(args.out, args.budget_s)
    R.line(f"# benchmarks/gpu.py{' --smoke' if args.smoke else ''} on {kind}")
    for title, fn in [(t, fn) for t, fn in SECTIONS if t.split(".")[0] in {"0", *args.sections.split(",")}]:
        R.line(f"\n## {title}\n")
        R.cols, t = None, time.perf_counter()
        if R.elapsed() > args.budget_s:
            R.table("status")
            R.row("skipped: budget")
            continue
        try:
            fn(R, ctx)
        except (Exception, SystemExit) as e:
            if R.cols is None:
                R.table("status")
            R.row(error(e))
        R.line(f"\n_section {title.split('.')[0]}: {time.perf_counter() - t:.0f} s_")
    R.line(f"\ngpu.py done in {R.elapsed():.0f} s")


if __name__ == "__main__":
    main(sys.argv[1:])
