"""One tf.data input pipeline for every source of segmentation data in this project.

Sources, all giving the same batches:
  * "oxford_iiit_pet": Oxford-IIIT Pet through TensorFlow Datasets (version 4.*.*);
  * a folder in the layout of the official Oxford-IIIT Pet archives (images/,
    annotations/trimaps/, annotations/trainval.txt and test.txt), for offline training;
  * a folder of one's own images/ and masks/ (with train/ and test/ sub-folders, or flat
    with a held-out fraction as the test split);
  * "synthetic": procedurally generated shapes with a trimap-like border class.

The order is the one the TensorFlow segmentation tutorial uses, with its bugs fixed:
load -> resize (images bilinear, masks nearest) -> cache as uint8 -> shuffle -> batch ->
augment (augment.py: flips, scale-and-crop, colour; drawn anew every epoch) -> normalize ->
sample weights -> prefetch, with tf.data's autotuning off (see `without_autotuning`).
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import hashlib
import math
import os
import socket
import warnings
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Sequence

import numpy as np
import tensorflow as tf
from PIL import Image, UnidentifiedImageError

import augment
from errors import Notice, first_line
from inference import (IMAGE_EXTENSIONS, BadImage, decode_photo, exif_orientation, read_photo, resize_image,
                       shown_size, to_model_input, to_upright)

TFDS_NAME = "oxford_iiit_pet"
TFDS_VERSION = "4.*.*"
TFDS_DOWNLOAD_HOST = "thor.robots.ox.ac.uk"
SYNTHETIC = "synthetic"
SYNTHETIC_SIZES = {"train": 512, "test": 128}
SPLITS = ("train", "test")
CACHES = ("memory", "disk", "none")
# Formats inference.decode_photo reads; anything else is skipped before training starts.
DECODABLE_FORMATS = {"JPEG", "PNG", "GIF", "BMP", "WEBP"}
CACHE_FORMAT = 3  # raised when cached examples change for the same settings (2: EXIF turns, 3: WebP read)
OXFORD_CLASS_NAMES = ("pet", "background", "border")
VOC_CLASS_NAMES = (
    "background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train", "tvmonitor",
)
VOC_IGNORE = 255
# In the pipeline's masks, a pixel whose stored value is the ignore label carries this label;
# the losses and metrics leave it out (their ignore_class), and sample weights give it 0.
IGNORED = 255
# --outline-weight's outline: pixels within this many pixels of a pixel of another class, at
# the size the model sees (a 5x5 window at 2).
OUTLINE_REACH = 2


class DataWarning(Notice):
    """A file that was skipped, named with the reason."""


@dataclass(frozen=True)
class Pair:
    image: Path
    mask: Path


class OptionValueError(ValueError):
    """A setting out of its range, with the name of its field, so that a command line can name
    the option the value came from."""

    def __init__(self, field: str, text: str):
        super().__init__(f"{field} {text}")
        self.field, self.text = field, text


def _check_positive(name: str, value: int) -> None:
    if not isinstance(value, (int, np.integer)) or value < 1:
        raise OptionValueError(name, f"must be a positive whole number, got {value!r}")


@dataclass(frozen=True)
class DataOptions:
    """How examples are read, the same for every split, script, test and benchmark.

    image_size: side of the square images and masks are resized to.
    limit: only the first N examples of each split (quick runs); None for all.
    num_classes: classes in the masks (3 for Oxford-IIIT Pet and synthetic).
    mask_offset: subtracted from stored mask values; None: 1 for Oxford-IIIT Pet trimaps, 0 otherwise.
    holdout_fraction: share of a flat images/ + masks/ folder kept aside as the test split.
    ignore_class: a stored mask value (before the offset) that counts in neither loss nor
        metrics, e.g. 255 for Pascal VOC's outlines, or 3 to leave out the trimap's border.
    cache: where resized examples are kept after the first epoch: "memory", "disk" (a
        tf.data file cache in `cache_dir`, for data larger than memory) or "none".
    """

    image_size: int = 128
    limit: int | None = None
    num_classes: int = 3
    mask_offset: int | None = None
    holdout_fraction: float = 0.2
    ignore_class: int | None = None
    cache: str = "memory"
    cache_dir: str | None = None

    def __post_init__(self) -> None:
        _check_positive("image_size", self.image_size)
        _check_positive("num_classes", self.num_classes)
        if self.limit is not None:
            _check_positive("limit", self.limit)
        if not 0.0 < self.holdout_fraction < 1.0:
            raise OptionValueError("holdout_fraction", f"must be between 0 and 1, got {self.holdout_fraction}")
        if self.num_classes > IGNORED:
            raise OptionValueError("num_classes", f"must be at most {IGNORED}, got {self.num_classes}")
        if self.ignore_class is not None and not 0 <= self.ignore_class <= 255:
            raise OptionValueError("ignore_class", f"must be a mask value from 0 to 255, got {self.ignore_class}")
        if self.cache not in CACHES:
            raise ValueError(f"cache must be one of {', '.join(CACHES)}, got {self.cache!r}")
        if self.cache == "disk" and not self.cache_dir:
            raise ValueError("a disk cache needs a cache_dir")

    def cache_key(self, source: str | os.PathLike, split: str, contents: str = "") -> str:
        """A name for a split's disk cache that changes with anything that changes its examples.

        `contents`: what the split's files are (`files_fingerprint`), for a folder, whose photos
        can be added, removed or replaced between runs that share a cache folder.
        """
        settings = [CACHE_FORMAT, os.fspath(source), split, self.image_size, self.limit, self.num_classes,
                    self.mask_offset, self.holdout_fraction, self.ignore_class, contents]
        return f"{split}-{hashlib.sha256(repr(settings).encode()).hexdigest()[:12]}"

    def offset_for(self, oxford: bool) -> int:
        """The mask offset in force: the option, else 1 for Oxford-IIIT Pet trimaps and 0 otherwise."""
        if self.mask_offset is not None:
            return self.mask_offset
        return 1 if oxford else 0

    def labels(self, oxford: bool) -> "Labels":
        labels = Labels(self.num_classes, self.offset_for(oxford), self.ignore_class)
        if labels.ignore is not None and labels.offset <= labels.ignore < labels.offset + labels.num_classes:
            raise ValueError(
                f"the ignore value {labels.ignore} is also class {labels.ignore - labels.offset} (stored values "
                f"{labels.offset}..{labels.offset + labels.num_classes - 1} are the {labels.num_classes} classes "
                f"with mask offset {labels.offset}); choose a value outside them, or fewer classes")
        return labels


@dataclass(frozen=True)
class Labels:
    """How stored mask values become labels: minus the offset, the ignore value apart."""

    num_classes: int
    offset: int
    ignore: int | None = None

    def check(self, mask: np.ndarray, where: Path) -> None:
        """Raises ValueError naming the file if the mask holds a value that is neither a class nor ignored."""
        present = np.flatnonzero(np.bincount(mask.ravel(), minlength=256))
        bad = [int(v) for v in present if not self.offset <= v < self.offset + self.num_classes and v != self.ignore]
        if bad:
            ignored = f", or the ignore value {self.ignore}" if self.ignore is not None else ""
            raise ValueError(
                f"mask {where} holds values {bad[:10]} outside the {self.num_classes} classes "
                f"(values {self.offset}..{self.offset + self.num_classes - 1} expected with mask offset "
                f"{self.offset}{ignored}); check the number of classes"
            )

    def to_labels(self, mask: np.ndarray) -> np.ndarray:
        """Stored uint8 values -> uint8 labels, IGNORED where the mask holds the ignore value."""
        shifted = (mask.astype(np.int16) - self.offset).astype(np.uint8)
        return shifted if self.ignore is None else np.where(mask == self.ignore, IGNORED, shifted).astype(np.uint8)

    def to_labels_tf(self, mask: tf.Tensor) -> tf.Tensor:
        shifted = tf.cast(tf.cast(mask, tf.int32) - self.offset, tf.uint8)
        return shifted if self.ignore is None else tf.where(tf.equal(mask, self.ignore), tf.constant(IGNORED, tf.uint8), shifted)

    def to_counted(self, mask: np.ndarray) -> np.ndarray:
        """Stored values -> int16 labels for counting, -1 (counted nowhere) where ignored."""
        shifted = mask.astype(np.int16) - self.offset
        return shifted if self.ignore is None else np.where(mask == self.ignore, -1, shifted).astype(np.int16)


@dataclass(frozen=True)
class Split:
    """One split's unbatched examples (image uint8 (S, S, 3), mask uint8 (S, S, 1)) and their count.

    `source` holds the examples as stored (file names, encoded photos) and `decode` turns such
    a dataset into examples; kept apart so that a subset is chosen before anything is decoded.
    """

    source: tf.data.Dataset
    count: int
    ignore: bool = False
    cache: str = "memory"
    cache_file: str | None = None
    decode: Callable[[tf.data.Dataset], tf.data.Dataset] | None = None

    @property
    def examples(self) -> tf.data.Dataset:
        return self.source if self.decode is None else self.decode(self.source)


# --------------------------------------------------------------------------- public API


def build_dataset(
    source: str | os.PathLike,
    split: str,
    options: DataOptions = DataOptions(),
    *,
    batch_size: int = 64,
    training: bool = False,
    class_weights: Sequence[float] | str | None = None,
    outline_weight: float = 1.0,
    seed: int | None = None,
    augmentations: Sequence[str] = augment.DEFAULT,
    shuffle_buffer: int = 1000,
    repeat: int = 1,
    crop: int | None = None,
) -> tf.data.Dataset:
    """Batches of (images, masks) or, with pixel weights, (images, masks, sample_weights).

    images: float32 (B, S, S, 3) in [0, 1]; masks: int32 (B, S, S, 1) in [0, num_classes);
    sample_weights: float32 (B, S, S, 1), as `pixel_weights` gives them.
    `class_weights="balanced"` weighs classes by inverse frequency in the *training* masks.
    """
    weights = None if class_weights is None else resolve_class_weights(class_weights, source, options)
    return batches(load_split(source, split, options), batch_size=batch_size, training=training,
                   class_weights=weights, outline_weight=outline_weight, seed=seed, augmentations=augmentations,
                   shuffle_buffer=shuffle_buffer, repeat=repeat, crop=crop)


def batches(
    split: Split,
    *,
    batch_size: int = 64,
    training: bool = False,
    class_weights: Sequence[float] | None = None,
    outline_weight: float = 1.0,
    seed: int | None = None,
    augmentations: Sequence[str] = augment.DEFAULT,
    shuffle_buffer: int = 1000,
    repeat: int = 1,
    crop: int | None = None,
) -> tf.data.Dataset:
    """The split cached as uint8, then (training only) repeated, shuffled and augmented, batched and normalized.

    `repeat` passes over the training examples make one epoch, shuffled together: an example
    may come twice in a batch, each time augmented on its own. `crop`: training batches are
    random `crop` x `crop` windows of the examples (augment.py), evaluation batches whole.

    Evaluation batches (training=False) are never augmented. Sample weights (with class
    weights, or an outline weight other than 1) are computed from the (augmented) masks, so
    they always match them pixel for pixel, crops and flips included; ignored pixels (label
    IGNORED) get weight 0.
    """
    _check_positive("batch_size", batch_size)
    ds = split.examples
    if split.cache == "memory":
        ds = ds.cache()
    elif split.cache == "disk":
        ds = ds.cache(split.cache_file)
    if training:
        _check_positive("repeat", repeat)
        if repeat > 1:
            ds = ds.repeat(repeat)
        ds = ds.shuffle(shuffle_buffer, seed=seed, reshuffle_each_iteration=True)
    ds = ds.batch(batch_size)
    if training:
        ds = augment.augment_batches(ds, tuple(augmentations), seed, crop)
    ds = ds.map(_normalize, num_parallel_calls=tf.data.AUTOTUNE)
    if weighs_pixels(class_weights, outline_weight):
        ds = ds.map(lambda images, masks: (images, masks, pixel_weights(masks, class_weights, outline_weight)),
                    num_parallel_calls=tf.data.AUTOTUNE)
    return without_autotuning(ds.prefetch(tf.data.AUTOTUNE))


def weighs_pixels(class_weights: Sequence[float] | None, outline_weight: float = 1.0) -> bool:
    """Whether batches carry sample weights: with class weights, or an outline that counts differently."""
    return class_weights is not None or outline_weight != 1.0


def pixel_weights(masks: tf.Tensor | np.ndarray, class_weights: Sequence[float] | None = None,
                  outline_weight: float = 1.0) -> tf.Tensor:
    """float32 weights of the masks' shape (B, H, W, 1): each pixel's true class's weight (1 without
    class weights), times `outline_weight` on the outline (`outline_pixels`); 0 where it is IGNORED."""
    masks = tf.convert_to_tensor(masks)
    if class_weights is None:
        weights = tf.ones(tf.shape(masks), tf.float32)
    else:
        weights = tf.gather(tf.constant(class_weights, tf.float32), tf.minimum(masks, len(class_weights) - 1))
    if outline_weight != 1.0:
        weights = tf.where(outline_pixels(masks), weights * outline_weight, weights)
    return tf.where(tf.equal(masks, IGNORED), 0.0, weights)


def outline_pixels(masks: tf.Tensor | np.ndarray, reach: int = OUTLINE_REACH) -> tf.Tensor:
    """bool, the masks' shape (B, H, W, 1): pixels with a pixel of another label within `reach`
    pixels (a square window); the image's edge is no outline.

    --outline-weight's pixels. Most of a trained model's errors lie along the objects'
    outlines (BENCHMARKS.md, "Where the errors are"); no Keras loss or tf.image function marks
    them, and a window's highest and lowest label (max-pools) differ exactly there. An
    ignored region's edge counts as an outline too; its own pixels get weight 0 anyway.
    """
    window = 2 * reach + 1

    def window_max(values):  # a column's maximum, then a row's: the square's, in 2 x 5 steps, not 25
        return tf.nn.max_pool2d(tf.nn.max_pool2d(values, [window, 1], 1, "SAME"), [1, window], 1, "SAME")

    labels = tf.cast(masks, tf.float32)
    return tf.not_equal(window_max(labels), -window_max(-labels))


def without_autotuning(ds: tf.data.Dataset) -> tf.data.Dataset:
    """`ds` with tf.data's autotuning model turned off: AUTOTUNE settings keep fixed defaults.

    Keras makes a new iterator over the training data every epoch and over the validation
    data at every evaluation, and deletes the previous one. With autotuning on, deleting an
    iterator waits for its tuning thread, and on our 2-core machine that wait took 5, 10,
    even 15 s (py-spy: the main thread in RootDataset::Iterator's destructor), in most epochs:
    an epoch of 4.7 s of steps took 9.7 s. Our pipelines do their heavy work once, before
    the cache; measured, cached epochs ran no slower without the tuning (BENCHMARKS.md).
    """
    options = tf.data.Options()
    options.autotune.enabled = False
    return ds.with_options(options)


def load_examples(source: str | os.PathLike, split: str, options: DataOptions = DataOptions()) -> tf.data.Dataset:
    """Unbatched (image uint8 (S, S, 3), mask uint8 (S, S, 1)) examples, resized, uncached."""
    return load_split(source, split, options).examples


def load_split(source: str | os.PathLike, split: str, options: DataOptions = DataOptions()) -> Split:
    """A split's resized examples and how many there are, checked before any training starts."""
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}: use one of {', '.join(SPLITS)}")
    name = os.fspath(source)
    size, limit = options.image_size, options.limit
    pairs: list[Pair] = []  # a folder's files, which name its disk cache too
    if name == SYNTHETIC:
        options.labels(oxford=False)  # the ignore value may not be a class
        loaded = _synthetic_split(split, size, limit)
    elif name == TFDS_NAME:
        loaded = _tfds_split(split, size, limit, options.labels(oxford=True))
    else:
        root, layout, pairs = _folder_pairs(name, split, options)
        loaded = _file_split(pairs, size, options.labels(oxford=layout == "oxford"), f"{root} ({split} split)")
    cache_file = None
    if options.cache == "disk":
        contents = files_fingerprint([path for pair in pairs for path in (pair.image, pair.mask)]) if pairs else ""
        cache_file = str(Path(options.cache_dir) / options.cache_key(source, split, contents))
    return dataclasses.replace(loaded, cache=options.cache, cache_file=cache_file)


def files_fingerprint(paths: Sequence[Path]) -> str:
    """A digest of the files' names, sizes and modification times, in order.

    A tf.data disk cache holds examples without saying which files they came from, and reads
    back whatever it holds: a cache shared between runs (--cache-dir) would go on serving a
    folder's old photos after one was added, removed or replaced. Hashing what the files hold
    would read every photo before each run; their sizes and times change with any edit.
    """
    digest = hashlib.sha256()
    for path in paths:
        stat = Path(path).stat()
        digest.update(f"{os.fspath(path)}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()


def spread_subset(split: Split, count: int) -> Split:
    """About `count` examples spread evenly over the split: every k-th, from the first.

    The same examples every time, drawn from the whole split rather than its head, so a
    folder listed breed by breed (as Oxford-IIIT Pet's lists are) is still covered
    throughout. A disk cache gets a file of its own, apart from the whole split's.
    """
    _check_positive("count", count)
    step = max(1, math.ceil(split.count / count))
    if step == 1:
        return split
    cache_file = None if split.cache_file is None else f"{split.cache_file}-every{step}"
    return dataclasses.replace(split, source=split.source.shard(step, 0), count=math.ceil(split.count / step),
                               cache_file=cache_file)


def _folder_pairs(name: str, split: str, options: DataOptions) -> tuple[Path, str, list[Pair]]:
    """The folder (a VOC parent resolved to VOC2012 itself), its layout and the split's pairs."""
    root = Path(name)
    if not root.is_dir():
        raise FileNotFoundError(
            f"data source {name!r} is neither {TFDS_NAME!r}, {SYNTHETIC!r} nor an existing folder"
        )
    root = voc_root(root) or root
    layout = detect_layout(root)
    if layout == "oxford":
        pairs = _oxford_pairs(root, split)
    elif layout == "voc":
        pairs = _voc_pairs(root, split)
    else:
        pairs = _own_pairs(root, split, options.holdout_fraction)
    if options.limit is not None:
        pairs = pairs[:options.limit]
    return root, layout, pairs


def is_oxford(source: str | os.PathLike) -> bool:
    """Whether the source is Oxford-IIIT Pet (TFDS, or the archives' layout on disk)."""
    name = os.fspath(source)
    if name == TFDS_NAME:
        return True
    return name != SYNTHETIC and _layout(Path(name)) == "oxford"


def class_names(source: str | os.PathLike, options: DataOptions = DataOptions()) -> list[str]:
    """Names for the classes: Oxford-IIIT Pet's and synthetic's, Pascal VOC's, else class_N.

    Leaving out Oxford's border (ignore 3 with 2 classes) keeps the names pet and background.
    """
    count = options.num_classes
    if os.fspath(source) == SYNTHETIC or is_oxford(source):
        if count == len(OXFORD_CLASS_NAMES) or (count == 2 and options.ignore_class == 3 and options.mask_offset in (None, 1)):
            return list(OXFORD_CLASS_NAMES[:count])
    if is_voc(source) and count == len(VOC_CLASS_NAMES):
        return list(VOC_CLASS_NAMES)
    return [f"class_{index}" for index in range(count)]


def is_voc(source: str | os.PathLike) -> bool:
    name = os.fspath(source)
    return name not in (TFDS_NAME, SYNTHETIC) and Path(name).is_dir() and voc_root(Path(name)) is not None


def source_defaults(source: str | os.PathLike) -> dict:
    """The number of classes and ignore value a source implies: Pascal VOC 21 and 255, else 3 and none."""
    if is_voc(source):
        return {"num_classes": len(VOC_CLASS_NAMES), "ignore_class": VOC_IGNORE}
    return {"num_classes": len(OXFORD_CLASS_NAMES), "ignore_class": None}


def voc_root(root: Path) -> Path | None:
    """The folder of a Pascal VOC layout: `root` itself (e.g. VOCdevkit/VOC2012) or its one VOC* child."""
    if _layout(root) == "voc":
        return root
    children = [child for child in sorted(root.glob("VOC*")) if child.is_dir() and _layout(child) == "voc"]
    return children[0] if len(children) == 1 else None


def detect_layout(root: Path) -> str:
    """'oxford' (official archive layout), 'voc' (Pascal VOC), 'split' (train/ and test/ folders) or 'flat'."""
    layout = _layout(root)
    if layout is not None:
        return layout
    raise ValueError(
        f"{root} matches no known data layout; expected one of:\n"
        "  images/ + annotations/trimaps/ + annotations/trainval.txt, test.txt "
        "(the official Oxford-IIIT Pet archives)\n"
        "  JPEGImages/ + SegmentationClass/ + ImageSets/Segmentation/train.txt, val.txt (Pascal VOC)\n"
        "  train/images/ + train/masks/ (+ test/images/ + test/masks/)\n"
        "  images/ + masks/ (a held-out fraction becomes the test split)"
    )


def _layout(root: Path) -> str | None:
    if (root / "images").is_dir() and (root / "annotations" / "trimaps").is_dir():
        return "oxford"
    if all((root / part).is_dir() for part in ("JPEGImages", "SegmentationClass", "ImageSets/Segmentation")):
        return "voc"
    if (root / "train" / "images").is_dir() and (root / "train" / "masks").is_dir():
        return "split"
    if (root / "images").is_dir() and (root / "masks").is_dir():
        return "flat"
    return None


def resolve_class_weights(
    class_weights: Sequence[float] | str, source: str | os.PathLike, options: DataOptions = DataOptions()
) -> list[float]:
    """A list of num_classes weights from a sequence, a '2,2,1' string or 'balanced'."""
    num_classes = options.num_classes
    if isinstance(class_weights, str):
        if class_weights.strip().lower() == "balanced":
            return balanced_class_weights(source, options)
        try:
            class_weights = [float(w) for w in class_weights.split(",")]
        except ValueError:
            raise ValueError(
                f"class weights {class_weights!r} must be 'balanced' or numbers separated by commas"
            ) from None
    weights = [float(w) for w in class_weights]
    if len(weights) != num_classes:
        raise ValueError(
            f"class weights {weights} give {len(weights)} values for {num_classes} classes: "
            f"give one weight per class"
        )
    if any(not np.isfinite(w) or w < 0 for w in weights):
        raise ValueError(f"class weights {weights} must be finite and not negative")
    return weights


def balanced_class_weights(source: str | os.PathLike, options: DataOptions = DataOptions()) -> list[float]:
    """Inverse class frequency in the training masks, scaled so a balanced set gets 1.0."""
    num_classes = options.num_classes
    masks = load_examples(source, "train", options).map(
        lambda image, mask: tf.math.bincount(
            tf.cast(mask, tf.int32), minlength=num_classes, maxlength=num_classes, dtype=tf.int64
        )
    )
    counts = masks.reduce(tf.zeros([num_classes], tf.int64), lambda total, c: total + c).numpy()
    total = counts.sum()
    # A class absent from the training masks keeps weight 1: nothing to balance against.
    return [float(total / (num_classes * c)) if c else 1.0 for c in counts]


@dataclass(frozen=True)
class Photo:
    """One example as a user of predict.py meets it, for judging a model at each photo's own size.

    model_input: uint8 (S, S, 3), the pixels predict.py would give the model for this photo.
    mask: int16 (H, W), the untouched true mask at the photo's own size, offset removed.
    """

    name: str
    model_input: np.ndarray
    mask: np.ndarray


def photos(source: str | os.PathLike, split: str, options: DataOptions = DataOptions()) -> tuple[int, Iterator[Photo]]:
    """(how many photos at most, the split's photos one by one), read lazily in full size.

    The same sources, splits, limit and mask checks as `load_split`; an unreadable image is
    skipped with a warning, as in training.
    """
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}: use one of {', '.join(SPLITS)}")
    name, size = os.fspath(source), options.image_size
    if name == SYNTHETIC:
        options.labels(oxford=False)  # the ignore value may not be a class, as in load_split
        count = SYNTHETIC_SIZES[split] if options.limit is None else min(options.limit, SYNTHETIC_SIZES[split])

        def made() -> Iterator[Photo]:
            for index in range(count):
                image, mask = synthetic_example(index, split, size, size)
                yield Photo(f"{split}_{index:04d}", image, mask.astype(np.int16))

        return count, made()
    if name == TFDS_NAME:
        return _tfds_photos(split, options)
    root, layout, pairs = _folder_pairs(name, split, options)
    if not pairs:
        raise ValueError(f"{root} ({split} split) holds no usable image and mask pairs")
    labels = options.labels(oxford=layout == "oxford")

    def read() -> Iterator[Photo]:
        for pair in pairs:
            checked = _read_checked_mask(pair, labels)
            if checked is None:
                continue
            mask, _ = checked
            try:
                pixels, _ = read_photo(pair.image, model_size=size)
            except BadImage as error:
                _warn_skipped([pair.image], f"is not a readable image ({error})")
                continue
            yield Photo(pair.image.stem, resize_image(pixels, size).numpy(), labels.to_counted(mask))

    return len(pairs), read()


def _tfds_photos(split: str, options: DataOptions) -> tuple[int, Iterator[Photo]]:
    ds, count = _tfds_examples(split, options.limit)
    labels, size = options.labels(oxford=True), options.image_size

    def read() -> Iterator[Photo]:
        for index, example in enumerate(ds.as_numpy_iterator()):
            name = example.get("file_name", f"{split}_{index:05d}".encode())
            model_input = resize_image(decode_photo(example["image"]), size).numpy()
            mask = labels.to_counted(example["segmentation_mask"][..., 0])
            yield Photo(Path(name.decode()).stem, model_input, mask)

    return count, read()


# --------------------------------------------------------------------------- resizing


def resize_mask(mask: tf.Tensor, image_size: int) -> tf.Tensor:
    """Nearest-neighbour resize: interpolating labels would invent classes between them."""
    return tf.image.resize(mask, [image_size, image_size], method="nearest")


def resize_mask_array(mask: np.ndarray, image_size: int) -> np.ndarray:
    """resize_mask for a NumPy (H, W) mask, pixel for pixel the same, without TensorFlow's
    per-call overhead (16 times faster per mask when checking folders up front)."""
    return np.asarray(Image.fromarray(mask).resize((image_size, image_size), Image.Resampling.NEAREST))


# --------------------------------------------------------------------------- TFDS


def _tfds_split(split: str, image_size: int, limit: int | None, labels: Labels) -> Split:
    ds, count = _tfds_examples(split, limit)

    def resize(example):
        mask = labels.to_labels_tf(resize_mask(example["segmentation_mask"], image_size))
        return resize_image(decode_photo(example["image"]), image_size), mask

    return Split(ds, count, labels.ignore is not None,
                 decode=lambda encoded: encoded.map(resize, num_parallel_calls=tf.data.AUTOTUNE))


def _tfds_examples(split: str, limit: int | None) -> tuple[tf.data.Dataset, int]:
    """The split's examples with images still encoded, and how many there are.

    TFDS would decode JPEGs with TensorFlow's fast IDCT; decode_photo gives the pixels
    predict.py sees.
    """
    import tensorflow_datasets as tfds

    builder = _prepared_tfds_builder()
    ds = builder.as_dataset(split=split, shuffle_files=False, decoders={"image": tfds.decode.SkipDecoding()})
    if limit is not None:
        ds = ds.take(limit)
    count = int(ds.cardinality())
    if count < 0:  # TFDS states the size of its splits; a source that does not is counted once
        count = int(ds.reduce(0, lambda total, _: total + 1))
    return ds, count


def _prepared_tfds_builder():
    import tensorflow_datasets as tfds

    try:
        builder = tfds.builder(f"{TFDS_NAME}:{TFDS_VERSION}")
    except Exception as error:  # TFDS raises many types for a registry it cannot resolve
        raise ValueError(f"TensorFlow Datasets cannot provide {TFDS_NAME}:{TFDS_VERSION}: {error}") from error
    if builder.is_prepared():
        return builder
    offline_route = (
        "Download images.tar.gz and annotations.tar.gz from "
        "https://www.robots.ox.ac.uk/~vgg/data/pets/ on a machine with access, unpack both "
        "into one folder (it then holds images/ and annotations/) and pass that folder as "
        "--data DIR."
    )
    # TFDS retries a failed download for minutes; a quick look first keeps a failure quick.
    if not dataset_server_reachable():
        raise ConnectionError(
            f"cannot download {TFDS_NAME}: {TFDS_DOWNLOAD_HOST} cannot be reached from this "
            f"machine. {offline_route}"
        )
    try:
        builder.download_and_prepare()
    except Exception as error:  # network, disk and checksum failures all end here
        raise ConnectionError(f"downloading {TFDS_NAME} failed ({first_line(error)}). {offline_route}") from error
    return builder


def dataset_server_reachable(timeout: float = 10.0) -> bool:
    """Whether a TCP connection to the dataset's download server opens within `timeout`."""
    try:
        with socket.create_connection((TFDS_DOWNLOAD_HOST, 443), timeout=timeout):
            return True
    except OSError:
        return False


# --------------------------------------------------------------------------- folders


def _oxford_pairs(root: Path, split: str) -> list[Pair]:
    list_file = root / "annotations" / ("trainval.txt" if split == "train" else "test.txt")
    return _listed_pairs(list_file, "the official archive", split, root / "images", root / "annotations" / "trimaps")


def _voc_pairs(root: Path, split: str) -> list[Pair]:
    """Pascal VOC: train.txt is the training split, val.txt the test split (VOC's test masks are not public)."""
    list_file = root / "ImageSets" / "Segmentation" / ("train.txt" if split == "train" else "val.txt")
    return _listed_pairs(list_file, "Pascal VOC", split, root / "JPEGImages", root / "SegmentationClass")


def _listed_pairs(list_file: Path, layout: str, split: str, images: Path, masks: Path) -> list[Pair]:
    """NAME.jpg in `images` and NAME.png in `masks` for each NAME (first word of a line) in `list_file`."""
    if not list_file.is_file():
        raise FileNotFoundError(f"{list_file} is missing: {layout} lists the {split} split there")
    lines = (line.strip() for line in list_file.read_text().splitlines())
    names = [line.split()[0] for line in lines if line and not line.startswith("#")]
    pairs, missing = [], []
    for name in names:
        image, mask = images / f"{name}.jpg", masks / f"{name}.png"
        if image.is_file() and mask.is_file():
            pairs.append(Pair(image, mask))
        else:
            missing.append(image if not image.is_file() else mask)
    _warn_skipped(missing, f"listed in {list_file} but missing")
    return pairs


def _own_pairs(root: Path, split: str, holdout_fraction: float) -> list[Pair]:
    if (root / "train" / "images").is_dir():
        folder = root / split
        if not (folder / "images").is_dir() or not (folder / "masks").is_dir():
            raise FileNotFoundError(f"{folder} needs images/ and masks/ sub-folders for the {split} split")
        return _match_by_stem(folder / "images", folder / "masks")
    pairs = _match_by_stem(root / "images", root / "masks")
    # Hash each name so the held-out set does not change when files are added or renamed.
    ranked = sorted(pairs, key=lambda p: (zlib.crc32(p.image.stem.encode()), p.image.stem))
    n_test = max(1, round(holdout_fraction * len(ranked))) if len(ranked) > 1 else 0
    chosen = ranked[:n_test] if split == "test" else ranked[n_test:]
    return sorted(chosen, key=lambda p: p.image.stem)


def _match_by_stem(images_dir: Path, masks_dir: Path) -> list[Pair]:
    images = _files_by_stem(images_dir, IMAGE_EXTENSIONS)
    masks = _files_by_stem(masks_dir, (".png",))
    not_png = {p.stem: p for p in sorted(masks_dir.iterdir())
               if p.is_file() and p.suffix.lower() != ".png" and not p.name.startswith(".")}
    for stem in sorted(images.keys() - masks.keys()):
        if stem in not_png:
            _warn_skipped([images[stem]], f"has its mask as {not_png[stem].name}, not as a PNG: masks must be PNGs "
                                          "(a JPEG's compression changes the class values along every outline)")
        else:
            _warn_skipped([images[stem]], f"has no mask in {masks_dir}")
    _warn_skipped([masks[s] for s in sorted(masks.keys() - images.keys())], f"has no image in {images_dir}")
    return [Pair(images[s], masks[s]) for s in sorted(images.keys() & masks.keys())]


def _files_by_stem(folder: Path, extensions: tuple[str, ...]) -> dict[str, Path]:
    found: dict[str, Path] = {}
    for path in sorted(folder.iterdir()):
        if path.is_file() and path.suffix.lower() in extensions and not path.name.startswith("."):
            if path.stem in found:
                raise ValueError(f"{path} and {found[path.stem]} have the same name: which one is meant?")
            found[path.stem] = path
    return found


def _file_split(pairs: list[Pair], image_size: int, labels: Labels, where: str) -> Split:
    """Checks every pair before training starts, then reads images and masks lazily in parallel.

    Nothing of the data is held in memory beyond the cache the caller chooses; masks are read
    with PIL (TensorFlow's PNG decoder would expand palette masks to RGB).
    """
    with concurrent.futures.ThreadPoolExecutor(max_workers=min(8, (os.cpu_count() or 1) + 2)) as pool:
        results = pool.map(lambda p: _read_checked_mask(p, labels), pairs)
        checked = [(pair, result[1]) for pair, result in zip(pairs, results) if result is not None]
    if not checked:
        raise ValueError(f"{where} holds no usable image and mask pairs")
    ds = tf.data.Dataset.from_tensor_slices(([str(p.image) for p, _ in checked], [str(p.mask) for p, _ in checked],
                                             [orientation for _, orientation in checked]))

    def read_mask(path: bytes) -> np.ndarray:
        with Image.open(path.decode()) as mask_file:
            mask = np.asarray(mask_file, dtype=np.uint8)
        return labels.to_labels(resize_mask_array(mask, image_size))[..., None]

    turning = any(orientation != 1 for _, orientation in checked)  # to_upright costs about 1 ms a photo

    def decode(image_path, mask_path, orientation):
        mask = tf.numpy_function(read_mask, [mask_path], tf.uint8, stateful=False)
        mask.set_shape((image_size, image_size, 1))
        image = decode_photo(tf.io.read_file(image_path))
        return resize_image(to_upright(image, orientation) if turning else image, image_size), mask

    # A file that passed the header check but whose data is truncated is dropped with a
    # logged warning instead of stopping the epoch.
    return Split(ds, len(checked), labels.ignore is not None,
                 decode=lambda paths: paths.map(decode, num_parallel_calls=tf.data.AUTOTUNE).ignore_errors(log_warning=True))


def _read_checked_mask(pair: Pair, labels: Labels) -> tuple[np.ndarray, int] | None:
    """(the pair's mask as stored (uint8, full size), its image's EXIF orientation), or None
    (with a warning) for an unreadable file.

    Labels that are out of range, masks that are not class indices and image/mask size
    mismatches are errors: they mean the annotation is wrong, and training on it would be too.
    A mask belongs to the photo as a person sees it, turned upright by its EXIF orientation,
    as predict.py writes its masks.
    """
    try:
        with Image.open(pair.image) as image:
            image_format, photo_size, orientation = image.format, image.size, exif_orientation(image)
            frames = image.n_frames if image_format == "WEBP" else 1  # a GIF would be read to its end to count
    except (UnidentifiedImageError, OSError) as error:
        _warn_skipped([pair.image], f"is not a readable image ({first_line(error)})")
        return None
    if image_format not in DECODABLE_FORMATS:
        _warn_skipped([pair.image], f"is a {image_format} file; use JPEG, PNG, BMP, GIF or WebP")
        return None
    if frames > 1:  # TensorFlow decodes an animated WebP only when its frames are RGBA
        _warn_skipped([pair.image], f"is an animated WebP of {frames} frames; save the frame its mask is drawn on "
                                    "as a still image")
        return None
    try:
        with Image.open(pair.mask) as mask_file:
            mode, mask_size = mask_file.mode, mask_file.size
            if mode not in ("L", "P", "1"):
                raise ValueError(
                    f"mask {pair.mask} is an image of mode {mode}; masks must be 8-bit single-channel PNGs "
                    "holding one class index per pixel (a mask drawn in colours needs each colour replaced by "
                    "its class index first)"
                )
            mask = np.asarray(mask_file, dtype=np.uint8)
    except (UnidentifiedImageError, OSError) as error:
        _warn_skipped([pair.mask], f"is not a readable mask ({first_line(error)})")
        return None
    upright_size = shown_size(photo_size, orientation)
    if mask_size != upright_size:
        shown = (f" as shown (its EXIF orientation turns the stored {photo_size[0]}x{photo_size[1]} a quarter "
                 "turn)" if upright_size != photo_size else "")
        raise ValueError(
            f"mask {pair.mask} is {mask_size[0]}x{mask_size[1]} but image {pair.image} is "
            f"{upright_size[0]}x{upright_size[1]}{shown}: a mask must have its image's size"
        )
    labels.check(mask, pair.mask)
    return mask, orientation


def _warn_skipped(paths: Sequence[Path], why: str) -> None:
    for path in paths:
        warnings.warn(f"skipping {path}: it {why}", DataWarning, stacklevel=3)


# --------------------------------------------------------------------------- synthetic


def synthetic_example(index: int, split: str, height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """One deterministic example: (uint8 image (H, W, 3), uint8 mask (H, W)).

    One to three filled ellipses or rotated rectangles in saturated colours over a grey
    striped background; classes follow the Oxford-IIIT Pet trimap after `mask - 1`:
    0 = shape, 1 = background, 2 = a ring along each shape's outline.
    """
    rng = np.random.default_rng([20261121, SPLITS.index(split), index])
    scale = min(height, width)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    signed = np.full((height, width), np.inf, np.float32)  # ~distance to the nearest outline
    for _ in range(rng.integers(1, 4)):
        cy, cx = rng.uniform(0.2, 0.8) * height, rng.uniform(0.2, 0.8) * width
        a, b = rng.uniform(0.12, 0.3, size=2) * scale
        angle = rng.uniform(0, np.pi)
        u = (x - cx) * np.cos(angle) + (y - cy) * np.sin(angle)
        v = -(x - cx) * np.sin(angle) + (y - cy) * np.cos(angle)
        if rng.random() < 0.5:
            d = (np.sqrt((u / a) ** 2 + (v / b) ** 2) - 1.0) * min(a, b)
        else:
            d = np.maximum(np.abs(u) - a, np.abs(v) - b)
        signed = np.minimum(signed, d)
    ring = max(1.0, 0.02 * scale)
    mask = np.where(signed < -ring, 0, np.where(signed > ring, 1, 2)).astype(np.uint8)

    freq, phase, tilt = rng.uniform(0.05, 0.25), rng.uniform(0, 2 * np.pi), rng.uniform(0, np.pi)
    stripes = np.sin(freq * (x * np.cos(tilt) + y * np.sin(tilt)) + phase)
    grey = rng.uniform(0.3, 0.7) + 0.15 * stripes
    background = np.repeat(grey[..., None], 3, axis=2)
    hue = rng.uniform(0, 1)
    colour = 0.5 + 0.4 * np.cos(2 * np.pi * (hue + np.array([0.0, 1 / 3, 2 / 3])))
    foreground = colour[None, None, :] * (0.85 + 0.15 * stripes[..., None])
    image = np.where((signed < 0)[..., None], foreground, background)
    image = image + rng.normal(0, 0.04, size=image.shape)
    return (np.clip(image, 0, 1) * 255).round().astype(np.uint8), mask


def _synthetic_split(split: str, image_size: int, limit: int | None) -> Split:
    count = SYNTHETIC_SIZES[split] if limit is None else min(limit, SYNTHETIC_SIZES[split])
    examples = [synthetic_example(i, split, image_size, image_size) for i in range(count)]
    images = np.stack([image for image, _ in examples])
    masks = np.stack([mask for _, mask in examples])[..., None]
    return Split(tf.data.Dataset.from_tensor_slices((images, masks)), count)


def write_synthetic_folder(
    root: str | os.PathLike, *, counts: dict[str, int] | None = None, height: int = 375, width: int = 500
) -> Path:
    """Writes the synthetic set as JPEG images and PNG masks in the train/ + test/ layout."""
    root = Path(root)
    for split, count in (counts or SYNTHETIC_SIZES).items():
        (root / split / "images").mkdir(parents=True, exist_ok=True)
        (root / split / "masks").mkdir(parents=True, exist_ok=True)
        for i in range(count):
            image, mask = synthetic_example(i, split, height, width)
            Image.fromarray(image).save(root / split / "images" / f"{split}_{i:04d}.jpg", quality=90)
            Image.fromarray(mask).save(root / split / "masks" / f"{split}_{i:04d}.png")
    return root


# --------------------------------------------------------------------------- batch stages


def _normalize(images: tf.Tensor, masks: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    return to_model_input(images), tf.cast(masks, tf.int32)
