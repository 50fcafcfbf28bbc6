"""metrics.py: exact int64 confusion counts and the figures derived from them, checked by hand."""

import numpy as np
import pytest

import metrics


def test_confusion_matrix_counts_by_hand():
    truth = np.array([[0, 0, 1], [1, 2, 2]])
    predicted = np.array([[0, 1, 1], [1, 2, 0]])
    matrix = metrics.confusion_matrix(truth, predicted, 3)
    assert matrix.dtype == np.int64
    np.testing.assert_array_equal(matrix, [[1, 1, 0], [0, 2, 0], [1, 0, 1]])  # rows = truth


def test_values_outside_the_classes_are_not_counted():
    truth = np.array([0, 255, 1, 3])
    predicted = np.array([0, 1, 1, 2])
    np.testing.assert_array_equal(metrics.confusion_matrix(truth, predicted, 3), [[1, 0, 0], [0, 1, 0], [0, 0, 0]])


def test_scores_by_hand():
    matrix = np.array([[1, 1, 0], [0, 2, 0], [1, 0, 1]])
    result = metrics.scores(matrix, ["pet", "background", "border"])
    assert result["pixels"] == 6 and result["accuracy"] == pytest.approx(4 / 6)
    # IoU = hits / (row + column - hits): pet 1/(2+2-1), background 2/(2+3-2), border 1/(2+1-1)
    assert result["iou_per_class"] == pytest.approx({"pet": 1 / 3, "background": 2 / 3, "border": 1 / 2})
    assert result["dice_per_class"] == pytest.approx({"pet": 2 / 4, "background": 4 / 5, "border": 2 / 3})
    assert result["mean_iou"] == pytest.approx((1 / 3 + 2 / 3 + 1 / 2) / 3)


def test_a_class_seen_nowhere_has_no_iou_and_is_left_out_of_the_mean():
    result = metrics.scores(np.array([[3, 1, 0], [0, 4, 0], [0, 0, 0]]), ["a", "b", "c"])
    assert result["iou_per_class"]["c"] is None and result["dice_per_class"]["c"] is None
    assert result["mean_iou"] == pytest.approx((3 / 4 + 4 / 5) / 2)


def test_counts_past_float32_precision_stay_exact():
    big = np.array([[2**25 + 1, 0], [0, 1]], np.int64)
    assert metrics.scores(big, ["a", "b"])["pixels"] == 2**25 + 2


def test_keras_metric_names_follow_the_class_names():
    names = [metric.name for metric in metrics.segmentation_metrics(["pet", "background", "border"])]
    assert names == ["accuracy", "mean_iou", "iou_pet", "iou_background", "iou_border"]


def test_every_keras_metric_leaves_ignored_pixels_out():
    # 4 pixels: truth 0, 1, 1, ignored; predicted 0, 1, 0, 1
    labels = np.array([[[[0], [1], [1], [255]]]], np.int32)
    logits = np.array([[[[5, 0], [0, 5], [5, 0], [0, 5]]]], np.float32)
    values = {}
    for metric in metrics.segmentation_metrics(["a", "b"], ignore_class=255):
        metric.update_state(labels, logits)
        values[metric.name] = float(metric.result())
    # counted: (0->0), (1->1), (1->0). IoU a = 1 / (1 + 2 - 1) = 1/2, IoU b = 1 / (2 + 1 - 1) = 1/2
    assert values == pytest.approx({"accuracy": 2 / 3, "mean_iou": 0.5, "iou_a": 0.5, "iou_b": 0.5})


def test_accuracy_with_ignore_and_sample_weights():
    labels = np.array([[[[0], [1], [255]]]], np.int32)
    logits = np.array([[[[5, 0], [5, 0], [0, 5]]]], np.float32)
    weights = np.array([[[[3.0], [1.0], [9.0]]]], np.float32)
    accuracy = metrics.PixelAccuracy(ignore_class=255)
    accuracy.update_state(labels, logits, sample_weight=weights)
    assert float(accuracy.result()) == pytest.approx(3 / 4)
