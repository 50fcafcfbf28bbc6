"""Training augmentations, applied to batches after the cache, image and mask alike.

Geometry (flips, random scale-and-crop) is one `tf.image.crop_and_resize` per batch: each
example gets a box, mirrored when it is flipped, and the image is sampled bilinearly while
the mask is sampled with nearest neighbour on the same grid, so labels are never
interpolated and stay aligned with their pixels. Crops only zoom in (each box lies inside
the image), so no pixel is invented at the edges; sample-weight maps are derived from the
augmented masks afterwards (data.batches), so they follow the same geometry. Colour jitter
(brightness, contrast, saturation) touches the image only.

A training window (`crop`, --crop) is a random square of `crop` x `crop` pixels of the cached
example, image and mask, cut out by indexing before the other geometry: it copies pixels and
resamples nothing. The model then trains on small windows at the scale of the larger images
it will predict whole; flips and scale boxes apply to the window.

Random draws come from a per-batch seed drawn anew on every pass over the data, so epochs
differ, and they are reproducible with `--seed`.
"""

from __future__ import annotations

import argparse
import math

import tensorflow as tf

AUGMENTATIONS = {
    "flip": "mirror left-right with probability 1/2",
    "scale": "crop a random box of 50-100%% of the area (aspect 3:4 to 4:3) and resize it back up",
    "color": "random brightness, contrast and saturation (up to +-10%%, +-20%%, +-20%%)",
}
DEFAULT = ("flip", "scale", "color")
MIN_AREA = 0.5
ASPECT = (3 / 4, 4 / 3)
BRIGHTNESS = 0.1 * 255.0
CONTRAST = 0.2
SATURATION = 0.2


def parse_augmentations(text: str) -> tuple[str, ...]:
    """'flip,scale' -> ('flip', 'scale'); 'none' -> (); for argparse."""
    words = [word.strip().lower() for word in str(text).split(",") if word.strip()]
    if words == ["none"]:
        return ()
    unknown = [word for word in words if word not in AUGMENTATIONS]
    if unknown or not words:
        raise argparse.ArgumentTypeError(
            f"{text!r}: use 'none' or a comma-separated list of {', '.join(AUGMENTATIONS)}")
    return tuple(name for name in AUGMENTATIONS if name in words)


def augment_batches(ds: tf.data.Dataset, augmentations: tuple[str, ...], seed: int | None,
                    crop: int | None = None) -> tf.data.Dataset:
    """Batches of (uint8 images, uint8 masks) -> (float32 images in [0, 255], uint8 masks), augmented.

    `crop`: each example becomes a random `crop` x `crop` window of itself (None: whole images).
    """
    unknown = set(augmentations) - set(AUGMENTATIONS)
    if unknown:
        raise ValueError(f"unknown augmentations {sorted(unknown)}: use {', '.join(AUGMENTATIONS)}")
    if crop is not None and crop < 1:
        raise ValueError(f"a training window needs a positive side, got {crop}")
    if not augmentations and crop is None:
        return ds
    draws = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True).batch(2)

    def apply(batch, draw):
        images, masks = batch
        batch_seed = tf.cast(draw % (2**31 - 1), tf.int32)
        return augment_batch(images, masks, augmentations, batch_seed, crop)

    return tf.data.Dataset.zip(ds, draws).map(apply, num_parallel_calls=tf.data.AUTOTUNE)


def augment_batch(images: tf.Tensor, masks: tf.Tensor, augmentations: tuple[str, ...], seed: tf.Tensor,
                  crop: int | None = None):
    """One batch, with stateless draws from `seed` (int32, shape (2,)); `crop` as in augment_batches.

    The batch keeps a static height and width (the window's with `crop`), so Keras traces its
    train step for that size.
    """
    side = list(images.shape[1:3]) if crop is None else [crop, crop]
    if crop is not None:
        images, masks = take_windows(images, masks, crop, seed + 2)
    images = tf.cast(images, tf.float32)
    if "flip" in augmentations or "scale" in augmentations:
        boxes = random_boxes(tf.shape(images)[0], seed, flip="flip" in augmentations, scale="scale" in augmentations)
        images, masks = crop_and_resize(images, masks, boxes)
    if "color" in augmentations:
        images = jitter_colours(images, seed + 1)
    return tf.ensure_shape(images, [None, *side, 3]), tf.ensure_shape(masks, [None, *side, 1])


def take_windows(images: tf.Tensor, masks: tf.Tensor, crop: int, seed: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """A random `crop` x `crop` window of each example, image and mask alike, by indexing (exact copies)."""
    corners = random_windows(tf.shape(images)[0], tf.shape(images)[1:3], crop, seed)
    steps = tf.range(crop)
    rows, cols = corners[:, :1] + steps, corners[:, 1:] + steps  # (count, crop) each

    def window(batch):
        return tf.gather(tf.gather(batch, rows, axis=1, batch_dims=1), cols, axis=2, batch_dims=1)

    return window(images), window(masks)


def random_windows(count: tf.Tensor, size: tf.Tensor, crop: int, seed: tf.Tensor) -> tf.Tensor:
    """(count, 2) int32 top-left pixels of `crop` x `crop` windows inside images of `size` (height, width)."""
    tf.debugging.assert_less_equal(tf.constant(crop), tf.reduce_min(size), message=(
        f"a {crop} px training window does not fit in the images"))
    room = tf.cast(size - crop + 1, tf.float32)  # possible offsets per axis
    offsets = tf.floor(tf.random.stateless_uniform([count, 2], seed) * room)
    return tf.cast(tf.minimum(offsets, room - 1), tf.int32)


def random_boxes(count: tf.Tensor, seed: tf.Tensor, *, flip: bool, scale: bool) -> tf.Tensor:
    """(count, 4) boxes [y1, x1, y2, x2] in [0, 1]; x1 > x2 mirrors the crop left-right."""
    uniform = tf.random.stateless_uniform([count, 5], seed)
    if scale:
        area = MIN_AREA + (1.0 - MIN_AREA) * uniform[:, 0]
        log_low, log_high = math.log(ASPECT[0]), math.log(ASPECT[1])
        aspect = tf.exp(log_low + (log_high - log_low) * uniform[:, 1])  # width / height
        height = tf.minimum(tf.sqrt(area / aspect), 1.0)
        width = tf.minimum(tf.sqrt(area * aspect), 1.0)
    else:
        height = width = tf.ones([count])
    top = (1.0 - height) * uniform[:, 2]
    left = (1.0 - width) * uniform[:, 3]
    y1, x1, y2, x2 = top, left, top + height, left + width
    if flip:
        mirrored = uniform[:, 4] < 0.5
        x1, x2 = tf.where(mirrored, x2, x1), tf.where(mirrored, x1, x2)
    return tf.stack([y1, x1, y2, x2], axis=1)


def crop_and_resize(images: tf.Tensor, masks: tf.Tensor, boxes: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """Each example's box resized to the batch's size: bilinear for images, nearest for masks.

    The full box [0, 0, 1, 1] samples every pixel centre exactly, so an uncropped, unflipped
    example comes out unchanged.
    """
    size = tf.shape(images)[1:3]
    indices = tf.range(tf.shape(images)[0])
    images = tf.image.crop_and_resize(images, boxes, indices, size, method="bilinear")
    masks = tf.image.crop_and_resize(tf.cast(masks, tf.float32), boxes, indices, size, method="nearest")
    return images, tf.cast(tf.round(masks), tf.uint8)


def jitter_colours(images: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
    """Per-example brightness shift, contrast and saturation scaling, clipped to [0, 255]."""
    count = tf.shape(images)[0]
    draws = tf.random.stateless_uniform([count, 3], seed, -1.0, 1.0)[:, None, None, :]
    images = images + BRIGHTNESS * draws[..., 0:1]
    mean = tf.reduce_mean(images, axis=[1, 2, 3], keepdims=True)
    images = (images - mean) * (1.0 + CONTRAST * draws[..., 1:2]) + mean
    grey = tf.reduce_mean(images, axis=-1, keepdims=True)
    images = (images - grey) * (1.0 + SATURATION * draws[..., 2:3]) + grey
    return tf.clip_by_value(images, 0.0, 255.0)
