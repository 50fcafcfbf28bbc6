"""evaluate.py and the data it reads: VOC layout, ignore label, figures, files, and bad input."""

import csv
import json

import numpy as np
import pytest
from PIL import Image

import data
import evaluate
import export
from conftest import run_main
from models import build_unet

VOC_PALETTE = [value for index in range(256) for value in ((index * 37) % 256, (index * 91) % 256, (index * 53) % 256)]


def write_voc(root, sizes=((40, 52), (64, 64), (30, 70)), split_of=("train", "val", "val")):
    """A Pascal VOC 2012 folder in miniature: palette masks with a 255 outline around each object."""
    voc = root / "VOCdevkit" / "VOC2012"
    for folder in ("JPEGImages", "SegmentationClass", "ImageSets/Segmentation"):
        (voc / folder).mkdir(parents=True)
    rng = np.random.default_rng(0)
    lists = {"train": [], "val": []}
    ignored = {}
    for index, ((height, width), split) in enumerate(zip(sizes, split_of)):
        name = f"2007_{index:06d}"
        mask = np.zeros((height, width), np.uint8)
        mask[height // 4: 3 * height // 4, width // 4: 3 * width // 4] = 1 + index * 7  # aeroplane, bus, cat...
        mask[height // 4 - 1, width // 4 - 1: 3 * width // 4 + 1] = 255
        ignored[name] = int((mask == 255).sum())
        palette = Image.fromarray(mask, "P")
        palette.putpalette(VOC_PALETTE)
        palette.save(voc / "SegmentationClass" / f"{name}.png")
        Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8)).save(voc / "JPEGImages" / f"{name}.jpg")
        lists[split].append(name)
    for split, names in lists.items():
        (voc / "ImageSets" / "Segmentation" / f"{split}.txt").write_text("\n".join(names) + "\n")
    return root / "VOCdevkit", ignored


@pytest.fixture(scope="module")
def voc_model(tmp_path_factory):
    path = tmp_path_factory.mktemp("voc_model") / "model.keras"
    build_unet((64, 64, 3), 21, filters=(4, 8, 8, 8, 8, 8)).save(path)
    return path


def test_voc_layout_is_recognised_from_the_devkit_or_the_year_folder(tmp_path):
    devkit, _ = write_voc(tmp_path)
    for root in (devkit, devkit / "VOC2012"):
        assert data.is_voc(root) and data.source_defaults(root) == {"num_classes": 21, "ignore_class": 255}
        assert data.class_names(root, data.DataOptions(num_classes=21, ignore_class=255))[:3] == [
            "background", "aeroplane", "bicycle"]
    assert data.detect_layout(devkit / "VOC2012") == "voc"


def test_voc_masks_keep_palette_indices_and_mark_the_ignored_outline(tmp_path):
    devkit, ignored = write_voc(tmp_path)
    options = data.DataOptions(image_size=32, num_classes=21, ignore_class=255)
    split = data.load_split(devkit, "train", options)
    assert split.count == 1 and split.ignore
    image, mask = next(iter(split.examples))
    assert set(np.unique(mask.numpy())) == {0, 1, data.IGNORED}
    batch = next(iter(data.batches(split, batch_size=1, class_weights=[2.0] * 21)))
    weights, labels = batch[2].numpy(), batch[1].numpy()
    np.testing.assert_array_equal(weights, np.where(labels == data.IGNORED, 0.0, 2.0))
    _, photos = data.photos(devkit, "test", options)
    photos = list(photos)
    assert [p.mask.shape for p in photos] == [(64, 64), (30, 70)]
    assert [(p.mask == -1).sum() for p in photos] == [ignored["2007_000001"], ignored["2007_000002"]]


def test_an_ignore_value_that_is_also_a_class_is_refused(tmp_path):
    devkit, _ = write_voc(tmp_path)
    with pytest.raises(ValueError, match="the ignore value 3 is also class 3"):
        data.load_split(devkit, "train", data.DataOptions(num_classes=21, ignore_class=3))


def test_oxford_border_left_out_with_ignore_3(oxford_sample):
    options = data.DataOptions(image_size=32, num_classes=2, ignore_class=3)
    assert data.class_names(oxford_sample, options) == ["pet", "background"]
    masks = np.concatenate([m.numpy().ravel() for _, m in data.load_examples(oxford_sample, "test", options)])
    assert set(np.unique(masks)) == {0, 1, data.IGNORED}


def test_evaluate_on_voc_writes_every_file_with_exact_counts(voc_model, tmp_path, capsys):
    devkit, ignored = write_voc(tmp_path / "data")
    out = tmp_path / "out"
    status, stdout, _ = run_main(evaluate.main, ["--model", voc_model, "--data", devkit, "--output", out,
                                                 "--worst", "2"], capsys)
    assert status == 0 and "\n2 images:\n" in stdout
    result = json.loads((out / "metrics.json").read_text())
    for where, section in (("at the model's input size:  ", "model_size"), ("at each photo's own size:   ", "original_size")):
        figures = result[section]
        assert (f"  {where}pixel accuracy {figures['accuracy']:.4f}, mean IoU {figures['mean_iou']:.4f}\n"
                in stdout)
    assert set(result) == {"model_size", "original_size", "confusion_matrix", "class_names", "model", "data",
                           "split", "tta", "size", "images"}
    assert result["tta"] == "flip" and result["size"] is None  # predict.py's defaults, so the figures are what it gives
    assert result["images"] == 2 and result["split"] == "test" and len(result["class_names"]) == 21
    for section in ("model_size", "original_size"):
        assert set(result[section]) == {"accuracy", "mean_iou", "iou_per_class", "dice_per_class", "pixels"}
    # every pixel at each photo's own size, except the ignored outline
    assert result["original_size"]["pixels"] == 64 * 64 + 30 * 70 - ignored["2007_000001"] - ignored["2007_000002"]
    matrix = np.array(result["confusion_matrix"]["original_size"])
    assert matrix.sum() == result["original_size"]["pixels"]
    with (out / "confusion_matrix.csv").open() as file:
        rows = list(csv.reader(file))
    assert rows[0][1:] == result["class_names"] and len(rows) == 22
    np.testing.assert_array_equal(np.array([[int(v) for v in row[1:]] for row in rows[1:]]), matrix)
    for picture in ("confusion_matrix.png", "worst.png"):
        assert Image.open(out / picture).format == "PNG"


def test_tflite_and_keras_give_the_same_figures(voc_model, tmp_path, capsys):
    devkit, _ = write_voc(tmp_path / "data")
    assert run_main(export.main, ["--model", voc_model, "--format", "tflite", "--output", tmp_path / "m.tflite"],
                    capsys)[0] == 0
    figures = {}
    for name in ("keras", "tflite"):
        model = voc_model if name == "keras" else tmp_path / "m.tflite"
        assert run_main(evaluate.main, ["--model", model, "--data", devkit, "--output", tmp_path / name], capsys)[0] == 0
        figures[name] = json.loads((tmp_path / name / "metrics.json").read_text())
    for section in ("model_size", "original_size"):
        assert figures["tflite"][section]["pixels"] == figures["keras"][section]["pixels"]
        assert figures["tflite"][section]["accuracy"] == pytest.approx(figures["keras"][section]["accuracy"], abs=0.01)
    # another size: the .keras model is called at that size, the .tflite one is refused
    assert run_main(evaluate.main, ["--model", voc_model, "--data", devkit, "--output", tmp_path / "at128",
                                    "--size", "128"], capsys)[0] == 0
    at128 = json.loads((tmp_path / "at128" / "metrics.json").read_text())
    assert at128["size"] == 128 and figures["keras"]["size"] is None
    # 128 px against 64: four times the pixels, less the ignored outline (resized by nearest neighbour at each size)
    assert abs(at128["model_size"]["pixels"] - 4 * figures["keras"]["model_size"]["pixels"]) <= 16
    assert at128["model_size"]["pixels"] > 2 * 128 * 128 - 500
    assert at128["original_size"]["pixels"] == figures["keras"]["original_size"]["pixels"]
    status, _, err = run_main(evaluate.main, ["--model", tmp_path / "m.tflite", "--data", devkit, "--output",
                                              tmp_path / "no", "--size", "128"], capsys)
    assert status == 2 and "takes only the 64 px images it was exported for, not 128 px" in err
    assert not (tmp_path / "no").exists()


@pytest.mark.parametrize("case, message", [
    ("unknown model file", "cannot be loaded as a Keras model"),
    ("class count differs", "predicts 21 classes but --data synthetic has 3"),
    ("class count given differs", "predicts 21 classes, not the --num-classes 4 given"),
    ("no classes", "--num-classes must be at least 1, got 0"),
    ("empty split", "holds no usable image and mask pairs"),
    ("ignore is a class", "--ignore-class 1: the ignore value 1 is also class 1"),
    ("output not empty", "already exists and is not empty"),
    ("output under a file", "is a file, not a folder"),
])
def test_bad_input_is_one_line_exit_2_and_writes_nothing(voc_model, tmp_path, capsys, case, message):
    devkit, _ = write_voc(tmp_path / "data")
    out = tmp_path / "out"
    argv = ["--model", voc_model, "--data", devkit, "--output", out]
    if case == "unknown model file":
        (tmp_path / "model.keras").write_text("not a model")
        argv[1] = tmp_path / "model.keras"
    elif case == "class count differs":
        argv[3] = "synthetic"
    elif case == "class count given differs":
        argv += ["--num-classes", "4"]
    elif case == "no classes":
        argv += ["--num-classes", "0"]
    elif case == "empty split":
        (devkit / "VOC2012" / "ImageSets" / "Segmentation" / "val.txt").write_text("")
    elif case == "ignore is a class":
        argv += ["--ignore-class", "1"]
    elif case == "output under a file":
        (tmp_path / "notes").write_text("keep")
        argv[5] = tmp_path / "notes" / "out"
    else:
        out.mkdir()
        (out / "mine.txt").write_text("keep")
    status, _, err = run_main(evaluate.main, argv, capsys)
    assert status == 2 and message in err and "Traceback" not in err
    assert not out.exists() or sorted(p.name for p in out.iterdir()) == ["mine.txt"]
