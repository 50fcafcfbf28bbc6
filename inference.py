"""From a photo to a mask, the one way: reading, preprocessing, running a model, resizing back.

Training (data.py), predict.py, export.py and evaluate.py all use these functions, so a model
sees the same pixels when it serves as when it trained:
  * `read_photo`: any image file as upright 8-bit RGB (EXIF rotation applied; grayscale,
    RGBA, palette, CMYK and 16-bit converted), large JPEGs decoded at a reduced scale;
  * `decode_photo`: the same pixels from TensorFlow, for the tf.data training pipeline;
  * `resize_image`: bilinear, antialiased when shrinking, to the model's square input;
  * `to_model_input`: uint8 -> float32 in [0, 1], the input contract of every saved model;
  * `load_predictor`: a `.keras` model, or a `.tflite` or SavedModel export, as a function from
    uint8 batches to logits;
  * `with_test_time_augmentation`: the same function averaging each image's and its mirror's;
  * `upsampled_argmax`: logits resized bilinearly to the photo's own size, then the argmax.

Errors are plain exceptions (FileNotFoundError, ValueError, `BadImage`); the scripts turn
them into messages.
"""

from __future__ import annotations

import functools
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import keras
import numpy as np
import tensorflow as tf
from PIL import Image, ImageOps, UnidentifiedImageError

import losses  # noqa: F401  (registers the custom losses a saved model may name)
from errors import first_line
from models import sizes

Image.MAX_IMAGE_PIXELS = 400_000_000  # large camera and scanner images are legitimate input
WHOLE_IMAGE_PIXELS = 4_000_000  # up to this size, logits are resized in one TensorFlow op
BAND_ROWS = 256  # beyond it, rows of full-resolution logits held at once: bounds memory
DRAFT_MARGIN = 4  # JPEGs are decoded at reduced scale down to this many times the model's size
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp")


class BadImage(ValueError):
    """A file that cannot be read as an image; the message says why, in a few words."""


# --------------------------------------------------------------------------- preprocessing


def to_model_input(images: tf.Tensor | np.ndarray) -> tf.Tensor:
    """uint8 pixels -> float32 in [0, 1]: what every model of this project takes."""
    return tf.cast(images, tf.float32) / 255.0


def resize_image(image: tf.Tensor | np.ndarray, size: int) -> tf.Tensor:
    """Bilinear resize (antialiased when shrinking) of RGB images to uint8 (..., S, S, 3)."""
    resized = tf.image.resize(image, [size, size], method="bilinear", antialias=True)
    return tf.cast(tf.clip_by_value(tf.round(resized), 0, 255), tf.uint8)


# --------------------------------------------------------------------------- reading photos


def decode_photo(encoded: tf.Tensor) -> tf.Tensor:
    """Encoded JPEG, PNG, GIF, BMP or still WebP bytes -> uint8 RGB (H, W, 3), pixel for pixel
    as PIL reads them.

    TensorFlow's JPEG decoder defaults to libjpeg's fast integer IDCT; PIL, and so
    `read_photo`, uses the accurate one. On the Oxford-IIIT Pet photos the two differ by 1.1
    grey levels on average, so training decodes JPEGs the accurate way too. TensorFlow's
    WebP decoder refuses to drop a WebP's alpha channel itself (`channels` must match the
    file), so a WebP is decoded as stored and its alpha dropped here, as PIL's RGB does.
    """
    def webp() -> tf.Tensor:
        return tf.ensure_shape(tf.io.decode_webp(encoded)[0, :, :, :3], [None, None, 3])

    return tf.case(
        [(tf.io.is_jpeg(encoded), lambda: tf.io.decode_jpeg(encoded, channels=3, dct_method="INTEGER_ACCURATE")),
         (is_webp(encoded), webp)],
        default=lambda: tf.io.decode_image(encoded, channels=3, expand_animations=False),
    )


def is_webp(encoded: tf.Tensor) -> tf.Tensor:
    """Whether encoded bytes are a WebP file: a RIFF container whose form type is WEBP."""
    return tf.logical_and(tf.equal(tf.strings.substr(encoded, 0, 4), b"RIFF"),
                          tf.equal(tf.strings.substr(encoded, 8, 4), b"WEBP"))


EXIF_ORIENTATION = 0x0112
QUARTER_TURNS = (5, 6, 7, 8)  # EXIF orientations that swap width and height


def exif_orientation(image: Image.Image) -> int:
    """The EXIF orientation of an opened image: 1 (as stored) to 8; 1 when absent or invalid."""
    value = image.getexif().get(EXIF_ORIENTATION, 1)
    return value if value in range(1, 9) else 1


def shown_size(stored: tuple[int, int], orientation: int) -> tuple[int, int]:
    """An image's (width, height) as a person sees it: swapped by a quarter-turn orientation."""
    return stored[::-1] if orientation in QUARTER_TURNS else stored


def to_upright(image: tf.Tensor, orientation: tf.Tensor | int) -> tf.Tensor:
    """An (H, W, C) image as stored, turned upright as its EXIF orientation says.

    PIL's ImageOps.exif_transpose (which read_photo applies) in TensorFlow ops, so that the
    tf.data pipeline trains on the photo a person sees, which is the one its mask is drawn on
    and the one predict.py segments; TensorFlow's decoders ignore EXIF.
    """
    turns = [
        lambda: image,  # 1: as stored
        lambda: tf.image.flip_left_right(image),  # 2
        lambda: tf.image.rot90(image, 2),  # 3
        lambda: tf.image.flip_up_down(image),  # 4
        lambda: tf.image.transpose(image),  # 5
        lambda: tf.image.rot90(image, 3),  # 6: a quarter turn clockwise
        lambda: tf.image.rot90(tf.image.transpose(image), 2),  # 7
        lambda: tf.image.rot90(image, 1),  # 8: a quarter turn anticlockwise
    ]
    return tf.switch_case(tf.cast(orientation, tf.int32) - 1, turns)


def read_photo(path: str | os.PathLike, model_size: int | None = None) -> tuple[np.ndarray, tuple[int, int]]:
    """(the photo as upright uint8 RGB, its (height, width) as a person sees it).

    With `model_size`, a JPEG is decoded at the smallest of its 1/2, 1/4 or 1/8 scales
    (libjpeg's DCT scaling) that keeps both sides at least DRAFT_MARGIN times the model's
    size: a 12-megapixel photo for a 128-pixel model then costs a fraction of the time and
    memory. libjpeg's reduced scales are a filter of their own: at twice the model's size the
    model input differed from a full decode's by up to 32 grey levels (mean 0.5) on the
    Oxford-IIIT Pet photos at 64 px; at four times, by at most 1 (mean 0.001), which is why
    the margin is 4 (tests/test_inference.py). The
    returned size is always the full one. Raises BadImage for a file that is not a readable image.
    """
    path = Path(path)
    try:
        with Image.open(path) as image:
            width, height = shown_size(image.size, exif_orientation(image))
            if model_size is not None:
                reduced = DRAFT_MARGIN * model_size
                image.draft("RGB", (reduced, reduced))  # JPEG only; a no-op for other formats
            return np.asarray(to_rgb(ImageOps.exif_transpose(image))), (height, width)
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, Image.DecompressionBombError) as error:
        raise BadImage(describe_bad_image(path, error)) from error


def to_rgb(image: Image.Image) -> Image.Image:
    """Any PIL mode as 8-bit RGB: 16-bit grey scaled down, not clipped; alpha dropped."""
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):
        values = np.asarray(image, dtype=np.float64)
        top = 65535.0 if values.max() > 255 else 255.0
        image = Image.fromarray((values / top * 255).round().astype(np.uint8))
    return image if image.mode == "RGB" else image.convert("RGB")


def describe_bad_image(path: Path, error: BaseException) -> str:
    if path.is_file() and path.stat().st_size == 0:
        return "the file is empty"
    if isinstance(error, UnidentifiedImageError):
        return "not an image file (or a format this tool does not read)"
    return f"unreadable image ({first_line(error)})"


# --------------------------------------------------------------------------- models


@dataclass(frozen=True)
class Predictor:
    """A trained model as a function from uint8 (B, S, S, 3) images to float32 logits (B, S, S, C)."""

    size: int
    num_classes: int
    run: Callable[[np.ndarray], np.ndarray]

    def __call__(self, images: np.ndarray) -> np.ndarray:
        return self.run(images)


def load_predictor(path: str | os.PathLike, size: int | None = None) -> Predictor:
    """A `.keras` model, or a `.tflite` file or SavedModel folder made by export.py, ready to predict.

    `size`: predict images resized to this side instead of the model's own (a .keras model
    is called at that size, see `keras_predictor`; an export takes only its own).
    """
    path = Path(path)
    if path.is_dir():
        predictor = saved_model_predictor(path)
    elif path.suffix.lower() == ".tflite":
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no such file")
        try:
            predictor = tflite_predictor(path)
        except (ValueError, RuntimeError, KeyError) as error:
            raise ValueError(f"{path} is not a TFLite model made by export.py ({error})") from error
    else:
        return keras_predictor(load_keras_model(path), size)
    if size is not None and size != predictor.size:
        raise ValueError(f"{path} takes only the {predictor.size} px images it was exported for, not {size} px; "
                         "use the .keras model for another size")
    return predictor


def load_keras_model(path: str | os.PathLike) -> keras.Model:
    """Loads a .keras file in safe mode, without its training configuration."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    try:
        return keras.models.load_model(path, compile=False, safe_mode=True)
    except Exception as error:  # a damaged or foreign file surfaces as many exception types
        raise ValueError(f"{path} cannot be loaded as a Keras model ({first_line(error)})") from error


def keras_predictor(model: keras.Model, size: int | None = None) -> Predictor:
    """`model` as a function of uint8 batches of `size` px photos (default: the model's own size), traced once.

    The models here are fully convolutional, so their weights serve any size in steps of
    `sizes.size_multiple` (32 for the MobileNetV2 U-Net, 64 for the 6-level U-Net). For
    another size, Keras' checks of the size the model was built for are lifted, as for
    --crop's windows (`sizes.accept_any_size`). Predicting photos at a larger size than the
    training size scored higher on held-out photos (BENCHMARKS.md, section 1).
    """
    own = model.input_shape[1]
    if own is None or model.input_shape[2] != own:
        raise ValueError(f"the model takes input of shape {model.input_shape[1:]}: a square size is needed")
    size = own if size is None else size
    if size != own:
        if size < 1:
            raise ValueError(f"an image size must be positive, got {size}")
        step = sizes.size_multiple(model)
        if size % step:
            raise ValueError(f"the model cannot take {size} px images: it takes sizes in steps of {step} px")
        sizes.accept_any_size(model)
    predict = tf.function(lambda images: model(to_model_input(images), training=False),
                          input_signature=[tf.TensorSpec((None, size, size, 3), tf.uint8)])
    return Predictor(size, int(model.output_shape[-1]), lambda images: predict(images).numpy())


TEST_TIME_AUGMENTATIONS = ("flip", "none")


def with_test_time_augmentation(predictor: Predictor, tta: str) -> Predictor:
    """'flip': logits averaged over each image and its mirror image (mirrored back); 'none': as is.

    Every model here trains with horizontal flips, so both orientations are photos it knows;
    their mean is a steadier prediction, above all along the thin border class (nnU-Net
    mirrors by default for the same reason). On the pets' validation photos it added 0.015
    mean IoU (BENCHMARKS.md), for a second pass of the model.
    """
    if tta not in TEST_TIME_AUGMENTATIONS:
        raise ValueError(f"unknown test-time augmentation {tta!r}: use one of {', '.join(TEST_TIME_AUGMENTATIONS)}")
    if tta == "none":
        return predictor

    def mean_of_both(images: np.ndarray) -> np.ndarray:
        images = np.asarray(images)
        mirrored = predictor(np.ascontiguousarray(images[:, :, ::-1]))[:, :, ::-1]
        return (predictor(images) + mirrored) / 2

    return Predictor(predictor.size, predictor.num_classes, mean_of_both)


def saved_model_predictor(folder: Path) -> Predictor:
    """export.py's SavedModel: its signature takes uint8 images (resized inside to the model's
    size, an identity for the photos given here at that size) and returns that size's logits."""
    if not (folder / "saved_model.pb").is_file():
        raise ValueError(f"{folder} is a folder, not a model: give a .keras file, or a .tflite file or SavedModel "
                         "folder made by export.py")
    try:
        serve = tf.saved_model.load(str(folder)).signatures["serving_default"]
        probe = serve(images=tf.zeros((1, 32, 32, 3), tf.uint8))["logits"]  # its size and classes
    except Exception as error:  # a foreign or damaged SavedModel fails in many ways
        raise ValueError(f"{folder} is not a SavedModel made by export.py ({first_line(error)})") from error

    def predict(images: np.ndarray) -> np.ndarray:
        return serve(images=tf.constant(images, tf.uint8))["logits"].numpy()

    return Predictor(int(probe.shape[1]), int(probe.shape[-1]), predict)


def tflite_predictor(model: bytes | str | os.PathLike) -> Predictor:
    size, num_classes, run = tflite_runner(model)

    def predict(images: np.ndarray) -> np.ndarray:
        return np.concatenate([run(image[None])["logits"] for image in np.asarray(images)])

    return Predictor(size, num_classes, predict)


def tflite_runner(model: bytes | str | os.PathLike) -> tuple[int, int, Callable[[np.ndarray], dict[str, np.ndarray]]]:
    """(input size, classes, a function from one uint8 (1, S, S, 3) image to the signature's outputs)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tf.lite.Interpreter announces its successor package
        if isinstance(model, bytes):
            interpreter = tf.lite.Interpreter(model_content=model)
        else:
            interpreter = tf.lite.Interpreter(model_path=str(model))
    runner = interpreter.get_signature_runner("serve")
    size = int(runner.get_input_details()["images"]["shape"][1])
    num_classes = int(runner.get_output_details()["logits"]["shape"][-1])
    return size, num_classes, lambda image: runner(images=image)


# --------------------------------------------------------------------------- back to the photo


def upsampled_argmax(logits: np.ndarray, height: int, width: int) -> np.ndarray:
    """argmax of the logits resized bilinearly to (height, width), as uint8 class indices.

    Interpolating the logits, rather than enlarging a label map, gives smooth class borders.
    The interpolation is tf.image.resize's (half-pixel centres). Photos above
    WHOLE_IMAGE_PIXELS are done separably with two taps per axis, BAND_ROWS output rows at a
    time: a 50-megapixel photo then needs a few megabytes, not gigabytes of float logits.
    """
    if height * width <= WHOLE_IMAGE_PIXELS:
        return _resize_argmax(logits, tf.constant([height, width])).numpy()
    channels = np.moveaxis(np.asarray(logits, np.float32), -1, 0)  # (C, h, w): each class contiguous
    row_low, row_high, row_frac = linear_taps(height, channels.shape[1])
    col_low, col_high, col_frac = linear_taps(width, channels.shape[2])
    mask = np.empty((height, width), np.uint8)
    for start in range(0, height, BAND_ROWS):
        rows = slice(start, start + BAND_ROWS)
        frac = row_frac[rows][None, :, None]
        band = channels[:, row_low[rows]] * (1 - frac) + channels[:, row_high[rows]] * frac
        full = band[:, :, col_low] * (1 - col_frac) + band[:, :, col_high] * col_frac  # (C, b, width)
        best, winner = full[0], np.zeros(full.shape[1:], np.uint8)
        for index in range(1, len(full)):  # first maximum wins, as np.argmax
            better = full[index] > best
            winner[better] = index
            best = np.maximum(best, full[index])
        mask[rows] = winner
    return mask


@tf.function(reduce_retracing=True)
def _resize_argmax(logits: tf.Tensor, size: tf.Tensor) -> tf.Tensor:
    return tf.cast(tf.argmax(tf.image.resize(logits, size, method="bilinear"), axis=-1), tf.uint8)


@functools.lru_cache(maxsize=256)
def linear_taps(out_size: int, in_size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For each output position: the two source indices and the weight of the second."""
    position = np.clip((np.arange(out_size) + 0.5) * (in_size / out_size) - 0.5, 0, in_size - 1)
    low = np.floor(position).astype(np.int64)
    return low, np.minimum(low + 1, in_size - 1), (position - low).astype(np.float32)
