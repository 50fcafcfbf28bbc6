"""Learning: validation mean IoU after a fixed budget of steps on the synthetic set.

Both models train from scratch (encoder weights none) through the training scripts with the
same budget, so a regression in the data, the models or the training core shows as a number.
The baseline is a model that predicts the majority class everywhere.

    python bench/learning.py [--epochs 20] [--limit 256] [--batch-size 16] [--image-size 64]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import tempfile
import time
from pathlib import Path

from _common import machine, print_table

import numpy as np  # noqa: E402

import data  # noqa: E402
import train_mobilenet_unet  # noqa: E402
import train_unet  # noqa: E402


def majority_class_mean_iou(image_size: int) -> float:
    """Mean IoU over the 3 classes of predicting the most frequent training class everywhere."""
    train = np.concatenate([m.numpy().ravel() for _, m in data.load_examples("synthetic", "train", data.DataOptions(image_size=image_size))])
    test = np.concatenate([m.numpy().ravel() for _, m in data.load_examples("synthetic", "test", data.DataOptions(image_size=image_size))])
    majority = np.bincount(train, minlength=3).argmax()
    ious = [np.mean(test == c) if c == majority else 0.0 for c in range(3)]  # IoU of the class everywhere = its share
    return float(np.mean(ious))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=20, help="default: 20")
    parser.add_argument("--limit", type=int, default=256, help="training examples (default: 256)")
    parser.add_argument("--batch-size", type=int, default=16, help="default: 16")
    parser.add_argument("--image-size", type=int, default=64, help="default: 64")
    args = parser.parse_args()
    common = ["--data", "synthetic", "--image-size", str(args.image_size), "--limit", str(args.limit),
              "--batch-size", str(args.batch_size), "--epochs", str(args.epochs), "--seed", "0", "--repeat", "1"]
    steps = args.epochs * -(-args.limit // args.batch_size)
    rows = [["majority class everywhere", "-", majority_class_mean_iou(args.image_size), "-"]]
    with tempfile.TemporaryDirectory() as tmp:
        for name, module, extra in (("U-Net (6 levels, default widths)", train_unet, []),
                                    ("MobileNetV2 U-Net (weights none)", train_mobilenet_unet, ["--encoder-weights", "none", "--fine-tune-epochs", "0"])):
            run = Path(tmp) / name.split()[0]
            started = time.perf_counter()
            with contextlib.redirect_stdout(io.StringIO()):
                assert module.main(common + extra + ["--output", str(run)]) == 0
            seconds = time.perf_counter() - started
            metrics = json.loads((run / "metrics.json").read_text())
            rows.append([name, steps, metrics["test"]["mean_iou"], f"{seconds:.0f}"])
    print(f"\nmachine: {machine()}")
    print_table(f"Learning, synthetic set at {args.image_size}x{args.image_size}, {args.limit} training images, "
                f"batch {args.batch_size}, {args.epochs} epochs",
                ["model", "steps", "test mean IoU", "seconds"], rows)


if __name__ == "__main__":
    main()
