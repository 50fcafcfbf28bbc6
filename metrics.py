"""How segmentation is scored: the Keras metrics of training, and exact confusion-matrix figures.

During training Keras' own metrics report pixel accuracy, mean IoU and each class's IoU
on the argmax of the logits. For judging a finished model, `confusion_matrix` counts pixels
exactly in int64 (Keras' MeanIoU accumulates float32, which loses counts past 2**24 pixels
per cell) and `scores` derives every figure from those counts.
"""

from __future__ import annotations

from typing import Sequence

import keras
import numpy as np
from keras import ops


def segmentation_metrics(class_names: Sequence[str], ignore_class: int | None = None) -> list[keras.metrics.Metric]:
    """Pixel accuracy, mean IoU and each class's IoU, all on the argmax of the logits.

    Pixels labelled `ignore_class` count in none of them.
    """
    count = len(class_names)
    # Keras' own accuracy unless pixels are ignored: a saved model then loads in plain Keras.
    accuracy = (keras.metrics.SparseCategoricalAccuracy(name="accuracy") if ignore_class is None
                else PixelAccuracy(ignore_class=ignore_class, name="accuracy"))
    metrics = [
        accuracy,
        keras.metrics.MeanIoU(num_classes=count, sparse_y_pred=False, ignore_class=ignore_class, name="mean_iou"),
    ]
    metrics += [
        keras.metrics.IoU(num_classes=count, target_class_ids=[index], sparse_y_pred=False,
                          ignore_class=ignore_class, name=f"iou_{name}")
        for index, name in enumerate(class_names)
    ]
    return metrics


@keras.saving.register_keras_serializable(package="segmentation")
class PixelAccuracy(keras.metrics.SparseCategoricalAccuracy):
    """Keras' sparse accuracy, leaving out pixels labelled `ignore_class`.

    Written here because Keras' SparseCategoricalAccuracy, unlike its IoU metrics and its
    cross-entropy, takes no ignore_class; it gets a zero weight for those pixels instead.
    """

    def __init__(self, ignore_class: int | None = None, name: str = "accuracy", dtype=None):
        super().__init__(name=name, dtype=dtype)
        self.ignore_class = ignore_class

    def update_state(self, y_true, y_pred, sample_weight=None):
        if self.ignore_class is not None:
            labels = ops.reshape(y_true, ops.shape(y_pred)[:-1])
            counted = ops.cast(ops.not_equal(labels, self.ignore_class), "float32")
            if sample_weight is not None:
                counted = counted * ops.reshape(ops.cast(sample_weight, "float32"), ops.shape(counted))
            sample_weight = counted
        return super().update_state(y_true, y_pred, sample_weight)

    def get_config(self):
        return {**super().get_config(), "ignore_class": self.ignore_class}


def confusion_matrix(truth: np.ndarray, predicted: np.ndarray, num_classes: int) -> np.ndarray:
    """int64 (C, C) pixel counts, rows = true class, columns = predicted class.

    Pixels whose true value is not a class (e.g. an ignore label) are not counted.
    """
    truth = np.asarray(truth).ravel().astype(np.int64)
    predicted = np.asarray(predicted).ravel().astype(np.int64)
    if truth.shape != predicted.shape:
        raise ValueError(f"truth has {truth.size} pixels but the prediction {predicted.size}")
    kept = (truth >= 0) & (truth < num_classes)
    cells = truth[kept] * num_classes + predicted[kept]
    return np.bincount(cells, minlength=num_classes * num_classes).reshape(num_classes, num_classes)


def scores(matrix: np.ndarray, class_names: Sequence[str]) -> dict:
    """Pixel accuracy, mean IoU, and IoU and Dice per class, from a confusion matrix.

    A class that appears neither in the truth nor in the prediction has no IoU (None) and is
    left out of the mean, as Keras' MeanIoU does.
    """
    matrix = np.asarray(matrix, np.int64)
    hits = np.diag(matrix).astype(np.float64)
    truth_totals = matrix.sum(axis=1).astype(np.float64)
    predicted_totals = matrix.sum(axis=0).astype(np.float64)
    union = truth_totals + predicted_totals - hits
    both = truth_totals + predicted_totals
    iou = [float(h / u) if u else None for h, u in zip(hits, union)]
    dice = [float(2 * h / b) if b else None for h, b in zip(hits, both)]
    present = [value for value in iou if value is not None]
    total = int(matrix.sum())
    return {
        "accuracy": float(hits.sum() / total) if total else 0.0,
        "mean_iou": float(np.mean(present)) if present else 0.0,
        "iou_per_class": dict(zip(class_names, iou)),
        "dice_per_class": dict(zip(class_names, dice)),
        "pixels": total,
    }
