"""config.py: the authors' tuned 30M table (paper.md, their lm11m_fwedu_adam.yaml) reaches a run by batch
size unless the user sets the key, and the derived values stay out of the typed config."""
import config

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
