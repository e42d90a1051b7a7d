"""The documentation's rules: every relative link and image in README.md and docs/*.md points to a file or
folder that exists, the README stays short (at most 250 lines), and no page carries history (a commit hash, or
phrases such as "before this change": the git log holds history, the pages say what is)."""
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
README_MAX_LINES = 250

FENCE = re.compile(r"^(```|~~~).*?^\1[ \t]*$", re.S | re.M)  # fenced code blocks
CODE_SPAN = re.compile(r"(`+)(?:(?!\1).)+?\1", re.S)  # inline code
LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
EXTERNAL = re.compile(r"^(?:[a-z][a-z0-9+.-]*:|//)", re.I)  # http(s):, mailto:, any other scheme
HEX = re.compile(r"(?<![0-9A-Za-z_])(0x)?([0-9a-f]{7,40})(?![0-9A-Za-z_])")
HISTORY = re.compile(r"before this (change|work|commit)|after this change|the default before this|"
                     r"\bsession \d+\b|until this change", re.I)


def rel(path):
    return path.relative_to(ROOT).as_posix()


def links(text):
    """Every markdown link and image target of a page, outside code."""
    text = CODE_SPAN.sub("", FENCE.sub("", text))
    return LINK.findall(text)


def test_pages_exist():
    assert (ROOT / "README.md").is_file()
    assert (ROOT / "docs").is_dir() and len(PAGES) > 1, "docs/ has no .md pages"


def test_relative_links_point_to_existing_files():
    broken = []
    for page in PAGES:
        for target in links(page.read_text(encoding="utf-8")):
            if EXTERNAL.match(target) or target.startswith("#"):
                continue
            path = target.split("#", 1)[0].split("?", 1)[0]
            if not (page.parent / path).exists():
                broken.append(f"{rel(page)}: ({target})")
    assert not broken, "broken links:\n  " + "\n  ".join(broken)


def test_readme_is_short():
    n = len((ROOT / "README.md").read_text(encoding="utf-8").splitlines())
    assert n <= README_MAX_LINES, f"README.md has {n} lines (at most {README_MAX_LINES}): move detail into docs/"


def commit_hashes(text):
    """Tokens that look like a commit hash: 7-40 lowercase hex digits with at least one digit and one letter
    (so neither a plain number nor an English word such as 'defaced'), and not a 0x literal."""
    return [m.group(2) for m in HEX.finditer(text)
            if not m.group(1) and re.search(r"\d", m.group(2)) and re.search(r"[a-f]", m.group(2))]


def test_no_history_in_pages():
    found = []
    for page in PAGES:
        for i, line in enumerate(page.read_text(encoding="utf-8").splitlines(), 1):
            found += [f"{rel(page)}:{i}: commit hash {h!r}" for h in commit_hashes(line)]
            found += [f"{rel(page)}:{i}: history phrase {m.group(0)!r}" for m in HISTORY.finditer(line)]
    assert not found, "history in the docs (the git log holds it):\n  " + "\n  ".join(found)


def test_the_checks_catch_what_they_should():
    assert commit_hashes("commit 2533e20's init, and c43562a") == ["2533e20", "c43562a"]
    assert commit_hashes("12,119,375 bytes, 5.76e23 FLOPs, 0x85EBCA6B, 0x4e53abcd, defaced, ckpt_000001234") == []
    assert HISTORY.search("as it was Before this change")
    assert links("![a](assets/x.png) [b](docs/y.md#z) `[c](no)` [d](http://e)\n```\n[f](g)\n```\n") == \
        ["assets/x.png", "docs/y.md#z", "http://e"]
