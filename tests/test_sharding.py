"""Sharded training (train.py): every (data, model) mesh trains like one device, two processes like one,
checkpoints move between meshes, and the GPT-3 XL plan.

JAX fakes 8 CPU devices only when XLA_FLAGS is set before it starts, so the mesh tests run this file as a
script in a subprocess (`python tests/test_sharding.py meshes <dir>`), which prints its results as JSON;
the single-device references run beside it in a second one. Tiny model: D 64, L 2, H 16 (N 4 heads, so the
8-way model axis cannot split them and must replicate), T 32, V 256, batch 8, 10 steps of AdamW.
Run: python -m pytest -q tests/test_sharding.py
"""
import importlib.util
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

V, T, B, STEPS = 256, 32, 8, 10
MESHES = {1: (8, 1), 2: (4, 2), 4: (2, 4), 8: (1, 8)}  # mesh_model -> (data, model) on 8 devices
ACCUM = {1: 1, 2: 1, 4: 2, 8: 1}  # grad_accum per mesh


def make_tokens(d, n=12_000):
    """A learnable synthetic stream (t_i = 5i + noise mod V) in data.load's format: tokens.u16 + meta.json."""
    d.mkdir(parents=True, exist_ok=True)
    t = ((np.arange(n) * 5 + np.random.default_rng(0).integers(0, 4, n)) % V).astype(np.uint16)
    t.tofile(d / "tokens.u16")
    (d / "meta.json").write_text(json.dumps(dict(token_count=n, train_tokens=n - 2000, max_token_id=int(t.max()))))


def args(work, out, **kw):
    cfg = dict(out_dir=str(Path(work) / out), data=str(Path(work) / "ds"), d_model=64, n_layers=2, head_dim=16,
               seq_len=T, vocab_size=V, batch_size=B, train_tokens=STEPS * B * T, log_every=B * T, eval_every=10**9,
               eval_tokens=B * T, optimizer="adamw", lr=3e-3, b1=0.9, b2=0.99, t2=None, schedule="constant",
               peak_flops=1e12, seed=0, tokenizer="gpt2", unroll=False)  # not the default config's byte model
    cfg.update(kw)
    return [f"--{k}={v}" for k, v in cfg.items()]


def losses(out):
    """Train loss of every step, then the final val loss."""
    rows = [json.loads(line) for line in (Path(out) / "metrics.jsonl").read_text().splitlines()]
    return [r["train_loss"] for r in rows if "train_loss" in r] + [r["val_loss"] for r in rows if "val_loss" in r]


NOISE = {2: dict(noise_every=2 * B * T)}
MOE = dict(n_experts=4, mlp_ratio=2, capacity_factor=1.0)  # 4 experts over the (2, 4) mesh's 'model': one a device  # the (4, 2) mesh and the 1-device reference measure the noise scale


def noise(out):
    """(|g_4|², |g_8|²) of every noise-scale measurement (noise_scale.py: halves of 4, their mean of 8)."""
    rows = [json.loads(line) for line in (Path(out) / "metrics.jsonl").read_text().splitlines()]
    return [(r["grad_sq_small"], r["grad_sq_big"]) for r in rows if "b_simple" in r]


def arrays(ckpt):
    with np.load(Path(ckpt) / "arrays.npz") as z:
        return {k: z[k] for k in z.files}


def env(devices):
    # LLVM -O0 halves the compile time of these tiny programs (it reorders no floating-point arithmetic)
    return dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS=f"--xla_force_host_platform_device_count={devices} "
                "--xla_backend_optimization_level=0")


# ---------------------------------------------------------------- run inside the 8-device subprocess
# (weight, Adafactor state leaf) -> the spec the rules must give; D 128 so that Adafactor factors the
# matrices with two dimensions >= 128 (r averages g^2 over the largest axis, c over the second largest)
SPEC_MODEL = dict(d_model=128, n_layers=2, head_dim=32, seq_len=T, vocab_size=V)  # N 4, F 512
WANT = {
    "embed": ("model", "data"), "unembed": ("data", "model"),
    "blocks/q": (None, "data", "model", None), "blocks/k": (None, "data", "model", None),
    "blocks/v": (None, "data", "model", None), "blocks/o": (None, "model", None, "data"),
    "blocks/up": (None, "data", "model"), "blocks/down": (None, "model", "data"),
    # embed [V=256, D=128]: largest V -> r [128] keeps D's 'data', c [256] keeps V's 'model'
    "embed/r": ("data",), "embed/c": ("model",), "unembed/r": ("data",), "unembed/c": ("model",),
    # up [2, D, F=512]: r [2, 128], c [2, 512]; down [2, F, D]: r [2, 128], c [2, 512]
    "blocks/up/r": (None, "data"), "blocks/up/c": (None, "model"),
    "blocks/down/r": (None, "data"), "blocks/down/c": (None, "model"),
}
WANT.update({f"blocks/{w}/v": WANT[f"blocks/{w}"] for w in "qkvo"})  # second-largest axis 32 < 128: unfactored


def check_shardings(mesh_model, step=False):
    """Every weight and Adafactor state array, as created (and, with step, as returned by one compiled train
    step) on a real 8-device mesh, must be split exactly as WANT says: its spec, and the shape of the shard
    each of the 8 devices holds."""
    import jax
    import model
    import config
    import optim
    import sharding
    import step
    cfg = config.parse(args("/unused", "x", **SPEC_MODEL, optimizer="adafactor", mesh_model=mesh_model))
    mcfg = config.model_config(cfg)
    opt = optim.build("adafactor", 1e-2, 0.0, 0.99)
    mesh = sharding.make_mesh(cfg)
    abs_p = jax.eval_shape(lambda k: model.init(mcfg, k), jax.random.PRNGKey(0))
    abs_s = jax.eval_shape(opt.init, abs_p)
    shard = sharding.shardings(abs_p, abs_s, mesh)
    params = jax.jit(lambda k: model.init(mcfg, k), out_shardings=shard["params"])(jax.random.PRNGKey(0))
    state = jax.jit(opt.init, out_shardings=shard["opt"])(params)
    if step:
        batch = jax.make_array_from_callback((B, T), shard["batch"], lambda i: np.zeros((B, T), np.int32)[i])
        params, state, _ = step.lower_train_step(cfg, mcfg, opt, shard, abs_p, abs_s).compile()(
            params, state, batch, np.int32(0))
    leaves = [("param", p, x) for p, x in jax.tree_util.tree_flatten_with_path(params)[0]]
    leaves += [("state", p, x) for p, x in jax.tree_util.tree_flatten_with_path(state["v"])[0]]
    sizes, got = dict(mesh.shape), {}
    for kind, path, x in leaves:
        name = "/".join(k.key for k in path)
        want = tuple(a if a and x.shape[i] % sizes[a] == 0 else None for i, a in enumerate(WANT[name]))  # N 4 vs 8
        spec = tuple(x.sharding.spec) + (None,) * (x.ndim - len(x.sharding.spec))
        expect_shape = tuple(n // (sizes[a] if a else 1) for n, a in zip(x.shape, want))
        got[f"{kind}:{name}"] = [spec == want, {s.data.shape for s in x.addressable_shards} == {expect_shape},
                                 len(x.addressable_shards) == 8]
    return got


def meshes(work):
    """Train on every mesh through train.main; record losses, shardings and cross-mesh checkpoint loads."""
    import jax
    import checkpoint
    import sharding
    import train
    assert jax.device_count() == 8, jax.devices()
    out = {"losses": {}, "shardings": {}}
    for m in MESHES:  # (2, 4) with 2 micro-batches of 4: accumulation on a mesh, against the plain batch of 8
        train.main(args(work, f"m{m}", mesh_model=m, grad_accum=ACCUM[m], **NOISE.get(m, {})))
        out["losses"][f"fp32 m{m}"] = losses(Path(work) / f"m{m}")
    out["noise"] = noise(Path(work) / "m2")
    train.main(args(work, "bf16_m2", mesh_model=2, param_dtype="bfloat16", rounding="stochastic"))
    out["losses"]["bf16 m2"] = losses(Path(work) / "bf16_m2")
    cfg = train.main(args(work, "moe_m4", mesh_model=4, **MOE))["config"]
    out["losses"]["moe m4"] = losses(Path(work) / "moe_m4")
    import config
    import model
    abs_p = jax.eval_shape(lambda k: model.init(config.model_config(cfg), k), jax.random.PRNGKey(0))
    out["moe_up_spec"] = list(sharding.param_shardings(abs_p, sharding.make_mesh(cfg))["blocks"]["up"].spec)
    plan = train.main(args(work, "dry", mesh_model=2, dry_run=True))["plan"]  # compiles for the real (4, 2) mesh
    out["dry_run"] = dict(mem=plan["mem"], xla=plan["xla"])
    for m in MESHES:  # the arrays as created on every mesh; after a compiled step on the one with both axes split
        out["shardings"][m] = check_shardings(m, step=m == 2)

    # the (4, 2) run's final checkpoint into (1, 8) and into one device: same values, new placement
    import config
    import model
    import optim
    cfg = config.parse(args(work, "x"))
    mcfg = config.model_config(cfg)
    opt = optim.build("adamw", 1e-2, 0.9, 0.99)
    abs_p = jax.eval_shape(lambda k: model.init(mcfg, k), jax.random.PRNGKey(0))
    like = {"params": abs_p, "opt": jax.eval_shape(opt.init, abs_p)}
    ckpt = Path(work) / "m2" / f"ckpt_{STEPS:09d}"
    saved = arrays(ckpt)
    one = jax.make_mesh((1, 1), ("data", "model"), devices=jax.devices()[:1])
    same = {}
    for name, mesh in (("1x8", sharding.make_mesh(dict(cfg, mesh_model=8))), ("1 device", one)):
        shard = sharding.shardings(like["params"], like["opt"], mesh)
        trees = checkpoint.load(str(ckpt), like, shard)[0]
        flat = {"/".join([k, *(q.key for q in p)]): x
                for k in trees for p, x in jax.tree_util.tree_flatten_with_path(trees[k])[0]}
        placed = all(x.sharding == s for k in trees
                     for x, s in zip(jax.tree.leaves(trees[k]), jax.tree.leaves(shard[k])))
        same[name] = [placed, sorted(flat) == sorted(saved),
                      all(np.array_equal(np.asarray(flat[k]).view(saved[k].dtype), saved[k]) for k in saved)]
    out["checkpoint"] = same
    print("RESULT " + json.dumps(out))


# ---------------------------------------------------------------- the tests
@pytest.fixture(scope="module")
def work(tmp_path_factory):
    w = tmp_path_factory.mktemp("sharding")
    make_tokens(w / "ds")
    return w


def single(work):
    """The same runs on one CPU device."""
    import train
    for out, kw in (("ref", NOISE[2]), ("bf16_ref", dict(param_dtype="bfloat16", rounding="stochastic")),
                    ("moe_ref", MOE)):
        train.main(args(work, out, **kw))
    print("RESULT " + json.dumps({**{k: losses(Path(work) / k) for k in ("ref", "bf16_ref", "moe_ref")},
                                  "noise": noise(Path(work) / "ref")}))


@pytest.fixture(scope="module")
def runs(work):
    """The 8-device runs and the 1-device references, as two concurrent subprocesses."""
    procs = [subprocess.Popen([sys.executable, __file__, what, str(work)], cwd=ROOT, env=env(n), text=True,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE)
             for what, n in (("meshes", 8), ("single", 1))]
    out = []
    for p in procs:
        stdout, stderr = p.communicate(timeout=600)
        assert p.returncode == 0, stdout[-3000:] + stderr[-3000:]
        out.append(json.loads(stdout.split("RESULT ", 1)[1]))
    return out


@pytest.fixture(scope="module")
def sharded(runs):
    return runs[0]


@pytest.fixture(scope="module")
def single_runs(runs):
    return runs[1]


@pytest.mark.parametrize("m", list(MESHES))
def test_every_mesh_trains_like_one_device(sharded, single_runs, m):
    # fp32: a sharded matmul sums its partial products in another order, a few ulp (~1e-7 relative) per
    # step; 10 Adam steps leave the losses (~5.5) within 5e-5 (measured: 3e-6 with the earlier init, 1.5e-5
    # with the authors': logits start at std 1, not 0.12, so early steps are steeper). On (2, 4) the batch of 8
    # goes as 2 micro-batches of 4 (mean of equal-size means = the mean), so accumulation is checked too.
    got, ref = sharded["losses"][f"fp32 m{m}"], single_runs["ref"]
    assert len(got) == len(ref) == STEPS + 1
    assert np.max(np.abs(np.array(got) - ref)) <= 5e-5, (got, ref)
    assert ref[-2] < ref[0] - 0.3  # and it does learn: the synthetic stream is predictable


def test_moe_with_experts_split_over_model_trains_like_one_device(sharded, single_runs):
    """An MoE (4 experts of F 128, top 2) on the (2, 4) mesh, each device holding one expert (expert parallelism,
    sharding.EXPERT_RULES), trains like one device: the same tolerance as the dense meshes (fp32 reassociation)."""
    got, ref = sharded["losses"]["moe m4"], single_runs["moe_ref"]
    assert sharded["moe_up_spec"] == [None, "model", "data", None]  # up [L, E, D, F]: E over 'model', D over 'data'
    assert len(got) == len(ref) == STEPS + 1 and np.max(np.abs(np.array(got) - ref)) <= 5e-5, (got, ref)
    assert ref[-2] < ref[0] - 0.3 and np.max(np.abs(np.array(ref) - single_runs["ref"])) > 1e-3  # not the dense run


def test_noise_scale_on_a_mesh_equals_one_device(sharded, single_runs):
    """The gradient noise scale's squared norms on the (4, 2) mesh (each device sums the squares of its
    shards, only scalars cross devices) equal the 1-device run's: the same draws, the same weights. Both
    are sums over 200k squared gradient entries in another order: fp32 agreement to ~1e-5."""
    got, ref = np.array(sharded["noise"]), np.array(single_runs["noise"])
    assert got.shape == ref.shape == (STEPS // 2, 2)
    np.testing.assert_allclose(got, ref, rtol=1e-4)
    assert ref[:, 0].mean() > ref[:, 1].mean()  # E|g_4|² > E|g_8|²: the larger batch's gradient is less noisy


def test_bf16_stochastic_rounding_on_a_mesh(sharded, single_runs):
    # The rounding noise is the same on every mesh (rounding.step_key(seed, step) folded per leaf, and
    # jax_threefry_partitionable draws the same bits however an array is split: test below). The fp32 value
    # being rounded is not: it differs by an ulp or so of fp32, and an ulp moves the stochastic carry
    # with probability ~2^-16 per weight, so over 10 steps a few of the ~100k weights land one bf16 step
    # (2^-8 relative) apart. Measured: losses within 6e-6; assert 1e-4, far below a bf16 step of the loss (0.02).
    got, ref = np.array(sharded["losses"]["bf16 m2"]), np.array(single_runs["bf16_ref"])
    assert np.max(np.abs(got - ref)) <= 1e-4, (got, ref)
    assert np.max(np.abs(ref - single_runs["ref"])) > 1e-4  # bf16 weights do change the run: the check is not vacuous


def test_rounding_noise_does_not_depend_on_the_sharding():
    code = ("import jax, jax.numpy as jnp, numpy as np, rounding\n"
            "from jax.sharding import NamedSharding, PartitionSpec as P\n"
            "mesh = jax.make_mesh((4, 2), ('data', 'model'))\n"
            "x = jnp.asarray(np.random.default_rng(0).normal(size=(64, 48)), jnp.float32) * (1 + 2**-10)\n"
            "k = rounding.step_key(0, 3)\n"
            "f = jax.jit(lambda t: rounding.round_tree(t, k, 'stochastic'))\n"
            "a = f({'w': x})['w']\n"
            "b = f({'w': jax.device_put(x, NamedSharding(mesh, P('data', 'model')))})['w']\n"
            "assert len(b.sharding.device_set) == 8\n"
            "assert np.array_equal(np.asarray(a).view(np.uint16), np.asarray(b).view(np.uint16))\n"
            "assert not np.array_equal(np.asarray(a), np.asarray(x.astype(jnp.bfloat16)))\n")
    p = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env(8), capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr[-3000:]


@pytest.mark.parametrize("m", list(MESHES))
def test_every_weight_and_optimizer_state_is_split_as_the_rules_say(sharded, m):
    got = sharded["shardings"][str(m)]
    assert len(got) == 8 + 12  # 8 weights; Adafactor's r, c of embed, unembed, up, down and v of q, k, v, o
    bad = {k: v for k, v in got.items() if v != [True, True, True]}
    assert not bad, bad  # [spec as WANT, each device's shard shape, 8 shards]


def test_checkpoint_from_one_mesh_loads_into_another(sharded):
    assert sharded["checkpoint"] == {"1x8": [True, True, True], "1 device": [True, True, True]}


def test_dry_run_bytes_per_device_are_what_xla_allocates(sharded):
    """On a real (4, 2) mesh the dry run compiles the step: XLA's own argument bytes per device must equal
    the plan's params + optimizer state + this device's rows of the batch, counted from the rules."""
    mem, xla = sharded["dry_run"]["mem"], sharded["dry_run"]["xla"]
    assert xla["arguments"] == mem["params"] + mem["optimizer state"] + B // 4 * T * 4
    assert mem["gathered weights"] > 0  # data axis 4: FSDP gathers


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("m", [2, 8])
def test_two_processes_train_like_one(work, sharded, m):
    """2 processes x 4 CPU devices (jax.distributed, gloo collectives) against 1 process x 8 devices on the
    same mesh. mesh_model 2: each process reads its half of every batch; mesh_model 8: the model axis
    spans both processes and the data axis is 1, so both read the whole batch."""
    out, port = f"mp{m}", free_port()
    procs = [subprocess.Popen([sys.executable, "train.py", *args(work, out, mesh_model=m), "--num_processes=2",
                               f"--process_id={i}", f"--coordinator_address=127.0.0.1:{port}"],
                              cwd=ROOT, env=env(4), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for i in range(2)]
    logs = []
    for p in procs:
        stdout, stderr = p.communicate(timeout=300)
        assert p.returncode == 0, stdout[-2000:] + stderr[-3000:]
        logs.append(stdout)
    assert "plan: 8 x cpu" in logs[0] and "plan:" not in logs[1]  # one mesh over both processes; one logger
    # The same partitioned program, but gloo sums across processes in its own order: the losses differ by
    # an ulp (measured 5e-7). So do the weights, and Adam's m / sqrt(v) turns an ulp of a near-cancelling
    # gradient into a visible step for a handful of weights (measured: 2 of 32768 off by 4e-5); every
    # array stays within 5e-5 in relative L2 norm (measured 5e-6 with the earlier init, 1.5e-5 with the
    # authors': larger initial logits and gradients).
    got, ref = losses(work / out), sharded["losses"][f"fp32 m{m}"]
    assert np.max(np.abs(np.array(got) - ref)) <= 5e-5, (got, ref)
    a, b = arrays(work / out / f"ckpt_{STEPS:09d}"), arrays(work / f"m{m}" / f"ckpt_{STEPS:09d}")
    assert a.keys() == b.keys() and len(a) == 1 + 3 * 8  # Adam: step, then params, m, v of 8 weights
    for k in a:
        assert a[k].dtype == b[k].dtype and np.linalg.norm(a[k] - b[k]) <= 5e-5 * np.linalg.norm(b[k]), k
    assert sorted(os.listdir(work / out)) == sorted(os.listdir(work / f"m{m}"))  # one writer, same files


def test_gpt3_xl_dry_run_plans_four_tpu_v4_chips(capsys):
    import train
    cfg = train.main(["configs/gpt3.py", "--dry_run=True", "--plan_devices=4", "--plan_device=TPU v4"])
    text = capsys.readouterr().out
    assert "plan: 4 x TPU v4 as mesh data 1 x model 4" in text and "lowered the sharded train step" in text
    assert round(cfg["params_active"] / 1e9, 1) == 1.3  # paper Table 1
    mem, n = cfg["plan"]["mem"], 4
    D, L, V = 2048, 24, 50257
    blocks = 12 * L * D * D  # every block weight splits 4 ways (16 heads, F 8192); V is odd, so the
    embeds = 2 * V * D  # embeddings are replicated on the 1 x 4 mesh
    per_device = (blocks / n + embeds) * 4  # fp32
    assert mem["params"] == mem["gradients"] == mem["accumulation buffer"] == per_device
    assert mem["optimizer state"] == 2 * per_device + 4  # Adam m, v and the int32 step
    # 10B tokens x 9.07e9 FLOPs/token on 4 x 275 TFLOP/s: 22.9 h at 100% MFU; the paper's 100 h is 23% MFU
    assert abs(cfg["plan"]["hours"] - 10e9 * cfg["flops_per_token"] / (4 * 275e12) / 3600) < 0.1


def test_dry_run_compiles_for_the_planned_tpus_when_libtpu_is_here_else_says_why(capsys):
    """--dry_run for TPUs that are not here: with libtpu installed (jax[tpu]) the step is compiled for
    compile-only devices of the planned kind, and XLA:TPU's argument bytes per device are the plan's weights +
    optimizer state + batch rows (every axis a multiple of TPU's 8 x 128 tiles, so no array is padded);
    without it (as in CI) the run says so and compiles on this machine's CPU devices in the planned shape."""
    import jax
    import sharding
    import train
    tpu = importlib.util.find_spec("libtpu") is not None
    cfg = train.main(["configs/gpt3.py", "--dry_run=True", "--plan_devices=1", "--plan_device=TPU v5 lite",
                      "--mesh_model=1", "--d_model=1024", "--n_layers=2", "--vocab_size=1024", "--seq_len=128",
                      "--batch_size=8", "--grad_accum=1", "--param_dtype=bfloat16", "--compute_dtype=bfloat16",
                      "--state_dtype=bfloat16"])
    text, xla, mem = capsys.readouterr().out, cfg["plan"]["xla"], cfg["plan"]["mem"]
    extra = xla["arguments"] - (mem["params"] + mem["optimizer state"] + 8 * 128 * 4)  # + the batch rows
    assert 0 <= extra <= 2048, (xla, mem)  # the int32 step argument (4 bytes; TPU pads scalars to 512)
    assert mem["optimizer state"] == mem["params"] * 2 + 4  # AdamW's m and v in bf16, and the int32 step
    if tpu:
        assert "compiled for 1 compile-only TPU v5 lite devices (libtpu)" in text and xla["tpu"]
    else:
        assert "a stand-in: libtpu, which compiles for TPUs that are not here, is not installed" in text
        assert not xla["tpu"] and xla["peak"] >= xla["arguments"]
    three = jax.sharding.AbstractMesh((3, 1), ("data", "model"))
    assert sharding.compile_only_mesh(three, "v5e") == (None, "no compile-only topology for 3 devices of this kind")


def test_memory_model_matches_the_paper_13b(capsys):
    """Paper Fig. 7, 13B at batch 1 with 16-bit weights (GB): SGD 28.6, Adafactor 29, Adam 82, Adam +
    accumulation 108. Their accounting keeps optimizer state in 16 bits and fuses the backward pass with
    the update (no stored gradient). Our plan's parts, put together that way, land within 5%."""
    import train
    paper = {("sgd", 1): 28.6, ("adafactor", 1): 29, ("adamw", 1): 82, ("adamw", 2): 108}
    for (opt, accum), gb in paper.items():
        cfg = train.main(["configs/gpt3.py", "--dry_run=True", "--plan_devices=1", "--plan_device=TPU v4",
                          "--mesh_model=1", "--d_model=5120", "--n_layers=40", f"--batch_size={accum}", "--plan_compile=False",
                          f"--grad_accum={accum}", "--param_dtype=bfloat16", "--compute_dtype=bfloat16",
                          f"--optimizer={opt}", "--b1=None", "--weight_decay=0.0"])
        m = cfg["plan"]["mem"]
        theirs = m["params"] + m["optimizer state"] / 2 + m["accumulation buffer"] / 2 + m["activations"]
        assert abs(theirs / 1e9 - gb) / gb < 0.05, (opt, accum, theirs / 1e9, gb)
        # ours adds the gradient the step holds, fp32 state and an fp32 accumulation buffer: the fused step (the
        # default where exact, not with accumulation) one layer's gradient at a time, the unfused one all of it
        grad = cfg["params_nonembed"] * 2 / 40 if accum == 1 else m["params"]  # bf16; 40 layers
        assert m["gradients"] == pytest.approx(grad, rel=1e-6), (opt, accum)
        assert m["total"] == pytest.approx(theirs + m["optimizer state"] / 2 + m["accumulation buffer"] / 2 + grad,
                                           rel=1e-9)
    capsys.readouterr()


if __name__ == "__main__":
    {"meshes": meshes, "single": single}[sys.argv[1]](sys.argv[2])
