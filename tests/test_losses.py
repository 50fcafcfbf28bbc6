"""losses.py: each loss against values computed by hand on a tiny example."""

import numpy as np
import pytest

import losses

# One image of 1 x 2 pixels, 2 classes. Pixel 0 is class 0, pixel 1 is class 1.
LABELS = np.array([[[[0], [1]]]], np.int32)
LOGITS = np.array([[[[np.log(3.0), 0.0], [0.0, 0.0]]]], np.float32)
# softmax: pixel 0 -> (0.75, 0.25); pixel 1 -> (0.5, 0.5)
P = np.array([[0.75, 0.25], [0.5, 0.5]])
CE = np.array([-np.log(0.75), -np.log(0.5)])


def value(name, sample_weight=None):
    return float(losses.get_loss(name)(LABELS, LOGITS, sample_weight=sample_weight))


def dice_by_hand(weights):
    onehot = np.array([[1, 0], [0, 1]])
    w = np.asarray(weights)[:, None]
    inter = (w * P * onehot).sum(0)
    total = (w * P).sum(0) + (w * onehot).sum(0)
    return 1 - ((2 * inter + 1) / (total + 1)).mean()


def test_sce_is_mean_cross_entropy():
    assert value("sce") == pytest.approx(CE.mean(), rel=1e-5)


def test_dice_by_hand():
    # class 0: (2*0.75 + 1) / (1.25 + 1 + 1) = 2.5/3.25; class 1: (2*0.5 + 1) / (0.75 + 1 + 1) = 2/2.75
    expected = 1 - (2.5 / 3.25 + 2 / 2.75) / 2
    assert dice_by_hand([1, 1]) == pytest.approx(expected)
    assert value("dice") == pytest.approx(expected, rel=1e-5)


def test_focal_by_hand():
    expected = ((1 - 0.75) ** 2 * CE[0] + (1 - 0.5) ** 2 * CE[1]) / 2
    assert value("focal") == pytest.approx(expected, rel=1e-5)


def test_sce_plus_dice_is_the_sum():
    assert value("sce+dice") == pytest.approx(CE.mean() + dice_by_hand([1, 1]), rel=1e-5)


@pytest.mark.parametrize("shape", [(1, 1, 2, 1), (1, 1, 2)])
def test_weights_change_each_loss_as_computed_by_hand(shape):
    weights = np.array([3.0, 0.5], np.float32).reshape(shape)
    assert value("sce", weights) == pytest.approx((3.0 * CE[0] + 0.5 * CE[1]) / 2, rel=1e-5)
    focal = (3.0 * 0.25**2 * CE[0] + 0.5 * 0.5**2 * CE[1]) / 2
    assert value("focal", weights) == pytest.approx(focal, rel=1e-5)
    assert value("dice", weights) == pytest.approx(dice_by_hand([3.0, 0.5]), rel=1e-5)
    assert value("sce+dice", weights) == pytest.approx((3.0 * CE[0] + 0.5 * CE[1]) / 2 + dice_by_hand([3.0, 0.5]), rel=1e-5)
    assert value("dice", weights) != pytest.approx(value("dice"))


def test_batch_value_is_the_mean_over_images():
    labels = np.concatenate([LABELS, 1 - LABELS])
    logits = np.concatenate([LOGITS, LOGITS])
    per_image = [float(losses.get_loss("dice")(labels[i:i + 1], logits[i:i + 1])) for i in range(2)]
    assert float(losses.get_loss("dice")(labels, logits)) == pytest.approx(np.mean(per_image), rel=1e-5)


def test_perfect_prediction_has_near_zero_dice_loss():
    logits = np.where(np.eye(2)[LABELS[..., 0]] > 0, 20.0, -20.0).astype(np.float32)
    assert value_of("dice", logits) == pytest.approx(0.0, abs=1e-6)


def value_of(name, logits):
    return float(losses.get_loss(name)(LABELS, logits))


def test_unknown_loss_name():
    with pytest.raises(ValueError, match="unknown loss 'hinge'"):
        losses.get_loss("hinge")


def test_losses_serialize_with_their_settings():
    import keras

    loss = losses.FocalLoss(gamma=3.0)
    again = keras.losses.deserialize(keras.losses.serialize(loss))
    assert isinstance(again, losses.FocalLoss) and again.gamma == 3.0


# ---------------------------------------------------------------- the ignore label

# The same two pixels plus a third labelled 255 (ignored) whose logits would cost a lot.
IGNORE_LABELS = np.array([[[[0], [1], [255]]]], np.int32)
IGNORE_LOGITS = np.array([[[[np.log(3.0), 0.0], [0.0, 0.0], [-9.0, 9.0]]]], np.float32)


@pytest.mark.parametrize("name, expected", [
    ("sce", CE.mean()),  # the mean over the two counted pixels, not over three
    ("focal", (((1 - np.exp(-CE)) ** 2) * CE).mean()),
    ("dice", dice_by_hand([1.0, 1.0])),
    ("sce+dice", CE.mean() + dice_by_hand([1.0, 1.0])),
])
def test_every_loss_leaves_the_ignored_pixel_out(name, expected):
    loss = losses.get_loss(name, ignore_class=255)
    assert float(loss(IGNORE_LABELS, IGNORE_LOGITS)) == pytest.approx(expected, rel=1e-5)


def test_ignored_pixels_carry_no_weight_with_class_weights_too():
    weights = np.array([[[[2.0], [1.0], [5.0]]]], np.float32)
    loss = losses.get_loss("focal", ignore_class=255)
    focal = ((1 - np.exp(-CE)) ** 2) * CE
    assert float(loss(IGNORE_LABELS, IGNORE_LOGITS, sample_weight=weights)) == pytest.approx(
        (2 * focal[0] + focal[1]) / 2, rel=1e-5)


def test_ignore_class_is_saved_with_the_loss():
    restored = losses.DiceLoss.from_config(losses.get_loss("dice", ignore_class=255).get_config())
    assert restored.ignore_class == 255
