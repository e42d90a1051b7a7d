"""Checkpoints: atomic, verified, and independent of the mesh they were saved from.

Layout: <out_dir>/ckpt_<step>/ holding arrays.npz (every leaf of every tree, keyed by its path,
bf16 stored as its uint16 bit pattern) and meta.json (step, tokens, config, metrics, ..., plus the
sha256, dtype and shape of every array). A checkpoint is written into a temporary directory and
renamed into place, and meta.json is written last, so an interrupted write never looks valid; on
load the hash is checked, so a corrupt or truncated file is refused instead of loaded as garbage.
Also here: where a run starts (scratch, resume, or another run's weights) and the checks that a
checkpoint fits the config (common.atomic_write is the one way this project writes a file).
Used by train.py (save / resume / init_from) and sample.py; tests: tests/test_checkpoint.py.
"""
import dataclasses
import hashlib
import json
import os
import shutil
import subprocess
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import multihost_utils

import model
from common import fail, read_json
from config import DEFAULTS, PER_INVOCATION


class CheckpointError(Exception):
    pass


def _key(path):
    return "/".join(str(getattr(k, "key", getattr(k, "idx", k))) for k in path)


def _to_host(x):
    if isinstance(x, jax.Array) and not x.is_fully_addressable:  # multi-host: gather the shards
        x = multihost_utils.process_allgather(x, tiled=True)
    return np.asarray(x)


def code_version():
    """The git commit of this code (None outside a git checkout), stored with every checkpoint."""
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=os.path.dirname(os.path.abspath(__file__)),
                             capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return (out.stdout.strip() or None) if out.returncode == 0 else None


def _fsync(path):
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def save(out_dir, step, trees, meta, keep=2):
    """Write trees (dict name -> pytree) and meta (JSON-able dict) as ckpt_<step>; keep the newest `keep`.

    Every process must call it (multi-host arrays are gathered); only process 0 writes."""
    arrays, info = {}, {}
    for name, tree in trees.items():
        for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
            a = _to_host(leaf)
            k = f"{name}/{_key(path)}"
            info[k] = [str(a.dtype), list(a.shape)]
            arrays[k] = a.view(np.uint16) if a.dtype == jnp.bfloat16 else a
    if jax.process_index() != 0:
        return None
    final = os.path.join(out_dir, f"ckpt_{step:09d}")
    tmp = final + f".tmp{os.getpid()}"
    for d in os.listdir(out_dir):  # leftovers of writes that were killed (never valid: no ckpt_<digits> name)
        if d.startswith("ckpt_") and ".tmp" in d:
            shutil.rmtree(os.path.join(out_dir, d), ignore_errors=True)
    os.makedirs(tmp)
    try:
        with open(os.path.join(tmp, "arrays.npz"), "wb") as f:
            np.savez(f, **arrays)
            f.flush()
            os.fsync(f.fileno())
        meta = dict(meta, step=step, arrays=info, sha256=_sha256(os.path.join(tmp, "arrays.npz")))
        with open(os.path.join(tmp, "meta.json"), "w") as f:
            json.dump(meta, f)
            f.flush()
            os.fsync(f.fileno())
        shutil.rmtree(final, ignore_errors=True)
        os.replace(tmp, final)
        _fsync(out_dir)  # the rename itself is durable
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    # Checkpoints after this step are from a future this run has replaced (a resume that skipped a
    # corrupt newer one): drop them, then all but the newest `keep` up to this step.
    ckpts = list_checkpoints(out_dir)
    drop = [p for s, p in ckpts if s > step] + ([p for s, p in ckpts if s <= step][:-keep] if keep > 0 else [])
    for old in drop:
        shutil.rmtree(old, ignore_errors=True)
    return final


def _sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 24), b""):
            h.update(chunk)
    return h.hexdigest()


def list_checkpoints(out_dir):
    """(step, path) of every ckpt_<step> directory, oldest first (validity not checked)."""
    if not os.path.isdir(out_dir):
        return []
    found = [(int(d[5:]), os.path.join(out_dir, d)) for d in os.listdir(out_dir) if d.startswith("ckpt_") and d[5:].isdigit()]
    return sorted(p for p in found if os.path.isdir(p[1]))


def read_meta(path, verify=True):
    """meta.json of a checkpoint; with verify, also checks the arrays' sha256 (CheckpointError if bad)."""
    try:
        with open(os.path.join(path, "meta.json")) as f:
            meta = json.load(f)
    except (OSError, ValueError) as e:
        raise CheckpointError(f"checkpoint {path}: missing or unreadable meta.json ({e})") from None
    if not isinstance(meta, dict) or not {"step", "arrays", "sha256"} <= set(meta):
        raise CheckpointError(f"checkpoint {path}: meta.json lacks step/arrays/sha256 (not a checkpoint of this code?)")
    if verify and (not os.path.isfile(os.path.join(path, "arrays.npz"))
                   or _sha256(os.path.join(path, "arrays.npz")) != meta["sha256"]):
        raise CheckpointError(f"checkpoint {path}: arrays.npz is missing, truncated or corrupt (sha256 mismatch)")
    return meta


def latest_valid(out_dir, log=print):
    """Newest checkpoint whose contents verify, skipping (and reporting) corrupt ones; None if none."""
    for _, path in reversed(list_checkpoints(out_dir)):
        try:
            read_meta(path)
            return path
        except CheckpointError as e:
            log(f"warning: skipping {e}")
    return None


def load(path, like, shardings=None):
    """Load trees shaped like `like` (dict name -> pytree of arrays or ShapeDtypeStructs) from path.

    Each array is placed with the matching leaf of `shardings` (any mesh: every process reads the
    file and keeps only its shards), so a run saved on one mesh resumes on another."""
    meta = read_meta(path)
    out, used = {}, set()
    with np.load(os.path.join(path, "arrays.npz")) as z:
        for name, tree in like.items():
            leaves, treedef = jax.tree_util.tree_flatten_with_path(tree)
            shard_leaves = jax.tree.leaves(shardings[name]) if shardings else [None] * len(leaves)
            new = []
            for (p, want), sh in zip(leaves, shard_leaves):
                k = f"{name}/{_key(p)}"
                if k not in meta["arrays"]:
                    raise CheckpointError(f"checkpoint {path}: has no array '{k}' (saved by a different model/optimizer?)")
                dtype, shape = meta["arrays"][k]
                if tuple(shape) != tuple(want.shape) or dtype != str(jnp.dtype(want.dtype)):
                    raise CheckpointError(f"checkpoint {path}: '{k}' is {dtype}{shape}, the config needs "
                                          f"{jnp.dtype(want.dtype)}{list(want.shape)}")
                a = z[k].view(jnp.bfloat16) if dtype == "bfloat16" else z[k]
                new.append(jax.make_array_from_callback(a.shape, sh, lambda idx, a=a: a[idx]) if sh is not None
                           else jnp.asarray(a))
                used.add(k)
            out[name] = jax.tree_util.tree_unflatten(treedef, new)
    extra = sorted(k for k in meta["arrays"] if k.split("/")[0] in like and k not in used)
    if extra:  # e.g. Adam's v loaded into SGD with momentum: every array of a loaded tree must be used
        raise CheckpointError(f"checkpoint {path}: holds arrays the config has no place for ({', '.join(extra[:3])}"
                              f"{', ...' if len(extra) > 3 else ''}; saved by a different model/optimizer?)")
    return out, meta


# ---------------------------------------------------------------- where a run starts: scratch, resume, or weights
SHAPE_KEYS = ("d_model", "n_layers", "head_dim", "mlp_ratio", "vocab_size", "param_dtype", "tokenizer", "n_experts")
# a resumed run continues the same optimization: same model, optimizer, and tokens per step
RESUME_KEYS = SHAPE_KEYS + ("seq_len", "batch_size", "optimizer", "eps", "weight_decay", "clip_norm", "schedule",
                            "warmup", "adafactor_decay", "state_dtype", "lora_rank", "lora_alpha", "lora_targets",
                            "qk_norm", "parametrization", "base_width", "top_k", "capacity_factor")
# (and muon_t1, through the resolved muon_b1)
RESUME_RESOLVED = ("lr", "b1", "b2", "muon_lr", "muon_b1")  # compared in the derived record: a default may have changed meanwhile
# the config keys behind RESUME_RESOLVED: a flag that changes one of them is what to drop
RESOLVED_FROM = ("lr", "b1", "b2", "t1", "t2", "muon_lr", "muon_b1", "muon_t1")
# how this command starts, not what the run is: a resume neither checks nor reports them (config.PER_INVOCATION,
# which a resume takes from the command line, and where the run is: a run directory may have been moved)
FREE_KEYS = {*PER_INVOCATION, "out_dir", "plan_devices", "plan_device", "plan_mfu", "plan_compile", "config_file",
             "tuned"}


def start_point(cfg, run, log):
    """(checkpoint, its meta, checkpoints to delete) the run starts from; (None, None, []) for scratch.
    Reads no arrays and deletes nothing. Refuses a checkpoint that does not fit the config, and an
    out_dir holding another run's checkpoints unless overwrite (whose checkpoints it then lists)."""
    out, init = cfg["out_dir"], cfg["init_from"]
    ckpts = list_checkpoints(out)
    if init == "resume":
        path = latest_valid(out, log)
        if path is None:
            fail(f"init_from='resume' but {out} holds no valid checkpoint" + (" (see the warnings above)" if ckpts else ""))
        meta = read_meta(path, verify=False)  # latest_valid has just verified it
        if not os.path.isfile(os.path.join(out, "config.json")):  # the config the resume continues (config.parse)
            fail(f"cannot resume {path}: {out} holds no config.json, the run's config; restore it (the checkpoint's "
                 f"meta.json holds it as 'config'), or start a new run from its weights with --init_from={path} and "
                 "another --out_dir")
        check_resume(cfg, run, meta, path, log)
        return path, meta, []
    if ckpts and not cfg["overwrite"]:
        fail(f"{out} already holds another run's checkpoints ({os.path.basename(ckpts[-1][1])}): continue it with "
             "--init_from=resume, replace it with --overwrite=True, or choose another --out_dir")
    path = meta = None
    if init != "scratch":  # fine-tuning: a checkpoint, or a run directory (its newest valid checkpoint)
        path = init if os.path.exists(os.path.join(init, "meta.json")) else latest_valid(init, log)
        if path is None:
            fail(f"init_from={init!r} is not 'scratch', 'resume', a checkpoint, or a directory holding a valid one")
        try:
            meta = read_meta(path)
        except CheckpointError as e:
            fail(str(e))
        saved = meta.get("config", {})
        old = lambda k: saved.get(k, DEFAULTS[k])  # a key an older checkpoint lacks had its default
        diff = [f"{k} {old(k)!r} vs {cfg[k]!r}" for k in SHAPE_KEYS if old(k) != cfg[k] and k != "param_dtype"]
        if diff:  # (the weights are cast to the config's param_dtype: fp32 weights fine-tuned in bf16)
            fail(f"init_from={path}: the checkpoint's model differs from the config's ({'; '.join(diff)})")
        if saved.get("lora_rank"):
            fail(f"init_from={path} is a LoRA run's checkpoint (a frozen base and adapters): start from its merged "
                 f"weights, {os.path.join(os.path.dirname(path), 'merged')}")
        if ckpts and os.path.abspath(path).startswith(os.path.abspath(out) + os.sep):
            fail(f"init_from={path} lies in out_dir {out}, whose checkpoints --overwrite=True would delete")
    return path, meta, [p for _, p in ckpts]


def check_resume(cfg, run, meta, path, log):
    """Resume only the same optimization: a change of the model, the optimizer or the step size is refused, a
    change of the token budget unless asked (a cosine schedule then follows the new length from the resume point
    on), in one line that says what to do; every other key that differs from the run's (its config.json, else the
    checkpoint's) is taken and said, one line each."""
    old, old_run = meta.get("config", {}), meta.get("run", {})
    if not {"metrics", "pending_losses", "data", "run"} <= set(meta):
        fail(f"cannot resume {path}: written by an older train.py; start from its weights with --init_from={path}")
    was = lambda k: old.get(k, DEFAULTS[k])  # a key an older checkpoint lacks had its default
    diff = [f"{k} {was(k)!r} -> {cfg[k]!r}" for k in RESUME_KEYS if was(k) != cfg[k]]
    diff += [f"{k} {old_run.get(k)!r} -> {run.get(k)!r}" for k in RESUME_RESOLVED if old_run.get(k) != run.get(k)]
    if diff:
        flags = [f"--{k}" for k in (*RESUME_KEYS, *RESOLVED_FROM) if was(k) != cfg[k]]
        fix = (f"drop {' '.join(flags)} to continue the run as it was" if flags else  # else a default has changed
               "pass the run's values (" + ", ".join(f"--{k}={old_run.get(k)!r}" for k in RESUME_RESOLVED
                                                     if old_run.get(k) != run.get(k)) + ") to continue it")
        fail(f"cannot resume {path}: the config changes the model or optimizer ({'; '.join(diff)}); {fix}, or start "
             f"a new run from its weights with --init_from={path} and another --out_dir")
    if old_run.get("train_tokens") != run["train_tokens"]:
        budget = f"train_tokens {old_run.get('train_tokens', 0):,} -> {run['train_tokens']:,}"
        if not cfg["allow_budget_change"]:
            fail(f"cannot resume {path}: {budget} changes the run's length and LR schedule; "
                 + ("drop --train_tokens to continue the run as it was, or " if was("train_tokens") != cfg["train_tokens"]
                    else "") + "pass --allow_budget_change=True to continue with the new budget")
        if meta["step"] > run["n_steps"]:
            fail(f"cannot resume {path}: it is at step {meta['step']:,}, past the new budget's {run['n_steps']:,} steps")
        log(f"note: {budget}: " + (f"the cosine schedule now spans {run['n_steps']:,} steps, so the LR from step "
                                   f"{meta['step']:,} on differs from the original run's" if cfg["schedule"] == "cosine"
                                   else f"the run now ends at step {run['n_steps']:,}"))
    saved = read_json(os.path.join(cfg["out_dir"], "config.json")) or old  # a change taken before: said then
    for k, v in cfg.items():  # taken: evals, logs, checkpoints, the step's implementation, the data, ...
        if k not in FREE_KEYS and k not in RESUME_KEYS and k != "train_tokens" and k in DEFAULTS and \
                saved.get(k, DEFAULTS[k]) != v:
            log(f"note: resuming with {k} {saved.get(k, DEFAULTS[k])!r} -> {v!r}")


def load_weights(path, meta, mcfg, key, shard):
    """A checkpoint's weights as the run's initial params, cast to the config's param_dtype (fp32 weights
    fine-tuned in bf16: round to nearest once)."""
    saved = dataclasses.replace(mcfg, param_dtype=meta.get("config", {}).get("param_dtype", mcfg.param_dtype))
    params = load(path, {"params": jax.eval_shape(partial(model.init, saved), key)}, shard)[0]["params"]
    cast = jax.jit(lambda p: jax.tree.map(lambda w: w.astype(mcfg.param_dtype), p), out_shardings=shard["params"])
    return params if saved == mcfg else cast(params)
