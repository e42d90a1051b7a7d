"""Fine-tuning (instruct.py, lora.py, sample.complete, train.py on instruction data), against independent
references: each packed example scored alone by the plain model and a numpy log-softmax, the adapted weight
W + s·A·B formed in numpy, greedy decoding by full forward passes without a cache; and a fine-tuning run
killed and resumed, bit for bit its uninterrupted run.
Run: python -m pytest -q tests/test_finetune.py
"""
import json
import signal
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
import checkpoint  # noqa: E402
import data  # noqa: E402
import instruct  # noqa: E402
import lora  # noqa: E402
import model  # noqa: E402
import sample  # noqa: E402
from test_checkpoint import arrays, ok, train  # noqa: E402

BYTES = data.TOKENIZERS["bytes"]
CFG = model.Config(d_model=32, n_layers=2, head_dim=16, seq_len=48, vocab_size=256)
EXAMPLES = [("ab", "cd"), (">>> 1 + 2\n", "3"), ("x = ", "[1, 2]"), ("def f", "(): pass")]


def test_pack_scores_exactly_the_completion_tokens():
    """<eot> prompt completion <eot>, whole examples per row, segments 1.. (0: padding), the mask on the
    completion and its closing <eot>; an example longer than T is skipped and counted."""
    p = instruct.pack([("ab", "cd"), ("x", "yz"), ("0123456789", "0123456789")], BYTES, 12)
    assert p.skipped == 1 and len(p.examples) == 2 and p.tokens.shape == (1, 12)
    want = [0, *b"abcd", 0, 0, *b"xyz", 0, 0]
    assert p.tokens[0].tolist() == want
    assert p.segments[0].tolist() == [1] * 6 + [2] * 5 + [0]
    assert p.mask[0].tolist() == [0, 0, 0, 1, 1, 1, 0, 0, 1, 1, 1, 0]
    # the next example does not fit in what is left of the row: a new row
    p = instruct.pack([("ab", "cd"), ("ef", "gh"), ("i", "j")], BYTES, 10)
    assert p.segments.tolist() == [[1] * 6 + [0] * 4, [1] * 6 + [2] * 4]


def reference_nll(params, ex):
    """Sum of -log p(completion tokens and closing <eot>) of one example run alone (plain model, numpy softmax)."""
    p, c = BYTES.encode(ex[0]), BYTES.encode(ex[1])
    x = np.array([[0, *p, *c, 0]])
    logits = np.asarray(model.forward(params, jnp.asarray(x), CFG), np.float64)[0]  # [t, V]
    logp = logits - np.log(np.exp(logits - logits.max(-1, keepdims=True)).sum(-1, keepdims=True)) - logits.max(-1, keepdims=True)
    targets = range(len(p) + 1, x.shape[1])  # completion tokens and <eot>
    return -sum(logp[t - 1, x[0, t]] for t in targets), len(targets)


def test_packed_loss_is_each_example_scored_alone():
    """The loss of a packed batch = the mean over completion tokens of each example run on its own: the mask
    scores exactly those tokens, and packing changes nothing (no attention across examples, positions from 0)."""
    params = model.init(CFG, jax.random.PRNGKey(0))
    p = instruct.pack(EXAMPLES, BYTES, CFG.seq_len)
    assert len(p.tokens) < len(EXAMPLES)  # some examples share a row
    batch = {k: jnp.asarray(getattr(p, k)) for k in ("tokens", "segments", "mask")}
    nll, n = map(sum, zip(*(reference_nll(params, ex) for ex in EXAMPLES)))
    np.testing.assert_allclose(float(model.loss_fn(params, batch, CFG)), nll / n, rtol=2e-6)


def logits_of(params, tokens, segments=None):
    h, _, _ = model.hidden(params, jnp.asarray(tokens), CFG, segments=None if segments is None else jnp.asarray(segments))
    return np.asarray(h @ params["unembed"])


def test_packed_examples_cannot_attend_across_their_boundary():
    """Changing the first example's tokens leaves the second's logits unchanged with segments, and changes
    them without (plain causal attention: the check can fail)."""
    params = model.init(CFG, jax.random.PRNGKey(1))
    p = instruct.pack([("ab", "cd"), ("xy", "zw")], BYTES, 16)
    q = instruct.pack([("QR", "ST"), ("xy", "zw")], BYTES, 16)
    second = p.segments[0] == 2
    a, b = logits_of(params, p.tokens, p.segments), logits_of(params, q.tokens, q.segments)
    np.testing.assert_array_equal(a[0, second], b[0, second])
    assert not np.allclose(a[0, ~second], b[0, ~second])
    c, d = logits_of(params, p.tokens), logits_of(params, q.tokens)
    assert np.abs(c[0, second] - d[0, second]).max() > 1e-3


def test_lora_zero_b_is_the_base_and_merged_weights_equal_the_adapters():
    params = model.init(CFG, jax.random.PRNGKey(2))
    cfg = dict(lora_rank=4, lora_alpha=8.0, lora_targets="q,o,down")
    ad = lora.init(params, cfg, jax.random.PRNGKey(3))
    s, x = lora.scale(cfg), jax.random.randint(jax.random.PRNGKey(4), (2, CFG.seq_len), 0, 256)
    assert s == 2.0 and lora.count(params, cfg) == 2 * 4 * ((32 + 32) + (32 + 32) + (128 + 32))
    base = float(model.loss_fn(params, x, CFG))
    assert float(model.loss_fn(params, x, CFG, adapt=lora.adapt(ad, s))) == base  # B = 0: W + 0 exactly
    ad = jax.tree.map(lambda a: a + 0.1 * jax.random.normal(jax.random.PRNGKey(5), a.shape), ad)  # B != 0
    merged = lora.merge(params, ad, s)
    a, b = ad["blocks"]["o"]["a"][1], ad["blocks"]["o"]["b"][1]  # layer 1 of o [N, H, D]: in = N·H, out = D
    want = np.asarray(params["blocks"]["o"][1]) + s * (np.asarray(a) @ np.asarray(b)).reshape(2, 16, 32)
    np.testing.assert_allclose(merged["blocks"]["o"][1], want, rtol=1e-6, atol=1e-6)
    assert merged["blocks"]["k"] is params["blocks"]["k"]  # not a target
    adapted = model.loss_fn(params, x, CFG, adapt=lora.adapt(ad, s))
    np.testing.assert_allclose(float(model.loss_fn(merged, x, CFG)), float(adapted), rtol=1e-6)
    assert abs(float(adapted) - base) > 1e-3
    h1, _, _ = model.hidden(merged, x, CFG)
    h2, _, _ = model.hidden(params, x, CFG, adapt=lora.adapt(ad, s))
    np.testing.assert_allclose(h1, h2, rtol=1e-5, atol=1e-5)


def test_batched_greedy_answers_equal_full_forward_decoding():
    """sample.complete (prompts of different lengths in one batch, a KV cache written at each row's own
    position) against greedy decoding by a whole forward pass per token, one prompt at a time."""
    params = model.init(CFG, jax.random.PRNGKey(6))
    prompts = [[0, *b"ab"], [0, *b">>> 12 + 7\n"], [0], [0, *b"xyz"]]
    got = sample.complete(params, CFG, prompts, 6, stop=-1, batch_size=3)  # stop -1: never, all 6 tokens
    # the next token after position n - 1 of a fixed [1, T] buffer (causal: what lies after n - 1 is not seen)
    nxt = jax.jit(lambda x, n: jnp.argmax(model.forward(params, x, CFG)[0, n - 1]))
    for p, g in zip(prompts, got):
        x = np.zeros((1, CFG.seq_len), np.int32)
        x[0, :len(p)] = p
        for n in range(len(p), len(p) + 6):
            x[0, n] = nxt(x, n)
        assert g == x[0, len(p):len(p) + 6].tolist()
    stop = got[1][2]  # a row stops at its stop token, which is not returned
    assert sample.complete(params, CFG, prompts[1:2], 6, stop=stop)[0] == got[1][:got[1].index(stop)]


def test_read_names_the_bad_line_and_reads_chats(tmp_path):
    f = tmp_path / "a.jsonl"
    f.write_text('{"prompt": "a", "completion": "b"}\n\n{"prompt": "a"}\n')
    with pytest.raises(ValueError, match=r"a.jsonl:3: expected"):
        instruct.read(str(f))
    assert instruct.read(str(f), prompts_only=True) == [("a", "b"), ("a", None)]
    f.write_text('{"prompt": "a", "completion": "b"}\nnot json\n')
    with pytest.raises(ValueError, match=r"a.jsonl:2: not JSON"):
        instruct.read(str(f))
    chat = [{"role": "system", "content": "Add."}, {"role": "user", "content": "1+1"}, {"role": "assistant", "content": "2"}]
    f.write_text(json.dumps({"messages": chat}) + "\n")
    assert instruct.read(str(f)) == [("system: Add.\nuser: 1+1\nassistant: ", "2")]
    assert instruct.is_instruct(str(f)) and not instruct.is_instruct(str(tmp_path / "none.jsonl"))
    f.write_text('{"text": "a document"}\n')
    assert not instruct.is_instruct(str(f))  # pre-training text (data.py)
    f.write_text('{"prompt": "a", "completion": "b"\n{"prompt": "a", "completion": "b"}\n')  # line 1 not JSON
    with pytest.raises(ValueError, match=r"a.jsonl:1: not JSON"):
        instruct.read(str(f))
    assert not instruct.is_instruct(str(f))  # not instruction data: data.check names the line, before a run prints
    with pytest.raises(SystemExit, match=r"^error: .*a.jsonl:1: not JSON"):
        data.check(str(f))


def finetune_config(*argv):
    """configs/finetune.py as train.py reads it, with the command line's overrides (small: bytes, T 32)."""
    import config
    return config.parse(["configs/finetune.py", "--seq_len=32", *argv])


def test_finetuning_on_a_user_file_holds_out_5_percent(tmp_path, monkeypatch):
    """`python train.py configs/finetune.py --data=my.jsonl` validates on 5% of my.jsonl's examples (the same ones
    every run), saying so; --val_data=FILE validates on that file instead."""
    monkeypatch.chdir(ROOT)
    mine = tmp_path / "my.jsonl"
    examples = instruct.arithmetic(200, 0, 2, seed=5)[0]
    instruct.write_jsonl(mine, examples)
    cfg = finetune_config(f"--data={mine}")
    assert cfg["val_data"] == ""
    lines = []
    train, val = instruct.from_config(cfg, lines.append)
    assert len(val.examples) == 10 and len(train.examples) == 190  # 5% of 200
    assert sorted(train.examples + val.examples) == sorted(examples) and not set(train.examples) & set(val.examples)
    assert lines[-1] == (f"validating on 5% of {mine}'s examples (at most 1,000, seed 0), held out from training; "
                         "--val_data=FILE to validate on a file")
    assert instruct.from_config(cfg, lambda s: None)[1].examples == val.examples  # the same ones every run
    other = tmp_path / "other.jsonl"
    instruct.write_jsonl(other, examples[:7])
    lines.clear()
    train, val = instruct.from_config(finetune_config(f"--data={mine}", f"--val_data={other}"), lines.append)
    assert len(train.examples) == 200 and val.examples == examples[:7]
    assert lines[-1] == f"validating on {other} (val_data)"


def test_default_finetuning_validates_on_the_arithmetic_tasks_own_file(tmp_path, monkeypatch):
    """configs/finetune.py as it is (data/arith/train.jsonl, val_data ''): all of train.jsonl trains, and the task's
    val.jsonl (pairs disjoint from train's) validates, as `python instruct.py arithmetic` wrote them."""
    monkeypatch.chdir(ROOT)
    cfg = finetune_config()
    assert cfg["data"] == "data/arith/train.jsonl" and cfg["val_data"] == ""
    monkeypatch.chdir(tmp_path)
    instruct.main(["arithmetic", "--n_train=120", "--n_val=9", "--digits=2"])
    lines = []
    train, val = instruct.from_config(cfg, lines.append)
    assert (len(train.examples), len(val.examples)) == (120, 9)
    assert val.examples == instruct.read("data/arith/val.jsonl")
    assert lines[-1].startswith("validating on data/arith/val.jsonl, the arithmetic task's held-out file")
    cfg["data"] = str(tmp_path / "data" / "arith" / "train.jsonl")  # the same file, named another way
    assert instruct.val_source(cfg["data"], "")[0] == "data/arith/val.jsonl"


# -------------------------------------------------------------- a fine-tuning run, killed and resumed
T, STEPS, CKPT = 32, 40, 10
KILLER = ("import os, signal, sys, data, train; rows = data.batch_rows; at = int(os.environ['KILL_AT']); "
          "data.batch_rows = lambda *a: os.kill(os.getpid(), signal.SIGKILL) if a[3] == at else rows(*a); "
          "train.main(sys.argv[1:])")


@pytest.fixture(scope="module")
def task(tmp_path_factory):
    w = tmp_path_factory.mktemp("ft")
    tr, va = instruct.arithmetic(300, 16, 2)
    instruct.write_jsonl(w / "train.jsonl", tr)
    instruct.write_jsonl(w / "val.jsonl", va)
    return w


def ft_args(w, out, **kw):
    cfg = dict(out_dir=str(w / out), data=str(w / "train.jsonl"), val_data=str(w / "val.jsonl"), tokenizer="bytes",
               vocab_size=256, d_model=32, n_layers=1, head_dim=16, seq_len=T, batch_size=2, train_tokens=STEPS * 2 * T,
               log_every=2 * T, ckpt_every=CKPT * 2 * T, eval_every=20 * 2 * T, eval_examples=8, lr=3e-3,
               schedule="constant", peak_flops=1e12, seed=0)
    cfg.update(kw)
    return [f"--{k}={v}" for k, v in cfg.items()]


@pytest.mark.parametrize("kw", [dict(lora_rank=4, optimizer="adamw", steps_per_call=4, log_every=4 * 2 * T),
                                dict(optimizer="adafactor", param_dtype="bfloat16", fused_update=True)],
                         ids=["lora-adamw", "adafactor-bf16-fused"])
def test_finetuning_resumes_bit_for_bit(task, kw, capsys):
    """Killed between checkpoints and resumed: the same losses, exact-match accuracies and final arrays as
    the uninterrupted run. LoRA's checkpoint holds the frozen base and the adapters, and its merged weights
    are a normal run (what sample.py loads: the merge of the adapters, to fp32 rounding)."""
    name = "lora" if "lora_rank" in kw else "full"
    ref, out = task / f"ref_{name}", task / f"kill_{name}"
    p = ok(train(task, ft_args(task, ref.name, **kw)))
    assert "instruction data, train: 300 examples" in p.stdout
    assert ("train step: fused" in p.stdout) == (name == "full")
    p = train(task, ft_args(task, out.name, **kw), code=KILLER, env=dict(KILL_AT="25"))
    assert p.returncode == -signal.SIGKILL, p.stderr[-2000:]
    # the checkpoints of the calls that crossed 10 and 20 (LoRA: 4 steps per call, the kill before step 24's call)
    assert [s for s, _ in checkpoint.list_checkpoints(out)] == ([12, 20] if name == "lora" else [10, 20])
    ok(train(task, ft_args(task, out.name, init_from="resume", **kw)))
    rows = lambda d: [json.loads(x) for x in (d / "metrics.jsonl").read_text().splitlines()]
    logged = lambda d: [(r["step"], k, r[k]) for r in rows(d) for k in ("train_loss", "val_loss", "val_accuracy", "lr")
                        if k in r]
    assert logged(out) == logged(ref)  # exact float equality
    assert [r["step"] for r in rows(ref) if "val_accuracy" in r] == [20, 40]
    a, b = arrays(ref / f"ckpt_{STEPS:09d}"), arrays(out / f"ckpt_{STEPS:09d}")
    assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)
    assert any(k.startswith("lora/") for k in a) == (name == "lora")
    if name == "lora":
        cfg, mcfg, merged, _ = sample.load_run(str(ref / "merged"))
        assert cfg["lora_rank"] == 0
        _, _, from_adapters, _ = sample.load_run(str(ref))
        for x, y in zip(jax.tree.leaves(merged), jax.tree.leaves(from_adapters)):
            np.testing.assert_array_equal(x, y)
        # sample.py --prompt_file on the merged run: the answers and the exact match train.py logged at the end
        (task / "eight.jsonl").write_text("".join((task / "val.jsonl").read_text().splitlines(True)[:8]))
        sample.main([f"--out_dir={ref / 'merged'}", f"--prompt_file={task / 'eight.jsonl'}", "--max_new_tokens=4"])
        out, err = capsys.readouterr()
        got = [json.loads(x) for x in out.splitlines()]
        assert len(got) == 8 and all(g["correct"] == (g["completion"].strip() == g["reference"]) for g in got)
        final = [r["val_accuracy"] for r in rows(ref) if "val_accuracy" in r][-1]
        assert f"exact match {sum(g['correct'] for g in got)}/8 = {final:.1%}" in err


def test_dry_run_plan_counts_lora_memory(task):
    """The plan of a LoRA run (D 32, L 1, N 2 x H 16, F 128; rank 4 on q, k, v, o, up, down): the base's
    weights in their dtype, and the adapters' r·(in + out) numbers per layer in fp32, as weights, gradient and
    (AdamW) twice over as optimizer state."""
    import train
    r = train.main(ft_args(task, "plan", lora_rank=4, param_dtype="bfloat16", dry_run=True))
    n = 4 * (4 * (32 + 32) + (32 + 128) + (128 + 32))  # q, k, v, o: D -> N·H = 32; up: D -> F; down: F -> D
    P = 2 * 256 * 32 + 4 * 32 * 32 + 2 * 32 * 128
    mem = r["plan"]["mem"]
    assert mem["params"] == 2 * P and mem["lora adapters"] == mem["gradients"] == 4 * n
    assert mem["optimizer state"] == 8 * n + 4  # m, v and the step counter
