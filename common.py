"""The ground floor: what every file needs, from the standard library alone, so that a leaf module (scaling.py,
toy_momentum.py, noise_scale.py, data.py) can print an error or write a file without loading the model and the
config (scaling.py loads no JAX at all).

- `fail`: the one error exit, a clear `error: ...` line instead of a traceback wall;
- `atomic_write` / `write_json` / `append_lines`: a reader (or a killed writer) never sees half a file or a
  torn line, and a failed write stops the program in one line;
- `read_json` / `read_jsonl` / `read_run`: a train.py run directory as its files hold it (config.json, run.json,
  metrics.jsonl, summary.json), read by sample.py, sweep.py, scaling.py, noise_scale.py and figures.py alike;
- `lock`: one process at a time in a run directory or a sweep;
- `number`: a CSV cell or a run directory's `key=value` back to a number.
"""
import json
import os

DIVERGED = 3  # train.py's exit status when the loss blows up (non-finite, or above ln V): sweep.py records "diverged"
INTERRUPTED = 130  # train.py's exit status when a signal stopped it after a checkpoint (128 + SIGINT): resumable


def number(v, ints=True):
    """A CSV cell (or the value in a run directory's name) as a number: int where it is all digits (`ints`), else
    float, else the text; None where it is empty or 'None'."""
    if v in ("", "None", None):
        return None
    if ints and v.isdigit():
        return int(v)
    try:
        return float(v)
    except ValueError:
        return v


class Diverged(SystemExit):
    """fail(..., diverged=True): train.py prints it, then exits with status DIVERGED."""


def fail(msg, diverged=False):
    """The one error exit: a clear line instead of a traceback wall."""
    raise (Diverged if diverged else SystemExit)(f"error: {msg}")


def atomic_write(path, write, mode="w"):
    """Write a file through a temp file beside it + os.replace: a reader (or a killed writer) never sees
    half a file. `write(f)` fills the open temp file; mode 'w' for text, 'wb' for bytes. A write that fails
    (a read-only directory, a full disk) stops the program in one line, the old file (if any) whole."""
    path = os.fspath(path)
    tmp = os.path.join(os.path.dirname(path), f".{os.path.basename(path)}.{os.getpid()}.tmp")
    try:
        with open(tmp, mode) as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as e:
        fail(f"could not write {path}: {e.strerror or e}")
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def append_lines(path, lines):
    """Append text lines to a file, all or none: a write that fails (a full disk) is cut back to the file's
    old end, so no torn line is left, and stops the program in one line."""
    text = "".join(line + "\n" for line in lines).encode()
    try:
        with open(path, "ab") as f:
            end = f.tell()
            try:
                f.write(text)
                f.flush()
                os.fsync(f.fileno())
            except OSError:
                f.truncate(end)
                raise
    except OSError as e:
        fail(f"could not append to {path}: {e.strerror or e}")


def write_json(path, obj, lines=False):
    """obj as indented JSON, or (lines=True) a list as JSON lines, written atomically."""
    text = "".join(json.dumps(r) + "\n" for r in obj) if lines else json.dumps(obj, indent=1)
    atomic_write(path, lambda f: f.write(text))


def read_json(path, default=None):
    """A JSON file's object, or `default` when it is missing or not (yet) valid JSON."""
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return default


def read_jsonl(path):
    """A JSON-lines file's rows ([] when missing); a line being written (not yet valid JSON) is skipped."""
    rows = []
    try:
        with open(path) as f:
            for line in f:
                try:
                    rows.append(json.loads(line))
                except ValueError:
                    pass
    except OSError:
        pass
    return rows


_HELD = {}  # the open lock files by path: a lock lasts as long as its file stays open, here for the process's life


def lock(path, what):
    """Hold an exclusive lock on the file `path` (made, with its directory, if missing) until this process ends.
    The OS releases it however the process ends, so a SIGKILL leaves no stale lock. A second process is
    refused in one line naming the holder's PID; a directory that cannot be written is refused likewise. This
    process holds it already after an earlier run here (a notebook resuming after Ctrl-C): it keeps it."""
    import fcntl
    if os.path.abspath(path) in _HELD:
        return _HELD[os.path.abspath(path)]
    try:
        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
        f = open(path, "a+")
    except OSError as e:
        fail(f"cannot write in {os.path.dirname(path) or '.'!r} ({what}): {e.strerror or e}")
    try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        f.seek(0)
        holder = f.read().strip() or "unknown"
        f.close()
        fail(f"{what} is in use by another process (PID {holder}; lock {path})")
    f.truncate(0)
    f.write(f"{os.getpid()}\n")
    f.flush()
    _HELD[os.path.abspath(path)] = f
    return f


def read_run(out_dir):
    """A train.py run directory: dict(config, run, metrics, summary); a file not there (yet) reads as {} or []."""
    at = lambda name: os.path.join(out_dir, name)
    return dict(config=read_json(at("config.json"), {}), run=read_json(at("run.json"), {}),
                metrics=read_jsonl(at("metrics.jsonl")), summary=read_json(at("summary.json"), {}))
