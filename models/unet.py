"""The hand-built 6-level U-Net."""

from __future__ import annotations

from typing import Sequence

import keras
from keras import layers

from models.blocks import check_divisible

DEFAULT_FILTERS = (16, 32, 64, 128, 256, 512)


def build_unet(
    input_shape: tuple[int, int, int] = (128, 128, 3),
    num_classes: int = 3,
    *,
    filters: Sequence[int] = DEFAULT_FILTERS,
    bottleneck_filters: int | None = None,
    name: str = "unet",
) -> keras.Model:
    """A U-Net with one 3x3 convolution per level, BatchNorm in the encoder, logits out.

    `filters` are the encoder widths from the top level down (the decoder mirrors them); the
    bottleneck defaults to twice the deepest width. Height and width must be multiples of
    2 ** len(filters) (64 with the default six levels).
    """
    filters = tuple(filters)
    check_divisible(tuple(input_shape), 2 ** len(filters), "the U-Net")
    bottleneck_filters = bottleneck_filters or 2 * filters[-1]
    conv = dict(kernel_size=3, padding="same", activation="relu", kernel_initializer="he_normal")

    inputs = keras.Input(shape=input_shape, name="image")
    x = inputs
    skips = []
    for level, width in enumerate(filters, start=1):
        x = layers.Conv2D(width, name=f"enc{level}_conv", **conv)(x)
        x = layers.BatchNormalization(name=f"enc{level}_bn")(x)
        skips.append(x)
        x = layers.MaxPooling2D(2, name=f"enc{level}_pool")(x)
    x = layers.Conv2D(bottleneck_filters, name="bottleneck_conv", **conv)(x)
    for level, (width, skip) in reversed(list(enumerate(zip(filters, skips), start=1))):
        x = layers.Conv2DTranspose(width, 2, strides=2, padding="same", name=f"dec{level}_up")(x)
        x = layers.Concatenate(name=f"dec{level}_concat")([x, skip])
        x = layers.Conv2D(width, name=f"dec{level}_conv", **conv)(x)
    logits = layers.Conv2D(num_classes, 1, dtype="float32", name="logits")(x)
    return keras.Model(inputs, logits, name=name)
