"""Sweeps of train.py runs: the future home of a sweep runner. For now it holds the IsoFLOP generator,
which prints the train.py commands of Chinchilla IsoFLOP profiles; `scaling.py fit` fits their results.

    python sweep.py isoflop --budgets 1e13 3e13 1e14 > sweep.sh   # every width at every budget (FLOPs)
    python sweep.py isoflop --widths 64 128 --set eval_every=0     # train.py settings for every run
"""
import argparse

from config import fail  # not `import config`: isoflop() has a `config` argument
from scaling import COUNTS, V


def param_count(d_model, n_layers, params="active", vocab=V):
    nonembed = 12 * n_layers * d_model ** 2  # attention 4·D² + MLP 8·D² per layer
    return {"nonembed": nonembed, "active": nonembed + vocab * d_model, "total": nonembed + 2 * vocab * d_model}[params]


def isoflop(budgets, widths, aspect=64, head_dim=64, params="active", config="configs/tiny_gpt2.py", out="out/sweep",
            vocab=V, seq_len=128, flops_per_s=1e11, extra=()):
    """IsoFLOP profiles: every width (depth L = D/aspect) at every budget C, with tokens = C/(6·N); extra
    "key=value" settings go to every run. The time estimate's 1e11 FLOP/s is configs/tiny_gpt2.py's on 2 idle cores."""
    if bad := [d for d in widths if d % min(head_dim, d)]:  # a width below head_dim is one head of that width
        raise ValueError(f"width {bad[0]} is not a multiple of head_dim={head_dim}")
    rest = "".join(f" --{kv}" for kv in extra)
    cmds = []
    for C in budgets:
        for d in widths:
            L = max(1, round(d / aspect))
            n = param_count(d, L, params, vocab)
            tok = round(C / (6 * n))
            secs = tok * (6 * param_count(d, L, "active", vocab) + 12 * L * seq_len * d) / flops_per_s  # PaLM App. B
            name = f"C{C:.0e}".replace("e+", "e") + f"_D{d}_L{L}"
            note = f"N={n:.3g} D/N={tok / n:.2g} ~{secs / 60:.1f} min at {flops_per_s:.0e} FLOP/s"
            cmds.append(f"python train.py {config} --d_model={d} --n_layers={L} --head_dim={min(head_dim, d)} "
                        f"--train_tokens={tok} --out_dir={out}/{name}{rest}  # {note}")
    return cmds


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("isoflop", help="print the train.py commands of IsoFLOP profiles")
    s.add_argument("--budgets", type=float, nargs="+", default=[1e13, 3e13, 1e14])
    s.add_argument("--widths", type=int, nargs="+", default=[64, 128, 192, 256, 384])
    s.add_argument("--aspect", type=int, default=64, help="depth rule: n_layers = d_model / aspect")
    s.add_argument("--head_dim", type=int, default=64, help="a narrower width gets one head of its width")
    s.add_argument("--params", default="active", choices=COUNTS)
    s.add_argument("--config", default="configs/tiny_gpt2.py"), s.add_argument("--out", default="out/sweep")
    s.add_argument("--seq_len", type=int, default=128, help="for the time estimate only")
    s.add_argument("--flops_per_s", type=float, default=1e11, help="for the time estimate only")
    s.add_argument("--set", nargs="+", default=[], metavar="KEY=VALUE", help="train.py settings for every run")
    a = ap.parse_args(argv)
    if a.cmd == "isoflop":
        print("\n".join(isoflop(a.budgets, a.widths, a.aspect, a.head_dim, a.params, a.config, a.out,
                                seq_len=a.seq_len, flops_per_s=a.flops_per_s, extra=a.set)))


if __name__ == "__main__":
    try:
        main()
    except ValueError as e:
        fail(str(e))
