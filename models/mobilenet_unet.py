"""A U-Net with a MobileNetV2 encoder (frozen by default) and a pix2pix decoder."""

from __future__ import annotations

import os
import warnings
from typing import Sequence

import keras
from keras import layers

from errors import first_line
from models.blocks import check_divisible, fuse, upsample

# The encoder activations the decoder joins, finest (1/2) first, coarsest (1/32) last.
SKIPS = {
    # pix2pix's: at 1/4, 1/8 and 1/16 the expansion (a 1x1 convolution to six times the
    # channels, ReLU6) that opens the strided block halving that scale: 144, 192 and 576 channels.
    "expansions": ("block_1_expand_relu", "block_3_expand_relu", "block_6_expand_relu",
                   "block_13_expand_relu", "block_16_project"),
    # the features that expansion is computed from: the last block's output at each of those
    # scales (its residual sum), 24, 32 and 96 channels.
    "outputs": ("block_1_expand_relu", "block_2_add", "block_5_add", "block_12_add", "block_16_project"),
}
DECODER_FILTERS = (512, 256, 128, 64)
FUSE_FILTERS = (0, 0, 0, 0)  # pix2pix's decoder: no convolution after a join
ENCODER_NAME = "encoder"


class WeightsFileError(ValueError):
    """An encoder weights file that cannot be read, or that holds another model's weights."""


def build_mobilenet_unet(
    input_shape: tuple[int, int, int] = (128, 128, 3),
    num_classes: int = 3,
    encoder_weights: str | os.PathLike | None = "imagenet",
    trainable_encoder: bool = False,
    *,
    decoder_filters: Sequence[int] = DECODER_FILTERS,
    fuse_filters: Sequence[int] = FUSE_FILTERS,
    skips: str = "expansions",
    stem_stride: int = 2,
    name: str = "mobilenet_unet",
) -> keras.Model:
    """Takes images in [0, 1] and rescales them to the [-1, 1] MobileNetV2 was trained on.

    `encoder_weights`: "imagenet" (downloaded once by Keras), None (random), or the path of
    a local MobileNetV2 no-top weights file. `trainable_encoder=True` fine-tunes the encoder
    with its BatchNorm layers kept frozen, in inference mode: a small fine-tuning batch would
    otherwise overwrite the ImageNet statistics.

    `decoder_filters`: the widths of the four pix2pix upsampling blocks, coarsest first.
    `fuse_filters`: for each of them, the width of a 3x3 convolution over the upsampled
    features joined with the skip connection (`blocks.fuse`, named "upN_fuse"); 0 leaves
    that join as pix2pix has it.
    `skips`: which encoder activations the decoder joins (`SKIPS`): pix2pix's "expansions",
    or the "outputs" they are expanded from. The decoder's convolutions after each join read
    its channels, so the narrower outputs make them cheaper.
    `stem_stride`: 2 is MobileNetV2's first convolution; 1 runs the encoder at twice the
    image's resolution (`build_encoder`), so the decoder sees the same scales either way.
    """
    check_divisible(tuple(input_shape), 32, "the MobileNetV2 U-Net")
    if len(fuse_filters) != len(decoder_filters) or min(fuse_filters, default=0) < 0:
        raise ValueError(f"fuse_filters needs one width of 0 or more per decoder block ({len(decoder_filters)}), "
                         f"got {tuple(fuse_filters)}")
    encoder = build_encoder(input_shape, encoder_weights, skips, stem_stride)

    inputs = keras.Input(shape=input_shape, name="image")
    x = layers.Rescaling(2.0, offset=-1.0, name="to_mobilenet_range")(inputs)
    *skips, x = encoder(x)
    for i, (filters, fuse_width, skip) in enumerate(zip(decoder_filters, fuse_filters, reversed(skips)), start=1):
        x = upsample(filters, 3, name=f"up{i}")(x)
        x = layers.Concatenate(name=f"up{i}_concat")([x, skip])
        if fuse_width:
            x = fuse(fuse_width, name=f"up{i}_fuse")(x)
    logits = layers.Conv2DTranspose(
        num_classes, 3, strides=2, padding="same", dtype="float32", name="logits"
    )(x)
    model = keras.Model(inputs, logits, name=name)
    set_encoder_trainable(model, trainable_encoder)
    return model


def build_encoder(input_shape: tuple[int, int, int], encoder_weights: str | os.PathLike | None,
                  skips: str = "expansions", stem_stride: int = 2) -> keras.Model:
    """MobileNetV2 without its top, returning the five skip activations of `SKIPS[skips]` (coarsest last).

    With `stem_stride=1` its first convolution ("Conv1") keeps the image's resolution, so every
    later layer works on twice the height and width: the pretrained filters see the pet at the
    scale of a photo twice the size, which ImageNet's are closer to, without inventing pixels as
    an upsampled input would. Each skip activation is then averaged over 2x2 windows (a layer
    named "<skip>_pool") back to the scale the decoder joins. It costs four times the encoder's
    arithmetic and no parameters. Keras' "imagenet" weights are then its checkpoint for twice
    the input size if it has one (96 to 224 px), else its 224-px one, the largest.
    """
    if skips not in SKIPS:
        raise ValueError(f"unknown skips {skips!r}: use one of {', '.join(SKIPS)}")
    if stem_stride not in (1, 2):
        raise ValueError(f"stem_stride must be 1 or 2, got {stem_stride!r}")
    weights = _resolve_weights(encoder_weights)
    scale = 2 // stem_stride  # how much larger a photo the encoder's layers see
    try:
        with warnings.catch_warnings():
            if scale > 1:  # Keras warns when it falls back to its 224-px checkpoint: here that is intended
                warnings.filterwarnings("ignore", message="`input_shape` is undefined or non-square")
            # a file of another model's weights would leave layers at their random start, with a warning each
            warnings.filterwarnings("error", message="Skipping nested container")
            base = keras.applications.MobileNetV2(input_shape=(input_shape[0] * scale, input_shape[1] * scale,
                                                               input_shape[2]), include_top=False, weights=weights)
    except Exception as error:  # Keras raises a bare Exception for a failed download
        if weights == "imagenet":
            raise ConnectionError(
                f"the ImageNet weights for the MobileNetV2 encoder could not be downloaded ({first_line(error)})"
            ) from error
        cause = first_line(error).split(". ")[0]  # Keras goes on to print whole tensors
        raise WeightsFileError(f"{weights} holds no weights of Keras' MobileNetV2 without its top, alpha 1.0, as "
                               f"keras.applications reads them ({cause})") from error
    if scale == 1:
        outputs = [base.get_layer(layer).output for layer in SKIPS[skips]]
        return keras.Model(base.input, outputs, name=ENCODER_NAME)
    base = _unstrided_stem(base, input_shape)
    outputs = [layers.AveragePooling2D(scale, name=f"{layer}_pool")(base.get_layer(layer).output)
               for layer in SKIPS[skips]]
    return keras.Model(base.input, outputs, name=ENCODER_NAME)


def _unstrided_stem(base: keras.Model, input_shape: tuple[int, int, int]) -> keras.Model:
    """`base` rebuilt for `input_shape` with Conv1 at stride 1, with the same weights.

    Keras' MobileNetV2 has no option for the stride; its configuration does (weights do not
    depend on strides or sizes).
    """
    config = base.get_config()
    for layer in config["layers"]:
        if layer["class_name"] == "InputLayer":
            layer["config"]["batch_shape"] = (None, *input_shape)
        elif layer["config"]["name"] == "Conv1":
            layer["config"]["strides"] = (1, 1)
    rebuilt = keras.Model.from_config(config)
    rebuilt.set_weights(base.get_weights())
    return rebuilt


def with_stem_stride(model: keras.Model, stem_stride: int, **architecture) -> keras.Model:
    """A copy of the MobileNetV2 U-Net `model` with its encoder's first convolution at `stem_stride`.

    Every weight carries over: neither Conv1's kernel nor any other weight depends on the stride,
    and the joins' 2x2 averages of an unstrided stem have none. That lets a run train its frozen
    phase at stride 2, cheaply, and fine-tune at stride 1 (--stem-stride 2,1). `architecture`: the
    builder's keywords `model` was built with (decoder_filters, fuse_filters, skips); a mismatch
    is a ValueError from Keras' set_weights. The copy's encoder is frozen, as the builder's is.
    """
    rebuilt = build_mobilenet_unet(tuple(model.input_shape[1:]), model.output_shape[-1], encoder_weights=None,
                                   stem_stride=stem_stride, name=model.name, **architecture)
    rebuilt.set_weights(model.get_weights())
    return rebuilt


def stem_stride_of(model: keras.Model) -> int:
    """The stride of the encoder's first convolution in a built MobileNetV2 U-Net."""
    return model.get_layer(ENCODER_NAME).get_layer("Conv1").strides[0]


def _resolve_weights(encoder_weights: str | os.PathLike | None) -> str | None:
    if encoder_weights is None or str(encoder_weights).lower() == "none":
        return None
    if str(encoder_weights) == "imagenet":
        return "imagenet"
    path = os.fspath(encoder_weights)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"encoder weights file {path} does not exist (use 'imagenet', 'none' or a file path)")
    return path


def set_encoder_trainable(model: keras.Model, trainable: bool, *, batchnorm: bool = False,
                          from_layer: str | None = None) -> None:
    """Freezes or unfreezes the encoder (from `from_layer` on, if given); BatchNorm stays frozen unless `batchnorm`.

    Fine-tuning pretrained weights wants BatchNorm frozen: a frozen BatchNormalization layer
    runs in inference mode in Keras 3, whatever the `training` flag of the call (a setting
    saved with the model), so small batches cannot overwrite the ImageNet statistics. An
    encoder trained from random weights needs `batchnorm=True`: its initial statistics
    (mean 0, variance 1) shrink activations about a millionfold by the deepest skip, and
    MobileNetV2's momentum of 0.999 would take thousands of steps to replace them, so it is
    lowered to 0.99 (a few hundred steps). With `from_layer` (e.g. "block_6_expand"), the
    layers before it stay frozen: the early, high-resolution blocks are the costliest to
    back-propagate through and the most generic. Recompile the model afterwards for it to count.
    """
    encoder = model.get_layer(ENCODER_NAME)
    first = encoder_layer_index(model, from_layer) if from_layer is not None else 0
    encoder.trainable = trainable
    for index, layer in enumerate(encoder.layers):
        is_batchnorm = isinstance(layer, layers.BatchNormalization)
        layer.trainable = trainable and index >= first and (batchnorm or not is_batchnorm)
        if is_batchnorm and layer.trainable:
            layer.momentum = min(layer.momentum, 0.99)


def encoder_layer_names(model: keras.Model) -> list[str]:
    """The names of the encoder's layers, in order (MobileNetV2's own: 'Conv1', 'block_6_expand', ...)."""
    return [layer.name for layer in model.get_layer(ENCODER_NAME).layers]


def encoder_layer_index(model: keras.Model, name: str) -> int:
    """The position of the encoder layer `name`; ValueError naming the choices if there is none."""
    names = encoder_layer_names(model)
    if name not in names:
        raise ValueError(f"the encoder has no layer {name!r} (MobileNetV2's are named like 'block_6_expand', "
                         f"from {names[1]!r} to {names[-1]!r})")
    return names.index(name)
