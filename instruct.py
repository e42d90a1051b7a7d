"""Instruction data for fine-tuning: a JSONL of {"prompt", "completion"} rows (or {"messages": [{"role",
"content"}, ...]} chats, the last assistant turn being the completion) -> tokens packed into T-token rows.

Each example is <eot> prompt completion <eot> (the separator that precedes every pre-training document,
then the one that ends the answer, so a model learns to stop). Examples are packed whole into rows in file
order, as the authors pack MATH; one longer than T is skipped (and counted). Three arrays per row [R, T]:
  tokens    the token ids (padding: <eot>)
  segments  1, 2, ... for the examples of the row, 0 for padding: a token attends only to its own
            example (model.block), whose positions restart at 0 (model.positions)
  mask      True on the completion's tokens and its closing <eot>: the only tokens scored (model.head_loss)
Batches are rows drawn exactly as pre-training draws sequences (data.batch_rows): a fresh seeded
permutation each epoch, so a resumed run reads the same batches. The held-out examples are scored by
answer (exact match of the greedy completion, train.py), and their packed rows give a val loss.

    python instruct.py arithmetic --out_dir=data/arith    # -> train.jsonl, val.jsonl: a task with no download
"""
import argparse
import json
import os
import random
import sys
from dataclasses import dataclass

import numpy as np

import data
from common import atomic_write, fail

VAL_FRACTION, VAL_CAP = 0.05, 1000  # held out when no val file is given: 5% of the examples, at most 1000
ARITH_DIR = "data/arith"  # where `python instruct.py arithmetic` writes its task: train.jsonl, val.jsonl


def read(path, prompts_only=False):
    """[(prompt, completion)] of a JSONL file; ValueError naming the line that is not an example.
    prompts_only (sample.py --prompt_file): rows may lack the completion (None then)."""
    out = []
    for i, row in data.jsonl_rows(path):  # a line that is not JSON: ValueError naming path:line
        if prompts_only and isinstance(row, dict) and isinstance(row.get("prompt"), str):
            out.append((row["prompt"], row.get("completion")))
        else:
            out.append(_example(row, f"{path}:{i}"))
    if not out:
        raise ValueError(f"{path}: no examples")
    return out


def _example(row, where):
    if isinstance(row, dict) and isinstance(row.get("prompt"), str) and isinstance(row.get("completion"), str):
        return row["prompt"], row["completion"]
    turns = row.get("messages") if isinstance(row, dict) else None
    if (isinstance(turns, list) and turns and all(isinstance(t, dict) and isinstance(t.get("content"), str)
                                                   for t in turns) and turns[-1].get("role") == "assistant"):
        prompt = "".join(f"{t.get('role', 'user')}: {t['content']}\n" for t in turns[:-1]) + "assistant: "
        return prompt, turns[-1]["content"]
    raise ValueError(f"{where}: expected {{\"prompt\": str, \"completion\": str}} or {{\"messages\": [..., "
                     f"{{\"role\": \"assistant\", \"content\": str}}]}}, got {str(row)[:80]}")


def is_instruct(spec):
    """Whether data=spec names instruction data: a .jsonl file whose first row is an example (a row with
    'text' is a pre-training document, data.py's). A first line that is not JSON is not: data.check names it."""
    if not (spec.endswith(".jsonl") and os.path.isfile(spec)):
        return False
    try:
        row = next(data.jsonl_rows(spec), (0, None))[1]
    except (OSError, ValueError):
        return False
    return isinstance(row, dict) and ("prompt" in row or "messages" in row) and "text" not in row


@dataclass
class Packed:
    """Packed rows of instruction data, read through data.Stream's batch interface (train.py reads both alike)."""
    tokens: np.ndarray  # [R, T] int32
    segments: np.ndarray  # [R, T] int32
    mask: np.ndarray  # [R, T] bool
    examples: list  # [(prompt, completion)] in the rows
    skipped: int  # examples longer than T

    @property
    def n_tokens(self) -> int:
        return self.tokens.size

    def batch(self, batch_size, seed, step, process_index=0, process_count=1):
        return get_batch(self, batch_size, seed, step, process_index, process_count)

    def eval_batches(self, batch_size, max_tokens=None, process_index=0, process_count=1):
        return eval_batches(self, batch_size, max_tokens, process_index, process_count)

    def scores(self, val_loss):  # the loss of the completions is the score (train.py adds exact match)
        return {}


def pack(examples, tok, T):
    """Encode and pack (prompt, completion) pairs into Packed rows of T tokens (module docstring)."""
    ids = [(tok.encode(p), tok.encode(c)) for p, c in examples]
    rows, row, kept = [], [], []
    for (p, c), ex in zip(ids, examples):
        n = len(p) + len(c) + 2
        if n > T:
            continue
        if sum(len(x[0]) for x in row) + n > T:
            rows.append(row)
            row = []
        row.append(([tok.eot, *p, *c, tok.eot], len(p) + 1))  # (tokens, where the completion starts)
        kept.append(ex)
    rows += [row] if row else []
    if not rows:
        raise ValueError(f"every one of the {len(examples)} examples is longer than seq_len={T} tokens")
    out = Packed(np.full((len(rows), T), tok.eot, np.int32), np.zeros((len(rows), T), np.int32),
                 np.zeros((len(rows), T), bool), kept, len(examples) - len(kept))
    for r, row in enumerate(rows):
        at = 0
        for s, (x, c0) in enumerate(row, 1):
            out.tokens[r, at:at + len(x)], out.segments[r, at:at + len(x)] = x, s
            out.mask[r, at + c0:at + len(x)] = True  # the completion and its closing <eot>
            at += len(x)
    return out


def load(spec, val_spec, tokenizer, T):
    """(train, val) Packed of data=spec and val_data=val_spec ('' holds out VAL_FRACTION of spec's examples,
    at most VAL_CAP, chosen by a fixed seed, so every run of the same file holds out the same ones)."""
    tok = data.TOKENIZERS[tokenizer]
    train = read(spec)
    if val_spec:
        val = read(val_spec)
    else:
        if len(train) < 2:
            raise ValueError(f"{spec}: 1 example cannot be split into train and val; give val_data")
        n = max(1, min(int(len(train) * VAL_FRACTION), VAL_CAP))
        held = set(random.Random(0).sample(range(len(train)), n))
        train, val = [e for i, e in enumerate(train) if i not in held], [e for i, e in enumerate(train) if i in held]
    return pack(train, tok, T), pack(val, tok, T)


def get_batch(p: Packed, batch_size, seed, step, process_index=0, process_count=1):
    """This process's rows of batch `step`: {'tokens', 'segments', 'mask'} [b, T] (data.get_batch's order)."""
    rows = data.batch_rows(len(p.tokens), batch_size, seed, step, process_index, process_count)
    return {"tokens": p.tokens[rows], "segments": p.segments[rows], "mask": p.mask[rows]}


def eval_batches(p: Packed, batch_size, max_tokens=None, process_index=0, process_count=1):
    """The held-out rows in order, in full batches (data.eval_batches' rule: at least one; ValueError if
    there are fewer rows than one batch)."""
    T = p.tokens.shape[1]
    if len(p.tokens) < batch_size:
        raise ValueError(f"the {len(p.tokens)} held-out rows are fewer than one eval batch of {batch_size}")
    n = len(p.tokens) // batch_size if max_tokens is None else max(1, min(len(p.tokens) // batch_size,
                                                                         max_tokens // (batch_size * T)))
    b = batch_size // process_count
    for i in range(n):
        rows = slice(i * batch_size + process_index * b, i * batch_size + (process_index + 1) * b)
        yield {"tokens": p.tokens[rows], "segments": p.segments[rows], "mask": p.mask[rows]}


def exact_match(answer: str, reference: str) -> bool:
    """The answer is right when it is the reference, up to surrounding whitespace."""
    return answer.strip() == reference.strip()


def arithmetic(n_train, n_val, digits, seed=0):
    """(train, val) examples of addition as a Python session writes it (the stdlib's doctests do):
    '>>> 123 + 45\\n' -> '168'. Each operand has 1..digits digits; no pair is in both splits."""
    rng, seen, out = random.Random(seed), set(), []
    if n_train + n_val > 0.5 * (10**digits) ** 2:
        raise ValueError(f"{n_train + n_val} distinct pairs of {digits}-digit numbers: too many to draw")
    while len(out) < n_train + n_val:
        a, b = (rng.randrange(10 ** rng.randint(1, digits)) for _ in range(2))
        if (a, b) not in seen:
            seen.add((a, b))
            out.append((f">>> {a} + {b}\n", str(a + b)))
    return out[:n_train], out[n_train:]


def val_source(spec, val_spec):
    """(the val file, or '' to hold out examples of spec; in words, which split validates) for data=spec and
    val_data=val_spec. val_data '' holds out VAL_FRACTION of spec's examples, except for the generated arithmetic
    task's own ARITH_DIR/train.jsonl (configs/finetune.py's data), whose val.jsonl beside it is its held-out split."""
    if val_spec:
        return val_spec, f"{val_spec} (val_data)"
    arith = os.path.join(ARITH_DIR, "train.jsonl")
    if os.path.abspath(spec) == os.path.abspath(arith):
        val = os.path.join(ARITH_DIR, "val.jsonl")
        return val, f"{val}, the arithmetic task's held-out file (data is its {arith}; --val_data=FILE for another)"
    return "", (f"{VAL_FRACTION:.0%} of {spec}'s examples (at most {VAL_CAP:,}, seed 0), held out from training; "
                "--val_data=FILE to validate on a file")


def from_config(cfg, log):
    """Instruction data (data = a JSONL of prompt/completion rows): (train, val) Packed, and a log line saying
    which split validates (val_source)."""
    val_spec, how = val_source(cfg["data"], cfg["val_data"])
    try:
        packed = load(cfg["data"], val_spec, cfg["tokenizer"], cfg["seq_len"])
    except (OSError, ValueError) as e:
        fail(str(e))
    for name, p in zip(("train", "val"), packed):
        log(f"instruction data, {name}: {len(p.examples):,} examples in {len(p.tokens):,} rows of {cfg['seq_len']} "
            f"tokens, {p.mask.sum():,} completion tokens scored" +
            (f"; {p.skipped:,} longer than seq_len skipped" if p.skipped else ""))
    log(f"validating on {how}")
    return packed


def write_jsonl(path, examples):
    atomic_write(path, lambda f: f.writelines(json.dumps({"prompt": p, "completion": c}) + "\n" for p, c in examples))


def main(argv):
    ap = argparse.ArgumentParser(description="write a generated fine-tuning task as train.jsonl / val.jsonl")
    ap.add_argument("task", choices=["arithmetic"])
    ap.add_argument("--out_dir", default=ARITH_DIR)
    ap.add_argument("--n_train", type=int, default=20_000)
    ap.add_argument("--n_val", type=int, default=500)
    ap.add_argument("--digits", type=int, default=3)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args(argv)
    train, val = arithmetic(a.n_train, a.n_val, a.digits, a.seed)
    os.makedirs(a.out_dir, exist_ok=True)
    for name, ex in (("train", train), ("val", val)):
        write_jsonl(os.path.join(a.out_dir, f"{name}.jsonl"), ex)
    print(f"{a.out_dir}/train.jsonl: {len(train):,} examples, val.jsonl: {len(val):,}; e.g. {train[0]!r}")


if __name__ == "__main__":
    main(sys.argv[1:])
