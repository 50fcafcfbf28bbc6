"""evaluation.py: exact counts at the model's size and at each photo's own size, worked out by hand."""

import numpy as np
import pytest

import data
import evaluation
from inference import Predictor


def right_half_predictor(size=4):
    """Logits for 2 classes: class 1 on the right half of the model's input, class 0 on the left."""
    logits = np.zeros((size, size, 2), np.float32)
    logits[:, : size // 2, 0] = 1.0
    logits[:, size // 2:, 1] = 1.0
    logits[:, : size // 2, 1] = -1.0
    logits[:, size // 2:, 0] = -1.0
    return Predictor(size, 2, lambda images: np.repeat(logits[None], len(images), axis=0))


def photo(name, mask):
    return data.Photo(name, np.zeros((4, 4, 3), np.uint8), np.asarray(mask, np.int16))


def test_counts_at_both_sizes_by_hand():
    # own size 6x8; the true class 1 starts at column 5
    mask = np.zeros((6, 8), np.int16)
    mask[:, 5:] = 1
    result = evaluation.evaluate(right_half_predictor(), [photo("a", mask)], ["zero", "one"])
    # at 4x4 the mask (nearest: source columns 1, 3, 5, 7) is 0 0 1 1, as predicted: all right
    np.testing.assert_array_equal(result.model_size, [[8, 0], [0, 8]])
    # at 6x8 the logits cross zero between source columns 1 and 2, i.e. at output column 3.5:
    # columns 0-3 are predicted 0 and 4-7 are predicted 1, so column 4 (truth 0) is wrong
    np.testing.assert_array_equal(result.original_size, [[24, 6], [0, 18]])
    assert result.original_size.dtype == np.int64
    figures = result.figures()
    assert figures["model_size"]["mean_iou"] == pytest.approx(1.0)
    assert figures["original_size"]["accuracy"] == pytest.approx(42 / 48)
    assert figures["original_size"]["iou_per_class"] == pytest.approx({"zero": 24 / 30, "one": 18 / 24})
    assert figures["original_size"]["dice_per_class"] == pytest.approx({"zero": 48 / 54, "one": 36 / 42})
    assert figures["original_size"]["pixels"] == 48 and result.images == 1


def test_pixels_outside_the_classes_count_nowhere():
    mask = np.zeros((4, 4), np.int16)
    mask[:, 2:] = 1
    mask[0, :] = -1  # e.g. a value below the mask offset
    result = evaluation.evaluate(right_half_predictor(), [photo("a", mask)], ["zero", "one"])
    np.testing.assert_array_equal(result.original_size, [[6, 0], [0, 6]])
    np.testing.assert_array_equal(result.model_size, [[6, 0], [0, 6]])


def test_the_worst_images_are_kept_lowest_first():
    good = np.zeros((4, 4), np.int16)
    good[:, 2:] = 1
    bad = 1 - good
    middling = good.copy()
    middling[:, 1] = 1
    photos = [photo("good", good), photo("bad", bad), photo("middling", middling)]
    result = evaluation.evaluate(right_half_predictor(), photos, ["zero", "one"], keep_worst=2, batch_size=2)
    assert [failure.name for failure in result.worst] == ["bad", "middling"]
    assert result.worst[0].mean_iou == pytest.approx(0.0)
    np.testing.assert_array_equal(result.worst[0].truth, bad)


def test_a_model_of_another_class_count_is_refused():
    with pytest.raises(ValueError, match="the model predicts 2 classes but the data has 3"):
        evaluation.evaluate(right_half_predictor(), [], ["a", "b", "c"])


def test_photos_of_a_folder_are_what_predict_sees_with_untouched_masks(oxford_sample):
    count, photos = data.photos(oxford_sample, "test", data.DataOptions(image_size=64))
    photos = list(photos)
    assert count == len(photos) == 8
    first = photos[0]
    assert first.model_input.shape == (64, 64, 3) and first.model_input.dtype == np.uint8
    from PIL import Image
    trimap = np.asarray(Image.open(oxford_sample / "annotations" / "trimaps" / f"{first.name}.png"))
    np.testing.assert_array_equal(first.mask, trimap.astype(np.int16) - 1)


def test_photos_are_read_ahead_in_order_and_a_reading_error_reaches_the_caller():
    seen = []

    def recording(images):
        seen.append(len(images))
        return right_half_predictor()(images)

    def photos():
        for index in range(5):
            yield photo(f"p{index}", np.zeros((4, 4)))
        raise ValueError("p5.png: unreadable image")

    predictor = Predictor(4, 2, recording)
    with pytest.raises(ValueError, match="p5.png: unreadable image"):
        evaluation.evaluate(predictor, photos(), ["zero", "one"], batch_size=2)
    assert seen == [2, 2]  # the third batch (p4) was never complete: the error came while reading it
    result = evaluation.evaluate(predictor, (photo(f"p{i}", np.zeros((4, 4))) for i in range(5)), ["zero", "one"],
                                 batch_size=2, keep_worst=5)
    assert result.images == 5 and seen[2:] == [2, 2, 1]
    assert sorted(failure.name for failure in result.worst) == ["p0", "p1", "p2", "p3", "p4"]
    # the right half predicted as class 1 against an all-0 mask: 8 of 16 pixels right at the model's size
    assert result.model_size.tolist() == [[40, 40], [0, 0]]
