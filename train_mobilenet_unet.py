"""Train the U-Net with a frozen ImageNet MobileNetV2 encoder and a pix2pix decoder (plus a convolution at two joins).

With no options: Oxford-IIIT Pet through TensorFlow Datasets at 128x128, 10 epochs on the frozen
encoder then 10 fine-tuning its deeper two thirds with its first convolution unstrided (so it works
at twice that resolution), validated on the test split, with the recipe measured best per training
minute on real photos (see BENCHMARKS.md).
Example: python train_mobilenet_unet.py --epochs 20 --fine-tune-epochs 0   # frozen throughout
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
from errors import UserError, run_cli, user_errors  # noqa: E402
from models import build_mobilenet_unet  # noqa: E402
from models import mobilenet_unet  # noqa: E402
from models.mobilenet_unet import (WeightsFileError, encoder_layer_index, encoder_layer_names,  # noqa: E402
                                   set_encoder_trainable, stem_stride_of, with_stem_stride)

# The measured recipe (BENCHMARKS.md): 10 epochs on the frozen encoder, then 10 fine-tuning it
# from block 6 on. On the validation photos, the same 20 epochs all frozen scored 0.025 mean IoU
# less; fine-tuning every layer scored the same in 5% more time, from block 13 on 0.010 less, and
# a peak of 1e-4 0.010 less than 3e-4. Meanwhile the decoder keeps the frozen epochs' peak of
# 1e-3: 0.004 more on five folds' mean (four of the five gained) than the whole model at 3e-4,
# in the same time. The augmentations are the U-Net's too (flip, scale, colour):
# with today's recipe they gained 0.004 mean IoU over flips alone on five folds, in the same time.
FROZEN_EPOCHS = 10
FINE_TUNE_EPOCHS = 10
FINE_TUNE_LEARNING_RATE = 3e-4  # the encoder's peak while it is fine-tuned
FINE_TUNE_DECODER_LEARNING_RATE = 1e-3  # the decoder's meanwhile: the frozen epochs' peak
SAME = "same"  # --fine-tune-decoder-learning-rate: the encoder's
FINE_TUNE_FROM = "block_6_expand"  # the 1/8-scale blocks and deeper
# One pass over the photos an epoch, not --repeat auto's two to four: the pretrained encoder
# needs far fewer steps than a model from scratch, and each pass adds the whole epoch's time.
PASSES = 1
# The decoder at three quarters of pix2pix's widths (512, 256, 128, 64): it does most of the
# model's arithmetic, and on three seeds this one trained in 21% less time and scored 0.002
# mean IoU less (within the seeds' spread); half widths lost 0.016.
DECODER_WIDTHS = (384, 192, 96, 48)
# A 3x3 convolution where the 1/8- and 1/4-scale skips join the decoder (16 and 32 px at 128),
# at half those blocks' widths: on three seeds +0.012 mean IoU for 9% more training time. One
# at the 1/4 join alone gave +0.007; at full width it did no better in 15% more time; at the
# 1/16 join it gave nothing, at the 1/2 it cost a quarter more time (BENCHMARKS.md).
FUSE_WIDTHS = (0, 96, 48, 0)
# pix2pix's skips: at 1/4, 1/8 and 1/16 the encoder's six-fold expansions (144, 192, 576 channels).
# Joining the block outputs they expand (24, 32, 96) instead made a whole run 18% faster for 0.002
# less mean IoU on average over three seeds and five folds (-0.008 to +0.004): an option, not the
# default, while quality at 128 px is what the targets still miss (BENCHMARKS.md). With the unstrided
# first convolution below they saved only 4% for 0.0045 less.
SKIPS = "expansions"
# MobileNetV2's first convolution unstrided up to 128 px, so the encoder works at twice the photo's
# resolution and sees the pet nearer the scale of ImageNet's 224-px photos: at 128 px +0.009 mean
# IoU on five folds (every fold gained) and +0.014 on three seeds, for 35 to 50% more time. Above
# 128 px the photos already show the pet large: 160-px photos on 128-px windows gained 0.0015 for
# 43% more time, the 192-px recipe lost 0.012 (BENCHMARKS.md, session 18). From random weights
# there is no pretrained scale to match and the whole encoder trains, at four times the cost: 20
# epochs unstrided took 2.1 times as long as strided, and 40 strided epochs, in less time than
# that, scored 0.015 to 0.018 more on two folds (session 19). So 'auto' keeps the stride there.
STEM_STRIDE = "auto"
UNSTRIDED_STEM_UP_TO = 128
# ... and unstrided for the fine-tuning epochs only: the frozen ones at stride 2 (--stem-stride 2,1).
# Stride 1 throughout took 1.44 to 1.47 times the tutorial recipe's time where it was chosen, but 1.85
# on a day the same kind of machine ran its larger activations slower; 2,1 took 1.47 then, and kept
# most of the quality: on five folds 0.753 mean IoU against 0.757 (stride 2 throughout: 0.747)
# (BENCHMARKS.md, sessions 20 and 21); with the decoder's own fine-tuning peak 0.757 against 0.758,
# for about 13% less time a run by the step timings (session 24). 1 here makes 'auto' stride 1
# throughout again.
AUTO_FROZEN_STRIDE = 2
STRIDE_2_THEN_1 = "2,1"
OFFLINE_WEIGHTS = ("Train without them (--encoder-weights none), or fetch that file on a machine with access "
                   "and give its path (--encoder-weights PATH)")


def build_parser() -> argparse.ArgumentParser:
    parser = options.base_parser("train_mobilenet_unet", __doc__,
                                 epochs_help="epochs on the frozen encoder, before the fine-tuning ones",
                                 resume_help="raise the planned count until the fine-tuning begins")
    add = options.group(parser, "model").add_argument
    add("--encoder-weights", default="imagenet",
        help="'imagenet' (downloaded once by Keras), 'none', or the path of a local MobileNetV2 no-top "
        "weights file (.h5) for machines without internet. With 'none' the encoder trains from the start, "
        "BatchNorm included: frozen random features carry no signal")
    add("--decoder-filters", type=options.widths(len(DECODER_WIDTHS)), default=options.comma_separated(DECODER_WIDTHS),
        help="widths of the decoder's four upsampling blocks, coarsest first, comma-separated. The decoder "
        "does most of the model's arithmetic: the default three quarters of pix2pix's 512,256,128,64 "
        "trained in 21%% less time for the same quality (see BENCHMARKS.md)")
    add("--fuse-filters", type=options.widths(len(FUSE_WIDTHS), minimum=0),
        default=options.comma_separated(FUSE_WIDTHS),
        help="for each decoder block, coarsest first, the width of a 3x3 convolution that mixes the upsampled "
        "features with the skip connection joined to them; 0 leaves that join as pix2pix has it (0,0,0,0: "
        "pix2pix's decoder)")
    add("--skips", choices=tuple(mobilenet_unet.SKIPS), default=SKIPS,
        help="the encoder activations the decoder joins at 1/4, 1/8 and 1/16 scale: 'expansions', pix2pix's "
        "(144, 192, 576 channels), or 'outputs', the block outputs they expand (24, 32, 96 channels), which "
        "made a whole run 18%% faster for 0.002 less mean IoU on average with --stem-stride 2, but only 4%% "
        "faster for 0.0045 less with the unstrided first convolution (see BENCHMARKS.md)")
    add("--stem-stride", choices=("auto", "1", "2", STRIDE_2_THEN_1), default=STEM_STRIDE,
        metavar=f"auto|1|2|{STRIDE_2_THEN_1}",
        help="stride of the encoder's first convolution: 2 is MobileNetV2's; 1 keeps the photo's resolution, "
        "so the whole encoder works at twice it (the features it passes to the decoder averaged back to "
        "their usual scales): four times the encoder's arithmetic, no more parameters; at 128 px +0.010 "
        f"mean IoU for 35 to 60%% more time. '{STRIDE_2_THEN_1}': 2 on the frozen encoder, 1 from the first "
        "fine-tuning epoch on (the model rebuilt with the same weights): at 128 px +0.006 for about 25%% more "
        f"time. 'auto': '{STRIDE_2_THEN_1}' up to --image-size {UNSTRIDED_STEM_UP_TO}, 2 above, where stride 1 "
        "gained little or lost, and 2 with --encoder-weights none, where twice the epochs at stride 2 took less "
        "time and scored higher (see BENCHMARKS.md)")
    add = options.group(parser, "optimization").add_argument
    add("--fine-tune-epochs", type=int, default=FINE_TUNE_EPOCHS,
        help="after the frozen-encoder epochs (--epochs), unfreeze the encoder (its BatchNorm stays in "
        "inference mode) and train this many more epochs, with a schedule of their own; 0: frozen throughout")
    add("--fine-tune-learning-rate", type=float, default=FINE_TUNE_LEARNING_RATE,
        help="peak learning rate of the encoder in the fine-tuning epochs")
    add("--fine-tune-decoder-learning-rate", type=learning_rate_or_same, default=FINE_TUNE_DECODER_LEARNING_RATE,
        metavar=f"RATE|{SAME}",
        help="peak learning rate of the decoder (with the joins and the logits) in the fine-tuning epochs, "
        f"while the encoder trains at --fine-tune-learning-rate; '{SAME}': the encoder's. At 128 px the "
        "decoder at 1e-3 scored 0.004 mean IoU more on five folds than the whole model at 3e-4, in the same "
        "time (see BENCHMARKS.md)")
    add("--fine-tune-from", default=FINE_TUNE_FROM, metavar="LAYER",
        help="fine-tune the encoder from this MobileNetV2 layer on (e.g. block_6_expand), keeping the "
        "earlier ones frozen; 'all' fine-tunes every layer")
    parser.set_defaults(epochs=FROZEN_EPOCHS, repeat=PASSES)
    return parser


def learning_rate_or_same(text: str) -> float | str:
    """A positive learning rate, or 'same'; for argparse."""
    if text.strip().lower() == SAME:
        return SAME
    try:
        rate = float(text)
    except ValueError:
        rate = 0.0
    if not rate > 0:
        raise argparse.ArgumentTypeError(f"{text!r}: give a positive learning rate or '{SAME}'")
    return rate


def fine_tuning_rates(args: argparse.Namespace) -> tuple[float, float]:
    """The peak learning rates of the decoder and of the encoder in the fine-tuning epochs."""
    decoder = args.fine_tune_decoder_learning_rate
    return (args.fine_tune_learning_rate if decoder == SAME else float(decoder)), args.fine_tune_learning_rate


def stem_strides(value: str, image_size: int, pretrained: bool = True) -> tuple[int, int]:
    """--stem-stride as the strides of the frozen epochs and of the fine-tuning ones, 'auto' resolved by
    --image-size and whether the encoder starts pretrained.

    A model that changes stride between the phases is rebuilt with its weights (`with_stem_stride`). A
    resumed run goes on with the saved model's stride and switches it, if need be, when fine-tuning starts."""
    if value == "auto":
        return (AUTO_FROZEN_STRIDE, 1) if pretrained and image_size <= UNSTRIDED_STEM_UP_TO else (2, 2)
    if value == STRIDE_2_THEN_1:
        return 2, 1
    return int(value), int(value)


def architecture(image_size: int, fine_tuning: bool = True) -> dict:
    """The builder's keywords for the default model at `image_size`, for benchmarks and tests that build it
    without the command line: the model of the fine-tuning epochs, which a run saves, or of the frozen ones."""
    return {"decoder_filters": DECODER_WIDTHS, "fuse_filters": FUSE_WIDTHS, "skips": SKIPS,
            "stem_stride": stem_strides(STEM_STRIDE, image_size)[fine_tuning]}


def chosen_architecture(args: argparse.Namespace) -> dict:
    """The builder's keywords the options choose, but the stride."""
    return {"decoder_filters": args.decoder_filters, "fuse_filters": args.fuse_filters, "skips": args.skips}


def from_scratch(args: argparse.Namespace) -> bool:
    return str(args.encoder_weights).lower() == "none"


def run_stem_strides(args: argparse.Namespace) -> tuple[int, int]:
    """`stem_strides` for this run's options: the build and the switch at fine-tuning read the same."""
    return stem_strides(args.stem_stride, args.image_size, not from_scratch(args))


def build_model(args: argparse.Namespace, input_shape: tuple[int, int, int], num_classes: int):
    frozen, fine_tuning = run_stem_strides(args)
    final = fine_tuning if args.fine_tune_epochs > 0 else frozen
    try:
        with user_errors(f"--image-size {args.image_size}", (ValueError,)), \
                user_errors(f"--encoder-weights {args.encoder_weights}", (FileNotFoundError, WeightsFileError)):
            # built at the stride of the last epochs, so that Keras picks the ImageNet checkpoint for the
            # size the trained encoder works at; then switched for the frozen epochs if they differ
            model = build_mobilenet_unet(input_shape, num_classes, encoder_weights=args.encoder_weights,
                                         stem_stride=final, **chosen_architecture(args))
    except ConnectionError as error:
        raise UserError(f"{error}. {OFFLINE_WEIGHTS}") from error
    if frozen != final:
        model = with_stem_stride(model, frozen, **chosen_architecture(args))
    if from_scratch(args):
        set_encoder_trainable(model, True, batchnorm=True)
    if args.fine_tune_epochs > 0 and args.fine_tune_from != "all":  # refused now, not after the frozen epochs
        with user_errors(f"--fine-tune-from {args.fine_tune_from}", (ValueError,)):
            encoder_layer_index(model, args.fine_tune_from)
    return model


def build_phases(args: argparse.Namespace) -> list[training.Phase]:
    """The frozen epochs, then (with --fine-tune-epochs) the fine-tuning ones: the encoder unfrozen
    from --fine-tune-from on, at its second stem stride, and trained at its own peak beside the
    decoder's. Benchmarks compile their steps from the same phases."""
    strides = run_stem_strides(args)
    first = ("the whole model from random weights" if from_scratch(args) else "the encoder frozen") + \
        f" (first convolution stride {strides[0]}); peak learning rate {args.learning_rate:g}"
    phases = [training.Phase(args.epochs, args.learning_rate, title=first)]
    if args.fine_tune_epochs > 0:
        stride = strides[1]

        def unfreeze_encoder(model: keras.Model) -> keras.Model:
            if stem_stride_of(model) != stride:
                model = with_stem_stride(model, stride, **chosen_architecture(args))
            first = None if args.fine_tune_from == "all" or from_scratch(args) else args.fine_tune_from
            set_encoder_trainable(model, True, batchnorm=from_scratch(args), from_layer=first)
            return model

        decoder_rate, encoder_rate = fine_tuning_rates(args)
        own_rate = None if encoder_rate == decoder_rate else (encoder_rate, encoder_layer_names)
        if from_scratch(args):
            trained = f"the whole model, at the fine-tuning rates (first convolution stride {stride})"
        else:
            which = "the whole encoder" if args.fine_tune_from == "all" else f"the encoder from {args.fine_tune_from}"
            trained = f"{which} fine-tuned (first convolution stride {stride}; BatchNorm frozen)"
        rates = (f"peak learning rate {encoder_rate:g}" if own_rate is None
                 else f"peak learning rates {encoder_rate:g} for the encoder, {decoder_rate:g} for the decoder")
        title = f"{trained}; {rates}"
        phases.append(training.Phase(args.epochs + args.fine_tune_epochs, decoder_rate, unfreeze_encoder, own_rate,
                                     title, label="fine-tuning"))
    return phases


def main(argv: Sequence[str] | None = None, callbacks: Sequence[keras.callbacks.Callback] = ()) -> int:
    """Trains as the command line says; `callbacks` join Keras' fit (benchmarks time and score epochs)."""
    args = options.parse_args(build_parser(), argv)
    if args.fine_tune_epochs < 0:
        raise UserError(f"--fine-tune-epochs must be 0 or more, got {args.fine_tune_epochs}")
    if args.fine_tune_learning_rate <= 0:
        raise UserError(f"--fine-tune-learning-rate must be positive, got {args.fine_tune_learning_rate}")
    if args.stem_stride == STRIDE_2_THEN_1 and args.fine_tune_epochs == 0:
        raise UserError(f"--stem-stride {STRIDE_2_THEN_1} switches to stride 1 when fine-tuning starts: it needs "
                        "--fine-tune-epochs above 0 (for stride 2 throughout, give --stem-stride 2)")
    return training.train(args, build_model, build_phases(args), callbacks=callbacks)


if __name__ == "__main__":
    sys.exit(run_cli(main))
