"""Sample from a trained model: `python sample.py --out_dir=out/tiny --prompt="def " [--key=value ...]`.

Loads the run's config.json and its newest valid checkpoint, fills a KV cache with the prompt in one
forward pass, then generates one token per jitted step (a single new position attends to the cache,
not a full forward pass per token), streaming text to stdout as it goes. With --prompt_file, greedy answers
to many prompts at once (a fine-tuned model's, scored by exact match where the file has completions):
`python sample.py --out_dir=out/finetune --prompt_file=data/arith/val.jsonl`.
"""
import argparse
import codecs
import json
import os
import sys
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np

import checkpoint
import data
import instruct
import lora
import model
from common import fail, read_run
from config import model_config


def sample_logits(logits, key, temperature, top_k):
    """logits [B, V] -> token ids [B]; temperature 0 is greedy, top_k 0 keeps the whole vocabulary."""
    if temperature == 0:
        return jnp.argmax(logits, -1)
    logits = logits / temperature
    if top_k:
        kth = jax.lax.top_k(logits, top_k)[0][:, -1:]  # [B, 1] smallest logit kept
        logits = jnp.where(logits < kth, -jnp.inf, logits)
    return jax.random.categorical(key, logits, axis=-1)


@partial(jax.jit, static_argnames=("cfg", "temperature", "top_k"), donate_argnames=("cache",))
def extend(params, cache, tokens, start, key, cfg, temperature, top_k, last=None):
    """Write tokens [B, t] into the cache at positions start.. (an int, or one per row [B]) and sample the
    token after position `last` [B] of each row (default: the last)."""
    h, cache, _ = model.hidden(params, tokens, cfg, cache=cache, start=start)  # [B, t, D]
    h = h[:, -1] if last is None else h[jnp.arange(h.shape[0]), last]  # [B, D]: the logits of one position
    logits = jnp.dot(h, params["unembed"].astype(h.dtype), preferred_element_type=jnp.float32)  # [B, V]
    return sample_logits(logits, key, temperature, top_k), cache


def complete(params, mcfg, prompts, max_new, stop, batch_size=64):
    """Greedy completions of many prompts (lists of token ids), batch_size at a time: [ids up to `stop`].
    Each row's prompt fills the cache from position 0 (rows padded on the right to the longest; a row's
    next token is taken after its own prompt and written at its own position, so padding is never seen).
    A prompt too long for max_new more tokens in seq_len keeps its last tokens."""
    T = mcfg.seq_len
    prompts = [p[-(T - max_new):] for p in prompts]
    P, out = max(map(len, prompts)), []
    for i in range(0, len(prompts), batch_size):
        chunk = prompts[i:i + batch_size]
        chunk += [chunk[-1]] * (batch_size - len(chunk))  # full batches: one compile
        n = jnp.array([len(p) for p in chunk])  # [B]
        ids = jnp.array([p + [stop] * (P - len(p)) for p in chunk], jnp.int32)  # [B, P]
        kw = dict(key=jax.random.PRNGKey(0), cfg=mcfg, temperature=0.0, top_k=0)
        nxt, cache = extend(params, model.init_cache(mcfg, batch_size, T), ids, 0, last=n - 1, **kw)
        new, done = [nxt], nxt == stop  # done [B]: the row has stopped
        for j in range(1, max_new):
            if bool(done.all()):  # every row has its answer: no more steps
                break
            nxt, cache = extend(params, cache, nxt[:, None], n + j - 1, **kw)
            new.append(nxt)
            done = done | (nxt == stop)
        for row in jax.device_get(jnp.stack(new, axis=1))[:len(prompts) - i]:
            row = row.tolist()
            out.append(row[:row.index(stop)] if stop in row else row)
    return out


def load_run(out_dir):
    """A run's (config, model config, plain weights, checkpoint meta) from its newest valid checkpoint."""
    cfg = read_run(out_dir)["config"]
    if not cfg:
        fail(f"no readable config.json in '{out_dir}': train a model there first (python train.py)")
    mcfg = model_config(cfg)
    ckpt = checkpoint.latest_valid(out_dir, print)
    if ckpt is None:
        fail(f"no valid checkpoint in '{out_dir}'")
    like = {"params": jax.eval_shape(partial(model.init, mcfg), jax.random.PRNGKey(0))}
    if cfg.get("lora_rank"):  # a LoRA run: the frozen base and its adapters, merged here (lora.py)
        like["lora"] = jax.eval_shape(partial(lora.init, like["params"], cfg), jax.random.PRNGKey(0))
    try:
        trees, meta = checkpoint.load(ckpt, like)
    except checkpoint.CheckpointError as e:
        fail(str(e))
    return cfg, mcfg, lora.Split.of(trees, cfg).weights(), meta


def generate(params, mcfg, prompt_ids, n_new, key, temperature=0.8, top_k=200, num_samples=1):
    """Yield [num_samples] arrays of new token ids, one per step. When the cache (seq_len positions,
    the longest context the model was trained on) fills, it is refilled with the last half."""
    T = mcfg.seq_len
    ids = jnp.tile(jnp.asarray(prompt_ids[-(T - 1):], jnp.int32)[None], (num_samples, 1))  # [B, t]
    hist, pos = ids, 0
    cache = model.init_cache(mcfg, num_samples, T)
    kw = dict(cfg=mcfg, temperature=temperature, top_k=top_k)
    for i in range(n_new):
        key, sub = jax.random.split(key)
        if pos + ids.shape[1] > T:  # context full: restart the cache from the most recent T/2 tokens
            ids, pos, cache = hist[:, -(T // 2):], 0, model.init_cache(mcfg, num_samples, T)
        nxt, cache = extend(params, cache, ids, pos, sub, **kw)
        pos += ids.shape[1]
        ids = nxt[:, None]
        hist = jnp.concatenate([hist, ids], axis=1)
        yield nxt


def answers(params, mcfg, prompts, tok, max_new, batch_size=64):
    """Greedy answers (text up to <eot>) to prompts (str), each after <eot>, as fine-tuning packs them."""
    outs = complete(params, mcfg, [[tok.eot, *tok.encode(p)] for p in prompts], max_new, tok.eot, batch_size)
    return [tok.decode_bytes(o).decode("utf-8", "replace") for o in outs]


def accuracy(params, mcfg, val, cfg, B):
    """Exact-match accuracy of greedy answers to the first eval_examples held-out prompts (instruct.py)."""
    tok, ex = data.TOKENIZERS[cfg["tokenizer"]], val.examples[:cfg["eval_examples"]]
    n_new = cfg["answer_tokens"] or max(len(tok.encode(c)) for _, c in ex) + 1  # + its <eot>
    got = answers(params, mcfg, [p for p, _ in ex], tok, n_new, min(len(ex), max(B, 64)))  # no gradients:
    return float(np.mean([instruct.exact_match(a, c) for a, (_, c) in zip(got, ex)]))  # more prompts than a batch


def answer_file(a, cfg, mcfg, params, tok):
    """--prompt_file: greedy completions of every prompt (JSONL rows {"prompt"[, "completion"]}, as fine-tuning
    reads them, or a text file of one prompt per line) as JSONL on stdout; with completions, the exact-match
    accuracy on stderr (instruct.exact_match, the score train.py logs)."""
    path = a.prompt_file
    try:
        rows = (instruct.read(path, prompts_only=True) if path.endswith(".jsonl") else
                [(line.rstrip("\n"), None) for line in open(path, encoding="utf-8") if line.strip()])
    except (OSError, ValueError) as e:
        fail(str(e))
    refs, longest = [c for _, c in rows if c is not None], max(len(tok.encode(p)) + 1 for p, _ in rows)
    room = max(1, mcfg.seq_len - longest)  # new tokens that fit after the longest prompt (complete() cuts prompts)
    want = a.max_new_tokens or (max(len(tok.encode(c)) for c in refs) + 1 if refs else room)  # the longest answer
    n_new = min(want, room)  # and its <eot>
    if a.max_new_tokens and n_new < a.max_new_tokens:
        print(f"# max_new_tokens {a.max_new_tokens} -> {n_new}: the longest prompt ({longest} tokens) leaves no more "
              f"room in seq_len {mcfg.seq_len}", file=sys.stderr)
    right = 0
    for (p, ref), text in zip(rows, answers(params, mcfg, [p for p, _ in rows], tok, n_new, a.batch_size)):
        row = dict(prompt=p, completion=text)
        if ref is not None:
            row.update(reference=ref, correct=instruct.exact_match(text, ref))
            right += row["correct"]
        print(json.dumps(row))
    scored = sum(ref is not None for _, ref in rows)
    if scored:
        print(f"# exact match {right}/{scored} = {right / scored:.1%}", file=sys.stderr)


def main(argv):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out_dir", default="out/tiny")
    ap.add_argument("--prompt", default="\n", help="text to continue; '@file.txt' reads it from a file")
    ap.add_argument("--prompt_file", default="", help="many prompts (.jsonl rows {prompt[, completion]}, or one per "
                    "line): greedy answers as JSONL, exact-match accuracy where completions are given")
    ap.add_argument("--batch_size", type=int, default=64, help="prompts answered at once (--prompt_file)")
    ap.add_argument("--max_new_tokens", type=int, default=None, help="default 300; --prompt_file: the longest "
                    "completion + 1 (or what fits after the longest prompt)")
    ap.add_argument("--temperature", type=float, default=0.8)
    ap.add_argument("--top_k", type=int, default=200)
    ap.add_argument("--num_samples", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args(argv)
    if (a.max_new_tokens is not None and a.max_new_tokens < 1) or a.num_samples < 1 or a.temperature < 0 or a.top_k < 0 or a.batch_size < 1:
        fail(f"need max_new_tokens >= 1, num_samples >= 1, temperature >= 0, top_k >= 0, batch_size >= 1; got "
             f"{a.max_new_tokens}, {a.num_samples}, {a.temperature}, {a.top_k}, {a.batch_size}")
    a.max_new_tokens = a.max_new_tokens or (0 if a.prompt_file else 300)  # --prompt_file: 0 lets answer_file choose
    for f in [a.prompt[1:]] * a.prompt.startswith("@") + [a.prompt_file] * bool(a.prompt_file):
        if not os.path.isfile(f):
            fail(f"prompt file '{f}' not found")
    prompt = open(a.prompt[1:]).read() if a.prompt.startswith("@") else a.prompt
    cfg, mcfg, params, meta = load_run(a.out_dir)
    if a.top_k > mcfg.vocab_size:
        fail(f"top_k={a.top_k} is more than the model's vocab_size={mcfg.vocab_size}")
    tok = data.TOKENIZERS[cfg.get("tokenizer", "gpt2")]
    if a.prompt_file:
        return answer_file(a, cfg, mcfg, params, tok)
    ids = tok.encode(prompt) or [tok.eot]
    print(f"# {a.out_dir} step {meta['step']}, {a.num_samples} sample(s), temperature {a.temperature}, top_k {a.top_k}",
          file=sys.stderr)
    outs = [[] for _ in range(a.num_samples)]
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")  # a token can end mid-character
    sys.stdout.write(prompt)
    for nxt in generate(params, mcfg, ids, a.max_new_tokens, jax.random.PRNGKey(a.seed), a.temperature, a.top_k,
                        a.num_samples):
        nxt = jax.device_get(nxt)
        for o, t in zip(outs, nxt):
            o.append(int(t))
        if a.num_samples == 1:  # stream the single sample token by token
            sys.stdout.write(decoder.decode(tok.decode_bytes(outs[0][-1:])))
            sys.stdout.flush()
    if a.num_samples == 1:
        print(decoder.decode(b"", final=True))
    else:
        for i, o in enumerate(outs):
            print(f"\n---------- sample {i}\n{prompt}{tok.decode_bytes(o).decode('utf-8', 'replace')}")


if __name__ == "__main__":
    main(sys.argv[1:])
