"""XLA:CPU at LLVM -O0 and one persistent XLA compilation cache for the whole test session. -O0 halves the
compile time of the tiny programs the tests run, which is most of the suite's time; it changes no
floating-point arithmetic XLA asks for, only how fast the machine code is (an elementwise op's vectorized
and scalar code may differ by an ulp: tests/test_fused.py compares the fused and unfused steps bit for bit,
so it sets its own XLA_FLAGS). The cache is shared by both xdist workers and every
subprocess they start (train.py, sample.py, sweep runs): most tests compile the same few tiny programs (the
tiny configs' init, train and eval steps), and a second compile of a program is a cache read. A file's own
JAX_COMPILATION_CACHE_DIR (e.g. tests/test_checkpoint.py's) still wins for its subprocesses. The cache key is
the program, the compile options, XLA_FLAGS and the jax version: a program compiled with other flags (the
8-device tests) is compiled anew, and a hit is the very executable the compile would give."""
import os
import shutil
import tempfile

_DIR = os.path.join(tempfile.gettempdir(), f"jax-test-cache-{os.environ.get('PYTEST_XDIST_TESTRUNUID', os.getpid())}")
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", _DIR)
if "--xla_backend_optimization_level" not in os.environ.get("XLA_FLAGS", ""):  # before JAX starts: every process
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_backend_optimization_level=0").strip()


def pytest_sessionfinish(session):
    if not os.environ.get("PYTEST_XDIST_WORKER"):  # the controller, after its workers: nothing reads it any more
        shutil.rmtree(_DIR, ignore_errors=True)


# The files slowest first (seconds of one worker, `--durations=0` on 2 cores): xdist hands a worker a whole file at
# a time in this order (pyproject: --dist loadfile --no-loadscope-reorder), so the long ones start at once and the
# short ones fill in at the end, rather than one worker finishing a long file alone. A file not listed runs last.
SLOWEST_FIRST = ["sharding", "train", "checkpoint", "train_errors", "moe", "mup", "sweep", "finetune", "fused",
                 "gpu_bench", "model", "optim", "kernels", "fp8", "bf16_training", "rounding", "scaling", "data",
                 "noise_scale", "toy_momentum", "step"]


def pytest_collection_modifyitems(items):
    rank = {f"test_{name}.py": i for i, name in enumerate(SLOWEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: a file's own order is kept
