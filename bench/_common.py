"""Helpers the benchmarks share: import path, a synthetic photo folder, a table printer."""

from __future__ import annotations

import os
import platform
import sys
from pathlib import Path
from typing import Sequence

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import data  # noqa: E402


def photo_folder(root: Path, count: int, *, split: str = "test") -> Path:
    """`count` synthetic photos at Oxford-like size (500x375 JPEG) with PNG masks."""
    data.write_synthetic_folder(root, counts={split: count}, height=375, width=500)
    return root


def machine() -> str:
    import tensorflow as tf

    return (f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, Python "
            f"{platform.python_version()}, TensorFlow {tf.__version__}, GPUs: {len(tf.config.list_physical_devices('GPU'))}")


def print_table(title: str, header: Sequence[str], rows: Sequence[Sequence[object]]) -> None:
    print(f"\n### {title}\n")
    print("| " + " | ".join(header) + " |")
    print("|" + "|".join("---" for _ in header) + "|")
    for row in rows:
        print("| " + " | ".join(f"{v:.3g}" if isinstance(v, float) else str(v) for v in row) + " |")
