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


def near_another_class(mask, reach=data.OUTLINE_REACH):
    """Pixels with a pixel of another class within `reach` rows and columns, inside the image, by brute force."""
    height, width = mask.shape[-2:]
    near = np.zeros(mask.shape, bool)
    for dy in range(-reach, reach + 1):
        for dx in range(-reach, reach + 1):
            rows, cols = slice(max(0, -dy), height - max(0, dy)), slice(max(0, -dx), width - max(0, dx))
            moved = (slice(max(0, dy), height - max(0, -dy)), slice(max(0, dx), width - max(0, -dx)))
            near[..., rows, cols] |= mask[..., rows, cols] != mask[(..., *moved)]
    return near


@pytest.mark.parametrize("names, crop", [(("flip",), None), (("scale",), None), (("flip", "scale"), None),
                                         (("flip", "scale", "color"), None), ((), 24), (("flip", "scale"), 16)])
def test_image_mask_and_weights_stay_aligned(monkeypatch, names, crop):
    images, masks = blocks(16)
    monkeypatch.setattr(data, "_synthetic_split",
                        lambda split, size, limit: data.Split(tf.data.Dataset.from_tensor_slices((images, masks)), 16))
    ds = data.build_dataset("synthetic", "train", data.DataOptions(image_size=32), batch_size=16, training=True,
                            seed=3, class_weights=[3.0, 0.5, 1.0], outline_weight=2.0, augmentations=names, crop=crop)
    x, y, w = [t.numpy() for t in next(iter(ds))]
    side = crop or 32
    assert x.shape == (16, side, side, 3) and y.shape == w.shape == (16, side, side, 1)
    y, w = y[..., 0], w[..., 0]
    assert set(np.unique(y)) <= {0, 1, 2}  # nearest neighbour: no label between two classes
    outline = near_another_class(y)
    assert 0.05 < outline.mean() < 0.6
    # the weights follow the augmented mask: its class's weight, doubled along its outline
    np.testing.assert_array_equal(w, np.array([3.0, 0.5, 1.0], np.float32)[y] * np.where(outline, 2.0, 1.0))
    inner = uniform_neighbourhood(y)
    assert inner.mean() > 0.5
    if "color" in names:  # jitter moves values; the class order of the red channel survives
        for cls in (0, 1):
            assert x[..., 0][inner & (y == cls)].max() < x[..., 0][inner & (y == cls + 1)].min() + 0.25
    else:
        np.testing.assert_allclose(x[..., 0][inner] * 255, y[inner] * 100.0, atol=0.5)
    changed = [y[i].shape != masks[i, ..., 0].shape or not np.array_equal(y[i], masks[i, ..., 0]) for i in range(16)]
    assert 0 < sum(changed) <= 16  # something moved


def coordinates(count=4, size=32):
    """Images whose pixels name their own place: red = 7 * row, green = 7 * column; masks the same modulo 3."""
    rows, cols = np.meshgrid(np.arange(size), np.arange(size), indexing="ij")
    image = np.stack([rows * 7, cols * 7, np.full_like(rows, 50)], axis=-1).astype(np.uint8)
    mask = ((rows + 2 * cols) % 3).astype(np.uint8)[..., None]
    return np.repeat(image[None], count, 0), np.repeat(mask[None], count, 0)


@pytest.mark.parametrize("flip", [False, True])
def test_a_training_window_copies_a_square_of_pixels_and_its_mask(flip):
    images, masks = coordinates(64)
    out_images, out_masks = augment.augment_batch(images, masks, ("flip",) if flip else (), tf.constant([5, 6]), crop=20)
    out_images, out_masks = out_images.numpy(), out_masks.numpy()
    assert out_images.shape == (64, 20, 20, 3) and out_masks.shape == (64, 20, 20, 1) and out_masks.dtype == np.uint8
    mirrored, tops, lefts = 0, set(), set()
    for image, mask in zip(out_images, out_masks):
        top, left = int(image[0, :, 0].min()) // 7, int(image[0, :, 1].min()) // 7
        window = (slice(top, top + 20), slice(left, left + 20))
        expected_image, expected_mask = images[0][window].astype(np.float32), masks[0][window]
        if image[0, 0, 1] > image[0, -1, 1]:  # columns run backwards: the window was mirrored
            expected_image, expected_mask = expected_image[:, ::-1], expected_mask[:, ::-1]
            mirrored += 1
        np.testing.assert_array_equal(image, expected_image)  # pixel for pixel: nothing resampled
        np.testing.assert_array_equal(mask, expected_mask)
        tops.add(top)
        lefts.add(left)
    assert (mirrored > 10) if flip else (mirrored == 0)
    assert min(tops) >= 0 and max(tops) <= 12 and len(tops) > 5 and len(lefts) > 5  # windows anywhere inside


def test_windows_reach_every_offset_and_no_further():
    corners = augment.random_windows(tf.constant(4000), tf.constant([40, 30]), 24, tf.constant([1, 2])).numpy()
    assert set(corners[:, 0]) == set(range(17)) and set(corners[:, 1]) == set(range(7))


def test_evaluation_batches_stay_whole_when_training_takes_windows():
    options = data.DataOptions(image_size=32, limit=8)
    whole = next(iter(data.build_dataset("synthetic", "test", options, batch_size=8, crop=16)))
    assert whole[0].shape == (8, 32, 32, 3)
    raw = np.stack([m.numpy() for _, m in data.load_examples("synthetic", "test", options)])
    np.testing.assert_array_equal(whole[1].numpy(), raw)
    training = next(iter(data.build_dataset("synthetic", "train", options, batch_size=8, training=True, crop=16)))
    assert training[0].shape == (8, 16, 16, 3)


def test_a_window_larger_than_the_images_is_refused():
    images, masks = coordinates(2, 16)
    with pytest.raises(tf.errors.InvalidArgumentError, match="a 24 px training window does not fit"):
        augment.augment_batch(images, masks, (), tf.constant([1, 2]), crop=24)
    with pytest.raises(ValueError, match="positive side"):
        augment.augment_batches(tf.data.Dataset.from_tensors((images, masks)), (), seed=1, crop=0)


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
