"""The pictures: the run's reused figures draw exactly what a new figure draws."""

import numpy as np
import pytest
from PIL import Image

import visualize


def pixels(path) -> np.ndarray:
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"))


def history(epochs: int, validation: bool = True) -> list[dict]:
    rows = []
    for epoch in range(1, epochs + 1):
        row = {"epoch": epoch, "loss": 1.0 / epoch, "accuracy": 0.5 + 0.02 * epoch, "mean_iou": 0.2 + 0.03 * epoch}
        if validation:
            row.update(val_loss=1.2 / epoch, val_accuracy=0.45 + 0.02 * epoch, val_mean_iou=0.15 + 0.03 * epoch)
        rows.append(row)
    return rows


def test_colorize_draws_the_palette_and_white_for_no_class():
    picture = visualize.colorize(np.array([[0, 1], [2, -1]]))
    assert picture.dtype == np.uint8 and picture.shape == (2, 2, 3)
    assert picture[0, 0].tolist() == [230, 126, 34] and picture[0, 1].tolist() == [52, 152, 219]
    assert picture[1, 0].tolist() == [241, 196, 15] and picture[1, 1].tolist() == [255, 255, 255]


def test_the_reused_curves_figure_draws_what_a_new_one_draws(tmp_path):
    curves = visualize.TrainingCurves()
    curves.save(tmp_path / "early.png", history(2))
    curves.save(tmp_path / "reused.png", history(7))  # longer lines, new limits
    visualize.save_curves(tmp_path / "new.png", history(7))
    reused, new, early = pixels(tmp_path / "reused.png"), pixels(tmp_path / "new.png"), pixels(tmp_path / "early.png")
    assert reused.shape == new.shape == (320, 1200, 3)
    np.testing.assert_array_equal(reused, new)
    assert (reused != early).any(axis=-1).mean() > 0.01  # and the second save did redraw


def test_curves_get_the_validation_lines_once_there_are_values(tmp_path):
    curves = visualize.TrainingCurves()
    curves.save(tmp_path / "a.png", history(3, validation=False))
    assert sorted(curves.lines) == ["accuracy", "loss", "mean_iou"]
    curves.save(tmp_path / "b.png", history(3))
    assert sorted(curves.lines) == ["accuracy", "loss", "mean_iou", "val_accuracy", "val_loss", "val_mean_iou"]
    visualize.save_curves(tmp_path / "c.png", history(3))
    np.testing.assert_array_equal(pixels(tmp_path / "b.png"), pixels(tmp_path / "c.png"))


def test_a_phase_start_is_marked_once_the_curves_reach_it(tmp_path):
    curves = visualize.TrainingCurves([(5, "fine-tuning")])
    curves.save(tmp_path / "before.png", history(4))
    visualize.save_curves(tmp_path / "plain_4.png", history(4))
    np.testing.assert_array_equal(pixels(tmp_path / "before.png"), pixels(tmp_path / "plain_4.png"))  # not yet
    curves.save(tmp_path / "after.png", history(7))
    for ax in curves.axes:
        marks = [line for line in ax.lines if line.get_linestyle() == "--"]
        assert [list(line.get_xdata()) for line in marks] == [[4.5, 4.5]]
        assert [text.get_text() for text in ax.texts] == [" fine-tuning"]
    visualize.save_curves(tmp_path / "new.png", history(7), [(5, "fine-tuning")])
    np.testing.assert_array_equal(pixels(tmp_path / "after.png"), pixels(tmp_path / "new.png"))
    visualize.save_curves(tmp_path / "plain_7.png", history(7))
    assert (pixels(tmp_path / "after.png") != pixels(tmp_path / "plain_7.png")).any()


def test_the_reused_panel_draws_what_a_new_one_draws(tmp_path):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (3, 32, 32, 3), dtype=np.uint8)
    truth = rng.integers(0, 3, (3, 32, 32))
    first, second = rng.integers(0, 3, (3, 32, 32)), rng.integers(-1, 3, (3, 32, 32))
    panel = visualize.PredictionPanel(images, truth)
    panel.save(tmp_path / "epoch_001.png", first, "epoch 1: validation mean IoU 0.100")
    panel.save(tmp_path / "epoch_002.png", second, "epoch 2: validation mean IoU 0.200")
    visualize.save_prediction_panel(tmp_path / "new.png", images, truth, second, "epoch 2: validation mean IoU 0.200")
    reused = pixels(tmp_path / "epoch_002.png")
    assert reused.shape == (720, 720, 3)
    np.testing.assert_array_equal(reused, pixels(tmp_path / "new.png"))
    assert (reused != pixels(tmp_path / "epoch_001.png")).any()
    panel.save(tmp_path / "retitled.png", second, "epoch 3: validation mean IoU 0.300")
    changed = (pixels(tmp_path / "retitled.png") != reused).any(axis=-1)
    assert changed[:40].any() and not changed[40:].any()  # the title only
    with pytest.raises(ValueError, match="the panel has 3 rows, got 2 masks"):
        panel.save(tmp_path / "x.png", second[:2], "epoch 3")
    assert not (tmp_path / "x.png").exists()
