"""Train the U-Net with a frozen ImageNet MobileNetV2 encoder and a pix2pix decoder.

With no options: Oxford-IIIT Pet through TensorFlow Datasets at 128x128, 20 epochs on the frozen
encoder, validated on the test split, with the recipe measured best per training minute on
real photos (see BENCHMARKS.md).
Example: python train_mobilenet_unet.py --epochs 15 --fine-tune-epochs 5
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Sequence

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # keep TensorFlow's start-up chatter out of the way

import keras  # noqa: E402

import options  # noqa: E402
import training  # noqa: E402
from errors import UserError, run_cli, user_errors  # noqa: E402
from models import build_mobilenet_unet  # noqa: E402
from models.mobilenet_unet import set_encoder_trainable  # noqa: E402

# The measured recipe (BENCHMARKS.md): 20 epochs on the frozen encoder with flips only. On the
# validation photos, fine-tuning the last 5 (--epochs 15 --fine-tune-epochs 5) added 0.008 mean
# IoU for 8% more time, and scale-and-colour augmentation added nothing but 9% more time: both
# stay one option away, outside the default's time budget.
FROZEN_EPOCHS = 20
FINE_TUNE_EPOCHS = 0
FINE_TUNE_LEARNING_RATE = 3e-4
AUGMENT = "flip"
OFFLINE_WEIGHTS = ("Train without them (--encoder-weights none), or fetch that file on a machine with access "
                   "and give its path (--encoder-weights PATH)")


def build_parser() -> argparse.ArgumentParser:
    parser = options.base_parser("train_mobilenet_unet", __doc__)
    add = options.group(parser, "model").add_argument
    add("--encoder-weights", default="imagenet",
        help="'imagenet' (downloaded once by Keras), 'none', or the path of a local MobileNetV2 no-top "
        "weights file (.h5) for machines without internet. With 'none' the encoder trains from the start, "
        "BatchNorm included: frozen random features carry no signal")
    add = options.group(parser, "optimization").add_argument
    add("--fine-tune-epochs", type=int, default=FINE_TUNE_EPOCHS,
        help="after the frozen-encoder epochs (--epochs), unfreeze the encoder (its BatchNorm stays in "
        "inference mode) and train this many more epochs, with a schedule of their own; 0: frozen throughout")
    add("--fine-tune-learning-rate", type=float, default=FINE_TUNE_LEARNING_RATE,
        help="peak learning rate of the fine-tuning epochs")
    parser.set_defaults(epochs=FROZEN_EPOCHS, augment=AUGMENT)
    return parser


def from_scratch(args: argparse.Namespace) -> bool:
    return str(args.encoder_weights).lower() == "none"


def build_model(args: argparse.Namespace, input_shape: tuple[int, int, int], num_classes: int):
    try:
        with user_errors(f"--encoder-weights {args.encoder_weights}", (FileNotFoundError,)), \
                user_errors(f"--image-size {args.image_size}", (ValueError,)):
            model = build_mobilenet_unet(input_shape, num_classes, encoder_weights=args.encoder_weights)
    except ConnectionError as error:
        raise UserError(f"{error}. {OFFLINE_WEIGHTS}") from error
    if from_scratch(args):
        set_encoder_trainable(model, True, batchnorm=True)
    return model


def main(argv: Sequence[str] | None = None, callbacks: Sequence[keras.callbacks.Callback] = ()) -> int:
    """Trains as the command line says; `callbacks` join Keras' fit (benchmarks time and score epochs)."""
    args = options.parse_args(build_parser(), argv)
    if args.fine_tune_epochs < 0 or args.fine_tune_learning_rate <= 0:
        raise UserError("--fine-tune-epochs must be 0 or more and --fine-tune-learning-rate positive")
    phases = [training.Phase(args.epochs, args.learning_rate)]
    if args.fine_tune_epochs > 0:
        def unfreeze_encoder(model) -> None:
            set_encoder_trainable(model, True, batchnorm=from_scratch(args))

        phases.append(training.Phase(args.epochs + args.fine_tune_epochs, args.fine_tune_learning_rate, unfreeze_encoder))
    return training.train(args, build_model, phases, callbacks=callbacks)


if __name__ == "__main__":
    sys.exit(run_cli(main))
