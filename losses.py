"""Losses for sparse integer masks and per-pixel logits, with optional per-pixel weights.

`sce` is Keras' own SparseCategoricalCrossentropy(from_logits=True), the reference
tutorial's loss. `dice`, `focal` and `sce+dice` help with imbalanced classes. Dice is not
a per-pixel sum, so Keras' usual sample weighting (multiply each pixel's loss, then
average) cannot express it: these losses take the per-pixel weight map inside, as the
weights of the sums, and return one value per image that Keras averages over the batch.
"""

from __future__ import annotations

import keras
from keras import ops


LOSS_NAMES = ("sce", "dice", "focal", "sce+dice")


class _WeightedPixelLoss(keras.losses.Loss):
    """Carries the per-pixel weight map into `call` next to the labels.

    Keras would otherwise multiply the per-image values by a (B, H, W) weight map, which
    does not broadcast. Packing keeps Keras' own reduction, including its scaling of the
    loss across replicas under a distribution strategy. Pixels labelled `ignore_class` count
    nowhere: they get weight 0, and averages are taken over the other pixels only, as Keras'
    own SparseCategoricalCrossentropy(ignore_class=...) does.
    """

    def __init__(self, ignore_class: int | None = None, **kwargs):
        super().__init__(**kwargs)
        self.ignore_class = ignore_class

    def get_config(self):
        return {**super().get_config(), "ignore_class": self.ignore_class}

    def __call__(self, y_true, y_pred, sample_weight=None):
        labels = ops.cast(y_true, "float32")
        if len(labels.shape) == 3:
            labels = ops.expand_dims(labels, -1)
        if sample_weight is None:
            weights = ops.ones_like(labels)
        else:
            weights = ops.reshape(ops.cast(sample_weight, "float32"), ops.shape(labels))
        return super().__call__(ops.concatenate([labels, weights], axis=-1), y_pred)

    def call(self, packed, logits):
        labels = ops.cast(packed[..., 0], "int32")
        weights = packed[..., 1]
        counted = ops.ones_like(weights)
        if self.ignore_class is not None:
            counted = ops.cast(ops.not_equal(labels, self.ignore_class), "float32")
            labels = ops.where(ops.equal(labels, self.ignore_class), 0, labels)
            weights = weights * counted
        return self.per_image(labels, ops.cast(logits, "float32"), weights, counted)

    def per_image(self, labels, logits, weights, counted):
        """(B,) loss values from labels (B, H, W), logits (B, H, W, C), weights and counted pixels (B, H, W)."""
        raise NotImplementedError


def _weighted_mean(values, weights, counted):
    """Sum over the counted pixels of weight * value, divided by their number (0 if there is none).

    With every pixel counted this is the mean Keras takes of weighted per-pixel losses.
    """
    batch = ops.shape(values)[0]
    total = ops.sum(ops.reshape(values * weights, (batch, -1)), axis=1)
    return total / ops.maximum(ops.sum(ops.reshape(counted, (batch, -1)), axis=1), 1.0)


def _soft_dice_loss(labels, logits, weights, smooth):
    probabilities = ops.softmax(logits, axis=-1)
    one_hot = ops.one_hot(labels, ops.shape(logits)[-1], dtype="float32")
    w = weights[..., None]
    intersection = ops.sum(w * probabilities * one_hot, axis=(1, 2))
    total = ops.sum(w * probabilities, axis=(1, 2)) + ops.sum(w * one_hot, axis=(1, 2))
    dice = (2.0 * intersection + smooth) / (total + smooth)
    return 1.0 - ops.mean(dice, axis=-1)


@keras.saving.register_keras_serializable(package="segmentation")
class DiceLoss(_WeightedPixelLoss):
    """1 - soft Dice averaged over classes, per image; weights weigh each pixel in the sums."""

    def __init__(self, smooth: float = 1.0, name: str = "dice", **kwargs):
        super().__init__(name=name, **kwargs)
        self.smooth = smooth

    def per_image(self, labels, logits, weights, counted):
        return _soft_dice_loss(labels, logits, weights, self.smooth)

    def get_config(self):
        return {**super().get_config(), "smooth": self.smooth}


@keras.saving.register_keras_serializable(package="segmentation")
class FocalLoss(_WeightedPixelLoss):
    """Cross-entropy scaled by (1 - p_true) ** gamma, so easy pixels count less."""

    def __init__(self, gamma: float = 2.0, name: str = "focal", **kwargs):
        super().__init__(name=name, **kwargs)
        self.gamma = gamma

    def per_image(self, labels, logits, weights, counted):
        cross_entropy = ops.sparse_categorical_crossentropy(labels, logits, from_logits=True)
        p_true = ops.exp(-cross_entropy)
        return _weighted_mean((1.0 - p_true) ** self.gamma * cross_entropy, weights, counted)

    def get_config(self):
        return {**super().get_config(), "gamma": self.gamma}


@keras.saving.register_keras_serializable(package="segmentation")
class CrossEntropyDiceLoss(_WeightedPixelLoss):
    """Sparse cross-entropy plus soft Dice: pixel-wise accuracy and region overlap together."""

    def __init__(self, smooth: float = 1.0, name: str = "sce_dice", **kwargs):
        super().__init__(name=name, **kwargs)
        self.smooth = smooth

    def per_image(self, labels, logits, weights, counted):
        cross_entropy = ops.sparse_categorical_crossentropy(labels, logits, from_logits=True)
        return _weighted_mean(cross_entropy, weights, counted) + _soft_dice_loss(labels, logits, weights, self.smooth)

    def get_config(self):
        return {**super().get_config(), "smooth": self.smooth}


def get_loss(name: str, ignore_class: int | None = None) -> keras.losses.Loss:
    """The loss called `name` on the command line (one of LOSS_NAMES); `ignore_class` labels count nowhere."""
    if name == "sce":
        return keras.losses.SparseCategoricalCrossentropy(from_logits=True, ignore_class=ignore_class)
    if name == "dice":
        return DiceLoss(ignore_class=ignore_class)
    if name == "focal":
        return FocalLoss(ignore_class=ignore_class)
    if name == "sce+dice":
        return CrossEntropyDiceLoss(ignore_class=ignore_class)
    raise ValueError(f"unknown loss {name!r}: use one of {', '.join(LOSS_NAMES)}")
