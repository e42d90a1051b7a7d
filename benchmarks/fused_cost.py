"""What the fused step (fused.py) saves and costs on this machine: peak RSS and tokens/s of real training runs
(`python train.py`) at batch size 1, fused vs unfused (--fused_update=False), for SGD, Adafactor and AdamW.

Each run is its own process; its peak RSS is the kernel's count for it alone (os.wait4's ru_maxrss), and its
speed is train.py's own summary (tokens/s after the first log window: compilation and warm-up excluded).
Fused and unfused runs alternate, --rounds times, so machine-load drift hits both alike. Prints a table.

    python benchmarks/fused_cost.py [--rounds=2] [train.py --key=value ...]
"""
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# GPT-2 small's shape (D 768, L 12, V 50257: 162M weights, 650 MB in fp32) at T 128: a step of a few seconds
RUN = ["configs/tiny_gpt2.py", "--d_model=768", "--n_layers=12", "--head_dim=128", "--seq_len=128",
       "--train_tokens=1536", "--log_every=512", "--eval_tokens=1024", "--eval_batch_size=1", "--peak_flops=1e12",
       "--overwrite=True"]


def run(args):
    """(peak RSS in bytes, tokens/s) of one train.py process."""
    with tempfile.TemporaryDirectory() as out:
        p = subprocess.Popen([sys.executable, "train.py", *args, f"--out_dir={out}"], cwd=ROOT, text=True,
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=dict(os.environ, JAX_PLATFORMS="cpu"))
        log = p.stdout.read()
        _, status, usage = os.wait4(p.pid, 0)
    if status:
        raise SystemExit(f"train.py {' '.join(args)} failed:\n{log[-3000:]}")
    speed = re.search(r"trained [\d,]+ tokens in [\d.]+ s: ([\d,]+) tokens/s", log)
    return usage.ru_maxrss * 1024, float(speed.group(1).replace(",", ""))


def main(argv):
    rounds = next((int(a.split("=")[1]) for a in argv if a.startswith("--rounds=")), 2)
    extra = [a for a in argv if not a.startswith("--rounds=")]
    rows = {}
    for _ in range(rounds):
        for opt in ("sgd", "adafactor", "adamw"):
            for fused in (True, False):
                rss, tps = run([*RUN, f"--optimizer={opt}", f"--fused_update={fused}", *extra])
                rows.setdefault((opt, fused), []).append((rss, tps))
                print(f"{opt:9s} fused={fused!s:5s} peak RSS {rss / 1e9:.3f} GB, {tps:,.0f} tokens/s", flush=True)
    print("\n| optimizer | peak RSS unfused (GB) | fused (GB) | saved | tokens/s unfused | fused | fused / unfused |")
    print("|---|---|---|---|---|---|---|")
    for opt in ("sgd", "adafactor", "adamw"):
        (ru, tu), (rf, tf) = [(max(r for r, _ in rows[opt, f]), sorted(t for _, t in rows[opt, f])[len(rows[opt, f]) // 2])
                              for f in (False, True)]  # RSS: the largest; speed: the median round
        print(f"| {opt} | {ru / 1e9:.2f} | {rf / 1e9:.2f} | {(ru - rf) / 1e9:.2f} | {tu:,.0f} | {tf:,.0f} | {tf / tu:.2f} |")


if __name__ == "__main__":
    main(sys.argv[1:])
