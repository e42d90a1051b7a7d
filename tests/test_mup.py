"""μP (mup.py): equal to SP at the base width bit for bit; each weight type's init std and effective LR against
the closed forms of Tensor Programs V Table 3 at two widths; the coordinate check's slopes (benchmarks/
coord_check.py); qk_norm off; the log's largest logits."""
import importlib.util
import math
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import model
import mup
import optim

ROOT = Path(__file__).resolve().parents[1]
BASE = 64
HIDDEN = ("q", "k", "v", "o", "up", "down")


def cfg_at(D, p="mup", **kw):
    return model.Config(d_model=D, n_layers=2, seq_len=16, vocab_size=256, head_dim=16, parametrization=p,
                        base_width=BASE, **kw)


def test_mup_at_its_base_width_is_sp_bit_for_bit():
    """Init, forward and one step of every optimizer (with weight decay): the same bits."""
    sp, mu = cfg_at(BASE, "sp"), cfg_at(BASE, "mup")
    p_sp, p_mu = model.init(sp, jax.random.PRNGKey(3)), model.init(mu, jax.random.PRNGKey(3))
    for a, b in zip(jax.tree.leaves(p_sp), jax.tree.leaves(p_mu)):
        np.testing.assert_array_equal(a, b)
    tokens = jax.random.randint(jax.random.PRNGKey(1), (2, 16), 0, 256)
    np.testing.assert_array_equal(model.forward(p_sp, tokens, sp), model.forward(p_mu, tokens, mu))
    grads = jax.grad(model.loss_fn)(p_sp, tokens, sp)
    for name in optim.OPTIMIZERS:
        scales = mup.lr_scales("mup", BASE, BASE, name)
        ones = dict.fromkeys(mup.GROUP, 1.0)  # an explicit table of 1s takes the same path
        u = [optim.build(name, 1e-2, 0.9, 0.95, weight_decay=0.1, lr_scale=s) for s in (None, scales, ones)]
        outs = [jax.tree.leaves(jax.jit(o.update)(grads, o.init(p_sp), p_sp)[0]) for o in u]
        for a, b, c in zip(*outs):
            np.testing.assert_array_equal(a, b)
            np.testing.assert_array_equal(a, c)


def xavier_std(fan_in, fan_out):
    return math.sqrt(2 / (fan_in + fan_out))  # U(±√(6/(in+out))) has variance 2/(in+out)


@pytest.mark.parametrize("D", [128, 256])
def test_init_std_follows_table_3(D):
    """Std of every weight at width D (m = 2, 4) against its closed form: the base width's SP std times m^0
    (embedding), m^-1/2 (hidden), m^-1 (readout); SP's own formula reads the fans at D."""
    m, H, N0 = D / BASE, 16, BASE / 16
    want = {"embed": 1 / math.sqrt(BASE), "unembed": 1 / math.sqrt(BASE) / m,
            **{k: xavier_std(3 * N0 * BASE, 3 * N0 * H) / math.sqrt(m) for k in ("q", "k", "v")},
            "o": xavier_std(N0 * H, N0 * BASE) / math.sqrt(m), "up": xavier_std(BASE, 4 * BASE) / math.sqrt(m),
            "down": xavier_std(4 * BASE, BASE) / math.sqrt(m)}
    p = model.init(cfg_at(D), jax.random.PRNGKey(0))
    got = {"embed": p["embed"], "unembed": p["unembed"], **p["blocks"]}
    for k, w in got.items():  # >= 32k samples each: the sample std is within 1.5% (5 standard errors)
        assert float(jnp.std(w)) == pytest.approx(want[k], rel=0.015), k
    sp = model.init(cfg_at(D, "sp"), jax.random.PRNGKey(0))  # SP at D: its own fans, not the base's
    assert float(jnp.std(sp["embed"])) == pytest.approx(1 / math.sqrt(D), rel=0.015)


# Table 3 (and docs/mup.md for those it does not cover): the LR multiplier's power of m per optimizer
TABLE = {"adamw": (0, -1, -1), "signum": (0, -1, -1), "sgd": (1, 0, -1), "adafactor": (0, -0.5, 0)}  # embed, hidden, unembed
MUON = {"embed": 0, "unembed": -1, "q": -0.5, "k": -0.5, "v": -0.5, "o": -1, "up": 0, "down": 0}


@pytest.mark.parametrize("D", [128, 256])
@pytest.mark.parametrize("name", optim.OPTIMIZERS)
def test_effective_lr_follows_the_table(name, D):
    """Each weight's update under μP over its update with no multipliers, from the same gradient and state:
    the table's m^power; the decoupled weight decay is not scaled (a zero gradient's update is the same)."""
    m, cfg = D / BASE, cfg_at(D)
    params = model.init(cfg, jax.random.PRNGKey(0))
    grads = jax.tree.map(lambda w: jax.random.normal(jax.random.PRNGKey(1), w.shape), params)
    power = MUON if name == "muon" else {k: TABLE[name][0 if k == "embed" else 2 if k == "unembed" else 1]
                                          for k in mup.GROUP}
    plain, scaled = (optim.build(name, 1e-2, 0.9, 0.95, lr_scale=s)
                     for s in (None, mup.lr_scales("mup", D, BASE, name)))
    u0, u1 = (jax.tree_util.tree_flatten_with_path(jax.jit(o.update)(grads, o.init(params), params)[0])[0]
              for o in (plain, scaled))
    for (path, a), (_, b) in zip(u0, u1):
        np.testing.assert_allclose(b, a * m ** power[path[-1].key], rtol=1e-6, atol=1e-12, err_msg=str(path))
    if name != "muon":  # Muon's blocks take no weight decay
        zero = jax.tree.map(jnp.zeros_like, grads)
        decay = [optim.build(name, 1e-2, 0.0, 0.95, weight_decay=0.1, lr_scale=s)
                 for s in (None, mup.lr_scales("mup", D, BASE, name))]
        d0, d1 = (jax.tree.leaves(jax.jit(o.update)(zero, o.init(params), params)[0]) for o in decay)
        for a, b in zip(d0, d1):
            np.testing.assert_allclose(b, a, rtol=1e-6)


def test_forward_has_no_width_multiplier():
    """Table 3's form puts the readout's 1/m into its init and LR: μP's logits are SP's expression."""
    cfg = cfg_at(256)
    p = model.init(cfg, jax.random.PRNGKey(0))
    tokens = jax.random.randint(jax.random.PRNGKey(1), (2, 16), 0, 256)
    h, _, _ = model.hidden(p, tokens, cfg)
    np.testing.assert_allclose(model.forward(p, tokens, cfg), h @ p["unembed"], rtol=1e-5, atol=1e-6)


def load_coord_check():
    spec = importlib.util.spec_from_file_location("coord_check", ROOT / "benchmarks" / "coord_check.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def coord():
    cc, widths = load_coord_check(), [32, 64, 128, 256]
    kw = dict(B=2, T=32, seeds=(0, 1, 2), lr=1e-2, steps=5, zero_readout=True)
    return cc, widths, {p: cc.measure(widths, p, **kw) for p in mup.PARAMETRIZATIONS}


def test_coordinate_check_mup_is_flat_and_sp_grows(coord):
    """Widths 32..256 (8x), Adam at lr 1e-2, 3 seeds, the readout started at 0 (so that the logits hold only what
    the updates made; with SP's init the logits' init term fades as m^-1/2 and dominates these first steps):
    under μP every activation type's slope (steps 2-5, where defined) within ±0.1; under SP the blocks'
    outputs and the logits grow (slope > 0.5 by step 5)."""
    cc, widths, res = coord
    for t in cc.TYPES:
        s = cc.slopes(widths, res["mup"][t][0])[1:]  # [steps 2-5, layers]
        s = s[np.isfinite(s)]
        assert np.all(np.abs(s) <= 0.1), (t, s)
    for t in ("blocks", "logits"):
        assert np.all(cc.slopes(widths, res["sp"][t][0])[-1] > 0.5), t


def test_qk_norm_off_and_the_largest_logits():
    """qk_norm=False: the attention logits are the raw q·k/√H; model.watch's largest equal the max of activations'."""
    tokens = jax.random.randint(jax.random.PRNGKey(1), (2, 16), 0, 256)
    for qk in (True, False):
        cfg = cfg_at(64, "sp", qk_norm=qk)
        p = model.init(cfg, jax.random.PRNGKey(0))
        x = model.activations(p, tokens, cfg)
        q = jnp.einsum("btd,dnh->btnh", model.rms_norm(x["embed"]), p["blocks"]["q"][0])
        k = jnp.einsum("btd,dnh->btnh", model.rms_norm(x["embed"]), p["blocks"]["k"][0])
        if qk:
            q, k = model.rms_norm(q), model.rms_norm(k)
        q, k = model.rope(q, jnp.arange(16), cfg.rope_base), model.rope(k, jnp.arange(16), cfg.rope_base)
        s = jnp.einsum("btnh,bsnh->bnts", q, k) / 4.0  # √H = 4
        causal = np.tril(np.ones((16, 16), bool))
        np.testing.assert_allclose(x["attn_logits"][0], np.where(causal, s, 0), rtol=1e-4, atol=1e-5)
        attn, out = model.watch(p, tokens, cfg).values()
        assert float(attn) == pytest.approx(float(jnp.max(jnp.where(causal, x["attn_logits"], -jnp.inf))), rel=1e-6)
        assert float(out) == pytest.approx(float(x["logits"].max()), rel=1e-6)
        # the plain model.loss_fn path agrees with activations' logits (one forward, two readings)
        np.testing.assert_allclose(model.forward(p, tokens, cfg), x["logits"], rtol=1e-5, atol=1e-5)


def test_fused_step_takes_the_same_per_weight_lrs():
    """μP at m = 2, AdamW in fp32, 3 steps: the fused step (each layer's update inside the backward pass) equals
    the unfused one, and both differ from the same run without μP's LR multipliers (they reach every part)."""
    from functools import partial

    import config
    import sharding
    import step

    def run(fused, scales=True):
        cfg = config.parse(["configs/tiny_gpt2.py", "--d_model=64", "--n_layers=2", "--head_dim=16", "--seq_len=8",
                            "--vocab_size=64", "--batch_size=2", "--parametrization=mup", "--base_width=32",
                            f"--fused_update={fused}"])
        mcfg = config.model_config(cfg)
        opt = optim.build("adamw", 3e-3, 0.9, 0.99, lr_scale=mup.lr_scales("mup", 64, 32, "adamw") if scales else None)
        abs_p = jax.eval_shape(partial(model.init, mcfg), jax.random.PRNGKey(0))
        shard = sharding.shardings(abs_p, jax.eval_shape(opt.init, abs_p), sharding.make_mesh(cfg))
        params = model.init(mcfg, jax.random.PRNGKey(0))
        state, fn, rng = opt.init(params), step.make_train_step(cfg, mcfg, opt, shard, fused=fused), np.random.default_rng(0)
        for i in range(3):
            params, state, _ = fn(params, state, rng.integers(0, 64, (2, 8)).astype(np.int32), np.int32(i))
        return jax.device_get(params)
    fused, unfused, plain = run(True), run(False), run(False, scales=False)
    for a, b, c in zip(jax.tree.leaves(fused), jax.tree.leaves(unfused), jax.tree.leaves(plain)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)
        assert not np.allclose(b, c, rtol=1e-4, atol=0)


def test_dry_run_prints_each_groups_lr(capsys):
    """GPT-3 XL's width under μP from the 30M model's 384: m = 16/3, hidden LR x 3/16, init std x √(3/16)."""
    import train
    train.set_up(["configs/gpt3.py", "--dry_run=True", "--parametrization=mup", "--base_width=384", "--lr=1.6e-3",
                  "--batch_size=1", "--grad_accum=1"])
    out = capsys.readouterr().out
    assert "width 2048 = 5.33333 x base_width 384" in out
    rows = {line.split()[0]: [float(x) for x in line.split()[1:]] for line in out.splitlines()
            if line.startswith("  ") and line.split()[0] in mup.GROUP and len(line.split()) == 4}
    m = 2048 / 384
    for name, (init, mult, peak) in rows.items():
        want = {"embed": (1, 1), "unembed": (1 / m, 1 / m)}.get(name, (m ** -0.5, 1 / m))
        assert (init, mult) == pytest.approx(want, rel=1e-3) and peak == pytest.approx(1.6e-3 * want[1], rel=1e-3)
    assert len(rows) == len(mup.GROUP) - 1  # a dense model has no router
