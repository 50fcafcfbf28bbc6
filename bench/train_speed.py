"""Training throughput: the project's compile settings against the tutorial's, same architecture.

The tutorial compiles with model.compile(optimizer="adam", loss=SparseCategoricalCrossentropy(
from_logits=True), metrics=["accuracy"]) and Keras 3's defaults (jit_compile="auto", which turns
XLA on where Keras thinks it helps). The project adds mean IoU and per-class IoU, AdamW with a
cosine schedule, and turns XLA off on CPU-only machines; it trains with batches of 16 by
default (more steps per epoch on small data), so that row shows what smaller batches cost per
image; the last row forces XLA on, to show what that choice avoids.
Images per second are the median of timed steps after warm-up, at 128x128.

    python bench/train_speed.py [--steps 5] [--warmup 2]
"""

from __future__ import annotations

import argparse
import statistics
import time

from _common import machine, print_table

import keras  # noqa: E402
import numpy as np  # noqa: E402

import data  # noqa: E402
import train_mobilenet_unet  # noqa: E402
import train_unet  # noqa: E402
import training  # noqa: E402
from models import build_mobilenet_unet, build_unet  # noqa: E402


def images_per_second(model, x, y, steps: int, warmup: int) -> float:
    for _ in range(warmup):
        model.train_on_batch(x, y)
    times = []
    for _ in range(steps):
        started = time.perf_counter()
        model.train_on_batch(x, y)
        times.append(time.perf_counter() - started)
    return len(x) / statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=5, help="timed steps per setting (default: 5)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps first (default: 2)")
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    x = rng.random((64, 128, 128, 3)).astype(np.float32)
    y = rng.integers(0, 3, (64, 128, 128, 1)).astype(np.int32)
    rows = []
    for name, module, build in (("U-Net", train_unet, lambda: build_unet((128, 128, 3), 3)),
                                ("MobileNetV2 U-Net", train_mobilenet_unet,
                                 lambda: build_mobilenet_unet((128, 128, 3), 3, encoder_weights=None))):
        tutorial = build()
        tutorial.compile(optimizer="adam", loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                         metrics=["accuracy"])
        baseline = images_per_second(tutorial, x, y, args.steps, args.warmup)
        rows.append([name, f"tutorial compile (jit_compile='auto' resolved to {tutorial.jit_compile})", baseline, 1.0])
        for label, jit, batch in (("project compile, batch 64", "auto", 64),
                                  ("project compile, batch 16 (the default)", "auto", 16),
                                  ("project compile, batch 64, --jit-compile on", "on", 64)):
            project = build()
            options = module.build_parser().parse_args(["--data", "synthetic", "--jit-compile", jit])
            training.compile_phase(project, options, options.learning_rate, phase_steps=1000, steps_per_epoch=15,
                                   class_names=data.OXFORD_CLASS_NAMES)
            ours = images_per_second(project, x[:batch], y[:batch], args.steps * 64 // batch, args.warmup)
            rows.append([name, label, ours, ours / baseline])
    print(f"\nmachine: {machine()}")
    print_table("Training throughput, 128x128, batch 64", ["model", "setting", "images/s", "ratio"], rows)


if __name__ == "__main__":
    main()
