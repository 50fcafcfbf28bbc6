"""augment.py: image, mask and weights move together; labels are never interpolated; evaluation is untouched."""

import numpy as np
import pytest
import tensorflow as tf

import augment
import data


def blocks(count=8, size=32, seed=0):
    """Images whose red channel encodes the class (0, 100, 200) of large blocks in the mask."""
    rng = np.random.default_rng(seed)
    masks = np.zeros((count, size, size, 1), np.uint8)
    for index in range(count):
        masks[index, :, size // 3: 2 * size // 3] = 1
        masks[index, rng.integers(0, size // 2):, 2 * size // 3:] = 2
    images = np.repeat(masks * 100, 3, axis=-1).astype(np.uint8)
    images[..., 1] = np.arange(size, dtype=np.uint8)[None, None, :] * 7  # a horizontal ramp: shows flips
    return images, masks


def uniform_neighbourhood(mask):
    """Pixels whose 3x3 neighbourhood holds one class: there bilinear and nearest must agree.

    Border pixels never count: a bilinear sample there may reach a row the mask does not show.
    """
    padded = np.pad(mask, ((0, 0), (1, 1), (1, 1)), constant_values=255)
    same = np.ones(mask.shape, bool)
    for dy in (0, 1, 2):
        for dx in (0, 1, 2):
            same &= padded[:, dy:dy + mask.shape[1], dx:dx + mask.shape[2]] == mask
    return same


@pytest.mark.parametrize("names", [("flip",), ("scale",), ("flip", "scale"), ("flip", "scale", "color")])
def test_image_mask_and_weights_stay_aligned(monkeypatch, names):
    images, masks = blocks(16)
    monkeypatch.setattr(data, "_synthetic_split",
                        lambda split, size, limit: data.Split(tf.data.Dataset.from_tensor_slices((images, masks)), 16))
    ds = data.build_dataset("synthetic", "train", data.DataOptions(image_size=32), batch_size=16, training=True,
                            seed=3, class_weights=[3.0, 0.5, 1.0], augmentations=names)
    x, y, w = [t.numpy() for t in next(iter(ds))]
    y, w = y[..., 0], w[..., 0]
    assert set(np.unique(y)) <= {0, 1, 2}  # nearest neighbour: no label between two classes
    np.testing.assert_array_equal(w, np.array([3.0, 0.5, 1.0], np.float32)[y])  # weights follow the mask
    inner = uniform_neighbourhood(y)
    assert inner.mean() > 0.5
    if "color" in names:  # jitter moves values; the class order of the red channel survives
        for cls in (0, 1):
            assert x[..., 0][inner & (y == cls)].max() < x[..., 0][inner & (y == cls + 1)].min() + 0.25
    else:
        np.testing.assert_allclose(x[..., 0][inner] * 255, y[inner] * 100.0, atol=0.5)
    changed = [not np.array_equal(y[i], masks[i, ..., 0]) for i in range(16)]
    assert 0 < sum(changed) <= 16  # something moved


def test_full_unflipped_box_is_the_identity():
    images, masks = blocks(2)
    boxes = tf.constant([[0.0, 0.0, 1.0, 1.0]] * 2)
    out_images, out_masks = augment.crop_and_resize(tf.cast(images, tf.float32), masks, boxes)
    np.testing.assert_array_equal(out_images.numpy(), images.astype(np.float32))
    np.testing.assert_array_equal(out_masks.numpy(), masks)


def test_a_mirrored_box_is_an_exact_flip():
    images, masks = blocks(1)
    out_images, out_masks = augment.crop_and_resize(tf.cast(images, tf.float32), masks, tf.constant([[0.0, 1.0, 1.0, 0.0]]))
    np.testing.assert_array_equal(out_images.numpy(), images[:, :, ::-1].astype(np.float32))
    np.testing.assert_array_equal(out_masks.numpy(), masks[:, :, ::-1])


def test_scale_crops_zoom_in_within_the_image_and_cover_the_configured_areas():
    boxes = augment.random_boxes(tf.constant(2000), tf.constant([1, 2]), flip=False, scale=True).numpy()
    assert boxes.min() >= 0.0 and boxes.max() <= 1.0 + 1e-6
    area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    assert area.min() >= augment.MIN_AREA * 0.74 and area.max() <= 1.0 + 1e-6  # clipped at the edges
    assert np.median(area) == pytest.approx((augment.MIN_AREA + 1) / 2, abs=0.08)


def test_evaluation_batches_are_never_augmented():
    raw = list(data.load_examples("synthetic", "test", data.DataOptions(image_size=32, limit=8)))
    batch = next(iter(data.build_dataset("synthetic", "test", data.DataOptions(image_size=32, limit=8), batch_size=8,
                                         augmentations=augment.DEFAULT)))
    np.testing.assert_array_equal(batch[1].numpy()[..., 0], np.stack([m.numpy()[..., 0] for _, m in raw]))
    np.testing.assert_allclose(batch[0].numpy() * 255, np.stack([i.numpy() for i, _ in raw]), atol=1e-3)


def test_draws_differ_between_epochs_and_repeat_with_the_seed():
    def first_masks(ds):
        return next(iter(ds))[1].numpy()

    options = data.DataOptions(image_size=32, limit=16)
    ds = data.build_dataset("synthetic", "train", options, batch_size=16, training=True, seed=11, shuffle_buffer=1)
    first, second = first_masks(ds), first_masks(ds)
    assert not np.array_equal(first, second)
    again = data.build_dataset("synthetic", "train", options, batch_size=16, training=True, seed=11, shuffle_buffer=1)
    np.testing.assert_array_equal(first_masks(again), first)


def test_parse_augmentations():
    assert augment.parse_augmentations("color, flip") == ("flip", "color")
    assert augment.parse_augmentations("none") == ()
