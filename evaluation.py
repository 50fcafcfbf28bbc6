"""Judging a model on a data split: exact counts at the model's input size and at each photo's own.

The first figures are the ones training reports (masks resized with nearest neighbour to
the model's size); the second are what a user of predict.py gets: the logits resized back
bilinearly to the photo's size, compared with the untouched mask. evaluate.py, the end of a
training run and bench/quality.py all call `evaluate`.
"""

from __future__ import annotations

import heapq
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Callable, Iterable, Iterator, Sequence

import numpy as np

import metrics
from data import Photo, resize_mask_array
from inference import Predictor, upsampled_argmax
from progress import Progress

SECTIONS = ("model_size", "original_size")


@dataclass
class Failure:
    """One of the worst images: what the model saw, the truth and its answer, at the model's size."""

    name: str
    mean_iou: float
    image: np.ndarray
    truth: np.ndarray
    predicted: np.ndarray


@dataclass
class Evaluation:
    class_names: Sequence[str]
    model_size: np.ndarray
    original_size: np.ndarray
    images: int = 0
    worst: list[Failure] = field(default_factory=list)
    loss: float | None = None  # the mean over images of `loss`, when evaluate was given one

    def figures(self) -> dict:
        """{"model_size": scores, "original_size": scores}, each as metrics.scores gives it."""
        return {section: metrics.scores(getattr(self, section), self.class_names) for section in SECTIONS}


def evaluate(
    predictor: Predictor,
    photos: Iterable[Photo],
    class_names: Sequence[str],
    *,
    count: int | None = None,
    batch_size: int = 32,
    keep_worst: int = 0,
    show_progress: bool = False,
    loss: Callable[[np.ndarray, np.ndarray], float] | None = None,
) -> Evaluation:
    """Confusion matrices over all photos, in int64, at both sizes; the `keep_worst` lowest-IoU images.

    `loss(truth, logits)`, given the model-size masks (int16 (B, S, S), -1 where ignored) and
    the logits of a batch, returns the batch's mean loss; the result's `loss` is its mean over
    all images, so a training run gets its test loss from this same pass.
    """
    if predictor.num_classes != len(class_names):
        raise ValueError(f"the model predicts {predictor.num_classes} classes but the data has {len(class_names)}")
    num_classes = len(class_names)
    result = Evaluation(class_names, np.zeros((num_classes,) * 2, np.int64), np.zeros((num_classes,) * 2, np.int64))
    worst: list[tuple[float, int, Failure]] = []  # a max-heap by -IoU keeps the lowest
    progress = Progress(count or 0, "image") if show_progress else None
    loss_total = 0.0
    for batch in _read_ahead(_batches(photos, batch_size)):
        logits = predictor(np.stack([photo.model_input for photo in batch]))
        small_truths = [_model_size_mask(photo.mask, predictor.size) for photo in batch]
        if loss is not None:
            loss_total += loss(np.stack(small_truths), logits) * len(batch)
        for photo, photo_logits, small_truth in zip(batch, logits, small_truths):
            small_prediction = np.argmax(photo_logits, axis=-1)
            result.model_size += metrics.confusion_matrix(small_truth, small_prediction, num_classes)
            full_prediction = upsampled_argmax(photo_logits, *photo.mask.shape)
            matrix = metrics.confusion_matrix(photo.mask, full_prediction, num_classes)
            result.original_size += matrix
            result.images += 1
            if keep_worst:
                score = metrics.scores(matrix, class_names)["mean_iou"]
                failure = Failure(photo.name, score, photo.model_input, small_truth, small_prediction)
                heapq.heappush(worst, (-score, result.images, failure))
                if len(worst) > keep_worst:
                    heapq.heappop(worst)
        if progress is not None:
            progress.update(result.images)
    if progress is not None:
        progress.total = result.images
        progress.finish()
    if result.images == 0:
        raise ValueError("no image could be evaluated")
    result.worst = [failure for _, _, failure in sorted(worst, key=lambda item: -item[0])]
    if loss is not None:
        result.loss = loss_total / result.images
    return result


def _batches(photos: Iterable[Photo], size: int) -> Iterable[list[Photo]]:
    batch: list[Photo] = []
    for photo in photos:
        batch.append(photo)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def _read_ahead(batches: Iterable[list[Photo]]) -> Iterator[list[Photo]]:
    """The batches, each read in a thread while the one before is predicted and scored.

    Reading a photo (decoding, resizing, checking its mask) releases the GIL for most of its
    time; overlapped, the end of a training run judged 300 photos in 6.3 s instead of 6.8
    (medians of 6 and 8 passes, flips on).
    """
    iterator = iter(batches)
    with ThreadPoolExecutor(max_workers=1) as reader:
        upcoming = reader.submit(next, iterator, None)
        while (batch := upcoming.result()) is not None:
            upcoming = reader.submit(next, iterator, None)
            yield batch


def _model_size_mask(mask: np.ndarray, size: int) -> np.ndarray:
    """The mask at the model's size, nearest neighbour as in training; values outside uint8 kept apart."""
    shifted = mask.astype(np.int32) + 1  # -1 (below the offset) becomes 0, so uint8 holds -1..254
    if shifted.min() < 0 or shifted.max() > 255:
        raise ValueError(f"mask values {mask.min()}..{mask.max()} are outside what a mask file can hold")
    return resize_mask_array(shifted.astype(np.uint8), size).astype(np.int16) - 1
