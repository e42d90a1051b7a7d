"""Tests for sweep.py's IsoFLOP generator: the train.py commands it prints form IsoFLOP profiles (every width at
every budget spends C = 6·N·D), settings pass through, and a width train.py would refuse fails up front.
Runs faked from these commands are fitted in tests/test_scaling.py."""
import re

import pytest

import sweep


def parse(cmd):
    return {k: v for k, v in re.findall(r"--(\w+)=(\S+)", cmd)}


def test_isoflop_commands_form_isoflop_profiles():
    cmds = sweep.isoflop([1e14], [128])
    assert cmds[0].startswith("python train.py configs/tiny_gpt2.py --d_model=128 --n_layers=2 --head_dim=64 "
                              "--train_tokens=2441605 --out_dir=out/sweep/C1e14_D128_L2")
    budgets = [1e13, 3e13, 1e14]
    for cmd in sweep.isoflop(budgets, [64, 128, 192, 256, 384]):
        a = parse(cmd)
        N = 12 * int(a["n_layers"]) * int(a["d_model"]) ** 2 + 50257 * int(a["d_model"])  # paper's active count
        assert int(a["n_layers"]) == max(1, int(a["d_model"]) // 64)
        C = float(re.search(r"C(\d+e\d+)_", a["out_dir"])[1])
        tok = int(a["train_tokens"])
        assert C in budgets and 6 * N * tok == pytest.approx(C, rel=1 / tok)  # tokens are rounded: ±½ token
    cmd = sweep.isoflop([1e12], [48], aspect=32, head_dim=16, extra=["eval_tokens=32768", "eval_every=0"])[0]
    assert parse(cmd)["n_layers"] == "2" and cmd.split("  #")[0].endswith(" --eval_tokens=32768 --eval_every=0")
    assert parse(sweep.isoflop([1e12], [8], head_dim=16)[0])["head_dim"] == "8"  # narrower than a head: one head
    with pytest.raises(ValueError, match="width 48 is not a multiple of head_dim=32"):
        sweep.isoflop([1e12], [64, 48], head_dim=32)  # train.py would refuse it only when that run starts


def test_isoflop_cli_prints_the_generators_commands(capsys):
    sweep.main(["isoflop", "--budgets", "1e12", "--widths", "48", "--aspect", "32", "--head_dim", "16",
                "--set", "eval_tokens=32768", "eval_every=0"])
    out = capsys.readouterr().out
    assert out == "\n".join(sweep.isoflop([1e12], [48], aspect=32, head_dim=16,
                                          extra=["eval_tokens=32768", "eval_every=0"])) + "\n"
