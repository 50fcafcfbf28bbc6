"""data.py: every source gives the same batches; bad input is named, never a mid-epoch crash."""

import warnings
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

import data


def first_batch(ds):
    return [t.numpy() for t in next(iter(ds))]


def write_pair(folder: Path, stem: str, image: np.ndarray, mask: np.ndarray) -> None:
    (folder / "images").mkdir(parents=True, exist_ok=True)
    (folder / "masks").mkdir(parents=True, exist_ok=True)
    Image.fromarray(image).save(folder / "images" / f"{stem}.png")
    Image.fromarray(mask).save(folder / "masks" / f"{stem}.png")


def random_pair(rng, height=40, width=48, classes=3):
    return (rng.integers(0, 256, (height, width, 3), dtype=np.uint8),
            rng.integers(0, classes, (height, width), dtype=np.uint8))


@pytest.fixture
def own_flat(tmp_path):
    rng = np.random.default_rng(0)
    for i in range(10):
        write_pair(tmp_path, f"photo_{i}", *random_pair(rng))
    return tmp_path


# ---------------------------------------------------------------- shapes and dtypes


def check_batch(batch, batch_size, size, num_classes=3):
    images, masks = batch[0], batch[1]
    assert images.shape == (batch_size, size, size, 3) and images.dtype == np.float32
    assert masks.shape == (batch_size, size, size, 1) and masks.dtype == np.int32
    assert 0.0 <= images.min() and images.max() <= 1.0
    assert set(np.unique(masks)) <= set(range(num_classes))


def test_synthetic_batches_have_documented_shapes_and_dtypes():
    ds = data.build_dataset("synthetic", "train", data.DataOptions(image_size=32, limit=8), batch_size=4)
    batches = [[t.numpy() for t in b] for b in ds]
    assert len(batches) == 2
    for batch in batches:
        check_batch(batch, 4, 32)
    assert set(np.unique(np.concatenate([b[1] for b in batches]))) == {0, 1, 2}


def test_synthetic_split_sizes_and_determinism():
    assert data.SYNTHETIC_SIZES == {"train": 512, "test": 128}
    a, _ = data.synthetic_example(3, "train", 48, 64)
    b, mask = data.synthetic_example(3, "train", 48, 64)
    c, _ = data.synthetic_example(3, "test", 48, 64)
    assert a.shape == (48, 64, 3) and mask.shape == (48, 64)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    n = sum(int(b[0].shape[0]) for b in data.build_dataset("synthetic", "test", data.DataOptions(image_size=32), batch_size=64))
    assert n == 128


def test_oxford_archive_folder_reads_real_trimaps(oxford_sample):
    ds = data.build_dataset(oxford_sample, "train", data.DataOptions(image_size=64), batch_size=6)
    batches = [[t.numpy() for t in b] for b in ds]
    assert sum(len(b[0]) for b in batches) == 18  # trainval.txt of the sample lists 18
    check_batch(batches[0], 6, 64)
    # trimaps 1, 2, 3 become 0, 1, 2 and nearest resizing invents no other value
    assert set(np.unique(np.concatenate([b[1] for b in batches]))) == {0, 1, 2}
    test_count = sum(int(b[0].shape[0]) for b in data.build_dataset(oxford_sample, "test", data.DataOptions(image_size=64)))
    assert test_count == 8


def test_mask_resize_is_nearest_not_bilinear():
    mask = np.zeros((4, 4, 1), np.uint8)
    mask[:, 2:] = 2  # a sharp 0|2 edge: bilinear would put 1s between them
    resized = data.resize_mask(mask, 7).numpy()
    assert resized.shape == (7, 7, 1)
    assert set(np.unique(resized)) == {0, 2}


@pytest.mark.parametrize("height, width, size", [(375, 500, 128), (33, 47, 64), (700, 475, 96), (10, 13, 32)])
def test_folder_masks_are_resized_exactly_as_tfds_masks(height, width, size):
    mask = np.random.default_rng(height).integers(0, 4, (height, width), dtype=np.uint8)
    np.testing.assert_array_equal(data.resize_mask_array(mask, size), data.resize_mask(mask[..., None], size).numpy()[..., 0])


def test_own_split_folders(tmp_path):
    rng = np.random.default_rng(1)
    for split, count in (("train", 5), ("test", 3)):
        for i in range(count):
            write_pair(tmp_path / split, f"{split}{i}", *random_pair(rng, classes=5))
    ds = data.build_dataset(tmp_path, "test", data.DataOptions(image_size=32, num_classes=5), batch_size=8)
    batch = first_batch(ds)
    check_batch(batch, 3, 32, num_classes=5)


def test_flat_folder_holds_out_a_deterministic_fraction(own_flat):
    def stems(split):
        return [p.image.stem for p in data._own_pairs(own_flat, split, 0.3)]

    train, test = stems("train"), stems("test")
    assert len(test) == 3 and len(train) == 7
    assert not set(train) & set(test)
    assert stems("test") == test
    batch = first_batch(data.build_dataset(own_flat, "test", data.DataOptions(image_size=32, holdout_fraction=0.3), batch_size=8))
    check_batch(batch, 3, 32)


def test_mask_offset_and_num_classes_are_parameters(tmp_path):
    rng = np.random.default_rng(2)
    image, _ = random_pair(rng)
    mask = np.full((40, 48), 5, np.uint8)
    mask[:, 24:] = 6
    for i in range(2):
        write_pair(tmp_path, f"p{i}", image, mask)
    ds = data.build_dataset(tmp_path, "train", data.DataOptions(image_size=32, num_classes=2, mask_offset=5, holdout_fraction=0.5), batch_size=4)
    masks = first_batch(ds)[1]
    assert set(np.unique(masks)) == {0, 1}


# ---------------------------------------------------------------- TFDS


def realistic_pets(builder, split, decoders=None, read_config=None, shuffle_files=False):
    """Examples of the real dataset's form: one size for image and mask, trimap values 1..3, and
    the image still JPEG-encoded, as TFDS gives it with the SkipDecoding that data.py asks for."""
    import tensorflow_datasets as tfds

    assert isinstance(decoders["image"], tfds.decode.SkipDecoding)
    rng = np.random.default_rng(0)
    examples = []
    for height, width in ((50, 70), (64, 40), (33, 33)):
        mask = np.full((height, width, 1), 2, np.uint8)
        mask[height // 4: 3 * height // 4, width // 4: 3 * width // 4] = 1
        mask[height // 4, width // 4: 3 * width // 4] = 3
        image = tf.io.encode_jpeg(rng.integers(0, 256, (height, width, 3), dtype=np.uint8)).numpy()
        examples.append({"image": image, "segmentation_mask": mask})
    return tf.data.Dataset.from_generator(
        lambda: iter(examples),
        output_signature={"image": tf.TensorSpec((), tf.string),
                          "segmentation_mask": tf.TensorSpec((None, None, 1), tf.uint8)})


def test_tfds_source_through_mock_data(monkeypatch):
    import tensorflow_datasets as tfds

    monkeypatch.setattr(data, "dataset_server_reachable", lambda timeout=10.0: True)
    with tfds.testing.mock_data(as_dataset_fn=realistic_pets):
        batch = first_batch(data.build_dataset("oxford_iiit_pet", "train", data.DataOptions(image_size=32), batch_size=3))
    check_batch(batch, 3, 32)
    assert set(np.unique(batch[1])) == {0, 1, 2}  # 1, 2, 3 became 0, 1, 2


def test_tfds_without_network_says_how_to_train_offline(monkeypatch, tmp_path):
    import tensorflow_datasets as tfds

    monkeypatch.setattr(data, "dataset_server_reachable", lambda timeout=10.0: False)
    with tfds.testing.mock_data(as_dataset_fn=realistic_pets):
        with pytest.raises(ConnectionError, match=r"cannot download oxford_iiit_pet.*--data DIR"):
            data.build_dataset("oxford_iiit_pet", "train", data.DataOptions(image_size=32))


def test_tfds_download_failure_becomes_a_user_error(monkeypatch):
    import tensorflow_datasets as tfds

    def fail(self, *args, **kwargs):
        raise ConnectionError("connection reset")

    monkeypatch.setattr(data, "dataset_server_reachable", lambda timeout=10.0: True)
    with tfds.testing.mock_data(as_dataset_fn=realistic_pets):
        monkeypatch.setattr(tfds.core.DatasetBuilder, "download_and_prepare", fail)
        with pytest.raises(ConnectionError, match=r"downloading oxford_iiit_pet failed \(connection reset\).*--data DIR"):
            data.build_dataset("oxford_iiit_pet", "test", data.DataOptions(image_size=32))


# ---------------------------------------------------------------- augmentation and weights


def asymmetric_example():
    image = np.zeros((32, 32, 3), np.uint8)
    image[:, :8, 0] = 255  # a red band on the left edge only
    mask = np.ones((32, 32, 1), np.uint8)
    mask[:, :8] = 0
    return image, mask


def test_flips_keep_image_and_mask_aligned_and_differ_between_epochs(monkeypatch):
    image, mask = asymmetric_example()
    images = np.repeat(image[None], 16, axis=0)
    masks = np.repeat(mask[None], 16, axis=0)
    monkeypatch.setattr(data, "_synthetic_split",
                        lambda split, size, limit: data.Split(tf.data.Dataset.from_tensor_slices((images, masks)), 16))
    ds = data.build_dataset("synthetic", "train", data.DataOptions(image_size=32), batch_size=16, training=True, seed=7, class_weights=[3.0, 0.5, 1.0],
                            augmentations=("flip",))
    epochs = []
    for _ in range(3):
        x, y, w = first_batch(ds)
        red = x[..., 0] > 0.5
        np.testing.assert_array_equal(red, y[..., 0] == 0)  # pixel by pixel
        np.testing.assert_array_equal(w[..., 0], np.where(y[..., 0] == 0, 3.0, 0.5))
        flipped = red[:, 0, -1]  # the band moved to the right edge
        assert np.all(flipped == ~red[:, 0, 0])
        epochs.append(flipped)
    assert 0 < sum(e.sum() for e in epochs) < 48  # some flipped, not all
    assert any(not np.array_equal(epochs[0], e) for e in epochs[1:])  # new draws each epoch
    again = data.build_dataset("synthetic", "train", data.DataOptions(image_size=32), batch_size=16, training=True, seed=7,
                               augmentations=("flip",))
    np.testing.assert_array_equal(first_batch(again)[0][:, 0, -1, 0] > 0.5, epochs[0])  # same seed, same flips


def test_evaluation_batches_are_not_flipped():
    ds = data.build_dataset("synthetic", "test", data.DataOptions(image_size=32, limit=4), batch_size=4)
    expected = np.stack([data.synthetic_example(i, "test", 32, 32)[1] for i in range(4)])
    np.testing.assert_array_equal(first_batch(ds)[1][..., 0], expected)


def test_sample_weights_equal_class_weights_at_each_pixel():
    images, masks, weights = first_batch(
        data.build_dataset("synthetic", "train", data.DataOptions(image_size=32, limit=4), batch_size=4, class_weights="2,2,1"))
    assert weights.shape == (4, 32, 32, 1) and weights.dtype == np.float32
    np.testing.assert_array_equal(weights, np.array([2.0, 2.0, 1.0], np.float32)[masks])


def test_outline_weights_lie_within_two_pixels_of_another_class():
    mask = np.zeros((1, 6, 9, 1), np.int32)
    mask[0, :, 4:] = 1  # a change of class between columns 3 and 4
    mask[0, 0, 0] = data.IGNORED
    weights = data.pixel_weights(mask, outline_weight=3.0).numpy()[0, ..., 0]
    assert weights.shape == (6, 9) and weights.dtype == np.float32
    expected = np.ones((6, 9), np.float32)
    expected[:, 2:6] = 3.0  # columns 2, 3 | 4, 5: two pixels either side; the photo's edges are no outline
    expected[:3, :3] = 3.0  # near the ignored pixel too: its edge is an outline
    expected[0, 0] = 0.0  # ignored pixels count nowhere
    np.testing.assert_array_equal(weights, expected)
    with_classes = data.pixel_weights(mask, [2.0, 0.5], outline_weight=3.0).numpy()[0, ..., 0]
    np.testing.assert_array_equal(with_classes, expected * np.where(mask[0, ..., 0] == 0, 2.0, 0.5))
    np.testing.assert_array_equal(data.pixel_weights(mask).numpy()[0, ..., 0], np.where(expected == 0, 0.0, 1.0))


def test_batches_carry_weights_only_when_some_pixels_count_differently():
    source, options = "synthetic", data.DataOptions(image_size=32, limit=4)
    assert len(first_batch(data.build_dataset(source, "test", options, batch_size=4))) == 2
    assert len(first_batch(data.build_dataset(source, "test", options, batch_size=4, outline_weight=1.0))) == 2
    images, masks, weights = first_batch(data.build_dataset(source, "test", options, batch_size=4, outline_weight=4.0))
    assert set(np.unique(weights)) == {1.0, 4.0}
    np.testing.assert_array_equal(weights, data.pixel_weights(masks, outline_weight=4.0).numpy())


def test_balanced_weights_are_inverse_class_frequency():
    masks = np.concatenate([m.numpy() for _, m in data.load_examples("synthetic", "train", data.DataOptions(image_size=32, limit=16))])
    counts = np.bincount(masks.ravel(), minlength=3)
    expected = counts.sum() / (3 * counts)
    got = data.balanced_class_weights("synthetic", data.DataOptions(image_size=32, limit=16))
    np.testing.assert_allclose(got, expected, rtol=1e-6)


def test_keras_fit_accepts_the_sample_weight_map():
    ds = data.build_dataset("synthetic", "train", data.DataOptions(image_size=32, limit=8), batch_size=4, class_weights=[1.0, 0.0, 0.0])
    inputs = keras.Input((32, 32, 3))
    model = keras.Model(inputs, keras.layers.Conv2D(3, 1)(inputs))
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    history = model.fit(ds, epochs=1, verbose=0, shuffle=False)
    assert np.isfinite(history.history["loss"][0])
    # weight 0 on classes 1 and 2: the loss is class 0's cross-entropy over all pixels
    x, y, w = first_batch(ds)
    ce = keras.losses.SparseCategoricalCrossentropy(from_logits=True, reduction=None)(y, model(x)).numpy()
    assert model.evaluate(ds.take(1), verbose=0) == pytest.approx(float((ce * w[..., 0]).mean()), rel=1e-4)


# ---------------------------------------------------------------- bad input


def test_unknown_source_and_layout(tmp_path):
    with pytest.raises(FileNotFoundError, match="neither 'oxford_iiit_pet', 'synthetic' nor an existing folder"):
        data.build_dataset(tmp_path / "nowhere", "train")
    (tmp_path / "pictures").mkdir()
    with pytest.raises(ValueError, match=f"{tmp_path} matches no known data layout"):
        data.build_dataset(tmp_path, "train")


def test_unknown_split_and_bad_class_weights(own_flat):
    with pytest.raises(ValueError, match="unknown split 'validation'"):
        data.build_dataset(own_flat, "validation")
    with pytest.raises(ValueError, match="give 2 values for 3 classes"):
        data.build_dataset(own_flat, "train", class_weights=[1.0, 2.0])
    with pytest.raises(ValueError, match="must be 'balanced' or numbers"):
        data.build_dataset(own_flat, "train", class_weights="heavy")


def test_image_without_mask_and_mask_without_image_are_skipped_by_name(own_flat):
    rng = np.random.default_rng(3)
    image, mask = random_pair(rng)
    Image.fromarray(image).save(own_flat / "images" / "lonely.png")
    Image.fromarray(mask).save(own_flat / "masks" / "orphan.png")
    with pytest.warns(data.DataWarning) as caught:
        pairs = data._match_by_stem(own_flat / "images", own_flat / "masks")
    messages = [str(w.message) for w in caught]
    assert any("lonely.png: it has no mask" in m for m in messages)
    assert any("orphan.png: it has no image" in m for m in messages)
    assert len(pairs) == 10


def test_a_mask_saved_as_jpeg_is_named(own_flat):
    image, mask = random_pair(np.random.default_rng(3))
    Image.fromarray(image).save(own_flat / "images" / "lossy.jpg")
    Image.fromarray(mask).save(own_flat / "masks" / "lossy.jpg")
    with pytest.warns(data.DataWarning) as caught:
        pairs = data._match_by_stem(own_flat / "images", own_flat / "masks")
    assert [str(w.message) for w in caught] == [
        f"skipping {own_flat / 'images' / 'lossy.jpg'}: it has its mask as lossy.jpg, not as a PNG: masks must be "
        "PNGs (a JPEG's compression changes the class values along every outline)"]
    assert len(pairs) == 10


def test_mask_values_outside_the_classes_are_refused(own_flat):
    image, mask = random_pair(np.random.default_rng(4))
    mask[0, 0] = 7
    write_pair(own_flat, "photo_3", image, mask)  # replaces a pair with a bad label
    with pytest.raises(ValueError, match=r"mask .*photo_3.png holds values \[7\] outside the 3 classes"):
        data.build_dataset(own_flat, "train", data.DataOptions(holdout_fraction=0.5))
        data.build_dataset(own_flat, "test", data.DataOptions(holdout_fraction=0.5))


def test_image_and_mask_of_different_sizes_are_refused(tmp_path):
    rng = np.random.default_rng(5)
    image, _ = random_pair(rng, 40, 48)
    _, mask = random_pair(rng, 30, 48)
    write_pair(tmp_path / "train", "a", image, mask)
    with pytest.raises(ValueError, match=r"mask .*a.png is 48x30 but image .*a.png is 48x40"):
        data.build_dataset(tmp_path, "train")


def test_colour_masks_are_refused(tmp_path):
    image, _ = random_pair(np.random.default_rng(6))
    write_pair(tmp_path / "train", "a", image, np.zeros((40, 48, 3), np.uint8))
    with pytest.raises(ValueError, match="is an image of mode RGB; masks must be 8-bit single-channel"):
        data.build_dataset(tmp_path, "train")


def test_unreadable_images_are_skipped_with_a_warning(tmp_path):
    rng = np.random.default_rng(7)
    write_pair(tmp_path / "train", "good", *random_pair(rng))
    _, mask = random_pair(rng)
    Image.fromarray(mask).save(tmp_path / "train" / "masks" / "text.png")
    (tmp_path / "train" / "images" / "text.jpg").write_text("not an image")
    Image.fromarray(mask).save(tmp_path / "train" / "masks" / "empty.png")
    (tmp_path / "train" / "images" / "empty.jpg").write_bytes(b"")
    with pytest.warns(data.DataWarning) as caught:
        ds = data.build_dataset(tmp_path, "train", data.DataOptions(image_size=32), batch_size=8)
    assert {Path(str(w.message).split(":")[0].removeprefix("skipping ")).name for w in caught} == {"text.jpg", "empty.jpg"}
    assert first_batch(ds)[0].shape == (1, 32, 32, 3)


def test_webp_photos_train_as_predict_reads_them_and_animated_ones_are_skipped(tmp_path):
    from inference import read_photo, resize_image

    rng = np.random.default_rng(9)
    train = tmp_path / "train"
    write_pair(train, "a_png", *random_pair(rng))
    image, mask = random_pair(rng)
    Image.fromarray(image).save(train / "images" / "b_lossy.webp", quality=80)
    Image.fromarray(mask).save(train / "masks" / "b_lossy.png")
    alpha = np.dstack([image, rng.integers(0, 256, image.shape[:2], dtype=np.uint8)])
    Image.fromarray(alpha, "RGBA").save(train / "images" / "c_alpha.WEBP", lossless=True, exact=True)
    Image.fromarray(mask).save(train / "masks" / "c_alpha.png")
    frames = [Image.fromarray(random_pair(rng)[0]) for _ in range(3)]
    frames[0].save(train / "images" / "d_animated.webp", save_all=True, append_images=frames[1:])
    Image.fromarray(mask).save(train / "masks" / "d_animated.png")
    with pytest.warns(data.DataWarning) as caught:
        split = data.load_split(tmp_path, "train", data.DataOptions(image_size=32))
    assert [str(w.message) for w in caught] == [
        f"skipping {train / 'images' / 'd_animated.webp'}: it is an animated WebP of 3 frames; save the frame its "
        "mask is drawn on as a still image"]
    assert split.count == 3
    examples = list(split.examples.as_numpy_iterator())
    for stem, (image, label) in zip(("b_lossy.webp", "c_alpha.WEBP"), examples[1:]):
        photo, size = read_photo(train / "images" / stem)
        assert size == (40, 48) and image.shape == (32, 32, 3) and image.dtype == np.uint8
        np.testing.assert_array_equal(image, resize_image(photo, 32).numpy())  # the pixels predict.py uses
        np.testing.assert_array_equal(label[..., 0], data.resize_mask_array(mask, 32))
    lossless = np.asarray(Image.open(train / "images" / "c_alpha.WEBP").convert("RGB"))
    np.testing.assert_array_equal(lossless, alpha[..., :3])  # lossless and exact: the alpha dropped, not blended


def test_truncated_image_is_dropped_not_a_crash_mid_epoch(tmp_path):
    rng = np.random.default_rng(8)
    for stem in ("a", "b"):
        write_pair(tmp_path / "train", stem, *random_pair(rng))
    image, mask = random_pair(rng)
    Image.fromarray(image).save(tmp_path / "train" / "images" / "cut.jpg", quality=95)
    Image.fromarray(mask).save(tmp_path / "train" / "masks" / "cut.png")
    path = tmp_path / "train" / "images" / "cut.jpg"
    path.write_bytes(path.read_bytes()[:-600])  # the header survives, the end of the data does not
    ds = data.build_dataset(tmp_path, "train", data.DataOptions(image_size=32), batch_size=8)
    assert first_batch(ds)[0].shape[0] == 2


def test_empty_split_is_an_error(tmp_path):
    (tmp_path / "train" / "images").mkdir(parents=True)
    (tmp_path / "train" / "masks").mkdir(parents=True)
    with pytest.raises(ValueError, match=r"train \(train split\) holds no usable image and mask pairs|holds no usable"):
        data.build_dataset(tmp_path, "train")
    with pytest.raises(FileNotFoundError, match="needs images/ and masks/ sub-folders for the test split"):
        data.build_dataset(tmp_path, "test")


def test_oxford_folder_without_split_list(tmp_path):
    (tmp_path / "images").mkdir()
    (tmp_path / "annotations" / "trimaps").mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match=r"trainval.txt is missing"):
        data.build_dataset(tmp_path, "train")


def test_bad_sizes_are_refused():
    with pytest.raises(ValueError, match="image_size must be a positive whole number"):
        data.build_dataset("synthetic", "train", data.DataOptions(image_size=0))
    with pytest.raises(ValueError, match="batch_size must be a positive whole number"):
        data.build_dataset("synthetic", "train", batch_size=-1)


def test_write_synthetic_folder_round_trips_through_the_loader(tmp_path):
    data.write_synthetic_folder(tmp_path, counts={"train": 3, "test": 2}, height=60, width=80)
    assert Image.open(tmp_path / "train" / "images" / "train_0000.jpg").size == (80, 60)
    with warnings.catch_warnings():
        warnings.simplefilter("error", data.DataWarning)
        batch = first_batch(data.build_dataset(tmp_path, "train", data.DataOptions(image_size=32), batch_size=3))
    check_batch(batch, 3, 32)


# ---------------------------------------------------------------- caches


@pytest.mark.parametrize("cache", ["memory", "disk", "none"])
def test_every_cache_gives_the_same_batches(own_flat, tmp_path, cache):
    options = data.DataOptions(image_size=32, cache=cache, cache_dir=str(tmp_path / "cache") if cache == "disk" else None)
    if cache == "disk":
        (tmp_path / "cache").mkdir()
    reference = first_batch(data.build_dataset(own_flat, "train", data.DataOptions(image_size=32), batch_size=8))
    ds = data.build_dataset(own_flat, "train", options, batch_size=8)
    for _ in range(2):  # the second pass reads the cache
        for got, expected in zip(first_batch(ds), reference):
            np.testing.assert_array_equal(got, expected)
    files = sorted(p.name for p in (tmp_path / "cache").iterdir()) if cache == "disk" else []
    if cache == "disk":
        key = Path(data.load_split(own_flat, "train", options).cache_file).name
        assert key.startswith("train-")
        assert f"{key}.index" in files and any(name.startswith(f"{key}.data") for name in files)


def test_disk_cache_names_change_with_the_settings(own_flat):
    small, large = data.DataOptions(image_size=32), data.DataOptions(image_size=64)
    assert small.cache_key(own_flat, "train") != large.cache_key(own_flat, "train")
    assert small.cache_key(own_flat, "train") != small.cache_key(own_flat, "test")
    assert small.cache_key(own_flat, "train") == data.DataOptions(image_size=32, cache="none").cache_key(own_flat, "train")


def test_a_shared_disk_cache_is_not_reused_once_the_folder_changes(own_flat, tmp_path_factory):
    """--cache-dir shared between runs: a photo replaced, or a pair added, is read anew, not served from the cache."""
    cached = data.DataOptions(image_size=32, cache="disk", cache_dir=str(tmp_path_factory.mktemp("cache")))

    def assert_same_batches(got, expected):
        assert len(got) == len(expected)
        for got_batch, expected_batch in zip(got, expected):
            for a, b in zip(got_batch, expected_batch, strict=True):
                np.testing.assert_array_equal(a, b)

    def both_splits(options):
        """Every batch of both splits, each read twice (the second pass reads the cache)."""
        read = {}
        for split in ("train", "test"):
            ds = data.build_dataset(own_flat, split, options, batch_size=4)
            passes = [[[t.numpy() for t in batch] for batch in ds] for _ in range(2)]
            assert_same_batches(*passes)
            read[split] = passes[1]
        return read

    def cache_names():
        return {split: data.load_split(own_flat, split, cached).cache_file for split in ("train", "test")}

    both_splits(cached)
    names_before = cache_names()
    Image.new("RGB", (48, 40), (255, 255, 255)).save(own_flat / "images" / "photo_3.png")  # a photo replaced
    after = both_splits(cached)
    for split in ("train", "test"):
        assert_same_batches(after[split], both_splits(data.DataOptions(image_size=32))[split])
    white = [images for batches in after.values() for images, _ in batches if (images == 1.0).all(axis=(1, 2, 3)).any()]
    assert len(white) == 1
    names_replaced = cache_names()
    assert sum(names_replaced[split] != names_before[split] for split in names_before) == 1  # the other split's stays

    write_pair(own_flat, "photo_zz", *random_pair(np.random.default_rng(1)))  # a pair added
    grown = both_splits(cached)
    assert sum(images.shape[0] for batches in grown.values() for images, _ in batches) == 11
    assert cache_names() != names_replaced


def test_a_disk_cache_needs_a_folder():
    with pytest.raises(ValueError, match="a disk cache needs a cache_dir"):
        data.DataOptions(cache="disk")


def test_training_and_evaluation_batches_run_without_the_autotuning_thread():
    """Keras deletes an iterator every epoch; with autotuning on that waited seconds (data.without_autotuning)."""
    split = data.load_split("synthetic", "train", data.DataOptions(image_size=32, limit=8))
    for training in (True, False):
        ds = data.batches(split, batch_size=4, training=training, seed=0)
        assert ds.options().autotune.enabled is False
        batches = [first for first, *_ in ds]
        assert [b.shape[0] for b in batches] == [4, 4]


def test_a_spread_subset_takes_every_kth_example_from_the_whole_split(tmp_path):
    """Per-epoch validation (--val-examples) scores the same examples each epoch, from all over the split."""
    options = data.DataOptions(image_size=32, limit=10)
    split = data.load_split("synthetic", "test", options)
    every = [mask.numpy() for _, mask in split.examples]
    subset = data.spread_subset(split, 4)  # every 3rd of 10: examples 0, 3, 6, 9
    assert subset.count == 4
    for got, expected in zip([mask.numpy() for _, mask in subset.examples], [every[i] for i in (0, 3, 6, 9)],
                             strict=True):
        np.testing.assert_array_equal(got, expected)
    assert data.spread_subset(split, 10) is split and data.spread_subset(split, 50) is split
    on_disk = data.load_split("synthetic", "test", data.DataOptions(image_size=32, limit=10, cache="disk",
                                                                    cache_dir=str(tmp_path)))
    assert data.spread_subset(on_disk, 4).cache_file == f"{on_disk.cache_file}-every3"  # not the whole split's cache
    with pytest.raises(ValueError, match="count"):
        data.spread_subset(split, 0)


def test_a_spread_subset_decodes_only_the_examples_it_takes():
    decoded = []

    def decode_one(index: np.ndarray) -> np.ndarray:
        decoded.append(int(index))
        return index * 100

    split = data.Split(tf.data.Dataset.range(10), 10,
                       decode=lambda ds: ds.map(lambda i: tf.numpy_function(decode_one, [i], tf.int64)))
    subset = data.spread_subset(split, 4)
    assert [int(x) for x in subset.examples] == [0, 300, 600, 900]
    assert decoded == [0, 3, 6, 9]


def test_repeat_makes_an_epoch_of_several_shuffled_passes():
    split = data.load_split("synthetic", "train", data.DataOptions(image_size=32, limit=6))
    originals = [mask.numpy().tobytes() for _, mask in split.examples]
    batches = list(data.batches(split, batch_size=4, training=True, seed=0, augmentations=(), repeat=2))
    assert [len(images) for images, _ in batches] == [4, 4, 4]
    seen = [mask.astype(np.uint8).tobytes() for _, masks in batches for mask in masks.numpy()]
    assert sorted(seen) == sorted(originals * 2)  # every example twice, none more
    assert seen[:6] != originals  # shuffled across both passes, not the split in order
    # evaluation batches ignore it: one pass, in order
    assert sum(len(images) for images, _ in data.batches(split, batch_size=4, repeat=2)) == 6
    with pytest.raises(ValueError, match="repeat"):
        data.batches(split, batch_size=4, training=True, repeat=0)


# ---------------------------------------------------------------- EXIF orientation


def test_photos_with_an_exif_orientation_train_upright_as_predict_sees_them(tmp_path):
    from inference import read_photo, resize_image

    train = tmp_path / "train"
    stored = np.zeros((24, 40, 3), np.uint8)  # stored landscape; the bright corner shows each turn
    stored[:8, :12] = 250
    stored[..., 1] = (np.arange(40, dtype=np.uint8) * 6)[None, :]
    for orientation in range(1, 9):
        exif = Image.Exif()
        exif[0x0112] = orientation
        path = train / "images" / f"turn_{orientation}.jpg"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(stored).save(path, exif=exif, quality=95)
        upright, (height, width) = read_photo(path)
        assert upright.shape[:2] == ((40, 24) if orientation >= 5 else (24, 40)) == (height, width)
        (train / "masks").mkdir(exist_ok=True)
        Image.fromarray((upright[..., 0] > 128).astype(np.uint8)).save(train / "masks" / f"turn_{orientation}.png")
    write_pair(tmp_path / "test", "plain", stored, np.zeros((24, 40), np.uint8))
    options = data.DataOptions(image_size=32, num_classes=2)
    split = data.load_split(tmp_path, "train", options)
    assert split.count == 8
    for orientation, (image, mask) in enumerate(split.examples.as_numpy_iterator(), start=1):
        upright, _ = read_photo(train / "images" / f"turn_{orientation}.jpg")
        np.testing.assert_array_equal(image, resize_image(upright, 32).numpy())  # the very pixels predict.py uses
        # the mask's class 1 lies under the bright corner in the training example too
        red = image[..., 0].astype(float)
        assert red[mask[..., 0] == 1].mean() > 200 and red[mask[..., 0] == 0].mean() < 40
    # a mask drawn on the photo as stored, not as shown, is refused with the reason
    Image.fromarray(np.zeros((24, 40), np.uint8)).save(train / "masks" / "turn_6.png")
    with pytest.raises(ValueError, match=r"turn_6.png is 40x24 but image .*turn_6.jpg is 24x40 as shown \(its EXIF "
                                         r"orientation turns the stored 40x24 a quarter turn\)"):
        data.load_split(tmp_path, "train", options)
