"""Train the hand-built 6-level U-Net on Oxford-IIIT Pet, the synthetic set or your own masks.

Example: python train_unet.py --data synthetic --epochs 5
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Sequence

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # keep TensorFlow's start-up chatter out of the way

from errors import interrupt_quietly_while_starting  # noqa: E402  (light: no TensorFlow)

if __name__ == "__main__":  # run as a script, not imported by the tests
    interrupt_quietly_while_starting()

import keras  # noqa: E402

import options  # noqa: E402
import training  # noqa: E402
from errors import run_cli, user_errors  # noqa: E402
from models import build_unet  # noqa: E402
from models.unet import DEFAULT_FILTERS  # noqa: E402

BATCH_SIZE = 8
LOSS = "sce+dice"


def build_parser() -> argparse.ArgumentParser:
    parser = options.base_parser("train_unet", __doc__)
    options.group(parser, "model").add_argument(
        "--filters", type=options.widths(), default=options.comma_separated(DEFAULT_FILTERS),
        help="encoder widths from the top level down, comma-separated; the image size must be "
        "a multiple of 2 ** (number of levels)")
    # Trained from scratch on a few hundred images, the U-Net gains most from steps: batches of 8
    # beat 16 by 0.03 mean IoU on the validation photos; cross-entropy plus Dice lifts its thin
    # border class by another 0.03 IoU (BENCHMARKS.md).
    parser.set_defaults(batch_size=BATCH_SIZE, loss=LOSS)
    return parser


def build_model(args: argparse.Namespace, input_shape: tuple[int, int, int], num_classes: int):
    filters = options.comma_separated(args.filters)
    with user_errors(f"--image-size {args.image_size} with --filters {filters} ({len(args.filters)} levels)"):
        return build_unet(input_shape, num_classes, filters=args.filters)


def main(argv: Sequence[str] | None = None, callbacks: Sequence[keras.callbacks.Callback] = ()) -> int:
    """Trains as the command line says; `callbacks` join Keras' fit (benchmarks time and score epochs)."""
    args = options.parse_args(build_parser(), argv)
    return training.train(args, build_model, callbacks=callbacks)


if __name__ == "__main__":
    sys.exit(run_cli(main))
