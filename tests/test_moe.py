"""moe.py: the Mixture-of-Experts MLP against a reference built from E separate dense MLPs (numpy, a token at a
time), its router losses against their closed forms, E = 0 against the dense model, the KV cache against the full
forward, the fused step against the unfused one, every optimizer and LoRA on the stacked experts, a resumed run,
and 8 fake CPU devices (experts split over 'model') against one.
Run: python -m pytest -q tests/test_moe.py
"""
import json
import math
import os
import subprocess
import sys
from functools import partial
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
import model  # noqa: E402
import moe  # noqa: E402

CFG = model.Config(d_model=32, n_layers=2, seq_len=16, vocab_size=64, head_dim=8, mlp_ratio=2, n_experts=4, top_k=2,
                   capacity_factor=0.75)  # C = ceil(0.75·2·16/4) = 6 of a sequence's 8 choices per expert on average


def gelu(x):  # tanh GELU, as kernels.gelu
    return 0.5 * x * (1 + np.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x**3)))


def reference(cfg, h, p):
    """moe.mlp's output, token by token from E dense MLPs: softmax router, top-k renormalized, each expert taking
    a sequence's tokens in order of position until it holds C; -> (output, kept [B, T, k])."""
    h, W, up, down = (np.asarray(x, np.float64) for x in (h, p["router"], p["up"], p["down"]))
    B, T, _ = h.shape
    C = math.ceil(cfg.capacity_factor * cfg.top_k * cfg.seq_len / cfg.n_experts)
    out, kept = np.zeros_like(h), np.zeros((B, T, cfg.top_k), bool)
    for b in range(B):
        load = np.zeros(cfg.n_experts, int)
        for t in range(T):
            r = h[b, t] @ W
            prob = np.exp(r - r.max()) / np.exp(r - r.max()).sum()
            top = np.argsort(-prob)[:cfg.top_k]
            w = prob[top] / prob[top].sum()
            for j, e in enumerate(top):
                if load[e] < C:
                    out[b, t] += w[j] * (gelu(h[b, t] @ up[e]) @ down[e])
                    kept[b, t, j] = True
                load[e] += 1
    return out, kept


@pytest.fixture(scope="module")
def layer():
    p = jax.tree.map(lambda w: w[0], model.init(CFG, jax.random.PRNGKey(0))["blocks"])
    h = model.rms_norm(jax.random.normal(jax.random.PRNGKey(1), (3, 16, 32)))
    return h, p


def test_layer_equals_e_dense_mlps_with_capacity_and_drops(layer):
    h, p = layer
    out, aux, _ = moe.mlp(CFG, h, p)
    want, kept = reference(CFG, h, p)
    np.testing.assert_allclose(out, want, atol=1e-6)  # fp32 against fp64: a few ulp of outputs of size ~1
    assert 0.05 < 1 - kept.mean() < 0.5 and float(aux["dropped"]) == pytest.approx(1 - kept.mean(), abs=1e-7)
    gone = ~kept.any(-1)  # tokens with every choice dropped: the MLP adds nothing, the residual carries them
    assert gone.any() and np.all(np.asarray(out)[gone] == 0)


def test_router_losses_against_closed_forms():
    """A hand-made routing: E = 4, k = 1, router = s·I, each token a basis vector, so token i's logits are s at its
    expert and 0 elsewhere: p = a = e^s / (e^s + 3) there, b = 1 / (e^s + 3) elsewhere; 8 tokens routed 4, 2, 2, 0."""
    E, s, T = 4, 2.0, 8
    cfg = model.Config(d_model=4, n_layers=1, seq_len=T, vocab_size=8, head_dim=2, mlp_ratio=1, n_experts=E, top_k=1,
                       capacity_factor=4.0)
    route = [0, 0, 0, 0, 1, 1, 2, 2]
    h = jnp.eye(E)[jnp.array(route)][None]  # [1, 8, 4]
    p = dict(router=s * jnp.eye(E), up=jnp.zeros((E, 4, 4)), down=jnp.zeros((E, 4, 4)))
    _, aux, _ = moe.mlp(cfg, h, p)
    a, b = math.exp(s) / (math.exp(s) + 3), 1 / (math.exp(s) + 3)
    n = np.array([4, 2, 2, 0])
    f, P = n / T, (n * a + (T - n) * b) / T
    assert float(aux["balance"]) == pytest.approx(E * np.sum(f * P), rel=1e-6)
    assert float(aux["z"]) == pytest.approx(math.log(math.exp(s) + 3) ** 2, rel=1e-6)
    assert float(aux["max_load"]) == pytest.approx(4 / 2) and float(aux["dropped"]) == 0
    # uniform routing (a zero router): the balance loss is at its minimum, 1
    _, aux, _ = moe.mlp(cfg, h, dict(p, router=jnp.zeros((E, E))))
    assert float(aux["balance"]) == pytest.approx(1.0, rel=1e-6)
    # the model's loss adds both, weighted, for every layer
    assert float(moe.loss(CFG, {"balance": jnp.array([1.0, 2.0]), "z": jnp.array([3.0, 4.0])})) == \
        pytest.approx(0.01 * 3 + 1e-3 * 7)


def test_no_experts_is_the_dense_model():
    """E = 0: the MoE keys change nothing (the same program and weights); E = 1, k = 1 with room for every token
    is the dense MLP (router weight 1, nothing dropped) up to fp32 reassociation."""
    dense = model.Config(d_model=32, n_layers=2, seq_len=16, vocab_size=64, head_dim=8)
    odd = model.Config(**{**dense.__dict__, "top_k": 3, "capacity_factor": 0.1, "router_aux_weight": 5.0})
    tokens = jax.random.randint(jax.random.PRNGKey(2), (2, 16), 0, 64)
    p = model.init(dense, jax.random.PRNGKey(0))
    assert jax.tree.all(jax.tree.map(jnp.array_equal, p, model.init(odd, jax.random.PRNGKey(0))))
    assert str(jax.make_jaxpr(model.loss_fn, static_argnums=2)(p, tokens, dense)) == \
        str(jax.make_jaxpr(model.loss_fn, static_argnums=2)(p, tokens, odd))
    one = model.Config(**{**dense.__dict__, "n_experts": 1, "top_k": 1, "capacity_factor": 1.0,
                          "router_aux_weight": 0.0, "router_z_loss": 0.0})
    q = dict(p, blocks={**p["blocks"], "up": p["blocks"]["up"][:, None], "down": p["blocks"]["down"][:, None],
                        "router": jnp.zeros((2, 32, 1))})
    np.testing.assert_allclose(model.forward(q, tokens, one), model.forward(p, tokens, dense), rtol=1e-6, atol=1e-6)


def test_counts_active_and_total_parameters():
    D, L, E, k, F = 32, 2, 4, 2, 64
    c = model.count_params(CFG)
    attn = 4 * D * D
    assert c["nonembed"] == L * (attn + k * 2 * D * F + D * E)
    assert c["total"] == L * (attn + E * 2 * D * F + D * E) + 2 * 64 * D
    assert c["total"] == sum(x.size for x in jax.tree.leaves(model.init(CFG, jax.random.PRNGKey(0))))


def test_kv_cache_decoding_and_greedy_sampling_equal_the_full_forward():
    """Capacity drops tokens in the full forward (C = 6 of 16·2/4 = 8 choices per expert): decoding one token at a
    time must drop the same ones, which the cache's routes make it do; and sample.complete's right-padded batch of
    prompts of two lengths continues each as the full forward would, greedily."""
    import sample
    p = model.init(CFG, jax.random.PRNGKey(0))
    x = jax.random.randint(jax.random.PRNGKey(3), (2, 16), 0, 64)
    forward = jax.jit(model.forward, static_argnums=2)
    full = forward(p, x, CFG)
    assert float(model.watch(p, x, CFG)["dropped"]) > 0.05
    cache = model.init_cache(CFG, 2, 16)
    first, cache = model.forward(p, x[:, :6], CFG, cache=cache, start=0)
    step = jax.jit(lambda p, t, cache, start: model.forward(p, t, CFG, cache=cache, start=start))
    steps = [first]
    for t in range(6, 16):
        logits, cache = step(p, x[:, t:t + 1], cache, t)
        steps.append(logits)
    np.testing.assert_allclose(np.concatenate(steps, 1), full, rtol=1e-5, atol=1e-5)
    prompts = [x[0, :5].tolist(), x[1, :9].tolist()]
    got = sample.complete(p, CFG, prompts, max_new=6, stop=-1, batch_size=2)
    for prompt, new in zip(prompts, got):
        seq = list(prompt)
        for _ in range(6):  # greedy from full forwards of the growing sequence, padded to T: the model is causal
            seq.append(int(jnp.argmax(forward(p, jnp.array([seq + [0] * (16 - len(seq))]), CFG)[0, len(seq) - 1])))
        assert new == seq[len(prompt):]


def test_fused_step_every_optimizer_and_lora_on_stacked_experts():
    """3 AdamW steps: fused (each layer's experts updated inside the backward pass) = unfused. One step of every
    optimizer's update moves every expert. Adafactor's per-layer blocks are per expert; Muon orthogonalizes each expert's
    matrix; LoRA adapts the dense weights of an MoE and starts as the base model."""
    import config
    import lora
    import optim
    import sharding
    import step
    shape = dict(d_model=32, n_layers=2, head_dim=8, seq_len=16, vocab_size=64, batch_size=2, mlp_ratio=2,
                 n_experts=4, capacity_factor=0.75)
    cfg = config.parse(["configs/tiny_gpt2.py", *[f"--{k}={v}" for k, v in shape.items()]])
    mcfg = config.model_config(cfg)
    batches = np.random.default_rng(0).integers(0, 64, (3, 2, 16)).astype(np.int32)

    p0 = jax.jit(partial(model.init, mcfg))(jax.random.PRNGKey(0))  # jitted, as all below: eager ops compile one by one

    def run(opt, fused, n=3):
        abs_p = jax.eval_shape(partial(model.init, mcfg), jax.random.PRNGKey(0))
        shard = sharding.shardings(abs_p, jax.eval_shape(opt.init, abs_p), sharding.make_mesh(cfg))
        params = jax.tree.map(jnp.copy, p0)  # the step donates it
        state, fn = jax.jit(opt.init)(params), step.make_train_step(cfg, mcfg, opt, shard, fused=fused)
        for i in range(n):
            params, state, loss = fn(params, state, batches[i], np.int32(i))
        return params, state

    adam = optim.build("adamw", 3e-3, 0.9, 0.99)
    (a, sa), (b, sb) = run(adam, True), run(adam, False)
    for x, y in zip(jax.tree.leaves((a, sa)), jax.tree.leaves((b, sb))):
        np.testing.assert_allclose(x, y, rtol=2e-6, atol=1e-7)
    grads = jax.jit(jax.grad(model.loss_fn), static_argnums=2)(p0, jnp.asarray(batches[0]), mcfg)
    for name, lr in [("sgd", 0.5), ("adafactor", 3e-2), ("muon", 3e-3), ("signum", 1e-3)]:
        opt = optim.build(name, lr, 0.0 if name != "muon" else 0.9, 0.99, **(dict(muon_lr=0.02) if name == "muon" else {}))
        u, _ = jax.jit(opt.update)(grads, jax.jit(opt.init)(p0), p0)
        assert bool((jnp.abs(u["blocks"]["up"]).max(axis=(2, 3)) > 0).all()), name  # every expert of every layer
    rms = optim.block_rms({"blocks": p0["blocks"]}, optim.layer_blocks({"blocks": p0["blocks"]}))["blocks"]
    want = jnp.sqrt(jnp.mean(p0["blocks"]["up"] ** 2, axis=(2, 3), keepdims=True))  # [L, E, 1, 1]
    np.testing.assert_allclose(rms["up"], jnp.broadcast_to(want, rms["up"].shape), rtol=1e-6)
    o = optim.orthogonalize(p0["blocks"]["up"], (-2, -1))  # [L, E, D, F]: each expert's own matrix
    s = jnp.linalg.svd(o[1, 2], compute_uv=False) / math.sqrt(64 / 32)
    assert 0.6 < float(s.min()) and float(s.max()) < 1.25
    tokens = jnp.asarray(batches[0])
    cfg_l = dict(cfg, lora_rank=2, lora_targets="q,k,v,o")
    adapters = lora.init(p0, cfg_l, jax.random.PRNGKey(1))
    loss = jax.jit(lambda p, a, t: (model.loss_fn(p, t, mcfg, lora.adapt(a, 1.0)), model.loss_fn(p, t, mcfg)))
    adapted, base = loss(p0, adapters, tokens)
    assert float(adapted) == pytest.approx(float(base), abs=1e-6)
    with pytest.raises(SystemExit, match="LoRA adapts an MoE's dense weights only"):
        config.parse(["configs/tiny_gpt2.py", "--n_experts=4", "--lora_rank=2"])


def test_fused_step_takes_a_stacked_router_where_its_state_is_per_layer():
    """GPT-3 XL's router [24, 2048, 8] has its layer axis among its two largest: AdamW, Muon and Adafactor (whose
    128 floor leaves it unfactored) still fuse; an Adafactor that would factor it over (L, D) does not."""
    import config
    import fused
    import optim
    cfg = config.parse(["configs/gpt3_moe.py", "--batch_size=1", "--grad_accum=1"])
    abs_p = jax.eval_shape(partial(model.init, config.model_config(cfg)), jax.random.PRNGKey(0))
    why = lambda opt: fused.why_not(cfg, opt, abs_p, jax.eval_shape(opt.init, abs_p))
    assert why(optim.build("adamw", 1e-3, 0.9, 0.99)) is None and why(optim.build("adafactor", 1e-3, 0.0, 0.99)) is None
    assert why(optim.build("muon", 1e-3, 0.9, 0.99, muon_lr=0.02)) is None
    assert why(optim.adafactor(1e-3, min_dim_size_to_factor=1)) == "the optimizer's state of a stacked weight is not one slice per layer"


def test_resumed_moe_run_is_bitwise_the_uninterrupted_one(tmp_path):
    """Ctrl-C at step 9 of 16 (batch 2, T 32, a synthetic stream; bf16 weights with stochastic rounding, the fused
    step, the noise scale every 512 tokens): the checkpoint and resume give the uninterrupted run's losses, router
    stats, noise scale and final weights bit for bit. Three train.py processes sharing a compilation cache."""
    n = 20_000
    t = ((np.arange(n) * 7 + np.random.default_rng(0).integers(0, 3, n)) % 256).astype(np.uint16)
    (tmp_path / "ds").mkdir()
    t.tofile(tmp_path / "ds" / "tokens.u16")
    (tmp_path / "ds" / "meta.json").write_text(json.dumps(dict(token_count=n, train_tokens=n - 2000, val_tokens=2000,
                                                               max_token_id=int(t.max()), vocab_size=256)))
    argv = lambda out, *more: [f"--data={tmp_path / 'ds'}", "--vocab_size=256", "--d_model=32", "--n_layers=2",
                               "--head_dim=16", "--seq_len=32", "--batch_size=2", "--train_tokens=1024",
                               "--log_every=192", "--eval_every=512", "--eval_tokens=256", "--lr=3e-3", "--t2=10000",
                               "--n_experts=4", "--mlp_ratio=2", "--capacity_factor=1.0", "--fused_update=True",
                               "--param_dtype=bfloat16", "--rounding=stochastic", "--noise_every=512",
                               f"--out_dir={tmp_path / out}", *more]
    env = dict(os.environ, JAX_PLATFORMS="cpu", JAX_COMPILATION_CACHE_DIR=str(tmp_path / "xla_cache"))
    # Ctrl-C while the loop fetches step 9's batch (as tests/test_checkpoint.py's SIGINT case)
    stop = ("import os, signal, sys, data, train; get = data.get_batch; data.get_batch = lambda *a, **k: "
            "(os.kill(os.getpid(), signal.SIGINT) if a[4] == 9 else None) or get(*a, **k); train.main(sys.argv[1:])")
    for code, args, rc in ((None, argv("whole"), 0), (stop, argv("cut"), 130), (None, argv("cut", "--init_from=resume"), 0)):
        cmd = [sys.executable, *(["-c", code] if code else ["train.py"]), *args]
        p = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
        assert p.returncode == rc, p.stdout[-2000:] + p.stderr[-2000:]
    rows = lambda d: [json.loads(x) for x in open(tmp_path / d / "metrics.jsonl")]
    keys = ("step", "train_loss", "val_loss", "dropped", "max_load", "max_logit", "b_simple")
    pick = lambda d: [{k: r[k] for k in keys if k in r} for r in rows(d) if set(keys[1:]) & set(r)]
    assert pick("whole") == pick("cut") and len(pick("whole")) >= 6 and any("b_simple" in r for r in pick("whole"))
    first = rows("whole")[0]
    assert 0 <= first["dropped"] < 1 and first["max_load"] >= 1
    with np.load(tmp_path / "whole" / "ckpt_000000016" / "arrays.npz") as a, \
            np.load(tmp_path / "cut" / "ckpt_000000016" / "arrays.npz") as b:
        assert sorted(a.files) == sorted(b.files) and all(np.array_equal(a[k], b[k]) for k in a.files)


def test_gpt3_moe_dry_run_counts_active_and_total_and_compiles(capsys):
    """configs/gpt3_moe.py: GPT-3 XL's 1.31B active parameters (its FLOPs per token: 8 experts of F 2D, 2 a token)
    of 3.83B in all; and a 2-layer cut of it compiles for one planned chip (compile-only TPU with libtpu, else the
    CPU stand-in) with the memory XLA counts."""
    import train
    run = train.main(["configs/gpt3_moe.py", "--dry_run=True", "--plan_compile=False"])
    text = capsys.readouterr().out
    dense = model.Config(d_model=2048, n_layers=24, seq_len=2048, vocab_size=50257, head_dim=128)
    assert run["params_active"] == model.count_params(dense)["active"] + 24 * 2048 * 8  # + the routers
    assert run["params_total"] == model.count_params(dense)["total"] + 24 * (6 * 2 * 2048 * 4096 + 2048 * 8)
    assert "a token runs 2 of 8 experts" in text and "lowered the sharded train step" in text
    run = train.main(["configs/gpt3_moe.py", "--dry_run=True", "--plan_devices=1", "--plan_device=TPU v5 lite",
                      "--mesh_model=1", "--n_layers=2", "--vocab_size=1024", "--seq_len=128", "--batch_size=8",
                      "--grad_accum=1"])
    xla = run["plan"]["xla"]
    assert xla["arguments"] >= run["plan"]["mem"]["params"] + run["plan"]["mem"]["optimizer state"] and xla["peak"] > 0
