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
    loss across replicas under a distribution strategy.
    """

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
        return self.per_image(labels, ops.cast(logits, "float32"), weights)

    def per_image(self, labels, logits, weights):
        """(B,) loss values from labels (B, H, W), logits (B, H, W, C), weights (B, H, W)."""
        raise NotImplementedError


def _weighted_mean(values, weights):
    """Mean over pixels of weight * value, as Keras averages weighted per-pixel losses."""
    return ops.mean(ops.reshape(values * weights, (ops.shape(values)[0], -1)), axis=1)


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

    def per_image(self, labels, logits, weights):
        return _soft_dice_loss(labels, logits, weights, self.smooth)

    def get_config(self):
        return {**super().get_config(), "smooth": self.smooth}


@keras.saving.register_keras_serializable(package="segmentation")
class FocalLoss(_WeightedPixelLoss):
    """Cross-entropy scaled by (1 - p_true) ** gamma, so easy pixels count less."""

    def __init__(self, gamma: float = 2.0, name: str = "focal", **kwargs):
        super().__init__(name=name, **kwargs)
        self.gamma = gamma

    def per_image(self, labels, logits, weights):
        cross_entropy = ops.sparse_categorical_crossentropy(labels, logits, from_logits=True)
        p_true = ops.exp(-cross_entropy)
        return _weighted_mean((1.0 - p_true) ** self.gamma * cross_entropy, weights)

    def get_config(self):
        return {**super().get_config(), "gamma": self.gamma}


@keras.saving.register_keras_serializable(package="segmentation")
class CrossEntropyDiceLoss(_WeightedPixelLoss):
    """Sparse cross-entropy plus soft Dice: pixel-wise accuracy and region overlap together."""

    def __init__(self, smooth: float = 1.0, name: str = "sce_dice", **kwargs):
        super().__init__(name=name, **kwargs)
        self.smooth = smooth

    def per_image(self, labels, logits, weights):
        cross_entropy = ops.sparse_categorical_crossentropy(labels, logits, from_logits=True)
        return _weighted_mean(cross_entropy, weights) + _soft_dice_loss(labels, logits, weights, self.smooth)

    def get_config(self):
        return {**super().get_config(), "smooth": self.smooth}


def get_loss(name: str) -> keras.losses.Loss:
    """The loss called `name` on the command line (one of LOSS_NAMES)."""
    if name == "sce":
        return keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    if name == "dice":
        return DiceLoss()
    if name == "focal":
        return FocalLoss()
    if name == "sce+dice":
        return CrossEntropyDiceLoss()
    raise ValueError(f"unknown loss {name!r}: use one of {', '.join(LOSS_NAMES)}")
