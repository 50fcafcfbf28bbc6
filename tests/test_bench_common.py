"""The benchmarks' description of the machine their times were taken on."""

import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))

import _common  # noqa: E402

TWO_CORES = """processor\t: 0
model name\t: AMD EPYC
flags\t\t: fpu sse4_2 fma avx avx2
processor\t: 1
model name\t: AMD EPYC
flags\t\t: fpu sse4_2 fma avx avx2
"""


def test_cpu_names_the_model_and_its_widest_vector_unit():
    assert _common.cpu(TWO_CORES) == "AMD EPYC (AVX2, no AVX-512)"
    assert _common.cpu("model name : Xeon\nflags : sse4_2 avx avx2 avx512f avx512_vnni\n") == "Xeon (AVX-512)"
    assert _common.cpu("model name : Old\nflags : sse4_2 avx\n") == "Old (AVX, no AVX2)"


def test_cpu_without_vector_flags_is_the_model_alone():
    assert _common.cpu("model name : Some ARM core\nFeatures : neon\n") == "Some ARM core"


def test_machine_line_starts_with_the_cpu(monkeypatch):
    monkeypatch.setattr(_common, "cpu", lambda: "Xeon (AVX-512)")
    line = _common.machine()
    assert line.startswith("Xeon (AVX-512), ")
    assert re.fullmatch(r"Xeon \(AVX-512\), \d+ cores, Python 3\.\d+\.\d+, TensorFlow 2\.\d+\.\d+, GPUs: \d+", line)
