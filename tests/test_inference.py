"""inference.py: the model sees the same pixels in training and serving; logits go back to the photo's size."""

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

import data
import inference
from models import build_mobilenet_unet, build_unet

# Measured on the 300 Oxford-IIIT Pet photos in ../shared at 64 and 128 px: the largest
# difference between the training pipeline's model input and predict.py's is 1 grey level
# (mean 0.001), from JPEGs large enough to be decoded at reduced scale; 0 for all others.
DRAFT_TOLERANCE = 1


def training_inputs(source, split, size) -> np.ndarray:
    return np.stack([image.numpy() for image, _ in data.load_examples(source, split, data.DataOptions(image_size=size))])


def serving_inputs(paths, size) -> np.ndarray:
    return np.stack([inference.resize_image(inference.read_photo(p, model_size=size)[0], size).numpy() for p in paths])


def test_training_and_serving_give_the_model_the_same_pixels_on_real_photos(oxford_sample):
    paths = [oxford_sample / "images" / f"{line.split()[0]}.jpg"
             for line in (oxford_sample / "annotations" / "test.txt").read_text().splitlines() if line.strip()]
    trained = training_inputs(oxford_sample, "test", 64)
    served = serving_inputs(paths, 64)
    assert trained.shape == served.shape == (len(paths), 64, 64, 3) and served.dtype == np.uint8
    assert np.abs(trained.astype(int) - served.astype(int)).max() <= DRAFT_TOLERANCE


def test_a_draft_decoded_jpeg_stays_within_the_tolerance(tmp_path):
    rng = np.random.default_rng(3)
    y, x = np.mgrid[0:480, 0:640]
    photo = np.stack([(x / 640 * 255), (y / 480 * 255), 128 + 60 * np.sin(x / 9.0)], axis=-1)
    photo = np.clip(photo + rng.normal(0, 8, photo.shape), 0, 255).astype(np.uint8)
    data.write_synthetic_folder(tmp_path, counts={"train": 1, "test": 1}, height=32, width=32)
    path = tmp_path / "test" / "images" / "test_0000.jpg"
    Image.fromarray(photo).save(path, quality=90)
    Image.fromarray(np.ones((480, 640), np.uint8)).save(tmp_path / "test" / "masks" / "test_0000.png")
    reduced, original = inference.read_photo(path, model_size=32)
    assert original == (480, 640) and reduced.shape == (240, 320, 3)  # decoded at half scale: >= 4 x 32
    difference = np.abs(training_inputs(tmp_path, "test", 32).astype(int) - serving_inputs([path], 32).astype(int))
    assert difference.max() <= DRAFT_TOLERANCE
    full = inference.resize_image(inference.read_photo(path)[0], 32).numpy()
    np.testing.assert_array_equal(full, training_inputs(tmp_path, "test", 32)[0])  # no draft: identical


def test_tensorflow_decodes_jpegs_as_pil_does(oxford_sample):
    path = next((oxford_sample / "images").glob("*.jpg"))
    encoded = tf.io.read_file(str(path))
    pil = np.asarray(Image.open(path).convert("RGB"))
    np.testing.assert_array_equal(inference.decode_photo(encoded).numpy(), pil)
    fast = tf.io.decode_jpeg(encoded, channels=3).numpy()  # TensorFlow's default IDCT: why decode_photo exists
    assert np.abs(fast.astype(int) - pil.astype(int)).mean() > 0.1


@pytest.mark.parametrize("mode, options", [("RGB", {"quality": 80}), ("RGB", {"lossless": True}),
                                           ("RGBA", {"quality": 80}),
                                           ("RGBA", {"lossless": True, "exact": True})])
def test_tensorflow_decodes_still_webp_as_pil_does(oxford_sample, tmp_path, mode, options):
    photo = Image.open(next((oxford_sample / "images").glob("*.jpg"))).convert(mode)
    if mode == "RGBA":  # a varying alpha, which the encoder keeps
        photo.putalpha(Image.fromarray((np.arange(photo.width) % 256).astype(np.uint8)[None].repeat(photo.height, 0)))
    path = tmp_path / "photo.webp"
    photo.save(path, **options)
    assert Image.open(path).mode == mode
    decode = tf.function(inference.decode_photo)  # as the tf.data pipeline runs it: a graph, static channels
    assert decode.get_concrete_function(tf.TensorSpec([], tf.string)).output_shapes.as_list() == [None, None, 3]
    decoded = decode(tf.io.read_file(str(path))).numpy()
    pil = np.asarray(Image.open(path).convert("RGB"))
    assert decoded.shape == pil.shape == (photo.height, photo.width, 3) and decoded.dtype == np.uint8
    np.testing.assert_array_equal(decoded, pil)
    if "exact" in options:  # lossless, transparent pixels' colours kept: the alpha is dropped, not blended
        np.testing.assert_array_equal(decoded, np.asarray(photo)[..., :3])


def test_model_input_is_float32_in_zero_one():
    pixels = np.array([[[[0, 51, 255]]]], np.uint8)
    model_input = inference.to_model_input(pixels).numpy()
    assert model_input.dtype == np.float32
    np.testing.assert_allclose(model_input, [[[[0.0, 0.2, 1.0]]]])


@pytest.mark.parametrize("banded", [False, True])
def test_upsampled_argmax_matches_tf_bilinear_resize(banded, monkeypatch):
    if banded:  # the path of photos over WHOLE_IMAGE_PIXELS
        monkeypatch.setattr(inference, "WHOLE_IMAGE_PIXELS", 0)
        monkeypatch.setattr(inference, "BAND_ROWS", 4)
    logits = np.random.default_rng(0).normal(size=(8, 8, 3)).astype(np.float32)
    for height, width in ((37, 53), (8, 8), (5, 300)):
        expected = tf.argmax(tf.image.resize(logits, (height, width), method="bilinear"), axis=-1).numpy()
        np.testing.assert_array_equal(inference.upsampled_argmax(logits, height, width), expected)


def test_keras_predictor_takes_uint8_and_gives_the_models_logits(tmp_path):
    model = build_unet((64, 64, 3), 3, filters=(4, 8, 8, 8, 8, 8))
    model.save(tmp_path / "m.keras")
    predictor = inference.load_predictor(tmp_path / "m.keras")
    assert (predictor.size, predictor.num_classes) == (64, 3)
    images = np.random.default_rng(0).integers(0, 256, (2, 64, 64, 3), dtype=np.uint8)
    np.testing.assert_allclose(predictor(images), model(images.astype(np.float32) / 255.0).numpy(), atol=1e-5)


def test_flip_averaging_mirrors_back_before_averaging(tmp_path):
    def column_logits(images: np.ndarray) -> np.ndarray:
        """Logits that mark each pixel's column, and (class 1) the image's own left half's brightness."""
        batch, height, width, _ = images.shape
        columns = np.broadcast_to(np.arange(width, dtype=np.float32)[None, None, :, None], (batch, height, width, 1))
        left = np.broadcast_to(images[:, :, : width // 2].mean(axis=(1, 2, 3))[:, None, None, None],
                               (batch, height, width, 1)).astype(np.float32)
        return np.concatenate([columns, left], axis=-1)

    plain = inference.Predictor(4, 2, column_logits)
    assert inference.with_test_time_augmentation(plain, "none") is plain
    mirrored = inference.with_test_time_augmentation(plain, "flip")
    assert (mirrored.size, mirrored.num_classes) == (4, 2)
    images = np.zeros((1, 4, 4, 3), np.uint8)
    images[:, :, :2] = 200  # bright left half: the mirror image's left half is dark
    logits = mirrored(images)
    assert logits.shape == (1, 4, 4, 2) and logits.dtype == np.float32
    np.testing.assert_array_equal(logits[..., 0], 1.5)  # column c and, mirrored back, 3 - c
    np.testing.assert_array_equal(logits[..., 1], 100.0)  # (200 + 0) / 2
    with pytest.raises(ValueError, match="unknown test-time augmentation 'rotate': use one of flip, none"):
        inference.with_test_time_augmentation(plain, "rotate")
    # on a real model: the mean of its logits and its mirror image's, mirrored back
    model = build_unet((64, 64, 3), 3, filters=(4, 8, 8, 8, 8, 8))
    images = np.random.default_rng(0).integers(0, 256, (2, 64, 64, 3), dtype=np.uint8)
    x = images.astype(np.float32) / 255.0
    expected = (model(x).numpy() + model(x[:, :, ::-1].copy()).numpy()[:, :, ::-1]) / 2
    flipped = inference.with_test_time_augmentation(inference.keras_predictor(model), "flip")(images)
    np.testing.assert_allclose(flipped, expected, atol=1e-5)
    assert not np.allclose(flipped, model(x).numpy(), atol=1e-3)  # a randomly initialised model is not symmetric


def test_a_model_at_another_size_is_the_builders_model_at_that_size(tmp_path):
    model = build_mobilenet_unet((64, 64, 3), 3, encoder_weights=None)
    rng = np.random.default_rng(0)
    model.set_weights([rng.normal(0, 0.1, w.shape).astype(w.dtype) for w in model.get_weights()])
    built = build_mobilenet_unet((96, 96, 3), 3, encoder_weights=None)  # its pix2pix blocks' inputs 1.5 times as large
    built.set_weights(model.get_weights())
    uint8 = rng.integers(0, 256, (2, 96, 96, 3), dtype=np.uint8)
    expected = built(uint8.astype(np.float32) / 255.0).numpy()
    predictor = inference.keras_predictor(model, 96)
    assert (predictor.size, predictor.num_classes) == (96, 3)
    np.testing.assert_allclose(predictor(uint8), expected, atol=1e-5)
    assert inference.keras_predictor(model).size == 64  # the model itself still serves its own size
    assert model(np.zeros((1, 64, 64, 3), np.float32)).shape == (1, 64, 64, 3)
    model.save(tmp_path / "m.keras")  # and from a file, through load_predictor
    from_file = inference.load_predictor(tmp_path / "m.keras", size=96)
    assert (from_file.size, from_file.num_classes) == (96, 3)
    np.testing.assert_allclose(from_file(uint8), expected, atol=1e-5)


def test_sizes_a_model_cannot_take_are_refused_with_the_reason():
    unet = build_unet((64, 64, 3), 3, filters=(4, 8, 8, 8, 8, 8))  # six halvings: multiples of 64
    assert inference.keras_predictor(unet, 128)(np.zeros((1, 128, 128, 3), np.uint8)).shape == (1, 128, 128, 3)
    with pytest.raises(ValueError, match="cannot take 96 px images: it takes sizes in steps of 64 px"):
        inference.keras_predictor(unet, 96)
    mobilenet = build_mobilenet_unet((64, 64, 3), 3, encoder_weights=None)
    with pytest.raises(ValueError, match="cannot take 80 px images: it takes sizes in steps of 32 px"):
        inference.keras_predictor(mobilenet, 80)
    with pytest.raises(ValueError, match="an image size must be positive, got 0"):
        inference.keras_predictor(mobilenet, 0)


def test_model_files_that_cannot_serve(tmp_path):
    with pytest.raises(FileNotFoundError, match="nothing.keras: no such file"):
        inference.load_predictor(tmp_path / "nothing.keras")
    (tmp_path / "broken.keras").write_bytes(b"not a zip archive")
    with pytest.raises(ValueError, match="broken.keras cannot be loaded as a Keras model"):
        inference.load_predictor(tmp_path / "broken.keras")
    (tmp_path / "broken.tflite").write_bytes(b"not a flatbuffer")
    with pytest.raises(ValueError, match="broken.tflite is not a TFLite model made by export.py"):
        inference.load_predictor(tmp_path / "broken.tflite")


def test_unreadable_files_raise_bad_image_with_the_reason(tmp_path):
    (tmp_path / "empty.jpg").write_bytes(b"")
    (tmp_path / "text.png").write_text("hello")
    with pytest.raises(inference.BadImage, match="the file is empty"):
        inference.read_photo(tmp_path / "empty.jpg")
    with pytest.raises(inference.BadImage, match="not an image file"):
        inference.read_photo(tmp_path / "text.png")
