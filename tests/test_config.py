"""config.py: the authors' tuned 30M table (paper.md, their lm11m_fwedu_adam.yaml) reaches a run by batch
size unless the user sets the key, and the derived values stay out of the typed config; --help; unknown keys
answered by spelling and by meaning; a resume's config is the run's config.json."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

import common
import config

ROOT = Path(__file__).resolve().parents[1]

TABLE = {1: (0.0017, 40e3), 4: (0.002, 40e3), 16: (0.002, 60e3), 64: (0.003, 200e3), 256: (0.005, 1e6),
         1024: (0.005, 3e6), 4096: (0.0025, 6e6)}  # batch size: (peak LR, t1 in tokens)


def test_lm30m_gets_the_tuned_lr_and_t1_of_its_batch_size():
    for B, (lr, t1) in TABLE.items():
        cfg = config.parse(["configs/lm30m.py", f"--batch_size={B}"])
        assert (cfg["lr"], cfg["t1"], cfg["t2"]) == (lr, t1, 10e6) and "its row" in cfg["tuned"]
    cfg = config.parse(["configs/lm30m.py", "--batch_size=64", "--lr=0.01"])  # the user's value wins
    assert (cfg["lr"], cfg["t1"]) == (0.01, 200e3) and cfg["tuned"] == "tuned table, its row: t1=200000"
    cfg = config.parse(["configs/lm30m.py", "--batch_size=200"])  # between rows: the nearest in log scale
    assert (cfg["lr"], cfg["t1"]) == (0.005, 1e6) and "the nearest, 256" in cfg["tuned"]


def test_configs_without_a_table_are_what_they_say():
    cfg = config.parse(["configs/gpt2.py"])
    assert cfg["tuned"] == "" and cfg["lr"] == 2.4e-3 and cfg["data"] == "fineweb"
    assert config.parse(["configs/gpt3.py"])["data"] == "fineweb"
    assert set(config.parse([])) == set(config.DEFAULTS) | {"config_file", "tuned"}


def test_tokenizer_choices_are_datas():  # config cannot import data (data imports config): kept equal here
    import data
    assert config.CHOICES["tokenizer"] == tuple(data.TOKENIZERS)


# ---------------------------------------------------------------- --help: every key, its value, where from, what it means
def help_lines(text):
    """{key: (value, origin, description)} of --help's key lines."""
    out = {}
    for line in text.splitlines():
        if line.startswith("  --"):
            kv, rest = line[4:].split("  ", 1)
            k, v = kv.split("=", 1)
            origin, what = (rest.strip().split("  ", 1) + [""])[:2] if rest.strip().split(" ", 1)[0] in \
                ("file", "flag", "tuned", "saved") else ("", rest.strip())
            out[k] = (v, origin.strip(), what.strip())
    return out


def test_every_default_has_a_one_line_description_under_a_heading():
    what = config.describe()
    assert list(what) == list(config.DEFAULTS)
    assert not [k for k, (head, text) in what.items() if not head or not text]
    assert what["lr"][1].startswith("peak learning rate") and what["d_model"][0].startswith("model (paper Table 1")
    assert what["fused_update"][1].endswith("(paper Fig. 7)")  # its more-indented detail lines stay in the source


def test_help_prints_each_key_with_its_description_and_the_config_files_value():
    """`python train.py --help`, as a user runs it: the values configs/tiny.py (the default) runs with, the keys
    it sets marked, and each key's comment; exit 0."""
    p = subprocess.run([sys.executable, "train.py", "--help"], cwd=ROOT, capture_output=True, text=True, timeout=120,
                       env=dict(os.environ, JAX_PLATFORMS="cpu"))
    assert p.returncode == 0 and p.stderr == "", p.stderr
    assert "config file: configs/tiny.py (the default)" in p.stdout
    keys, what = help_lines(p.stdout), config.describe()
    assert list(keys) == list(config.DEFAULTS)
    assert all(keys[k][2] == what[k][1] for k in keys)
    assert keys["tokenizer"][:2] == ("'bytes'", "file") and keys["d_model"][:2] == ("192", "file")  # not DEFAULTS'
    assert keys["mlp_ratio"][:2] == ("4", "") and keys["lr"][:2] == ("0.006", "file")


def test_help_marks_flags_and_tuned_values(capsys):
    with pytest.raises(SystemExit) as e:
        config.parse(["configs/lm30m.py", "--batch_size=64", "--seq_len=256", "-h"])
    assert e.value.code == 0
    keys = help_lines(capsys.readouterr().out)
    assert keys["seq_len"][:2] == ("256", "flag") and keys["t1"][:2] == ("200000.0", "tuned")
    assert keys["lr"][:2] == ("0.003", "tuned") and keys["d_model"][:2] == ("384", "file")


# ---------------------------------------------------------------- unknown keys: suggestions by spelling and by meaning
def unknown(*argv):
    with pytest.raises(SystemExit) as e:
        config.parse(list(argv))
    return str(e.value)


@pytest.mark.parametrize("typed,meant", [
    ("learning_rate", "did you mean lr?"), ("learnig_rate", "did you mean lr (learning_rate)?"),
    ("beta1", "did you mean b1?"), ("beta2", "did you mean b2?"), ("wd", "did you mean weight_decay?"),
    ("n_embd", "did you mean d_model?"), ("n_layer", "did you mean n_layers?"), ("block_size", "did you mean seq_len?"),
    ("batch", "did you mean batch_size?"), ("max_iters", "did you mean train_tokens (the run's length, counted in tokens"),
    ("steps", "did you mean train_tokens ("), ("warmup_steps", "did you mean warmup (a fraction of the run's steps"),
    ("n_head", "did you mean head_dim (heads = d_model / head_dim)?"), ("lrr", "did you mean lr?"),
    ("ckpt_evry", "did you mean ckpt_every?"), ("Learning-Rate", "did you mean lr?"),
])
def test_unknown_keys_are_answered_with_the_key_they_mean(typed, meant):
    msg = unknown(f"--{typed}=1")
    assert msg.startswith(f"error: unknown config key '{typed}'; ") and meant in msg and "\n" not in msg, msg


def test_synonyms_name_real_keys_and_nonsense_gets_no_guess():
    assert not set(config.SYNONYMS) & set(config.DEFAULTS)
    assert {v if isinstance(v, str) else v[0] for v in config.SYNONYMS.values()} <= set(config.DEFAULTS)
    assert unknown("--xyzzy=1") == "error: unknown config key 'xyzzy' (--help lists every key)"


# ---------------------------------------------------------------- init_from=resume: the run's config.json is the base
def saved_run(tmp_path, *argv):
    """A run directory as train.py leaves it (config.json is the parsed config), made from these arguments."""
    out = tmp_path / "run"
    cfg = config.parse([*argv, f"--out_dir={out}"])
    out.mkdir()
    common.write_json(out / "config.json", cfg)
    return out, cfg


def test_resume_continues_from_the_saved_config_alone(tmp_path):
    out, cfg = saved_run(tmp_path, "configs/lm30m.py", "--batch_size=4", "--data=stdlib", "--d_model=256",
                         "--head_dim=64", "--allow_budget_change=True")
    got = config.parse([f"--out_dir={out}", "--init_from=resume"])  # not configs/tiny.py's model, nor DEFAULTS'
    assert got == dict(cfg, init_from="resume", allow_budget_change=False)  # a permission is not inherited
    assert got["config_file"] == "configs/lm30m.py" and got["tuned"] == cfg["tuned"] != ""
    got = config.parse([f"--out_dir={out}", "--init_from=resume", "--eval_every=1000", "--lr=0.1"])  # flags over it
    assert got == dict(cfg, init_from="resume", allow_budget_change=False, eval_every=1000, lr=0.1)
    got = config.parse(["configs/tiny.py", f"--out_dir={out}", "--init_from=resume"])  # a named file applies over it
    assert (got["d_model"], got["tokenizer"], got["lr"], got["t1"], got["ckpt_every"]) == (192, "bytes", 6e-3, 40e3, 50e6)
    assert got["config_file"] == "configs/tiny.py"
    (tmp_path / "moved").mkdir()  # a run directory moved elsewhere: out_dir is where it is now
    (tmp_path / "moved" / "config.json").write_text((out / "config.json").read_text())
    assert config.parse([f"--out_dir={tmp_path / 'moved'}", "--init_from=resume"])["out_dir"] == str(tmp_path / "moved")


def test_resume_without_a_saved_config_is_one_clear_error(tmp_path):
    msg = unknown(f"--out_dir={tmp_path / 'none'}", "--init_from=resume")
    assert msg == (f"error: init_from='resume' but {tmp_path / 'none'} holds no run to continue (no config.json there): "
                   "give the run's --out_dir, or start one with --init_from=scratch")
    (tmp_path / "config.json").write_text("[1, 2")
    assert "is not a readable config" in unknown(f"--out_dir={tmp_path}", "--init_from=resume")
