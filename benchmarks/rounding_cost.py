"""What stochastic rounding costs: time of one bf16 train step with stochastic vs round-to-nearest rounding.

Both steps come from step.make_train_step for the same config (default configs/tiny_gpt2.py), plus the fp32 step
for reference. They run on the same random batch, in alternating timed chunks of --chunk steps (each ended
by block_until_ready, compilation and warm-up excluded), so machine-load drift hits all of them alike.
Prints each variant's median seconds per step and the ratio stochastic / nearest.

    python benchmarks/rounding_cost.py [config.py] [--key=value ...] [--chunks=10] [--chunk=20]
"""
import statistics
import sys
import time
from pathlib import Path

import jax
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import common  # noqa: E402
import config  # noqa: E402
import kernels  # noqa: E402
import model  # noqa: E402
import bench  # noqa: E402 (benchmarks/bench.py, beside this file)

VARIANTS = {"fp32": ("float32", "nearest"), "bf16 nearest": ("bfloat16", "nearest"),
            "bf16 stochastic": ("bfloat16", "stochastic")}


def build(cfg, param_dtype, rounding):
    """Compiled train step, fresh params and optimizer state, and the batch sharding, as train.main makes them."""
    return bench.build(dict(cfg, param_dtype=param_dtype, rounding=rounding))


def main(argv):
    kernels.keep_freed_memory()  # as train.main
    own = {"chunks": 10, "chunk": 20}
    for a in [a for a in argv if a.split("=")[0][2:] in own]:
        own[a.split("=")[0][2:]] = int(a.split("=", 1)[1])
        argv.remove(a)
    cfg = config.parse(argv, default_file="configs/tiny_gpt2.py")
    if cfg["grad_accum"] != 1:
        common.fail("rounding_cost times single-batch steps; leave grad_accum at 1")
    runs = {name: list(build(cfg, *v)) for name, v in VARIANTS.items()}  # name -> [step, params, state, batch sharding]
    rng = np.random.default_rng(0)
    tokens = rng.integers(0, cfg["vocab_size"], (cfg["batch_size"], cfg["seq_len"]), dtype=np.int32)
    batch = jax.device_put(tokens, runs["fp32"][3])
    times = {name: [] for name in runs}
    for c in range(own["chunks"] + 1):  # chunk 0 warms up every variant and is not counted
        for name, r in runs.items():
            t = time.perf_counter()
            for i in range(own["chunk"]):
                r[1], r[2], loss = r[0](r[1], r[2], batch, np.int32(c * own["chunk"] + i))
            jax.block_until_ready((r[1], loss))
            if c:
                times[name].append((time.perf_counter() - t) / own["chunk"])
    med = {name: statistics.median(ts) for name, ts in times.items()}
    n = model.count_params(config.model_config(cfg))["total"]
    print(f"{cfg['config_file']}, batch {cfg['batch_size']} x {cfg['seq_len']}, {cfg['optimizer']}, {n:,} params, "
          f"{jax.devices()[0].device_kind}; median of {own['chunks']} chunks of {own['chunk']} steps:")
    for name, m in med.items():
        print(f"  {name:16s} {m * 1e3:8.2f} ms/step")
    print(f"stochastic / nearest = {med['bf16 stochastic'] / med['bf16 nearest']:.3f}")


if __name__ == "__main__":
    main(sys.argv[1:])
