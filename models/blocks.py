"""The pix2pix upsample block, carried here because tensorflow-examples is not installable."""

from __future__ import annotations

import keras
from keras import layers


def upsample(filters: int, size: int, apply_dropout: bool = False, name: str | None = None) -> keras.Sequential:
    """Conv2DTranspose (stride 2, no bias) -> BatchNorm -> optional Dropout(0.5) -> ReLU.

    Doubles height and width. The bias is left out because BatchNorm's offset replaces it.
    """
    block = [
        layers.Conv2DTranspose(
            filters,
            size,
            strides=2,
            padding="same",
            kernel_initializer=keras.initializers.RandomNormal(mean=0.0, stddev=0.02),
            use_bias=False,
        ),
        layers.BatchNormalization(),
    ]
    if apply_dropout:
        block.append(layers.Dropout(0.5))
    block.append(layers.ReLU())
    return keras.Sequential(block, name=name)


def fuse(filters: int, name: str | None = None) -> keras.Sequential:
    """Conv2D 3x3 (no bias) -> BatchNorm -> ReLU, keeping height and width.

    pix2pix joins each skip connection to the upsampled features and leaves their mixing to
    the next upsampling block; this block mixes them at the skip's own resolution first, as
    the original U-Net's decoder does after every join.
    """
    return keras.Sequential([layers.Conv2D(filters, 3, padding="same", use_bias=False),
                             layers.BatchNormalization(), layers.ReLU()], name=name)


def check_divisible(input_shape: tuple[int, int, int], factor: int, model: str) -> None:
    """Raises ValueError unless height and width are positive multiples of `factor`."""
    height, width = input_shape[0], input_shape[1]
    if len(input_shape) != 3 or input_shape[2] != 3:
        raise ValueError(f"{model} takes RGB input of shape (height, width, 3), got {input_shape}")
    for side, value in (("height", height), ("width", width)):
        if value is None or value < factor or value % factor:
            raise ValueError(
                f"{model} needs a {side} that is a multiple of {factor} (it halves the image "
                f"{factor.bit_length() - 1} times and must add the halves back up), got {value}"
            )
