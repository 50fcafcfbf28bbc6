"""Helpers the benchmarks share: import path, the machine's description, a synthetic photo folder, a table printer."""

from __future__ import annotations

import os
import platform
import sys
from pathlib import Path
from typing import Sequence

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
# the real photos and weights beside the repository (never copied into it), for the benchmarks that train
SHARED_PETS = REPO.parent / "shared" / "data" / "oxford-pets-300"
SHARED_WEIGHTS = REPO.parent / "shared" / "weights" / "mobilenet_v2_imagenet_1.0_224_no_top.h5"

import data  # noqa: E402


def photo_folder(root: Path, count: int, *, split: str = "test") -> Path:
    """`count` synthetic photos at Oxford-like size (500x375 JPEG) with PNG masks."""
    data.write_synthetic_folder(root, counts={split: count}, height=375, width=500)
    return root


def machine() -> str:
    import tensorflow as tf

    return (f"{cpu()}, {os.cpu_count()} cores, Python {platform.python_version()}, TensorFlow {tf.__version__}, "
            f"GPUs: {len(tf.config.list_physical_devices('GPU'))}")


VECTOR_UNITS = (("avx512f", "AVX-512"), ("avx2", "AVX2"), ("avx", "AVX"), ("sse4_2", "SSE4.2"))


def cpu(cpuinfo: str | None = None) -> str:
    """The processor's model and its widest vector unit, as in "AMD EPYC (AVX2, no AVX-512)".

    TensorFlow's CPU kernels are chosen by the vector unit at run time, so the same benchmark
    took several times as long on a 2-core machine without AVX-512 as on one with it
    (BENCHMARKS.md, section 1): a table's times mean little without it. `cpuinfo` is the text
    of /proc/cpuinfo (read when None); elsewhere than Linux, Python's own description.
    """
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text()
        except OSError:
            return platform.processor() or platform.machine()
    fields = {key.strip(): value.strip() for key, _, value in
              (line.partition(":") for line in cpuinfo.splitlines()) if value}
    model = fields.get("model name") or platform.processor() or platform.machine()
    flags = set(fields.get("flags", "").split())
    for index, (flag, name) in enumerate(VECTOR_UNITS):
        if flag in flags:
            return f"{model} ({name}, no {VECTOR_UNITS[index - 1][1]})" if index else f"{model} ({name})"
    return model


def print_table(title: str, header: Sequence[str], rows: Sequence[Sequence[object]]) -> None:
    print(f"\n### {title}\n")
    print("| " + " | ".join(header) + " |")
    print("|" + "|".join("---" for _ in header) + "|")
    for row in rows:
        print("| " + " | ".join(f"{v:.3g}" if isinstance(v, float) else str(v) for v in row) + " |")
